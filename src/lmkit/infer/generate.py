"""Text generation: greedy and sampled decoding with a KV cache, explained step by step.

What this module owns:

* :class:`GenerationConfig`: the decoding settings (greedy or sampling, temperature, top-k,
  top-p, seed, end-of-sequence, prompt truncation).
* The sampling step as pure functions, shared by every family: :func:`apply_temperature`,
  :func:`top_k_filter`, :func:`top_p_filter` and :func:`choose_next`, which picks the next token
  from one step's logits and, when asked, explains the choice (top candidates with their
  probabilities before and after the settings changed the distribution).
* :func:`generate` (prompt text in, :class:`GenerationResult` out) for decoder and
  encoder-decoder checkpoints, :func:`generate_ids` (token ids in, token ids out) for decoders,
  :func:`generate_seq2seq_ids` for encoder-decoders, and the ``lmkit generate`` command.

How decoding runs. A decoder reads the prompt once (the "prefill", which fills the key/value
cache) and then feeds one new token per step, attending to the cached keys/values of everything
before it. ``generate_ids(..., cache=False)`` instead recomputes the whole sequence every step:
slow, but obviously right, and the reference the tests compare the cached path against.
An encoder-decoder runs its encoder once, projects the encoder states to every decoder layer's
cross-attention keys/values once, and decodes from a start token with a self-attention cache.

Why part of the decode step is written by hand (:class:`PackedDecoder`): at batch 1 and small
sizes a decode step is a handful of one-row matrix products (each bound by how fast its weights
stream from memory) plus a few hundred tiny operations whose cost is Python and PyTorch's
per-operation dispatch, not arithmetic (``benchmarks/generate_speed.py`` compares a plain KV-cache
loop and this one with Hugging Face's ``generate``). ``PackedDecoder`` is an
inference-only copy of a :class:`~lmkit.models.decoder.Decoder`'s weights, laid out once, that
does the same maths with fewer, cheaper operations:

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
  vocabulary; greedy decoding skips all sampling work.
The model's own modules, weight names and training path are untouched; tests check the packed
path against the plain forward pass, logits and tokens. The copy costs one more set of the
model's weights in memory and is rebuilt when the parameters change (an optimizer step).
Models it does not recognise (a quantized or 16-bit checkpoint, another class) use the model's
own ``forward`` with a :class:`~lmkit.models.layers.KVCache`.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import sys
import time
import weakref
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from lmkit.errors import LmkitError

Truncate = Literal["error", "left"]
StopReason = Literal["eos", "max_new_tokens", "context window"]
N_CANDIDATES = 5  # candidates shown per step by --explain


# --------------------------------------------------------------------------- settings


@dataclass
class GenerationConfig:
    """How to pick tokens.

    Greedy (``do_sample=False``, the default) always takes the most likely next token: the same
    prompt always gives the same text. Sampling draws the next token from the model's
    distribution after three optional changes, applied in this order:

    * ``temperature``: logits are divided by it. Below 1 sharpens the distribution (towards
      greedy; 0 *is* greedy), above 1 flattens it (more surprising choices).
    * ``top_k``: only the k most likely tokens may be drawn.
    * ``top_p`` (nucleus): only the smallest set of most likely tokens whose probabilities add
      up to at least p may be drawn (the top token is always kept).

    ``seed`` makes sampling reproducible; ``truncate="left"`` keeps the end of a prompt that is
    too long for the context window instead of refusing it.
    """

    max_new_tokens: int = 64
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    seed: int | None = None
    stop_at_eos: bool = True
    truncate: Truncate = "error"

    def validate(self) -> None:
        if not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            raise LmkitError(f"max new tokens must be a positive integer, got {self.max_new_tokens!r}")
        if not math.isfinite(self.temperature) or self.temperature < 0:
            raise LmkitError(f"temperature must be a finite number ≥ 0 (0 = greedy), got {self.temperature}")
        if self.top_k is not None and self.top_k < 1:
            raise LmkitError(f"top-k must be at least 1, got {self.top_k}")
        if self.top_p is not None and not 0.0 < self.top_p <= 1.0:
            raise LmkitError(f"top-p must be in (0, 1], got {self.top_p}")
        if self.truncate not in ("error", "left"):
            raise LmkitError(f"truncate must be 'error' or 'left', got {self.truncate!r}")

    @property
    def greedy(self) -> bool:
        """True when the choice is the argmax of the logits (no sampling, or temperature 0)."""
        return not self.do_sample or self.temperature == 0

    def describe(self) -> str:
        """The settings in words, e.g. ``sampling: temperature 0.7, top-k 40, top-p 0.9``."""
        if not self.do_sample:
            return "greedy (always the most likely token)"
        if self.temperature == 0:
            return "greedy (sampling at temperature 0)"
        parts = [f"temperature {self.temperature:g}"]
        if self.top_k is not None:
            parts.append(f"top-k {self.top_k}")
        if self.top_p is not None:
            parts.append(f"top-p {self.top_p:g}")
        return "sampling: " + ", ".join(parts)


# --------------------------------------------------------------------------- the sampling step


def apply_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """logits / temperature (temperature > 0). softmax(logits / t) is sharper for t < 1."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0 here (0 means greedy), got {temperature}")
    return logits if temperature == 1.0 else logits / temperature


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Logits (..., V) with all but the k largest of each row set to -inf (exactly k kept)."""
    if k >= logits.shape[-1]:
        return logits
    values, idx = torch.topk(logits, k, dim=-1)  # (..., k)
    return torch.full_like(logits, float("-inf")).scatter_(-1, idx, values)


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Logits (..., V) restricted to the nucleus: the smallest set of most likely tokens whose
    total probability is ≥ p; the rest become -inf. The most likely token is always kept."""
    if p >= 1.0:
        return logits
    sorted_logits, idx = torch.sort(logits, dim=-1, descending=True)  # (..., V)
    return torch.empty_like(logits).scatter_(-1, idx, _nucleus_of_sorted(sorted_logits, p))


