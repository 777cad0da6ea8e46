"""Memory, as pure functions: the weights in each format, the usual rule of thumb, model states
under ZeRO / FSDP sharding, activations, the loss workspace, training and inference peaks, the
KV cache.

Memory is in bytes; printed in decimal GB (1 GB = 1e9 bytes), as the usual "1B parameters take
4 GB" does. Imports nothing from lmkit except ``lmkit.config``, ``lmkit.errors`` and
``lmkit.plan``'s own modules.
"""

from __future__ import annotations

from lmkit.config import ModelConfig
from lmkit.errors import LmkitError
from lmkit.plan.compute import count_params, decoded_target_len, plan_terms

RULE_OF_THUMB_EXTRA_BYTES = 20  # rule of thumb: gradients, 2 Adam states, activations, temporaries per parameter
# Resident memory of an lmkit training process beside its tensors while it trains (by model.family:
# PlanTerms.runtime_bytes, lmkit's defaults, in lmkit.plan.compute.PLAN_TERMS):
# Python, torch, lmkit, the tokenizer, the memory-mapped shards, the kernels torch loads on the first
# steps (the code of a family's kernels: an encoder's map a few MB more of torch's library than a
# decoder's), an evaluation and the TensorBoard writer. Then what the end of a run adds on top (the
# final evaluation, a checkpoint, the loss-curve plot, whose matplotlib alone is ~25 MB), once the
# steps' transient tensors are gone. The defaults are what the probe (lmkit.train.rss_probe: a whole
# run of a negligible model of the family) measured on a 2-core AMD EPYC Linux machine (kernel 6.18)
# with torch 2.13 and lmkit 0.1.0 on 2026-12-08, each family twice, one after the other: 360.0 MB for
# a decoder, 366.1 for an encoder, 360.9-361.0 for an encoder-decoder, 36.6-36.7 MB at the end. The
# part that is torch's library mapped from the page cache varies with the kernel's state: the same
# probe measured 414-429 MB for a decoder on that machine 20 minutes earlier (RssFile 178-191 MB
# against 125), and three probes side by side measure ~7 MB more each. `lmkit plan --this-machine`
# measures and caches this machine's own. A CUDA context costs a similar few hundred MB of device
# memory (not in torch's allocator figures).
FINISH_BASELINE_BYTES = 37_000_000
# glibc's malloc on a CPU (train.memory fast, the default): once a freed block has raised its mmap
# threshold (up to 32 MiB), activations come from the heap, whose pages stay resident after they are
# freed and are not all reused: the backward pass allocates the activations' gradients, in other
# sizes, while it frees the activations. The peak RSS then runs above the live tensors by about one
# more micro-batch's activations without checkpointing (what a step's forward pass allocates whether
# or not it keeps them) times this factor. Measured on a 2-core AMD Zen 3 (torch 2.13) as the peak RSS
# of glibc's run minus the lean run's, over the activations: 0.9-1.5 for test_plan's cpu-small-shaped
# decoder, encoder and encoder-decoder cases with and without checkpointing (27-89 MB kept), a few MB
# for the tiny ones, 0.7-1.1 for cpu-small itself on the demo corpus (micro-batch 16, 1-2 threads).
# With 1.0, the twelve cases test_plan then held (glibc's and lean) were within -4.0% to +8.1% of the plan (one run;
# the encoder's +5-8%: its kernels mapped ~10 MB more of torch's code than the probe's decoder (RssFile
# after three steps, 116.9 against 107.4 MB), and glibc keeps 1.27x its activations). With a baseline
# per family, measured while the runs go, the nine cases it holds now were within -6.6% to +4.1%
# over three runs (2026-12-08).
# train.memory lean maps and unmaps every large block on its own (lmkit.train.rss): no heap is kept.
GLIBC_HEAP_FACTOR = 1.0
HEAPS = ("fast", "lean")  # train.memory, settled: glibc's malloc as it is, or large blocks returned on free
LOSS_CHUNK = 1024  # rows of logits lmkit's fused linear cross-entropy holds at a time (models.loss)
# glibc's ceiling for its mmap threshold (64-bit): a block this large is always mapped on its own, so
# an evaluation's blocks of logits this large come on top of the heap a run's steps left resident
# instead of reusing it (measured: +67 MB above the steps' peak for vocabulary 8,192, micro-batch 8).
GLIBC_MMAP_MAX = 32 * 2**20

