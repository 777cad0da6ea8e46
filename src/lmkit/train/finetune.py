"""Adapting pre-trained models to labelled tasks: ``lmkit finetune-head``.

What this module owns:

* the labelled JSONL formats of the three tasks and their readers (errors name file and line):

  - ``sequence-classification``: ``{"text": "a gripping film", "label": "positive"}``
  - ``token-classification``: ``{"tokens": ["Ada", "lives", "in", "Paris"], "labels": ["B-PER", "O", "O", "B-LOC"]}``
  - ``seq2seq``: ``{"input": "translate: the cat", "target": "le chat"}``

* the heads put on a pre-trained encoder: :class:`SequenceClassifier` (the mean of the encoder's
  states over the real tokens, then a linear layer: one label per text) and
  :class:`TokenClassifier` (a linear layer on every token's state: one label per word, scored on
  the word's first token, as BERT's NER recipe does);
* the fine-tuning loop (AdamW, the encoder at ``lr`` and the new head at ``head_lr``, linear
  warmup then linear decay), which for ``seq2seq`` trains an encoder-decoder on input/target
  pairs with teacher forcing;
* the held-out report: accuracy and per-label precision/recall/F1 (with the majority-class
  baseline), entity-level F1 for BIO tags (``B-PER``, ``I-PER``, ...), and for ``seq2seq`` the
  held-out loss, exact match and word-overlap F1 of greedy generations;
* saving the result as a checkpoint (``--out``): the fine-tuned encoder stays a normal encoder
  checkpoint (``model.safetensors``) and the head is ``head.safetensors`` beside it, described by
  ``config.json``'s ``finetune`` entry; :func:`load_finetuned` reads both back.

Metrics are a few lines of counting, written here rather than taken from scikit-learn or seqeval
so that lmkit needs neither at run time.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lmkit.errors import LmkitError

TASKS = ("sequence-classification", "token-classification", "seq2seq")
IGNORE_INDEX = -100
HEAD_FILE = "head.safetensors"



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
        need = {"sequence-classification": ("text", "label"), "token-classification": ("tokens", "labels"),
                "seq2seq": ("input", "target")}[task]
        missing = [k for k in need if k not in obj]
        if missing:
            raise LmkitError(f"{where}: missing {' and '.join(repr(m) for m in missing)} (a {task} example is "
                             + {"sequence-classification": '{"text": ..., "label": ...}',
                                "token-classification": '{"tokens": [...], "labels": [...]}',
                                "seq2seq": '{"input": ..., "target": ...}'}[task] + ")")
        if task == "sequence-classification":
            if not isinstance(obj["text"], str) or not obj["text"].strip():
                raise LmkitError(f"{where}: 'text' must be a non-empty string")
            out.append(Example(where, text=obj["text"], label=_label(obj["label"], where, "label")))
        elif task == "token-classification":
            words, tags = obj["tokens"], obj["labels"]
            if not isinstance(words, list) or not words or not all(isinstance(w, str) and w for w in words):
                raise LmkitError(f"{where}: 'tokens' must be a non-empty list of non-empty strings")
            if not isinstance(tags, list) or len(tags) != len(words):
                raise LmkitError(f"{where}: 'labels' must be a list with one label per token "
                                 f"({len(words)} tokens, {len(tags) if isinstance(tags, list) else 'no'} labels)")
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
    """Ids of ``text`` wrapped in EOS (as a document sits in pre-training windows), cut to ``max_len``."""
    ids = tokenizer.encode(text)[: max_len - 2]
    return [tokenizer.eos_id, *ids, tokenizer.eos_id]


def encode_words(tokenizer: Any, words: Sequence[str], tag_ids: Sequence[int], max_len: int
                 ) -> tuple[list[int], list[int], int]:
    """Ids of a word sequence and a label per id: each word's label on its first token, -100 elsewhere.

    Words after a space are encoded with their leading space (as they appear in running text).
    Returns (ids, labels, number of words that fit in ``max_len``).
    """
    ids, labels = [tokenizer.eos_id], [IGNORE_INDEX]
    kept = 0
    for i, (word, tag) in enumerate(zip(words, tag_ids)):
        pieces = tokenizer.encode(word if i == 0 else " " + word) or [tokenizer.unk_id]
        if len(ids) + len(pieces) + 1 > max_len:
            break
        ids.extend(pieces)
        labels.extend([tag] + [IGNORE_INDEX] * (len(pieces) - 1))
        kept += 1
    ids.append(tokenizer.eos_id)
    labels.append(IGNORE_INDEX)
    return ids, labels, kept


def pad(seqs: Sequence[Sequence[int]], value: int, length: int | None = None) -> torch.Tensor:
    """Right-pad integer sequences into a (B, length) tensor."""
    n = length or max(len(s) for s in seqs)
    out = torch.full((len(seqs), n), value, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.tensor(list(s)[:n], dtype=torch.long)
    return out


# --------------------------------------------------------------------------- heads


class SequenceClassifier(nn.Module):
    """Encoder + mean over real tokens + dropout + linear: one label per text. logits (B, n_labels)."""

    def __init__(self, encoder: nn.Module, n_labels: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.encoder = encoder
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(encoder.cfg.d_model, n_labels)
        nn.init.normal_(self.classifier.weight, std=0.02)
        nn.init.zeros_(self.classifier.bias)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        h = self.encoder.hidden_states(input_ids, attention_mask)  # (B, T, C)
        m = attention_mask.to(h.dtype)[:, :, None]  # (B, T, 1)
        pooled = (h * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)  # (B, C)
        return self.classifier(self.dropout(pooled))  # (B, n_labels)


class TokenClassifier(nn.Module):
    """Encoder + dropout + linear on every token: one label per token. logits (B, T, n_labels)."""

    def __init__(self, encoder: nn.Module, n_labels: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.encoder = encoder
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(encoder.cfg.d_model, n_labels)
        nn.init.normal_(self.classifier.weight, std=0.02)
        nn.init.zeros_(self.classifier.bias)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.encoder.hidden_states(input_ids, attention_mask)))


# --------------------------------------------------------------------------- metrics


def classification_metrics(gold: Sequence[str], pred: Sequence[str], labels: Sequence[str]) -> dict[str, Any]:
    """Accuracy, macro-F1 and per-label precision / recall / F1 / support."""
    per: dict[str, dict[str, float]] = {}
    for lab in labels:
        tp = sum(1 for g, p in zip(gold, pred) if g == lab and p == lab)
        fp = sum(1 for g, p in zip(gold, pred) if g != lab and p == lab)
        fn = sum(1 for g, p in zip(gold, pred) if g == lab and p != lab)
        prec = tp / (tp + fp) if tp + fp else 0.0
        rec = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
        per[lab] = {"precision": prec, "recall": rec, "f1": f1, "support": tp + fn}
    present = [lab for lab in labels if per[lab]["support"] > 0]
    acc = sum(1 for g, p in zip(gold, pred) if g == p) / max(1, len(gold))
    macro = sum(per[lab]["f1"] for lab in present) / max(1, len(present))
    return {"accuracy": acc, "macro_f1": macro, "per_label": per}


def bio_spans(tags: Sequence[str]) -> set[tuple[str, int, int]]:
    """Entity spans (type, start, end-exclusive) of a BIO tag sequence (an I- after O starts a span too)."""
    spans: set[tuple[str, int, int]] = set()
    kind, start = None, 0
    for i, tag in enumerate([*tags, "O"]):
        prefix, _, typ = tag.partition("-")
        inside_same = prefix == "I" and kind == typ
        if kind is not None and not inside_same:
            spans.add((kind, start, i))
            kind = None
        if prefix in ("B", "I") and typ and not inside_same:
            kind, start = typ, i
    return spans


def entity_metrics(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> dict[str, float]:
    """Entity-level precision / recall / F1 over BIO tag sequences (an entity counts when type and span match)."""
    tp = n_gold = n_pred = 0
    for g, p in zip(gold, pred):
        gs, ps = bio_spans(g), bio_spans(p)
        tp += len(gs & ps)
        n_gold += len(gs)
        n_pred += len(ps)
    prec = tp / n_pred if n_pred else 0.0
    rec = tp / n_gold if n_gold else 0.0
    return {"precision": prec, "recall": rec, "f1": 2 * prec * rec / (prec + rec) if prec + rec else 0.0,
            "entities": n_gold}


def word_f1(prediction: str, reference: str) -> float:
    """Overlap F1 of the words of two texts (as SQuAD scores answers)."""
    p, r = prediction.lower().split(), reference.lower().split()
    if not p or not r:
        return float(p == r)
    common = sum(min(p.count(w), r.count(w)) for w in set(p))
    if common == 0:
        return 0.0
    prec, rec = common / len(p), common / len(r)
    return 2 * prec * rec / (prec + rec)


# --------------------------------------------------------------------------- training


def _schedule(step: int, total: int, warmup: int) -> float:
    """Learning-rate multiplier: linear warmup, then linear decay to 0."""
    if step < warmup:
        return (step + 1) / warmup
    return max(0.0, (total - step) / max(1, total - warmup))


def _optimizer(groups: list[tuple[list[nn.Parameter], float]], weight_decay: float) -> torch.optim.AdamW:
    params = []
    for ps, lr in groups:
        decay = [p for p in ps if p.requires_grad and p.dim() >= 2]
        no_decay = [p for p in ps if p.requires_grad and p.dim() < 2]
        params += [{"params": decay, "lr": lr, "weight_decay": weight_decay, "base_lr": lr},
                   {"params": no_decay, "lr": lr, "weight_decay": 0.0, "base_lr": lr}]
    return torch.optim.AdamW([g for g in params if g["params"]], betas=(0.9, 0.999))


def _batches(n: int, batch_size: int, gen: torch.Generator | None) -> list[list[int]]:
    order = torch.randperm(n, generator=gen).tolist() if gen is not None else list(range(n))
    return [order[i:i + batch_size] for i in range(0, n, batch_size)]


def _progress(total: int, desc: str, show: bool) -> Any:
    if not show:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="step", dynamic_ncols=True, file=sys.stderr)


@dataclass
class Prepared:
    """A task's examples turned into tensors-to-be, plus the label vocabulary."""

    labels: list[str]
    train: list[tuple[list[int], Any]]
    val: list[tuple[list[int], Any]]
    truncated_words: int = 0


