"""What a model offers, as types: the protocol every family satisfies and one per decode capability.

What this module owns:

- :class:`Model`: what every lmkit model offers whatever its family (``cfg``, ``tok_emb``,
  ``lm_head``, ``output_weight``, ``loss(batch)``, ``layers_for_sharding()``,
  ``activation_checkpointing``, ``reset_parameters()``). Training, checkpointing, quantisation and
  sharding need no more than this.
- The capabilities, each a :class:`Model` with more: :class:`CausalLM` (continues its input from a
  key/value cache: ``hidden_states(input_ids, cache)``, ``new_cache``), :class:`Seq2SeqLM` (reads an
  input with ``encode``, writes an output with ``decode`` from a decoder start, ``cross_kv``,
  ``logits``, ``new_cache``) and :class:`MaskedLM` (``hidden_states(input_ids, attention_mask,
  token_type_ids)``, ``mlm_logits``). Code that needs a capability asks for it by type
  (``isinstance(model, Seq2SeqLM)``, a parameter typed ``CausalLM``), not by family name;
  :attr:`lmkit.models.registry.FamilySpec.offers` says which one each family's class satisfies.

Invariant: the capability protocols are disjoint on lmkit's classes (each names a method only its
own family's class has: ``new_cache`` with ``hidden_states``, ``encode``, ``mlm_logits``), so a
runtime ``isinstance`` check picks exactly one family; ``tests/test_registry.py`` checks it, and
that mypy accepts each class as its protocol.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from torch import nn

from lmkit.config import ModelConfig
from lmkit.models.layers import KVCache


@runtime_checkable
class Model(Protocol):
    """What every lmkit model offers, whatever its family."""

    cfg: ModelConfig
    tok_emb: nn.Embedding
    lm_head: nn.Linear | None  # None: the output matrix is tok_emb's (tied)
    activation_checkpointing: bool

    @property
    def output_weight(self) -> torch.Tensor:
        """The (vocab, d_model) matrix that turns final states into logits."""
        ...

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The pre-training objective's scalar loss on ``batch`` (the family's collated keys)."""
        ...

    def layers_for_sharding(self) -> list[nn.Module]:
        """The blocks FSDP wraps one by one."""
        ...

    def reset_parameters(self) -> None:
        """The family's initialisation, in place."""
        ...


@runtime_checkable
class CausalLM(Model, Protocol):
    """A model that continues its input: next-token states over a key/value cache."""

    def hidden_states(self, input_ids: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """Final states (B, T, C) of token ids (B, T), appending to ``cache``."""
        ...

    def new_cache(self, batch: int, max_len: int | None = None) -> KVCache:
        """An empty key/value cache for ``batch`` rows (default length: the context window)."""
        ...


@runtime_checkable
class Seq2SeqLM(Model, Protocol):
    """A model that reads an input and writes a new output from a decoder start token."""

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Encoder states (B, S, C) of input ids (B, S)."""
        ...

    def cross_kv(self, enc: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Each decoder layer's cross-attention keys and values of encoder states."""
        ...

    def decode(
        self,
        decoder_input_ids: torch.Tensor,
        enc: torch.Tensor | None,
        attention_mask: torch.Tensor | None = None,
        cache: KVCache | None = None,
        cross_kv: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
    ) -> torch.Tensor:
        """Final decoder states (B, T, C) of decoder ids (B, T) attending to the input."""
        ...

    def logits(self, dec: torch.Tensor) -> torch.Tensor:
        """Vocabulary logits of decoder states."""
        ...

    def new_cache(self, batch: int, max_len: int | None = None) -> KVCache:
        """An empty self-attention cache for the decoder (default length: max_target_len)."""
        ...


@runtime_checkable
class MaskedLM(Model, Protocol):
    """A model that reads its whole input at once and predicts the tokens at masked positions."""

    def hidden_states(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Contextual states (B, T, C) of token ids (B, T)."""
        ...

    def mlm_logits(self, h: torch.Tensor) -> torch.Tensor:
        """Vocabulary logits of states ``h`` through the MLM head."""
        ...


__all__ = ["CausalLM", "MaskedLM", "Model", "Seq2SeqLM"]