MOMENT_BYTES = 4  # one fp32 optimizer moment per parameter
OPTIMIZERS = ("adamw", "muon")
SHARDINGS = ("ddp", "zero1", "zero2", "zero3", "fsdp")
PRECISIONS = ("fp32", "bf16", "fp16")
DTYPE_BYTES = {"fp32": 4, "fp16": 2, "bf16": 2, "int8": 1}


def weights_bytes(params: float) -> dict[str, float]:
    """Bytes of the weights alone in each format (1B parameters: 4 / 2 / 2 / 1 GB)."""
    return {k: float(params) * b for k, b in DTYPE_BYTES.items()}


def training_rule_of_thumb_bytes(params: float) -> float:
    """The rule of thumb: fp32 weights (4 B) + ≈ 20 B/parameter of gradients, Adam states,
    activations and temporaries ≈ 6 × the weights (1B parameters → about 24 GB)."""
    return float(params) * (4 + RULE_OF_THUMB_EXTRA_BYTES)


def model_state_bytes(
    params: float, precision: str = "fp32", sharding: str = "ddp", n_gpus: int = 1, one_moment: float = 0.0
) -> dict[str, float]:
    """Weights, gradients and Adam states per GPU (ZeRO, Rajbhandari et al. 2020).

    fp32 Adam: 4 (weights) + 4 (gradients) + 8 (two moments) = 16 B/parameter. Mixed precision:
    2 (16-bit weights) + 2 (16-bit gradients) + 12 (fp32 master weights and two moments) = 16.
    ``one_moment`` of the parameters keep one fp32 moment instead of Adam's two (Muon's momentum:
    ``optimizer_one_moment_params``), 4 B less each. ZeRO-1 splits the optimizer states across the
    GPUs, ZeRO-2 also the gradients, ZeRO-3 / FSDP also the weights; DDP keeps a full copy of
    everything on every GPU.
    """
    if precision not in PRECISIONS:
        raise LmkitError(f"precision must be one of {'|'.join(PRECISIONS)}, got {precision!r}")
    if sharding not in SHARDINGS:
        raise LmkitError(f"sharding must be one of {'|'.join(SHARDINGS)}, got {sharding!r}")
    if n_gpus < 1:
        raise LmkitError(f"the number of GPUs must be at least 1, got {n_gpus}")
    w, g, o = (4.0, 4.0, 8.0) if precision == "fp32" else (2.0, 2.0, 12.0)
    stage = {"ddp": 0, "zero1": 1, "zero2": 2, "zero3": 3, "fsdp": 3}[sharding]
    n = float(n_gpus)
    return {
        "weights": params * (w / n if stage >= 3 else w),
        "gradients": params * (g / n if stage >= 2 else g),
        "optimizer": (params * o - MOMENT_BYTES * one_moment) / (n if stage >= 1 else 1.0),
    }


def optimizer_one_moment_params(cfg: ModelConfig, optimizer: str = "adamw", params: float | None = None) -> float:
    """Parameters whose optimizer keeps one moment, not Adam's two: with ``train.optimizer`` muon, the
    hidden layers' weight matrices (lmkit.train.muon: Muon's momentum; embeddings, the output head,
    norms and biases keep AdamW), i.e. every matrix a token is multiplied by except the vocabulary
    projection (and an encoder's MLM-head dense layer, outside the blocks); none with adamw.
    ``params`` (a total that ``cfg`` only stands for the shape of) scales the count in proportion."""
    if optimizer not in OPTIMIZERS:
        raise LmkitError(f"train.optimizer must be one of {'|'.join(OPTIMIZERS)}, got {optimizer!r}")
    if optimizer == "adamw":
        return 0.0
    count = count_params(cfg)
    hidden = count.matmul - plan_terms(cfg.family).head_matmul(cfg)
    return float(hidden) * (1.0 if params is None else float(params) / count.total)


def korthikanti_activation_bytes(
    seq_len: int,
    micro_batch: int,
    d_model: int,
    n_heads: int,
    n_layers: int,
    recompute: bool = False,
    fused_attention: bool = False,
) -> float:
    """Activations of a GPT stack at 16-bit (Korthikanti et al. 2022, no tensor/sequence parallelism):
    s·b·h·(34 + 5·a·s/h) bytes per layer, where 5·a·s/h counts the attention scores, their softmax
    and its dropout mask, which an unfused attention keeps; ``fused_attention`` drops that term
    (a fused kernel never stores them): s·b·h·34. With full recomputation only the layer inputs,
    2·s·b·h."""
    s, b, h, a = float(seq_len), float(micro_batch), float(d_model), float(n_heads)
    scores = 0.0 if fused_attention else 5 * a * s / h
    per_layer = 2 * s * b * h if recompute else s * b * h * (34 + scores)
    return n_layers * per_layer


