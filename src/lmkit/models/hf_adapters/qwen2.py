"""``Qwen2ForCausalLM`` (Qwen2.5-0.5B and up): the adapter.

Llama's layout (``lmkit.models.hf_adapters.llama``) with biases on the query, key and value
projections only (``model.bias: qkv``; the output projection and the MLP have none), usually more
embedding rows than the tokenizer has tokens (151,936 rows for 151,665 tokens: ``vocab_size`` is the
rows). Qwen2.5's configs carry ``sliding_window`` with ``use_sliding_window: false``, which
transformers ignores, and so does lmkit; an active sliding window (``use_sliding_window: true``, or a
``layer_types`` entry other than ``full_attention``) and ``use_mrope: true`` are refused.
"""

from __future__ import annotations

from typing import Any

from lmkit.config import ModelConfig
from lmkit.families import PIPELINE_TAG
from lmkit.models.hf_adapters.base import HFAdapter, HFTarget, validated
from lmkit.models.hf_adapters.llama import llama_like_config, llama_like_hf_config, llama_like_layout, llama_like_rules

TARGET = HFTarget("decoder", "Qwen2ForCausalLM", "qwen2", "AutoModelForCausalLM", PIPELINE_TAG["decoder"])


def config_from_hf(
    hf: dict[str, Any], source: str, max_seq_len: int | None = None, tokenizer_max_len: int | None = None
) -> ModelConfig:
    cfg, r = llama_like_config(hf, source, max_seq_len, "Qwen2ForCausalLM", 32768)
    r.equals("use_sliding_window", (False, None), False, "sliding-window attention has no lmkit equivalent")
    layer_types = hf.get("layer_types") or []
    r.need(isinstance(layer_types, list), f"layer_types must be a list, got {layer_types!r}")
    other = sorted({t for t in layer_types if t != "full_attention"}, key=str)
    r.need(not other, f"layer_types {other!r}: only full attention has an lmkit equivalent")
    r.equals("use_mrope", (False, None), False, "multimodal rotary positions have no lmkit equivalent")
    cfg.bias = "qkv"
    return validated(cfg, source)


def config_to_hf(cfg: ModelConfig) -> dict[str, Any]:
    """The ``Qwen2Config`` fields that describe this decoder exactly (full attention in every layer)."""
    return {
        **llama_like_hf_config(cfg, TARGET),
        "use_sliding_window": False,
        "sliding_window": None,
        "max_window_layers": cfg.n_layers,
        "layer_types": ["full_attention"] * cfg.n_layers,
    }


ADAPTER = HFAdapter(
    target=TARGET,
    layout_problem=lambda cfg: llama_like_layout(cfg, TARGET, ("qkv",)),
    config_from_hf=config_from_hf,
    config_to_hf=config_to_hf,
    rules=llama_like_rules,
    embedding="model.embed_tokens.weight",
    ignored=(r"model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq", r"model\.rotary_emb\.inv_freq"),
    tied=("lm_head.weight",),
)

__all__ = ["ADAPTER", "TARGET", "config_from_hf", "config_to_hf"]
