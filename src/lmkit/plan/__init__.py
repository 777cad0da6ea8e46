"""Compute planning, as pure functions: parameters, memory, FLOPs, PF-days, GPU-hours, Chinchilla.

Every figure lmkit prints about cost comes from here, so the trainer's MFU, the demo's plan and
``lmkit plan`` agree. Imports nothing from lmkit except ``lmkit.config`` and ``lmkit.errors``
(torch only lazily, to measure this machine's matmul peak).

Conventions (sources in /work/shared/notes/planning.md and the docstrings below):
- Parameters are counted exactly as lmkit's models hold them (a tied embedding once). The
  *embedding* parameters are the lookup tables: token embeddings, learned position embeddings,
  token-type embeddings and T5's relative-position buckets; everything else is *non-embedding*
  (an untied output head included).
- FLOPs per training token = 6 · N_matmul + 12 · n_layers · d_model · T (PaLM appendix B, the
  formula nanoGPT's MFU uses): N_matmul is every parameter a token is multiplied by — the
  non-embedding parameters plus the output projection when it is tied to the embedding (lookups
  cost nothing, the vocabulary projection costs 2·V·d per token forward) — and the second term is
  attention's QKᵀ and AV over a context of T (no discount for the causal mask). The total of a
  run is often quoted as 6·N·D; both are reported.
- Memory in bytes; printed in decimal GB (1 GB = 1e9 bytes), as the course's "1B parameters take
  4 GB" does.
- 1 petaFLOP/s-day = 1e15 FLOP/s × 86,400 s = 8.64e19 FLOPs.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from lmkit.config import ModelConfig, TrainConfig
from lmkit.errors import LmkitError
from lmkit.objectives import span_lengths, span_window_length

PF_DAY = 8.64e19  # FLOPs in one petaFLOP/s-day
TOKENS_PER_PARAM = 20.0  # Chinchilla's rule of thumb
# A model is "about right" when its tokens/parameter ratio is within a factor 2 of 20 (10..40),
# which is the same as its size being within a factor √2 of the rule's compute-optimal size for the
# compute it used (N/N_opt = sqrt(20/ratio) when C = 6ND is held fixed).
ABOUT_RIGHT_BAND = (10.0, 40.0)
DEFAULT_MFU = 0.40  # utilisation assumed for GPU-hours: a well-tuned large run reaches 0.4-0.5
RULE_OF_THUMB_EXTRA_BYTES = 20  # course: gradients, 2 Adam states, activations, temporaries per parameter
# Resident memory of an lmkit training process whatever its model: Python, torch, lmkit, the
# tokenizer, the memory-mapped shards and the kernels torch loads on the first step, evaluation and
# the loss-curve plot (peak RSS of a whole run of a negligible model on this kind of CPU machine:
# 0.33 GiB with one set of library builds, 0.44 GiB with another; tests/test_plan.py measures it
# each run). A CUDA context costs a similar few hundred MB of device memory.
RUNTIME_BASELINE_BYTES = int(0.40 * 2**30)
# On a CPU, glibc's malloc keeps freed activation blocks mapped, so a process's peak RSS runs above
# the bytes its tensors need at once: measured 1.24-1.27x the precise estimate here (2 configs);
# with MALLOC_MMAP_THRESHOLD_=131072 in the environment the RSS follows the estimate (within 5%).
CPU_RSS_FACTOR = 1.25
LOSS_CHUNK = 1024  # rows of logits lmkit's fused linear cross-entropy holds at a time (models.layers)
T5_RELATIVE_BUCKETS = 32
MLM_SCORED_FRACTION = 0.15  # share of an encoder's positions the MLM loss scores (objectives.MLM_PROBABILITY)

# Dense 16-bit tensor-core peaks from the vendors' datasheets (FLOP/s, no sparsity).
ACCELERATORS: dict[str, float] = {
    "V100": 125e12,  # fp16 tensor cores
    "A100": 312e12,  # bf16
    "H100": 989e12,  # SXM, bf16
    "H100 PCIe": 756e12,  # bf16
    "H200": 989e12,  # bf16 (same compute as H100 SXM, more memory)
}
THIS_MACHINE = "this machine"

SHARDINGS = ("ddp", "zero1", "zero2", "zero3", "fsdp")
PRECISIONS = ("fp32", "bf16", "fp16")
DTYPE_BYTES = {"fp32": 4, "fp16": 2, "bf16": 2, "int8": 1}


# =========================================================================== parameters


@dataclass(frozen=True)
class ParamCount:
    """Parameters of a model config, as its lmkit model holds them."""

    total: int
    embedding: int  # lookup tables (tokens, positions, token types, relative-position buckets)
    non_embedding: int  # everything else, an untied output head included
    matmul: int  # parameters each token is multiplied by: non-embedding + a tied output projection


def count_params(cfg: ModelConfig) -> ParamCount:
    """Exact parameter count of ``lmkit.models.build_model(cfg)``, split into embedding/non-embedding.

    decoder (Llama-like): token embedding V·d (+ max_seq_len·d learned positions); per layer two
    RMSNorm weights 2d, q/k/v/o 4d², SwiGLU gate/up/down 3·d·f (no biases); final RMSNorm d; an
    untied head V·d.
    encoder (BERT-like): word V·d, token-type 2·d (and learned position max_seq_len·d)
    embeddings, their LayerNorm 2d; per layer q/k/v/o with biases 4d²+4d, LayerNorm 2d, intermediate d·f+f, output
    f·d+d, LayerNorm 2d; MLM head dense d²+d, LayerNorm 2d, output bias V (weight tied).
    encdec (T5 v1.0-like): shared embedding V·d; encoder layers: norm d, q/k/v/o 4d², norm d,
    wi d·f, wo f·d; a 32 × n_heads relative-position table in the first encoder layer and another
    in the first decoder layer; decoder layers add a cross-attention 4d² and its norm d; two final
    norms d; the head tied to the shared embedding (untied: + V·d).
    """
    V, d, L, f, H = cfg.vocab_size, cfg.d_model, cfg.n_layers, cfg.ffn_width, cfg.n_heads
    head = 0 if cfg.tie_embeddings else V * d
    if cfg.family == "decoder":
        emb = V * d + (cfg.max_seq_len * d if cfg.pos_encoding == "learned" else 0)
        per_layer = 2 * d + 4 * d * d + 3 * d * f
        non_emb = L * per_layer + d + head
        matmul = L * (4 * d * d + 3 * d * f) + V * d
    elif cfg.family == "encoder":
        emb = V * d + (cfg.max_seq_len * d if cfg.pos_encoding == "learned" else 0) + 2 * d
        per_layer = (4 * d * d + 4 * d) + 2 * d + (d * f + f) + (f * d + d) + 2 * d
        mlm_head = (d * d + d) + 2 * d + V + head
        non_emb = 2 * d + L * per_layer + mlm_head
        matmul = L * (4 * d * d + 2 * d * f) + d * d + V * d
    elif cfg.family == "encdec":
        Ld = cfg.n_decoder_layers or L
        emb = V * d + 2 * T5_RELATIVE_BUCKETS * H
        enc_layer = d + 4 * d * d + d + 2 * d * f
        dec_layer = d + 4 * d * d + d + 4 * d * d + d + 2 * d * f
        non_emb = L * enc_layer + d + Ld * dec_layer + d + head
        matmul = L * (4 * d * d + 2 * d * f) + Ld * (8 * d * d + 2 * d * f) + V * d
    else:
        raise LmkitError(f"model.family must be one of encoder|decoder|encdec, got {cfg.family!r}")
    return ParamCount(total=emb + non_emb, embedding=emb, non_embedding=non_emb, matmul=matmul)


# =========================================================================== compute


def flops_per_token(cfg: ModelConfig, seq_len: int | None = None, training: bool = True) -> float:
    """FLOPs to train on (``training``) or run forward over one token of a ``seq_len`` window.

    Training = 3 × forward (the backward pass costs twice the forward). Forward per token:
    2·N_matmul + 4·n_layers·d_model·T, where T is the context attended to (PaLM appendix B; with
    the factor 3 this is nanoGPT's 6N + 12·L·H·Q·T). ``seq_len`` defaults to ``cfg.max_seq_len``.

    encoder: the MLM head (dense d² and the vocabulary projection V·d) runs only on the positions
    the objective scores, ``MLM_SCORED_FRACTION`` = 15% of them (lmkit's Encoder.loss).
    encdec: a "token" is an encoder input token; each window of ``seq_len`` inputs comes with
    ``decoded_target_len`` decoder positions (span corruption's target, which lmkit's loss decodes
    without the padding up to ``max_target_len``). The encoder's parameters run over the
    inputs, the decoder's over the targets, except the cross-attention keys/values (2d² per
    decoder layer), which run over the inputs; attention costs self-attention over each side plus
    cross-attention from targets to inputs.
    """
    T = int(seq_len or cfg.max_seq_len)
    if T <= 0:
        raise LmkitError(f"sequence length must be positive, got {T}")
    p = count_params(cfg)
    d, L = cfg.d_model, cfg.n_layers
    if cfg.family == "decoder":
        forward = 2.0 * p.matmul + 4.0 * L * d * T
    elif cfg.family == "encoder":
        head = d * d + cfg.vocab_size * d
        forward = 2.0 * (p.matmul - head) + 2.0 * MLM_SCORED_FRACTION * head + 4.0 * L * d * T
    else:
        S = T
        Tt = decoded_target_len(cfg, S)
        Ld = cfg.n_decoder_layers or L
        f = cfg.ffn_width
        enc = L * (4 * d * d + 2 * d * f)
        dec_on_targets = Ld * (6 * d * d + 2 * d * f) + cfg.vocab_size * d  # self q/k/v/o, cross q/o, MLP, head
        cross_kv = Ld * 2 * d * d  # cross-attention keys/values over the encoder's outputs
        per_window = (2.0 * (enc * S + dec_on_targets * Tt + cross_kv * S)
                      + 4.0 * d * (L * S * S + Ld * Tt * Tt + Ld * Tt * S))
        forward = per_window / S
    return 3.0 * forward if training else forward


def decoded_target_len(cfg: ModelConfig, seq_len: int) -> int:
    """Decoder positions an encoder-decoder trains on per window of ``seq_len`` inputs: the span
    corruption target of the longest raw window that fits (``EncoderDecoder.loss`` decodes up to
    the last scored target token); ``min(max_target_len, seq_len)`` when no window fits."""
    try:
        return span_lengths(span_window_length(seq_len, cfg.max_target_len))[1]
    except ValueError:
        return min(cfg.max_target_len, seq_len)


def training_flops(params: float, tokens: float) -> float:
    """The usual estimate of a run's compute: 6 · N · D."""
    return 6.0 * float(params) * float(tokens)


def pf_days(flops: float) -> float:
    """FLOPs in petaFLOP/s-days (1 PF-day = 8.64e19 FLOPs)."""
    return float(flops) / PF_DAY


def mfu(tokens_per_second: float, flops_per_tok: float, peak: float) -> float:
    """Model FLOPs utilisation: achieved FLOP/s over the hardware's peak."""
    return tokens_per_second * flops_per_tok / peak if peak > 0 else 0.0


def accelerator_peak(name: str) -> float:
    """Datasheet dense 16-bit peak (FLOP/s) of a named accelerator; "this machine" is measured."""
    key = name.strip().lower()
    if key in ("this machine", "this", "here", "local", "cpu"):
        return measure_matmul_peak()
    for known, peak in ACCELERATORS.items():
        if known.lower() == key:
            return peak
    raise LmkitError(f"unknown accelerator {name!r} (known: {', '.join(ACCELERATORS)}, here)")


def gpu_hours(flops: float, peak: float, utilisation: float = DEFAULT_MFU) -> float:
    """Device-hours to do ``flops`` on devices of ``peak`` FLOP/s running at ``utilisation``."""
    if not 0 < utilisation <= 1:
        raise LmkitError(f"utilisation must be in (0, 1], got {utilisation}")
    return float(flops) / (peak * utilisation) / 3600.0


def measure_matmul_peak(dtype: Any = None, seconds: float = 0.4, device: Any = "cpu", size: int | None = None) -> float:
    """This machine's dense matmul throughput in FLOP/s: the best of repeated n×n products.

    dtype defaults to fp32 on CPU (16-bit has no fast path on most CPUs) and bf16 on GPUs.
    Results are cached per process (the trainer asks once per run).
    """
    import torch

    dev = torch.device(device)
    if dtype is None:
        dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    n = size or (8192 if dev.type == "cuda" else 1024)
    return _measure_cached(str(dev), str(dtype).removeprefix("torch."), n, float(seconds))


@functools.lru_cache(maxsize=16)
def _measure_cached(device: str, dtype_name: str, n: int, seconds: float) -> float:
    import torch

    dev = torch.device(device)
    dtype = getattr(torch, dtype_name)
    a = torch.randn(n, n, device=dev).to(dtype)
    b = torch.randn(n, n, device=dev).to(dtype)

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    for _ in range(2):  # warm-up: kernel selection, page faults
        torch.mm(a, b)
    sync()
    best = math.inf
    end = time.perf_counter() + seconds
    runs = 0
    while runs < 3 or time.perf_counter() < end:
        t0 = time.perf_counter()
        torch.mm(a, b)
        sync()
        best = min(best, time.perf_counter() - t0)
        runs += 1
    return 2.0 * n ** 3 / best


def device_peak_flops(device: Any = "cpu", precision: str = "fp32") -> float:
    """Peak FLOP/s to measure MFU against: the datasheet figure of a known GPU at 16-bit precision,
    otherwise a measured matmul peak in the training precision (fp32 on CPU)."""
    import torch

    dev = torch.device(device)
    if dev.type == "cuda" and precision in ("bf16", "fp16"):
        name = torch.cuda.get_device_name(dev)
        matches = [k for k in ACCELERATORS if k.lower() in name.lower()]
        if matches:
            return ACCELERATORS[max(matches, key=len)]
    if dev.type == "cuda":
        return measure_matmul_peak({"fp32": torch.float32, "bf16": torch.bfloat16,
                                    "fp16": torch.float16}[precision], device=dev)
    return measure_matmul_peak(torch.float32, device=dev)


# =========================================================================== memory


def weights_bytes(params: float) -> dict[str, float]:
    """Bytes of the weights alone in each format (1B parameters: 4 / 2 / 2 / 1 GB)."""
    return {k: float(params) * b for k, b in DTYPE_BYTES.items()}


def training_rule_of_thumb_bytes(params: float) -> float:
    """The course's rule: fp32 weights (4 B) + ≈ 20 B/parameter of gradients, Adam states,
    activations and temporaries ≈ 6 × the weights (1B parameters → about 24 GB)."""
    return float(params) * (4 + RULE_OF_THUMB_EXTRA_BYTES)


def model_state_bytes(params: float, precision: str = "fp32", sharding: str = "ddp", n_gpus: int = 1) -> dict[str, float]:
    """Weights, gradients and Adam states per GPU (ZeRO, Rajbhandari et al. 2020).

    fp32 Adam: 4 (weights) + 4 (gradients) + 8 (two moments) = 16 B/parameter. Mixed precision:
    2 (16-bit weights) + 2 (16-bit gradients) + 12 (fp32 master weights and two moments) = 16.
    ZeRO-1 splits the optimizer states across the GPUs, ZeRO-2 also the gradients, ZeRO-3 / FSDP
    also the weights; DDP keeps a full copy of everything on every GPU.
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
        "optimizer": params * (o / n if stage >= 1 else o),
    }


def korthikanti_activation_bytes(seq_len: int, micro_batch: int, d_model: int, n_heads: int, n_layers: int,
                                 recompute: bool = False) -> float:
    """Activations of a GPT stack at 16-bit (Korthikanti et al. 2022, no tensor/sequence parallelism):
    s·b·h·(34 + 5·a·s/h) bytes per layer; with full recomputation only the layer inputs, 2·s·b·h."""
    s, b, h, a = float(seq_len), float(micro_batch), float(d_model), float(n_heads)
    per_layer = 2 * s * b * h if recompute else s * b * h * (34 + 5 * a * s / h)
    return n_layers * per_layer


def _layer_activation_elements(cfg: ModelConfig) -> tuple[float, float]:
    """Elements per token (in the stream's width) each layer keeps for the backward pass.

    Korthikanti et al.'s method applied to lmkit's layers, whose attention runs in a fused kernel
    (scaled_dot_product_attention saves q, k, v, its output and a per-row log-sum-exp, never the
    T×T scores). Returns (residual-stream elements, other elements): residual values stay fp32
    under autocast, the others are 16-bit there.

    decoder block: inputs of the two RMSNorms (2d, residual); norm output, q, k, v, the attention
    output and its contiguous copy for o_proj, the MLP norm output (7d); SwiGLU's gate, silu(gate),
    up and their product (4f). encoder (post-norm BERT) block: the two LayerNorm inputs (2d); block
    input, q, k, v, attention output and its copy, attention LayerNorm output (7d); GELU input and
    output (2f). encdec: encoder block like the decoder's with a ReLU MLP (its
    output only, f); decoder block adds cross-attention (norm output, q, attention output and copy)
    while its keys/values over the encoder output are counted per input token by the caller.
    """
    d, f = float(cfg.d_model), float(cfg.ffn_width)
    if cfg.family == "decoder":
        return 2 * d, 7 * d + 4 * f
    if cfg.family == "encoder":
        return 2 * d, 7 * d + 2 * f
    return 2 * d, 7 * d + f


def activation_bytes(cfg: ModelConfig, micro_batch: int, seq_len: int | None = None, precision: str = "fp32",
                     checkpointing: bool = False) -> dict[str, float]:
    """Bytes of activations held at the peak of a training step of lmkit's model, by part.

    layers: every layer's saved tensors (see ``_layer_activation_elements``) at 4 bytes (fp32) or
    2 bytes (bf16/fp16 autocast, residual stream 4); with activation checkpointing only each
    layer's input is kept, plus one layer's full set while it is recomputed in the backward pass
    (not at the same time as the loss workspace, so only the larger of the two counts).
    dropout > 0 adds a 1-byte mask per dropped element (2 per layer of width d).
    outside: the embedding output, the final norm's input and the loss's gradient w.r.t. the
    hidden states. loss: lmkit's fused linear cross-entropy (models.layers) holds one block of at
    most 1,024 rows of fp32 logits (the softmax runs in place; with 16-bit autocast also the 16-bit
    product), plus an fp32 gradient of the output matrix (V·d); it never holds the full B·T·V
    logits a plain cross-entropy would.
    """
    if precision not in PRECISIONS:
        raise LmkitError(f"precision must be one of {'|'.join(PRECISIONS)}, got {precision!r}")
    S = int(seq_len or cfg.max_seq_len)
    b = int(micro_batch)
    if S <= 0 or b <= 0:
        raise LmkitError(f"sequence length and micro-batch must be positive, got {S} and {b}")
    d, V = cfg.d_model, cfg.vocab_size
    act = 4.0 if precision == "fp32" else 2.0
    resid, other = _layer_activation_elements(cfg)
    per_token_layer = resid * 4.0 + other * act + (2.0 * d if cfg.dropout > 0 else 0.0)
    L = cfg.n_layers
    if cfg.family == "encdec":
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
        predicted = b * Tt
        outside = b * S * d * 4.0 * 2 + b * Tt * d * 4.0 * 3  # encoder output + final norm; decoder side
    else:
        full = L * b * S * per_token_layer
        layer_inputs = L * b * S * d * 4.0
        one_layer = b * S * per_token_layer
        predicted = b * S if cfg.family == "decoder" else max(1, round(0.15 * b * S))
        outside = b * S * d * 4.0 * 3
    rows = min(predicted, LOSS_CHUNK)
    loss = rows * V * (4.0 if precision == "fp32" else 6.0) + V * d * 4.0
    if checkpointing:
        # the loss workspace (end of the forward pass) and the one layer recomputed at a time (in the
        # backward pass) are never held together
        layers = layer_inputs + max(one_layer - loss, 0.0)
    else:
        layers = full
    return {"layers": layers, "outside": outside, "loss": loss, "total": layers + outside + loss}


def training_memory(cfg: ModelConfig, params: float | None = None, micro_batch: int = 1, seq_len: int | None = None,
                    precision: str = "fp32", sharding: str = "ddp", n_gpus: int = 1,
                    checkpointing: bool = False, runtime_bytes: float = RUNTIME_BASELINE_BYTES) -> dict[str, float]:
    """Peak training memory per GPU (or of the process on a CPU), by part, with ``total``.

    weights + gradients + Adam states (``model_state_bytes``, 16 B/parameter before sharding)
    + activations of one micro-batch (``activation_bytes``) + the runtime's own resident memory.
    An upper bound by at most the gradients (4 B/parameter): lmkit frees gradients after each
    step, so they do not yet exist when the activations peak at the end of the forward pass.
    ``params`` overrides the count from ``cfg`` (when cfg only stands for a shape).
    """
    n = float(params if params is not None else count_params(cfg).total)
    states = model_state_bytes(n, precision, sharding, n_gpus)
    acts = activation_bytes(cfg, micro_batch, seq_len, precision, checkpointing)
    out = {**states, "activations": acts["layers"] + acts["outside"], "loss": acts["loss"],
           "runtime": float(runtime_bytes)}
    out["total"] = sum(out.values())
    return out


def kv_cache_bytes(cfg: ModelConfig, batch: int, context: int, dtype_bytes: float = 4.0) -> float:
    """Keys and values cached for generation: 2 · layers · batch · context · d_model values.

    encdec: the decoder's self-attention cache over ``cfg.max_target_len`` positions plus the
    cross-attention keys/values over ``context`` encoder positions. An encoder caches nothing.
    """
    d = cfg.d_model
    if cfg.family == "decoder":
        return 2.0 * cfg.n_layers * batch * context * d * dtype_bytes
    if cfg.family == "encdec":
        Ld = cfg.n_decoder_layers or cfg.n_layers
        return 2.0 * Ld * batch * (cfg.max_target_len + context) * d * dtype_bytes
    return 0.0


def inference_memory(cfg: ModelConfig, params: float | None = None, batch: int = 1, context: int | None = None,
                     weight_format: str = "fp32", runtime_bytes: float = RUNTIME_BASELINE_BYTES) -> dict[str, float]:
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
    out = {"weights": n * DTYPE_BYTES[weight_format], "kv_cache": kv_cache_bytes(cfg, batch, T, act),
           "workspace": float(workspace), "runtime": float(runtime_bytes)}
    out["total"] = sum(out.values())
    return out


def shape_for_params(params: float, vocab_size: int = 32000, seq_len: int = 2048) -> ModelConfig:
    """A plausible Llama-like decoder shape of about ``params`` parameters (for memory estimates
    when only a parameter count is given): d_model ≈ 100 · n_layers (GPT-3 and Llama use 64-128),
    d_model a multiple of 128, heads of 128 dimensions, SwiGLU of 8/3 · d_model."""
    n = float(params)
    if n <= 0:
        raise LmkitError(f"parameters must be positive, got {params}")
    lo, hi = 1.0, 1e6  # solve 0.12·d³ + V·d = n for d
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if 0.12 * mid ** 3 + vocab_size * mid < n else (lo, mid)
    d = max(128, int(round(lo / 128)) * 128)
    layers = max(1, int(round((n - vocab_size * d) / (12 * d * d))))
    return ModelConfig(family="decoder", vocab_size=vocab_size, d_model=d, n_layers=layers,
                       n_heads=max(1, d // 128), max_seq_len=seq_len)


# =========================================================================== Chinchilla


@dataclass(frozen=True)
class ScalingFit:
    """A parametric loss fit L(N, D) = E + A/N^α + B/D^β and its compute-optimal frontier."""

    name: str
    E: float
    A: float
    B: float
    alpha: float
    beta: float
    source: str

    def loss(self, params: float, tokens: float) -> float:
        return self.E + self.A / float(params) ** self.alpha + self.B / float(tokens) ** self.beta

    @property
    def G(self) -> float:
        return (self.alpha * self.A / (self.beta * self.B)) ** (1.0 / (self.alpha + self.beta))

    def optimal(self, flops: float) -> tuple[float, float]:
        """(N_opt, D_opt) minimising the loss under C = 6ND:
        N_opt = G·(C/6)^(β/(α+β)), D_opt = (C/6)/N_opt, G = (αA/(βB))^(1/(α+β))."""
        c6 = float(flops) / 6.0
        n = self.G * c6 ** (self.beta / (self.alpha + self.beta))
        return n, c6 / n

    def optimal_tokens(self, params: float) -> float:
        """Tokens D for which a model of ``params`` parameters is compute-optimal (inverts N_opt)."""
        c6 = (float(params) / self.G) ** ((self.alpha + self.beta) / self.beta)
        return c6 / float(params)


FITS: dict[str, ScalingFit] = {
    "chinchilla": ScalingFit("chinchilla", E=1.69337, A=406.401, B=410.723, alpha=0.33917, beta=0.28491,
                             source="Hoffmann et al. 2022, approach 3 (unrounded coefficients)"),
    "epoch": ScalingFit("epoch", E=1.8172, A=482.01, B=2085.43, alpha=0.3478, beta=0.3658,
                        source="Besiroglu et al. 2024 (Epoch AI's replication of approach 3)"),
}


def get_fit(name: str) -> ScalingFit:
    try:
        return FITS[name]
    except KeyError:
        raise LmkitError(f"unknown scaling fit {name!r} (known: {', '.join(FITS)})") from None


def rule_optimal(flops: float, tokens_per_param: float = TOKENS_PER_PARAM) -> tuple[float, float]:
    """(N, D) with D = 20·N and 6·N·D = C: N = sqrt(C / 120)."""
    n = math.sqrt(float(flops) / (6.0 * tokens_per_param))
    return n, tokens_per_param * n


def verdict(params: float, tokens: float) -> str:
    """under-trained (over-parameterised) / about right / over-trained, against 20 tokens/parameter
    with the band ``ABOUT_RIGHT_BAND`` (10..40 tokens per parameter)."""
    ratio = float(tokens) / float(params)
    if ratio < ABOUT_RIGHT_BAND[0]:
        return "under-trained (over-parameterised)"
    if ratio > ABOUT_RIGHT_BAND[1]:
        return "over-trained (small for its compute)"
    return "about right"


@dataclass(frozen=True)
class KnownModel:
    name: str
    params: float
    tokens: float
    source: str


KNOWN_MODELS: tuple[KnownModel, ...] = (
    KnownModel("GPT-3", 175e9, 300e9, "Brown et al. 2020"),
    KnownModel("Jurassic-1", 178e9, 300e9, "Lieber et al. 2021"),
    KnownModel("Gopher", 280e9, 300e9, "Rae et al. 2021"),
    KnownModel("MT-NLG", 530e9, 270e9, "Smith et al. 2022"),
    KnownModel("LaMDA", 137e9, 168e9, "Thoppilan et al. 2022 (as tabulated by Hoffmann et al.)"),
    KnownModel("Chinchilla", 70e9, 1.4e12, "Hoffmann et al. 2022"),
    KnownModel("PaLM", 540e9, 780e9, "Chowdhery et al. 2022"),
    KnownModel("OPT-175B", 175e9, 180e9, "Zhang et al. 2022"),
    KnownModel("BLOOM", 176e9, 366e9, "BigScience 2022"),
    KnownModel("LLaMA 7B", 6.7e9, 1.0e12, "Touvron et al. 2023"),
    KnownModel("LLaMA 65B", 65.2e9, 1.4e12, "Touvron et al. 2023"),
    KnownModel("BloombergGPT", 50.6e9, 569e9, "Wu et al. 2023"),
    KnownModel("Llama 2 7B", 6.7e9, 2.0e12, "Touvron et al. 2023b"),
    KnownModel("Llama 2 70B", 70e9, 2.0e12, "Touvron et al. 2023b"),
    KnownModel("Llama 3 8B", 8.0e9, 15e12, "Meta 2024 (\"over 15T tokens\")"),
    KnownModel("Llama 3 70B", 70.6e9, 15e12, "Meta 2024 (\"over 15T tokens\")"),
)


def known_models_table(fit: str = "chinchilla") -> list[dict[str, Any]]:
    """Each well-known model with its compute (6ND), tokens/parameter, the rule's compute-optimal
    size for that compute, and its verdict."""
    f = get_fit(fit)
    rows = []
    for m in KNOWN_MODELS:
        c = training_flops(m.params, m.tokens)
        n_rule, _ = rule_optimal(c)
        n_fit, _ = f.optimal(c)
        rows.append({"name": m.name, "params": m.params, "tokens": m.tokens, "flops": c, "pf_days": pf_days(c),
                     "tokens_per_param": m.tokens / m.params, "rule_optimal_params": n_rule,
                     "fit_optimal_params": n_fit, "verdict": verdict(m.params, m.tokens), "source": m.source})
    return rows


# =========================================================================== the plan


def parse_count(text: str | float | int, what: str = "value") -> float:
    """1.5B, 70b, 125M, 300e9, 1.4T, 8k -> a float."""
    if isinstance(text, (int, float)):
        return float(text)
    t = str(text).strip().replace("_", "").replace(",", "")
    mult = {"k": 1e3, "m": 1e6, "b": 1e9, "g": 1e9, "t": 1e12, "p": 1e15}
    try:
        if t and t[-1].lower() in mult:
            v = float(t[:-1]) * mult[t[-1].lower()]
        else:
            v = float(t)
    except ValueError:
        raise LmkitError(f"{what} must be a number like 7e9, 1.5B, 125M or 1.4T, got {text!r}") from None
    if not math.isfinite(v) or v <= 0:
        raise LmkitError(f"{what} must be positive, got {text!r}")
    return v


def tokens_of_run(train: TrainConfig, params: float, seq_len: int, per_token_flops: float) -> float | None:
    """Tokens a run config will train on: the first of its stop conditions (time aside)."""
    per_step = train.batch_size * seq_len
    limits = []
    if train.max_steps is not None:
        limits.append(train.max_steps * per_step)
    if train.max_tokens is not None:
        limits.append(math.ceil(train.max_tokens / per_step) * per_step)
    if train.max_flops is not None:
        limits.append(math.ceil(train.max_flops / per_token_flops / per_step) * per_step)
    if train.tokens_per_param is not None:
        limits.append(math.ceil(train.tokens_per_param * params / per_step) * per_step)
    return float(min(limits)) if limits else None


def make_plan(*, params: float | None = None, tokens: float | None = None, cfg: ModelConfig | None = None,
              train: TrainConfig | None = None, flops: float | None = None, budget_pf_days: float | None = None,
              budget_gpu_hours: float | None = None, gpu: str = "A100", n_gpus: int = 1,
              seq_len: int | None = None, micro_batch: int | None = None, sharding: str = "ddp",
              precision: str | None = None, checkpointing: bool | None = None, fit: str = "chinchilla",
              utilisation: float = DEFAULT_MFU, this_machine_peak: float | None = None,
              source: str | None = None) -> dict[str, Any]:
    """Everything ``lmkit plan`` reports, as one JSON-ready dict.

    Give a model (``params`` or ``cfg``) and/or tokens and/or a budget (``flops``,
    ``budget_pf_days`` or ``budget_gpu_hours`` on ``gpu``). Missing pieces are derived: with a
    budget and no model, the rule's compute-optimal size; with a model and no tokens, the run
    config's stop conditions or else 20 tokens per parameter; with a budget and a model, the tokens
    it affords.
    """
    f = get_fit(fit)
    if sharding not in SHARDINGS:
        raise LmkitError(f"--sharding must be one of {'|'.join(SHARDINGS)}, got {sharding!r}")
    if n_gpus < 1:
        raise LmkitError(f"--gpus must be at least 1, got {n_gpus}")
    for flag, count in (("--seq-len", seq_len), ("--micro-batch", micro_batch)):
        if count is not None and count < 1:  # None: the config's; 0 is not "the default"
            raise LmkitError(f"{flag} must be at least 1, got {count}")
    peak_of = dict(ACCELERATORS)
    if this_machine_peak:
        peak_of[THIS_MACHINE] = float(this_machine_peak)
    gpu_key = next((k for k in peak_of if k.lower() == gpu.strip().lower()), None)
    if gpu_key is None:
        if gpu.strip().lower() in ("here", "this", "this machine", "local", "cpu"):
            peak_of[THIS_MACHINE] = measure_matmul_peak()
            gpu_key = THIS_MACHINE
        else:
            raise LmkitError(f"--gpu must be one of {', '.join(ACCELERATORS)} or here, got {gpu!r}")
    budgets = [b for b in (flops, budget_pf_days, budget_gpu_hours) if b is not None]
    if len(budgets) > 1:
        raise LmkitError("give one budget: --flops, --pf-days or --gpu-hours")
    budget: float | None = None
    if flops is not None:
        budget = float(flops)
    elif budget_pf_days is not None:
        budget = float(budget_pf_days) * PF_DAY
    elif budget_gpu_hours is not None:
        budget = float(budget_gpu_hours) * 3600.0 * peak_of[gpu_key] * utilisation
    if params is not None and cfg is not None:
        raise LmkitError("give either --params or --config, not both")
    if budget is not None and (params is not None or cfg is not None) and tokens is not None:
        raise LmkitError("a budget, a model and --tokens over-determine the plan: drop one of them")

    notes: list[str] = []
    n_exact: ParamCount | None = count_params(cfg) if cfg is not None else None
    if n_exact is not None:
        n_params: float | None = float(n_exact.total)
        params_source = "config"
    elif params is not None:
        n_params, params_source = float(params), "--params"
    else:
        n_params, params_source = None, ""
    if n_params is None:
        if budget is not None and tokens is not None:
            n_params, params_source = budget / (6.0 * tokens), "budget / (6 · tokens)"
        elif budget is not None:
            n_params, params_source = rule_optimal(budget)[0], "compute-optimal for the budget (20 tokens/parameter)"
        elif tokens is not None:
            n_params, params_source = tokens / TOKENS_PER_PARAM, "tokens / 20 (compute-optimal for these tokens)"
        else:
            raise LmkitError("nothing to plan: give --params, --config, --tokens or a budget (--flops, --pf-days, "
                             "--gpu-hours); --known-models lists well-known models")
    shape = cfg if cfg is not None else shape_for_params(n_params, seq_len=seq_len or 2048)
    if cfg is None:
        notes.append(f"no --config: memory assumes a Llama-like shape of this size (d_model {shape.d_model}, "
                     f"{shape.n_layers} layers, {shape.n_heads} heads, vocab {shape.vocab_size}); pass --config "
                     "for exact figures")
    S = int(seq_len or (cfg.max_seq_len if cfg is not None else 2048))
    per_tok = flops_per_token(shape, S) if cfg is not None else 6.0 * n_params + 12.0 * shape.n_layers * shape.d_model * S

    if tokens is not None:
        n_tokens, tokens_source = float(tokens), "--tokens"
    elif budget is not None and params_source in ("config", "--params"):
        n_tokens, tokens_source = budget / (6.0 * n_params), "budget / (6 · params)"
    elif budget is not None:
        n_tokens, tokens_source = budget / (6.0 * n_params), "compute-optimal for the budget (20 tokens/parameter)"
    else:
        run_tokens = tokens_of_run(train, n_params, S, per_tok) if train is not None else None
        if run_tokens is not None:
            n_tokens, tokens_source = run_tokens, "the run config's stop conditions"
        else:
            n_tokens, tokens_source = TOKENS_PER_PARAM * n_params, "20 tokens per parameter (Chinchilla's rule)"
    flops_6nd = training_flops(n_params, n_tokens)
    total_flops = budget if budget is not None else per_tok * n_tokens

    mb = int(micro_batch or ((train.micro_batch_size or train.batch_size) if train is not None else 1))
    prec = precision or (train.precision if train is not None else ("fp32" if cfg is not None else "bf16"))
    ckpt = bool(checkpointing if checkpointing is not None else (train.activation_checkpointing if train else False))
    mem_train = training_memory(shape, n_params, mb, S, prec, sharding, n_gpus, ckpt)
    weight_fmt = "fp32" if prec == "fp32" else prec
    mem_inf = inference_memory(shape, n_params, mb, S, weight_fmt)
    gpu_table = {k: gpu_hours(total_flops, p, utilisation) for k, p in peak_of.items()}

    chin_budget = budget if budget is not None else flops_6nd
    rule_n, rule_d = rule_optimal(chin_budget)
    fit_n, fit_d = f.optimal(chin_budget)
    return {
        "source": source,
        "family": shape.family if cfg is not None else None,
        "params": n_params,
        "params_source": params_source,
        "params_breakdown": asdict(n_exact) if n_exact is not None else None,
        "tokens": n_tokens,
        "tokens_source": tokens_source,
        "tokens_per_param": n_tokens / n_params,
        "verdict": verdict(n_params, n_tokens),
        "seq_len": S,
        "micro_batch": mb,
        "flops_per_token": per_tok,
        "flops": total_flops,
        "flops_6nd": flops_6nd,
        "pf_days": pf_days(total_flops),
        "compute": {
            "utilisation": utilisation,
            "peak_flops": peak_of,
            "gpu_hours": gpu_table,
            "gpus": n_gpus,
            "wall_hours": {k: v / n_gpus for k, v in gpu_table.items()},
            "gpu": gpu_key,
        },
        "memory": {
            "weights_bytes": weights_bytes(n_params),
            "training_rule_of_thumb_bytes": training_rule_of_thumb_bytes(n_params),
            "training_bytes": mem_train["total"],
            "training_breakdown": mem_train,
            "training_settings": {"precision": prec, "sharding": sharding, "gpus": n_gpus, "micro_batch": mb,
                                  "seq_len": S, "activation_checkpointing": ckpt},
            "korthikanti_activation_bytes": korthikanti_activation_bytes(S, mb, shape.d_model, shape.n_heads,
                                                                         shape.n_layers, ckpt),
            "inference_bytes": mem_inf["total"],
            "inference_breakdown": mem_inf,
            "inference_settings": {"weights": weight_fmt, "batch": mb, "context": S},
            "assumed_shape": None if cfg is not None else {
                "d_model": shape.d_model, "n_layers": shape.n_layers, "n_heads": shape.n_heads,
                "vocab_size": shape.vocab_size},
        },
        "chinchilla": {
            "budget_flops": chin_budget,
            "rule": {"params": rule_n, "tokens": rule_d, "tokens_per_param": TOKENS_PER_PARAM},
            "fit": {"name": f.name, "source": f.source, "params": fit_n, "tokens": fit_d,
                    "loss": f.loss(fit_n, fit_d), "tokens_per_param": fit_d / fit_n,
                    "loss_of_plan": f.loss(n_params, n_tokens),
                    "optimal_tokens_for_params": f.optimal_tokens(n_params),
                    "coefficients": {"E": f.E, "A": f.A, "B": f.B, "alpha": f.alpha, "beta": f.beta}},
            "rule_tokens_for_params": TOKENS_PER_PARAM * n_params,
            "about_right_band_tokens_per_param": list(ABOUT_RIGHT_BAND),
        },
        "notes": notes,
    }


# =========================================================================== command line


def load_model_and_train(path: str | Path, overrides: dict[str, Any] | None = None
                         ) -> tuple[ModelConfig, TrainConfig | None]:
    """A run YAML (model/train/data sections), a checkpoint folder or its config.json."""
    from lmkit.config import apply_overrides, load_run_config, model_config_from_dict

    p = Path(path)
    overrides = dict(overrides or {})
    if p.is_dir() or p.suffix == ".json":
        cfg_file = p / "config.json" if p.is_dir() else p
        if not cfg_file.is_file():
            raise LmkitError(f"{p}: no config.json (give a run YAML, a checkpoint folder or its config.json)")
        try:
            raw = json.loads(cfg_file.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise LmkitError(f"{cfg_file}: not readable JSON ({e})") from None
        model_raw = raw.get("model", raw) if isinstance(raw, dict) else None
        if not isinstance(model_raw, dict):
            raise LmkitError(f"{cfg_file}: expected a JSON object with a model section")
        resolved = cfg_file.parent / "resolved.yaml"
        if resolved.is_file():
            run = load_run_config(resolved, overrides)
            return run.model, run.train
        model_over = {k.removeprefix("model."): v for k, v in overrides.items() if k.startswith("model.")}
        if len(model_over) != len(overrides):
            raise LmkitError(f"{cfg_file}: only model.* overrides apply to a bare config.json")
        try:
            merged = apply_overrides({"model": model_raw}, {f"model.{k}": v for k, v in model_over.items()})
            return model_config_from_dict(merged["model"]), None
        except LmkitError as e:
            raise LmkitError(f"{cfg_file}: {e}") from None
    run = load_run_config(p, overrides)
    return run.model, run.train


def _gb(x: float) -> str:
    if x >= 1e12:
        return f"{x / 1e12:,.2f} TB"
    if x >= 1e9:
        return f"{x / 1e9:,.2f} GB"
    return f"{x / 1e6:,.1f} MB"


def _num(x: float) -> str:
    for unit, v in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(x) >= v:
            return f"{x / v:,.3g}{unit}"
    return f"{x:,.3g}"


def _hours(h: float) -> str:
    if h * 60 < 1:
        return f"{h * 3600:,.2g} s"
    if h < 1:
        return f"{h * 60:,.1f} min"
    if h < 48:
        return f"{h:,.1f} h"
    return f"{h:,.0f} h ({h / 24:,.0f} days)"


def print_known_models(fit: str = "chinchilla") -> None:
    lo, hi = ABOUT_RIGHT_BAND
    print(f"Well-known models against Chinchilla's ≈20 tokens per parameter ('about right' = {lo:g}-{hi:g} "
          "tokens/parameter,\ni.e. within √2 of the compute-optimal size for the compute used; compute = 6·N·D):\n")
    print(f"{'model':<14} {'params':>8} {'tokens':>8} {'tok/param':>9} {'FLOPs':>9} {'PF-days':>9} "
          f"{'rule N_opt':>10}  verdict")
    for r in known_models_table(fit):
        print(f"{r['name']:<14} {_num(r['params']):>8} {_num(r['tokens']):>8} {r['tokens_per_param']:>9.1f} "
              f"{r['flops']:>9.2e} {r['pf_days']:>9,.0f} {_num(r['rule_optimal_params']):>10}  {r['verdict']}")


def print_plan(p: dict[str, Any]) -> None:
    m, c, ch = p["memory"], p["compute"], p["chinchilla"]
    title = f"lmkit plan{': ' + p['source'] if p['source'] else ''}"
    print(title)
    print("=" * len(title))
    pb = p["params_breakdown"]
    extra = (f" (embedding {pb['embedding']:,}, non-embedding {pb['non_embedding']:,})" if pb else "")
    print(f"parameters   {p['params']:,.0f}{extra}  [{p['params_source']}]")
    print(f"tokens       {p['tokens']:,.0f} = {p['tokens_per_param']:.1f} per parameter, {p['verdict']}  "
          f"[{p['tokens_source']}]")
    print(f"compute      {p['flops_per_token']:.4g} FLOPs/token at context {p['seq_len']} x {p['tokens']:.3g} tokens "
          f"= {p['flops']:.3e} FLOPs = {p['pf_days']:,.4g} PF-days   (6·N·D = {p['flops_6nd']:.3e})")
    print(f"\ntime at {100 * c['utilisation']:.0f}% utilisation (dense 16-bit datasheet peaks"
          f"{'; this machine measured fp32' if THIS_MACHINE in c['peak_flops'] else ''}):")
    for k, h in c["gpu_hours"].items():
        wall = f"   {_hours(c['wall_hours'][k])} on {c['gpus']}" if c["gpus"] > 1 else ""
        print(f"  {k:<13} {c['peak_flops'][k] / 1e12:8.3g} TFLOP/s   {_hours(h):>24} device-time{wall}")
    w = m["weights_bytes"]
    print("\nmemory")
    print(f"  weights      fp32 {_gb(w['fp32'])}   fp16 {_gb(w['fp16'])}   bf16 {_gb(w['bf16'])}   int8 {_gb(w['int8'])}")
    print(f"  training, rule of thumb (4 B weights + 20 B/param): {_gb(m['training_rule_of_thumb_bytes'])}")
    s, t = m["training_settings"], m["training_breakdown"]
    print(f"  training, precise per device ({s['precision']}, {s['sharding']} on {s['gpus']}, micro-batch "
          f"{s['micro_batch']} x {s['seq_len']}{', activation checkpointing' if s['activation_checkpointing'] else ''}):"
          f" {_gb(t['total'])}")
    print(f"      weights {_gb(t['weights'])} + gradients {_gb(t['gradients'])} + Adam {_gb(t['optimizer'])}"
          f" + activations {_gb(t['activations'])} + loss {_gb(t['loss'])} + runtime {_gb(t['runtime'])}")
    print(f"      (Korthikanti et al.'s 16-bit GPT activations for this shape: {_gb(m['korthikanti_activation_bytes'])})")
    i, st = m["inference_breakdown"], m["inference_settings"]
    print(f"  inference ({st['weights']} weights, batch {st['batch']} x {st['context']} context): {_gb(i['total'])}"
          f" = weights {_gb(i['weights'])} + KV cache {_gb(i['kv_cache'])} + workspace {_gb(i['workspace'])}"
          f" + runtime {_gb(i['runtime'])}")
    fit = ch["fit"]
    print(f"\nChinchilla, for a budget of {ch['budget_flops']:.3e} FLOPs:")
    print(f"  rule (20 tokens/param)   params {_num(ch['rule']['params']):>8}   tokens {_num(ch['rule']['tokens']):>8}")
    print(f"  fit ({fit['name']})" + " " * max(0, 15 - len(fit['name'])) +
          f"params {_num(fit['params']):>8}   tokens {_num(fit['tokens']):>8}   predicted loss {fit['loss']:.3f}"
          f"   ({fit['tokens_per_param']:.1f} tokens/param)")
    print(f"  this plan's predicted loss {fit['loss_of_plan']:.3f}; for {_num(p['params'])} parameters the optimal "
          f"tokens are {_num(ch['rule_tokens_for_params'])} (rule) / {_num(fit['optimal_tokens_for_params'])} (fit)")
    for note in p["notes"]:
        print(f"\nnote: {note}")


def cli(args: argparse.Namespace) -> int:
    """``lmkit plan``: read flags, make the plan, print tables or one JSON object."""
    overrides = getattr(args, "overrides", {}) or {}
    cfg = train = None
    source = None
    if args.config:
        cfg, train = load_model_and_train(args.config, overrides)
        source = f"{cfg.family} from {args.config}"
    elif overrides:
        raise LmkitError("dotted overrides (--model.x ...) need --config")
    nothing = all(getattr(args, k) is None for k in ("params", "tokens", "flops", "pf_days", "gpu_hours")) and cfg is None
    if args.known_models or nothing:
        if args.json and nothing:
            print(json.dumps({"known_models": known_models_table(args.fit)}, indent=2))
            return 0
        if not args.json:
            print_known_models(args.fit)
        if nothing:
            if not args.json:
                print("\n(give --params, --config, --tokens or a budget to plan a run; see lmkit plan --help)")
            return 0
    peak_here = measure_matmul_peak() if args.this_machine else None
    plan = make_plan(
        params=parse_count(args.params, "--params") if args.params is not None else None,
        tokens=parse_count(args.tokens, "--tokens") if args.tokens is not None else None,
        cfg=cfg, train=train,
        flops=parse_count(args.flops, "--flops") if args.flops is not None else None,
        budget_pf_days=parse_count(args.pf_days, "--pf-days") if args.pf_days is not None else None,
        budget_gpu_hours=parse_count(args.gpu_hours, "--gpu-hours") if args.gpu_hours is not None else None,
        gpu=args.gpu, n_gpus=args.gpus, seq_len=args.seq_len, micro_batch=args.micro_batch,
        sharding=args.sharding, precision=args.precision,
        checkpointing=True if args.activation_checkpointing else None, fit=args.fit,
        utilisation=args.utilisation, this_machine_peak=peak_here, source=source,
    )
    if args.known_models:
        plan["known_models"] = known_models_table(args.fit)
    if args.json:
        print(json.dumps(plan, indent=2))
    else:
        print_plan(plan)
    return 0


__all__ = [
    "PF_DAY", "TOKENS_PER_PARAM", "ABOUT_RIGHT_BAND", "DEFAULT_MFU", "ACCELERATORS", "FITS", "KNOWN_MODELS",
    "RUNTIME_BASELINE_BYTES", "ParamCount", "ScalingFit", "KnownModel", "count_params", "flops_per_token",
    "training_flops", "pf_days", "mfu", "gpu_hours", "accelerator_peak", "measure_matmul_peak",
    "device_peak_flops", "weights_bytes", "training_rule_of_thumb_bytes", "model_state_bytes",
    "korthikanti_activation_bytes", "activation_bytes", "training_memory", "kv_cache_bytes", "inference_memory",
    "shape_for_params", "get_fit", "rule_optimal", "verdict", "known_models_table", "parse_count",
    "tokens_of_run", "make_plan", "load_model_and_train", "cli",
]
