"""Token counts of T5 span corruption, as pure integer arithmetic: how many noise tokens and spans a
window gets, the corrupted input and target lengths, and the longest window that fits.

``lmkit.objectives`` builds span-corruption batches with these counts and ``lmkit.plan`` counts
an encoder-decoder's FLOPs and memory with them, so both agree. Imports nothing from lmkit.
"""

from __future__ import annotations

NOISE_DENSITY = 0.15  # share of the raw tokens that end up in spans
MEAN_SPAN_LENGTH = 3.0


def span_counts(
    raw_len: int, noise_density: float = NOISE_DENSITY, mean_span_length: float = MEAN_SPAN_LENGTH
) -> tuple[int, int]:
    """(noise tokens, noise spans) of a window of ``raw_len`` tokens, as T5 rounds them."""
    n_noise = min(max(round(raw_len * noise_density), 1), raw_len - 1)
    n_spans = max(1, round(n_noise / mean_span_length))
    return n_noise, min(n_spans, raw_len - n_noise)


def span_lengths(
    raw_len: int, noise_density: float = NOISE_DENSITY, mean_span_length: float = MEAN_SPAN_LENGTH
) -> tuple[int, int]:
    """(input length, target length) after span corruption of ``raw_len`` tokens.

    Input: the kept tokens, one sentinel per span, and </s>. Target: one sentinel per span, the
    span tokens, and </s>.
    """
    n_noise, n_spans = span_counts(raw_len, noise_density, mean_span_length)
    return raw_len - n_noise + n_spans + 1, n_noise + n_spans + 1


def span_window_length(
    max_input_len: int,
    max_target_len: int,
    noise_density: float = NOISE_DENSITY,
    mean_span_length: float = MEAN_SPAN_LENGTH,
) -> int:
    """The longest raw window whose corrupted input fits ``max_input_len`` and target ``max_target_len``."""
    best = 0
    for raw in range(2, 4 * (max_input_len + max_target_len) + 2):
        inp, tgt = span_lengths(raw, noise_density, mean_span_length)
        if inp <= max_input_len and tgt <= max_target_len:
            best = raw
    if best == 0:
        raise ValueError(
            f"span corruption cannot fit inputs of {max_input_len} and targets of {max_target_len} "
            "tokens; raise model.max_seq_len / model.max_target_len"
        )
    return best


__all__ = ["MEAN_SPAN_LENGTH", "NOISE_DENSITY", "span_counts", "span_lengths", "span_window_length"]
