"""The three transformer families and the one function that builds any of them.

``build_model(ModelConfig(family=...))`` returns an ``nn.Module`` with
``forward(input_ids) -> logits (B, T, vocab)`` (encoder-decoder: ``forward(input_ids,
decoder_input_ids)``) and ``loss(batch) -> scalar`` for its pre-training objective.

``LanguageModel`` is the type of any of them (``Decoder | Encoder | EncoderDecoder``): what every
family offers is what the three classes have in common (``cfg``, ``tok_emb``, ``lm_head``,
``output_weight``, ``loss(batch)``, ``layers_for_sharding()``, ``activation_checkpointing``); a
path that needs one family's own methods (``new_cache``, ``encode``...) takes that class.
"""

from __future__ import annotations

from typing import TypeAlias

from torch import nn

from lmkit.config import ModelConfig
from lmkit.models.decoder import Decoder
from lmkit.models.encdec import EncoderDecoder
from lmkit.models.encoder import Encoder

LanguageModel: TypeAlias = Decoder | Encoder | EncoderDecoder


def build_model(cfg: ModelConfig) -> LanguageModel:
    """A freshly initialised model of the configured family."""
    cfg.validate()
    if cfg.family == "decoder":
        return Decoder(cfg)
    if cfg.family == "encoder":
        return Encoder(cfg)
    return EncoderDecoder(cfg)


def count_parameters(model: nn.Module) -> int:
    """Distinct parameters (a tied embedding counts once)."""
    return sum(p.numel() for p in model.parameters())


__all__ = ["LanguageModel", "build_model", "count_parameters", "ModelConfig"]
