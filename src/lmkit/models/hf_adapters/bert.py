"""``BertForMaskedLM`` (lmkit's encoder with learned positions): the adapter.

lmkit's encoder is BERT's layout (post-norm, LayerNorm with bias, exact GELU, biases, two segments),
so names map one to one; the names themselves live with the family (``lmkit.models.encoder.
hf_name_map``). ``cls.predictions.decoder.bias`` is written as a copy of ``cls.predictions.bias``;
untied, transformers reads the decoder's own bias, so import takes that one. Old files' LayerNorm
``gamma``/``beta`` names are read as ``weight``/``bias``. The pooler and next-sentence head are not
part of a masked LM and are skipped. :func:`encoder_config` serves RoFormer and RoBERTa too.
"""

from __future__ import annotations

from typing import Any

from lmkit.config import ModelConfig
from lmkit.families import PIPELINE_TAG
from lmkit.models.hf_adapters.base import HFAdapter, HFConfigReader, HFTarget, Rule, same, validated

TARGET = HFTarget("encoder", "BertForMaskedLM", "bert", "AutoModelForMaskedLM", PIPELINE_TAG["encoder"])


def encoder_config(
    hf: dict[str, Any],
    source: str,
    max_seq_len: int | None,
    rotary: bool,
    model_type: str,
    types: int = 2,
    position_offset: int = 0,
) -> ModelConfig:
    """The ModelConfig of a BERT (``rotary`` False), RoFormer or RoBERTa config.json, or one line refusing it.

    ``types``: the token types the class has; ``position_offset``: rows of the position table before
    position 0 (RoBERTa's 2), which the context window does not count.
    """
    r = HFConfigReader(hf, source)
    r.equals("hidden_act", ("gelu",), "gelu", 'lmkit\'s encoder uses exact GELU ("gelu")')
    if rotary:  # RoFormer: BERT blocks with rotary positions (theta 10000) and no position table
        r.need(
            not hf.get("rotary_value", False), "rotary_value is true: lmkit rotates queries and keys only, not values"
        )
        r.need(
            hf.get("embedding_size") in (None, hf.get("hidden_size")),
            f"embedding_size {hf.get('embedding_size')} != hidden_size {hf.get('hidden_size')}: lmkit's "
            "encoder has no embedding projection",
        )
    else:
        r.need(
            hf.get("position_embedding_type", "absolute") == "absolute",
            f"position_embedding_type {hf.get('position_embedding_type')!r}: lmkit's BERT layout has "
            "absolute learned positions only",
        )
    r.need(
        hf.get("type_vocab_size", 2) == types,
        f"type_vocab_size {hf.get('type_vocab_size')} != {types} (lmkit's {model_type} layout has {types})",
    )
    r.need(
        not hf.get("is_decoder", False) and not hf.get("add_cross_attention", False),
        f"a {model_type} model used as a decoder (is_decoder / add_cross_attention) is not supported",
    )
    d, heads = r.int("hidden_size"), r.int("num_attention_heads")
    r.need(d % heads == 0, f"hidden_size {d} is not divisible by num_attention_heads {heads}")
    if rotary:
        r.need((d // heads) % 2 == 0, f"head size {d // heads} is odd: rotary positions need an even one")
    n_pos = r.int("max_position_embeddings", 1536 if rotary else 512) - position_offset
    r.need(n_pos > 0, f"max_position_embeddings leaves no position after the first {position_offset} rows")
    if max_seq_len is not None and not rotary:
        r.need(max_seq_len <= n_pos, f"--max-seq-len {max_seq_len} exceeds the {n_pos} learned positions")
    cfg = ModelConfig(
        family="encoder",
        vocab_size=r.int("vocab_size"),
        d_model=d,
        n_layers=r.int("num_hidden_layers"),
        n_heads=heads,
        d_ff=r.int("intermediate_size"),
        max_seq_len=max_seq_len or n_pos,
        pos_encoding="rotary" if rotary else "learned",
        rope_theta=10000.0,
        norm_eps=r.float("layer_norm_eps", 1e-12),
        dropout=r.float("hidden_dropout_prob", 0.1),
        tie_embeddings=bool(hf.get("tie_word_embeddings", True)),
        type_vocab_size=types,
    )
    return validated(cfg, source)


def config_from_hf(
    hf: dict[str, Any], source: str, max_seq_len: int | None = None, tokenizer_max_len: int | None = None
) -> ModelConfig:
    return encoder_config(hf, source, max_seq_len, False, TARGET.model_type)


def encoder_rules(cfg: ModelConfig) -> list[Rule]:
    from lmkit.models.encoder import hf_name_map

    return [same(ours, theirs) for ours, theirs in hf_name_map(cfg).items()]


def layout_problem(cfg: ModelConfig) -> str | None:
    if cfg.family != TARGET.family:
        return "BertForMaskedLM is an encoder"
    if cfg.type_vocab_size != 2:
        return f"BertForMaskedLM has 2 token types, got model.type_vocab_size {cfg.type_vocab_size}"
    return None if cfg.pos_encoding == "learned" else f"BertForMaskedLM has learned positions, got {cfg.pos_encoding}"


def config_to_hf(cfg: ModelConfig) -> dict[str, Any]:
    from lmkit.models.encoder import hf_config

    return dict(hf_config(cfg))


ADAPTER = HFAdapter(
    target=TARGET,
    layout_problem=layout_problem,
    config_from_hf=config_from_hf,
    config_to_hf=config_to_hf,
    rules=encoder_rules,
    embedding="bert.embeddings.word_embeddings.weight",
    ignored=(r"bert\.embeddings\.position_ids", r"bert\.pooler\..*", r"cls\.seq_relationship\..*"),
    tied=("cls.predictions.decoder.weight",),
    copies={"cls.predictions.decoder.bias": "cls.predictions.bias"},
)

__all__ = ["ADAPTER", "TARGET", "config_from_hf", "config_to_hf", "encoder_config", "encoder_rules", "layout_problem"]
