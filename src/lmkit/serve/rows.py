"""The serving engine's running decoder rows: a pool of request slots stepped together.

What this module owns: :class:`DecoderRows`, the interface the engine (:mod:`lmkit.serve.batcher`)
decodes through, and its two implementations, picked by :func:`decoder_rows`:

* :class:`PackedRows`: a plain fp32 lmkit ``Decoder`` (every layout the packed step takes: Llama and
  Qwen2 with grouped-query attention and biases, GPT-2's learned positions, GPT-NeoX's partial
  rotary and parallel residual, BLOOM's ALiBi) through its
  :class:`~lmkit.infer.packed.PackedDecoder`: fused q/k/v, a fused key/value cache, one request
  alone costs what a step of ``lmkit generate`` costs; its cache grows with the longest running
  request (doubling), not allocated for the whole context window up front;
* :class:`ModuleRows`: any other decoder (quantized, 16-bit, ALiBi with grouped-query attention)
  through the model's own ``forward`` and a ragged :class:`~lmkit.models.layers.KVCache`.

Invariants, both kinds: a row is one request; running rows sit at the front of the pool (rows
0..n-1), each with its own length; a step feeds one token per row at that row's own position and
returns each row's next-token logits, equal to what the request gets alone (a row never reads
another row's positions, nor its own past its length). :meth:`~DecoderRows.prefill` reads prompts of
one length together; :meth:`~DecoderRows.add` copies one prefilled prompt into the next free slot;
:meth:`~DecoderRows.remove` frees slots, the last running row moving into each freed one, and
returns those moves so the caller can reorder what it keeps per row.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch

from lmkit.infer.packed import PackedDecoder, packed_decoder
from lmkit.models.decoder import Decoder
from lmkit.models.layers import KVCache


class DecoderRows(Protocol):
    """A pool of request slots over one decoder (see the module docstring)."""

    def prefill(self, ids: torch.Tensor, every: bool) -> tuple[torch.Tensor, Any]:
        """Prompts (B, T) of one length read at once: logits (B, T, V) after every prompt token with
        ``every``, else (B, 1, V) after the last; and the prefilled state :meth:`add` takes a row of."""
        ...

    def add(self, prefilled: Any, row: int) -> None:
        """Copy row ``row`` of a prefill's state into the next free slot."""
        ...

    def remove(self, rows: list[int]) -> list[tuple[int, int]]:
        """Free these slots; the moves (from, to) of the rows that filled them."""
        ...

    def step(self, ids: torch.Tensor) -> torch.Tensor:
        """One token per running row, ids (n, 1): the next-token logits (n, V)."""
        ...


def _compact(lengths: list[int], rows: list[int], move: Any) -> list[tuple[int, int]]:
    """Free ``rows`` of a pool whose running rows have ``lengths`` (updated in place): the last running
    row moves into each freed slot (``move(src, dst, n)`` copies its n positions). The moves made."""
    moves = []
    for r in sorted(rows, reverse=True):
        last = len(lengths) - 1
        if r != last:
            move(last, r, lengths[last])
            lengths[r] = lengths[last]
            moves.append((last, r))
        lengths.pop()
    return moves


class PackedRows:
    """Rows over a :class:`PackedDecoder` session of ``capacity`` rows and up to ``max_len``
    positions. The session starts with room for ``start_len`` positions and doubles when a row
    needs more, so memory follows the longest running request, not the context window.
    ``one_row``: the model's packed copy to step a lone row with, where its product kernel is
    faster for one row than ``packed``'s (:func:`~lmkit.infer.products.product_form`)."""

    def __init__(
        self,
        packed: PackedDecoder,
        capacity: int,
        max_len: int,
        start_len: int = 256,
        one_row: PackedDecoder | None = None,
    ) -> None:
        self.packed, self.capacity, self.max_len = packed, capacity, max_len
        self.one_row = one_row if one_row is not None and one_row is not packed else None
        self.session = packed.start(capacity, min(start_len, max_len), zeroed=True)
        self.lengths: list[int] = []

    def _room(self, need: int) -> None:
        """Grow the session (doubling, at most to ``max_len``) to hold ``need`` positions per row."""
        have = self.session.max_len
        if need <= have or have == self.max_len:
            return  # a step past max_len is refused by step_rows
        grown = self.packed.start(self.capacity, min(self.max_len, max(need, 2 * have)), zeroed=True)
        n = len(self.lengths)
        for dst, src in zip(grown.kv, self.session.kv):
            dst[:n, :have] = src[:n]
        self.session = grown

    def prefill(self, ids: torch.Tensor, every: bool) -> tuple[torch.Tensor, PackedDecoder]:
        B, T = ids.shape
        prompt = self.packed.start(B, T)
        logits = prompt.forward(ids, every=every)
        return (logits if every else logits[:, None]), prompt

    def add(self, prefilled: PackedDecoder, row: int) -> None:
        i, n = len(self.lengths), prefilled.length
        if i == self.capacity:
            raise ValueError(f"all {i} slots of the pool are in use")
        self._room(n + 1)
        for dst, src in zip(self.session.kv, prefilled.kv):
            dst[i, :n] = src[row, :n]
        self.lengths.append(n)

    def remove(self, rows: list[int]) -> list[tuple[int, int]]:
        def move(src: int, dst: int, n: int) -> None:
            for kv in self.session.kv:
                kv[dst, :n] = kv[src, :n]

        return _compact(self.lengths, rows, move)

    def step(self, ids: torch.Tensor) -> torch.Tensor:
        self._room(max(self.lengths) + 1)
        alone = self.one_row if len(self.lengths) == 1 else None
        logits = self.session.step_rows(ids, self.lengths, weights=alone)
        self.lengths = [n + 1 for n in self.lengths]
        return logits


class ModuleRows:
    """Rows over the model's own forward and a ragged :class:`KVCache` (a slot pool)."""

    def __init__(self, model: Decoder, capacity: int, max_len: int) -> None:
        self.model, self.capacity, self.max_len = model, capacity, max_len
        self.cache: KVCache | None = None  # made from the first prefill's cache (its shapes and dtype)

    def prefill(self, ids: torch.Tensor, every: bool) -> tuple[torch.Tensor, KVCache]:
        cache = self.model.new_cache(ids.shape[0], self.max_len)
        logits = self.model(ids, cache)  # (B, T, V)
        return (logits if every else logits[:, -1:]), cache

    def add(self, prefilled: KVCache, row: int) -> None:
        if self.cache is None:
            self.cache = KVCache.slots(prefilled, self.capacity)
        self.cache.add_row(prefilled, row=row)

    def remove(self, rows: list[int]) -> list[tuple[int, int]]:
        assert self.cache is not None
        return self.cache.remove_rows(rows)

    def step(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model(ids, self.cache)[:, -1]  # (n, V), each row at its own position


def decoder_rows(model: Decoder, capacity: int, max_len: int) -> DecoderRows:
    """The pool for this decoder: packed when the packed step takes the model, its modules otherwise.
    A lone row steps with the one-row product kernel where that differs (without the compiled
    kernel: MKL's on one thread, or for weights that fit in the cache;
    :func:`~lmkit.infer.products.product_form`), at the cost of a second packed copy of the weights."""
    packed = packed_decoder(model, rows=capacity)
    if packed is not None:
        return PackedRows(packed, capacity, max_len, one_row=packed_decoder(model, rows=1))
    return ModuleRows(model, capacity, max_len)