def _prepare_classification(tokenizer: Any, cfg: FinetuneConfig, train: list[Example], val: list[Example],
                            max_len: int) -> Prepared:
    if cfg.task == "sequence-classification":
        labels = sorted({e.label for e in train + val})
        index = {lab: i for i, lab in enumerate(labels)}
        enc = lambda e: (encode_text(tokenizer, e.text, max_len), index[e.label])
        return Prepared(labels, [enc(e) for e in train], [enc(e) for e in val])
    labels = sorted({t for e in train + val for t in e.tags})
    index = {lab: i for i, lab in enumerate(labels)}
    out: dict[str, list[tuple[list[int], Any]]] = {"train": [], "val": []}
    lost = 0
    for split, exs in (("train", train), ("val", val)):
        for e in exs:
            ids, labs, kept = encode_words(tokenizer, e.words, [index[t] for t in e.tags], max_len)
            lost += len(e.words) - kept
            out[split].append((ids, labs))
    return Prepared(labels, out["train"], out["val"], truncated_words=lost)


@torch.no_grad()
def _predict_classes(model: nn.Module, items: list[tuple[list[int], Any]], task: str, pad_id: int,
                     batch_size: int, device: torch.device) -> list[Any]:
    """Predicted label indices: one per text, or one list per text (one per scored word)."""
    model.eval()
    preds: list[Any] = []
    for idx in _batches(len(items), batch_size, None):
        ids = pad([items[i][0] for i in idx], pad_id).to(device)
        mask = pad([[1] * len(items[i][0]) for i in idx], 0).to(device)
        logits = model(ids, mask)
        if task == "sequence-classification":
            preds.extend(logits.argmax(-1).tolist())
        else:
            best = logits.argmax(-1).cpu()
            for row, i in enumerate(idx):
                labs = torch.tensor(items[i][1])
                preds.append(best[row, : len(labs)][labs != IGNORE_INDEX].tolist())
    return preds


