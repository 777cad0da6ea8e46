"""The Hugging Face side of each family: the transformers class it maps onto, and the weight names.

What this module owns (export, import, the model card and the hub all read it):

- :class:`HFTarget`: the ``transformers`` class, ``model_type``, Auto class and hub task of each
  family (``TARGETS``; an encoder with rotary positions maps onto ``ROFORMER`` instead), and
  :func:`target_of` / :func:`export_blocker`: which one a config maps onto, or why none does (a
  decoder with learned or sinusoidal positions, an encoder with sinusoidal positions or a rotary
  theta other than 10000).
- :func:`name_map`: lmkit parameter name -> transformers name, from each family's explicit
  ``hf_name_map(cfg)`` (in ``lmkit.models.<family>``); :func:`row_orders`: RoFormer's permutation
  of query/key rows (it rotates interleaved pairs of dimensions where lmkit rotates halves).
- Which transformers tensors are copies (``HF_COPIES``), the embedding itself when tied
  (``HF_TIED_TO_EMBEDDING``) or the word embedding (``HF_EMBEDDING``), and RoFormer's fixed
  sinusoid table (:func:`roformer_sinusoid_table`).
- The record an lmkit export carries (``lmkit_meta.json``, format ``EXPORT_FORMAT``): written by
  ``lmkit.ship.export_hf``, read back by ``lmkit.ship.import_hf``.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING

from lmkit.errors import LmkitError
from lmkit.families import PIPELINE_TAG

if TYPE_CHECKING:
    import torch

    from lmkit.config import ModelConfig

LMKIT_META_FILE = "lmkit_meta.json"
EXPORT_FORMAT = "lmkit-hf-export/1"


@dataclass(frozen=True)
class HFTarget:
    """The transformers class one lmkit family maps onto, and what the hub calls its task."""

    family: str
    architecture: str
    model_type: str
    auto_class: str
    pipeline_tag: str


# The default class of each family; an encoder with rotary positions maps onto ROFORMER instead.
TARGETS: dict[str, HFTarget] = {
    "decoder": HFTarget("decoder", "LlamaForCausalLM", "llama", "AutoModelForCausalLM", PIPELINE_TAG["decoder"]),
    "encoder": HFTarget("encoder", "BertForMaskedLM", "bert", "AutoModelForMaskedLM", PIPELINE_TAG["encoder"]),
    "encdec": HFTarget("encdec", "T5ForConditionalGeneration", "t5", "AutoModelForSeq2SeqLM", PIPELINE_TAG["encdec"]),
}
ROFORMER = HFTarget("encoder", "RoFormerForMaskedLM", "roformer", "AutoModelForMaskedLM", PIPELINE_TAG["encoder"])
TARGET_OF_ARCHITECTURE: dict[str, HFTarget] = {t.architecture: t for t in (*TARGETS.values(), ROFORMER)}
TARGET_OF_MODEL_TYPE: dict[str, HFTarget] = {t.model_type: t for t in (*TARGETS.values(), ROFORMER)}
AUTO_CLASS: dict[str, str] = {fam: t.auto_class for fam, t in TARGETS.items()}

# HF tensors that are copies of another tensor of the same file (written on export, checked on import).
HF_COPIES: dict[str, dict[str, str]] = {
    "LlamaForCausalLM": {},
    "BertForMaskedLM": {"cls.predictions.decoder.bias": "cls.predictions.bias"},
    "RoFormerForMaskedLM": {"cls.predictions.decoder.bias": "cls.predictions.bias"},
    "T5ForConditionalGeneration": {},
}
# HF tensors that are the embedding itself when embeddings are tied (absent from a save_pretrained file).
HF_TIED_TO_EMBEDDING: dict[str, tuple[str, ...]] = {
    "LlamaForCausalLM": ("lm_head.weight",),
    "BertForMaskedLM": ("cls.predictions.decoder.weight",),
    "RoFormerForMaskedLM": ("cls.predictions.decoder.weight",),
    "T5ForConditionalGeneration": ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight", "lm_head.weight"),
}
HF_EMBEDDING: dict[str, str] = {
    "LlamaForCausalLM": "model.embed_tokens.weight",
    "BertForMaskedLM": "bert.embeddings.word_embeddings.weight",
    "RoFormerForMaskedLM": "roformer.embeddings.word_embeddings.weight",
    "T5ForConditionalGeneration": "shared.weight",
}
ROFORMER_TABLE = "roformer.encoder.embed_positions.weight"


def family_module(family: str) -> ModuleType:
    """The module of one family, which holds its ``hf_name_map`` and ``hf_config``."""
    if family == "decoder":
        from lmkit.models import decoder

        return decoder
    if family == "encoder":
        from lmkit.models import encoder

        return encoder
    if family == "encdec":
        from lmkit.models import encdec

        return encdec
    raise LmkitError(f"unknown model family {family!r} (expected encoder, decoder or encdec)")


def export_blocker(cfg: ModelConfig) -> str | None:
    """Why ``cfg`` has no transformers class, or None when :func:`target_of` maps it."""
    if cfg.family == "decoder" and cfg.pos_encoding != "rotary":
        return (
            f"a decoder with {cfg.pos_encoding} positions has no LlamaForCausalLM equivalent "
            "(Llama uses rotary positions only)"
        )
    if cfg.family == "encoder":
        try:
            family_module("encoder").hf_architecture(cfg)
        except ValueError as e:
            return str(e)
    return None


def target_of(cfg: ModelConfig, where: str = "") -> HFTarget:
    """The transformers class of ``cfg``: its family's, or RoFormer for a rotary encoder; else a clear error."""
    blocker = export_blocker(cfg)
    if blocker is not None:
        fix = {
            "decoder": "model.pos_encoding: rotary",
            "encoder": "model.pos_encoding: learned or rotary (rope_theta 10000)",
        }.get(cfg.family, "")
        raise LmkitError(f"{where + ': ' if where else ''}{blocker}; train with {fix} to export")
    if cfg.family == "encoder" and family_module("encoder").hf_architecture(cfg) == ROFORMER.architecture:
        return ROFORMER
    return TARGETS[cfg.family]


