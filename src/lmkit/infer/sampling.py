"""Choosing the next token: the decoding settings and the sampling step, as pure functions.

What this module owns:

* :class:`GenerationConfig`: the decoding settings (greedy or sampling, temperature, top-k,
  top-p, seed, end-of-sequence, prompt truncation).
* The sampling step, shared by every family: :func:`apply_temperature`, :func:`top_k_filter`,
  :func:`top_p_filter`, :func:`process_logits` and :func:`choose_next`, which picks the next token
  from one step's logits and, when asked, explains the choice (:class:`StepExplanation`: the top
  candidates with their probabilities before and after the settings changed the distribution;
  :func:`format_step` is the table ``--explain`` shows for a step).
* :func:`within_vocabulary`: the rule that no id past the tokenizer's is ever chosen (an imported
  model's embedding may have padding rows beyond its tokens: T5, Qwen); every decode path (the
  decode loops of :mod:`lmkit.infer.generate`, ``lmkit serve``) cuts its logits with it before choosing.
* :func:`make_generator`: the seeded random generator sampling draws from (a seed is 0 to 2**64-1,
  :func:`lmkit.config.validate_seed`).

Every setting is checked in one place, :meth:`GenerationConfig.validate`, which ``lmkit generate``
and ``lmkit serve`` both call (each naming the setting as its user spelled it: ``--top-k`` or
``top_k``), so no value that passes it can fail inside a decode step.

Temperature. Any finite temperature above 0 is valid, however small: as t falls to 0,
softmax(logits / t) tends to all the probability on the most likely token (split evenly among
exact ties), and that limit is what a tiny t gives. It is computed safely rather than cut off
below a floor: the largest logit is subtracted first, so the top token's scaled logit is exactly
0 and the others are ≤ 0 (at worst -inf, probability 0), never inf - inf = NaN; a t too small for
float32 to hold is that limit itself. A floor would be an arbitrary jump (t just above it samples,
just below it is greedy) and would change results for ordinary small temperatures.

Nothing here runs a model: logits (B, V) in, token ids (B,) out. The decode loops that call it
live in :mod:`lmkit.infer.generate`.
"""

from __future__ import annotations

import functools
import math
import numbers
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import torch

from lmkit.config import SEED_MAX, validate_seed
from lmkit.config_io import ConfigError

Truncate = Literal["error", "left"]
N_CANDIDATES = 5  # candidates shown per step by --explain
_NAMES = {"max_new_tokens": "max new tokens", "top_k": "top-k", "top_p": "top-p"}  # in messages, by default


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

    def validate(self, names: Mapping[str, str] | None = None) -> None:
        """ConfigError (an LmkitError whose ``key`` is the field) for the first setting out of range.

        ``names`` maps field names to what the user typed (``{"top_k": "--top-k"}``) for the message.
        """

        def name(field: str) -> str:
            return (names or {}).get(field, _NAMES.get(field, field))

        def bad(field: str, rule: str, value: object) -> ConfigError:
            return ConfigError(f"{name(field)} must be {rule}, got {value!r}", field)

        if not isinstance(self.max_new_tokens, numbers.Integral) or self.max_new_tokens < 1:
            raise bad("max_new_tokens", "a positive integer", self.max_new_tokens)
        t = self.temperature
        if not isinstance(t, numbers.Real) or not math.isfinite(t) or t < 0:
            raise bad("temperature", "a finite number ≥ 0 (0 = greedy)", t)
        if self.top_k is not None and (not isinstance(self.top_k, numbers.Integral) or self.top_k < 1):
            raise bad("top_k", "at least 1", self.top_k)
        if self.top_p is not None and not (isinstance(self.top_p, numbers.Real) and 0.0 < self.top_p <= 1.0):
            raise bad("top_p", "in (0, 1]", self.top_p)
        if self.seed is not None:
            validate_seed(self.seed, name("seed"))
        if self.truncate not in ("error", "left"):
            raise bad("truncate", "'error' or 'left'", self.truncate)

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


def within_vocabulary(logits: torch.Tensor, vocab: int | None) -> torch.Tensor:
    """Logits (..., V) cut to the first ``vocab`` ids: those a tokenizer of ``vocab`` tokens can decode.

    An embedding may hold more rows than its tokenizer has tokens (T5: 32,128 rows for 32,100 tokens);
    those rows are padding, and a choice among them is no token at all. Cutting (rather than setting
    them to -inf) keeps every id where it was, and probabilities are over the real tokens only.
    ``vocab`` None (or not smaller than V) changes nothing.
    """
    if vocab is None or vocab >= logits.shape[-1]:
        return logits
    if vocab < 1:
        raise ValueError(f"a vocabulary must hold at least one token, got {vocab}")
    return logits[..., :vocab]


def apply_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Logits (..., V) scaled by 1 / temperature (> 0), the largest of each row moved to exactly 0.

    softmax of the result is softmax(logits / t) (a softmax does not change when a constant is
    subtracted). Subtracting first keeps a tiny t safe: the top token stays at 0 and the rest go
    towards -inf, never inf - inf = NaN. A t that the logits' dtype rounds to 0 (below ~1.4e-45 in
    float32) is the limit t -> 0: only the largest logits (exact ties) stay, the rest become -inf.
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0 here (0 means greedy), got {temperature}")
    if temperature == 1.0:
        return logits
    shifted = logits - logits.amax(dim=-1, keepdim=True)  # (..., V), ≤ 0; the top token(s) exactly 0
    if temperature < torch.finfo(logits.dtype).tiny and torch.tensor(temperature, dtype=logits.dtype) == 0:
        return shifted.masked_fill(shifted < 0, float("-inf"))
    return shifted / temperature


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
    # probability of the tokens ranked above each one; exactly 0 for the first
    mass_before = probs.cumsum(dim=-1) - probs
    drop = mass_before >= p  # the set above already reaches p: this token is not needed
    if p <= 0:  # only then could the first be dropped (its mass before is 0 < p otherwise)
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