def _nucleus_of_sorted(sorted_logits: torch.Tensor, p: float) -> torch.Tensor:
    """top_p_filter for logits already sorted in descending order along the last dimension."""
    probs = sorted_logits.float().softmax(dim=-1)
    mass_before = probs.cumsum(dim=-1) - probs  # probability of the tokens ranked above each one
    drop = mass_before >= p  # the set above already reaches p: this token is not needed
    drop[..., 0] = False
    return sorted_logits.masked_fill(drop, float("-inf"))


def process_logits(logits: torch.Tensor, gen_cfg: GenerationConfig) -> torch.Tensor:
    """Temperature, then top-k, then top-p: the logits sampling draws from (float32)."""
    out = apply_temperature(logits.float(), gen_cfg.temperature)
    if gen_cfg.top_k is not None:
        out = top_k_filter(out, gen_cfg.top_k)
    if gen_cfg.top_p is not None:
        out = top_p_filter(out, gen_cfg.top_p)
    return out


@dataclass
class Candidate:
    """One candidate token of a step: probability before and after the settings."""

    token_id: int
    p_before: float
    p_after: float
    token: str | None = None  # readable form, filled in when a tokenizer is at hand


@dataclass
class StepExplanation:
    """Why one token was chosen: the top candidates before/after temperature, top-k, top-p."""

    step: int
    chosen: int
    candidates: list[Candidate]  # the most likely tokens (and the chosen one if it is not among them)
    kept: int  # tokens that could still be chosen after the settings (1 for greedy)
    mode: str  # GenerationConfig.describe()

    @property
    def chosen_candidate(self) -> Candidate:
        return next(c for c in self.candidates if c.token_id == self.chosen)


def choose_next(logits: torch.Tensor, gen_cfg: GenerationConfig, generator: torch.Generator | None,
                explain: bool = False, n_candidates: int = N_CANDIDATES, step: int = 0,
                ) -> tuple[torch.Tensor, list[StepExplanation] | None]:
    """Pick the next token of each row of logits (B, V) (or (V,)).

    Returns the tokens (B,) (or a 0-d tensor) and, with ``explain``, one
    :class:`StepExplanation` per row (else None). Family-independent: any model that produces
    next-token logits uses this.
    """
    squeeze = logits.dim() == 1
    rows = logits[None] if squeeze else logits  # (B, V)
    if gen_cfg.greedy:
        token = rows.argmax(dim=-1)  # (B,)
    else:
        token = _sample(rows, gen_cfg, generator)
    explanation = None
    if explain:
        before = rows.float().softmax(dim=-1)  # (B, V)
        if gen_cfg.greedy:  # all the probability on the chosen token
            after = torch.zeros_like(before).scatter_(-1, token[:, None], 1.0)
        else:
            after = process_logits(rows, gen_cfg).softmax(dim=-1)  # (B, V)
        explanation = []
        n = min(n_candidates, rows.shape[-1])
        top = torch.topk(before, n, dim=-1).indices  # (B, n)
        kept = (after > 0).sum(dim=-1)
        for b in range(rows.shape[0]):
            ids = top[b].tolist()
            chosen = int(token[b])
            if chosen not in ids:
                ids.append(chosen)
            cands = [Candidate(i, float(before[b, i]), float(after[b, i])) for i in ids]
            explanation.append(StepExplanation(step, chosen, cands, int(kept[b]), gen_cfg.describe()))
    return (token[0] if squeeze else token), explanation


