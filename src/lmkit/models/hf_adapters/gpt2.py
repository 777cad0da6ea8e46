"""``GPT2LMHeadModel`` (GPT-2 and its kin): the adapter.

Layout: learned positions, LayerNorm with bias, biases on every linear layer, a two-matrix MLP with
tanh-GELU (``activation_function`` ``gelu_new``/``gelu_pytorch_tanh``; exact ``gelu`` also maps),
pre-norm residual, tied head. Storage: ``Conv1D`` layers keep their weights (in, out), so every matrix
is transposed, and ``c_attn`` is q, k, v fused along its output columns. The causal-mask buffers
``attn.bias`` / ``attn.masked_bias`` of older files hold no weights. Files saved from ``GPT2Model``
(the original ``gpt2`` upload) lack the ``transformer.`` prefix; import adds it (``HFAdapter.prefix``).
Refused: ``scale_attn_weights: false``, ``scale_attn_by_inverse_layer_idx: true``, cross-attention,
other activations.
"""

from __future__ import annotations

from typing import Any

from lmkit.config import ModelConfig
from lmkit.families import PIPELINE_TAG
from lmkit.models.hf_adapters.base import (
    HFAdapter,
    HFConfigReader,
    HFTarget,
    Rule,
    RuleKind,
    layout_mismatch,
    same,
    validated,
)

TARGET = HFTarget("decoder", "GPT2LMHeadModel", "gpt2", "AutoModelForCausalLM", PIPELINE_TAG["decoder"])
ACTIVATION = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu"}
WANTS: dict[str, tuple[Any, ...]] = {
    "pos_encoding": ("learned",),
    "norm": ("layer",),
    "bias": ("all",),
    "mlp": ("plain",),
    "activation": ("gelu_tanh", "gelu"),
    "residual": ("pre",),
    "n_kv_heads": (None,),
    "head_size": (None,),
    "embed_norm": (False,),
}


def config_from_hf(
    hf: dict[str, Any], source: str, max_seq_len: int | None = None, tokenizer_max_len: int | None = None
) -> ModelConfig:
    r = HFConfigReader(hf, source)
    r.no_extras()
    act = r.equals("activation_function", tuple(ACTIVATION), "gelu_new", "lmkit computes gelu_new (tanh) and gelu")
    r.equals("scale_attn_weights", (True,), True, "lmkit scales attention scores by 1/sqrt(head size)")
    r.equals("scale_attn_by_inverse_layer_idx", (False,), False, "lmkit scales every layer alike")
    r.equals("add_cross_attention", (False,), False, "a GPT-2 with cross-attention is not a plain decoder")
    d = r.int("n_embd")
    n_pos = r.int("n_positions", 1024)
    r.need(
        max_seq_len is None or max_seq_len <= n_pos,
        f"--max-seq-len {max_seq_len} exceeds the {n_pos} learned positions",
    )
    cfg = ModelConfig(
        family="decoder",
        vocab_size=r.int("vocab_size"),
        d_model=d,
        n_layers=r.int("n_layer"),
        n_heads=r.int("n_head"),
        d_ff=r.int("n_inner", 4 * d),
        max_seq_len=max_seq_len or n_pos,
        pos_encoding="learned",
        norm_eps=r.float("layer_norm_epsilon", 1e-5),
        dropout=0.0,
        tie_embeddings=bool(hf.get("tie_word_embeddings", True)),
        norm="layer",
        bias="all",
        mlp="plain",
        activation=ACTIVATION[act],  # type: ignore[arg-type]
    )
    return validated(cfg, source)


def config_to_hf(cfg: ModelConfig) -> dict[str, Any]:
    """The ``GPT2Config`` fields that describe this decoder exactly."""
    return {
        "architectures": [TARGET.architecture],
        "model_type": TARGET.model_type,
        "vocab_size": cfg.vocab_size,
        "n_positions": cfg.max_seq_len,
        "n_embd": cfg.d_model,
        "n_layer": cfg.n_layers,
        "n_head": cfg.n_heads,
        "n_inner": cfg.ffn_width,
        "activation_function": "gelu_new" if cfg.activation == "gelu_tanh" else "gelu",
        "layer_norm_epsilon": cfg.norm_eps,
        "resid_pdrop": 0.0,
        "embd_pdrop": 0.0,
        "attn_pdrop": 0.0,
        "scale_attn_weights": True,
        "tie_word_embeddings": cfg.tie_embeddings,
    }


def rules(cfg: ModelConfig) -> list[Rule]:
    """lmkit name -> GPT-2 name: Conv1D matrices transposed, q/k/v fused into ``c_attn``."""
    t = "transformer."
    out = [same("tok_emb.weight", t + "wte.weight"), same("pos_emb.weight", t + "wpe.weight")]
    for i in range(cfg.n_layers):
        ours, theirs = f"blocks.{i}.", f"{t}h.{i}."
        qkv = tuple(f"{ours}attn.{p}_proj" for p in "qkv")
        out += [
            Rule(tuple(f"{n}.weight" for n in qkv), theirs + "attn.c_attn.weight", "fused_transposed"),
            Rule(tuple(f"{n}.bias" for n in qkv), theirs + "attn.c_attn.bias", "fused"),
        ]
        for w in ("weight", "bias"):
            kind: RuleKind = "transposed" if w == "weight" else "same"
            out += [
                same(f"{ours}attn_norm.{w}", f"{theirs}ln_1.{w}"),
                same(f"{ours}mlp_norm.{w}", f"{theirs}ln_2.{w}"),
                Rule((f"{ours}attn.o_proj.{w}",), f"{theirs}attn.c_proj.{w}", kind),
                Rule((f"{ours}mlp.up_proj.{w}",), f"{theirs}mlp.c_fc.{w}", kind),
                Rule((f"{ours}mlp.down_proj.{w}",), f"{theirs}mlp.c_proj.{w}", kind),
            ]
    out += [same("norm.weight", t + "ln_f.weight"), same("norm.bias", t + "ln_f.bias")]
    if not cfg.tie_embeddings:
        out.append(same("lm_head.weight", "lm_head.weight"))
    return out


ADAPTER = HFAdapter(
    target=TARGET,
    layout_problem=lambda cfg: layout_mismatch(cfg, TARGET, WANTS),
    config_from_hf=config_from_hf,
    config_to_hf=config_to_hf,
    rules=rules,
    embedding="transformer.wte.weight",
    ignored=(r"transformer\.h\.\d+\.attn\.(bias|masked_bias)",),
    tied=("lm_head.weight",),
    prefix="transformer.",
)

__all__ = ["ADAPTER", "TARGET", "config_from_hf", "config_to_hf", "rules"]
