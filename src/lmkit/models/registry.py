"""The registry of model families: one typed entry per ``model.family`` with its class and facts.

What this module owns: :class:`FamilySpec` and ``SPECS`` (family name -> spec), read by
:func:`lmkit.models.build_model` and by every layer that once asked ``family == "..."``. A family's
entry holds what code branches on:

- ``model_class`` (built by ``build_model``) and ``offers``, the capability protocol of
  :mod:`lmkit.models.protocols` its class satisfies (:class:`~lmkit.models.protocols.CausalLM`,
  :class:`~lmkit.models.protocols.MaskedLM` or :class:`~lmkit.models.protocols.Seq2SeqLM`);
- how it decodes (``decodes``: ``none``, ``causal`` continuation of the input in the same window,
  or ``seq2seq``: a new output from a decoder start token, in its own ``max_target_len`` window),
  and from it ``generates``;
- its forward's inputs (``inputs``; ``decoder_input_ids`` only for a seq2seq family);
- its objectives (``objectives``, the first the default: ``lmkit.config.OBJECTIVES``, their home);
- the ``lmkit finetune-head`` tasks it fine-tunes on (``finetune_tasks``);
- its planning terms (``plan``: :data:`lmkit.plan.compute.PLAN_TERMS`' entry, their one home, as
  plan/ is pure and cannot import this module): the attention shape (``attention``), the tokens
  its loss predicts per sequence (``plan.predicted_tokens(cfg, seq_len)``), its parameter count,
  FLOPs and memory terms;
- its Hugging Face adapters (``adapters``: derived from :data:`lmkit.models.hf.ADAPTERS`, their one
  list), Auto class and hub pipeline tag.

The words a user reads about each family stay in :mod:`lmkit.families` (``lmkit families``); the
two are linked by name (``row``), and ``tests/test_registry.py`` checks every family has both.
Adding a family is one entry here, its class, its row there, its objectives in
``lmkit.config.OBJECTIVES``, its planning terms in ``lmkit.plan.compute.PLAN_TERMS`` and its name in
``lmkit.config.Family`` (docs/layout.md lists the rest).

Invariants: ``SPECS`` has exactly the names of ``lmkit.config.Family`` (and of ``PLAN_TERMS``); a
spec's ``plan`` is its own family's; a spec's ``offers`` is
satisfied by its ``model_class`` and by no other family's; ``inputs`` are the first parameters of
the class's ``forward``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from lmkit.config import OBJECTIVES, Family, ModelConfig
from lmkit.errors import LmkitError
from lmkit.families import PIPELINE_TAG
from lmkit.families import Family as FamilyRow
from lmkit.families import family as family_row
from lmkit.models.decoder import Decoder
from lmkit.models.encdec import EncoderDecoder
from lmkit.models.encoder import Encoder
from lmkit.models.hf import ADAPTERS, AUTO_CLASS
from lmkit.models.hf_adapters.base import HFAdapter
from lmkit.models.protocols import CausalLM, MaskedLM, Seq2SeqLM
from lmkit.plan.compute import PLAN_TERMS, Attention, PlanTerms

Decodes = Literal["none", "causal", "seq2seq"]


@dataclass(frozen=True)
class FamilySpec:
    """One model family: its class and every fact code branches on."""

    name: Family
    model_class: type[Decoder] | type[Encoder] | type[EncoderDecoder]
    offers: type[CausalLM] | type[MaskedLM] | type[Seq2SeqLM]
    decodes: Decodes
    inputs: tuple[str, ...]  # forward's leading parameters, in order
    finetune_tasks: tuple[str, ...]  # lmkit finetune-head --task values this family takes
    plan: PlanTerms  # its planning maths (lmkit.plan.compute.PLAN_TERMS)

    @property
    def generates(self) -> bool:
        """Whether ``lmkit generate`` (and serve's completions) write text with it."""
        return self.decodes != "none"

    @property
    def attention(self) -> Attention:
        """Who attends to whom: bidirectional, causal, or an encoder's inputs and a decoder's outputs."""
        return self.plan.attention

    @property
    def objectives(self) -> tuple[str, ...]:
        """The pre-training objectives this family trains with (``model.objective``)."""
        return OBJECTIVES[self.name]

    @property
    def default_objective(self) -> str:
        """What ``model.objective: auto`` settles to."""
        return self.objectives[0]

    @property
    def adapters(self) -> tuple[HFAdapter, ...]:
        """The Hugging Face classes of this family lmkit imports and exports, in export's order."""
        return tuple(a for a in ADAPTERS if a.target.family == self.name)

    @property
    def auto_class(self) -> str:
        """The transformers Auto class that loads this family's export."""
        return AUTO_CLASS[self.name]

    @property
    def pipeline_tag(self) -> str:
        """What model hubs call this family's task."""
        return PIPELINE_TAG[self.name]

    @property
    def row(self) -> FamilyRow:
        """The family's words (``lmkit families``)."""
        return family_row(self.name)

    def build(self, cfg: ModelConfig) -> Decoder | Encoder | EncoderDecoder:
        """A freshly initialised model of this family (``cfg.family`` must be this one)."""
        if cfg.family != self.name:
            raise LmkitError(f"model.family is {cfg.family!r}, not {self.name!r}")
        return self.model_class(cfg)


SPECS: dict[str, FamilySpec] = {
    s.name: s
    for s in (
        FamilySpec(
            name="encoder",
            model_class=Encoder,
            offers=MaskedLM,
            decodes="none",
            inputs=("input_ids", "attention_mask", "token_type_ids"),
            finetune_tasks=("sequence-classification", "token-classification"),
            plan=PLAN_TERMS["encoder"],
        ),
        FamilySpec(
            name="decoder",
            model_class=Decoder,
            offers=CausalLM,
            decodes="causal",
            inputs=("input_ids",),
            finetune_tasks=(),
            plan=PLAN_TERMS["decoder"],
        ),
        FamilySpec(
            name="encdec",
            model_class=EncoderDecoder,
            offers=Seq2SeqLM,
            decodes="seq2seq",
            inputs=("input_ids", "decoder_input_ids", "attention_mask"),
            finetune_tasks=("seq2seq",),
            plan=PLAN_TERMS["encdec"],
        ),
    )
}


if TYPE_CHECKING:  # mypy proves each class satisfies its spec's protocol (a missing or mistyped method fails)

    def _offers(d: Decoder, e: Encoder, ed: EncoderDecoder) -> tuple[CausalLM, MaskedLM, Seq2SeqLM]:
        return d, e, ed


def spec_of(family: str) -> FamilySpec:
    """The spec of ``model.family`` ``family``, or one line naming the families there are."""
    spec = SPECS.get(family)
    if spec is None:
        raise LmkitError(f"model.family must be one of {'|'.join(SPECS)}, got {family!r}")
    return spec


__all__ = ["SPECS", "Decodes", "FamilySpec", "spec_of"]
