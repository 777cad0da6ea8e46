"""``GPTNeoXForCausalLM`` (Pythia 14M–12B, GPT-NeoX-20B): the adapter.

Layout: parallel residual (``use_parallel_residual``, the default: x + attn(ln1(x)) + mlp(ln2(x));
false gives the pre-norm chain), LayerNorm with bias, biases everywhere, a two-matrix MLP with exact
GELU (``hidden_act`` ``gelu``; the tanh forms also map), rotary positions on the first
``rotary_pct`` of each head (default 0.25; 5.x: ``rope_parameters.partial_rotary_factor``), base
``rotary_emb_base``, an untied ``embed_out`` head. Storage: ``query_key_value`` holds q, k, v
interleaved per head, rows (head, q|k|v, dim). Causal-mask buffers and rotary ``inv_freq`` of
older files hold no weights. Refused: ``attention_bias: false``, other activations, mixture of experts.
"""

from __future__ import annotations

from typing import Any

from lmkit.config import ModelConfig
from lmkit.families import PIPELINE_TAG
from lmkit.models.hf_adapters.base import HFAdapter, HFConfigReader, HFTarget, Rule, layout_mismatch, same, validated
from lmkit.models.hf_adapters.rope import read_rope, write_rope

TARGET = HFTarget("decoder", "GPTNeoXForCausalLM", "gpt_neox", "AutoModelForCausalLM", PIPELINE_TAG["decoder"])
ACTIVATION = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh"}
WANTS: dict[str, tuple[Any, ...]] = {
    "pos_encoding": ("rotary",),
    "norm": ("layer",),
    "bias": ("all",),
    "mlp": ("plain",),
    "activation": ("gelu", "gelu_tanh"),
    "residual": ("parallel", "pre"),
    "n_kv_heads": (None,),
    "head_size": (None,),
    "embed_norm": (False,),
}


def config_from_hf(
    hf: dict[str, Any], source: str, max_seq_len: int | None = None, tokenizer_max_len: int | None = None
) -> ModelConfig:
    r = HFConfigReader(hf, source)
    r.no_extras()
    act = r.equals("hidden_act", tuple(ACTIVATION), "gelu", "lmkit computes gelu and its tanh approximation")
    r.equals("attention_bias", (True,), True, "lmkit's GPT-NeoX layout has biases on every linear layer")
    theta, fraction, scaling = read_rope(r, 10000.0, "rotary_emb_base", "rotary_pct", 0.25)
    d = r.int("hidden_size")
    cfg = ModelConfig(
        family="decoder",
        vocab_size=r.int("vocab_size"),
        d_model=d,
        n_layers=r.int("num_hidden_layers"),
        n_heads=r.int("num_attention_heads"),
        d_ff=r.int("intermediate_size", 4 * d),
        max_seq_len=max_seq_len or r.int("max_position_embeddings", 2048),
        pos_encoding="rotary",
        rope_theta=theta,
        norm_eps=r.float("layer_norm_eps", 1e-5),
        dropout=0.0,
        tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
        norm="layer",
        bias="all",
        mlp="plain",
        activation=ACTIVATION[act],  # type: ignore[arg-type]
        residual="parallel" if hf.get("use_parallel_residual", True) else "pre",
        rotary_fraction=fraction,
        rope_scaling=scaling,
    )
    return validated(cfg, source)


def config_to_hf(cfg: ModelConfig) -> dict[str, Any]:
    """The ``GPTNeoXConfig`` fields that describe this decoder exactly (4.x rope spelling)."""
    rope = write_rope(cfg.rope_theta, cfg.rope_scaling)
    return {
        "architectures": [TARGET.architecture],
        "model_type": TARGET.model_type,
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.d_model,
        "num_hidden_layers": cfg.n_layers,
        "num_attention_heads": cfg.n_heads,
        "intermediate_size": cfg.ffn_width,
        "hidden_act": "gelu" if cfg.activation == "gelu" else "gelu_new",
        "max_position_embeddings": cfg.max_seq_len,
        "layer_norm_eps": cfg.norm_eps,
        "use_parallel_residual": cfg.residual == "parallel",
        "rotary_pct": cfg.rotary_fraction,
        "rotary_emb_base": cfg.rope_theta,
        "rope_scaling": rope["rope_scaling"],
        "attention_bias": True,
        "tie_word_embeddings": cfg.tie_embeddings,
    }


def rules(cfg: ModelConfig) -> list[Rule]:
    """lmkit name -> GPT-NeoX name: q/k/v interleaved per head in ``query_key_value``."""
    g = "gpt_neox."
    out = [same("tok_emb.weight", g + "embed_in.weight")]
    for i in range(cfg.n_layers):
        ours, theirs = f"blocks.{i}.", f"{g}layers.{i}."
        for w in ("weight", "bias"):
            qkv = tuple(f"{ours}attn.{p}_proj.{w}" for p in "qkv")
            out += [
                same(f"{ours}attn_norm.{w}", f"{theirs}input_layernorm.{w}"),
                same(f"{ours}mlp_norm.{w}", f"{theirs}post_attention_layernorm.{w}"),
                Rule(qkv, f"{theirs}attention.query_key_value.{w}", "per_head", heads=cfg.n_heads),
                same(f"{ours}attn.o_proj.{w}", f"{theirs}attention.dense.{w}"),
                same(f"{ours}mlp.up_proj.{w}", f"{theirs}mlp.dense_h_to_4h.{w}"),
                same(f"{ours}mlp.down_proj.{w}", f"{theirs}mlp.dense_4h_to_h.{w}"),
            ]
    out += [same("norm.weight", g + "final_layer_norm.weight"), same("norm.bias", g + "final_layer_norm.bias")]
    if not cfg.tie_embeddings:
        out.append(same("lm_head.weight", "embed_out.weight"))
    return out


ADAPTER = HFAdapter(
    target=TARGET,
    layout_problem=lambda cfg: layout_mismatch(cfg, TARGET, WANTS),
    config_from_hf=config_from_hf,
    config_to_hf=config_to_hf,
    rules=rules,
    embedding="gpt_neox.embed_in.weight",
    ignored=(
        r"gpt_neox\.layers\.\d+\.attention\.(bias|masked_bias|rotary_emb\.inv_freq)",
        r"gpt_neox\.rotary_emb\.inv_freq",
    ),
    tied=("embed_out.weight",),
    prefix="gpt_neox.",
)

__all__ = ["ADAPTER", "TARGET", "config_from_hf", "config_to_hf", "rules"]