def choose_next(
    logits: torch.Tensor,
    gen_cfg: GenerationConfig,
    generator: torch.Generator | None,
    explain: bool = False,
    n_candidates: int = N_CANDIDATES,
    step: int = 0,
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
    from; with top-p alone, the sorted logits are; no full-vocabulary scatter. The draw is
    torch.multinomial's own, without its checks (:func:`_draw`).
    """
    x = apply_temperature(rows.float(), gen_cfg.temperature)
    k, p = gen_cfg.top_k, gen_cfg.top_p
    if k is not None and k < x.shape[-1]:
        # topk of the scaled logits, not of the raw ones: scaling keeps their order, but rounding can
        # make two different logits equal, and topk's order among equal values then differs
        vals, idx = torch.topk(x, k, dim=-1)  # (B, k), descending
    elif p is not None and p < 1.0:
        vals, idx = torch.sort(x, dim=-1, descending=True)  # (B, V)
    else:
        return _draw(x.softmax(dim=-1), generator).squeeze(-1)
    if p is not None and p < 1.0:
        vals = _nucleus_of_sorted(vals, p)
    pick = _draw(vals.softmax(dim=-1), generator)  # (B, 1) position among vals
    return idx.gather(-1, pick).squeeze(-1)


def _draw(probs: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """One position per row of probabilities (B, n), (B, 1): ``torch.multinomial(probs, 1, generator=...)``.

    torch draws a single sample as argmax(probs / q) with q ~ Exp(1) for every entry, from the
    generator, after checking that probs hold no NaN, inf or negative value and no row sums to 0;
    those checks are several passes over the row where the draw is one (a decode step's sampling
    cost, ``benchmarks/generate_speed.py``), and a softmax of finite logits passes them (NaN
    logits, a broken model, are not refused here: greedy's argmax does not refuse them either).
    The same draw is made here once :func:`_multinomial_draws_by_exponentials` has
    confirmed that this torch draws that way; otherwise ``torch.multinomial`` is called.
    """
    if not _multinomial_draws_by_exponentials():
        return torch.multinomial(probs, 1, generator=generator)
    q = torch.empty_like(probs).exponential_(generator=generator)
    return probs.div(q).argmax(dim=-1, keepdim=True)


@functools.cache
def _multinomial_draws_by_exponentials() -> bool:
    """Whether ``torch.multinomial(probs, 1)`` picks what :func:`_draw` picks, from the same seeds
    (checked once, on seeded rows of 40 categories, where a different rule would disagree at once)."""
    probs = torch.rand(4, 40, generator=torch.Generator().manual_seed(0))
    for seed in range(8):
        want = torch.multinomial(probs, 1, generator=torch.Generator().manual_seed(seed))
        q = torch.empty_like(probs).exponential_(generator=torch.Generator().manual_seed(seed))
        if not torch.equal(probs.div(q).argmax(dim=-1, keepdim=True), want):
            return False
    return True


# --------------------------------------------------------------------------- the --explain table


_ESCAPES = {"\n": "\\n", "\t": "\\t", "\r": "\\r", "'": "\\'"}


def visible(token: str) -> str:
    """A token quoted with its whitespace and control characters made visible: ``' the'``, ``'\\n'``."""
    out = []
    for ch in token:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ord(ch) < 32 or ord(ch) == 127 or ch in "\u00a0\u200b\ufeff\u2028\u2029":
            out.append(f"\\u{ord(ch):04x}" if ord(ch) > 255 else f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    return "'" + "".join(out) + "'"


def format_step(step: StepExplanation, width: int = 24) -> str:
    """A small table of one step: candidates, probability before → after, the chosen one marked."""
    chosen = step.chosen_candidate
    could = "only it could be chosen" if step.kept == 1 else f"{step.kept} tokens could be chosen"
    lines = [
        f"step {step.step + 1}: chose {visible(chosen.token or str(chosen.token_id))} (id {chosen.token_id}); {could}"
    ]
    lines.append(f"  {'rank':>4}  {'token':<{width}} {'id':>6}  {'before':>7}  {'after':>7}")
    for rank, c in enumerate(step.candidates, 1):
        tok = visible(c.token if c.token is not None else str(c.token_id))
        if len(tok) > width:
            tok = tok[: width - 1] + "…"
        after = f"{c.p_after:7.2%}" if c.p_after > 0 else "    cut"
        label = f"{rank:>4}" if rank <= N_CANDIDATES or c.token_id != step.chosen else "   ·"
        mark = "  ◀ chosen" if c.token_id == step.chosen else ""
        lines.append(f"  {label}  {tok:<{width}} {c.token_id:>6}  {c.p_before:7.2%}  {after}{mark}")
    return "\n".join(lines)


def make_generator(seed: int | None, device: torch.device | str = "cpu") -> tuple[torch.Generator, int]:
    """A random generator for sampling and the seed it was given (a fresh one if seed is None,
    returned so that the run can be repeated). A seed outside 0..2**64-1 is a ConfigError."""
    seed = int.from_bytes(os.urandom(8), "little") >> 1 if seed is None else validate_seed(seed)
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    return gen, seed


def choice_seed(seed: int, index: int) -> int:
    """The seed of the ``index``-th of several samples drawn for one seed (``n`` choices of a
    request): seed + index, wrapping around within 0..2**64-1 so that it is always a valid seed."""
    return (seed + index) % (SEED_MAX + 1)
