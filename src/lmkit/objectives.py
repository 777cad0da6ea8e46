"""Pre-training objectives as pure tensor functions: token windows in, model batch out.

- causal language modeling (decoder): predict token t+1 from tokens ≤ t.
- masked language modeling (encoder) and span corruption (encoder-decoder) live here too.

Every function is deterministic given its inputs and ``generator``, which is how a resumed run
sees exactly the batches the uninterrupted run would have seen. Imports nothing else from lmkit.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

IGNORE_INDEX = -100  # label value that scores no prediction


@dataclass(frozen=True)
class SpecialIds:
    """Token ids an objective needs (taken from the tokenizer)."""

    pad: int
    bos: int
    eos: int
    mask: int
    sentinels: tuple[int, ...] = field(default_factory=tuple)
    vocab_size: int = 0
    n_special: int = 0  # ids below this are special tokens (never masked, never random replacements)


def clm_window_length(seq_len: int) -> int:
    """Tokens per window for causal LM: the inputs plus one more for the last target."""
    return seq_len + 1


def clm_batch(windows: torch.Tensor) -> dict[str, torch.Tensor]:
    """Causal LM: windows (B, T+1) -> input_ids (B, T) and labels (B, T) shifted by one."""
    return {"input_ids": windows[:, :-1].contiguous(), "labels": windows[:, 1:].contiguous()}


def window_length(model_cfg) -> int:  # model_cfg: lmkit.config.ModelConfig (not imported: pure module)
    """Tokens to cut from the corpus for one training example of this model's objective."""
    objective = {"encoder": "mlm", "decoder": "clm", "encdec": "span"}[model_cfg.family]
    if objective == "clm":
        return clm_window_length(model_cfg.max_seq_len)
    raise NotImplementedError(f"objective {objective!r} is not implemented yet")


def make_batch(model_cfg, windows: torch.Tensor, specials: SpecialIds,
               generator: torch.Generator) -> dict[str, torch.Tensor]:
    """The model batch of this model's objective for windows (B, window_length)."""
    objective = {"encoder": "mlm", "decoder": "clm", "encdec": "span"}[model_cfg.family]
    if objective == "clm":
        return clm_batch(windows)
    raise NotImplementedError(f"objective {objective!r} is not implemented yet")