def _sample(rows: torch.Tensor, gen_cfg: GenerationConfig, generator: torch.Generator | None) -> torch.Tensor:
    """Draw one token per row of logits (B, V) from softmax(process_logits(rows)).

    The same distribution as filtering the whole vocabulary, computed on less: with top-k, only
    the k best logits (which ``topk`` returns sorted) are scaled, cut to the nucleus and drawn
    from; with top-p alone, the sorted logits are; no full-vocabulary scatter.
    """
    x = apply_temperature(rows.float(), gen_cfg.temperature)
    k, p = gen_cfg.top_k, gen_cfg.top_p
    if k is not None and k < x.shape[-1]:
        vals, idx = torch.topk(x, k, dim=-1)  # (B, k), descending
    elif p is not None and p < 1.0:
        vals, idx = torch.sort(x, dim=-1, descending=True)  # (B, V)
    else:
        return torch.multinomial(x.softmax(dim=-1), 1, generator=generator).squeeze(-1)
    if p is not None and p < 1.0:
        vals = _nucleus_of_sorted(vals, p)
    pick = torch.multinomial(vals.softmax(dim=-1), 1, generator=generator)  # (B, 1) position among vals
    return idx.gather(-1, pick).squeeze(-1)


def make_generator(seed: int | None, device: torch.device | str = "cpu") -> tuple[torch.Generator, int]:
    """A random generator for sampling and the seed it was given (a fresh one if seed is None,
    returned so that the run can be repeated)."""
    if seed is None:
        seed = int.from_bytes(os.urandom(8), "little") >> 1
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    return gen, seed


# --------------------------------------------------------------------------- the decode loop


@dataclass
class _LoopResult:
    tokens: torch.Tensor  # (B, n) generated ids
    stop_reason: StopReason
    steps: list[StepExplanation]


def _decode_loop(prefill: Callable[[], torch.Tensor], step: Callable[[torch.Tensor], torch.Tensor],
                 n_max: int, limit_reason: StopReason, gen_cfg: GenerationConfig,
                 generator: torch.Generator | None, eos_id: int | None, explain: bool = False,
                 on_token: Callable[[int], None] | None = None) -> _LoopResult:
    """Run choose_next / step until EOS (every row), ``n_max`` tokens or the context limit.

    ``prefill()`` returns the first next-token logits (B, V); ``step(tokens (B, 1))`` feeds the
    chosen tokens and returns the following logits. ``limit_reason`` is the stop reason when
    ``n_max`` tokens were made (max_new_tokens, or the context window when that is smaller).
    Rows that have finished keep emitting ``eos_id`` until every row has.
    """
    logits = prefill()  # (B, V)
    B = logits.shape[0]
    out = torch.empty(B, n_max, dtype=torch.long, device=logits.device)
    watch_eos = gen_cfg.stop_at_eos and eos_id is not None
    finished = torch.zeros(B, dtype=torch.bool, device=logits.device) if watch_eos and B > 1 else None
    fast_greedy = gen_cfg.greedy and not explain
    steps: list[StepExplanation] = []
    n, reason = 0, limit_reason
    while n < n_max:
        if fast_greedy:
            token = logits.argmax(dim=-1)  # (B,)
        else:
            token, expl = choose_next(logits, gen_cfg, generator, explain=explain, step=n)
            if expl:
                steps.append(expl[0])
        if finished is not None:
            token = token.masked_fill(finished, eos_id)  # type: ignore[arg-type]
        out[:, n] = token
        n += 1
        if on_token is not None:
            on_token(int(token[0]))
        if watch_eos:
            if finished is None:
                if int(token[0]) == eos_id:
                    reason = "eos"
                    break
            else:
                finished |= token == eos_id
                if bool(finished.all()):
                    reason = "eos"
                    break
        if n < n_max:
            logits = step(token[:, None])
    return _LoopResult(out[:, :n], reason, steps)