def activation_bytes(
    cfg: ModelConfig, micro_batch: int, seq_len: int | None = None, precision: str = "fp32", checkpointing: bool = False
) -> dict[str, float]:
    """Bytes of activations held at the peak of a training step of lmkit's model, by part.

    layers: every layer's saved tensors (below) at 4 bytes (fp32) or
    2 bytes (bf16/fp16 autocast, residual stream 4); with activation checkpointing only each
    layer's input is kept, plus one layer's full set while it is recomputed in the backward pass
    (not at the same time as the loss workspace, so only the larger of the two counts).
    dropout > 0 adds a 1-byte mask per dropped element (2 per layer of width d).
    outside: the embedding output, the final norm's input and the loss's gradient w.r.t. the
    hidden states. loss: lmkit's fused linear cross-entropy (models.loss) holds one block of at
    most 1,024 rows of fp32 logits (the softmax runs in place; with 16-bit autocast also a 16-bit
    block for the product and the gradient), plus an fp32 gradient of the output matrix (V·d); it
    never holds the full B·T·V logits a plain cross-entropy would. Also, apart from ``total``:
    ``loss_block``, those blocks, which the loss keeps from one step to the next
    (``models.loss._workspace``), and ``eval``, what
    an evaluation's forward pass holds beside it: without gradients the loss takes a block of fp32
    logits and their log-softmax at a time.

    A layer's saved tensors per token (the family's ``PlanTerms.saved``, in the stream's width):
    Korthikanti et al.'s method applied to lmkit's layers, whose attention runs in a fused kernel
    (scaled_dot_product_attention saves q, k, v, its output and a per-row log-sum-exp, never the
    T×T scores); residual values stay fp32 under autocast, the others are 16-bit there. An
    encoder-decoder's decoder blocks add cross-attention (below); its keys/values over the encoder
    output count per input token.
    """
    if precision not in PRECISIONS:
        raise LmkitError(f"precision must be one of {'|'.join(PRECISIONS)}, got {precision!r}")
    S = int(seq_len or cfg.max_seq_len)
    b = int(micro_batch)
    if S <= 0 or b <= 0:
        raise LmkitError(f"sequence length and micro-batch must be positive, got {S} and {b}")
    d, V = cfg.d_model, cfg.vocab_size
    act = 4.0 if precision == "fp32" else 2.0
    terms = plan_terms(cfg.family)
    resid, other = terms.saved(cfg)
    per_token_layer = resid * 4.0 + other * act + (2.0 * d if cfg.dropout > 0 else 0.0)
    L = cfg.n_layers
    if terms.attention == "encoder-decoder":  # an encoder stack over the inputs, a decoder over the targets
        Tt = decoded_target_len(cfg, S)
        Ld = cfg.n_decoder_layers or L
        H = cfg.n_heads
        # decoder layers: a third norm input (resid), cross-attn norm output, q, output, copy (4d),
        # on targets; cross keys/values (2d) over the inputs in every decoder layer. T5's learned
        # position bias is an attention mask that needs a gradient, which sends self-attention
        # down PyTorch's unfused path on a CPU: it keeps each layer's softmax (H x T x T) as well.
        dec_per_target = per_token_layer + d * 4.0 + 4 * d * act
        enc_layer = b * (S * per_token_layer + H * S * S * act)
        dec_layer = b * (Tt * dec_per_target + S * 2 * d * act + H * Tt * Tt * act)
        layer_inputs = (L * S + Ld * Tt) * b * d * 4.0
        one_layer = max(enc_layer, dec_layer)
        full = L * enc_layer + Ld * dec_layer
        outside = b * S * d * 4.0 * 2 + b * Tt * d * 4.0 * 3  # encoder output + final norm; decoder side
    else:
        full = L * b * S * per_token_layer
        layer_inputs = L * b * S * d * 4.0
        one_layer = b * S * per_token_layer
        outside = b * S * d * 4.0 * 3
    rows = min(terms.predicted_tokens(cfg, S, b), LOSS_CHUNK)
    block = rows * V * (4.0 if precision == "fp32" else 6.0)
    loss = block + V * d * 4.0
    if checkpointing:
        # the loss workspace (end of the forward pass) and the one layer recomputed at a time (in the
        # backward pass) are never held together
        layers = layer_inputs + max(one_layer - loss, 0.0)
    else:
        layers = full
    return {
        "layers": layers,
        "outside": outside,
        "loss": loss,
        "total": layers + outside + loss,
        "loss_block": block,
        "eval": rows * V * 8.0,
    }


