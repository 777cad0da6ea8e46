"""Memory at scale, per device, as pure functions: a training run sharded over many devices with
FSDP, fully (every rank holds 1/n of the model states) or hybrid (HSDP: fully sharded within a
group of devices, a node, and replicated across the groups), beside the unsharded working copy of
a layer that FSDP gathers for each forward and backward; and the Llama-shaped models at 1B, 7B, 8B
and 70B that the scale-out table (``lmkit plan --scale``) is drawn for.

What it owns:
- a hybrid-sharded run's model states are a fully sharded run's over the shard group alone, so the
  per-device memory stops falling once the devices outnumber the group (:func:`hybrid_shard_memory`);
- FSDP across tensor-parallel groups (2D, as torchtitan runs Llama 3.1 70B): Megatron-style tensor
  parallelism (``lmkit.plan.fits_memory.tensor_parallel_memory``) with its 1/t of the model states
  fully sharded over the n/t data-parallel ranks, plus the gathered layer of that 1/t
  (:func:`hybrid_shard_memory` with ``tensor_parallel``);
- a sharded run holds, besides its shards, the gathered 16-bit weights of the layer it computes and
  of the next one (prefetched), and one layer's unsharded fp32 gradients before they are
  reduce-scattered (:func:`gathered_layer_bytes`); one device (or DDP, ZeRO-1/2 with whole weights)
  gathers nothing;
- the presets are the published shapes (Llama 3.2 1B, Llama 2 7B, Llama 3 8B and 70B), not
  ``shape_for``'s nearest shape, so their figures can sit beside published ones
  (``tests/test_plan_scale.py``).

Imports nothing from lmkit except ``lmkit.config``, ``lmkit.errors`` and ``lmkit.plan``'s own
modules. Bytes throughout; devices' memory in ``lmkit.plan.fits_memory``.
"""

from __future__ import annotations

from typing import Any

from lmkit.config import ModelConfig
from lmkit.errors import LmkitError
from lmkit.plan.compute import MAX_MICRO_BATCH, MAX_SEQ_LEN, count_params, plan_terms
from lmkit.plan.fits_memory import DEVICE_MEMORY_GIB, device_memory_bytes, tensor_parallel_memory
from lmkit.plan.memory import FINISH_BASELINE_BYTES, training_memory

SCALE_DEVICES = (8, 64, 1024)  # the device counts the scale-out table shows
NODE_DEVICES = 8  # devices per node: the default shard group of hybrid sharding
FULL_SHARDS = ("zero3", "fsdp")


def _llama(vocab: int, d: int, layers: int, heads: int, kv: int, ffn: int, tied: bool, theta: float) -> ModelConfig:
    return ModelConfig(
        family="decoder",
        vocab_size=vocab,
        d_model=d,
        n_layers=layers,
        n_heads=heads,
        n_kv_heads=kv,
        d_ff=ffn,
        max_seq_len=8192 if vocab > 100_000 else 4096,
        tie_embeddings=tied,
        rope_theta=theta,
    )


# The published shapes (each model's config.json on the Hugging Face hub).
SCALE_PRESETS: dict[str, ModelConfig] = {
    "1B": _llama(128_256, 2048, 16, 32, 8, 8192, True, 500_000.0),  # Llama 3.2 1B
    "7B": _llama(32_000, 4096, 32, 32, 32, 11_008, False, 10_000.0),  # Llama 2 7B
    "8B": _llama(128_256, 4096, 32, 32, 8, 14_336, False, 500_000.0),  # Llama 3 / 3.1 8B
    "70B": _llama(128_256, 8192, 80, 64, 8, 28_672, False, 500_000.0),  # Llama 3 / 3.1 70B
}
SCALE_TABLE_MODELS = ("1B", "7B", "70B")


def scale_preset(name: str) -> ModelConfig:
    """The Llama-shaped model ``name`` (1B, 7B, 8B or 70B, any case)."""
    key = next((k for k in SCALE_PRESETS if k.lower() == name.strip().lower()), None)
    if key is None:
        raise LmkitError(f"no scale preset {name!r}: use one of {', '.join(SCALE_PRESETS)}")
    return SCALE_PRESETS[key]


def gathered_layer_bytes(cfg: ModelConfig, params: float | None, precision: str, sharding: str, n_gpus: int) -> float:
    """What FSDP holds unsharded beside its shards: two layers' weights gathered in the compute
    precision (the layer computing and the next, prefetched) and one layer's fp32 gradients before
    the reduce-scatter; 0 for one device or a sharding that keeps whole weights (ddp, zero1, zero2).
    A layer is 1/n_layers of the parameters (``params``: a total that ``cfg`` stands for the shape of)."""
    if sharding not in FULL_SHARDS or n_gpus <= 1:
        return 0.0
    n = float(params if params is not None else count_params(cfg).total)
    layer = n / plan_terms(cfg.family).blocks(cfg)
    return layer * (2 * (4.0 if precision == "fp32" else 2.0) + 4.0)