# --------------------------------------------------------------------------- decoder: packed fast path


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

    def __init__(self, model: nn.Module) -> None:
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
            for block in model.blocks:
                a, m = block.attn, block.mlp
                wq, wk = a.q_proj.weight, a.k_proj.weight
                if self.rotary:
                    wq, wk = _pair_rows(wq, self.H), _pair_rows(wk, self.H)
                self.layers.append({
                    "qkv": packed(block.attn_norm.weight, wq, wk, a.v_proj.weight),  # (d, 3d)
                    "o": packed(None, a.o_proj.weight),  # (d, d)
                    "gate_up": packed(block.mlp_norm.weight, m.gate_proj.weight, m.up_proj.weight),  # (d, 2f)
                    "down": packed(None, m.down_proj.weight),  # (f, d)
                })
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
        opts = {"dtype": self.emb.dtype, "device": self.emb.device}
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
        self.gate, self.up = self.gu_buf[:, :self.ffn], self.gu_buf[:, self.ffn:]

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
            y = F.scaled_dot_product_attention(q, kh[:, :, :end], vh[:, :, :end], attn_mask=mask,
                                               is_causal=causal)  # (B, H, T, hd)
            x = torch.addmm(x, y.transpose(1, 2).reshape(B * T, d), layer["o"])  # x + o_proj(y)
            gu = torch.mm(self._rms(x), layer["gate_up"])  # (N, 2f)
            a = F.silu(gu[:, :self.ffn]).mul_(gu[:, self.ffn:])
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


def _packable(model: nn.Module) -> bool:
    """Is this exactly lmkit's Decoder with plain fp32 embedding and Linear layers?"""
    from lmkit.models.decoder import Decoder, SwiGLU
    from lmkit.models.layers import Attention

    if type(model) is not Decoder or type(model.tok_emb) is not nn.Embedding:
        return False
    if model.tok_emb.weight.dtype != torch.float32 or (model.lm_head is not None and (
            type(model.lm_head) is not nn.Linear or model.lm_head.weight.dtype != torch.float32)):
        return False  # e.g. a quantized or 16-bit cast checkpoint: the model's own forward handles it
    for block in model.blocks:
        if type(block.attn) is not Attention or type(block.mlp) is not SwiGLU:
            return False
        for lin in (block.attn.q_proj, block.attn.k_proj, block.attn.v_proj, block.attn.o_proj,
                    block.mlp.gate_proj, block.mlp.up_proj, block.mlp.down_proj):
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


class _EvalMode:
    """Put a module in eval mode for a block and restore its previous mode after."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.was_training = model.training

    def __enter__(self) -> None:
        if self.was_training:
            self.model.eval()

    def __exit__(self, *exc: object) -> None:
        if self.was_training:
            self.model.train()


def _device(model: nn.Module) -> torch.device:
    """Where the model's tensors live (parameters, or buffers for a fully quantized model)."""
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


def _check_family(model: nn.Module) -> str:
    family = getattr(getattr(model, "cfg", None), "family", None)
    if family == "encoder":
        raise LmkitError("encoder models do not generate text; use `lmkit fill-mask`")
    if family not in ("decoder", "encdec"):
        raise LmkitError(f"cannot generate with a model of family {family!r} (expected decoder or encdec)")
    return family


def _decoder_loop(model: nn.Module, input_ids: torch.Tensor, gen_cfg: GenerationConfig, cache: bool,
                  eos_id: int | None, generator: torch.Generator | None, explain: bool = False,
                  on_token: Callable[[int], None] | None = None) -> _LoopResult:
    window = model.cfg.max_seq_len
    B, T = input_ids.shape
    if T < 1:
        raise LmkitError("cannot generate from an empty sequence: give at least one token (e.g. BOS)")
    if T >= window:
        raise LmkitError(f"prompt is {T} tokens but the context window is {window} tokens "
                         f"(at most {window - 1} leave room for a new token); shorten it or truncate it "
                         "from the left (--truncate left)")
    n_max = min(gen_cfg.max_new_tokens, window - T)
    limit: StopReason = "max_new_tokens" if n_max == gen_cfg.max_new_tokens else "context window"
    seq = input_ids

    if not cache:
        def prefill() -> torch.Tensor:
            return model(seq)[:, -1]

        def step(tok: torch.Tensor) -> torch.Tensor:
            nonlocal seq
            seq = torch.cat([seq, tok], dim=1)  # (B, T + n)
            return model(seq)[:, -1]
    else:
        packed = packed_decoder(model)
        if packed is not None:
            session = packed.start(B, T + n_max)

            def prefill() -> torch.Tensor:
                return session.forward(seq)

            step = session.forward
        else:
            kv = model.new_cache(B, T + n_max)

            def prefill() -> torch.Tensor:
                return model(seq, kv)[:, -1]

            def step(tok: torch.Tensor) -> torch.Tensor:
                return model(tok, kv)[:, -1]

    return _decode_loop(prefill, step, n_max, limit, gen_cfg, generator, eos_id, explain, on_token)