def runtime_of(cfg: ModelConfig, runtime_bytes: float | None = None) -> float:
    """The runtime's own resident memory for ``cfg``'s family: ``runtime_bytes`` as given (this
    machine's measured figure), or lmkit's default for the family (``PlanTerms.runtime_bytes``)."""
    return plan_terms(cfg.family).runtime_bytes if runtime_bytes is None else float(runtime_bytes)


def heap_bytes(
    cfg: ModelConfig, micro_batch: int, seq_len: int | None = None, precision: str = "fp32", heap: str | None = None
) -> float:
    """Resident memory a CPU process's allocator keeps beside its live tensors at the peak.

    ``heap`` is the settled ``train.memory`` of a run on a CPU: "fast" (glibc's malloc as it is):
    ``GLIBC_HEAP_FACTOR`` x the activations of one micro-batch without checkpointing; "lean" (large
    blocks returned to the system when freed) or None (tensors on a GPU, whose memory the host's
    heap is not part of): nothing.
    """
    if heap is None or heap == "lean":
        return 0.0
    if heap != "fast":
        raise LmkitError(f"train.memory must be one of {'|'.join(HEAPS)} once settled, got {heap!r}")
    acts = activation_bytes(cfg, micro_batch, seq_len, precision, checkpointing=False)
    return GLIBC_HEAP_FACTOR * (acts["layers"] + acts["outside"])


def choose_heap(setting: str, fast_bytes: float, lean_bytes: float, available_bytes: float | None) -> tuple[str, str]:
    """``train.memory`` settled for a CPU run: ("fast" | "lean", why).

    "fast" and "lean" stand as given. "auto" is fast unless the run's planned peak with glibc's
    allocator (``fast_bytes``) exceeds ``available_bytes`` (what this machine can still give it;
    None when unknown), then lean (planned peak ``lean_bytes``), which trades speed for memory.
    """
    if setting in HEAPS:
        return setting, "given"
    if setting != "auto":
        raise LmkitError(f"train.memory must be one of auto|{'|'.join(HEAPS)}, got {setting!r}")
    if available_bytes is None:
        return "fast", "auto: available memory unknown"
    gb = f"{fast_bytes / 1e9:.2f} GB planned with glibc's allocator"
    if fast_bytes <= available_bytes:
        return "fast", f"auto: {gb}, {available_bytes / 1e9:.2f} GB available"
    return "lean", (
        f"auto: {gb} but {available_bytes / 1e9:.2f} GB available; lean plans {lean_bytes / 1e9:.2f} GB, at some speed"
    )


def training_memory(
    cfg: ModelConfig,
    params: float | None = None,
    micro_batch: int = 1,
    seq_len: int | None = None,
    precision: str = "fp32",
    sharding: str = "ddp",
    n_gpus: int = 1,
    checkpointing: bool = False,
    runtime_bytes: float | None = None,
    finish_bytes: float = FINISH_BASELINE_BYTES,
    optimizer: str = "adamw",
    heap: str | None = None,
) -> dict[str, float]:
    """Peak training memory per GPU (or of the process on a CPU), by part, with ``total``.

    weights + gradients + optimizer states (``model_state_bytes``, 16 B/parameter before sharding
    with AdamW, less with ``optimizer`` muon) + activations of one micro-batch (``activation_bytes``)
    + the runtime's own memory while it trains (``runtime_bytes``, the family's default
    ``PlanTerms.runtime_bytes`` when None) + what the run's end adds (``finish_bytes``: final
    evaluation, checkpoint, plot) + an evaluation's blocks of logits (``activation_bytes``' eval) + on
    a CPU what the allocator keeps (``heap_bytes``; ``heap`` is the settled train.memory, None for
    tensors on a GPU).
    A peak is a maximum, and ``not_at_once`` (a negative part) takes back what is never there at
    the same time. In one process without activation checkpointing the gradients and the
    activations are not all there at once: lmkit frees the gradients after each step
    (``zero_grad(set_to_none)``), so at the end of the forward pass, where activations peak,
    gradients do not exist yet, and in the backward pass each gradient appears as activations are
    freed: a step holds the larger of (activations + loss) and gradients. With DDP's persistent
    gradient buckets, with sharding, or with checkpointing (gradients accumulate while layers are
    recomputed) a step holds them all. Evaluations and the run's end come between or after the
    steps, their transient tensors gone but for the loss's block, so only the larger of a step's
    and (that block + the larger of an evaluation's and the end's) counts; the allocator's heap
    stays resident under both, and with glibc's allocator an evaluation whose blocks are too large
    for its heap (``GLIBC_MMAP_MAX``) comes on top of a step's memory, which that heap keeps.
    ``params`` overrides the count from ``cfg`` (when cfg only stands for a shape).
    """
    n = float(params if params is not None else count_params(cfg).total)
    states = model_state_bytes(n, precision, sharding, n_gpus, optimizer_one_moment_params(cfg, optimizer, params))
    acts = activation_bytes(cfg, micro_batch, seq_len, precision, checkpointing)
    out = {
        **states,
        "activations": acts["layers"] + acts["outside"],
        "loss": acts["loss"],
        "runtime": runtime_of(cfg, runtime_bytes),
        "finish": float(finish_bytes),
        "heap": heap_bytes(cfg, micro_batch, seq_len, precision, heap),
    }
    out["evaluation"] = acts["eval"]
    step = out["gradients"] + out["activations"] + out["loss"]
    apart = min(out["gradients"], out["activations"] + out["loss"]) if n_gpus == 1 and not checkpointing else 0.0
    end = acts["loss_block"] + max(out["evaluation"], out["finish"])
    # an evaluation takes two fp32 blocks of logits at a time: each one mapped on its own when this large
    mapped = out["evaluation"] if heap == "fast" and acts["eval"] / 2 >= GLIBC_MMAP_MAX else 0.0
    peak = max(step - apart + mapped, end)  # what a step, or the evaluations and the run's end, add at most
    out["not_at_once"] = peak - (step + out["evaluation"] + out["finish"])
    out["total"] = sum(out.values())
    return out


