"""The CPU fast decode path: :class:`PackedDecoder`, a lean inference copy of a ``Decoder``.

Why part of the decode step is written by hand: at batch 1 and small sizes a decode step is a
handful of one-row matrix products (each bound by how fast its weights stream from memory) plus a
few hundred tiny operations whose cost is Python and PyTorch's per-operation dispatch, not
arithmetic (``benchmarks/generate_speed.py`` compares a plain KV-cache loop and this one with
Hugging Face's ``generate``). ``PackedDecoder`` is an inference-only copy of a
:class:`~lmkit.models.decoder.Decoder`'s weights, laid out once, that does the same maths with
fewer, cheaper operations:

* every weight is stored transposed, (in, out) contiguous: a one-row product streams that layout
  faster than ``F.linear``'s (out, in) on CPU (most of all for the vocabulary
  projection, the largest matrix);
* q, k, v are one product, and so are the MLP's gate and up projections; each RMSNorm's weight
  (and a factor √d) is folded into the rows of the product that follows it, leaving only
  x·rsqrt(Σx² + d·eps) to compute; the residual additions are fused into the output products
  (``addmm``);
* rotary positions are one complex multiply: the rows of W_q and W_k are reordered (per head,
  identically for both, which leaves every q·k dot product unchanged) so that the pairs that
  "rotate half" turns together sit side by side as one complex number;
* keys and values go into a preallocated cache in place, and attention reads it through strided
  views (no copies, no concatenation); the prefill projects only its last position onto the
  vocabulary.
The model's own modules, weight names and training path are untouched; tests check the packed
path against the plain forward pass, logits and tokens. The copy costs one more set of the
model's weights in memory and is rebuilt when the parameters change (an optimizer step).
:func:`packed_decoder` returns None for models it does not recognise (a quantized or 16-bit
checkpoint, another class): those use the model's own ``forward`` with a
:class:`~lmkit.models.layers.KVCache`.
"""

from __future__ import annotations

import copy
import math
import weakref
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, TypeGuard, cast

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from lmkit.models.decoder import Decoder, DecoderBlock


