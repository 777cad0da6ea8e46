"""The CPU fast decode path: :class:`PackedDecoder`, a lean inference copy of a ``Decoder``.

Why part of the decode step is written by hand: at batch 1 and small sizes a decode step is a
handful of one-row matrix products (each bound by how fast its weights stream from memory) plus a
few hundred tiny operations whose cost is Python and PyTorch's per-operation dispatch, not
arithmetic (``benchmarks/generate_speed.py`` compares a plain KV-cache loop and this one with
Hugging Face's ``generate``). ``PackedDecoder`` is an inference-only copy of a
:class:`~lmkit.models.decoder.Decoder`'s weights, laid out once, that does the same maths with
fewer, cheaper operations:

* every product goes through one kernel ("form") chosen once per copy by
  :func:`~lmkit.infer.products.product_form` (MKL, oneDNN, or a kernel compiled on this machine
  for a few rows; :mod:`lmkit.infer.products` says which wins where). Outputs agree to float32
  rounding across forms, not bit for bit. ``benchmarks/generate_speed.py`` and
  ``benchmarks/serve_speed.py`` race the result against ``transformers``;
* q, k, v are one product, and so are a gated MLP's gate and up projections; each norm's weight is
  folded into the rows of the product that follows it (RMSNorm's with a factor √d, leaving only
  x·rsqrt(Σx² + d·eps) to compute; a LayerNorm's bias b becomes the product's bias b·W, added with
  the layer's own bias in one ``addmm``); the residual additions are fused into the output
  products (``addmm``; oneDNN's form adds its product in place);
* rotary positions are one complex multiply: the rows of W_q and W_k are reordered (per head,
  identically for both, which leaves every q·k dot product unchanged) so that the pairs that
  "rotate half" turns together sit side by side as one complex number (GPT-NeoX rotates only the
  first dimensions of each head: the rest are multiplied by 1);
* keys and values go into a preallocated cache in place, and attention reads it through strided
  views (no copies, no concatenation); the prefill projects only its last position onto the
  vocabulary. Grouped-query attention (Llama 3, SmolLM2, Qwen2) keeps only the key/value heads,
  and a one-token step lets each key/value head attend for its group of query heads at once.
* :meth:`PackedDecoder.step_rows` is the same one-token step for rows at different positions (a
  server's requests, each as long as it is, ``lmkit.serve.rows``): each row's key/value goes to its own
  position, rotary angles and learned positions are gathered per row, and -inf hides what lies past it.
* Every layout variant of the decoder is covered: Llama/Qwen2 (RMSNorm, SwiGLU, biases), GPT-2
  (learned positions, LayerNorm, plain tanh-GELU MLP), GPT-NeoX (parallel residual: the MLP reads
  the block's input, normalised once), BLOOM (embedding LayerNorm, ALiBi's slope·key-position
  added to the scores).
The model's own modules, weight names and training path are untouched; tests check the packed
path against the plain forward pass, logits and tokens, for every layout. Each form in use costs one
more set of the model's weights in memory (a process decoding both one row and several may hold
two: a one-thread server does without the compiled kernel) and is rebuilt when the parameters change (an optimizer step).
:func:`packed_decoder` returns None for models it does not recognise (a quantized or 16-bit
checkpoint, another class, ALiBi with grouped-query attention, rotary heads of odd width): those use
the model's own ``forward`` with a :class:`~lmkit.models.layers.KVCache`.
"""

from __future__ import annotations

import copy
import math
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeGuard, cast

import torch
import torch.nn.functional as F
from torch import nn

from lmkit.infer.products import add_mm, mm, pack_matrix, product_form, product_forms, runs_here

if TYPE_CHECKING:
    from lmkit.models.decoder import Decoder, DecoderBlock
    from lmkit.models.layers import RMSNorm


