"""``LlamaForCausalLM`` (SmolLM2, TinyLlama, Llama 3.2, and lmkit's own decoders): the adapter.

Layout: RMSNorm, SwiGLU MLP, rotary positions on whole heads in the "rotate half" layout (lmkit's
own), grouped-query attention (``num_key_value_heads``), heads of ``head_dim`` (may differ from
hidden_size / heads), no biases or biases everywhere (``attention_bias`` and ``mlp_bias`` both true),
rope scaling linear or llama3, tied or untied head. Names map one to one, nothing is fused or
transposed. A ``sliding_window`` key is read by no Llama layer in transformers, so it is accepted
and ignored; ``rope_interleaved: true``, ``pretraining_tp`` other than 1, an attention bias without
the MLP bias, mixture of experts and q/k norms are refused.

:func:`llama_like_config` and :func:`llama_like_rules` serve Qwen2 too (``lmkit.models.hf_adapters.qwen2``).
"""

from __future__ import annotations

from typing import Any

from lmkit.config import ModelConfig
from lmkit.families import PIPELINE_TAG
from lmkit.models.hf_adapters.base import HFAdapter, HFConfigReader, HFTarget, Rule, same, validated
from lmkit.models.hf_adapters.rope import read_rope, write_rope

TARGET = HFTarget("decoder", "LlamaForCausalLM", "llama", "AutoModelForCausalLM", PIPELINE_TAG["decoder"])


def llama_like_layout(cfg: ModelConfig, target: HFTarget, biases: tuple[str, ...]) -> str | None:
    """Why ``cfg`` is not the Llama-like layout of ``target`` with biases in ``biases``, or None."""
    if cfg.family != target.family:
        return f"{target.architecture} is a decoder"
    if cfg.pos_encoding != "rotary":
        return f"a decoder with {cfg.pos_encoding} positions has no {target.architecture} equivalent (rotary only)"
    wants = {"norm": "rms", "mlp": "gated", "activation": "silu", "residual": "pre", "embed_norm": False}
    for key, value in wants.items():
        if getattr(cfg, key) != value:
            return f"{target.architecture} needs model.{key} {value}, got {getattr(cfg, key)!r}"
    if cfg.rotary_fraction != 1:
        return f"{target.architecture} rotates whole heads, got model.rotary_fraction {cfg.rotary_fraction}"
    if cfg.bias not in biases:
        return f"{target.architecture} needs model.bias {'|'.join(biases)}, got {cfg.bias!r}"
    return None


def llama_like_config(
    hf: dict[str, Any], source: str, max_seq_len: int | None, arch: str, default_max_len: int
) -> tuple[ModelConfig, HFConfigReader]:
    """The ModelConfig of a Llama-like config.json (no biases; the caller sets them), and its reader."""
    r = HFConfigReader(hf, source)
    r.no_extras()
    d, heads = r.int("hidden_size"), r.int("num_attention_heads")
    kv = r.int("num_key_value_heads", heads)
    hd = hf.get("head_dim")
    if hd is None:
        r.need(d % heads == 0, f"hidden_size {d} is not divisible by num_attention_heads {heads}")
        hd = d // heads
    hd = r.int("head_dim", hd)
    r.equals("hidden_act", ("silu",), "silu", f"{arch}'s MLP is SwiGLU (silu) in lmkit")
    r.equals("pretraining_tp", (1, None), 1, "only 1 (unsliced projections) is supported")
    r.equals("rope_interleaved", (False, None), False, "lmkit rotates halves of each head, not interleaved pairs")
    theta, fraction, scaling = read_rope(r)
    r.need(fraction == 1, f"partial_rotary_factor {fraction}: {arch} rotates whole heads")
    cfg = ModelConfig(
        family="decoder",
        vocab_size=r.int("vocab_size"),
        d_model=d,
        n_layers=r.int("num_hidden_layers"),
        n_heads=heads,
        d_ff=r.int("intermediate_size"),
        max_seq_len=max_seq_len or r.int("max_position_embeddings", default_max_len),
        pos_encoding="rotary",
        rope_theta=theta,
        norm_eps=r.float("rms_norm_eps", 1e-6),
        dropout=0.0,
        tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
        n_kv_heads=None if kv == heads else kv,
        head_size=None if d % heads == 0 and hd == d // heads else hd,
        rope_scaling=scaling,
    )
    return cfg, r


