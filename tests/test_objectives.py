"""Pre-training objectives: masking rates and rules (MLM), exact reassembly of span corruption."""

from __future__ import annotations

import pytest
import torch

from lmkit.config import ModelConfig
from lmkit.objectives import (
    IGNORE_INDEX,
    SpecialIds,
    make_batch,
    mlm_batch,
    random_spans_noise_mask,
    span_corruption_batch,
    window_length,
)
from lmkit.plan.spans import span_lengths, span_window_length

SPECIALS = SpecialIds(pad=0, bos=1, eos=2, mask=4, sentinels=tuple(range(5, 105)), vocab_size=1000, n_special=105)


def windows_with_specials(batch: int, length: int, seed: int = 0, only_eos: bool = False) -> torch.Tensor:
    """Ordinary ids with special tokens sprinkled in (packed data has end-of-document markers)."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randint(105, 1000, (batch, length), generator=g)
    specials = torch.rand(batch, length, generator=g) < 0.1
    if only_eos:
        return w.masked_fill(specials, SPECIALS.eos)
    return torch.where(specials, torch.randint(0, 105, (batch, length), generator=g), w)


def test_mlm_rates_and_rules_over_many_draws() -> None:
    w = windows_with_specials(64, 256)
    is_special = w < 105
    chosen = masked = randomised = unchanged = 0
    for seed in range(20):
        b = mlm_batch(w, SPECIALS, torch.Generator().manual_seed(seed))
        inp, lab = b["input_ids"], b["labels"]
        pick = lab != IGNORE_INDEX
        # special tokens are never chosen, never changed
        assert not (pick & is_special).any()
        assert torch.equal(inp[is_special], w[is_special])
        # labels hold the original token where chosen; unchosen tokens are untouched
        assert torch.equal(lab[pick], w[pick])
        assert torch.equal(inp[~pick], w[~pick])
        # replacements are [MASK] or ordinary tokens, never other specials
        changed = pick & (inp != w)
        assert ((inp[changed] == SPECIALS.mask) | (inp[changed] >= 105)).all()
        chosen += int(pick.sum())
        masked += int((pick & (inp == SPECIALS.mask)).sum())
        randomised += int((changed & (inp != SPECIALS.mask)).sum())
        unchanged += int((pick & (inp == w)).sum())
    ordinary = int((~is_special).sum()) * 20
    assert chosen / ordinary == pytest.approx(0.15, abs=0.005)
    assert masked / chosen == pytest.approx(0.80, abs=0.01)
    assert randomised / chosen == pytest.approx(0.10, abs=0.01)
    assert unchanged / chosen == pytest.approx(0.10, abs=0.01)  # (a random pick equal to the original is rare)


def test_mlm_is_deterministic_given_the_generator() -> None:
    w = windows_with_specials(4, 64)
    a = mlm_batch(w, SPECIALS, torch.Generator().manual_seed(7))
    b = mlm_batch(w, SPECIALS, torch.Generator().manual_seed(7))
    c = mlm_batch(w, SPECIALS, torch.Generator().manual_seed(8))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["labels"], c["labels"])


def reassemble(input_ids: list[int], labels: list[int], specials: SpecialIds) -> list[int]:
    """Undo span corruption: put each sentinel's span from the target back into the input."""
    target = [t for t in labels if t != IGNORE_INDEX]
    assert target[-1] == specials.eos
    spans: dict[int, list[int]] = {}
    current = None
    for t in target[:-1]:
        if t in specials.sentinels:
            current = t
            spans[current] = []
        else:
            spans[current].append(t)
    out: list[int] = []
    inp = [t for t in input_ids if t != specials.pad]
    assert inp[-1] == specials.eos
    for t in inp[:-1]:
        out.extend(spans[t] if t in specials.sentinels else [t])
    return out


