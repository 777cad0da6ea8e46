"""The pieces the three transformer families really share.

- ``RMSNorm``: root-mean-square layer normalisation (Llama, T5), with its own backward on CPU.
- ``Attention``: multi-head scaled dot-product attention for self- and cross-attention, with an
  optional key/value cache for generation, grouped-query attention (fewer key/value heads, each
  shared by a group of query heads; the cache holds the key/value heads only), heads of any width,
  partial rotary positions and ALiBi's per-head linear bias (``lmkit.models.positions`` owns the
  encodings themselves). The softmax(QKᵀ/√d)V itself runs in PyTorch's
  ``scaled_dot_product_attention``, which picks a fused kernel for the device.
- ``biased_attention``: attention with a learned additive bias (T5), with its own backward on CPU.
- ``KVCache``: preallocated per-layer key/value tensors, written in place while decoding.
The output layer and its loss are ``lmkit.models.loss``'s.
"""

from __future__ import annotations

import math
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from lmkit.models.positions import alibi_bias, alibi_slopes, apply_rope, rope_heads

Rope = tuple[torch.Tensor, torch.Tensor]  # cos, sin of the positions at hand


class _RMSNorm(torch.autograd.Function):
    """RMS normalisation with a hand-written backward: x̂ = x·r, r = (mean(x²) + eps)^-½, y = x̂·w.

    dx = r·(g − x̂·mean(g·x̂)) with g = dy·w, and dw = Σ_rows dy·x̂. Only x̂ and r are kept.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:  # type: ignore[override]
        acc = torch.promote_types(x.dtype, torch.float32)  # bf16/fp16 activations reduce in fp32
        rstd = torch.rsqrt(x.to(acc).pow(2).mean(-1, keepdim=True) + eps).to(x.dtype)  # (..., 1)
        xhat = x * rstd  # (..., C)
        ctx.save_for_backward(xhat, rstd, weight)
        return xhat * weight

    @staticmethod
    def backward(ctx, dy: torch.Tensor):  # type: ignore[override]
        xhat, rstd, weight = ctx.saved_tensors
        dw = (dy * xhat).flatten(0, -2).sum(0).to(weight.dtype) if ctx.needs_input_grad[1] else None  # (C,)
        g = dy * weight  # (..., C)
        mean_gx = torch.linalg.vecdot(g, xhat).unsqueeze(-1).div_(xhat.shape[-1])  # (..., 1)
        dx = torch.addcmul(g, xhat, mean_gx, value=-1).mul_(rstd)
        return dx, dw, None


class RMSNorm(nn.Module):
    """x / sqrt(mean(x²) + eps) · weight, over the last dimension.

    On CPU this runs ``_RMSNorm``: ``F.rms_norm`` there is a chain of element-wise ops whose
    autograd makes about twice the passes over the activations. Other devices have a fused kernel.
    """

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type == "cpu":
            return _RMSNorm.apply(x, self.weight, self.eps)
        return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)


# --------------------------------------------------------------------------- attention


class KVCache:
    """Keys and values of every layer, preallocated to ``max_len`` positions.

    ``k[i]`` and ``v[i]`` are (B, H, max_len, hd), H the key/value heads (fewer than the query heads
    under grouped-query attention); ``length`` is how many positions are filled.
    A model writes the new positions of each layer, then advances ``length`` once per step.

    Ragged rows (a server's batch, where each row is its own request): ``lengths`` (B,) holds how
    many positions each row has filled, and a step appends one token per row at that row's own
    position (:meth:`write_rows`). :meth:`slots` makes such a pool of request slots;
    :meth:`add_row` copies a request's prompt cache in, :meth:`remove_rows` frees finished ones;
    neither touches another row's keys or values.
    """

    def __init__(
        self,
        n_layers: int,
        batch: int,
        n_heads: int,
        max_len: int,
        head_dim: int,
        dtype: torch.dtype,
        device: torch.device | str,
    ) -> None:
        shape = (batch, n_heads, max_len, head_dim)
        self.k = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(n_layers)]
        self.v = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(n_layers)]
        self.max_len = max_len
        self.length = 0
        self.lengths: torch.Tensor | None = None  # (B,) per-row filled positions, for ragged rows

    def write(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v (B, H, T, hd) at positions [length, length+T); return all filled positions."""
        start, end = self.length, self.length + k.shape[2]
        if end > self.max_len:
            raise ValueError(f"KV cache full: {end} positions needed, {self.max_len} allocated")
        self.k[layer][:, :, start:end] = k
        self.v[layer][:, :, start:end] = v
        return self.k[layer][:, :, :end], self.v[layer][:, :, :end]

    def write_rows(
        self, layer: int, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Ragged rows: store one new position per row, k, v (B, H, 1, hd), at ``lengths[b]``.

        The B rows are the first B of the cache (a slot pool may hold more). Returns the keys and
        values up to the longest row, (B, H, S, hd), and the boolean mask (B, 1, 1, S) of the
        positions each row may attend to (its own filled ones and the new one).
        """
        assert self.lengths is not None and k.shape[2] == 1
        lengths = self.lengths
        B, end = k.shape[0], int(lengths.max()) + 1
        if end > self.max_len:
            raise ValueError(f"KV cache full: {end} positions needed, {self.max_len} allocated")
        rows = torch.arange(B, device=k.device)
        self.k[layer][rows, :, lengths] = k[:, :, 0]  # (B, H, hd) at each row's own position
        self.v[layer][rows, :, lengths] = v[:, :, 0]
        keep = torch.arange(end, device=k.device) <= lengths[:, None]  # (B, S)
        return self.k[layer][:B, :, :end], self.v[layer][:B, :, :end], keep[:, None, None, :]

    # -------------------------------------------------------------- a pool of request slots

    @classmethod
    def slots(cls, like: KVCache, capacity: int) -> KVCache:
        """An empty ragged cache with room for ``capacity`` rows shaped like ``like``'s rows.
        Running rows are kept at the front (rows 0..n-1), so a decode step reads views, not copies."""
        out = cls.__new__(cls)
        shape = (capacity, *like.k[0].shape[1:])
        out.k = [torch.zeros(shape, dtype=t.dtype, device=t.device) for t in like.k]
        out.v = [torch.zeros(shape, dtype=t.dtype, device=t.device) for t in like.v]
        out.max_len, out.length = like.max_len, 0
        out.lengths = torch.zeros(0, dtype=torch.long, device=like.k[0].device)
        return out

    @property
    def capacity(self) -> int:
        return self.k[0].shape[0]

    def add_row(self, source: KVCache, row: int = 0) -> int:
        """Copy one row of a plain cache (e.g. a freshly read prompt) into the next free slot; its index."""
        assert self.lengths is not None
        i, n = self.lengths.shape[0], source.length
        if i == self.capacity:
            raise ValueError(f"all {self.capacity} slots of the KV cache are in use")
        for dst, src in zip(self.k + self.v, source.k + source.v):
            dst[i, :, :n] = src[row, :, :n]
        self.lengths = torch.cat([self.lengths, self.lengths.new_tensor([n])])
        return i

    def remove_rows(self, rows: list[int]) -> list[tuple[int, int]]:
        """Free these slots, keeping the running rows at the front: the last running row moves into
        each freed slot. Returns the moves (from, to) so a caller can reorder what it keeps per row."""
        assert self.lengths is not None
        lengths = self.lengths.tolist()
        moves = []
        for r in sorted(rows, reverse=True):
            last = len(lengths) - 1
            if r != last:
                n = lengths[last]
                for t in self.k + self.v:
                    t[r, :, :n] = t[last, :, :n]
                lengths[r] = n
                moves.append((last, r))
            lengths.pop()
        self.lengths = self.lengths.new_tensor(lengths)
        return moves


def _fp32_attention_under_autocast(x: torch.Tensor) -> bool:
    """Whether attention on ``x``'s device runs in fp32 while autocast runs the matmuls around it in
    bf16: training on CPU, whose bf16 flash-attention backward ran ~3x slower than fp32's (at
    16x4x128x32) on one machine and no faster on another."""
    return x.device.type == "cpu" and torch.is_grad_enabled() and torch.is_autocast_enabled("cpu")


class Attention(nn.Module):
    """Multi-head attention: project to queries, keys, values; attend per head; project back.

    Self-attention when ``context`` is None, cross-attention to ``context`` otherwise.
    ``scale`` defaults to 1/√head_dim (T5 uses 1 and folds the scale into its initialisation).
    ``n_kv_heads`` < ``n_heads``: grouped-query attention, query head h reads key/value head
    h // (n_heads / n_kv_heads). ``head_dim`` defaults to d_model / n_heads. ``bias`` puts biases on
    the query/key/value projections, ``out_bias`` (default: ``bias``) on the output projection.
    ``alibi``: scores get ALiBi's slope_h · (key position) (``lmkit.models.positions.alibi_slopes``).
    """

    alibi: torch.Tensor | None  # (H,) slopes, a non-persistent buffer when set

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        bias: bool = False,
        scale: float | None = None,
        *,
        n_kv_heads: int | None = None,
        head_dim: int | None = None,
        out_bias: bool | None = None,
        alibi: bool = False,
    ) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.n_kv_heads = n_kv_heads or n_heads
        self.head_dim = head_dim or d_model // n_heads
        self.scale = scale
        dq, dkv = n_heads * self.head_dim, self.n_kv_heads * self.head_dim
        self.q_proj = nn.Linear(d_model, dq, bias=bias)
        self.k_proj = nn.Linear(d_model, dkv, bias=bias)
        self.v_proj = nn.Linear(d_model, dkv, bias=bias)
        self.o_proj = nn.Linear(dq, d_model, bias=bias if out_bias is None else out_bias)
        if alibi:
            self.register_buffer("alibi", alibi_slopes(n_heads), persistent=False)
        else:
            self.alibi = None

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        return x.view(B, T, -1, self.head_dim).transpose(1, 2)  # (B, H or H_kv, T, hd)

    def project_qkv(
        self, x: torch.Tensor, rope: Rope | None = None, dtype: torch.dtype | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Self-attention's queries (B, H, T, hd), keys and values (B, H_kv, T, hd) of x (B, T, C), queries
        and keys turned by ``rope`` (cos, sin). Plain linear projections run as one matmul (weights
        stacked: one matmul for x's gradient, not three and two sums); with H_kv = H one copy puts them
        head-major (3, B, H, T, hd), which attention reads without further copies, forward and backward,
        and rope turns queries and keys at once. Others (int8 storage, adapters) run one by one.
        ``dtype``: the head-major copy's dtype (default: the projection's), e.g. fp32 heads of a bf16
        projection under autocast, cast in the same pass."""
        projs, (B, T, _) = (self.q_proj, self.k_proj, self.v_proj), x.shape
        if all(type(p) is nn.Linear for p in projs):
            bias = None if self.q_proj.bias is None else torch.cat([p.bias for p in projs])
            qkv = F.linear(x, torch.cat([p.weight for p in projs]), bias)  # (B, T, dq + 2·dkv)
            if self.n_kv_heads == self.n_heads:
                dtype = dtype or qkv.dtype
                if rope is None or rope[0].shape[-1] == self.head_dim:
                    q, k, v = rope_heads(qkv, self.n_heads, rope, dtype)  # each (B, H, T, hd)
                    return q, k, v
                heads = qkv.view(B, T, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)
                heads = heads.to(dtype, memory_format=torch.contiguous_format)  # (3, B, H, T, hd)
                qk, v = heads.split([2, 1])  # partial rotary: (2, B, H, T, hd), (1, B, H, T, hd)
                q, k = apply_rope(qk, *rope).unbind(0)
                return q, k, v[0]  # each (B, H, T, hd)
            parts = qkv.split([p.out_features for p in projs], dim=-1)
        else:
            parts = tuple(p(x) for p in projs)
        q, k, v = (self.split_heads(t) for t in parts)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        return q, k, v

    def forward(
        self,
        x: torch.Tensor,  # (B, T, C)
        *,
        rope: Rope | None = None,  # cos, sin: (T, rd) for these positions
        causal: bool = False,
        attn_bias: torch.Tensor | None = None,  # additive (or boolean keep-) mask broadcast to (B, H, T, S)
        cache: KVCache | None = None,
        layer: int = 0,
        context: torch.Tensor | None = None,  # (B, S, C) for cross-attention
        context_kv: tuple[torch.Tensor, torch.Tensor] | None = None,  # precomputed cross keys/values
        return_weights: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        B, T, _ = x.shape
        if context is None and context_kv is None:  # self-attention
            # where attention will run in fp32 under autocast (below), the heads are made fp32 in the
            # copy that makes them head-major, so rope turns fp32 heads too
            fp32 = _fp32_attention_under_autocast(x) and self.alibi is None and not return_weights
            fp32 = fp32 and (attn_bias is None or attn_bias.dtype == torch.bool)
            # (B, H, T, hd), (B, H_kv, T, hd) twice
            q, k, v = self.project_qkv(x, rope, torch.float32 if fp32 else None)
        else:  # cross-attention (no rotary positions): keys and values (B, H_kv, S, hd) given or of the context
            q = self.split_heads(self.q_proj(x))  # (B, H, T, hd)
            c = cast(torch.Tensor, context)
            k, v = context_kv or (self.split_heads(self.k_proj(c)), self.split_heads(self.v_proj(c)))
        past = 0
        mask = attn_bias
        if cache is not None and cache.lengths is not None:  # ragged rows, one new token each
            k, v, mask = cache.write_rows(layer, k, v)  # (B, H_kv, S, hd); mask (B, 1, 1, S)
            past = 1
        elif cache is not None:
            past = cache.length
            k, v = cache.write(layer, k, v)  # (B, H_kv, past+T, hd)
        # A caller passing attn_bias together with causal=True must fold causality into the bias.
        is_causal = causal and past == 0 and mask is None
        if causal and mask is None and past > 0 and T > 1:
            # queries at positions past..past+T-1 see keys up to their own position
            mask = torch.ones(T, k.shape[2], dtype=torch.bool, device=x.device).tril(diagonal=past)  # (T, S)
        if self.alibi is not None:
            mask, is_causal = alibi_bias(self.alibi, mask, is_causal, T, k.shape[2]).to(q.dtype), False
        biased = mask is not None and mask.is_floating_point() and q.device.type == "cpu"
        # each key/value head serves a group of query heads: the CPU's fused kernel reads them shared
        # (enable_gqa), other paths get copies repeated per query head, (B, H, S, hd)
        shared_kv = self.n_kv_heads != self.n_heads and q.device.type == "cpu" and not (return_weights or biased)
        if self.n_kv_heads != self.n_heads and not shared_kv:
            group = self.n_heads // self.n_kv_heads
            k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
        if return_weights:
            weights = self.attention_weights(q, k, mask, causal and T > 1 and attn_bias is None and past == 0)
            y = weights @ v  # (B, H, T, hd)
        elif biased:
            scale = self.scale if self.scale is not None else 1.0 / math.sqrt(self.head_dim)
            y = biased_attention(q, k, v, cast(torch.Tensor, mask), scale)  # (B, H, T, hd)
        elif _fp32_attention_under_autocast(q):
            with torch.autocast("cpu", enabled=False):  # autocast would cast the inputs back to bf16
                y = F.scaled_dot_product_attention(
                    q.float(),
                    k.float(),
                    v.float(),
                    attn_mask=mask,
                    is_causal=is_causal,
                    scale=self.scale,
                    enable_gqa=shared_kv,
                ).to(v.dtype)
        else:
            y = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, is_causal=is_causal, scale=self.scale, enable_gqa=shared_kv
            )
        y = y.transpose(1, 2).reshape(B, T, -1)  # (B, T, H·hd)
        out = self.o_proj(y)  # (B, T, C)
        return (out, weights) if return_weights else out

    def attention_weights(
        self, q: torch.Tensor, k: torch.Tensor, mask: torch.Tensor | None, causal: bool
    ) -> torch.Tensor:
        """softmax(q·kᵀ·scale + mask) spelled out, (B, H, T, S): for drawing attention maps."""
        scale = self.scale if self.scale is not None else 1.0 / math.sqrt(q.shape[-1])
        scores = (q @ k.transpose(-2, -1)) * scale  # (B, H, T, S)
        if causal:
            T, S = scores.shape[-2:]
            keep = torch.ones(T, S, dtype=torch.bool, device=q.device).tril(diagonal=S - T)
            scores = scores.masked_fill(~keep, float("-inf"))
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask
        return scores.softmax(dim=-1)


class _BiasedAttention(torch.autograd.Function):
    """softmax(q·kᵀ·scale + bias)·v with the gradient of the additive bias, in the fewest passes.

    Forward: one matmul for the scores, the bias added in place, PyTorch's row-wise softmax in
    place, one matmul with v; only q, k, v and the probabilities are kept. Backward: dv = Pᵀ·dy,
    dP = dy·vᵀ, dS = P ⊙ (dP − rowsum(dP ⊙ P)) in one fused kernel, dbias = dS summed over the
    dimensions the bias was broadcast along, dq = dS·k·scale, dk = dSᵀ·q·scale.
    """

    @staticmethod
    def forward(
        ctx,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        bias: torch.Tensor,  # type: ignore[override]
        scale: float,
    ) -> torch.Tensor:
        if scale != 1.0:
            q = q * scale  # (B, H, T, hd): cheaper than scaling the (T, S) scores
        scores = torch.matmul(q, k.transpose(-2, -1))  # (B, H, T, S)
        scores += bias
        probs = torch.softmax(scores, dim=-1, out=scores)  # in place: rows are independent
        ctx.save_for_backward(q, k, v, probs)
        ctx.scale, ctx.bias_shape = scale, bias.shape
        return torch.matmul(probs, v)  # (B, H, T, hd)

    @staticmethod
    def backward(ctx, dy: torch.Tensor):  # type: ignore[override]
        q, k, v, probs = ctx.saved_tensors  # q already scaled
        dy = dy.contiguous()  # read by two matmuls: one copy, not one in each
        dv = torch.matmul(probs.transpose(-2, -1), dy)  # (B, H, S, hd)
        ds = torch._softmax_backward_data(torch.matmul(dy, v.transpose(-2, -1)), probs, -1, probs.dtype)  # (B, H, T, S)
        dbias = ds.sum_to_size(ctx.bias_shape) if ctx.needs_input_grad[3] else None
        dq = torch.matmul(ds, k)  # (B, H, T, hd)
        if ctx.scale != 1.0:
            dq *= ctx.scale
        dk = torch.matmul(ds.transpose(-2, -1), q)  # (B, H, S, hd)
        return dq, dk, dv, dbias, None


def biased_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor, scale: float
) -> torch.Tensor:
    """Attention with an additive float bias (B or 1, H or 1, T, S) that may be learned (T5's relative
    positions; −inf entries mask keys out). Same values and gradients as
    ``F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=scale)``. Hand-written for CPU
    (``Attention`` uses it there): no fused CPU kernel returns the bias gradient, and SDPA's fallback
    makes extra passes over the (B, H, T, S) scores, which this does not (benchmarks/README.md).
    """
    return _BiasedAttention.apply(q, k, v, bias, scale)
