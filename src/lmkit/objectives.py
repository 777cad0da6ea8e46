"""Pre-training objectives as pure tensor functions: token windows in, model batch out.

- causal language modeling (decoder): predict token t+1 from tokens ≤ t.
- masked language modeling (encoder, BERT): 15% of the tokens chosen, of those 80% -> [MASK],
  10% -> a random token, 10% unchanged; predict the originals at the chosen positions.
- span corruption (encoder-decoder, T5): 15% of the tokens, in spans of mean length 3, replaced
  by sentinels <extra_id_i>; the decoder writes <extra_id_0> span0 <extra_id_1> span1 ... </s>.

``window_length(model_cfg)`` is how many raw tokens one example consumes and
``make_batch(model_cfg, windows, specials, generator)`` turns windows into the model's batch.

Every function is deterministic given its inputs and ``generator``, which is how a resumed run
sees exactly the batches the uninterrupted run would have seen. Imports nothing else from lmkit but
``lmkit.plan.spans`` (span corruption's token counts, pure arithmetic shared with the FLOP count).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from lmkit.plan.spans import MEAN_SPAN_LENGTH, NOISE_DENSITY, span_counts, span_lengths, span_window_length

IGNORE_INDEX = -100  # label value that scores no prediction


@dataclass(frozen=True)
class SpecialIds:
    """Token ids an objective needs (taken from the tokenizer)."""

    pad: int
    bos: int
    eos: int
    mask: int
    sentinels: tuple[int, ...] = field(default_factory=tuple)
    vocab_size: int = 0
    n_special: int = 0  # ids below this are special tokens (never masked, never random replacements)


def clm_window_length(seq_len: int) -> int:
    """Tokens per window for causal LM: the inputs plus one more for the last target."""
    return seq_len + 1


def clm_batch(windows: torch.Tensor) -> dict[str, torch.Tensor]:
    """Causal LM: windows (B, T+1) -> input_ids (B, T) and labels (B, T) shifted by one."""
    return {"input_ids": windows[:, :-1].contiguous(), "labels": windows[:, 1:].contiguous()}


# --------------------------------------------------------------------------- masked language modeling

MLM_PROBABILITY = 0.15  # share of (non-special) tokens chosen for prediction
MLM_MASK_SHARE = 0.8  # of the chosen: replaced by [MASK]
MLM_RANDOM_SHARE = 0.1  # of the chosen: replaced by a random token; the rest stay unchanged


def _special_positions(ids: torch.Tensor, specials: SpecialIds) -> torch.Tensor:
    """Boolean (same shape as ids): True where the token is a special token."""
    if specials.n_special > 0:
        return ids < specials.n_special
    listed = torch.tensor(
        [specials.pad, specials.bos, specials.eos, specials.mask, *specials.sentinels],
        dtype=ids.dtype,
        device=ids.device,
    )
    return torch.isin(ids, listed)


def _first_ordinary_id(specials: SpecialIds) -> int:
    if specials.n_special > 0:
        return specials.n_special
    return max(specials.pad, specials.bos, specials.eos, specials.mask, *specials.sentinels) + 1


def mlm_window_length(seq_len: int) -> int:
    """Tokens per window for masked LM: the input is the window itself."""
    return seq_len


def mlm_batch(
    windows: torch.Tensor,
    specials: SpecialIds,
    generator: torch.Generator,
    probability: float = MLM_PROBABILITY,
    mask_share: float = MLM_MASK_SHARE,
    random_share: float = MLM_RANDOM_SHARE,
) -> dict[str, torch.Tensor]:
    """Masked LM (BERT): windows (B, T) -> input_ids (B, T) with some tokens corrupted, labels (B, T).

    Each non-special token is chosen with ``probability``; a chosen token becomes ``[MASK]`` with
    probability ``mask_share``, a random ordinary (non-special) token with ``random_share``, and
    stays itself otherwise. ``labels`` hold the original token at chosen positions and
    IGNORE_INDEX elsewhere, so the loss scores the chosen positions only. Special tokens (the
    end-of-document markers of packed windows, padding) are never chosen.
    """
    if specials.vocab_size <= _first_ordinary_id(specials):
        raise ValueError("SpecialIds.vocab_size must be set (random replacements are drawn from the ordinary ids)")
    shape = windows.shape
    chosen = (torch.rand(shape, generator=generator) < probability).to(windows.device)
    chosen &= ~_special_positions(windows, specials)
    how = torch.rand(shape, generator=generator).to(windows.device)
    random_ids = torch.randint(
        _first_ordinary_id(specials), specials.vocab_size, shape, generator=generator, dtype=windows.dtype
    ).to(windows.device)
    inputs = torch.where(chosen & (how < mask_share), torch.full_like(windows, specials.mask), windows)
    inputs = torch.where(chosen & (how >= mask_share) & (how < mask_share + random_share), random_ids, inputs)
    labels = torch.where(chosen, windows, torch.full_like(windows, IGNORE_INDEX))
    return {"input_ids": inputs, "labels": labels}


# --------------------------------------------------------------------------- span corruption
# (how many tokens a window corrupts to: lmkit.plan.spans, shared with the FLOP count)


def _random_segmentation(batch: int, n_items: int, n_segments: int, generator: torch.Generator) -> torch.Tensor:
    """(batch, n_segments) lengths ≥ 1 summing to n_items, each composition equally likely."""
    if n_segments == 1:
        return torch.full((batch, 1), n_items, dtype=torch.long)
    cuts = torch.rand(batch, n_items - 1, generator=generator).argsort(dim=1)[:, : n_segments - 1] + 1
    cuts = cuts.sort(dim=1).values  # (B, k-1) distinct cut points in 1..n-1
    bounds = torch.cat(
        [torch.zeros(batch, 1, dtype=torch.long), cuts, torch.full((batch, 1), n_items, dtype=torch.long)], dim=1
    )  # (B, k+1)
    return bounds.diff(dim=1)


def random_spans_noise_mask(
    batch: int,
    raw_len: int,
    generator: torch.Generator,
    noise_density: float = NOISE_DENSITY,
    mean_span_length: float = MEAN_SPAN_LENGTH,
) -> torch.Tensor:
    """(batch, raw_len) boolean: True on tokens inside noise spans.

    As T5: the noise tokens are split at random into ``n_spans`` spans and the kept tokens into
    as many runs, and the two alternate, starting with kept tokens.
    """
    n_noise, n_spans = span_counts(raw_len, noise_density, mean_span_length)
    noise_lens = _random_segmentation(batch, n_noise, n_spans, generator)  # (B, k)
    keep_lens = _random_segmentation(batch, raw_len - n_noise, n_spans, generator)  # (B, k)
    ends = torch.stack([keep_lens, noise_lens], dim=2).view(batch, 2 * n_spans).cumsum(dim=1)  # (B, 2k)
    pos = torch.arange(raw_len).expand(batch, raw_len).contiguous()
    segment = torch.searchsorted(ends, pos, right=True)  # (B, L): which run each position is in
    return segment % 2 == 1


def span_corruption_batch(
    windows: torch.Tensor,
    specials: SpecialIds,
    generator: torch.Generator,
    max_input_len: int,
    max_target_len: int,
    noise_density: float = NOISE_DENSITY,
    mean_span_length: float = MEAN_SPAN_LENGTH,
) -> dict[str, torch.Tensor]:
    """Span corruption (T5): windows (B, L) -> encoder input, decoder input and labels.

    Spans of the window are replaced by sentinels ``<extra_id_0>``, ``<extra_id_1>``, ... in order,
    and the target spells out what they hid: ``<extra_id_0> span0 <extra_id_1> span1 ... </s>``.
    Returns ``input_ids`` (B, max_input_len) and ``attention_mask`` (1 on real tokens, 0 on padding),
    ``labels`` (B, max_target_len: the target, IGNORE_INDEX on padding) and ``decoder_input_ids``
    (the target shifted right behind the decoder start token, which is the pad id as in T5).
    """
    B, L = windows.shape
    _, n_spans = span_counts(L, noise_density, mean_span_length)
    if n_spans > len(specials.sentinels):
        raise ValueError(
            f"a window of {L} tokens needs {n_spans} sentinels, the tokenizer has "
            f"{len(specials.sentinels)}; use a shorter model.max_seq_len"
        )
    in_len, tgt_len = span_lengths(L, noise_density, mean_span_length)
    if in_len > max_input_len or tgt_len > max_target_len:
        raise ValueError(
            f"windows of {L} tokens corrupt to {in_len} input / {tgt_len} target tokens, more than "
            f"{max_input_len} / {max_target_len}"
        )
    device = windows.device
    noise = random_spans_noise_mask(B, L, generator, noise_density, mean_span_length).to(device)  # (B, L)
    starts = noise & ~torch.nn.functional.pad(noise, (1, 0))[:, :-1]  # first token of each span
    span_index = (starts.cumsum(dim=1) - 1).clamp(min=0)  # (B, L): number of the current span
    sentinel_table = torch.tensor(specials.sentinels[:n_spans], dtype=windows.dtype, device=device)
    sentinel = sentinel_table[span_index]  # (B, L)
    drop = torch.full_like(windows, -1)
    kept = torch.where(starts, sentinel, torch.where(noise, drop, windows))  # (B, L)
    inputs = kept[kept != -1].view(B, in_len - 1)
    slots = torch.stack([torch.where(starts, sentinel, drop), torch.where(noise, windows, drop)], dim=2)
    slots = slots.view(B, 2 * L)  # (B, 2L): sentinel before each span start, then the span's tokens
    targets = slots[slots != -1].view(B, tgt_len - 1)
    eos = torch.full((B, 1), specials.eos, dtype=windows.dtype, device=device)
    inputs = torch.cat([inputs, eos], dim=1)  # (B, in_len)
    targets = torch.cat([targets, eos], dim=1)  # (B, tgt_len)
    input_ids = torch.full((B, max_input_len), specials.pad, dtype=windows.dtype, device=device)
    input_ids[:, :in_len] = inputs
    attention_mask = torch.zeros((B, max_input_len), dtype=torch.long, device=device)
    attention_mask[:, :in_len] = 1
    labels = torch.full((B, max_target_len), IGNORE_INDEX, dtype=windows.dtype, device=device)
    labels[:, :tgt_len] = targets
    decoder_input_ids = torch.full((B, max_target_len), specials.pad, dtype=windows.dtype, device=device)
    decoder_input_ids[:, 1:tgt_len] = targets[:, :-1]
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "decoder_input_ids": decoder_input_ids,
        "labels": labels,
    }


# --------------------------------------------------------------------------- dispatch by family


def window_length(model_cfg) -> int:  # model_cfg: lmkit.config.ModelConfig (not imported: pure module)
    """Raw tokens to cut from the corpus for one training example of this model's objective."""
    objective = {"encoder": "mlm", "decoder": "clm", "encdec": "span"}[model_cfg.family]
    if objective == "clm":
        return clm_window_length(model_cfg.max_seq_len)
    if objective == "mlm":
        return mlm_window_length(model_cfg.max_seq_len)
    return span_window_length(model_cfg.max_seq_len, model_cfg.max_target_len)


def make_batch(
    model_cfg, windows: torch.Tensor, specials: SpecialIds, generator: torch.Generator
) -> dict[str, torch.Tensor]:
    """The model batch of this model's objective for windows (B, window_length)."""
    objective = {"encoder": "mlm", "decoder": "clm", "encdec": "span"}[model_cfg.family]
    if objective == "clm":
        return clm_batch(windows)
    if objective == "mlm":
        return mlm_batch(windows, specials, generator)
    return span_corruption_batch(windows, specials, generator, model_cfg.max_seq_len, model_cfg.max_target_len)
