"""Where a token is: the positional encodings every family draws from.

- Rotary (``rope_inv_freq`` / ``rope_tables`` / ``apply_rope``, and ``rope_heads`` for a stacked
  query/key/value projection): query and key dimensions i and
  i + rd/2 of each head's first rd = ``rotary_dim`` dimensions turn together by pos·inv_freq[i] (the
  "rotate half" layout of Hugging Face's Llama and GPT-NeoX, so weights map over unchanged); the rest
  of the head (GPT-NeoX rotates a quarter) passes through. ``model.rope_scaling`` rewrites the
  inverse frequencies (linear interpolation, Llama 3's banded rule) exactly as transformers does.
- ALiBi (``alibi_slopes``, ``alibi_bias``): no position vector at all; attention adds slope_h · j to the score of key
  position j in head h (BLOOM; the softmax ignores the constant slope_h · i of the query's row).
- Sinusoidal (``sinusoidal_table``): the original Transformer's fixed table; learned positions are a
  plain ``nn.Embedding`` (``pos_emb``).
- :func:`register_position_tables` gives a model its tables from ``cfg.pos_encoding``.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from lmkit.config import ModelConfig
from lmkit.model_variants import RopeScaling, rotary_dim


def rope_inv_freq(rot_dim: int, theta: float, scaling: RopeScaling | None = None) -> torch.Tensor:
    """Inverse frequencies (rot_dim/2,) of rotary positions, rewritten by ``scaling`` (transformers' rules)."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, rot_dim, 2, dtype=torch.float32) / rot_dim))  # (rd/2,)
    if scaling is None or scaling.type == "none":
        return inv_freq
    if scaling.type == "linear":
        return inv_freq / scaling.factor
    # llama3: long wavelengths slowed by factor, short ones kept, a smooth blend between
    factor, old = scaling.factor, scaling.original_max_len
    low, high = scaling.low_freq_factor, scaling.high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > old / low, inv_freq / factor, inv_freq)
    smooth = (old / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = ~(wavelen < old / high) * ~(wavelen > old / low)
    return torch.where(medium, smoothed, scaled)


def rope_tables(
    head_dim: int, max_len: int, theta: float = 10000.0, scaling: RopeScaling | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables of rotary positions, each (max_len, head_dim) for the rotated head_dim dimensions.

    Dimension i and i + head_dim/2 form a pair rotated by angle pos · inv_freq[i].
    """
    inv_freq = rope_inv_freq(head_dim, theta, scaling)  # (hd/2,)
    angles = torch.outer(torch.arange(max_len, dtype=torch.float32), inv_freq)  # (T, hd/2)
    angles = torch.cat([angles, angles], dim=-1)  # (T, hd)
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate query/key vectors x (B, H, T, hd) by their positions' angles (cos/sin: (T, rd), rd <= hd).

    Only the first rd dimensions of each head turn; the rest pass through (partial rotary)."""
    rd = cos.shape[-1]
    if rd < x.shape[-1]:
        return torch.cat([apply_rope(x[..., :rd], cos, sin), x[..., rd:]], dim=-1)  # (B, H, T, hd)
    half = rd // 2
    # rotate-half (−x₂, x₁) is the halves swapped, (x₂, x₁), with the first one negated: the sign goes into
    # the small sin table, so the activations see one flip, two products and a sum, forward and backward
    # (slicing and concatenating them costs zero-filled gradients and copies in the backward pass)
    swapped = x.unflatten(-1, (2, half)).flip(-2).flatten(-2)  # (..., rd): (x₂, x₁)
    signed_sin = torch.cat([-sin[..., :half], sin[..., half:]], dim=-1)  # (T, rd)
    return x * cos + swapped * signed_sin


def _turn(out: torch.Tensor, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, inverse: bool) -> None:
    """out = x turned by rope (or back, ``inverse``: the transpose, which gives the gradient) in two
    passes: out = x·cos, then each half of out adds the other half of x times its signed sin."""
    half = x.shape[-1] // 2
    x1, x2, o1, o2 = x[..., :half], x[..., half:], out[..., :half], out[..., half:]
    s1, s2 = sin[..., :half], sin[..., half:]
    torch.mul(x, cos, out=out)
    o1.addcmul_(x2, s2 if inverse else s1, value=1 if inverse else -1)  # y₁ = x₁c − x₂s
    o2.addcmul_(x1, s1 if inverse else s2, value=-1 if inverse else 1)  # y₂ = x₂c + x₁s


class _RopeHeads(torch.autograd.Function):
    """The stacked projection qkv (B, T, 3·H·hd) → (3, B, H, T, hd) head-major in one buffer, queries and
    keys turned by rope over the whole head (cos and sin None: not turned). The layout change rides on
    rope's first pass (it reads qkv's strided view and writes the contiguous output), and the backward
    writes straight into the strided gradient of qkv: queries and keys take two passes each way,
    values one copy (without rope: one copy each way). Composed of separate ops it took a copy, a
    flip, two products and a sum forward, and the same plus a concatenation and a copy backward."""

    @staticmethod
    def forward(
        ctx, qkv: torch.Tensor, cos: torch.Tensor | None, sin: torch.Tensor | None, n_heads: int, dtype: torch.dtype
    ) -> torch.Tensor:  # type: ignore[override]
        B, T, width = qkv.shape
        src = qkv.view(B, T, 3, n_heads, width // (3 * n_heads)).permute(2, 0, 3, 1, 4)  # (3, B, H, T, hd) view
        out = torch.empty(src.shape, dtype=dtype, device=qkv.device)  # (3, B, H, T, hd)
        if cos is None or sin is None:
            out.copy_(src)
        else:
            _turn(out[:2], src[:2], cos, sin, inverse=False)
            out[2].copy_(src[2])
        ctx.save_for_backward(cos, sin)
        ctx.qkv_shape, ctx.qkv_dtype, ctx.n_heads = qkv.shape, qkv.dtype, n_heads
        return out

    @staticmethod
    @once_differentiable  # written in place: no second derivative
    def backward(ctx, dout: torch.Tensor):  # type: ignore[override]
        cos, sin = ctx.saved_tensors
        B, T, width = ctx.qkv_shape
        grad = torch.empty((B, T, 3, ctx.n_heads, width // (3 * ctx.n_heads)), dtype=ctx.qkv_dtype, device=dout.device)
        g = grad.permute(2, 0, 3, 1, 4)  # (3, B, H, T, hd) view of the (B, T, 3, H, hd) gradient
        if cos is None or sin is None:
            g.copy_(dout)
            return grad.view(B, T, width), None, None, None, None
        if dout.dtype == grad.dtype:
            _turn(g[:2], dout[:2], cos, sin, inverse=True)
        else:  # turned in dout's precision, rounded once
            turned = torch.empty_like(dout[:2])
            _turn(turned, dout[:2], cos, sin, inverse=True)
            g[:2].copy_(turned)
        g[2].copy_(dout[2])
        return grad.view(B, T, width), None, None, None, None


def rope_heads(
    qkv: torch.Tensor, n_heads: int, rope: tuple[torch.Tensor, torch.Tensor] | None, dtype: torch.dtype
) -> torch.Tensor:
    """Queries, keys and values of a stacked projection qkv (B, T, 3·H·hd), head-major, (3, B, H, T, hd)
    in ``dtype``, queries and keys turned by ``rope`` (cos, sin: (T, hd), the whole head) when given.
    Same values as splitting the heads and calling :func:`apply_rope`, in fewer passes over the
    activations, forward and backward."""
    cos, sin = rope if rope is not None else (None, None)
    return _RopeHeads.apply(qkv, cos, sin, n_heads, dtype)


def alibi_slopes(n_heads: int) -> torch.Tensor:
    """ALiBi's per-head slopes (H,): a geometric sequence from 2^(-8/n) for the nearest power of two n of
    heads, the odd powers of the next one's base for the heads beyond (computed as BLOOM does, float32)."""
    closest = 2 ** math.floor(math.log2(n_heads))
    base = torch.tensor(2 ** (-(2 ** -(math.log2(closest) - 3))), dtype=torch.float32)
    slopes = torch.pow(base, torch.arange(1, 1 + closest, dtype=torch.int32))
    if closest != n_heads:
        extra = torch.tensor(2 ** (-(2 ** -(math.log2(2 * closest) - 3))), dtype=torch.float32)
        rest = min(closest, n_heads - closest)
        slopes = torch.cat([slopes, torch.pow(extra, torch.arange(1, 1 + 2 * rest, 2, dtype=torch.int32))])
    return slopes


def alibi_bias(slopes: torch.Tensor, mask: torch.Tensor | None, causal: bool, T: int, S: int) -> torch.Tensor:
    """ALiBi's additive bias slope_h · j for key positions j < S, slopes (H,), with ``mask`` (a boolean keep-mask
    or an additive one) and causality (query t at position S - T + t) folded in: (B or 1, H, T or 1, S)."""
    bias = slopes.view(-1, 1, 1) * torch.arange(S, dtype=torch.float32, device=slopes.device)  # (H, 1, S)
    keep = mask if mask is not None and mask.dtype == torch.bool else None
    if mask is not None and keep is None:
        bias = bias + mask
    if causal:
        keep = torch.ones(T, S, dtype=torch.bool, device=bias.device).tril(diagonal=S - T)  # (T, S)
    return bias if keep is None else bias.masked_fill(~keep, float("-inf"))


def sinusoidal_table(max_len: int, dim: int) -> torch.Tensor:
    """The fixed sin/cos position table of "Attention is all you need", (max_len, dim)."""
    pos = torch.arange(max_len, dtype=torch.float32)[:, None]  # (T, 1)
    div = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))  # (dim/2,)
    table = torch.zeros(max_len, dim)
    table[:, 0::2] = torch.sin(pos * div)
    table[:, 1::2] = torch.cos(pos * div)[:, : dim // 2]
    return table


def register_position_tables(module: nn.Module, cfg: ModelConfig) -> None:
    """Give ``module`` its position parameters/buffers from ``cfg.pos_encoding``.

    Sets ``pos_emb`` (learned table or None), ``pos_table`` (sinusoidal buffer or None) and, for
    rotary positions, the ``rope_cos``/``rope_sin`` buffers (max_seq_len, rotated dims per head).
    ALiBi's slopes belong to each attention layer (``Attention(alibi=True)``).
    """
    # torch types Module.__setattr__'s value as Tensor | Module, though None (an empty slot) is valid
    learned = nn.Embedding(cfg.max_seq_len, cfg.d_model) if cfg.pos_encoding == "learned" else None
    module.pos_emb = learned  # type: ignore[assignment]
    if cfg.pos_encoding == "sinusoidal":
        module.register_buffer("pos_table", sinusoidal_table(cfg.max_seq_len, cfg.d_model), persistent=False)
    else:
        module.pos_table = None  # type: ignore[assignment]
    if cfg.pos_encoding == "rotary":
        rd = rotary_dim(cfg.head_dim, cfg.rotary_fraction)
        cos, sin = rope_tables(rd, cfg.max_seq_len, cfg.rope_theta, cfg.rope_scaling)
        module.register_buffer("rope_cos", cos, persistent=False)  # (max_seq_len, rd)
        module.register_buffer("rope_sin", sin, persistent=False)


__all__ = [
    "alibi_bias",
    "alibi_slopes",
    "apply_rope",
    "register_position_tables",
    "rope_inv_freq",
    "rope_tables",
    "sinusoidal_table",
]