def _pair_rows(w: torch.Tensor, n_heads: int, rot: int | None = None) -> torch.Tensor:
    """Reorder the rows of a query/key projection (n_heads·hd, d_in), or its bias (n_heads·hd,), so
    that, within each head, dimension i and i + rot/2 (the pair rotary positions rotate together in
    the "rotate half" layout, over the first ``rot`` = hd dimensions unless given) sit side by side, as
    the real and imaginary part of one complex number; the unrotated rest keeps its order."""
    rows = w.shape[0]
    hd = rows // n_heads
    rot = hd if rot is None else rot
    per_head = w.reshape(n_heads, hd, -1)  # (H, hd, d_in)
    turned = per_head[:, :rot].reshape(n_heads, 2, rot // 2, -1).transpose(1, 2).reshape(n_heads, rot, -1)
    return torch.cat([turned, per_head[:, rot:]], dim=1).reshape(w.shape)  # rows [x0, x_r, x1, x_r+1, ..., rest]


_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "silu": F.silu,
    "gelu": F.gelu,
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
}


class PackedDecoder:
    """Inference-only copy of a ``Decoder``'s weights, laid out for lean decode steps.

    ``session = packed.start(batch, max_len)`` allocates a key/value cache; ``session.forward(ids
    (B, T))`` appends T tokens and returns the next-token logits (B, V) of the last one. Same maths
    as ``Decoder.forward`` with a ``KVCache``, rearranged (see the module docstring). Grouped-query
    attention keeps the key/value heads only; a one-token step lets each key/value head attend for
    its group of query heads at once (the group as the query length: no copies).
    """

    def __init__(self, model: Decoder, form: str = "mm") -> None:
        if not runs_here(form):
            raise ValueError(f"product form {form!r} is not one of those this machine runs: {product_forms()}")
        cfg = model.cfg
        self.cfg = cfg
        self.form = form  # how the matrices are stored and multiplied (lmkit.infer.products)
        self.d, self.H, self.hd, self.Hkv = cfg.d_model, cfg.n_heads, cfg.head_dim, cfg.kv_heads
        self.dq, self.dkv = self.H * self.hd, self.Hkv * self.hd  # widths of q and of k (= v)
        self.d_eps = torch.tensor(cfg.d_model * cfg.norm_eps, dtype=model.tok_emb.weight.dtype)  # a tensor: adding
        # a Python number wraps it in a new tensor at every call
        self.rms = cfg.norm == "rms"
        self.rotary = cfg.pos_encoding == "rotary"
        self.parallel = cfg.residual == "parallel"
        self.gated = cfg.mlp == "gated"
        self.act: Callable[[torch.Tensor], torch.Tensor] = _ACTIVATIONS[cfg.activation]
        self.ffn = cfg.ffn_width
        with torch.no_grad():
            self.emb = model.tok_emb.weight.detach()  # (V, d)
            self.pos: torch.Tensor | None = None
            if model.pos_emb is not None:
                self.pos = model.pos_emb.weight.detach()  # (max_seq_len, d)
            elif model.pos_table is not None:
                self.pos = model.pos_table  # (max_seq_len, d)
            self.emb_norm = model.emb_norm  # BLOOM's LayerNorm after the embedding, applied as it is

            def packed(
                norm: RMSNorm | nn.LayerNorm | None, ws: list[torch.Tensor], bs: list[torch.Tensor | None] | None = None
            ) -> tuple[Any, torch.Tensor | None]:
                # (in, out) contiguous: a one-row matmul streams it fastest (≈2x F.linear for the
                # vocabulary projection here). The norm weight that precedes it scales its input
                # dimension, so it folds into the rows (RMSNorm: with the √d of _rms); a LayerNorm's
                # bias b becomes the output bias b·W. Returns the matrix and the bias (or None).
                w = torch.cat(ws)  # (out, in)
                bias = None
                if bs is not None and any(b is not None for b in bs):
                    bias = torch.cat([b if b is not None else w.new_zeros(n.shape[0]) for b, n in zip(bs, ws)])
                if norm is not None and not self.rms:
                    folded = w @ cast(torch.Tensor, norm.bias)  # (out,)
                    bias = folded if bias is None else bias + folded
                wt = w.t()  # (in, out)
                if norm is not None:
                    wt = wt * (norm.weight[:, None] * (math.sqrt(self.d) if self.rms else 1.0))
                return pack_matrix(wt, self.form), None if bias is None else bias.contiguous()

            rot = int(model.rope_cos.shape[-1]) if self.rotary else 0  # rotated dimensions of each head
            self.layers: list[dict[str, Any]] = []  # per layer: the matrices, stored for the form
            self.biases: list[dict[str, torch.Tensor | None]] = []  # and the bias of each product, if any
            for block in cast("Iterable[DecoderBlock]", model.blocks):  # a ModuleList yields Module
                a, m = block.attn, block.mlp
                wq: torch.Tensor = a.q_proj.weight
                wk: torch.Tensor = a.k_proj.weight
                bq: torch.Tensor | None = a.q_proj.bias
                bk: torch.Tensor | None = a.k_proj.bias
                if self.rotary:
                    wq, wk = _pair_rows(wq, self.H, rot), _pair_rows(wk, self.Hkv, rot)
                    bq = None if bq is None else _pair_rows(bq, self.H, rot)
                    bk = None if bk is None else _pair_rows(bk, self.Hkv, rot)
                layer: dict[str, Any] = {}
                bias: dict[str, torch.Tensor | None] = {}
                layer["qkv"], bias["qkv"] = packed(block.attn_norm, [wq, wk, a.v_proj.weight], [bq, bk, a.v_proj.bias])
                layer["o"], bias["o"] = packed(None, [a.o_proj.weight], [a.o_proj.bias])  # (dq, d)
                ups = [m.gate_proj, m.up_proj] if m.gate_proj is not None else [m.up_proj]
                # (d, 2f) = [gate | up] for a gated MLP, (d, f) for a plain one
                layer["up"], bias["up"] = packed(block.mlp_norm, [u.weight for u in ups], [u.bias for u in ups])
                layer["down"], bias["down"] = packed(None, [m.down_proj.weight], [m.down_proj.bias])  # (f, d)
                self.layers.append(layer)
                self.biases.append(bias)
            self.out, self.out_b = packed(model.norm, [model.output_weight])  # (d, V), stored for the form
            if self.rotary:
                # e^{i·pos·θ_j} for each complex pair of [q | k | v]: the rotated pairs of q and k heads
                # turn, the rest of each head and all of v are multiplied by 1 (exactly).
                cos, sin = model.rope_cos, model.rope_sin  # (max_seq_len, rot), halves repeated
                turn = torch.complex(cos[:, : rot // 2], sin[:, : rot // 2])  # (L, rot/2)
                head = torch.cat([turn, torch.ones_like(turn[:, :1]).expand(-1, (self.hd - rot) // 2)], dim=1)
                per = head.repeat(1, self.H + self.Hkv)  # (L, (dq+dkv)/2)
                self.freqs = torch.cat([per, torch.ones_like(per[:, : self.dkv // 2])], dim=1).contiguous()
            self.alibi: torch.Tensor | None = None
            attn0 = cast("DecoderBlock", model.blocks[0]).attn
            if attn0.alibi is not None:  # slope_h · key position, (H, 1, max_seq_len)
                positions = torch.arange(cfg.max_seq_len, dtype=torch.float32, device=self.emb.device)
                self.alibi = (attn0.alibi.view(-1, 1, 1) * positions).to(self.emb.dtype)
        self.kv: list[torch.Tensor] = []
        self.k_heads: list[torch.Tensor] = []
        self.v_heads: list[torch.Tensor] = []
        self.length = self.max_len = 0

    def start(self, batch: int, max_len: int, zeroed: bool = False) -> PackedDecoder:
        """A decoding session: the same (shared) weights with a fresh cache for ``batch`` sequences
        of up to ``max_len`` positions. Sessions are independent, so concurrent generations
        (e.g. a server's threads) on one model do not share state. ``zeroed``: the cache starts as
        zeros rather than uninitialised memory, as :meth:`step_rows` needs (a masked-out position
        must still hold a finite number: 0·NaN is NaN)."""
        session = copy.copy(self)
        session._allocate(batch, max_len, zeroed)
        return session

    def _allocate(self, batch: int, max_len: int, zeroed: bool) -> None:
        dq, dkv, Hkv, hd = self.dq, self.dkv, self.Hkv, self.hd
        width = dq + 2 * dkv
        self.batch, self.length, self.max_len = batch, 0, max_len
        opts: dict[str, Any] = {"dtype": self.emb.dtype, "device": self.emb.device}
        alloc = torch.zeros if zeroed else torch.empty
        # per layer (B, L, 2dkv): the keys then the values of each position, side by side
        self.kv = [alloc(batch, max_len, 2 * dkv, **opts) for _ in self.layers]
        self.k_heads = [c[..., :dkv].view(batch, max_len, Hkv, hd).transpose(1, 2) for c in self.kv]  # (B, Hkv, L, hd)
        self.v_heads = [c[..., dkv:].view(batch, max_len, Hkv, hd).transpose(1, 2) for c in self.kv]
        # buffers of the one-token step; views of their first n rows are made once per n (_rows)
        self.qkv_buf = torch.empty(batch, width, **opts)  # [q | k | v] of the new token
        self.rot_buf = torch.empty(batch, width, **opts) if self.rotary else self.qkv_buf  # after rotation
        self.gu_buf = torch.empty(batch, (2 if self.gated else 1) * self.ffn, **opts)
        self._views: dict[int, _StepViews] = {}

    def _rows(self, n: int) -> _StepViews:
        """The one-token step's buffers and cache views for the first n rows (made once per n)."""
        views = self._views.get(n)
        if views is None:
            dq, Hkv, hd, width = self.dq, self.Hkv, self.hd, self.dq + 2 * self.dkv
            qkv, rot, gu = self.qkv_buf[:n], self.rot_buf[:n], self.gu_buf[:n]
            cplx = (
                (torch.view_as_complex(qkv.view(n, width // 2, 2)), torch.view_as_complex(rot.view(n, width // 2, 2)))
                if self.rotary
                else None
            )
            views = self._views[n] = _StepViews(
                qkv=qkv,
                complex=cplx,
                # (n, Hkv, group, hd): a one-token step's query heads, grouped by the key/value head they read
                q=rot[:, :dq].view(n, Hkv, self.H // Hkv, hd),
                kv_new=rot[:, dq:],  # (n, 2dkv) = [k | v]
                gu=gu,
                gate=gu[:, : self.ffn],
                up=gu[:, -self.ffn :],
                kv=[c[:n] for c in self.kv],
                k=[c[:n] for c in self.k_heads],
                v=[c[:n] for c in self.v_heads],
            )
        return views

    def _norm(self, x: torch.Tensor) -> torch.Tensor:
        """The normalised x whose norm weight (and bias) are folded into the next matmul. RMSNorm:
        x / sqrt(sum(x²) + d·eps) = RMSNorm(x) / √d (√d is folded too; a sum instead of a mean saves a
        cast and a division per call). LayerNorm: (x - mean) / sqrt(var + eps)."""
        if self.rms:
            return x * (x * x).sum(-1, keepdim=True).add_(self.d_eps).rsqrt_()
        return F.layer_norm(x, (self.d,), eps=self.cfg.norm_eps)

    def _mm(self, x: torch.Tensor, w: Any, b: torch.Tensor | None, out: torch.Tensor | None = None) -> torch.Tensor:
        """x · w (+ b), into ``out`` when given."""
        return mm(self.form, x, w, b, out)

    def _add_mm(self, acc: torch.Tensor, x: torch.Tensor, w: Any) -> torch.Tensor:
        """acc += x · w, in place (a residual addition fused into the product where the kernel can)."""
        return add_mm(self.form, acc, x, w)

    def _embed(self, ids: torch.Tensor, start: int, B: int, T: int) -> torch.Tensor:
        """Token (+ position) embeddings of ids (B, T) at positions start.., (B·T, d), rows ordered (b, t)."""
        x = F.embedding(ids.reshape(-1), self.emb)  # a fresh tensor we may update in place
        if self.pos is not None:
            x = (x.view(B, T, self.d) + self.pos[start : start + T]).view(B * T, self.d)
        return x if self.emb_norm is None else self.emb_norm(x)

    def forward(self, ids: torch.Tensor, every: bool = False) -> torch.Tensor:
        """Append ids (B, T) to the cache; logits (B, V) of the token after the last one, or with
        ``every`` (B, T, V), the prediction after each of them (a server's echoed prompt)."""
        B, T = ids.shape
        if self.length + T > self.max_len:
            raise ValueError(f"cache of {self.max_len} positions cannot take {self.length + T}")
        if T == 1 and not every:
            return self._step(ids)
        d, dq, dkv, H, hd = self.d, self.dq, self.dkv, self.H, self.hd
        width = dq + 2 * dkv
        past = self.length
        end = past + T
        x = self._embed(ids, past, B, T)  # (N, d), N = B*T
        freqs = self.freqs[past:end] if self.rotary else None  # (T, width/2) complex
        mask: torch.Tensor | None = None
        causal = past == 0
        if past > 0:
            mask = torch.ones(T, end, dtype=torch.bool, device=x.device).tril(diagonal=past)  # (T, S)
        if self.alibi is not None:  # ALiBi: slope_h · key position, causality folded in
            keep = torch.ones(T, end, dtype=torch.bool, device=x.device).tril(diagonal=past)
            mask, causal = self.alibi[:, :, :end].masked_fill(~keep, float("-inf")), False  # (H, T, S)
        gqa = self.Hkv != H
        for layer, bias, kv, kh, vh in zip(self.layers, self.biases, self.kv, self.k_heads, self.v_heads):
            h = self._norm(x)
            qkv = self._mm(h, layer["qkv"], bias["qkv"])  # (N, width)
            if freqs is not None:  # rotate each (x_i, x_i+rot/2) pair of q and k: one complex multiply
                qkv = torch.view_as_real(torch.view_as_complex(qkv.view(B, T, width // 2, 2)) * freqs)
                qkv = qkv.view(B * T, width)  # [q_rot | k_rot | v]
            kv[:, past:end] = qkv[:, dq:].view(B, T, 2 * dkv)
            q = qkv[:, :dq].view(B, T, H, hd).transpose(1, 2)  # (B, H, T, hd)
            y = F.scaled_dot_product_attention(
                q, kh[:, :, :end], vh[:, :, :end], attn_mask=mask, is_causal=causal, enable_gqa=gqa
            )  # (B, H, T, hd)
            attn = y.transpose(1, 2).reshape(B * T, dq)
            mlp_in = h if self.parallel else None  # parallel residual: the MLP reads the block's input too
            x = self._add_mm(x, attn, layer["o"])  # x + o_proj(y)
            if bias["o"] is not None:
                x += bias["o"]
            up = self._mm(self._norm(x) if mlp_in is None else mlp_in, layer["up"], bias["up"])  # (N, f or 2f)
            a = self.act(up[:, : self.ffn]).mul_(up[:, self.ffn :]) if self.gated else self.act(up)
            x = self._add_mm(x, a, layer["down"])  # x + down_proj(act(...))
            if bias["down"] is not None:
                x += bias["down"]
        self.length = end
        if every:
            return self._mm(self._norm(x), self.out, self.out_b).view(B, T, -1)  # (B, T, V)
        last = x.view(B, T, d)[:, -1]  # (B, d)
        return self._mm(self._norm(last), self.out, self.out_b)  # (B, V)

    def _step(self, ids: torch.Tensor) -> torch.Tensor:
        """forward() for one new token per row: the same maths in preallocated buffers, in place."""
        B = ids.shape[0]
        pos = self.length
        x = self._embed(ids, pos, B, 1)  # (B, d)
        freqs = self.freqs[pos] if self.rotary else None  # (width/2,) complex
        mask = self.alibi[:, :, : pos + 1] if self.alibi is not None else None  # (H, 1, S)
        self.length = pos + 1
        return self._one_token(x, self._rows(B), freqs, pos, pos + 1, mask)

    def step_rows(self, ids: torch.Tensor, at: list[int], weights: PackedDecoder | None = None) -> torch.Tensor:
        """One new token for each of the first n rows, row b at its own position ``at[b]`` (a
        server's requests, each as long as it is): ids (n, 1) -> logits (n, V). Row b attends to its
        positions 0..at[b]; the later positions of the longest row are masked out for the others
        (start the session ``zeroed``). ``length`` is left alone: the caller keeps each row's.
        ``weights``: another packed copy of the same model (another product form) to multiply with
        in this step, e.g. MKL's for a lone row where this session's are oneDNN's."""
        n = ids.shape[0]
        end = max(at) + 1
        if end > self.max_len:
            raise ValueError(f"cache of {self.max_len} positions cannot take {end}")
        if min(at) == end - 1:  # every row at one position (one request alone): no mask
            x = self._embed(ids, end - 1, n, 1)
            freqs = self.freqs[end - 1] if self.rotary else None
            mask = self.alibi[:, :, :end] if self.alibi is not None else None
            return self._one_token(x, self._rows(n), freqs, end - 1, end, mask, weights)
        pos = torch.tensor(at, device=self.emb.device)  # (n,)
        x = F.embedding(ids.reshape(-1), self.emb)  # (n, d)
        if self.pos is not None:
            x += self.pos[pos]
        if self.emb_norm is not None:
            x = self.emb_norm(x)
        hide = (torch.arange(end, device=pos.device) > pos[:, None])[:, None, None, :]  # (n, 1, 1, S)
        bias = self.alibi[:, :, :end] if self.alibi is not None else x.new_zeros(1, 1, 1, end)  # (1 or H, 1, S)
        mask = bias.masked_fill(hide, float("-inf"))  # additive: SDPA runs it faster than a boolean mask
        slots = torch.arange(n, device=pos.device) * self.max_len + pos  # each row's new position, rows of (n·L, 2dkv)
        return self._one_token(x, self._rows(n), self.freqs[pos] if self.rotary else None, slots, end, mask, weights)

    def _one_token(
        self,
        x: torch.Tensor,
        r: _StepViews,
        freqs: torch.Tensor | None,
        at: int | torch.Tensor,
        end: int,
        mask: torch.Tensor | None,
        weights: PackedDecoder | None = None,
    ) -> torch.Tensor:
        """The layers for one new token per row, in place: x (n, d) its embedding, written into the
        cache at position ``at`` (every row) or at the flat slots ``at`` (n,) (a row each), attending
        to the first ``end`` positions under ``mask``; the logits (n, V). The products use the
        matrices and kernel of ``weights`` (default: this copy's)."""
        n = x.shape[0]
        w = self if weights is None else weights
        assert weights is None or w.emb.data_ptr() == self.emb.data_ptr(), "step weights packed from another model"
        for layer, bias, kv, kh, vh in zip(w.layers, w.biases, r.kv, r.k, r.v):
            h = self._norm(x)
            w._mm(h, layer["qkv"], bias["qkv"], out=r.qkv)  # (n, width)
            if r.complex is not None:  # rotary: freqs set
                torch.mul(r.complex[0], cast(torch.Tensor, freqs), out=r.complex[1])  # rot_buf = [q_rot | k_rot | v]
            if isinstance(at, int):
                kv[:, at] = r.kv_new
            else:
                kv.view(-1, 2 * self.dkv).index_copy_(0, at, r.kv_new)
            # each key/value head attends for its group of query heads: (n, Hkv, group, hd)
            y = F.scaled_dot_product_attention(r.q, kh.narrow(2, 0, end), vh.narrow(2, 0, end), attn_mask=mask)
            mlp_in = h if self.parallel else None
            w._add_mm(x, y.view(n, self.dq), layer["o"])  # x += o_proj(y)
            if bias["o"] is not None:
                x += bias["o"]
            w._mm(self._norm(x) if mlp_in is None else mlp_in, layer["up"], bias["up"], out=r.gu)
            if not self.gated:
                a = self.act(r.gu)  # (n, f)
            elif self.act is F.silu:
                a = F.silu(r.gate, inplace=True).mul_(r.up)  # silu(gate) * up, in the gate's buffer
            else:
                a = self.act(r.gate).mul_(r.up)
            w._add_mm(x, a, layer["down"])  # x += down_proj(act(...))
            if bias["down"] is not None:
                x += bias["down"]
        return w._mm(self._norm(x), w.out, w.out_b)  # (n, V)


@dataclass
class _StepViews:
    """A session's one-token buffers and cache views for its first n rows (see ``PackedDecoder._rows``)."""

    qkv: torch.Tensor  # (n, width): [q | k | v] of the new token
    complex: tuple[torch.Tensor, torch.Tensor] | None  # rotary: complex views of qkv and of its rotated copy
    q: torch.Tensor  # (n, Hkv, group, hd), in the rotated copy
    kv_new: torch.Tensor  # (n, 2dkv): [k | v], in the rotated copy
    gu: torch.Tensor  # (n, f or 2f): the MLP's up (and gate) projection
    gate: torch.Tensor
    up: torch.Tensor
    kv: list[torch.Tensor]  # per layer (n, L, 2dkv)
    k: list[torch.Tensor]  # per layer (n, Hkv, L, hd) views of kv
    v: list[torch.Tensor]


_PACKED: weakref.WeakKeyDictionary[nn.Module, tuple[tuple[Any, ...], dict[str, PackedDecoder]]] = (
    weakref.WeakKeyDictionary()
)


def _packable(model: nn.Module) -> TypeGuard[Decoder]:
    """Is this exactly lmkit's Decoder on the CPU, with plain fp32 embedding, norm and Linear layers (any of its
    layout variants), in a layout the packed step computes? It declines ALiBi with grouped-query
    attention and rotary heads of odd width (no checkpoint has them): those, quantized and 16-bit
    models decode through the model's own forward and KV cache."""
    from lmkit.models.decoder import Decoder, FeedForward
    from lmkit.models.layers import Attention, RMSNorm

    if type(model) is not Decoder or type(model.tok_emb) is not nn.Embedding:
        return False
    c = model.cfg
    if (c.pos_encoding == "alibi" and c.kv_heads != c.n_heads) or (c.pos_encoding == "rotary" and c.head_dim % 2):
        return False
    if (
        model.tok_emb.weight.dtype != torch.float32
        or model.tok_emb.weight.device.type != "cpu"
        or (
            model.lm_head is not None
            and (type(model.lm_head) is not nn.Linear or model.lm_head.weight.dtype != torch.float32)
        )
    ):
        return False  # a quantized, 16-bit or GPU model: its own forward handles it
    norms = [cast(nn.Module, model.norm), *([cast(nn.Module, model.emb_norm)] if model.emb_norm is not None else [])]
    for block in model.blocks:
        if type(block.attn) is not Attention or type(block.mlp) is not FeedForward:
            return False
        a, m = block.attn, block.mlp
        norms += [cast(nn.Module, block.attn_norm), cast(nn.Module, block.mlp_norm)]
        for lin in (a.q_proj, a.k_proj, a.v_proj, a.o_proj, m.up_proj, m.down_proj, m.gate_proj or m.up_proj):
            if type(lin) is not nn.Linear or lin.weight.dtype != torch.float32:
                return False
    for n in norms:
        if type(n) not in (RMSNorm, nn.LayerNorm) or n.weight.dtype != torch.float32:
            return False
        if isinstance(n, nn.LayerNorm) and (n.bias is None or n.weight is None):
            return False
    return True


def packed_decoder(model: nn.Module, rows: int = 1) -> PackedDecoder | None:
    """The model's packed inference weights for decoding ``rows`` sequences at once with the
    current threads (:func:`~lmkit.infer.products.product_form`; built once per form, rebuilt if parameters changed), or
    None when the model is not a plain lmkit ``Decoder``."""
    if not _packable(model):
        return None
    key = tuple((p.data_ptr(), p._version, p.dtype) for p in model.parameters())
    # the matrices a step streams: an untied embedding is only indexed
    streamed = [p for n, p in model.named_parameters() if n != "tok_emb.weight" or model.lm_head is None]
    form = product_form(rows, sum(p.numel() * p.element_size() for p in streamed))
    hit = _PACKED.get(model)
    if hit is None or hit[0] != key:
        hit = _PACKED[model] = (key, {})
    packed = hit[1].get(form)
    if packed is None:
        packed = hit[1][form] = PackedDecoder(model, form)
    return packed
