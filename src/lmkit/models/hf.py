"""The registry of Hugging Face adapters: which transformers class a config.json or a ModelConfig is.

What this module owns (import, export, verify, the model card and the hub all read it):

- ``ADAPTERS``: one :class:`~lmkit.models.hf_adapters.base.HFAdapter` per transformers class
  (``lmkit.models.hf_adapters``), and :func:`adapter_for_hf`: the adapter of a config.json, from its
  ``architectures`` (else its ``model_type``), or one line saying which classes lmkit reads.
- How export picks the class, with no field recording it: the class is *derived* from the model's
  fields, each adapter saying whether the fields are its layout (``layout_problem``). The layouts
  are disjoint: rotary + RMSNorm + SwiGLU is Llama (no biases, or biases everywhere) or Qwen2
  (q/k/v biases); learned positions + LayerNorm + biases + plain GELU MLP is GPT-2; rotary +
  LayerNorm + plain MLP is GPT-NeoX; ALiBi with an embedding norm is BLOOM; encoders are BERT
  (learned, two token types), RoBERTa (learned, one token type) or RoFormer (rotary, theta 10000);
  encoder-decoders are T5 (RMSNorm) or BART (LayerNorm, post-norm, learned positions). So an imported SmolLM2
  exports as LlamaForCausalLM with its grouped-query attention, a GPT-2 as GPT2LMHeadModel, and a
  model lmkit trained itself as whichever class its layout is (Llama by default).
  :func:`adapter_of` / :func:`target_of` give it, :func:`export_blocker` says why there is none.
- The record an lmkit export carries (``lmkit_meta.json``, format ``EXPORT_FORMAT``): written by
  ``lmkit.ship.export_hf``, read back by ``lmkit.ship.import_hf``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lmkit.errors import LmkitError
from lmkit.models.hf_adapters import bart, bert, bloom, gpt2, gpt_neox, llama, qwen2, roberta, roformer, t5
from lmkit.models.hf_adapters.base import HFAdapter, HFTarget

if TYPE_CHECKING:
    from lmkit.config import ModelConfig

LMKIT_META_FILE = "lmkit_meta.json"
EXPORT_FORMAT = "lmkit-hf-export/1"

# In the order export tries them (the layouts are disjoint, so the order only sets which message comes first).
ADAPTERS: tuple[HFAdapter, ...] = (
    llama.ADAPTER,
    qwen2.ADAPTER,
    gpt2.ADAPTER,
    gpt_neox.ADAPTER,
    bloom.ADAPTER,
    bert.ADAPTER,
    roberta.ADAPTER,
    roformer.ADAPTER,
    t5.ADAPTER,
    bart.ADAPTER,
)
BY_ARCHITECTURE: dict[str, HFAdapter] = {n: a for a in ADAPTERS for n in (a.target.architecture, *a.aliases)}
BY_MODEL_TYPE: dict[str, HFAdapter] = {a.target.model_type: a for a in ADAPTERS}
# The Auto class of each family (every adapter of a family has the same one).
AUTO_CLASS: dict[str, str] = {a.target.family: a.target.auto_class for a in ADAPTERS}


def adapter_for_hf(hf: dict[str, Any], source: str) -> HFAdapter:
    """The adapter of transformers config ``hf`` (from ``source``): by ``architectures``, else ``model_type``."""
    archs = hf.get("architectures") or []
    if not isinstance(archs, list) or not all(isinstance(a, str) for a in archs):
        raise LmkitError(f"{source}: architectures must be a list of class names, got {archs!r}"[:300])
    supported = ", ".join(BY_ARCHITECTURE)
    adapter = next((BY_ARCHITECTURE[a] for a in archs if a in BY_ARCHITECTURE), None)
    if adapter is None:
        if archs:
            raise LmkitError(f"{source}: architecture {', '.join(archs)} is not supported (lmkit imports {supported})")
        adapter = BY_MODEL_TYPE.get(str(hf.get("model_type")))
        if adapter is None:
            raise LmkitError(
                f"{source}: model_type {hf.get('model_type')!r} is not supported (lmkit imports {supported})"
            )
    mt = adapter.target.model_type
    if hf.get("model_type", mt) != mt:
        raise LmkitError(f"{source}: model_type {hf.get('model_type')!r} does not match {adapter.target.architecture}")
    return adapter


def adapter_of(cfg: ModelConfig) -> HFAdapter | None:
    """The adapter whose layout ``cfg`` is (the class export writes), or None."""
    return next((a for a in ADAPTERS if a.layout_problem(cfg) is None), None)


def export_blocker(cfg: ModelConfig) -> str | None:
    """Why ``cfg`` has no transformers class, or None when :func:`target_of` maps it."""
    if adapter_of(cfg) is not None:
        return None
    if cfg.family == "encoder":
        from lmkit.models.encoder import hf_architecture

        try:
            hf_architecture(cfg)
        except ValueError as e:
            return str(e)
    reasons = [p for a in ADAPTERS if a.target.family == cfg.family and (p := a.layout_problem(cfg))]
    return f"no transformers class has this {cfg.family}'s layout: " + "; ".join(reasons)


def adapter_or_error(cfg: ModelConfig, where: str = "") -> HFAdapter:
    """:func:`adapter_of`, or one line saying why no class fits (``where`` names the checkpoint)."""
    adapter = adapter_of(cfg)
    if adapter is None:
        raise LmkitError(f"{where + ': ' if where else ''}{export_blocker(cfg)}")
    return adapter


def target_of(cfg: ModelConfig, where: str = "") -> HFTarget:
    """The transformers class of ``cfg``, or a clear error."""
    return adapter_or_error(cfg, where).target


def hf_architecture(cfg: ModelConfig) -> str | None:
    """The transformers class ``lmkit export`` maps this model onto, or None when there is none."""
    adapter = adapter_of(cfg)
    return None if adapter is None else adapter.target.architecture


__all__ = [
    "ADAPTERS",
    "AUTO_CLASS",
    "BY_ARCHITECTURE",
    "BY_MODEL_TYPE",
    "EXPORT_FORMAT",
    "LMKIT_META_FILE",
    "adapter_for_hf",
    "adapter_of",
    "adapter_or_error",
    "export_blocker",
    "hf_architecture",
    "target_of",
]