def hybrid_shard_memory(
    cfg: ModelConfig,
    params: float | None = None,
    micro_batch: int = 1,
    seq_len: int | None = None,
    precision: str = "bf16",
    n_gpus: int = 1,
    checkpointing: bool = True,
    shard_group: int | None = None,
    runtime_bytes: float | None = None,
    finish_bytes: float = FINISH_BASELINE_BYTES,
    *,
    tensor_parallel: int = 1,
) -> dict[str, float]:
    """Training memory per device under FSDP (``training_memory``'s parts, plus ``gathered``):
    fully sharded over all ``n_gpus`` devices (``shard_group`` None), or hybrid: fully sharded within
    groups of ``shard_group`` devices (which must divide ``n_gpus``) and replicated across them, so
    each device holds what a fully sharded run on ``shard_group`` devices holds (the gradients are
    then all-reduced across the groups; no extra memory). With ``tensor_parallel`` t > 1 (dividing
    ``n_gpus``; full sharding only): tensor parallelism inside FSDP over the n/t ranks
    (``tensor_parallel_memory``'s parts): each device holds 1/t of every layer, fully sharded over the
    data-parallel ranks, and gathers the layer it computes from them, so ``gathered`` is a layer's over t."""
    if n_gpus < 1:
        raise LmkitError(f"the number of devices must be at least 1, got {n_gpus}")
    if tensor_parallel != 1:
        if tensor_parallel < 1 or n_gpus % tensor_parallel or shard_group is not None:
            raise LmkitError(
                f"the tensor-parallel degree ({tensor_parallel}) must divide the number of devices ({n_gpus}), "
                "with full sharding"
            )
        n = float(params if params is not None else count_params(cfg).total)
        out = tensor_parallel_memory(
            cfg, n, micro_batch, seq_len or cfg.max_seq_len, precision, "fsdp", n_gpus, checkpointing,
            tensor_parallel, runtime_bytes, finish_bytes,
        )  # fmt: skip
        out["gathered"] = gathered_layer_bytes(cfg, n / tensor_parallel, precision, "fsdp", n_gpus // tensor_parallel)
        out["total"] += out["gathered"]
        return out
    group = n_gpus if shard_group is None else shard_group
    if group < 1 or n_gpus % group:
        raise LmkitError(f"the shard group ({group}) must divide the number of devices ({n_gpus})")
    out = training_memory(
        cfg, params, micro_batch, seq_len, precision, "fsdp", group, checkpointing, runtime_bytes, finish_bytes
    )
    out["gathered"] = gathered_layer_bytes(cfg, params, precision, "fsdp", group)
    out["total"] += out["gathered"]
    return out


def scale_table(
    models: tuple[str, ...] = SCALE_TABLE_MODELS,
    devices: tuple[int, ...] = SCALE_DEVICES,
    *,
    micro_batch: int | None = None,
    seq_len: int | None = None,
    precision: str | None = None,
    checkpointing: bool = True,
    shard_group: int = NODE_DEVICES,
    device: str | None = None,
    runtime_bytes: float | None = None,
    finish_bytes: float = FINISH_BASELINE_BYTES,
) -> list[dict[str, Any]]:
    """Per-device training memory of each preset in ``models`` on each count in ``devices``, fully
    sharded, hybrid sharded (groups of ``shard_group``) and fully sharded across tensor-parallel groups
    of ``shard_group`` (FSDP x TP; the last two only above one group): one row
    each with ``model``, ``params``, ``devices``, ``layout``, ``model_states`` (weights + gradients +
    optimizer), ``gathered``, ``activations`` (with the loss), ``total`` and ``fits`` on one
    ``device`` (a name ``lmkit.plan.fits_memory`` knows; None for none or "here"). Unset: micro-batch
    1, sequence 4096, bf16; a value out of range is one error naming its ``lmkit plan`` flag."""
    for flag, value, most in (("--micro-batch", micro_batch, MAX_MICRO_BATCH), ("--seq-len", seq_len, MAX_SEQ_LEN)):
        if value is not None and not 1 <= value <= most:
            raise LmkitError(f"{flag} must be 1 to {most:,}, got {value:,}")
    micro_batch, seq_len, precision = micro_batch or 1, seq_len or 4096, precision or "bf16"
    capacity_bytes = None
    if device is not None and device.strip().lower() != "here":
        capacity_bytes = device_memory_bytes(device)
        if capacity_bytes is None:
            raise LmkitError(f"--gpu must be one of {', '.join(DEVICE_MEMORY_GIB)} for --scale, got {device!r}")
    rows: list[dict[str, Any]] = []
    for name in models:
        cfg = scale_preset(name)
        n_params = float(count_params(cfg).total)
        for n in devices:
            layouts: list[tuple[str, int | None, int]] = [("full shard", None, 1)]  # (name, shard group, TP degree)
            if n > shard_group and n % shard_group == 0:
                layouts.append((f"hybrid shard {shard_group}", shard_group, 1))
                layouts.append((f"FSDP x TP {shard_group}", None, shard_group))  # TP inside a node, as torchtitan's 70B
            for layout, group, tp in layouts:
                m = hybrid_shard_memory(
                    cfg, n_params, micro_batch, seq_len, precision, n, checkpointing, group, runtime_bytes,
                    finish_bytes, tensor_parallel=tp,
                )  # fmt: skip
                rows.append(
                    {
                        "model": name,
                        "params": n_params,
                        "devices": n,
                        "layout": layout,
                        "model_states": m["weights"] + m["gradients"] + m["optimizer"],
                        "gathered": m["gathered"],
                        "activations": m["activations"] + m["loss"],
                        "total": m["total"],
                        "fits": None if capacity_bytes is None else m["total"] <= capacity_bytes,
                    }
                )
    return rows


__all__ = [
    "NODE_DEVICES",
    "SCALE_DEVICES",
    "SCALE_PRESETS",
    "SCALE_TABLE_MODELS",
    "gathered_layer_bytes",
    "hybrid_shard_memory",
    "scale_preset",
    "scale_table",
]