def _classification_report(prep: Prepared, preds: list[Any], task: str) -> dict[str, Any]:
    labels = prep.labels
    if task == "sequence-classification":
        gold = [labels[y] for _, y in prep.val]
        pred = [labels[p] for p in preds]
        rep = classification_metrics(gold, pred, labels)
        majority = max(labels, key=lambda lab: sum(1 for _, y in prep.train if labels[y] == lab))
        rep["majority_baseline"] = sum(1 for g in gold if g == majority) / len(gold)
        rep["majority_label"] = majority
        return rep
    gold_seqs = [[labels[y] for y in labs if y != IGNORE_INDEX] for _, labs in prep.val]
    pred_seqs = [[labels[p] for p in ps] for ps in preds]
    flat_g = [t for s in gold_seqs for t in s]
    flat_p = [t for s in pred_seqs for t in s]
    rep = classification_metrics(flat_g, flat_p, labels)
    rep["words"] = len(flat_g)
    rep["majority_baseline"] = max(flat_g.count(lab) for lab in labels) / max(1, len(flat_g))
    if any(lab[:2] in ("B-", "I-") for lab in labels):
        rep["entity"] = entity_metrics(gold_seqs, pred_seqs)
    else:
        others = [lab for lab in labels if lab != "O"]
        tp = sum(1 for g, p in zip(flat_g, flat_p) if g == p and g != "O")
        n_p = sum(1 for p in flat_p if p in others)
        n_g = sum(1 for g in flat_g if g in others)
        prec, rec = (tp / n_p if n_p else 0.0), (tp / n_g if n_g else 0.0)
        rep["micro_f1_without_O"] = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
    rep["truncated_words"] = prep.truncated_words
    return rep


