"""Scoring in-context answers: pure functions a test can check by hand.

What this module owns:

* :func:`split_at_boundary`: where the continuation starts in the tokens of ``prompt +
  continuation`` tokenised as one text (a token that straddles the boundary, "Ans" + "wer"
  merged into one, belongs to the continuation, so the continuation is never empty);
* :func:`choose`: the three multiple-choice predictions from the log-likelihoods: ``acc`` (the
  largest sum of log-probabilities), ``acc_norm`` (largest sum per character of the continuation,
  as lm-evaluation-harness normalises) and ``calibrated`` (GPT-3: the largest
  log P(choice | prompt) - log P(choice | calibration context), i.e. P(choice | prompt) /
  P(choice | "Answer:"));
* :func:`cut_answer` and :func:`exact_match` for free-form answers;
* :func:`bootstrap_ci`: the 95% percentile interval of a mean over resampled examples.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

MC_METRICS = ("acc", "acc_norm", "calibrated")
GEN_METRICS = ("exact_match",)
N_BOOT = 1000


def split_at_boundary(token_ends: Sequence[int], prompt_len: int) -> int:
    """How many leading tokens are wholly prompt: tokens whose end offset (bytes or characters,
    cumulative) is at most ``prompt_len``. The rest (at least the last token) is the continuation."""
    n = 0
    for end in token_ends:
        if end > prompt_len:
            break
        n += 1
    return min(n, max(0, len(token_ends) - 1))


def argmax(values: Sequence[float]) -> int:
    """Index of the largest value; the first one on a tie."""
    best = 0
    for i, v in enumerate(values):
        if v > values[best]:
            best = i
    return best


def choose(loglik: Sequence[float], cont_chars: Sequence[int], loglik_uncond: Sequence[float] | None) -> dict[str, int]:
    """The choice each multiple-choice metric picks: ``acc`` by ``loglik`` (summed over the
    continuation's tokens), ``acc_norm`` by ``loglik / cont_chars``, ``calibrated`` by
    ``loglik - loglik_uncond`` (when given)."""
    out = {"acc": argmax(loglik), "acc_norm": argmax([ll / max(1, n) for ll, n in zip(loglik, cont_chars)])}
    if loglik_uncond is not None:
        out["calibrated"] = argmax([a - b for a, b in zip(loglik, loglik_uncond)])
    return out


def cut_answer(generated: str, separator: str, delimiter: str, stop: Sequence[str] = ()) -> str:
    """A free-form answer from the raw generation: cut at the separator, drop the leading target
    delimiter, cut at the first of ``stop``, strip whitespace."""
    text = generated.split(separator, 1)[0] if separator else generated
    if delimiter and text.startswith(delimiter):
        text = text[len(delimiter) :]
    for s in stop:
        if s and s in text:
            text = text.split(s, 1)[0]
    return text.strip()


def exact_match(prediction: str, target: str) -> bool:
    return prediction.strip() == target.strip()


def bootstrap_ci(
    values: Sequence[float], seed: int = 0, n_boot: int = N_BOOT, level: float = 0.95
) -> tuple[float, float]:
    """Percentile interval of the mean of ``values``: ``n_boot`` resamples of the examples with
    replacement (``numpy.random.default_rng(seed).integers(0, n, (n_boot, n))``), the
    (1-level)/2 and (1+level)/2 percentiles of their means (numpy's linear interpolation)."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        return (float("nan"), float("nan"))
    idx = np.random.default_rng(seed).integers(0, x.size, size=(n_boot, x.size))
    means = x[idx].mean(axis=1)
    lo, hi = np.percentile(means, [100 * (1 - level) / 2, 100 * (1 + level) / 2])
    return float(lo), float(hi)


def summarise(correct: Sequence[bool], seed: int = 0) -> dict[str, float]:
    """Mean, 95% bootstrap interval and count of one metric's per-example correctness."""
    vals = [1.0 if c else 0.0 for c in correct]
    lo, hi = bootstrap_ci(vals, seed)
    return {"value": sum(vals) / len(vals) if vals else float("nan"), "ci_low": lo, "ci_high": hi, "n": len(vals)}
