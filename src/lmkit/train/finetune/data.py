"""Fine-tuning's inputs: the run's settings (:class:`FinetuneConfig`) and the labelled examples.

The labelled JSONL formats of the three tasks, read with errors that name file and line:

- ``sequence-classification``: ``{"text": "a gripping film", "label": "positive"}``
- ``token-classification``: ``{"tokens": ["Ada", "lives", "in", "Paris"], "labels": ["B-PER", "O", "O", "B-LOC"]}``
- ``seq2seq``: ``{"input": "translate: the cat", "target": "le chat"}``

and their turning into token ids: a text wrapped as the model's tokenizer wraps one text
(``Tokenizer.wrap``: BERT's ``[CLS] .. [SEP]``, RoBERTa's ``<s> .. </s>``, lmkit's own between EOS),
a word list with each word's label on its first token, right-padded batches, and the (seeded) order
of the batches.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lmkit.errors import LmkitError

TASKS = ("sequence-classification", "token-classification", "seq2seq")
IGNORE_INDEX = -100  # the label of positions that are not scored


@dataclass
class FinetuneConfig:
    """Settings of one fine-tuning run."""

    task: str
    epochs: int = 3
    lr: float = 1e-4  # the pre-trained weights
    head_lr: float = 1e-3  # the new head (classification tasks)
    batch_size: int = 16
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    val_fraction: float = 0.2  # held out when no separate evaluation file is given
    seed: int = 0
    freeze_encoder: bool = False  # train the head only (a "linear probe")
    dropout: float = 0.1  # before the classification head

    def validate(self) -> None:
        if self.task not in TASKS:
            raise LmkitError(f"--task must be one of {', '.join(TASKS)}, got {self.task!r}")
        if self.epochs < 1:
            raise LmkitError(f"--epochs must be at least 1, got {self.epochs}")
        if self.batch_size < 1:
            raise LmkitError(f"--batch-size must be at least 1, got {self.batch_size}")
        if not (self.lr > 0 and self.head_lr > 0):
            raise LmkitError("--lr and --head-lr must be positive")
        if not 0.0 < self.val_fraction < 1.0:
            raise LmkitError(f"--val-fraction must be between 0 and 1, got {self.val_fraction}")
        if self.freeze_encoder and self.task == "seq2seq":
            raise LmkitError("--freeze-encoder is for the classification tasks (seq2seq has no new head)")


# --------------------------------------------------------------------------- data


@dataclass
class Example:
    """One labelled example: ``text`` + ``label``, ``words`` + ``tags``, or ``source`` + ``target``."""

    where: str  # file:line
    text: str = ""
    label: str = ""
    words: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    source: str = ""
    target: str = ""


def _label(value: Any, where: str, key: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise LmkitError(f"{where}: {key!r} must be a string or an integer, got {value!r}")
    return str(value)


def read_examples(path: str | Path, task: str) -> list[Example]:
    """Read a labelled JSONL file for ``task`` (formats: `lmkit finetune-head --help`); problems name file:line."""
    p = Path(path)
    if not p.is_file():
        raise LmkitError(f"{p}: labelled data file not found")
    out: list[Example] = []
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise LmkitError(f"{p}: cannot read ({e})") from None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{p}:{n}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise LmkitError(f"{where}: not valid JSON ({e.msg})") from None
        if not isinstance(obj, dict):
            raise LmkitError(f"{where}: each line must be a JSON object")
        need = {
            "sequence-classification": ("text", "label"),
            "token-classification": ("tokens", "labels"),
            "seq2seq": ("input", "target"),
        }[task]
        missing = [k for k in need if k not in obj]
        if missing:
            raise LmkitError(
                f"{where}: missing {' and '.join(repr(m) for m in missing)} (a {task} example is "
                + {
                    "sequence-classification": '{"text": ..., "label": ...}',
                    "token-classification": '{"tokens": [...], "labels": [...]}',
                    "seq2seq": '{"input": ..., "target": ...}',
                }[task]
                + ")"
            )
        if task == "sequence-classification":
            if not isinstance(obj["text"], str) or not obj["text"].strip():
                raise LmkitError(f"{where}: 'text' must be a non-empty string")
            out.append(Example(where, text=obj["text"], label=_label(obj["label"], where, "label")))
        elif task == "token-classification":
            words, tags = obj["tokens"], obj["labels"]
            if not isinstance(words, list) or not words or not all(isinstance(w, str) and w for w in words):
                raise LmkitError(f"{where}: 'tokens' must be a non-empty list of non-empty strings")
            if not isinstance(tags, list) or len(tags) != len(words):
                raise LmkitError(
                    f"{where}: 'labels' must be a list with one label per token "
                    f"({len(words)} tokens, {len(tags) if isinstance(tags, list) else 'no'} labels)"
                )
            out.append(Example(where, words=tuple(words), tags=tuple(_label(t, where, "labels") for t in tags)))
        else:
            if not isinstance(obj["input"], str) or not isinstance(obj["target"], str) or not obj["target"].strip():
                raise LmkitError(f"{where}: 'input' and 'target' must be strings (the target non-empty)")
            out.append(Example(where, source=obj["input"], target=obj["target"]))
    if not out:
        raise LmkitError(f"{p}: no examples")
    return out


def split_examples(examples: list[Example], val_fraction: float, seed: int) -> tuple[list[Example], list[Example]]:
    """A seeded random held-out split (at least one example on each side)."""
    if len(examples) < 2:
        raise LmkitError(f"{len(examples)} example(s): at least 2 are needed to hold some out for evaluation")
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    n_val = min(len(examples) - 1, max(1, round(len(examples) * val_fraction)))
    val = sorted(order[:n_val])
    train = sorted(order[n_val:])
    return [examples[i] for i in train], [examples[i] for i in val]


# --------------------------------------------------------------------------- encoding


def encode_text(tokenizer: Any, text: str, max_len: int) -> list[int]:
    """Ids of ``text`` wrapped as the tokenizer wraps one text (lmkit's own: in EOS, as a document sits
    in pre-training windows), the text cut so that the whole fits ``max_len``."""
    room = max_len - len(tokenizer.wrap([]))
    return tokenizer.wrap(tokenizer.encode(text)[: max(room, 0)])


def encode_words(
    tokenizer: Any, words: Sequence[str], tag_ids: Sequence[int], max_len: int
) -> tuple[list[int], list[int], int]:
    """Ids of a word sequence and a label per id: each word's label on its first token, -100 elsewhere.

    Words after a space are encoded with their leading space (as they appear in running text).
    Returns (ids, labels, number of words that fit in ``max_len``).
    """
    before, after = tokenizer.template  # the tokens around one text ([CLS] .. [SEP]; lmkit's own: EOS)
    ids, labels = list(before), [IGNORE_INDEX] * len(before)
    kept = 0
    for i, (word, tag) in enumerate(zip(words, tag_ids)):
        pieces = tokenizer.encode(word if i == 0 else " " + word) or [tokenizer.unk_id]
        if len(ids) + len(pieces) + len(after) > max_len:
            break
        ids.extend(pieces)
        labels.extend([tag] + [IGNORE_INDEX] * (len(pieces) - 1))
        kept += 1
    return [*ids, *after], [*labels, *[IGNORE_INDEX] * len(after)], kept


def pad(seqs: Sequence[Sequence[int]], value: int, length: int | None = None) -> torch.Tensor:
    """Right-pad integer sequences into a (B, length) tensor."""
    n = length or max(len(s) for s in seqs)
    out = torch.full((len(seqs), n), value, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.tensor(list(s)[:n], dtype=torch.long)
    return out


def index_batches(n: int, batch_size: int, gen: torch.Generator | None) -> list[list[int]]:
    """Indices 0..n-1 in batches: shuffled by ``gen``, or in order without one."""
    order = torch.randperm(n, generator=gen).tolist() if gen is not None else list(range(n))
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]
