"""The three transformer families and the one function that builds any of them.

``build_model(ModelConfig(family=...))`` returns an ``nn.Module`` with
``forward(input_ids) -> logits (B, T, vocab)`` (encoder-decoder: ``forward(input_ids,
decoder_input_ids)``) and ``loss(batch) -> scalar`` for its pre-training objective.

``LanguageModel`` is the type of any of them (``Decoder | Encoder | EncoderDecoder``): what every
family offers is what the three classes have in common (``cfg``, ``tok_emb``, ``lm_head``,
``output_weight``, ``loss(batch)``, ``layers_for_sharding()``, ``activation_checkpointing``), the
protocol :class:`lmkit.models.protocols.Model`; a path that needs a decode capability (``new_cache``,
``encode``...) asks for its protocol (``CausalLM``, ``Seq2SeqLM``, ``MaskedLM``). Which class and
capability each family has is :mod:`lmkit.models.registry`.
"""

from __future__ import annotations

from typing import TypeAlias

from torch import nn

from lmkit.config import ModelConfig
from lmkit.models.decoder import Decoder
from lmkit.models.encdec import EncoderDecoder
from lmkit.models.encoder import Encoder
from lmkit.models.registry import spec_of

LanguageModel: TypeAlias = Decoder | Encoder | EncoderDecoder


def build_model(cfg: ModelConfig) -> LanguageModel:
    """A freshly initialised model of the configured family."""
    cfg.validate()
    return spec_of(cfg.family).build(cfg)


def count_parameters(model: nn.Module) -> int:
    """Distinct parameters (a tied embedding counts once)."""
    return sum(p.numel() for p in model.parameters())


__all__ = ["LanguageModel", "build_model", "count_parameters", "ModelConfig"]
