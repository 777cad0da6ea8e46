"""The three transformer families and the one function that builds any of them.

``build_model(ModelConfig(family=...))`` returns an ``nn.Module`` with
``forward(input_ids) -> logits (B, T, vocab)`` (encoder-decoder: ``forward(input_ids,
decoder_input_ids)``) and ``loss(batch) -> scalar`` for its pre-training objective.
"""

from __future__ import annotations

from torch import nn

from lmkit.config import ModelConfig


def build_model(cfg: ModelConfig) -> nn.Module:
    """A freshly initialised model of the configured family."""
    cfg.validate()
    if cfg.family == "decoder":
        from lmkit.models.decoder import Decoder

        return Decoder(cfg)
    if cfg.family == "encoder":
        from lmkit.models.encoder import Encoder

        return Encoder(cfg)
    from lmkit.models.encdec import EncoderDecoder

    return EncoderDecoder(cfg)


def count_parameters(model: nn.Module) -> int:
    """Distinct parameters (a tied embedding counts once)."""
    return sum(p.numel() for p in model.parameters())


__all__ = ["build_model", "count_parameters", "ModelConfig"]
