"""Fill-mask inference for encoder checkpoints: the most likely tokens for each mask in a text.

An encoder pre-trained by masked language modeling predicts, at every mask, a distribution
over the vocabulary using the words on both sides. ``fill_mask`` runs the text through the model
once and returns, for each mask (several at once are fine; each is predicted independently, as in
pre-training), the top-k tokens with their probabilities, plus the text with every mask filled by
its top token; :func:`format_result` renders it as ``lmkit fill-mask`` prints it (the command
itself: ``lmkit.cli.infer``).

The mask is the model's own mask token, written in the text as that token's text (BERT's ``[MASK]``,
RoBERTa's ``<mask>``; ``mask_text`` names another placeholder). How the text becomes tokens: a
byte-level BPE glues the space before a word to the word (``" contract"``), and pre-training masked
such whole tokens, so the space right before a mask belongs to the hidden word and is not encoded on
its own (RoBERTa's ``<mask>`` strips it the same way). The text is wrapped as the model's tokenizer
wraps one text (``Tokenizer.wrap``: BERT's ``[CLS] .. [SEP]``, RoBERTa's ``<s> .. </s>``, lmkit's own
between end-of-sequence tokens, as a document sits in the packed pre-training windows).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from lmkit.errors import LmkitError
from lmkit.models import LanguageModel
from lmkit.models.protocols import MaskedLM

MASK_TEXT = "[MASK]"  # lmkit's own tokenizers' mask token


@dataclass
class Candidate:
    token: str  # readable text of the token (a leading space is part of it)
    token_id: int
    probability: float


@dataclass
class MaskPrediction:
    index: int  # which mask of the text (0 = first)
    position: int  # its token position in the model's input
    candidates: list[Candidate] = field(default_factory=list)


@dataclass
class FillMaskResult:
    text: str
    filled: str  # the text with every mask replaced by its top candidate
    masks: list[MaskPrediction]
    input_ids: list[int]

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "filled": self.filled,
            "masks": [asdict(m) for m in self.masks],
            "input_tokens": len(self.input_ids),
        }


def encode_with_masks(tokenizer: Any, text: str, mask_text: str = MASK_TEXT) -> tuple[list[int], list[int], list[str]]:
    """Token ids of ``text`` (wrapped as the tokenizer wraps one text) with each ``mask_text`` as the mask id.

    Returns (ids, positions of the masks, the text pieces between masks with the space before each
    mask removed).
    """
    pieces = text.split(mask_text)
    if len(pieces) < 2:
        raise LmkitError(
            f"the text has no {mask_text}: write {mask_text} where a word should be predicted, "
            f'e.g. "The {mask_text} of the contract"'
        )
    ids: list[int] = []
    positions: list[int] = []
    kept: list[str] = []
    for i, piece in enumerate(pieces):
        if i < len(pieces) - 1 and piece.endswith(" "):
            piece = piece[:-1]  # the hidden token carries its own leading space
        kept.append(piece)
        if piece:
            ids.extend(tokenizer.encode(piece))
        if i < len(pieces) - 1:
            positions.append(len(ids))
            ids.append(tokenizer.mask_id)
    before = len(tokenizer.template[0])  # the tokens the tokenizer puts first ([CLS], <s>, lmkit's EOS)
    return tokenizer.wrap(ids), [p + before for p in positions], kept


@torch.no_grad()
def fill_mask(
    model: LanguageModel, tokenizer: Any, text: str, top_k: int = 5, mask_text: str | None = None
) -> FillMaskResult:
    """Top-k candidates with probabilities for each mask of ``text`` (an encoder model); the mask is
    written as ``mask_text``, by default the text of the model's own mask token."""
    if not isinstance(model, MaskedLM):
        raise LmkitError("fill-mask needs an encoder (masked LM) checkpoint")
    if top_k < 1:
        raise LmkitError(f"--top-k must be at least 1, got {top_k}")
    if tokenizer.mask_id < 0:
        raise LmkitError(f"{tokenizer.source}: the tokenizer has no mask token, which fill-mask needs")
    mask_text = mask_text or tokenizer.mask_text
    ids, positions, pieces = encode_with_masks(tokenizer, text, mask_text)
    spaced = [piece.endswith(" ") for piece in text.split(mask_text)[:-1]]
    window = model.cfg.max_seq_len
    if len(ids) > window:
        raise LmkitError(f"the text is {len(ids)} tokens but the encoder's context window is {window}; shorten it")
    was_training = model.training
    model.eval()
    device = model.output_weight.device
    inp = torch.tensor([ids], dtype=torch.long, device=device)
    h = model.hidden_states(inp)[0, positions]  # (M, C): states at the masks only
    logits = model.mlm_logits(h).float()  # (M, V)
    model.train(was_training)
    specials = sorted(i for i in tokenizer.special_ids if i < logits.shape[-1])
    logits[:, specials] = float("-inf")  # special tokens are never an answer
    probs = logits.softmax(dim=-1)
    k = min(top_k, probs.shape[-1] - len(specials))
    top = probs.topk(k, dim=-1)
    masks = []
    for m, pos in enumerate(positions):
        cands = [
            Candidate(tokenizer.token_str(int(i)), int(i), float(p))
            for p, i in zip(top.values[m].tolist(), top.indices[m].tolist())
        ]
        masks.append(MaskPrediction(m, pos, cands))
    filled = pieces[0]
    for m, piece in enumerate(pieces[1:]):
        best = tokenizer.decode([masks[m].candidates[0].token_id])
        if spaced[m] and not best[:1].isspace():
            best = " " + best  # the space the text had before this mask
        filled += best + piece
    return FillMaskResult(text=text, filled=filled, masks=masks, input_ids=ids)


def format_result(res: FillMaskResult) -> str:
    """A readable report: each mask's candidates with probabilities, then the filled text."""
    lines = [res.text]
    for m in res.masks:
        label = f"mask #{m.index + 1}" if len(res.masks) > 1 else "mask"
        for rank, c in enumerate(m.candidates):
            head = f"  {label:<12}" if rank == 0 else " " * 14
            bar = "█" * max(1, round(20 * c.probability)) if c.probability >= 0.005 else ""
            lines.append(f"{head}{c.token!r:<20} {c.probability:7.2%}  {bar}")
    lines.append(f"filled: {res.filled}")
    return "\n".join(lines)