def test_span_corruption_reassembles_exactly_with_sentinels_in_order() -> None:
    L = span_window_length(256, 64)
    w = windows_with_specials(32, L, seed=3, only_eos=True)
    span_sizes: list[int] = []
    for seed in range(10):
        b = span_corruption_batch(w, SPECIALS, torch.Generator().manual_seed(seed), 256, 64)
        assert b["input_ids"].shape == (32, 256) and b["labels"].shape == (32, 64)
        for row in range(32):
            inp, lab = b["input_ids"][row].tolist(), b["labels"][row].tolist()
            assert reassemble(inp, lab, SPECIALS) == w[row].tolist()
            sent_in = [t for t in inp if t in SPECIALS.sentinels]
            target = [t for t in lab if t != IGNORE_INDEX]
            sent_out = [t for t in target if t in SPECIALS.sentinels]
            n = len(sent_in)
            assert sent_in == sent_out == list(SPECIALS.sentinels[:n])  # unique, in order, same in both
            assert target[0] == SPECIALS.sentinels[0] and target[-1] == SPECIALS.eos
            # decoder input = target shifted right behind the start token (pad); padding is not scored
            dec = b["decoder_input_ids"][row].tolist()
            assert dec[0] == SPECIALS.pad and dec[1 : len(target)] == target[:-1]
            assert all(t == IGNORE_INDEX for t in lab[len(target) :])
            mask = b["attention_mask"][row].tolist()
            real = sum(mask)
            assert mask == [1] * real + [0] * (256 - real) and inp[real - 1] == SPECIALS.eos
            # spans: the tokens between consecutive sentinels of the target
            cuts = [i for i, t in enumerate(target) if t in SPECIALS.sentinels] + [len(target) - 1]
            span_sizes += [cuts[i + 1] - cuts[i] - 1 for i in range(n)]
    assert min(span_sizes) >= 1
    assert sum(span_sizes) / len(span_sizes) == pytest.approx(3.0, abs=0.1)


def test_noise_density_and_span_count() -> None:
    noise = random_spans_noise_mask(200, 500, torch.Generator().manual_seed(0))
    assert noise.float().mean().item() == pytest.approx(0.15, abs=0.002)  # round(0.15 * 500) = 75 per row
    assert (noise.sum(1) == 75).all()
    starts = noise & ~torch.nn.functional.pad(noise, (1, 0))[:, :-1]
    assert (starts.sum(1) == 25).all()  # round(75 / 3) spans per row
    assert not noise[:, 0].any()  # as T5: each window starts with kept tokens


@pytest.mark.parametrize("max_in,max_tgt", [(256, 64), (512, 114), (64, 16), (128, 8)])
def test_window_length_is_the_longest_that_fits(max_in: int, max_tgt: int) -> None:
    L = span_window_length(max_in, max_tgt)
    inp, tgt = span_lengths(L)
    assert inp <= max_in and tgt <= max_tgt
    assert all(a > max_in or b > max_tgt for a, b in (span_lengths(L + d) for d in range(1, 20)))
    cfg = ModelConfig(family="encdec", max_seq_len=max_in, max_target_len=max_tgt)
    assert window_length(cfg) == L
    assert span_window_length(512, 114) == 568  # T5's own numbers: 568 raw tokens -> 512 in, 114 out


def test_dispatch_by_family() -> None:
    g = torch.Generator().manual_seed(0)
    enc = ModelConfig(family="encoder", max_seq_len=32)
    assert window_length(enc) == 32
    b = make_batch(enc, windows_with_specials(2, 32), SPECIALS, g)
    assert set(b) == {"input_ids", "labels"} and b["input_ids"].shape == (2, 32)
    dec = ModelConfig(family="decoder", max_seq_len=32)
    assert window_length(dec) == 33 and set(make_batch(dec, windows_with_specials(2, 33), SPECIALS, g)) == {
        "input_ids",
        "labels",
    }
    ed = ModelConfig(family="encdec", max_seq_len=32, max_target_len=8)
    b = make_batch(ed, windows_with_specials(2, window_length(ed)), SPECIALS, g)
    assert set(b) == {"input_ids", "attention_mask", "decoder_input_ids", "labels"}
    with pytest.raises(ValueError, match="cannot fit"):
        span_window_length(8, 1)
