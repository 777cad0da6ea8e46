"""``RoFormerForMaskedLM`` (lmkit's encoder with rotary positions, theta 10000): the adapter.

BERT's blocks with rotary positions and no position table (``lmkit.models.hf_adapters.bert`` reads
the config). RoFormer rotates interleaved pairs of each head's dimensions where lmkit rotates halves,
so the query and key rows (weights and biases) are permuted alike (``lmkit.models.encoder.
hf_rotary_permutation``; attention scores are unchanged). Its sinusoid table
(``roformer.encoder.embed_positions.weight``) is written on export and must be the standard one on import.
"""

from __future__ import annotations

from typing import Any

from lmkit.config import ModelConfig
from lmkit.families import PIPELINE_TAG
from lmkit.models.hf_adapters.base import HFAdapter, HFTarget, Rule, same
from lmkit.models.hf_adapters.bert import encoder_config

TARGET = HFTarget("encoder", "RoFormerForMaskedLM", "roformer", "AutoModelForMaskedLM", PIPELINE_TAG["encoder"])
TABLE = "roformer.encoder.embed_positions.weight"


def config_from_hf(
    hf: dict[str, Any], source: str, max_seq_len: int | None = None, tokenizer_max_len: int | None = None
) -> ModelConfig:
    return encoder_config(hf, source, max_seq_len, True, TARGET.model_type)


def layout_problem(cfg: ModelConfig) -> str | None:
    if cfg.family != TARGET.family:
        return "RoFormerForMaskedLM is an encoder"
    if cfg.pos_encoding != "rotary" or cfg.rope_theta != 10000.0:
        return "RoFormerForMaskedLM has rotary positions with rope_theta 10000"
    if cfg.type_vocab_size != 2:
        return f"RoFormerForMaskedLM has 2 token types, got model.type_vocab_size {cfg.type_vocab_size}"
    return None


def rules(cfg: ModelConfig) -> list[Rule]:
    from lmkit.models.encoder import hf_name_map, hf_rotary_permutation

    perm = hf_rotary_permutation(cfg)
    rotated = {
        f"blocks.{i}.attn.{p}.{w}"
        for i in range(cfg.n_layers)
        for p in ("q_proj", "k_proj")
        for w in ("weight", "bias")
    }
    return [
        Rule((ours,), theirs, "rows", perm=perm) if ours in rotated else same(ours, theirs)
        for ours, theirs in hf_name_map(cfg).items()
    ]


def config_to_hf(cfg: ModelConfig) -> dict[str, Any]:
    from lmkit.models.encoder import hf_config

    return dict(hf_config(cfg))


def sinusoid_table(n_positions: int, head_dim: int) -> Any:
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


ADAPTER = HFAdapter(
    target=TARGET,
    layout_problem=layout_problem,
    config_from_hf=config_from_hf,
    config_to_hf=config_to_hf,
    rules=rules,
    embedding="roformer.embeddings.word_embeddings.weight",
    ignored=(r"roformer\.embeddings\.position_ids", r"roformer\.pooler\..*", r"cls\.seq_relationship\..*"),
    tied=("cls.predictions.decoder.weight",),
    copies={"cls.predictions.decoder.bias": "cls.predictions.bias"},
)

__all__ = ["ADAPTER", "TABLE", "TARGET", "config_from_hf", "config_to_hf", "layout_problem", "rules", "sinusoid_table"]