def config_from_hf(
    hf: dict[str, Any], source: str, max_seq_len: int | None = None, tokenizer_max_len: int | None = None
) -> ModelConfig:
    cfg, r = llama_like_config(hf, source, max_seq_len, "LlamaForCausalLM", 2048)
    attn, mlp = bool(hf.get("attention_bias", False)), bool(hf.get("mlp_bias", False))
    r.need(
        attn == mlp,
        f"attention_bias {attn} with mlp_bias {mlp}: lmkit's biases are on every linear layer or none "
        "(q/k/v only is Qwen2's layout)",
    )
    cfg.bias = "all" if attn else "none"
    return validated(cfg, source)


def llama_like_hf_config(cfg: ModelConfig, target: HFTarget) -> dict[str, Any]:
    """The config.json fields a Llama-like class shares (the caller adds its own)."""
    return {
        "architectures": [target.architecture],
        "model_type": target.model_type,
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.d_model,
        "intermediate_size": cfg.ffn_width,
        "num_hidden_layers": cfg.n_layers,
        "num_attention_heads": cfg.n_heads,
        "num_key_value_heads": cfg.kv_heads,
        "head_dim": cfg.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": cfg.max_seq_len,
        "rms_norm_eps": cfg.norm_eps,
        **write_rope(cfg.rope_theta, cfg.rope_scaling),
        "tie_word_embeddings": cfg.tie_embeddings,
    }


def config_to_hf(cfg: ModelConfig) -> dict[str, Any]:
    """The ``LlamaConfig`` fields that describe this decoder exactly."""
    biased = cfg.bias == "all"
    return {**llama_like_hf_config(cfg, TARGET), "attention_bias": biased, "mlp_bias": biased}


def llama_like_rules(cfg: ModelConfig) -> list[Rule]:
    """lmkit name -> Llama/Qwen2 name, one to one (biases where the config has them)."""
    rules = [same("tok_emb.weight", "model.embed_tokens.weight"), same("norm.weight", "model.norm.weight")]
    attn_bias = ("q_proj", "k_proj", "v_proj") + (("o_proj",) if cfg.bias == "all" else ())
    for i in range(cfg.n_layers):
        ours, theirs = f"blocks.{i}.", f"model.layers.{i}."
        rules.append(same(ours + "attn_norm.weight", theirs + "input_layernorm.weight"))
        rules.append(same(ours + "mlp_norm.weight", theirs + "post_attention_layernorm.weight"))
        for p in ("q_proj", "k_proj", "v_proj", "o_proj"):
            rules.append(same(f"{ours}attn.{p}.weight", f"{theirs}self_attn.{p}.weight"))
            if cfg.bias != "none" and p in attn_bias:
                rules.append(same(f"{ours}attn.{p}.bias", f"{theirs}self_attn.{p}.bias"))
        for p in ("gate_proj", "up_proj", "down_proj"):
            rules.append(same(f"{ours}mlp.{p}.weight", f"{theirs}mlp.{p}.weight"))
            if cfg.bias == "all":
                rules.append(same(f"{ours}mlp.{p}.bias", f"{theirs}mlp.{p}.bias"))
    if not cfg.tie_embeddings:
        rules.append(same("lm_head.weight", "lm_head.weight"))
    return rules


ADAPTER = HFAdapter(
    target=TARGET,
    layout_problem=lambda cfg: llama_like_layout(cfg, TARGET, ("none", "all")),
    config_from_hf=config_from_hf,
    config_to_hf=config_to_hf,
    rules=llama_like_rules,
    embedding="model.embed_tokens.weight",
    ignored=(r"model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq", r"model\.rotary_emb\.inv_freq"),
    tied=("lm_head.weight",),
)

__all__ = [
    "ADAPTER",
    "TARGET",
    "config_from_hf",
    "config_to_hf",
    "llama_like_config",
    "llama_like_hf_config",
    "llama_like_layout",
    "llama_like_rules",
]
