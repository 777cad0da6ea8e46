"""Encoder-decoder requests decoded as one batch: :class:`Seq2SeqRows`.

What this module owns: the slot pool of the serving engine's encoder-decoder rows (T5 and BART
layouts). Each request's prompt is encoded alone, once, when it joins; its cross-attention
keys/values go into its slot of a per-batch padded store (every row's encoder states padded to
the longest running one), with a keep-mask of its own length, so a row's cross-attention reads its
own encoder states only. Each step feeds one decoder token per row at that row's own position: the
self-attention keys/values are written per row, and each row gets its own position bias (T5's
relative buckets, or BART's learned position of that row) with the positions past its own masked
out. The decoder blocks are the model's own modules (``Block.forward``), called with this pool as
their self-attention cache (:meth:`Seq2SeqRows.write`).

Invariants: running rows sit at the front (rows 0..n-1); a row's logits equal what the request
gets decoded alone; padding positions, and the positions another row has written past this row's
length, hold finite numbers and are masked out (the pools start as zeros and grow with zeros);
memory grows with the longest running prompt and output only.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import cast

import torch

from lmkit.models.encdec import Block, EncoderDecoder, relative_position_bucket
from lmkit.models.layers import KVCache


def _grown(t: torch.Tensor, dim: int, size: int) -> torch.Tensor:
    """t with dimension ``dim`` grown to ``size`` (zeros after the old end); t itself if long enough."""
    if t.shape[dim] >= size:
        return t
    shape = list(t.shape)
    shape[dim] = size
    out = t.new_zeros(shape)
    out.narrow(dim, 0, t.shape[dim]).copy_(t)
    return out


class Seq2SeqRows(KVCache):
    """A pool of ``capacity`` encoder-decoder request slots; also the decoder's self-attention cache
    (a :class:`KVCache` whose :meth:`write` puts each row's new key/value at that row's position)."""

    def __init__(self, model: EncoderDecoder, capacity: int) -> None:  # no KVCache.__init__: grown on demand
        self.model = model
        anchor = model.decoder.anchor()  # the activations' dtype and device
        H, hd = model.cfg.n_heads, model.cfg.head_dim
        layers = model.n_decoder_layers
        self.k = [anchor.new_zeros(capacity, H, 8, hd) for _ in range(layers)]  # (C, H, positions, hd)
        self.v = [anchor.new_zeros(capacity, H, 8, hd) for _ in range(layers)]
        self.cross_k = [anchor.new_zeros(capacity, H, 1, hd) for _ in range(layers)]  # (C, H, S, hd)
        self.cross_v = [anchor.new_zeros(capacity, H, 1, hd) for _ in range(layers)]
        self.keep = torch.zeros(capacity, 1, dtype=torch.bool, device=anchor.device)  # (C, S) real encoder states
        self.max_len = self.k[0].shape[2]
        self.length = 0  # read by Attention as "past"; nonzero would add a causal mask it must not
        self.lengths = None  # Attention's ragged path stays off: write() does the per-row writes
        self.filled: list[int] = []  # decoder positions filled, per running row
        self.sources: list[int] = []  # encoder states, per running row
        self._at: torch.Tensor | None = None  # during a step: flat slots of each row's new position
        pos = model.decoder.pos_emb
        self.positions: int | None = None if pos is None else pos.num_embeddings  # BART's learned positions

    def add(self, prompt_ids: list[int]) -> None:
        """Encode one prompt alone and put its cross-attention keys/values in the next free slot; its
        decoder starts empty (the caller feeds the decoder start token first)."""
        i, S = len(self.filled), len(prompt_ids)
        if i == self.capacity:
            raise ValueError(f"all {i} slots of the pool are in use")
        model = self.model
        enc = model.encode(torch.tensor([prompt_ids], dtype=torch.long, device=self.keep.device))  # (1, S, C)
        if S > self.keep.shape[1]:
            self.cross_k = [_grown(t, 2, S) for t in self.cross_k]
            self.cross_v = [_grown(t, 2, S) for t in self.cross_v]
            self.keep = _grown(self.keep, 1, S)
        for layer, (k, v) in enumerate(model.cross_kv(enc)):  # (1, H, S, hd) each
            self.cross_k[layer][i, :, :S] = k[0]
            self.cross_v[layer][i, :, :S] = v[0]
        self.keep[i] = False
        self.keep[i, :S] = True
        self.filled.append(0)
        self.sources.append(S)

    def remove(self, rows: list[int]) -> list[tuple[int, int]]:
        """Free these slots; the last running row moves into each freed one. The moves (from, to)."""
        moves = []
        for r in sorted(rows, reverse=True):
            last = len(self.filled) - 1
            if r != last:
                n, S = self.filled[last], self.sources[last]
                for t in self.k + self.v:
                    t[r, :, :n] = t[last, :, :n]
                for t in self.cross_k + self.cross_v:
                    t[r, :, :S] = t[last, :, :S]
                self.keep[r] = self.keep[last]
                self.filled[r], self.sources[r] = n, S
                moves.append((last, r))
            self.filled.pop()
            self.sources.pop()
        return moves

    def write(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The self-attention cache of a step: k, v (n, H, 1, hd) each at its row's own position; all
        rows' keys and values up to the longest row, (n, H, S, hd)."""
        assert self._at is not None
        n, H, _, hd = k.shape
        L = self.k[layer].shape[2]
        self.k[layer].view(-1, hd).index_copy_(0, self._at, k.reshape(n * H, hd))
        self.v[layer].view(-1, hd).index_copy_(0, self._at, v.reshape(n * H, hd))
        end = max(self.filled) + 1
        assert end <= L
        return self.k[layer][:n, :, :end], self.v[layer][:n, :, :end]

    def step(self, ids: torch.Tensor) -> torch.Tensor:
        """One decoder token per running row, ids (n, 1): the next-token logits (n, V)."""
        model, stack = self.model, self.model.decoder
        n, end = ids.shape[0], max(self.filled) + 1
        if self.positions is not None and end > self.positions:
            raise ValueError(f"position {end - 1} is past the decoder's {self.positions} learned positions")
        if end > self.k[0].shape[2]:  # room for twice as many positions
            size = max(end, 2 * self.k[0].shape[2])
            self.k = [_grown(t, 2, size) for t in self.k]
            self.v = [_grown(t, 2, size) for t in self.v]
            self.max_len = size
        device = self.keep.device
        q_pos = torch.tensor(self.filled, device=device)[:, None]  # (n, 1): each row's new position
        k_pos = torch.arange(end, device=device)[None, :]  # (1, S)
        H, L = model.cfg.n_heads, self.k[0].shape[2]
        # flat slots of (C·H·L, hd) rows: row b, head h, position q_pos[b]
        self._at = ((torch.arange(n, device=device)[:, None] * H + torch.arange(H, device=device)) * L + q_pos).view(-1)
        x = model.tok_emb(ids)  # (n, 1, C)
        if stack.pos_emb is not None:
            x = x + stack.pos_emb.weight[q_pos]  # (n, 1, C)
        if stack.emb_norm is not None:
            x = stack.emb_norm(x)
        if stack.rel_bias is None:  # learned positions: only the mask
            bias = torch.zeros(n, 1, 1, end, dtype=x.dtype, device=device)
        else:  # T5: each row's relative-position buckets, (n, H, 1, S)
            buckets = relative_position_bucket(k_pos - q_pos, bidirectional=False)  # (n, S)
            bias = stack.rel_bias(buckets).permute(0, 2, 1)[:, :, None, :]
        bias = bias.masked_fill((k_pos > q_pos)[:, None, None, :], float("-inf"))
        S = max(self.sources)
        ckeep = self.keep[:n, None, None, :S]  # (n, 1, 1, S): each row's own encoder states
        try:
            for i, block in enumerate(cast("Iterable[Block]", stack.blocks)):
                cross = (self.cross_k[i][:n, :, :S], self.cross_v[i][:n, :, :S])
                x = block(x, bias, None, ckeep, cross, self, i)
        finally:
            self._at = None
        self.filled = [f + 1 for f in self.filled]
        if stack.norm is not None:
            x = stack.norm(x)
        return model.logits(x[:, -1])  # (n, V)
