"""Parameters and compute, as pure functions: parameter counts, FLOPs per token, 6·N·D, PF-days,
MFU, device-hours, each family's planning terms (``PLAN_TERMS``: the one place plan/ tells the
families apart, one :class:`PlanTerms` per ``model.family`` holding its parameter count, forward
FLOPs, predicted tokens, attention shape and the shape facts memory reads: saved activations per
token, KV-cache positions, blocks), the accelerators' datasheet peaks, the ranges lmkit plans (``MAX_PARAMS``,
``MAX_TOKENS``, ``MAX_FLOPS``, ...: inside them every derived figure is a finite float), and the
bounds on work that can never finish (``check_run_time``: a run longer than ``LONG_RUN_HOURS``
needs the user's --yes, one longer than ``NEVER_DAYS`` is refused).

Imports nothing from lmkit except ``lmkit.config``, ``lmkit.errors`` and ``lmkit.plan.spans``.

Conventions:
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
- 1 petaFLOP/s-day = 1e15 FLOP/s × 86,400 s = 8.64e19 FLOPs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

from lmkit.config import ModelConfig
from lmkit.errors import LmkitError
from lmkit.plan.spans import span_lengths, span_window_length

PF_DAY = 8.64e19  # FLOPs in one petaFLOP/s-day
DEFAULT_MFU = 0.40  # utilisation assumed for GPU-hours: a well-tuned large run reaches 0.4-0.5
UTILISATION_RANGE = (1e-4, 1.0)  # what --utilisation accepts
# The sizes lmkit plans: far past any run made so far (about 2e12 parameters, 4e13 tokens, 5e26
# FLOPs), and small enough that every figure derived from them (6·N·D, memory, device-hours) is a
# finite float.
MAX_PARAMS = 1e15
MAX_TOKENS = 1e17
MAX_FLOPS = 1e33
MAX_SEQ_LEN = 1 << 24  # tokens of context
MAX_MICRO_BATCH = 1 << 24  # sequences per forward pass
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


@dataclass(frozen=True)
class ParamCount:
    """Parameters of a model config, as its lmkit model holds them."""

    total: int
    embedding: int  # lookup tables (tokens, positions, token types, relative-position buckets)
    non_embedding: int  # everything else, an untied output head included
    matmul: int  # parameters each token is multiplied by: non-embedding + a tied output projection


def count_params(cfg: ModelConfig) -> ParamCount:
    """Exact parameter count of ``lmkit.models.build_model(cfg)``, split into embedding/non-embedding.

    decoder: token embedding V·d (V the embedding rows, which may exceed the tokenizer's size; +
    max_seq_len·d learned positions); per layer two norms (RMSNorm d, LayerNorm 2d), queries and output
    2·d·H·hd, keys and values 2·d·H_kv·hd (grouped-query attention: fewer key/value heads), the MLP
    3·d·f gated or 2·d·f plain, biases (q/k/v: (H + 2·H_kv)·hd; all: also d for the output, f (2f
    gated) + d for the MLP); final norm, an embedding norm when configured; an untied head V·d.
    Defaults (Llama layout, H_kv = H, hd = d/H, no biases): 2d + 4d² + 3·d·f per layer.
    encoder (BERT-like): word V·d, token-type types·d (BERT 2, RoBERTa 1; and learned position max_seq_len·d)
    embeddings, their LayerNorm 2d; per layer q/k/v/o with biases 4d²+4d, LayerNorm 2d, intermediate d·f+f, output
    f·d+d, LayerNorm 2d; MLM head dense d²+d, LayerNorm 2d, output bias V (weight tied).
    encdec (T5-like): shared embedding V·d; encoder layers: norm d, q/k/v/o 4·d·H·hd (4d² when the
    heads split d_model), norm d, wi d·f and wo f·d (gated, T5 v1.1: wi_0, wi_1, wo, 3·d·f); a 32 × n_heads relative-position table in the first encoder layer and another
    in the first decoder layer; decoder layers add a cross-attention 4·d·H·hd and its norm d; two final
    norms d; the head tied to the shared embedding (untied: + V·d).
    encdec in BART's layout (``model.norm: layer``): two learned position tables max_seq_len·d instead
    of the bucket tables, every projection with its bias, LayerNorms (2d) after each sub-layer and
    after each embedding, no final norms (BART's fixed final_logits_bias is a buffer, not counted).
    """
    return plan_terms(cfg.family).params(cfg)


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
    without the padding up to ``max_target_len``; infilling's: the whole window and EOS). The
    encoder's parameters run over the inputs, the decoder's over the targets, except the
    cross-attention keys/values (2d² per decoder layer), which run over the inputs; attention costs
    self-attention over each side plus cross-attention from targets to inputs.
    """
    T = int(seq_len or cfg.max_seq_len)
    if T <= 0:
        raise LmkitError(f"sequence length must be positive, got {T}")
    forward = plan_terms(cfg.family).forward(cfg, count_params(cfg), T)
    return 3.0 * forward if training else forward


def decoded_target_len(cfg: ModelConfig, seq_len: int) -> int:
    """Decoder positions an encoder-decoder trains on per window of ``seq_len`` inputs: the span
    corruption target of the longest raw window that fits (``EncoderDecoder.loss`` decodes up to
    the last scored target token); ``min(max_target_len, seq_len)`` when no window fits.

    Text infilling (BART, ``objective: infill``) has the decoder write the whole raw window and EOS:
    ``min(seq_len, max_target_len)`` positions (``objectives.infill_window_length`` + 1)."""
    if cfg.objective == "infill":
        return min(cfg.max_target_len, seq_len)
    try:
        return span_lengths(span_window_length(seq_len, cfg.max_target_len))[1]
    except ValueError:
        return min(cfg.max_target_len, seq_len)


# =========================================================================== each family's terms
# One function per family and term, gathered in PLAN_TERMS below: the only place plan/ tells the
# families apart (lmkit.models.registry's FamilySpec refers to each family's entry as ``plan``).


def _decoder_params(cfg: ModelConfig) -> ParamCount:
    """A decoder's parameters (Llama's layout and its variants: ``count_params``)."""
    V, d, L, f, H = cfg.vocab_size, cfg.d_model, cfg.n_layers, cfg.ffn_width, cfg.n_heads
    head = 0 if cfg.tie_embeddings else V * d
    emb = V * d + (cfg.max_seq_len * d if cfg.pos_encoding == "learned" else 0)
    q, kv = H * cfg.head_dim, cfg.kv_heads * cfg.head_dim  # widths of the queries and of the keys (values)
    norm = d if cfg.norm == "rms" else 2 * d
    attn = 2 * d * q + 2 * d * kv
    mlp = (3 if cfg.mlp == "gated" else 2) * d * f
    biases = {"none": 0, "qkv": q + 2 * kv, "all": q + 2 * kv + d + (2 * f if cfg.mlp == "gated" else f) + d}
    per_layer = 2 * norm + attn + mlp + biases[cfg.bias]
    non_emb = L * per_layer + norm * (2 if cfg.embed_norm else 1) + head
    matmul = L * (attn + mlp) + V * d
    return ParamCount(total=emb + non_emb, embedding=emb, non_embedding=non_emb, matmul=matmul)


def _encoder_params(cfg: ModelConfig) -> ParamCount:
    """An encoder's parameters (BERT's layout: ``count_params``)."""
    V, d, L, f = cfg.vocab_size, cfg.d_model, cfg.n_layers, cfg.ffn_width
    head = 0 if cfg.tie_embeddings else V * d
    emb = V * d + (cfg.max_seq_len * d if cfg.pos_encoding == "learned" else 0) + cfg.type_vocab_size * d
    per_layer = (4 * d * d + 4 * d) + 2 * d + (d * f + f) + (f * d + d) + 2 * d
    mlm_head = (d * d + d) + 2 * d + V + head
    non_emb = 2 * d + L * per_layer + mlm_head
    matmul = L * (4 * d * d + 2 * d * f) + d * d + V * d
    return ParamCount(total=emb + non_emb, embedding=emb, non_embedding=non_emb, matmul=matmul)


def _encdec_params(cfg: ModelConfig) -> ParamCount:
    """An encoder-decoder's parameters (T5's layout, or BART's: ``count_params``)."""
    V, d, L, f, H = cfg.vocab_size, cfg.d_model, cfg.n_layers, cfg.ffn_width, cfg.n_heads
    head = 0 if cfg.tie_embeddings else V * d
    Ld = cfg.n_decoder_layers or L
    attn = 4 * d * H * cfg.head_dim  # q, k, v, o over n_heads × head_size (T5's d_kv)
    mlp = (3 if cfg.mlp == "gated" else 2) * d * f  # T5 v1.1's wi_0, wi_1, wo; v1.0's wi, wo
    if cfg.norm == "layer":  # BART: two learned position tables, biases, LayerNorms, embedding norms
        emb = V * d + 2 * cfg.max_seq_len * d
        attn_b, mlp_b = attn + 4 * d, mlp + (2 if cfg.mlp == "gated" else 1) * f + d
        enc_layer = attn_b + mlp_b + 2 * 2 * d
        dec_layer = 2 * attn_b + mlp_b + 3 * 2 * d
        non_emb = L * enc_layer + Ld * dec_layer + 2 * 2 * d + head
    else:
        emb = V * d + 2 * T5_RELATIVE_BUCKETS * H
        enc_layer = d + attn + d + mlp
        dec_layer = d + attn + d + attn + d + mlp
        non_emb = L * enc_layer + d + Ld * dec_layer + d + head
    matmul = L * (attn + mlp) + Ld * (2 * attn + mlp) + V * d
    return ParamCount(total=emb + non_emb, embedding=emb, non_embedding=non_emb, matmul=matmul)


def _decoder_forward(cfg: ModelConfig, p: ParamCount, T: int) -> float:
    """Forward FLOPs per token: attention over H heads of hd dimensions (H·hd = d unless head_size is set)."""
    return 2.0 * p.matmul + 4.0 * cfg.n_layers * cfg.n_heads * cfg.head_dim * T


def _encoder_forward(cfg: ModelConfig, p: ParamCount, T: int) -> float:
    """Forward FLOPs per token: the MLM head runs on ``MLM_SCORED_FRACTION`` of the positions."""
    d = cfg.d_model
    head = d * d + cfg.vocab_size * d
    return 2.0 * (p.matmul - head) + 2.0 * MLM_SCORED_FRACTION * head + 4.0 * cfg.n_layers * d * T


def _encdec_forward(cfg: ModelConfig, p: ParamCount, T: int) -> float:
    """Forward FLOPs per input token: the encoder over the inputs, the decoder over the targets."""
    d, L = cfg.d_model, cfg.n_layers
    S = T
    Tt = decoded_target_len(cfg, S)
    Ld = cfg.n_decoder_layers or L
    f, a = cfg.ffn_width, cfg.n_heads * cfg.head_dim  # a: the attention width (d unless head_size is set)
    mlp = (3 if cfg.mlp == "gated" else 2) * d * f
    enc = L * (4 * d * a + mlp)
    dec_on_targets = Ld * (6 * d * a + mlp) + cfg.vocab_size * d  # self q/k/v/o, cross q/o, MLP, head
    cross_kv = Ld * 2 * d * a  # cross-attention keys/values over the encoder's outputs
    per_window = 2.0 * (enc * S + dec_on_targets * Tt + cross_kv * S) + 4.0 * a * (
        L * S * S + Ld * Tt * Tt + Ld * Tt * S
    )
    return per_window / S


def _every_position(cfg: ModelConfig, seq_len: int, sequences: int = 1) -> int:
    """A causal LM predicts the next token at every position of its window."""
    return sequences * seq_len


def _masked_positions(cfg: ModelConfig, seq_len: int, sequences: int = 1) -> int:
    """An MLM scores the positions its objective chose (``MLM_SCORED_FRACTION`` of them, at least one)."""
    return max(1, round(MLM_SCORED_FRACTION * sequences * seq_len))


def _target_positions(cfg: ModelConfig, seq_len: int, sequences: int = 1) -> int:
    """An encoder-decoder predicts its decoded target (``decoded_target_len`` per window of inputs)."""
    return sequences * decoded_target_len(cfg, seq_len)


def _decoder_saved(cfg: ModelConfig) -> tuple[float, float]:
    """Inputs of the two RMSNorms (2d, residual); norm output, q, k, v, the attention output and its
    contiguous copy for o_proj, the MLP norm output (7d); SwiGLU's gate, silu(gate), up and their
    product (4f)."""
    d, f = float(cfg.d_model), float(cfg.ffn_width)
    return 2 * d, 7 * d + 4 * f


def _encoder_saved(cfg: ModelConfig) -> tuple[float, float]:
    """(post-norm BERT) the two LayerNorm inputs (2d); block input, q, k, v, attention output and its
    copy, attention LayerNorm output (7d); GELU input and output (2f)."""
    d, f = float(cfg.d_model), float(cfg.ffn_width)
    return 2 * d, 7 * d + 2 * f


def _encdec_saved(cfg: ModelConfig) -> tuple[float, float]:
    """An encoder block like the decoder's with a ReLU MLP (its output only, f); the decoder block's
    cross-attention, and its keys/values over the encoder output, are counted by
    ``lmkit.plan.memory.activation_bytes``."""
    d, f = float(cfg.d_model), float(cfg.ffn_width)
    return 2 * d, 7 * d + f


def _decoder_cached(cfg: ModelConfig, context: int) -> tuple[int, int]:
    """Every layer caches keys and values of every position of the context."""
    return cfg.n_layers, context


def _encoder_cached(cfg: ModelConfig, context: int) -> tuple[int, int]:
    """An encoder does not generate: it caches nothing."""
    return 0, 0


def _encdec_cached(cfg: ModelConfig, context: int) -> tuple[int, int]:
    """Each decoder layer: self-attention over ``max_target_len`` outputs, cross-attention over the inputs."""
    return cfg.n_decoder_layers or cfg.n_layers, cfg.max_target_len + context


def _one_stack(cfg: ModelConfig) -> int:
    return cfg.n_layers


def _two_stacks(cfg: ModelConfig) -> int:
    return cfg.n_layers + (cfg.n_decoder_layers or cfg.n_layers)


def _vocab_projection(cfg: ModelConfig) -> int:
    return cfg.vocab_size * cfg.d_model


def _mlm_head(cfg: ModelConfig) -> int:
    return cfg.d_model**2 + cfg.vocab_size * cfg.d_model  # the head's dense layer and the vocabulary projection


Attention = Literal["bidirectional", "causal", "encoder-decoder"]


class PredictedTokens(Protocol):
    """Positions the loss predicts in ``sequences`` windows of ``seq_len`` tokens (one by default)."""

    def __call__(self, cfg: ModelConfig, seq_len: int, sequences: int = 1) -> int: ...


@dataclass(frozen=True)
class PlanTerms:
    """One family's planning maths: every term in which plan/ tells the families apart."""

    family: str
    attention: Attention  # encoder-decoder: an encoder stack over the inputs, a decoder over the targets
    params: Callable[[ModelConfig], ParamCount]  # count_params
    forward: Callable[[ModelConfig, ParamCount, int], float]  # forward FLOPs per token of a window of T
    predicted_tokens: PredictedTokens
    saved: Callable[[ModelConfig], tuple[float, float]]  # per token and layer: (residual, other) elements kept
    cached: Callable[[ModelConfig, int], tuple[int, int]]  # (layers, positions) of the KV cache over a context
    blocks: Callable[[ModelConfig], int]  # transformer blocks (FSDP's unit of gathering)
    head_matmul: Callable[[ModelConfig], int]  # matmul parameters outside the blocks (the output head's)
    # lmkit's default runtime baseline: what a process training the family holds beside its tensors
    # (lmkit.plan.memory says what it holds and where these were measured; `lmkit plan --this-machine`
    # measures this machine's own)
    runtime_bytes: float


PLAN_TERMS: dict[str, PlanTerms] = {
    t.family: t
    for t in (
        PlanTerms(
            "encoder",
            "bidirectional",
            _encoder_params,
            _encoder_forward,
            _masked_positions,
            _encoder_saved,
            _encoder_cached,
            _one_stack,
            _mlm_head,
            366e6,
        ),
        PlanTerms(
            "decoder",
            "causal",
            _decoder_params,
            _decoder_forward,
            _every_position,
            _decoder_saved,
            _decoder_cached,
            _one_stack,
            _vocab_projection,
            360e6,
        ),
        PlanTerms(
            "encdec",
            "encoder-decoder",
            _encdec_params,
            _encdec_forward,
            _target_positions,
            _encdec_saved,
            _encdec_cached,
            _two_stacks,
            _vocab_projection,
            361e6,
        ),
    )
}


def plan_terms(family: str) -> PlanTerms:
    """The planning terms of ``model.family`` ``family``, or one line naming the families there are."""
    terms = PLAN_TERMS.get(family)
    if terms is None:
        raise LmkitError(f"model.family must be one of {'|'.join(PLAN_TERMS)}, got {family!r}")
    return terms


def training_flops(params: float, tokens: float) -> float:
    """The usual estimate of a run's compute: 6 · N · D."""
    return 6.0 * float(params) * float(tokens)


def pf_days(flops: float) -> float:
    """FLOPs in petaFLOP/s-days (1 PF-day = 8.64e19 FLOPs)."""
    return float(flops) / PF_DAY


def mfu(tokens_per_second: float, flops_per_tok: float, peak: float) -> float:
    """Model FLOPs utilisation: achieved FLOP/s over the hardware's peak."""
    return tokens_per_second * flops_per_tok / peak if peak > 0 else 0.0


def gpu_hours(flops: float, peak: float, utilisation: float = DEFAULT_MFU) -> float:
    """Device-hours to do ``flops`` on devices of ``peak`` FLOP/s running at ``utilisation``."""
    return run_seconds(flops, peak, utilisation) / 3600.0


def run_seconds(flops: float, peak: float, utilisation: float = DEFAULT_MFU) -> float:
    """Seconds to do ``flops`` at ``utilisation`` of ``peak`` FLOP/s (inf past float's range)."""
    check_utilisation(utilisation)
    if not peak > 0:
        raise LmkitError(f"a peak of {peak} FLOP/s cannot do any work")
    return float(flops) / (float(peak) * utilisation)


def check_utilisation(utilisation: float) -> None:
    """One line when ``utilisation`` (--utilisation) is outside ``UTILISATION_RANGE``."""
    lo, hi = UTILISATION_RANGE
    if not lo <= utilisation <= hi:  # NaN included
        raise LmkitError(
            f"--utilisation must be between {lo:g} and {hi:g} (the fraction of the peak a run "
            f"achieves), got {utilisation}"
        )


# =========================================================================== work that can never finish

LONG_RUN_HOURS = 24.0  # a run predicted to take longer asks for --yes
NEVER_DAYS = 365.0  # a run predicted to take longer is refused: on this machine it would never finish


def duration_words(seconds: float) -> str:
    """``seconds`` as people say it: 45 s, 12 min, 5.2 h, 3.1 days, 2.4e+11 years."""
    s = float(seconds)
    if s < 120:
        return f"{s:.0f} s"
    if s < 7200:
        return f"{s / 60:.0f} min"
    if s < 2 * 86400:
        return f"{s / 3600:.1f} h"
    if s < 2 * 365 * 86400:
        return f"{s / 86400:.1f} days"
    return f"{s / (365 * 86400):.3g} years" if math.isfinite(s) else "forever"


def check_run_time(seconds: float, yes: bool, what: str, how: str = "") -> None:
    """Refuse, in one line, work of ``seconds`` that would never finish, or that takes more than a
    day when the user has not confirmed it.

    ``what`` names the work (``"this sweep"``, ``"--train.max_time 1e+12"``), ``how`` says where the
    prediction comes from (FLOPs at a measured rate), empty for a time given directly. Longer than
    ``NEVER_DAYS``: refused, --yes or not. Longer than ``LONG_RUN_HOURS``: refused unless ``yes``
    (the command's --yes)."""
    verb = "is" if not how else "is predicted to take"
    said = f"{what} {verb} {'~' if how else ''}{duration_words(seconds)}" + (f" ({how})" if how else "")
    if not seconds <= NEVER_DAYS * 86400:  # NaN included
        fix = "a smaller budget or a faster machine" if how else "less time"
        raise LmkitError(f"{said}: more than {NEVER_DAYS:.0f} days, so lmkit does not start it (give it {fix})")
    if seconds > LONG_RUN_HOURS * 3600 and not yes:
        raise LmkitError(f"{said}: more than {LONG_RUN_HOURS:.0f} hours; pass --yes to start it anyway")


__all__ = [
    "ACCELERATORS",
    "Attention",
    "DEFAULT_MFU",
    "LONG_RUN_HOURS",
    "MAX_FLOPS",
    "MAX_MICRO_BATCH",
    "MAX_PARAMS",
    "MAX_SEQ_LEN",
    "MAX_TOKENS",
    "NEVER_DAYS",
    "PLAN_TERMS",
    "MLM_SCORED_FRACTION",
    "PF_DAY",
    "T5_RELATIVE_BUCKETS",
    "THIS_MACHINE",
    "UTILISATION_RANGE",
    "ParamCount",
    "PlanTerms",
    "PredictedTokens",
    "check_run_time",
    "check_utilisation",
    "count_params",
    "decoded_target_len",
    "duration_words",
    "flops_per_token",
    "gpu_hours",
    "mfu",
    "pf_days",
    "plan_terms",
    "run_seconds",
    "training_flops",
]
