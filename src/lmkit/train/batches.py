"""Which training windows each process sees at each step: the run's data order.

A step trains on ``train.batch_size`` windows (the global batch), split over the processes and,
within a process, over gradient-accumulation micro-batches. The data order is what makes a run
exact to resume: the windows of a step, and the random masks an objective draws for them, are a
pure function of (seed, step, position) and the shard contents, never of hidden state.

Two orders exist; a run keeps the one it started with (its checkpoints' meta.json ``data_order``):

* ``global`` (every run this lmkit starts): the global batch of step ``s`` is windows
  ``0 .. batch_size-1``, window ``j`` drawn by ``TokenShards.batch`` from ``(seed, s, j)`` and its
  masks from a generator seeded by ``(seed, s, j)`` alone. Process ``r`` with micro-batch ``m`` and
  accumulation ``a`` takes, in micro-batch ``i``, windows ``(r*a + i)*m .. (r*a + i + 1)*m - 1``. So
  the same windows make up a step on 4 processes, on 2, or on 1 (micro-batch × accumulation ×
  processes held at ``batch_size``): a run resumes on another world size and trains on the batches
  the uninterrupted run would have (the loss of a step is then equal up to summation order where
  every window carries the same number of loss tokens, as causal LM windows do; a masked or
  span-corruption micro-batch's loss is the mean over its own masked tokens, so its weighting
  depends on how the batch is split).
* ``per-rank`` (checkpoints of an lmkit before the global order, whose meta.json records no
  ``data_order``): micro-batch ``i`` of process ``r`` at step ``s`` is ``micro_batch`` windows drawn
  from ``(seed, r, s*a + i)``; it depends on the number of processes, so such a run resumes only on
  its own world size and micro-batch (``lmkit.train.resume.check_batch_layout``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch

from lmkit.objectives import make_batch
from lmkit.train.steps import batch_generator

if TYPE_CHECKING:
    from lmkit.data.shards import TokenShards

DataOrder = Literal["global", "per-rank"]
NEW_RUN_ORDER: DataOrder = "global"
_MASK_STREAM = 0x6D61736B  # keeps a window's mask generator apart from its window draw


def recorded_order(meta: dict[str, Any]) -> DataOrder:
    """The data order of the run a checkpoint's ``meta`` belongs to (``per-rank`` when unrecorded)."""
    return "global" if meta.get("data_order") == "global" else "per-rank"


def window_generator(seed: int, step: int, window: int) -> torch.Generator:
    """The generator of window ``window``'s random masks at ``step``: a function of those alone."""
    state = np.random.SeedSequence([seed & (2**64 - 1), step, window, _MASK_STREAM]).generate_state(1, np.uint64)
    return torch.Generator().manual_seed(int(state[0]) % (2**63))


@dataclass
class BatchOrder:
    """The micro-batches of one process of a run: ``micro_batch(step, i)`` for ``i`` below ``accum``."""

    shards: TokenShards
    model_cfg: Any  # lmkit.config.ModelConfig
    specials: Any  # lmkit.objectives.SpecialIds
    seed: int
    window: int  # tokens per window (objectives.window_length)
    micro: int  # windows per micro-batch
    accum: int  # micro-batches per step
    rank: int
    kind: DataOrder

    def first_window(self, micro: int) -> int:
        """Position in the global batch of micro-batch ``micro``'s first window (global order)."""
        return (self.rank * self.accum + micro) * self.micro

    def micro_batch(self, step: int, micro: int) -> dict[str, torch.Tensor]:
        """The model batch (on the CPU) of micro-batch ``micro`` of ``step``."""
        if self.kind == "per-rank":
            windows = self.shards.batch(step * self.accum + micro, self.micro, self.window, self.seed, self.rank)
            return make_batch(
                self.model_cfg, windows, self.specials, batch_generator(self.seed, step, micro, self.rank)
            )
        first = self.first_window(micro)
        parts = [
            make_batch(
                self.model_cfg,
                self.shards.batch(step, 1, self.window, self.seed, j),  # (1, window): window j of step
                self.specials,
                window_generator(self.seed, step, j),
            )
            for j in range(first, first + self.micro)
        ]
        return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}  # (micro, ...)


__all__ = ["NEW_RUN_ORDER", "BatchOrder", "DataOrder", "recorded_order", "window_generator"]
