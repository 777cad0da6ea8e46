"""An encoder (masked language model) answering a multiple-choice task by fill-mask scoring of the
choices, behind the questions ``lmkit icl``'s run asks a model (:class:`lmkit.lab.icl.run.LM`).

What this module owns: :class:`MaskedChoiceLM`. Its ``loglikelihood`` of a continuation after a
context is the pseudo-log-likelihood of Salazar et al. 2020: the text ``context + continuation`` is
tokenised once and split where the bytes of the context end (as :class:`lmkit.lab.icl.models.LocalLM`
splits it); then each continuation token in turn is replaced by the mask token and scored by the
encoder, reading both sides, as in pre-training (and in :func:`lmkit.infer.fillmask.fill_mask`);
the sum of those log-probabilities is the choice's score. An encoder writes no free-form answer:
``generate`` raises, and ``lmkit compare`` marks such a task "needs finetune-head".
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import accumulate
from typing import Any, cast

import torch

from lmkit.errors import LmkitError
from lmkit.lab.icl.score import split_at_boundary
from lmkit.models.protocols import MaskedLM


class MaskedChoiceLM:
    """An encoder checkpoint held in this process, scoring choices by masking them token by token."""

    family = "encoder"

    def __init__(self, model: Any, tokenizer: Any, batch_size: int = 8, name: str = "checkpoint") -> None:
        if not isinstance(model, MaskedLM):
            raise LmkitError("fill-mask scoring needs an encoder (masked LM) checkpoint")
        if tokenizer.mask_id < 0:
            raise LmkitError(f"{tokenizer.source}: the tokenizer has no mask token, which fill-mask scoring needs")
        self.model: Any = cast(Any, model).eval()
        self.tokenizer = tokenizer
        self.window: int = model.cfg.max_seq_len
        self.batch_size = max(1, batch_size)
        self.name = name

    def count(self, text: str) -> int | None:
        return len(self.tokenizer.wrap(self.tokenizer.encode(text)))

    def loglikelihood(self, requests: Sequence[tuple[str, str]]) -> list[tuple[float, int]]:
        tok = self.tokenizer
        before = len(tok.template[0])  # the tokens the tokenizer puts first ([CLS], <s>, lmkit's EOS)
        device = self.model.output_weight.device
        out: list[tuple[float, int]] = []
        with torch.inference_mode():
            for context, cont in requests:
                ids, pieces = tok.encode_with_bytes(context + cont)
                n_ctx = split_at_boundary(list(accumulate(len(p) for p in pieces)), len(context.encode("utf-8")))
                full = tok.wrap(ids)
                if len(full) > self.window:
                    raise LmkitError(
                        f"a prompt and its answer are {len(full)} tokens, over the encoder's window of {self.window}"
                    )
                positions = list(range(before + n_ctx, before + len(ids)))
                total = 0.0
                for s in range(0, len(positions), self.batch_size):
                    chunk = positions[s : s + self.batch_size]
                    rows = torch.tensor([full] * len(chunk), dtype=torch.long, device=device)
                    at = torch.tensor(chunk, device=device)
                    rows[torch.arange(len(chunk)), at] = tok.mask_id
                    h = self.model.hidden_states(rows)[torch.arange(len(chunk)), at]  # (M, C)
                    logp = self.model.mlm_logits(h).float().log_softmax(-1)  # (M, V)
                    want = torch.tensor([full[p] for p in chunk], device=device)
                    for v in logp.gather(1, want[:, None])[:, 0].tolist():  # summed in order, in float64
                        total += v
                out.append((total, len(positions)))
        return out

    def generate(self, prompts: Sequence[str], max_new_tokens: int, separator: str) -> list[str]:
        raise LmkitError("an encoder writes no free-form answer: fine-tune it (lmkit finetune-head)")


__all__ = ["MaskedChoiceLM"]