def _pair_rows(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Reorder the rows of a query/key projection (d, d_in) so that, within each head, dimension i
    and i + head_dim/2 (the pair rotary positions rotate together in the "rotate half" layout) sit
    side by side, as the real and imaginary part of one complex number."""
    d, d_in = w.shape
    per_head = w.reshape(n_heads, 2, d // n_heads // 2, d_in)  # (H, 2, hd/2, d_in): halves
    return per_head.transpose(1, 2).reshape(d, d_in)  # (H, hd/2, 2, d_in) -> rows [x0, x_h, x1, x_h+1, ...]


class PackedDecoder:
    """Inference-only copy of a ``Decoder``'s weights, laid out for lean decode steps.

    ``session = packed.start(batch, max_len)`` allocates a key/value cache; ``session.forward(ids
    (B, T))`` appends T tokens and returns the next-token logits (B, V) of the last one. Same maths
    as ``Decoder.forward`` with a ``KVCache``, rearranged (see the module docstring).
    """

    def __init__(self, model: Decoder) -> None:
        cfg = model.cfg
        self.cfg = cfg
        self.d, self.H, self.hd = cfg.d_model, cfg.n_heads, cfg.head_dim
        self.d_eps = cfg.d_model * cfg.norm_eps
        self.rotary = cfg.pos_encoding == "rotary"
        self.ffn = cfg.ffn_width
        with torch.no_grad():
            self.emb = model.tok_emb.weight.detach()  # (V, d)
            self.pos: torch.Tensor | None = None
            if model.pos_emb is not None:
                self.pos = model.pos_emb.weight.detach()  # (max_seq_len, d)
            elif model.pos_table is not None:
                self.pos = model.pos_table  # (max_seq_len, d)

            def packed(norm_w: torch.Tensor | None, *ws: torch.Tensor) -> torch.Tensor:
                # (in, out) contiguous: a one-row matmul streams it fastest (≈2x F.linear for
                # the vocabulary projection here). The RMSNorm weight that precedes it scales
                # its input dimension, so it folds into the rows (with the √d of _rms).
                wt = torch.cat(ws).t()  # (in, out)
                if norm_w is not None:
                    wt = wt * (norm_w[:, None] * math.sqrt(self.d))
                return wt.contiguous()

            self.layers: list[dict[str, torch.Tensor]] = []
            for block in cast("Iterable[DecoderBlock]", model.blocks):  # a ModuleList yields Module
                a, m = block.attn, block.mlp
                wq, wk = a.q_proj.weight, a.k_proj.weight
                if self.rotary:
                    wq, wk = _pair_rows(wq, self.H), _pair_rows(wk, self.H)
                self.layers.append(
                    {
                        "qkv": packed(block.attn_norm.weight, wq, wk, a.v_proj.weight),  # (d, 3d)
                        "o": packed(None, a.o_proj.weight),  # (d, d)
                        "gate_up": packed(block.mlp_norm.weight, m.gate_proj.weight, m.up_proj.weight),  # (d, 2f)
                        "down": packed(None, m.down_proj.weight),  # (f, d)
                    }
                )
            self.out = packed(model.norm.weight, model.output_weight)  # (d, V)
            if self.rotary:
                # e^{i·pos·θ_j} for each complex pair of [q | k | v]: the pairs of q and k heads
                # rotate, those of v are multiplied by 1 (exactly), so one multiply covers all three.
                cos, sin = model.rope_cos, model.rope_sin  # (max_seq_len, hd), halves repeated
                half = self.hd // 2
                rot = torch.complex(cos[:, :half], sin[:, :half]).repeat(1, 2 * self.H)  # (L, d)
                self.freqs = torch.cat([rot, torch.ones_like(rot[:, : self.d // 2])], dim=1).contiguous()  # (L, 3d/2)
        self.kv: list[torch.Tensor] = []
        self.k_heads: list[torch.Tensor] = []
        self.v_heads: list[torch.Tensor] = []
        self.length = self.max_len = 0

    def start(self, batch: int, max_len: int) -> PackedDecoder:
        """A decoding session: the same (shared) weights with a fresh cache for ``batch`` sequences
        of up to ``max_len`` positions. Sessions are independent, so concurrent generations
        (e.g. a server's threads) on one model do not share state."""
        session = copy.copy(self)
        session._allocate(batch, max_len)
        return session

    def _allocate(self, batch: int, max_len: int) -> None:
        d, H, hd = self.d, self.H, self.hd
        self.length, self.max_len = 0, max_len
        opts: dict[str, Any] = {"dtype": self.emb.dtype, "device": self.emb.device}
        # per layer (B, L, 2d): the keys then the values of each position, side by side
        self.kv = [torch.empty(batch, max_len, 2 * d, **opts) for _ in self.layers]
        self.k_heads = [c[..., :d].view(batch, max_len, H, hd).transpose(1, 2) for c in self.kv]  # (B, H, L, hd)
        self.v_heads = [c[..., d:].view(batch, max_len, H, hd).transpose(1, 2) for c in self.kv]
        # buffers of the one-token step, and views of them made once
        self.qkv_buf = torch.empty(batch, 3 * d, **opts)  # [q | k | v] of the new token
        self.rot_buf = torch.empty(batch, 3 * d, **opts) if self.rotary else self.qkv_buf  # after rotation
        if self.rotary:
            self.qkv_c = torch.view_as_complex(self.qkv_buf.view(batch, 3 * d // 2, 2))
            self.rot_c = torch.view_as_complex(self.rot_buf.view(batch, 3 * d // 2, 2))
        self.q_step = self.rot_buf[:, :d].view(batch, H, 1, hd)  # (B, H, 1, hd)
        self.kv_step = self.rot_buf[:, d:]  # (B, 2d) = [k | v]
        self.gu_buf = torch.empty(batch, 2 * self.ffn, **opts)
        self.gate, self.up = self.gu_buf[:, : self.ffn], self.gu_buf[:, self.ffn :]

    def _rms(self, x: torch.Tensor) -> torch.Tensor:
        """x / sqrt(sum(x²) + d·eps) = RMSNorm(x) / √d (√d and the weight are folded into the next
        matmul); a sum instead of a mean saves a cast and a division per call."""
        return x * (x * x).sum(-1, keepdim=True).add_(self.d_eps).rsqrt_()

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """Append ids (B, T) to the cache; logits (B, V) of the token after the last one."""
        B, T = ids.shape
        if self.length + T > self.max_len:
            raise ValueError(f"cache of {self.max_len} positions cannot take {self.length + T}")
        if T == 1:
            return self._step(ids)
        d, H, hd = self.d, self.H, self.hd
        past = self.length
        end = past + T
        x = F.embedding(ids.reshape(-1), self.emb)  # (N, d), N = B*T, rows ordered (b, t)
        if self.pos is not None:
            x = (x.view(B, T, d) + self.pos[past:end]).view(B * T, d)
        freqs = self.freqs[past:end] if self.rotary else None  # (T, 3d/2) complex
        mask = None
        causal = past == 0
        if past > 0:
            mask = torch.ones(T, end, dtype=torch.bool, device=x.device).tril(diagonal=past)  # (T, S)
        for layer, kv, kh, vh in zip(self.layers, self.kv, self.k_heads, self.v_heads):
            qkv = torch.mm(self._rms(x), layer["qkv"])  # (N, 3d) = [q | k | v]
            if freqs is not None:  # rotate each (x_i, x_i+hd/2) pair of q and k: one complex multiply
                qkv = torch.view_as_real(torch.view_as_complex(qkv.view(B, T, 3 * d // 2, 2)) * freqs)
                qkv = qkv.view(B * T, 3 * d)  # [q_rot | k_rot | v]
            kv[:, past:end] = qkv[:, d:].view(B, T, 2 * d)
            q = qkv[:, :d].view(B, T, H, hd).transpose(1, 2)  # (B, H, T, hd)
            y = F.scaled_dot_product_attention(
                q, kh[:, :, :end], vh[:, :, :end], attn_mask=mask, is_causal=causal
            )  # (B, H, T, hd)
            x = torch.addmm(x, y.transpose(1, 2).reshape(B * T, d), layer["o"])  # x + o_proj(y)
            gu = torch.mm(self._rms(x), layer["gate_up"])  # (N, 2f)
            a = F.silu(gu[:, : self.ffn]).mul_(gu[:, self.ffn :])
            x = torch.addmm(x, a, layer["down"])  # x + down_proj(silu(gate) * up)
        self.length = end
        last = x.view(B, T, d)[:, -1]  # (B, d)
        return torch.mm(self._rms(last), self.out)  # (B, V)

    def _step(self, ids: torch.Tensor) -> torch.Tensor:
        """forward() for one new token per row: the same maths in preallocated buffers, in place."""
        B, d = ids.shape[0], self.d
        pos = self.length
        end = pos + 1
        x = F.embedding(ids.view(B), self.emb)  # (B, d), a fresh tensor we may update in place
        if self.pos is not None:
            x += self.pos[pos]
        freqs = self.freqs[pos] if self.rotary else None  # (3d/2,) complex
        for layer, kv, kh, vh in zip(self.layers, self.kv, self.k_heads, self.v_heads):
            torch.mm(self._rms(x), layer["qkv"], out=self.qkv_buf)  # (B, 3d)
            if freqs is not None:
                torch.mul(self.qkv_c, freqs, out=self.rot_c)  # rot_buf = [q_rot | k_rot | v]
            kv[:, pos] = self.kv_step
            y = F.scaled_dot_product_attention(self.q_step, kh.narrow(2, 0, end), vh.narrow(2, 0, end))
            x.addmm_(y.view(B, d), layer["o"])  # x += o_proj(y); y (B, H, 1, hd)
            torch.mm(self._rms(x), layer["gate_up"], out=self.gu_buf)  # (B, 2f)
            F.silu(self.gate, inplace=True).mul_(self.up)
            x.addmm_(self.gate, layer["down"])  # x += down_proj(silu(gate) * up)
        self.length = end
        return torch.mm(self._rms(x), self.out)  # (B, V)


_PACKED: weakref.WeakKeyDictionary[nn.Module, tuple[tuple[Any, ...], PackedDecoder]] = weakref.WeakKeyDictionary()


def _packable(model: nn.Module) -> TypeGuard[Decoder]:
    """Is this exactly lmkit's Decoder with plain fp32 embedding and Linear layers?"""
    from lmkit.models.decoder import Decoder, SwiGLU
    from lmkit.models.layers import Attention

    if type(model) is not Decoder or type(model.tok_emb) is not nn.Embedding:
        return False
    if model.tok_emb.weight.dtype != torch.float32 or (
        model.lm_head is not None
        and (type(model.lm_head) is not nn.Linear or model.lm_head.weight.dtype != torch.float32)
    ):
        return False  # e.g. a quantized or 16-bit cast checkpoint: the model's own forward handles it
    for block in model.blocks:
        if type(block.attn) is not Attention or type(block.mlp) is not SwiGLU:
            return False
        for lin in (
            block.attn.q_proj,
            block.attn.k_proj,
            block.attn.v_proj,
            block.attn.o_proj,
            block.mlp.gate_proj,
            block.mlp.up_proj,
            block.mlp.down_proj,
        ):
            if type(lin) is not nn.Linear or lin.bias is not None or lin.weight.dtype != torch.float32:
                return False
    return True


def packed_decoder(model: nn.Module) -> PackedDecoder | None:
    """The model's packed inference weights (built once, rebuilt if parameters changed), or None
    when the model is not a plain lmkit ``Decoder``."""
    if not _packable(model):
        return None
    key = tuple((p.data_ptr(), p._version, p.dtype) for p in model.parameters())
    hit = _PACKED.get(model)
    if hit is not None and hit[0] == key:
        return hit[1]
    packed = PackedDecoder(model)
    _PACKED[model] = (key, packed)
    return packed
