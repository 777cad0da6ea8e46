"""From a transformers ``config.json`` to lmkit's ModelConfig: exactly, or refused naming why.

:func:`lmkit_config_from_hf` reads a config of one of the four classes lmkit exports to
(``LlamaForCausalLM``, ``BertForMaskedLM``, ``RoFormerForMaskedLM``, ``T5ForConditionalGeneration``;
the class from ``architectures``, else from ``model_type``) and returns the lmkit config that
computes the same function, or one :class:`~lmkit.errors.LmkitError` naming the file and the
setting lmkit has no equivalent for (grouped-query attention, biases, gated or other activations,
rope scaling, sliding windows, relative-attention buckets, ...). Nothing is approximated: a
setting that would change the model's outputs is refused, not dropped.

:func:`original_config` is the way back for lmkit's own exports: the exported checkpoint's
ModelConfig (kept in ``lmkit_meta.json``) when it agrees with the one derived here, so fields
transformers has no slot for come back exactly. The weights themselves are
:mod:`lmkit.ship.import_hf`'s.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lmkit.errors import LmkitError
from lmkit.models.hf import ROFORMER, TARGET_OF_ARCHITECTURE, TARGET_OF_MODEL_TYPE

if TYPE_CHECKING:
    from lmkit.config import ModelConfig


def _need(ok: bool, source: str, message: str) -> None:
    if not ok:
        raise LmkitError(f"{source}: {message}")


def lmkit_config_from_hf(
    hf: dict[str, Any], source: str, max_seq_len: int | None = None, tokenizer_max_len: int | None = None
) -> ModelConfig:
    """The lmkit ModelConfig equal to transformers config ``hf``, or an error naming what has no equivalent."""
    from lmkit.config import ModelConfig

    archs = hf.get("architectures") or []
    _need(
        isinstance(archs, list) and all(isinstance(a, str) for a in archs),
        source,
        f"architectures must be a list of class names, got {archs!r}"[:300],
    )
    target = next((TARGET_OF_ARCHITECTURE[a] for a in archs if a in TARGET_OF_ARCHITECTURE), None)
    if target is None:
        if archs:
            supported = ", ".join(TARGET_OF_ARCHITECTURE)
            raise LmkitError(
                f"{source}: architecture {', '.join(map(str, archs))} is not supported (lmkit imports {supported})"
            )
        target = TARGET_OF_MODEL_TYPE.get(str(hf.get("model_type")))
        if target is None:
            raise LmkitError(
                f"{source}: model_type {hf.get('model_type')!r} is not supported "
                f"(lmkit imports {', '.join(TARGET_OF_ARCHITECTURE)})"
            )
    _need(
        hf.get("model_type", target.model_type) == target.model_type,
        source,
        f"model_type {hf.get('model_type')!r} does not match {target.architecture}",
    )
    fam = target.family

    def geti(key: str, default: int | None = None) -> int:
        v = hf.get(key, default)
        if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
            raise LmkitError(f"{source}: {key} must be a positive integer, got {v!r}"[:300])
        return v

    def getf(key: str, default: float) -> float:
        v = hf.get(key, default)
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            raise LmkitError(f"{source}: {key} must be a number, got {v!r}"[:300])
        return float(v)

    if fam == "decoder":
        d, heads = geti("hidden_size"), geti("num_attention_heads")
        kv = hf.get("num_key_value_heads") or heads
        _need(
            kv == heads,
            source,
            f"grouped-query attention (num_key_value_heads {kv} != num_attention_heads "
            f"{heads}) has no lmkit equivalent: lmkit's attention has one key/value head per head",
        )
        _need(d % heads == 0, source, f"hidden_size {d} is not divisible by num_attention_heads {heads}")
        hd = hf.get("head_dim") or d // heads
        _need(
            hd == d // heads,
            source,
            f"head_dim {hd} != hidden_size / num_attention_heads ({d // heads}); lmkit's heads split d_model evenly",
        )
        _need(
            hf.get("hidden_act", "silu") == "silu",
            source,
            f"hidden_act {hf.get('hidden_act')!r}: lmkit's decoder uses SwiGLU (silu)",
        )
        _need(not hf.get("attention_bias", False), source, "attention_bias is true: lmkit's decoder has no biases")
        _need(not hf.get("mlp_bias", False), source, "mlp_bias is true: lmkit's decoder has no biases")
        _need(hf.get("pretraining_tp", 1) in (None, 1), source, "pretraining_tp != 1 is not supported")
        rope = hf.get("rope_parameters") or {}
        scaling = hf.get("rope_scaling")
        rope_type = (rope.get("rope_type") or rope.get("type") or "default") if isinstance(rope, dict) else "default"
        _need(
            rope_type == "default" and not scaling,
            source,
            f"rope scaling ({scaling or rope_type}) has no lmkit equivalent: lmkit uses plain rotary positions",
        )
        theta = (rope.get("rope_theta") if isinstance(rope, dict) else None) or hf.get("rope_theta") or 10000.0
        _need(
            isinstance(theta, (int, float)) and not isinstance(theta, bool),
            source,
            f"rope_theta must be a number, got {theta!r}"[:300],
        )
        _need(not hf.get("sliding_window"), source, "sliding-window attention is not supported")
        cfg = ModelConfig(
            family="decoder",
            vocab_size=geti("vocab_size"),
            d_model=d,
            n_layers=geti("num_hidden_layers"),
            n_heads=heads,
            d_ff=geti("intermediate_size"),
            max_seq_len=max_seq_len or geti("max_position_embeddings", 2048),
            pos_encoding="rotary",
            rope_theta=float(theta),
            norm_eps=getf("rms_norm_eps", 1e-6),
            dropout=0.0,
            tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
        )
    elif fam == "encoder":
        _need(
            hf.get("hidden_act", "gelu") == "gelu",
            source,
            f'hidden_act {hf.get("hidden_act")!r}: lmkit\'s encoder uses exact GELU ("gelu")',
        )
        rotary = target is ROFORMER
        if rotary:  # RoFormer: BERT blocks with rotary positions (theta 10000) and no position table
            _need(
                not hf.get("rotary_value", False),
                source,
                "rotary_value is true: lmkit rotates queries and keys only, not values",
            )
            _need(
                hf.get("embedding_size") in (None, hf.get("hidden_size")),
                source,
                f"embedding_size {hf.get('embedding_size')} != hidden_size {hf.get('hidden_size')}: lmkit's "
                "encoder has no embedding projection",
            )
        else:
            _need(
                hf.get("position_embedding_type", "absolute") == "absolute",
                source,
                f"position_embedding_type {hf.get('position_embedding_type')!r}: lmkit's BERT layout has "
                "absolute learned positions only",
            )
        from lmkit.models.encoder import TYPE_VOCAB_SIZE

        _need(
            hf.get("type_vocab_size", 2) == TYPE_VOCAB_SIZE,
            source,
            f"type_vocab_size {hf.get('type_vocab_size')} != {TYPE_VOCAB_SIZE} (lmkit's encoder has two segments)",
        )
        _need(
            not hf.get("is_decoder", False) and not hf.get("add_cross_attention", False),
            source,
            f"a {target.model_type} model used as a decoder (is_decoder / add_cross_attention) is not supported",
        )
        d, heads = geti("hidden_size"), geti("num_attention_heads")
        _need(d % heads == 0, source, f"hidden_size {d} is not divisible by num_attention_heads {heads}")
        if rotary:
            _need((d // heads) % 2 == 0, source, f"head size {d // heads} is odd: rotary positions need an even one")
        n_pos = geti("max_position_embeddings", 1536 if rotary else 512)
        if max_seq_len is not None and not rotary:
            _need(max_seq_len <= n_pos, source, f"--max-seq-len {max_seq_len} exceeds the {n_pos} learned positions")
        cfg = ModelConfig(
            family="encoder",
            vocab_size=geti("vocab_size"),
            d_model=d,
            n_layers=geti("num_hidden_layers"),
            n_heads=heads,
            d_ff=geti("intermediate_size"),
            max_seq_len=max_seq_len or n_pos,
            pos_encoding="rotary" if rotary else "learned",
            rope_theta=10000.0,
            norm_eps=getf("layer_norm_eps", 1e-12),
            dropout=getf("hidden_dropout_prob", 0.1),
            tie_embeddings=bool(hf.get("tie_word_embeddings", True)),
        )
    else:
        from lmkit.models.encdec import REL_BUCKETS, REL_MAX_DISTANCE

        ffp = hf.get("feed_forward_proj", "relu")
        _need(
            ffp == "relu",
            source,
            f"feed_forward_proj {ffp!r}: lmkit's encoder-decoder is T5 v1.0 (ReLU MLP, "
            "not gated as in T5 v1.1 / Flan-T5)",
        )
        _need(
            hf.get("relative_attention_num_buckets", 32) == REL_BUCKETS,
            source,
            f"relative_attention_num_buckets must be {REL_BUCKETS}",
        )
        _need(
            hf.get("relative_attention_max_distance", 128) == REL_MAX_DISTANCE,
            source,
            f"relative_attention_max_distance must be {REL_MAX_DISTANCE}",
        )
        d, heads = geti("d_model"), geti("num_heads")
        _need(
            d % heads == 0 and hf.get("d_kv", d // heads) == d // heads,
            source,
            f"d_kv {hf.get('d_kv')} != d_model / num_heads ({d // heads if d % heads == 0 else '?'}): lmkit's "
            "heads split d_model evenly",
        )
        # T5 v1.0 ties the head to the embedding and scales decoder states by d_model^-0.5; lmkit does
        # exactly that when tied. A head without the scaling (transformers 5 writes tie_word_embeddings:
        # true with scale_decoder_outputs: false for such a model) becomes lmkit's untied head, filled
        # from the file's lm_head or, when the file has none, from the embedding it is tied to.
        tie = bool(hf.get("scale_decoder_outputs", hf.get("tie_word_embeddings", True) is not False))
        n_enc = geti("num_layers")
        n_dec = geti("num_decoder_layers") if hf.get("num_decoder_layers") is not None else n_enc
        cfg = ModelConfig(
            family="encdec",
            vocab_size=geti("vocab_size"),
            d_model=d,
            n_layers=n_enc,
            n_heads=heads,
            d_ff=geti("d_ff"),
            n_decoder_layers=None if n_dec == n_enc else n_dec,
            max_seq_len=max_seq_len
            or (geti("n_positions") if hf.get("n_positions") is not None else tokenizer_max_len or 512),
            pos_encoding="rotary",  # unused by the T5 layout (relative position bias)
            norm_eps=getf("layer_norm_epsilon", 1e-6),
            dropout=getf("dropout_rate", 0.1),
            tie_embeddings=tie,
        )
    try:
        cfg.validate()
    except LmkitError as e:
        raise LmkitError(f"{source}: {e}") from None
    return cfg


def original_config(record: dict[str, Any], derived: ModelConfig, max_seq_len: int | None) -> ModelConfig:
    """The exported checkpoint's own ModelConfig when it agrees with the transformers config.

    Fields transformers has no slot for (encdec's context and target lengths, its unused position
    setting) then come back exactly as they were; any disagreement keeps the derived config.
    """
    import dataclasses

    from lmkit.config import model_config_from_dict

    try:
        orig = model_config_from_dict(record.get("lmkit_model") or {})
    except LmkitError:
        return derived
    same = ("family", "vocab_size", "d_model", "n_layers", "n_heads", "ffn_width", "tie_embeddings", "norm_eps")
    if any(getattr(orig, k) != getattr(derived, k) for k in same):
        return derived
    if (orig.n_decoder_layers or orig.n_layers) != (derived.n_decoder_layers or derived.n_layers):
        return derived
    if orig.family == "decoder" and (orig.pos_encoding, orig.rope_theta) != (derived.pos_encoding, derived.rope_theta):
        return derived
    if orig.family == "encoder" and (
        orig.pos_encoding != derived.pos_encoding
        or orig.rope_theta != derived.rope_theta
        or orig.max_seq_len < derived.max_seq_len
    ):
        return derived
    return dataclasses.replace(orig, max_seq_len=max_seq_len) if max_seq_len else orig


__all__ = ["lmkit_config_from_hf", "original_config"]