def hf_architecture(cfg: ModelConfig) -> str | None:
    """The transformers class ``lmkit export`` maps this model onto, or None when there is none."""
    return None if export_blocker(cfg) is not None else target_of(cfg).architecture


def name_map(cfg: ModelConfig, where: str = "") -> dict[str, str]:
    """lmkit parameter name -> transformers parameter name, or a clear error if there is no mapping."""
    target = target_of(cfg, where)
    try:
        return dict(family_module(cfg.family).hf_name_map(cfg))
    except ValueError as e:
        raise LmkitError(f"{where + ': ' if where else ''}cannot map onto {target.architecture}: {e}") from None


def row_orders(cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """lmkit tensor name -> the order of its rows in the transformers tensor (absent: rows unchanged).

    Only RoFormer needs one: it rotates interleaved pairs of each head's dimensions where lmkit rotates
    the two halves, so the query and key projections (weights and biases) are permuted alike
    (``lmkit.models.encoder.hf_rotary_permutation``); attention scores are unchanged by it.
    """
    if target_of(cfg) is not ROFORMER:
        return {}
    from lmkit.models.encoder import hf_rotary_permutation

    perm = hf_rotary_permutation(cfg)
    return {
        f"blocks.{i}.attn.{p}.{w}": perm
        for i in range(cfg.n_layers)
        for p in ("q_proj", "k_proj")
        for w in ("weight", "bias")
    }


def roformer_sinusoid_table(n_positions: int, head_dim: int) -> torch.Tensor:
    """RoFormer's fixed (n_positions, head_dim) table: sin of pos·10000^(-2i/head_dim), then cos.

    Computed the way ``RoFormerSinusoidalPositionalEmbedding.create_weight`` does (float64 NumPy,
    then float32), so the tensor written on export is bit for bit the one transformers would build;
    it equals lmkit's rotary angles with rope_theta 10000.
    """
    import numpy as np
    import torch

    j = np.arange(head_dim)
    angle = np.arange(n_positions)[:, None] / np.power(10000, 2 * (j // 2) / head_dim)[None, :]  # (P, hd)
    half = head_dim // 2
    out = np.empty((n_positions, head_dim), dtype=np.float64)
    out[:, :half] = np.sin(angle[:, 0::2])
    out[:, half:] = np.cos(angle[:, 1::2])
    return torch.from_numpy(out).to(torch.float32)


__all__ = [
    "AUTO_CLASS",
    "EXPORT_FORMAT",
    "HFTarget",
    "HF_COPIES",
    "HF_EMBEDDING",
    "HF_TIED_TO_EMBEDDING",
    "LMKIT_META_FILE",
    "ROFORMER",
    "ROFORMER_TABLE",
    "TARGETS",
    "TARGET_OF_ARCHITECTURE",
    "TARGET_OF_MODEL_TYPE",
    "export_blocker",
    "family_module",
    "hf_architecture",
    "name_map",
    "roformer_sinusoid_table",
    "row_orders",
    "target_of",
]
