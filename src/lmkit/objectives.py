"""Pre-training objectives as pure tensor functions: token windows in, model batch out.

- causal language modeling (decoder): predict token t+1 from tokens ≤ t.
- masked language modeling (encoder, BERT): 15% of the ordinary tokens chosen, of those 80% -> the
  mask token, 10% -> a random ordinary token, 10% unchanged; predict the originals at the chosen
  positions. A special token (any of the tokenizer's, wherever its id is: BERT's [CLS] 101, RoBERTa's
  <mask> last) is never chosen nor drawn, and neither is an embedding row past the tokenizer's size.
- span corruption (encoder-decoder, T5; ``objective: span``): 15% of the tokens, in spans of mean
  length 3, replaced by the tokenizer's own sentinels in ``<extra_id_i>`` order (T5's count down
  from the top of its vocabulary); the decoder writes <extra_id_0> span0 <extra_id_1> span1 ... </s>.
- text infilling with sentence permutation (encoder-decoder, BART; ``objective: infill``): the
  sentences between special tokens shuffled, then 30% of the tokens in spans of Poisson(3) lengths,
  each span replaced by ONE mask token (a zero-length span inserts one); the decoder writes the
  original window.

``window_length(model_cfg)`` is how many raw tokens one example consumes and
``make_batch(model_cfg, windows, specials, generator)`` turns windows into the model's batch, by the
model's ``objective``. Decoder inputs start with the tokenizer's own decoder start token (T5's
<pad>, BART's </s>).

Every function is deterministic given its inputs and ``generator``, which is how a resumed run
sees exactly the batches the uninterrupted run would have seen. Imports nothing else from lmkit but
``lmkit.plan.spans`` (span corruption's token counts, pure arithmetic shared with the FLOP count)
and ``lmkit.errors``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import torch

from lmkit.errors import LmkitError
from lmkit.plan.spans import MEAN_SPAN_LENGTH, NOISE_DENSITY, span_counts, span_lengths, span_window_length

IGNORE_INDEX = -100  # label value that scores no prediction


@dataclass(frozen=True)
class SpecialIds:
    """Token ids an objective needs (taken from the tokenizer: ``Tokenizer.special_ids_for_objectives``)."""

    pad: int
    bos: int
    eos: int
    mask: int
    sentinels: tuple[int, ...] = field(default_factory=tuple)  # <extra_id_0>, <extra_id_1>, ...
    vocab_size: int = 0  # the tokenizer's size: embedding rows past it are no tokens
    n_special: int = 0  # ids below this are special tokens (lmkit's own layout: 0..104)
    special: tuple[int, ...] = ()  # special token ids anywhere in the vocabulary (a model's own tokenizer)
    decoder_start: int = -1  # the token decoder inputs start with; -1: pad (T5's)
    full_stops: tuple[int, ...] = ()  # ordinary tokens that end a sentence (sentence permutation)

    @property
    def start(self) -> int:
        return self.decoder_start if self.decoder_start >= 0 else self.pad


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


@lru_cache(maxsize=8)
def _special_id_tensor(specials: SpecialIds) -> torch.Tensor:
    """(n,) every special id: those below ``n_special``, those listed, and (neither given) the roles'."""
    listed = [*range(specials.n_special), *specials.special]
    if not listed:
        listed = [i for i in (specials.pad, specials.bos, specials.eos, specials.mask, *specials.sentinels) if i >= 0]
    return torch.tensor(sorted(set(listed)), dtype=torch.long)


def _special_positions(ids: torch.Tensor, specials: SpecialIds) -> torch.Tensor:
    """Boolean (same shape as ids): True where the token is a special token."""
    if specials.n_special > 0 and not specials.special:
        return ids < specials.n_special
    return torch.isin(ids, _special_id_tensor(specials).to(device=ids.device, dtype=ids.dtype))