def finetune_classifier(encoder: nn.Module, tokenizer: Any, train: list[Example], val: list[Example],
                        cfg: FinetuneConfig, device: str | torch.device = "cpu",
                        show_progress: bool = False) -> tuple[nn.Module, dict[str, Any]]:
    """Put a classification head on ``encoder`` and fine-tune; returns (classifier, held-out report)."""
    cfg.validate()
    if encoder.cfg.family != "encoder":
        raise LmkitError(f"--task {cfg.task} needs an encoder checkpoint (this one is a {encoder.cfg.family}); "
                         "an encoder-decoder fine-tunes with --task seq2seq")
    device = torch.device(device)
    torch.manual_seed(cfg.seed)
    prep = _prepare_classification(tokenizer, cfg, train, val, encoder.cfg.max_seq_len)
    if len(prep.labels) < 2:
        raise LmkitError(f"only one label ({prep.labels[0]!r}) in the data: a classifier needs at least two")
    head_cls = SequenceClassifier if cfg.task == "sequence-classification" else TokenClassifier
    model = head_cls(encoder, len(prep.labels), cfg.dropout).to(device)
    for p in model.encoder.parameters():
        p.requires_grad_(not cfg.freeze_encoder)
    groups = [(list(model.classifier.parameters()), cfg.head_lr)]
    if not cfg.freeze_encoder:
        groups.append((list(model.encoder.parameters()), cfg.lr))
    opt = _optimizer(groups, cfg.weight_decay)
    gen = torch.Generator().manual_seed(cfg.seed)
    steps_per_epoch = math.ceil(len(prep.train) / cfg.batch_size)
    total = cfg.epochs * steps_per_epoch
    warmup = max(1, int(cfg.warmup_ratio * total))
    bar = _progress(total, f"finetune {cfg.task}", show_progress)
    history: list[dict[str, float]] = []
    step = 0
    pad_id = tokenizer.pad_id
    for epoch in range(cfg.epochs):
        model.train()
        losses = []
        for idx in _batches(len(prep.train), cfg.batch_size, gen):
            for g in opt.param_groups:
                g["lr"] = g["base_lr"] * _schedule(step, total, warmup)
            ids = pad([prep.train[i][0] for i in idx], pad_id).to(device)
            mask = pad([[1] * len(prep.train[i][0]) for i in idx], 0).to(device)
            logits = model(ids, mask)
            if cfg.task == "sequence-classification":
                y = torch.tensor([prep.train[i][1] for i in idx], device=device)
                loss = F.cross_entropy(logits, y)
            else:
                y = pad([prep.train[i][1] for i in idx], IGNORE_INDEX, ids.shape[1]).to(device)
                loss = F.cross_entropy(logits.flatten(0, 1), y.flatten(), ignore_index=IGNORE_INDEX)
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            losses.append(loss.item())
            step += 1
            if bar is not None:
                bar.update(1)
                bar.set_postfix(epoch=epoch + 1, loss=f"{losses[-1]:.3f}")
        preds = _predict_classes(model, prep.val, cfg.task, pad_id, cfg.batch_size, device)
        rep = _classification_report(prep, preds, cfg.task)
        history.append({"epoch": epoch + 1, "train_loss": sum(losses) / len(losses), "accuracy": rep["accuracy"],
                        **({"entity_f1": rep["entity"]["f1"]} if "entity" in rep else {})})
    if bar is not None:
        bar.close()
    model.eval()
    report = {"task": cfg.task, "train_examples": len(train), "val_examples": len(val), "labels": prep.labels,
              "history": history, **rep}
    return model, report


