"""The architecture variants of a model: the named ``model.*`` fields beyond its sizes, and the rules
that keep them consistent.

What this module owns (``lmkit.config.ModelConfig`` holds the fields, calls :func:`settle_defaults`
from ``__post_init__`` and :func:`variant_problem` from its ``validate``):

- the allowed values of each variant (``Norm``, ``Bias``, ``Mlp``, ``Activation``, ``Residual``,
  ``RopeScalingType``) and :class:`RopeScaling`, the rotary frequency rewrite of Llama 3 and of linear
  position interpolation, with its parameters;
- which family may set which variant: the decoder all of ``DEFAULTS``; the encoder its number of
  token types (``type_vocab_size``: BERT's two segments, RoBERTa's one); the encoder-decoder its MLP
  (``mlp`` + ``activation``: T5 v1.0's plain ReLU, T5 v1.1's gated tanh-GELU), its head width
  (``head_size``, T5's ``d_kv``, independent of d_model / n_heads) and one of two layouts
  (``ENCDEC_LAYOUTS``: T5's RMSNorm pre-norm without biases and relative positions, or BART's LayerNorm
  post-norm with biases, an embedding norm and learned positions);
- :func:`settle_defaults`: ``objective: auto`` becomes the family's first objective, and an
  encoder-decoder whose MLP fields hold the decoder's defaults (gated + silu, every encdec config
  written before the fields existed) becomes T5 v1.0's plain ReLU MLP, the layout it always had;
- :func:`variant_problem`: the first inconsistent setting as (one-line message, dotted key), or None.

Invariants: every default reproduces lmkit's own models (the decoder's Llama layout: RMSNorm, no
biases, SwiGLU, pre-norm residual, rotary positions on whole heads, one key/value head per head; the
encoder's BERT layout with two token types; the encoder-decoder's T5 v1.0 layout), so a config that
names none of these fields is the model it always was. A variant a family cannot compute is refused
naming the key. Imports nothing from lmkit (``lmkit.config`` imports it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

Norm = Literal["rms", "layer"]  # RMSNorm (weight) | LayerNorm (weight and bias)
Bias = Literal["none", "qkv", "all"]  # no biases | on the query/key/value projections | on every linear layer
Mlp = Literal["gated", "plain"]  # down(act(gate(x)) * up(x)) | down(act(up(x)))
# gelu: exact (erf); gelu_tanh: the tanh approximation; relu: encoder-decoders only (T5 v1.0)
Activation = Literal["silu", "gelu", "gelu_tanh", "relu"]
# x + attn(n1(x)), then + mlp(n2(...)) | x + attn(n1(x)) + mlp(n2(x)) | n1(x + attn(x)), then n2(... + mlp(...)):
# post only in encoder-decoders (BART)
Residual = Literal["pre", "parallel", "post"]
RopeScalingType = Literal["none", "linear", "llama3"]


@dataclass
class RopeScaling:
    """How rotary frequencies are rewritten for a longer context (``model.rope_scaling``).

    ``linear``: every inverse frequency divided by ``factor`` (position interpolation). ``llama3``:
    wavelengths longer than ``original_max_len / low_freq_factor`` divided by ``factor``, shorter
    than ``original_max_len / high_freq_factor`` kept, the band between interpolated smoothly
    (Llama 3.1/3.2). ``none``: plain rotary positions (the other fields unused).
    """

    type: RopeScalingType = "none"
    factor: float = 1.0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_len: int = 8192


# The variant fields and their defaults (the decoder lmkit always had).
DEFAULTS: dict[str, Any] = {
    "n_kv_heads": None,
    "head_size": None,
    "norm": "rms",
    "bias": "none",
    "mlp": "gated",
    "activation": "silu",
    "residual": "pre",
    "rotary_fraction": 1.0,
    "embed_norm": False,
}
# The variants an encoder or encoder-decoder may set (every other one keeps its DEFAULTS value there).
FAMILY_VARIANTS: dict[str, tuple[str, ...]] = {
    "encoder": (),
    "encdec": ("mlp", "activation", "head_size", "norm", "bias", "residual", "embed_norm"),
}
# The two encoder-decoder layouts: T5 (relative position buckets) and BART (learned positions); each field set
# as one, the MLP and head size free in both.
ENCDEC_LAYOUTS: dict[str, dict[str, Any]] = {
    "T5": {"norm": "rms", "bias": "none", "residual": "pre", "embed_norm": False},
    "BART": {"norm": "layer", "bias": "all", "residual": "post", "embed_norm": True, "pos_encoding": "learned"},
}
TYPE_VOCAB_SIZE = 2  # the default number of token types (BERT's segments A and B); an encoder setting
ENCDEC_MLP = ("plain", "relu")  # T5 v1.0's DenseReluDense: what an encdec with the decoder's MLP defaults is


def settle_defaults(cfg: Any, objectives: dict[str, tuple[str, ...]]) -> None:
    """Resolve the family-dependent defaults of ModelConfig ``cfg`` in place (its ``__post_init__``)."""
    if cfg.objective == "auto" and cfg.family in objectives:
        cfg.objective = objectives[cfg.family][0]
    if cfg.family == "encdec" and (cfg.mlp, cfg.activation) == (DEFAULTS["mlp"], DEFAULTS["activation"]):
        cfg.mlp, cfg.activation = ENCDEC_MLP


def rotary_dim(head_dim: int, fraction: float) -> int:
    """Dimensions of each head that rotary positions rotate (the first ones; transformers' rule)."""
    return int(head_dim * fraction)


def variant_problem(cfg: Any) -> tuple[str, str] | None:
    """The first inconsistent variant setting of ModelConfig ``cfg`` as (message, key), or None.

    Sizes have been checked positive before (``ModelConfig.validate``).
    """
    rs: RopeScaling = cfg.rope_scaling
    if cfg.family != "decoder":
        for name, default in DEFAULTS.items():
            if getattr(cfg, name) != default and name not in FAMILY_VARIANTS.get(cfg.family, ()):
                return (
                    f"model.{name} is not a {cfg.family} setting (its layout is fixed), got {getattr(cfg, name)!r}",
                    f"model.{name}",
                )
        if rs.type != "none":
            return (
                f"model.rope_scaling.type is a decoder setting ({cfg.family} layouts are fixed), got {rs.type!r}",
                "model.rope_scaling.type",
            )
        if cfg.pos_encoding == "alibi":
            return (
                f"model.pos_encoding alibi is a decoder setting ({cfg.family} layouts are fixed)",
                "model.pos_encoding",
            )
    tv = cfg.type_vocab_size
    if not (isinstance(tv, int) and tv > 0):
        return f"model.type_vocab_size must be positive, got {tv!r}", "model.type_vocab_size"
    if cfg.family != "encoder" and tv != TYPE_VOCAB_SIZE:
        return f"model.type_vocab_size is an encoder setting, got {tv!r} for a {cfg.family}", "model.type_vocab_size"
    if cfg.activation == "relu" and cfg.family != "encdec":
        return "model.activation relu is an encoder-decoder setting (T5 v1.0's MLP)", "model.activation"
    if cfg.residual == "post" and cfg.family != "encdec":
        return "model.residual post is an encoder-decoder setting (BART's layout)", "model.residual"
    if cfg.family == "encdec":
        name = "BART" if cfg.norm == "layer" else "T5"
        for key, want in ENCDEC_LAYOUTS[name].items():
            if getattr(cfg, key) != want:
                return (
                    f"model.{key} must be {want!r} in the {name} encoder-decoder layout (model.norm {cfg.norm}), "
                    f"got {getattr(cfg, key)!r}",
                    f"model.{key}",
                )
        if name == "BART" and cfg.max_target_len > cfg.max_seq_len:
            return (
                f"model.max_target_len ({cfg.max_target_len}) exceeds the {cfg.max_seq_len} learned positions "
                "of the decoder (model.max_seq_len)",
                "model.max_target_len",
            )
    if cfg.family == "encdec" and cfg.mlp == "gated" and cfg.activation == DEFAULTS["activation"]:
        return (
            "model.activation silu with model.mlp gated is not an encoder-decoder MLP lmkit has (those fields "
            "at the decoder's defaults mean T5 v1.0's plain ReLU MLP)",
            "model.activation",
        )
    for name in ("n_kv_heads", "head_size"):
        value = getattr(cfg, name)
        if value is not None and not (isinstance(value, int) and value > 0):
            return f"model.{name} must be positive (or null for the default), got {value!r}", f"model.{name}"
    if cfg.n_heads % cfg.kv_heads:
        return (
            f"model.n_heads ({cfg.n_heads}) must be a multiple of model.n_kv_heads ({cfg.kv_heads})",
            "model.n_kv_heads",
        )
    if cfg.head_size is None and cfg.d_model % cfg.n_heads:
        return f"model.d_model ({cfg.d_model}) must be divisible by model.n_heads ({cfg.n_heads})", "model.n_heads"
    if not 0 < cfg.rotary_fraction <= 1:
        return f"model.rotary_fraction must be in (0, 1], got {cfg.rotary_fraction!r}", "model.rotary_fraction"
    rotary = cfg.pos_encoding == "rotary"
    if not rotary and cfg.rotary_fraction != 1:
        return (
            f"model.rotary_fraction needs model.pos_encoding rotary, got {cfg.pos_encoding!r}",
            "model.rotary_fraction",
        )
    if not rotary and rs.type != "none":
        return (
            f"model.rope_scaling.type {rs.type} needs model.pos_encoding rotary, got {cfg.pos_encoding!r}",
            "model.rope_scaling.type",
        )
    rd = rotary_dim(cfg.head_dim, cfg.rotary_fraction)
    if rotary and (rd < 2 or rd % 2):
        return (
            f"model.pos_encoding rotary needs an even number of rotated dimensions per head "
            f"(head size {cfg.head_dim} × model.rotary_fraction {cfg.rotary_fraction}), got {rd}",
            "model.pos_encoding",
        )
    if rs.type != "none":
        if not rs.factor > 0:
            return f"model.rope_scaling.factor must be positive, got {rs.factor!r}", "model.rope_scaling.factor"
    if rs.type == "llama3":
        if not 0 < rs.low_freq_factor < rs.high_freq_factor:
            return (
                f"model.rope_scaling.low_freq_factor must be positive and below high_freq_factor, got "
                f"{rs.low_freq_factor!r} and {rs.high_freq_factor!r}",
                "model.rope_scaling.low_freq_factor",
            )
        if not rs.original_max_len > 0:
            return (
                f"model.rope_scaling.original_max_len must be positive, got {rs.original_max_len!r}",
                "model.rope_scaling.original_max_len",
            )
    return None


__all__ = [
    "DEFAULTS",
    "ENCDEC_LAYOUTS",
    "ENCDEC_MLP",
    "FAMILY_VARIANTS",
    "TYPE_VOCAB_SIZE",
    "Activation",
    "Bias",
    "Mlp",
    "Norm",
    "Residual",
    "RopeScaling",
    "RopeScalingType",
    "rotary_dim",
    "settle_defaults",
    "variant_problem",
]