@lru_cache(maxsize=8)
def _ordinary_ids(specials: SpecialIds) -> torch.Tensor:
    """(n,) the ordinary token ids, ascending: the tokenizer's ids that are no special token."""
    if specials.vocab_size <= 0:
        raise ValueError("SpecialIds.vocab_size must be set (random replacements are drawn from the ordinary ids)")
    every = torch.arange(specials.vocab_size)
    return every[~torch.isin(every, _special_id_tensor(specials))]


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

    Each non-special token is chosen with ``probability``; a chosen token becomes the mask token with
    probability ``mask_share``, a random ordinary token (no special token, no id at or past the
    tokenizer's ``vocab_size``) with ``random_share``, and stays itself otherwise. ``labels`` hold the original token at chosen positions and
    IGNORE_INDEX elsewhere, so the loss scores the chosen positions only. Special tokens (the
    end-of-document markers of packed windows, padding) are never chosen.
    """
    ordinary = _ordinary_ids(specials)
    if len(ordinary) == 0:
        raise ValueError("SpecialIds.vocab_size must be set (random replacements are drawn from the ordinary ids)")
    if specials.mask < 0:
        raise LmkitError("masked language modeling needs a mask token, and the tokenizer has none")
    shape = windows.shape
    chosen = (torch.rand(shape, generator=generator) < probability).to(windows.device)
    chosen &= ~_special_positions(windows, specials)
    how = torch.rand(shape, generator=generator).to(windows.device)
    drawn = torch.randint(0, len(ordinary), shape, generator=generator)  # (lmkit's own: the ids n_special..V-1)
    random_ids = ordinary[drawn].to(dtype=windows.dtype, device=windows.device)
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
    (the target shifted right behind the tokenizer's decoder start token: T5's is the pad id).
    """
    B, L = windows.shape
    _, n_spans = span_counts(L, noise_density, mean_span_length)
    if n_spans > len(specials.sentinels):
        raise LmkitError(
            f"span corruption of a window of {L} tokens needs {n_spans} sentinel tokens (<extra_id_0>, ...), "
            f"the tokenizer has {len(specials.sentinels)}; use a shorter model.max_seq_len or a tokenizer with them"
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
    decoder_input_ids[:, 0] = specials.start
    decoder_input_ids[:, 1:tgt_len] = targets[:, :-1]
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "decoder_input_ids": decoder_input_ids,
        "labels": labels,
    }


# --------------------------------------------------------------------------- text infilling (BART)

INFILL_NOISE_DENSITY = 0.3  # share of a window's tokens hidden behind masks
INFILL_POISSON_MEAN = 3.0  # λ of the span lengths
_SPARE_DRAWS = 8  # span lengths drawn beyond one per noise token (see infill_spans)


def infill_window_length(max_seq_len: int, max_target_len: int) -> int:
    """Raw tokens per window for infilling: the decoder writes the whole window and then EOS, and the
    encoder reads at most as many tokens (the spans never outnumber the tokens they hide)."""
    length = min(max_seq_len, max_target_len) - 1
    if length < 2:
        raise ValueError(
            f"model.max_seq_len and model.max_target_len must be at least 3 for infilling, got {length + 1}"
        )
    return length


def permute_sentences(windows: torch.Tensor, specials: SpecialIds, generator: torch.Generator) -> torch.Tensor:
    """(B, L) -> (B, L): the sentences of each run of ordinary tokens in a random order (BART).

    A sentence ends after a full-stop token (``specials.full_stops``) or where the run ends; special
    tokens (document separators, BOS) stay where they are, and no sentence crosses one, so documents
    packed into one window are never mixed. Every order of a run's sentences is equally likely."""
    B, L = windows.shape
    device = windows.device
    special = _special_positions(windows, specials)  # (B, L)
    stop = torch.isin(windows, torch.tensor(specials.full_stops, dtype=windows.dtype, device=device))
    boundary = torch.zeros_like(special)
    boundary[:, 1:] = stop[:, :-1] | special[:, :-1]
    boundary |= special
    boundary[:, 0] = True
    sentence = boundary.long().cumsum(dim=1) - 1  # (B, L): which sentence each token is in
    rank = torch.rand(B, L, generator=generator).argsort(dim=1).to(device)  # (B, L): a random rank per sentence
    key = rank.gather(1, sentence) + 1
    key = key.masked_fill(special, 0)  # a special token stays first in its run
    run = special.long().cumsum(dim=1)  # (B, L): which run between special tokens
    order = (run * (L + 1) + key).argsort(dim=1, stable=True)  # runs in place, sentences shuffled inside each
    return windows.gather(1, order)


def infill_spans(batch: int, length: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Where infilling hides tokens in windows of ``length``: (noise (B, L) bool, span lengths at slots (B, K+1)).

    Each row hides exactly n = round(0.3·L) tokens. Span lengths are drawn from Poisson(3) until they
    sum to n (the last one cut to fit); zero-length spans are kept (each inserts a mask), at most n
    spans in all (surplus zero-length ones dropped: the input never outgrows the window). The K = L - n
    kept tokens leave K + 1 slots (before each kept token and at the end); the spans go into distinct
    slots chosen uniformly at random, in drawn order, so two spans are never adjacent and each shows
    as one mask token."""
    n = max(1, round(INFILL_NOISE_DENSITY * length))
    kept = length - n
    if n > kept + 1:
        raise ValueError(f"a window of {length} tokens cannot hide {n} in separate spans")
    draws = n + _SPARE_DRAWS
    lengths = torch.poisson(torch.full((batch, draws), INFILL_POISSON_MEAN), generator=generator).long()
    lengths[:, -1] = n  # the running sum reaches n by the last draw (earlier but for odds below e^-24)
    before = lengths.cumsum(dim=1) - lengths  # (B, D): sum of the draws before each
    valid = before < n  # the draws used: until the sum reaches n
    lengths = torch.minimum(lengths, n - before).clamp(min=0) * valid  # the last used one cut to fit
    zero = valid & (lengths == 0)
    allowed = n - (valid & (lengths > 0)).sum(dim=1, keepdim=True)  # (B, 1) zero-length spans that fit
    valid &= ~zero | (zero.long().cumsum(dim=1) <= allowed)
    lengths = lengths.gather(1, valid.logical_not().long().argsort(dim=1, stable=True))  # used ones first
    n_spans = valid.sum(dim=1, keepdim=True)  # (B, 1)
    slot_rank = torch.rand(batch, kept + 1, generator=generator).argsort(dim=1).argsort(dim=1)
    chosen = slot_rank < n_spans  # (B, K+1): the slots that get a span
    which = (chosen.long().cumsum(dim=1) - 1).clamp(min=0)  # the span each chosen slot gets, in drawn order
    at_slot = torch.where(chosen, lengths.gather(1, which), 0)  # (B, K+1)
    slot_size = at_slot + (torch.arange(kept + 1) < kept)  # the span, then the kept token (none after the last)
    ends = slot_size.cumsum(dim=1)  # (B, K+1)
    pos = torch.arange(length).expand(batch, length).contiguous()
    slot = torch.searchsorted(ends, pos, right=True)  # (B, L): which slot each position is in
    offset = pos - (ends - slot_size).gather(1, slot)
    noise = offset < at_slot.gather(1, slot)
    return noise, torch.where(chosen, at_slot, -1)


def infill_batch(
    windows: torch.Tensor, specials: SpecialIds, generator: torch.Generator, max_input_len: int, max_target_len: int
) -> dict[str, torch.Tensor]:
    """Text infilling with sentence permutation (BART): windows (B, L) -> encoder input, decoder input, labels.

    The window's sentences are permuted (:func:`permute_sentences`), then the spans of
    :func:`infill_spans` each become one mask token; the encoder reads that and EOS, and the decoder
    writes the original window and EOS (``labels``; ``decoder_input_ids``: the same shifted right
    behind the decoder start token). Shapes as :func:`span_corruption_batch`'s. A special token inside
    a packed window (a document separator) keeps its place in the permutation but is an ordinary
    position to the spans: one may hide it, and the decoder writes it back."""
    B, L = windows.shape
    if specials.mask < 0:
        raise LmkitError("text infilling needs a mask token, and the tokenizer has none")
    if L + 1 > max_input_len or L + 1 > max_target_len:
        raise ValueError(f"windows of {L} tokens need {L + 1} input and target positions")
    device = windows.device
    shuffled = permute_sentences(windows, specials, generator)
    noise, at_slot = infill_spans(B, L, generator)
    noise, at_slot = noise.to(device), at_slot.to(device)
    kept = shuffled[~noise].view(B, -1)  # (B, K)
    K = kept.shape[1]
    masks = torch.where(at_slot >= 0, specials.mask, -1)  # (B, K+1): a mask before the kept token of its slot
    tokens = torch.cat([kept, torch.full((B, 1), -1, dtype=windows.dtype, device=device)], dim=1)
    seq = torch.stack([masks.to(windows.dtype), tokens], dim=2).view(B, 2 * (K + 1))
    seq = seq.gather(1, (seq < 0).long().argsort(dim=1, stable=True))  # (B, 2K+2): the tokens first, in order
    n_in = (seq >= 0).sum(dim=1)  # (B,) K + spans
    input_ids = torch.full((B, max_input_len), specials.pad, dtype=windows.dtype, device=device)
    width = min(seq.shape[1], max_input_len)
    input_ids[:, :width] = torch.where(seq[:, :width] >= 0, seq[:, :width], specials.pad)
    input_ids.scatter_(1, n_in.unsqueeze(1), specials.eos)
    attention_mask = (torch.arange(max_input_len, device=device) <= n_in.unsqueeze(1)).long()
    labels = torch.full((B, max_target_len), IGNORE_INDEX, dtype=windows.dtype, device=device)
    labels[:, :L] = windows
    labels[:, L] = specials.eos
    decoder_input_ids = torch.full((B, max_target_len), specials.pad, dtype=windows.dtype, device=device)
    decoder_input_ids[:, 0] = specials.start
    decoder_input_ids[:, 1 : L + 1] = windows
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "decoder_input_ids": decoder_input_ids,
        "labels": labels,
    }


# --------------------------------------------------------------------------- dispatch by objective


def window_length(model_cfg) -> int:  # model_cfg: lmkit.config.ModelConfig (not imported: pure module)
    """Raw tokens to cut from the corpus for one training example of this model's objective."""
    objective = model_cfg.objective
    if objective == "clm":
        return clm_window_length(model_cfg.max_seq_len)
    if objective == "mlm":
        return mlm_window_length(model_cfg.max_seq_len)
    if objective == "infill":
        return infill_window_length(model_cfg.max_seq_len, model_cfg.max_target_len)
    return span_window_length(model_cfg.max_seq_len, model_cfg.max_target_len)


def make_batch(
    model_cfg, windows: torch.Tensor, specials: SpecialIds, generator: torch.Generator
) -> dict[str, torch.Tensor]:
    """The model batch of this model's objective (``model_cfg.objective``) for windows (B, window_length)."""
    objective = model_cfg.objective
    if objective == "clm":
        return clm_batch(windows)
    if objective == "mlm":
        return mlm_batch(windows, specials, generator)
    if objective == "infill":
        return infill_batch(windows, specials, generator, model_cfg.max_seq_len, model_cfg.max_target_len)
    return span_corruption_batch(windows, specials, generator, model_cfg.max_seq_len, model_cfg.max_target_len)