# --------------------------------------------------------------------------- seq2seq


def _seq2seq_batch(tokenizer: Any, exs: Sequence[Example], max_in: int, max_tgt: int) -> dict[str, torch.Tensor]:
    inputs = [tokenizer.encode(e.source, allow_special=True)[: max_in - 1] + [tokenizer.eos_id] for e in exs]
    targets = [tokenizer.encode(e.target)[: max_tgt - 1] + [tokenizer.eos_id] for e in exs]
    return {"input_ids": pad(inputs, tokenizer.pad_id), "attention_mask": pad([[1] * len(s) for s in inputs], 0),
            "decoder_input_ids": pad([[tokenizer.pad_id, *t[:-1]] for t in targets], tokenizer.pad_id),
            "labels": pad(targets, IGNORE_INDEX)}


@torch.no_grad()
def evaluate_seq2seq(model: nn.Module, tokenizer: Any, val: list[Example], batch_size: int,
                     device: torch.device) -> dict[str, Any]:
    """Held-out loss (teacher forcing), and exact match / word F1 of greedy generations."""
    from lmkit.infer.generate import GenerationConfig, generate_seq2seq_ids

    model.eval()
    cfg = model.cfg
    nats = tokens = 0.0
    exact = f1 = 0.0
    examples = []
    gen_cfg = GenerationConfig(max_new_tokens=cfg.max_target_len)
    for idx in _batches(len(val), batch_size, None):
        exs = [val[i] for i in idx]
        batch = {k: v.to(device) for k, v in _seq2seq_batch(tokenizer, exs, cfg.max_seq_len, cfg.max_target_len).items()}
        n = int((batch["labels"] != IGNORE_INDEX).sum())
        nats += float(model.loss(batch)) * n
        tokens += n
        out = generate_seq2seq_ids(model, batch["input_ids"], gen_cfg, start_id=tokenizer.pad_id,
                                   eos_id=tokenizer.eos_id, attention_mask=batch["attention_mask"])
        for e, row in zip(exs, out.tolist()):
            if tokenizer.eos_id in row:
                row = row[: row.index(tokenizer.eos_id)]
            text = tokenizer.decode(row).strip()
            exact += float(text == e.target.strip())
            f1 += word_f1(text, e.target)
            if len(examples) < 5:
                examples.append({"input": e.source, "target": e.target, "output": text})
    loss = nats / max(1.0, tokens)
    return {"loss": loss, "perplexity": math.exp(min(loss, 50.0)), "exact_match": exact / len(val),
            "word_f1": f1 / len(val), "examples": examples}