def kv_cache_bytes(cfg: ModelConfig, batch: int, context: int, dtype_bytes: float = 4.0) -> float:
    """Keys and values cached for generation: 2 · layers · batch · context · kv_heads · head_dim values
    (grouped-query attention caches its key/value heads only).

    encdec: the decoder's self-attention cache over ``cfg.max_target_len`` positions plus the
    cross-attention keys/values over ``context`` encoder positions. An encoder caches nothing.
    """
    d = cfg.kv_heads * cfg.head_dim
    layers, positions = plan_terms(cfg.family).cached(cfg, context)
    return 2.0 * layers * batch * positions * d * dtype_bytes


def inference_memory(
    cfg: ModelConfig,
    params: float | None = None,
    batch: int = 1,
    context: int | None = None,
    weight_format: str = "fp32",
    runtime_bytes: float | None = None,
) -> dict[str, float]:
    """Memory to run the model: weights in ``weight_format`` + KV cache + working space + runtime.

    The KV cache and activations are in the compute precision: fp32 for fp32 and int8 weights
    (lmkit dequantises int8 on the fly), 16-bit for fp16/bf16. Working space: one layer's
    activations for the whole prompt, and the next-token logits of each sequence (B·V fp32; lmkit's
    generation projects only the last position to the vocabulary).
    """
    if weight_format not in DTYPE_BYTES:
        raise LmkitError(f"weight format must be one of {'|'.join(DTYPE_BYTES)}, got {weight_format!r}")
    n = float(params if params is not None else count_params(cfg).total)
    T = int(context or cfg.max_seq_len)
    act = 2.0 if weight_format in ("fp16", "bf16") else 4.0
    workspace = batch * T * (3 * cfg.d_model + 2 * cfg.ffn_width) * act + batch * cfg.vocab_size * 4.0
    out = {
        "weights": n * DTYPE_BYTES[weight_format],
        "kv_cache": kv_cache_bytes(cfg, batch, T, act),
        "workspace": float(workspace),
        "runtime": runtime_of(cfg, runtime_bytes),
    }
    out["total"] = sum(out.values())
    return out


__all__ = [
    "DTYPE_BYTES",
    "FINISH_BASELINE_BYTES",
    "GLIBC_HEAP_FACTOR",
    "GLIBC_MMAP_MAX",
    "HEAPS",
    "LOSS_CHUNK",
    "MOMENT_BYTES",
    "OPTIMIZERS",
    "PRECISIONS",
    "RULE_OF_THUMB_EXTRA_BYTES",
    "SHARDINGS",
    "activation_bytes",
    "choose_heap",
    "heap_bytes",
    "inference_memory",
    "korthikanti_activation_bytes",
    "kv_cache_bytes",
    "model_state_bytes",
    "optimizer_one_moment_params",
    "runtime_of",
    "training_memory",
    "training_rule_of_thumb_bytes",
    "weights_bytes",
]
