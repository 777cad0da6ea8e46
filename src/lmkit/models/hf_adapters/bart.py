"""``BartForConditionalGeneration`` (lmkit's encoder-decoder in BART's layout): the adapter.

BART is the BART layout of ``lmkit.models.encdec`` (``model_variants.ENCDEC_LAYOUTS``): LayerNorm with
bias, post-norm blocks, biases on every projection, a LayerNorm after the embedding and a learned
position table in each stack, a plain MLP (``fc1``/``fc2``, GELU), attention scaled by 1/√hd, the head
tied to the shared embedding without scaling, plus the fixed ``final_logits_bias`` buffer on the
logits. The names are this module's (:func:`hf_name_map`). Storage quirk: BART's position tables
have ``POSITION_OFFSET`` = 2 rows before position 0 (transformers reads row position + 2), which
import drops and export writes back as zeros (an ``offset`` rule). Decoding starts with ``</s>``
(``decoder_start_token_id`` 2). Imported models are continued by text infilling (``objective:
infill``), BART's own pre-training. facebook/bart-base's config.json names the base class
(``BartModel``): its files may lack the ``model.`` prefix and ``final_logits_bias`` (zeros, as in
transformers). Refused: ``scale_embedding`` (mBART's √d embedding scale), a
final layer norm or pre-norm (``add_final_layer_norm``, ``normalize_before``: mBART), a logits bias
learned apart (``add_bias_logits``), encoder and decoder of different widths or head counts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from lmkit.config import ModelConfig
from lmkit.families import PIPELINE_TAG
from lmkit.models.hf_adapters.base import HFAdapter, HFConfigReader, HFTarget, Rule, same, validated
from lmkit.models.hf_adapters.t5 import ACTIVATION_OF

if TYPE_CHECKING:
    from lmkit.model_variants import Activation

TARGET = HFTarget("encdec", "BartForConditionalGeneration", "bart", "AutoModelForSeq2SeqLM", PIPELINE_TAG["encdec"])
POSITION_OFFSET = 2  # rows of each BART position table before position 0


def config_from_hf(
    hf: dict[str, Any], source: str, max_seq_len: int | None = None, tokenizer_max_len: int | None = None
) -> ModelConfig:
    r = HFConfigReader(hf, source)
    for key, want, why in (
        ("scale_embedding", False, "mBART's √d_model embedding scale has no lmkit field"),
        ("normalize_before", False, "lmkit's BART layout is post-norm"),
        ("add_final_layer_norm", False, "lmkit's BART layout has no final layer norm"),
        ("add_bias_logits", False, "lmkit's BART logits bias is the fixed final_logits_bias"),
        ("normalize_embedding", True, "lmkit's BART layout normalises the embedding"),
    ):
        r.need(bool(hf.get(key, want)) == want, f"{key} {hf.get(key)!r}: {why}")
    act = hf.get("activation_function", "gelu")
    activation = ACTIVATION_OF.get(act)
    r.need(activation is not None, f"activation_function {act!r}: lmkit's MLP has relu|gelu|gelu_new|silu")
    heads, ffn = r.int("encoder_attention_heads"), r.int("encoder_ffn_dim")
    r.need(
        r.int("decoder_attention_heads") == heads and r.int("decoder_ffn_dim") == ffn,
        "decoder_attention_heads / decoder_ffn_dim differ from the encoder's: lmkit's two stacks share them",
    )
    d = r.int("d_model")
    r.need(d % heads == 0, f"d_model {d} is not divisible by encoder_attention_heads {heads}")
    n_pos = r.int("max_position_embeddings", 1024)
    if max_seq_len is not None:
        r.need(max_seq_len <= n_pos, f"--max-seq-len {max_seq_len} exceeds the {n_pos} learned positions")
    n_enc, n_dec = r.int("encoder_layers"), r.int("decoder_layers")
    cfg = ModelConfig(
        family="encdec",
        vocab_size=r.int("vocab_size"),
        d_model=d,
        n_layers=n_enc,
        n_heads=heads,
        d_ff=ffn,
        n_decoder_layers=None if n_dec == n_enc else n_dec,
        max_seq_len=max_seq_len or n_pos,
        max_target_len=min(64, max_seq_len or n_pos),
        pos_encoding="learned",
        norm_eps=1e-5,  # BART's LayerNorms use torch's default
        dropout=r.float("dropout", 0.1),
        tie_embeddings=bool(hf.get("tie_word_embeddings", True)),
        norm="layer",
        bias="all",
        mlp="plain",
        activation=cast("Activation", activation),
        residual="post",
        embed_norm=True,
        objective="infill",
    )
    return validated(cfg, source)


def hf_name_map(cfg: ModelConfig) -> dict[str, str]:
    """lmkit parameter name -> ``BartForConditionalGeneration`` name, but for the position tables (offset rules)."""
    names = {"tok_emb.weight": "model.shared.weight", "final_logits_bias": "final_logits_bias"}
    attn = {"q_proj": "q_proj", "k_proj": "k_proj", "v_proj": "v_proj", "o_proj": "out_proj"}
    for stack, n in (("encoder", cfg.n_layers), ("decoder", cfg.n_decoder_layers or cfg.n_layers)):
        theirs_stack = f"model.{stack}."
        for w in ("weight", "bias"):
            names[f"{stack}.emb_norm.{w}"] = f"{theirs_stack}layernorm_embedding.{w}"
        for i in range(n):
            ours, theirs = f"{stack}.blocks.{i}.", f"{theirs_stack}layers.{i}."
            parts = [("attn", "self_attn"), ("attn_norm", "self_attn_layer_norm")]
            if stack == "decoder":
                parts += [("cross_attn", "encoder_attn"), ("cross_norm", "encoder_attn_layer_norm")]
            parts += [("mlp.wi", "fc1"), ("mlp.wo", "fc2"), ("mlp_norm", "final_layer_norm")]
            for w in ("weight", "bias"):
                for a, b in parts:
                    if a in ("attn", "cross_attn"):
                        for p, q in attn.items():
                            names[f"{ours}{a}.{p}.{w}"] = f"{theirs}{b}.{q}.{w}"
                    else:
                        names[f"{ours}{a}.{w}"] = f"{theirs}{b}.{w}"
    if not cfg.tie_embeddings:
        names["lm_head.weight"] = "lm_head.weight"
    return names


def rules(cfg: ModelConfig) -> list[Rule]:
    out = [same(ours, theirs) for ours, theirs in hf_name_map(cfg).items()]
    for stack in ("encoder", "decoder"):
        table = f"model.{stack}.embed_positions.weight"
        out.append(Rule((f"{stack}.pos_emb.weight",), table, "offset", offset=POSITION_OFFSET))
    return out


def layout_problem(cfg: ModelConfig) -> str | None:
    if cfg.family != TARGET.family:
        return "BartForConditionalGeneration is an encoder-decoder"
    if cfg.norm != "layer":
        return "BartForConditionalGeneration has BART's layout (model.norm layer), not T5's"
    if cfg.mlp != "plain" or cfg.head_size not in (None, cfg.d_model // cfg.n_heads):
        return "BartForConditionalGeneration has a plain MLP and heads that split d_model"
    return None


def config_to_hf(cfg: ModelConfig) -> dict[str, Any]:
    from lmkit.models.encdec import HF_ACTIVATION

    n_dec = cfg.n_decoder_layers or cfg.n_layers
    return {
        "architectures": [TARGET.architecture],
        "model_type": TARGET.model_type,
        "vocab_size": cfg.vocab_size,
        "d_model": cfg.d_model,
        "encoder_layers": cfg.n_layers,
        "decoder_layers": n_dec,
        "num_hidden_layers": cfg.n_layers,
        "encoder_attention_heads": cfg.n_heads,
        "decoder_attention_heads": cfg.n_heads,
        "encoder_ffn_dim": cfg.ffn_width,
        "decoder_ffn_dim": cfg.ffn_width,
        "activation_function": HF_ACTIVATION[cfg.activation],
        "max_position_embeddings": cfg.max_seq_len,
        "dropout": cfg.dropout,
        "attention_dropout": 0.0,
        "activation_dropout": 0.0,
        "scale_embedding": False,
        "tie_word_embeddings": cfg.tie_embeddings,
        "is_encoder_decoder": True,
        "pad_token_id": 1,
        "bos_token_id": 0,
        "eos_token_id": 2,
        "decoder_start_token_id": 2,
        "forced_bos_token_id": None,
        "forced_eos_token_id": None,  # generation as lmkit's: nothing forced at the end
        "init_std": 0.02,
    }


ADAPTER = HFAdapter(
    target=TARGET,
    layout_problem=layout_problem,
    config_from_hf=config_from_hf,
    config_to_hf=config_to_hf,
    rules=rules,
    embedding="model.shared.weight",
    tied=("model.encoder.embed_tokens.weight", "model.decoder.embed_tokens.weight", "lm_head.weight"),
    prefix="model.",
    aliases=("BartModel",),
    zero_if_absent=("final_logits_bias",),
)

__all__ = ["ADAPTER", "POSITION_OFFSET", "TARGET", "config_from_hf", "config_to_hf", "hf_name_map", "rules"]
