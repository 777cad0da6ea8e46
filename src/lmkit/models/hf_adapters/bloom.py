"""``BloomForCausalLM`` (BLOOM-560m and up): the adapter.

Layout: ALiBi positions (no position table; ``lmkit.models.positions.alibi_slopes``), a LayerNorm
right after the word embedding (``word_embeddings_layernorm``: ``model.embed_norm``), LayerNorm with
bias, biases everywhere, a two-matrix MLP of width 4·hidden with tanh-GELU, pre-norm residual, tied
head. Storage: ``query_key_value`` holds q, k, v interleaved per head, rows (head, q|k|v, dim).
Real configs name sizes ``n_layer``/``n_head`` and ``hidden_size`` (older ones ``n_embed``); files
saved from ``BloomModel`` lack the ``transformer.`` prefix. There is no position limit in the file:
the context kept is ``--max-seq-len``, else ``seq_length``, else 2048 (BLOOM's training length).
Refused: ``apply_residual_connection_post_layernorm: true``.
"""

from __future__ import annotations

from typing import Any

from lmkit.config import ModelConfig
from lmkit.families import PIPELINE_TAG
from lmkit.models.hf_adapters.base import HFAdapter, HFConfigReader, HFTarget, Rule, layout_mismatch, same, validated

TARGET = HFTarget("decoder", "BloomForCausalLM", "bloom", "AutoModelForCausalLM", PIPELINE_TAG["decoder"])
WANTS: dict[str, tuple[Any, ...]] = {
    "pos_encoding": ("alibi",),
    "norm": ("layer",),
    "bias": ("all",),
    "mlp": ("plain",),
    "activation": ("gelu_tanh",),
    "residual": ("pre",),
    "n_kv_heads": (None,),
    "head_size": (None,),
    "embed_norm": (True,),
}


def layout_problem(cfg: ModelConfig) -> str | None:
    problem = layout_mismatch(cfg, TARGET, WANTS)
    if problem is None and cfg.ffn_width != 4 * cfg.d_model:
        problem = f"{TARGET.architecture}'s MLP is 4·d_model wide ({4 * cfg.d_model}), got model.d_ff {cfg.ffn_width}"
    return problem


def config_from_hf(
    hf: dict[str, Any], source: str, max_seq_len: int | None = None, tokenizer_max_len: int | None = None
) -> ModelConfig:
    r = HFConfigReader(hf, source)
    r.no_extras()
    r.equals(
        "apply_residual_connection_post_layernorm", (False,), False, "lmkit adds the block's input to the residual"
    )
    d = r.int("hidden_size") if hf.get("hidden_size") is not None else r.int("n_embed")
    cfg = ModelConfig(
        family="decoder",
        vocab_size=r.int("vocab_size"),
        d_model=d,
        n_layers=r.int("n_layer") if "n_layer" in hf else r.int("num_hidden_layers"),
        n_heads=r.int("n_head") if "n_head" in hf else r.int("num_attention_heads"),
        d_ff=4 * d,
        max_seq_len=max_seq_len or r.int("seq_length", tokenizer_max_len or 2048),
        pos_encoding="alibi",
        norm_eps=r.float("layer_norm_epsilon", 1e-5),
        dropout=0.0,
        tie_embeddings=bool(hf.get("tie_word_embeddings", True)),
        norm="layer",
        bias="all",
        mlp="plain",
        activation="gelu_tanh",
        embed_norm=True,
    )
    return validated(cfg, source)


def config_to_hf(cfg: ModelConfig) -> dict[str, Any]:
    """The ``BloomConfig`` fields that describe this decoder exactly."""
    return {
        "architectures": [TARGET.architecture],
        "model_type": TARGET.model_type,
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.d_model,
        "n_layer": cfg.n_layers,
        "n_head": cfg.n_heads,
        "layer_norm_epsilon": cfg.norm_eps,
        "apply_residual_connection_post_layernorm": False,
        "hidden_dropout": 0.0,
        "attention_dropout": 0.0,
        "pretraining_tp": 1,
        "slow_but_exact": False,
        "seq_length": cfg.max_seq_len,
        "tie_word_embeddings": cfg.tie_embeddings,
    }


def rules(cfg: ModelConfig) -> list[Rule]:
    """lmkit name -> BLOOM name: q/k/v interleaved per head in ``query_key_value``."""
    t = "transformer."
    out = [same("tok_emb.weight", t + "word_embeddings.weight")]
    for w in ("weight", "bias"):
        out.append(same(f"emb_norm.{w}", f"{t}word_embeddings_layernorm.{w}"))
    for i in range(cfg.n_layers):
        ours, theirs = f"blocks.{i}.", f"{t}h.{i}."
        for w in ("weight", "bias"):
            qkv = tuple(f"{ours}attn.{p}_proj.{w}" for p in "qkv")
            out += [
                same(f"{ours}attn_norm.{w}", f"{theirs}input_layernorm.{w}"),
                Rule(qkv, f"{theirs}self_attention.query_key_value.{w}", "per_head", heads=cfg.n_heads),
                same(f"{ours}attn.o_proj.{w}", f"{theirs}self_attention.dense.{w}"),
                same(f"{ours}mlp_norm.{w}", f"{theirs}post_attention_layernorm.{w}"),
                same(f"{ours}mlp.up_proj.{w}", f"{theirs}mlp.dense_h_to_4h.{w}"),
                same(f"{ours}mlp.down_proj.{w}", f"{theirs}mlp.dense_4h_to_h.{w}"),
            ]
    out += [same("norm.weight", t + "ln_f.weight"), same("norm.bias", t + "ln_f.bias")]
    if not cfg.tie_embeddings:
        out.append(same("lm_head.weight", "lm_head.weight"))
    return out


ADAPTER = HFAdapter(
    target=TARGET,
    layout_problem=layout_problem,
    config_from_hf=config_from_hf,
    config_to_hf=config_to_hf,
    rules=rules,
    embedding="transformer.word_embeddings.weight",
    tied=("lm_head.weight",),
    prefix="transformer.",
)

__all__ = ["ADAPTER", "TARGET", "config_from_hf", "config_to_hf", "layout_problem", "rules"]