def finetune_seq2seq(model: nn.Module, tokenizer: Any, train: list[Example], val: list[Example],
                     cfg: FinetuneConfig, device: str | torch.device = "cpu",
                     show_progress: bool = False) -> tuple[nn.Module, dict[str, Any]]:
    """Fine-tune an encoder-decoder on input/target pairs; returns (model, held-out report)."""
    cfg.validate()
    if model.cfg.family != "encdec":
        raise LmkitError(f"--task seq2seq needs an encoder-decoder checkpoint (this one is a {model.cfg.family})")
    device = torch.device(device)
    torch.manual_seed(cfg.seed)
    model.to(device)
    opt = _optimizer([(list(model.parameters()), cfg.lr)], cfg.weight_decay)
    gen = torch.Generator().manual_seed(cfg.seed)
    steps_per_epoch = math.ceil(len(train) / cfg.batch_size)
    total = cfg.epochs * steps_per_epoch
    warmup = max(1, int(cfg.warmup_ratio * total))
    bar = _progress(total, "finetune seq2seq", show_progress)
    history: list[dict[str, float]] = []
    step = 0
    for epoch in range(cfg.epochs):
        model.train()
        losses = []
        for idx in _batches(len(train), cfg.batch_size, gen):
            for g in opt.param_groups:
                g["lr"] = g["base_lr"] * _schedule(step, total, warmup)
            batch = _seq2seq_batch(tokenizer, [train[i] for i in idx], model.cfg.max_seq_len, model.cfg.max_target_len)
            loss = model.loss({k: v.to(device) for k, v in batch.items()})
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            losses.append(loss.item())
            step += 1
            if bar is not None:
                bar.update(1)
                bar.set_postfix(epoch=epoch + 1, loss=f"{losses[-1]:.3f}")
        rep = evaluate_seq2seq(model, tokenizer, val, cfg.batch_size, device)
        history.append({"epoch": epoch + 1, "train_loss": sum(losses) / len(losses), "val_loss": rep["loss"],
                        "exact_match": rep["exact_match"]})
    if bar is not None:
        bar.close()
    model.eval()
    return model, {"task": cfg.task, "train_examples": len(train), "val_examples": len(val), "history": history,
                   **rep}


# --------------------------------------------------------------------------- saving and loading


def save_finetuned(out: str | Path, model: nn.Module, tokenizer: Any, cfg: FinetuneConfig,
                   report: dict[str, Any], base: str, overwrite: bool = False) -> Path:
    """Write the fine-tuned model as a checkpoint folder (atomically); the head goes to head.safetensors."""
    from safetensors.torch import save_file

    from lmkit.files import check_out_dir, replace_dir
    from lmkit.models.checkpoint import is_checkpoint, save_checkpoint

    final = Path(out)
    check_out_dir(final, overwrite, [base], ours=is_checkpoint, kind="checkpoint")
    body = model.encoder if hasattr(model, "classifier") else model
    info: dict[str, Any] = {"task": cfg.task, "base_checkpoint": base, "settings": asdict(cfg)}
    if hasattr(model, "classifier"):
        info.update({"labels": report["labels"], "pooling": "mean" if cfg.task == "sequence-classification" else None,
                     "head_file": HEAD_FILE})
    meta = {"finetune": {k: v for k, v in report.items() if k not in ("examples",)}, "family": body.cfg.family}
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp_parent = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.tmp-"))
    try:
        staged = save_checkpoint(tmp_parent / "ckpt", body, body.cfg, tokenizer=tokenizer, meta=meta,
                                 extra_config={"finetune": info})
        if hasattr(model, "classifier"):
            save_file({k: v.detach().contiguous().cpu() for k, v in model.classifier.state_dict().items()},
                      str(staged / HEAD_FILE))
            from lmkit.models.checkpoint import record_checksums

            record_checksums(staged)  # meta.json's checksums cover the head too
        replace_dir(staged, final)
    finally:
        shutil.rmtree(tmp_parent, ignore_errors=True)
    return final


