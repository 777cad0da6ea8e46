"""``T5ForConditionalGeneration`` v1.0 and v1.1 / Flan-T5 (lmkit's encoder-decoder): the adapter.

lmkit's encoder-decoder is T5's layout (RMSNorm without biases, relative position buckets, no
attention scaling), so names map one to one; the names live with the family
(``lmkit.models.encdec.hf_name_map``). ``feed_forward_proj`` becomes ``model.mlp`` + ``model.activation``
(``relu``: T5 v1.0; ``gated-gelu``: T5 v1.1 / Flan-T5, tanh-GELU as transformers computes it), ``d_kv``
becomes ``model.head_size`` when heads × d_kv ≠ d_model. A head without the d_model^-0.5 scaling
(Flan-T5's ``tie_word_embeddings: false``; transformers 5 writes ``tie_word_embeddings: true`` with
``scale_decoder_outputs: false`` for such a model) is lmkit's untied head. Refused: other bucket
settings, activations lmkit has no kernel for, a gated SiLU MLP (its field values mean T5 v1.0's).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from lmkit.config import ModelConfig
from lmkit.families import PIPELINE_TAG
from lmkit.models.hf_adapters.base import HFAdapter, HFConfigReader, HFTarget, Rule, same, validated

if TYPE_CHECKING:
    from lmkit.model_variants import Activation

TARGET = HFTarget("encdec", "T5ForConditionalGeneration", "t5", "AutoModelForSeq2SeqLM", PIPELINE_TAG["encdec"])
# transformers' activation name (ACT2FN, as T5 reads it from feed_forward_proj) -> model.activation
ACTIVATION_OF: dict[Any, Any] = {
    "relu": "relu",
    "gelu": "gelu",
    "gelu_python": "gelu",
    "gelu_new": "gelu_tanh",
    "gelu_pytorch_tanh": "gelu_tanh",
    "silu": "silu",
    "swish": "silu",
}


def config_from_hf(
    hf: dict[str, Any], source: str, max_seq_len: int | None = None, tokenizer_max_len: int | None = None
) -> ModelConfig:
    from lmkit.models.encdec import REL_BUCKETS, REL_MAX_DISTANCE

    r = HFConfigReader(hf, source)
    ffp = hf.get("feed_forward_proj", "relu")
    parts = ffp.split("-") if isinstance(ffp, str) else []
    r.need(
        len(parts) == 1 or (len(parts) == 2 and parts[0] == "gated"),
        f"feed_forward_proj {ffp!r} is not [gated-]<activation>",
    )
    # transformers' own reading: "gated-gelu" is tanh-GELU; explicit is_gated_act / dense_act_fn keys win
    gated = hf.get("is_gated_act", parts[0] == "gated")
    act = hf.get("dense_act_fn", "gelu_new" if ffp == "gated-gelu" else parts[-1])
    activation = ACTIVATION_OF.get(act)
    r.need(
        activation is not None and not (gated and activation == "silu"),
        f"feed_forward_proj {ffp!r} (dense_act_fn {act!r}): lmkit's encoder-decoder MLP is "
        "[gated-](relu|gelu|gelu_new|silu), not gated with SiLU",
    )
    r.need(
        hf.get("relative_attention_num_buckets", 32) == REL_BUCKETS,
        f"relative_attention_num_buckets must be {REL_BUCKETS}",
    )
    r.need(
        hf.get("relative_attention_max_distance", 128) == REL_MAX_DISTANCE,
        f"relative_attention_max_distance must be {REL_MAX_DISTANCE}",
    )
    d, heads = r.int("d_model"), r.int("num_heads")
    d_kv = r.int("d_kv", 64)  # T5Config's default
    split = d % heads == 0 and d_kv == d // heads  # heads split d_model evenly: no head_size needed
    tie = bool(hf.get("scale_decoder_outputs", hf.get("tie_word_embeddings", True) is not False))
    n_enc = r.int("num_layers")
    n_dec = r.int("num_decoder_layers") if hf.get("num_decoder_layers") is not None else n_enc
    cfg = ModelConfig(
        family="encdec",
        vocab_size=r.int("vocab_size"),
        d_model=d,
        n_layers=n_enc,
        n_heads=heads,
        d_ff=r.int("d_ff"),
        head_size=None if split else d_kv,
        mlp="gated" if gated else "plain",
        activation=cast("Activation", activation),
        n_decoder_layers=None if n_dec == n_enc else n_dec,
        max_seq_len=max_seq_len
        or (r.int("n_positions") if hf.get("n_positions") is not None else tokenizer_max_len or 512),
        pos_encoding="rotary",  # unused by the T5 layout (relative position bias)
        norm_eps=r.float("layer_norm_epsilon", 1e-6),
        dropout=r.float("dropout_rate", 0.1),
        tie_embeddings=tie,
    )
    return validated(cfg, source)


def layout_problem(cfg: ModelConfig) -> str | None:
    if cfg.family != TARGET.family:
        return "T5ForConditionalGeneration is an encoder-decoder"
    return None if cfg.norm == "rms" else "T5ForConditionalGeneration has T5's layout (model.norm rms), not BART's"


def rules(cfg: ModelConfig) -> list[Rule]:
    from lmkit.models.encdec import hf_name_map

    return [same(ours, theirs) for ours, theirs in hf_name_map(cfg).items()]


def config_to_hf(cfg: ModelConfig) -> dict[str, Any]:
    from lmkit.models.encdec import hf_config

    return dict(hf_config(cfg))


ADAPTER = HFAdapter(
    target=TARGET,
    layout_problem=layout_problem,
    config_from_hf=config_from_hf,
    config_to_hf=config_to_hf,
    rules=rules,
    embedding="shared.weight",
    # transformers ignores this key too: cross-attention has no position bias
    ignored=(r"decoder\.block\.0\.layer\.1\.EncDecAttention\.relative_attention_bias\.weight",),
    tied=("encoder.embed_tokens.weight", "decoder.embed_tokens.weight", "lm_head.weight"),
)

__all__ = ["ADAPTER", "TARGET", "config_from_hf", "config_to_hf", "rules"]
