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
  the uninterrupted run would have, with the same loss up to summation order (below).
* ``per-rank`` (checkpoints of an lmkit before the global order, whose meta.json records no
  ``data_order``): micro-batch ``i`` of process ``r`` at step ``s`` is ``micro_batch`` windows drawn
  from ``(seed, r, s*a + i)``; it depends on the number of processes, so such a run resumes only on
  its own world size and micro-batch (``lmkit.train.resume.check_batch_layout``).

The loss of a step, whatever the order, is the sum of the cross-entropies of the global batch's
scored tokens divided by their count (:func:`token_divisors`: each micro-batch's mean is weighted by
its share of the step's scored tokens, the count summed over accumulation and processes by one
all-reduce). So a masked-LM step, whose micro-batches score as many tokens as their windows happen
to mask, has the same loss and gradient however the global batch is split, up to summation order;
where every window scores the same number (causal LM, span corruption, infilling) the divisor is
the accumulation count, as a plain mean of micro-batch means would have it.

Dropout: in the global order, the global RNG is seeded right before each micro-batch's forward from
(seed, step, position of its first window) (:meth:`BatchOrder.seed_dropout`), so with the
micro-batch size held (``train.micro_batch_size``) a micro-batch draws the same dropout masks on
any number of processes. Another micro-batch size regroups the windows, and a dropout mask is drawn
for a micro-batch's whole tensor at once, so its masks are then other draws of the same rate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
import torch.distributed as dist

from lmkit.objectives import IGNORE_INDEX, make_batch
from lmkit.train.steps import batch_generator

if TYPE_CHECKING:
    from lmkit.data.shards import TokenShards

DataOrder = Literal["global", "per-rank"]
NEW_RUN_ORDER: DataOrder = "global"
_MASK_STREAM = 0x6D61736B  # keeps a window's mask generator apart from its window draw
_DROPOUT_STREAM = 0x64726F70  # keeps a micro-batch's dropout seed apart from the masks


def recorded_order(meta: dict[str, Any]) -> DataOrder:
    """The data order of the run a checkpoint's ``meta`` belongs to (``per-rank`` when unrecorded)."""
    return "global" if meta.get("data_order") == "global" else "per-rank"


def _stream_seed(seed: int, step: int, position: int, stream: int) -> int:
    state = np.random.SeedSequence([seed & (2**64 - 1), step, position, stream]).generate_state(1, np.uint64)
    return int(state[0]) % (2**63)


def token_divisors(counts: list[int], total: int, world: int) -> list[float]:
    """What each micro-batch's mean loss is divided by so that the step's loss is the mean over the
    global batch's ``total`` scored tokens: micro-batch ``i`` scores ``counts[i]`` of them, and the
    gradients are averaged over ``world`` processes (DDP, FSDP). ``total / (count * world)``: the
    accumulation count exactly when every micro-batch scores as many tokens (causal LM windows);
    ``inf`` (a zero weight) for a micro-batch that scores none."""
    return [total / (n * world) if n else math.inf for n in counts]


def step_divisors(batches: list[dict[str, torch.Tensor]], world: int, device: torch.device) -> list[float]:
    """:func:`token_divisors` of one process's micro-batches of a step, the count of the step's
    scored tokens summed over the ``world`` processes (one all-reduce of one integer)."""
    counts = torch.stack([(b["labels"] != IGNORE_INDEX).sum() for b in batches]).to(device)  # (accum,)
    total = counts.sum()
    if world > 1:
        dist.all_reduce(total)
    return token_divisors([int(n) for n in counts.tolist()], int(total), world)


def window_generator(seed: int, step: int, window: int) -> torch.Generator:
    """The generator of window ``window``'s random masks at ``step``: a function of those alone."""
    return torch.Generator().manual_seed(_stream_seed(seed, step, window, _MASK_STREAM))


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

    def seed_dropout(self, step: int, micro: int) -> None:
        """Seed the global RNG (dropout's) for micro-batch ``micro`` of ``step`` from (seed, step, its
        first window's position) in the global order; the per-rank order keeps one running stream."""
        if self.kind == "global":
            torch.manual_seed(_stream_seed(self.seed, step, self.first_window(micro), _DROPOUT_STREAM))


__all__ = [
    "NEW_RUN_ORDER",
    "BatchOrder",
    "DataOrder",
    "recorded_order",
    "step_divisors",
    "token_divisors",
    "window_generator",
]