@dataclass
class Finetuned:
    """A fine-tuned classifier read back from disk, ready to label new inputs."""

    model: nn.Module
    tokenizer: Any
    task: str
    labels: list[str]

    @torch.no_grad()
    def predict(self, inputs: Sequence[str] | Sequence[Sequence[str]]) -> list[Any]:
        """Labels of texts (sequence-classification) or of each word of word lists (token-classification)."""
        device = self.model.classifier.weight.device
        max_len = self.model.encoder.cfg.max_seq_len
        if self.task == "sequence-classification":
            items = [(encode_text(self.tokenizer, t, max_len), 0) for t in inputs]
        else:
            items = []
            for words in inputs:
                ids, labs, _ = encode_words(self.tokenizer, list(words), [0] * len(words), max_len)
                items.append((ids, labs))
        preds = _predict_classes(self.model, items, self.task, self.tokenizer.pad_id, 32, device)
        if self.task == "sequence-classification":
            return [self.labels[p] for p in preds]
        return [[self.labels[p] for p in ps] for ps in preds]


def load_finetuned(path: str | Path, device: str | torch.device = "cpu") -> Finetuned:
    """A classifier saved by ``lmkit finetune-head --out`` (encoder + head)."""
    from safetensors.torch import load_file

    from lmkit.models.checkpoint import (
        load_model,
        load_tokenizer,
        read_config,
        resolve_checkpoint,
        verify_file,
    )

    ckpt = resolve_checkpoint(path)
    info = read_config(ckpt).get("finetune")
    if not info or info.get("task") not in ("sequence-classification", "token-classification"):
        raise LmkitError(f"{ckpt}: not a fine-tuned classifier (no finetune entry with a classification task "
                         "in config.json)")
    encoder = load_model(ckpt, device=device)
    head_cls = SequenceClassifier if info["task"] == "sequence-classification" else TokenClassifier
    model = head_cls(encoder, len(info["labels"]))
    head_file = str(info.get("head_file", HEAD_FILE))
    if (ckpt / head_file).is_file():
        verify_file(ckpt, head_file)
    try:
        model.classifier.load_state_dict(load_file(str(ckpt / head_file)))
    except (OSError, RuntimeError) as e:
        raise LmkitError(f"{ckpt / HEAD_FILE}: cannot load the classification head ({e})") from None
    return Finetuned(model.to(device).eval(), load_tokenizer(ckpt), info["task"], list(info["labels"]))


# --------------------------------------------------------------------------- command line


def run_finetune(checkpoint: str, data: str, cfg: FinetuneConfig, eval_data: str | None = None,
                 out: str | None = None, overwrite: bool = False, device: str = "cpu",
                 show_progress: bool = True) -> dict[str, Any]:
    """Load a checkpoint, fine-tune it on a labelled JSONL file, report (and save with ``out``)."""
    from lmkit.files import check_out_dir
    from lmkit.models.checkpoint import is_checkpoint, load_model, load_tokenizer, resolve_checkpoint

    cfg.validate()
    ckpt = resolve_checkpoint(checkpoint)
    if out:  # before any training: an unusable --out fails now, not after the epochs
        check_out_dir(Path(out), overwrite, [checkpoint, ckpt, data, *([eval_data] if eval_data else [])],
                      ours=is_checkpoint, kind="checkpoint")
    examples = read_examples(data, cfg.task)
    if eval_data:
        train, val = examples, read_examples(eval_data, cfg.task)
    else:
        train, val = split_examples(examples, cfg.val_fraction, cfg.seed)
    tokenizer = load_tokenizer(ckpt)
    model = load_model(ckpt, device=device)
    if cfg.task == "seq2seq":
        model, report = finetune_seq2seq(model, tokenizer, train, val, cfg, device, show_progress)
    else:
        model, report = finetune_classifier(model, tokenizer, train, val, cfg, device, show_progress)
    report["checkpoint"] = str(ckpt)
    report["data"] = str(data)
    if out:
        report["out"] = str(save_finetuned(out, model, tokenizer, cfg, report, str(ckpt), overwrite))
    return report

