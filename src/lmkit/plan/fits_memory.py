"""Will it fit? The accelerators' memory, a fits / does-not-fit verdict for a training run, and what
would make it fit (activation checkpointing, a smaller micro-batch, sharding, tensor parallelism),
each with its memory per device, as pure functions.

Imports nothing from lmkit except ``lmkit.config``, ``lmkit.errors`` and ``lmkit.plan``'s own
modules. The memory per device is ``lmkit.plan.memory.training_memory``'s; tensor parallelism,
which lmkit's trainer does not do (it shards with DDP / ZeRO / FSDP), is estimated as Megatron-LM
does it with sequence parallelism (Korthikanti et al. 2022): the layers' weights, gradients,
optimizer states and activations, and the vocabulary-parallel loss, are split across the t
devices of a tensor-parallel group; data-parallel sharding applies across the groups.

Here "fits" means fits in memory only; a "fit" elsewhere in lmkit is a scaling law fitted to runs
(``lmkit.plan.chinchilla``, ``lmkit.lab.scale``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from lmkit.config import ModelConfig
from lmkit.errors import LmkitError
from lmkit.plan.memory import (
    FINISH_BASELINE_BYTES,
    model_state_bytes,
    optimizer_one_moment_params,
    runtime_of,
    training_memory,
)

GIB = 2.0**30
# Device memory as the datasheets name it (V100 SXM2 32GB, A100 80GB, H100 80GB, H200 141GB); those
# "GB" are binary: an A100 80GB reports 81,920 MiB. Smaller variants exist (V100 16GB, A100 40GB).
DEVICE_MEMORY_GIB: dict[str, float] = {"V100": 32.0, "A100": 80.0, "H100": 80.0, "H100 PCIe": 80.0, "H200": 141.0}
TENSOR_PARALLEL_DEGREES = (2, 4, 8)  # within one node (NVLink): the sizes Megatron-style runs use
MAX_DEVICES = 1 << 20


def device_memory_bytes(device: str) -> float | None:
    """Bytes of memory on one ``device`` (a key of DEVICE_MEMORY_GIB, any case); None if unknown."""
    key = next((k for k in DEVICE_MEMORY_GIB if k.lower() == device.strip().lower()), None)
    return DEVICE_MEMORY_GIB[key] * GIB if key is not None else None


def tensor_parallel_memory(
    cfg: ModelConfig,
    params: float,
    micro_batch: int,
    seq_len: int,
    precision: str,
    sharding: str,
    n_gpus: int,
    checkpointing: bool,
    degree: int,
    runtime_bytes: float | None = None,
    finish_bytes: float = FINISH_BASELINE_BYTES,
    optimizer: str = "adamw",
) -> dict[str, float]:
    """Training memory per device with tensor parallelism of ``degree`` t (see the module doc).

    The model states of 1/t of the parameters are sharded by ``sharding`` across the n/t
    data-parallel groups; activations and the loss workspace are divided by t; the runtime and what
    the run's end adds are not (the end counts only where it exceeds a step's tensors).
    """
    if degree < 1:
        raise LmkitError(f"tensor-parallel degree must be at least 1, got {degree}")
    full = training_memory(cfg, params, micro_batch, seq_len, precision, sharding, n_gpus, checkpointing)
    dp = max(1, n_gpus // degree)
    one_moment = optimizer_one_moment_params(cfg, optimizer, params) / degree
    states = model_state_bytes(params / degree, precision, sharding, dp, one_moment)
    out = {
        **states,
        "activations": full["activations"] / degree,
        "loss": full["loss"] / degree,
        "runtime": runtime_of(cfg, runtime_bytes),
        "finish": float(finish_bytes),
    }
    out["not_at_once"] = -min(out["gradients"] + out["activations"] + out["loss"], out["finish"])
    out["total"] = sum(out.values())
    return out


def _largest_that_fits(fits: Callable[[int], bool], hi: int) -> int:
    """The largest k in 1..hi with ``fits(k)`` (memory grows with k, so ``fits`` holds below some
    k and not above it), by bisection: a few dozen evaluations whatever ``hi``; 1 when none fits."""
    lo = 1
    if fits(hi):
        return hi
    while hi - lo > 1:  # fits(lo) or lo == 1; not fits(hi)
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo


def _min_devices_fsdp(
    cfg: ModelConfig,
    params: float,
    micro_batch: int,
    seq_len: int,
    precision: str,
    checkpointing: bool,
    capacity: float,
    end: tuple[float | None, float, str],
) -> int | None:
    """Fewest devices on which FSDP fits the run (model states split n ways); None if never. ``end``:
    the runtime's bytes, what the run's end adds and the optimizer (``training_memory``'s)."""
    one = training_memory(cfg, params, micro_batch, seq_len, precision, "fsdp", 1, checkpointing, *end)
    states = one["weights"] + one["gradients"] + one["optimizer"]
    rest = one["total"] - states
    if rest >= capacity:
        return None
    n = max(1, math.ceil(states / (capacity - rest)))
    return n if n <= MAX_DEVICES else None


def memory_verdict(
    cfg: ModelConfig,
    params: float,
    device: str,
    *,
    micro_batch: int,
    seq_len: int,
    precision: str,
    sharding: str,
    n_gpus: int,
    checkpointing: bool,
    runtime_bytes: float | None = None,
    finish_bytes: float = FINISH_BASELINE_BYTES,
    optimizer: str = "adamw",
) -> dict[str, Any] | None:
    """Does the run fit on ``device``, and what would make it fit. None for a device of unknown memory.

    Returns ``device``, ``capacity_bytes``, ``needed_bytes`` (the per-device total of
    ``training_memory``, with the runtime's ``runtime_bytes``, what the run's end adds,
    ``finish_bytes``, and ``optimizer``'s states), ``fits``, ``headroom_bytes`` (capacity - needed,
    negative when it does not fit), ``suggestions`` (one change each: ``change``, ``flags`` (lmkit
    plan flags, None for what lmkit cannot do), ``bytes``, ``fits``, ``note``) and ``fitting`` (the
    first suggestion that fits, or else the first of a few combinations of them that does; None if
    none).
    """
    cap = device_memory_bytes(device)
    if cap is None:
        return None
    end = (runtime_bytes, finish_bytes, optimizer)  # what every estimate below shares (training_memory's order)

    def mem(mb: int = micro_batch, shard: str = sharding, n: int = n_gpus, ck: bool = checkpointing) -> float:
        return training_memory(cfg, params, mb, seq_len, precision, shard, n, ck, *end)["total"]

    def tp(degree: int, ck: bool = checkpointing, shard: str = sharding, n: int = n_gpus) -> float:
        return tensor_parallel_memory(
            cfg, params, micro_batch, seq_len, precision, shard, max(n, degree), ck, degree, *end
        )["total"]

    needed = mem()
    sug: list[dict[str, Any]] = []

    def add(change: str, flags: str | None, b: float, note: str = "") -> None:
        sug.append({"change": change, "flags": flags, "bytes": b, "fits": b <= cap, "note": note})

    if not checkpointing:
        add(
            "activation checkpointing",
            "--activation-checkpointing",
            mem(ck=True),
            "keep each layer's input only and recompute the layer in the backward pass: ~1/3 more compute",
        )
    if micro_batch > 1:
        m = _largest_that_fits(lambda k: mem(mb=k) <= cap, micro_batch - 1)
        add(
            f"micro-batch {m}",
            f"--micro-batch {m}",
            mem(mb=m),
            f"gradient accumulation over {math.ceil(micro_batch / m)}x the micro-steps keeps the batch size",
        )
    full_shard = sharding in ("zero3", "fsdp")
    if n_gpus > 1 and not full_shard:
        add(
            f"FSDP (ZeRO-3) over the {n_gpus} devices",
            "--sharding fsdp",
            mem(shard="fsdp"),
            "weights, gradients and Adam states split across the devices",
        )
    n_min = _min_devices_fsdp(cfg, params, micro_batch, seq_len, precision, checkpointing, cap, end)
    if n_min is not None and n_min > n_gpus:
        add(
            f"FSDP over at least {n_min:,} devices",
            f"--sharding fsdp --gpus {n_min}",
            mem(shard="fsdp", n=n_min),
            "the model states need this many devices to share them",
        )
    degree = next((t for t in TENSOR_PARALLEL_DEGREES if tp(t) <= cap), TENSOR_PARALLEL_DEGREES[-1])
    add(
        f"tensor parallelism {degree}",
        None,
        tp(degree),
        "Megatron-LM style with sequence parallelism (layers and activations split across "
        f"{degree} devices of a node); lmkit's trainer does not do this",
    )

    fitting = next((s for s in sug if s["fits"]), None)
    if fitting is None and needed > cap:  # no single change is enough: a few combinations, cheapest first
        combos: list[tuple[str, str | None, float]] = []
        n_ck = _min_devices_fsdp(cfg, params, 1, seq_len, precision, True, cap, end)
        if n_ck is not None:
            n_ck = max(n_ck, n_gpus)
            combos.append(
                (
                    f"activation checkpointing + micro-batch 1 + FSDP over {n_ck:,} devices",
                    f"--activation-checkpointing --micro-batch 1 --sharding fsdp --gpus {n_ck}",
                    mem(mb=1, shard="fsdp", n=n_ck, ck=True),
                )
            )
        for t in TENSOR_PARALLEL_DEGREES:
            split = tensor_parallel_memory(cfg, params, 1, seq_len, precision, "fsdp", max(n_gpus, t), True, t, *end)
            b = split["total"]
            combos.append((f"activation checkpointing + micro-batch 1 + FSDP + tensor parallelism {t}", None, b))
        for change, flags, b in combos:
            if b <= cap:
                fitting = {"change": change, "flags": flags, "bytes": b, "fits": True, "note": "combined"}
                break
    return {
        "device": next(k for k in DEVICE_MEMORY_GIB if k.lower() == device.strip().lower()),
        "capacity_bytes": cap,
        "needed_bytes": needed,
        "fits": needed <= cap,
        "headroom_bytes": cap - needed,
        "suggestions": sug,
        "fitting": fitting,
    }


__all__ = [
    "DEVICE_MEMORY_GIB",
    "GIB",
    "TENSOR_PARALLEL_DEGREES",
    "device_memory_bytes",
    "memory_verdict",
    "tensor_parallel_memory",
]