def generate_ids(model: nn.Module, input_ids: torch.Tensor, gen_cfg: GenerationConfig, cache: bool = True,
                 eos_id: int | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """Continue each row of input_ids (B, T) with a decoder; returns (B, T + n) ids.

    ``cache=True`` prefills the prompt once and feeds one token per step through the KV cache;
    ``cache=False`` recomputes the whole sequence every step (the reference). Stops after
    ``max_new_tokens``, when the context window is full, or (with ``eos_id`` and
    ``stop_at_eos``) once every row has produced ``eos_id`` (finished rows are padded with it).
    ``generator`` defaults to one seeded with ``gen_cfg.seed``.
    """
    gen_cfg.validate()
    if _check_family(model) != "decoder":
        raise LmkitError("generate_ids is for decoder models; use generate_seq2seq_ids for encoder-decoders")
    device = _device(model)
    if generator is None and not gen_cfg.greedy:
        generator, _ = make_generator(gen_cfg.seed, device)
    ids = input_ids.to(device)
    with torch.inference_mode(), _EvalMode(model):
        res = _decoder_loop(model, ids, gen_cfg, cache, eos_id, generator)
    return torch.cat([ids, res.tokens], dim=1)


# --------------------------------------------------------------------------- encoder-decoder


def _seq2seq_loop(model: nn.Module, input_ids: torch.Tensor, gen_cfg: GenerationConfig, start_id: int,
                  cache: bool, eos_id: int | None, generator: torch.Generator | None, explain: bool = False,
                  on_token: Callable[[int], None] | None = None,
                  attention_mask: torch.Tensor | None = None) -> _LoopResult:
    B, S = input_ids.shape
    if S > model.cfg.max_seq_len:
        raise LmkitError(f"input is {S} tokens but the encoder's context window is {model.cfg.max_seq_len} "
                         "tokens; shorten it or truncate it from the left (--truncate left)")
    n_max = gen_cfg.max_new_tokens
    enc = model.encode(input_ids, attention_mask)  # (B, S, C), once
    start = torch.full((B, 1), start_id, dtype=torch.long, device=input_ids.device)
    if cache:
        cross = model.cross_kv(enc)  # every decoder layer's cross keys/values, once
        kv = model.new_cache(B, n_max)

        def run(tok: torch.Tensor) -> torch.Tensor:
            h = model.decode(tok, None, attention_mask, cache=kv, cross_kv=cross)  # (B, 1, C)
            return model.logits(h[:, -1])

        def prefill() -> torch.Tensor:
            return run(start)
    else:
        dec = start

        def prefill() -> torch.Tensor:
            return model.logits(model.decode(dec, enc, attention_mask)[:, -1])

        def run(tok: torch.Tensor) -> torch.Tensor:
            nonlocal dec
            dec = torch.cat([dec, tok], dim=1)
            return model.logits(model.decode(dec, enc, attention_mask)[:, -1])

    return _decode_loop(prefill, run, n_max, "max_new_tokens", gen_cfg, generator, eos_id, explain, on_token)


def generate_seq2seq_ids(model: nn.Module, input_ids: torch.Tensor, gen_cfg: GenerationConfig, start_id: int,
                         eos_id: int | None = None, cache: bool = True,
                         attention_mask: torch.Tensor | None = None,
                         generator: torch.Generator | None = None) -> torch.Tensor:
    """Encoder-decoder generation: encode input_ids (B, S) once, then decode from ``start_id``.

    Returns the generated decoder ids (B, n) (without the start token). ``cache=False``
    re-runs the decoder over its whole output every step (the reference for the cached path).
    The model must provide ``encode``, ``cross_kv``, ``decode``, ``logits`` and ``new_cache``
    (``lmkit.models.encdec.EncoderDecoder``).
    """
    gen_cfg.validate()
    if _check_family(model) != "encdec":
        raise LmkitError("generate_seq2seq_ids is for encoder-decoder models")
    device = _device(model)
    if generator is None and not gen_cfg.greedy:
        generator, _ = make_generator(gen_cfg.seed, device)
    with torch.inference_mode(), _EvalMode(model):
        res = _seq2seq_loop(model, input_ids.to(device), gen_cfg, start_id, cache, eos_id, generator,
                            attention_mask=attention_mask)
    return res.tokens


# --------------------------------------------------------------------------- text in, text out


@dataclass
class GenerationResult:
    """One generation: the prompt, what was added, and how it went."""

    prompt: str
    completion: str
    text: str  # prompt + completion
    prompt_ids: list[int]  # the ids the model read (after truncation)
    token_ids: list[int]  # generated ids (including a final EOS when it stopped there)
    stop_reason: StopReason
    tokens_per_s: float
    elapsed_s: float
    truncated_tokens: int = 0  # prompt tokens dropped by truncate="left"
    steps: list[StepExplanation] = field(default_factory=list)  # with explain=True
    settings: dict[str, Any] = field(default_factory=dict)  # GenerationConfig fields, seed resolved

    def to_dict(self) -> dict[str, Any]:
        d = {
            "prompt": self.prompt, "completion": self.completion, "text": self.text,
            "tokens": self.token_ids, "prompt_tokens": len(self.prompt_ids),
            "new_tokens": len(self.token_ids), "truncated_prompt_tokens": self.truncated_tokens,
            "stop_reason": self.stop_reason, "tokens_per_s": round(self.tokens_per_s, 2),
            "elapsed_s": round(self.elapsed_s, 4), "settings": self.settings,
        }
        if self.steps:
            d["steps"] = [asdict(s) for s in self.steps]
        return d


def visible(token: str) -> str:
    """A token quoted with its whitespace and control characters made visible: ``' the'``, ``'\\n'``."""
    out = []
    for ch in token:
        if ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "'":
            out.append("\\'")
        elif ord(ch) < 32 or ord(ch) == 127 or ch in "\u00a0\u200b\ufeff\u2028\u2029":
            out.append(f"\\u{ord(ch):04x}" if ord(ch) > 255 else f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    return "'" + "".join(out) + "'"


def format_step(step: StepExplanation, width: int = 24) -> str:
    """A small table of one step: candidates, probability before → after, the chosen one marked."""
    chosen = step.chosen_candidate
    could = "only it could be chosen" if step.kept == 1 else f"{step.kept} tokens could be chosen"
    lines = [f"step {step.step + 1}: chose {visible(chosen.token or str(chosen.token_id))} "
             f"(id {chosen.token_id}); {could}"]
    lines.append(f"  {'rank':>4}  {'token':<{width}} {'id':>6}  {'before':>7}  {'after':>7}")
    for rank, c in enumerate(step.candidates, 1):
        tok = visible(c.token if c.token is not None else str(c.token_id))
        if len(tok) > width:
            tok = tok[:width - 1] + "…"
        after = f"{c.p_after:7.2%}" if c.p_after > 0 else "    cut"
        label = f"{rank:>4}" if rank <= N_CANDIDATES or c.token_id != step.chosen else "   ·"
        mark = "  ◀ chosen" if c.token_id == step.chosen else ""
        lines.append(f"  {label}  {tok:<{width}} {c.token_id:>6}  {c.p_before:7.2%}  {after}{mark}")
    return "\n".join(lines)


def _encode_prompt(tokenizer: Any, prompt: str) -> list[int]:
    return list(tokenizer.encode(prompt)) if prompt else []


def _completion_text(tokenizer: Any, prompt_ids: list[int], new_ids: list[int], seq2seq: bool = False) -> str:
    """Text the new ids add after the prompt, decoded together with the prompt so that a character
    whose bytes straddle the boundary comes out whole. An encoder-decoder's output keeps its
    sentinels (``<extra_id_0> filled span <extra_id_1> ...``), which say which gap each span fills."""
    if seq2seq:
        plain = {tokenizer.pad_id, tokenizer.bos_id, tokenizer.eos_id}
        return tokenizer.decode([i for i in new_ids if i not in plain], skip_special=False)
    if not prompt_ids:
        return tokenizer.decode(new_ids)
    before = tokenizer.decode(prompt_ids)
    full = tokenizer.decode(prompt_ids + new_ids)
    return full[len(before):] if full.startswith(before) else tokenizer.decode(new_ids)


def generate(model: nn.Module, tokenizer: Any, prompt: str, gen_cfg: GenerationConfig | None = None,
             explain: bool = False, stream: Callable[[str], None] | None = None,
             start_id: int | None = None) -> GenerationResult:
    """Complete ``prompt`` with a decoder (or answer it with an encoder-decoder).

    Decoder: the prompt is read once into the KV cache, then one token is added per step; an
    empty prompt starts from the BOS token. A prompt longer than the context window is an
    error, or with ``truncate="left"`` loses its first tokens so that the prompt and
    ``max_new_tokens`` fit. Encoder-decoder: see :func:`generate_seq2seq`.
    ``stream`` receives the completion piece by piece as it is generated.
    """
    gen_cfg = gen_cfg or GenerationConfig()
    gen_cfg.validate()
    family = _check_family(model)
    if family == "encdec":
        return generate_seq2seq(model, tokenizer, prompt, gen_cfg, explain=explain, stream=stream,
                                start_id=start_id)
    ids = _encode_prompt(tokenizer, prompt)
    if not ids:
        if tokenizer.bos_id < 0:
            raise LmkitError("empty prompt and the tokenizer has no BOS token to start from")
        ids = [tokenizer.bos_id]
    window = model.cfg.max_seq_len
    truncated = 0
    if gen_cfg.truncate == "left":
        keep = max(1, min(window - 1, window - gen_cfg.max_new_tokens))
        if len(ids) > keep:
            truncated = len(ids) - keep
            ids = ids[truncated:]
    elif len(ids) >= window:
        raise LmkitError(f"prompt is {len(ids)} tokens but the context window is {window} tokens "
                         f"(at most {window - 1} leave room for a new token); shorten it or use --truncate left")
    return _run_text(model, tokenizer, prompt, ids, truncated, gen_cfg, explain, stream,
                     lambda inp, g, on_tok: _decoder_loop(model, inp, gen_cfg, True, tokenizer.eos_id, g,
                                                          explain, on_tok))


def generate_seq2seq(model: nn.Module, tokenizer: Any, prompt: str, gen_cfg: GenerationConfig | None = None,
                     explain: bool = False, stream: Callable[[str], None] | None = None,
                     start_id: int | None = None) -> GenerationResult:
    """Encoder-decoder generation from text: the encoder reads ``prompt`` + EOS once, the decoder
    writes from ``start_id`` (default: the pad token, T5's decoder start) until EOS.

    The prompt may hold special tokens such as ``<extra_id_0>`` (span infilling); the result's
    ``text`` is the prompt followed by the decoded output.
    """
    gen_cfg = gen_cfg or GenerationConfig()
    gen_cfg.validate()
    if start_id is None:
        start_id = tokenizer.pad_id
    ids = list(tokenizer.encode(prompt, allow_special=True)) if prompt else []
    if tokenizer.eos_id >= 0:
        ids.append(tokenizer.eos_id)
    window = model.cfg.max_seq_len
    truncated = 0
    if len(ids) > window:
        if gen_cfg.truncate != "left":
            raise LmkitError(f"input is {len(ids)} tokens but the encoder's context window is {window} tokens; "
                             "shorten it or use --truncate left")
        truncated = len(ids) - window
        ids = ids[truncated:]
    return _run_text(model, tokenizer, prompt, ids, truncated, gen_cfg, explain, stream,
                     lambda inp, g, on_tok: _seq2seq_loop(model, inp, gen_cfg, start_id, True, tokenizer.eos_id,
                                                          g, explain, on_tok),
                     seq2seq=True)


def _run_text(model: nn.Module, tokenizer: Any, prompt: str, ids: list[int], truncated: int,
              gen_cfg: GenerationConfig, explain: bool, stream: Callable[[str], None] | None,
              loop: Callable[[torch.Tensor, torch.Generator | None, Callable[[int], None] | None], _LoopResult],
              seq2seq: bool = False) -> GenerationResult:
    device = _device(model)
    generator, seed = make_generator(gen_cfg.seed, device) if not gen_cfg.greedy else (None, gen_cfg.seed)
    context_ids = [] if seq2seq else ids  # what the completion text continues
    on_token = None
    if stream is not None:
        made: list[int] = []
        shown = [0]

        def on_token(tok: int) -> None:
            made.append(tok)
            text = _completion_text(tokenizer, context_ids, made, seq2seq)
            if text.endswith("\ufffd"):
                return  # a character's bytes are not all there yet
            if len(text) > shown[0]:
                stream(text[shown[0]:])
                shown[0] = len(text)

    inp = torch.tensor([ids], dtype=torch.long, device=device)
    t0 = time.perf_counter()
    with torch.inference_mode(), _EvalMode(model):
        res = loop(inp, generator, on_token)
    elapsed = time.perf_counter() - t0
    new = res.tokens[0].tolist()
    text_ids = new[:-1] if new and res.stop_reason == "eos" else new
    completion = _completion_text(tokenizer, context_ids, text_ids, seq2seq)
    if stream is not None and len(completion) > shown[0]:
        stream(completion[shown[0]:])
    for s in res.steps:
        for c in s.candidates:
            c.token = tokenizer.token_str(c.token_id)
    settings = asdict(gen_cfg)
    settings["seed"] = seed
    if seq2seq:
        text = prompt + ("\n" if prompt and completion else "") + completion
    else:
        text = prompt + completion
    return GenerationResult(prompt=prompt, completion=completion, text=text, prompt_ids=ids, token_ids=new,
                            stop_reason=res.stop_reason, tokens_per_s=len(new) / elapsed if elapsed > 0 else 0.0,
                            elapsed_s=elapsed, truncated_tokens=truncated, steps=res.steps, settings=settings)


# --------------------------------------------------------------------------- command line


def _style(text: str, code: str, on: bool) -> str:
    return f"\x1b[{code}m{text}\x1b[0m" if on and text else text


def cli_generate(args: argparse.Namespace) -> int:
    """``lmkit generate CKPT "prompt" [...]``: print the prompt followed by its completion."""
    from lmkit.models.checkpoint import load_model, load_model_config, load_tokenizer

    gen_cfg = GenerationConfig(max_new_tokens=args.max_new_tokens, do_sample=args.sample,
                               temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, seed=args.seed,
                               stop_at_eos=not args.no_stop_at_eos, truncate=args.truncate)
    gen_cfg.validate()
    if not args.sample and (args.temperature != 1.0 or args.top_k is not None or args.top_p is not None):
        print("lmkit: note: --temperature, --top-k and --top-p change sampling only; without --sample decoding "
              "is greedy (always the most likely token)", file=sys.stderr)
    if load_model_config(args.checkpoint).family == "encoder":
        raise LmkitError("encoder models do not generate text; use `lmkit fill-mask`")
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        torch.empty(0, device=device)
    except (RuntimeError, AssertionError) as e:
        raise LmkitError(f"--device {args.device}: not usable here ({str(e).splitlines()[0]})") from None
    tokenizer = load_tokenizer(args.checkpoint)
    model = load_model(args.checkpoint, device=device)
    if tokenizer.vocab_size > model.cfg.vocab_size:
        raise LmkitError(f"{args.checkpoint}: tokenizer has {tokenizer.vocab_size} tokens but the model only "
                         f"{model.cfg.vocab_size}")

    color = sys.stdout.isatty() and not os.environ.get("NO_COLOR")
    streaming = color and not args.json and not args.explain
    if streaming:  # show the prompt, then the completion as it is made
        sys.stdout.write(_style(args.prompt, "2", True) + ("\n" if model.cfg.family == "encdec" and args.prompt
                                                            else ""))
        sys.stdout.flush()

    def stream(piece: str) -> None:
        sys.stdout.write(_style(piece, "1", True))
        sys.stdout.flush()

    res = generate(model, tokenizer, args.prompt, gen_cfg, explain=args.explain,
                   stream=stream if streaming else None)
    if res.truncated_tokens:
        print(f"lmkit: note: the prompt was truncated: its first {res.truncated_tokens} tokens were dropped "
              f"to fit the context window of {model.cfg.max_seq_len}", file=sys.stderr)
    if args.json:
        print(json.dumps(res.to_dict(), ensure_ascii=False, indent=2))
        return 0
    if args.explain:
        print(f"{gen_cfg.describe()}. Each step shows the {N_CANDIDATES} most likely next tokens: 'before' is\n"
              "the model's probability, 'after' the probability it was chosen with once the settings are applied\n"
              "('cut' = excluded).\n")
        for s in res.steps:
            print(format_step(s))
            print()
    if streaming:
        sys.stdout.write("\n")
    else:
        sep = "\n" if model.cfg.family == "encdec" and res.prompt and res.completion else ""
        print(_style(res.prompt, "2", color) + sep + _style(res.completion, "1", color))
    print(f"[{len(res.token_ids)} tokens, stopped by {res.stop_reason}, {res.tokens_per_s:.1f} tokens/s, "
          f"{gen_cfg.describe()}" + (f", seed {res.settings['seed']}" if not gen_cfg.greedy else "") + "]",
          file=sys.stderr)
    return 0
