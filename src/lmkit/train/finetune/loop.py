"""Adapting pre-trained models to labelled tasks: the fine-tuning runs of ``lmkit finetune-head``.

What this module owns: the fine-tuning loops and the held-out report.

* :func:`finetune_classifier` puts a head (``lmkit.train.finetune.heads``) on a pre-trained encoder
  and trains both, the encoder at ``lr`` and the new head at ``head_lr``;
  :func:`finetune_seq2seq` trains an encoder-decoder on input/target pairs with teacher forcing.
  Both use the shared AdamW and LR schedule of ``lmkit.train.steps`` (linear warmup, then linear
  decay to 0; matrices decayed, vectors not);
* the held-out report: accuracy and per-label precision/recall/F1 (with the majority-class
  baseline), entity-level F1 for BIO tags, and for ``seq2seq`` the held-out loss, exact match and
  word-overlap F1 of greedy generations (the counting is ``lmkit.train.finetune.scores``);
* :func:`run_finetune`: checkpoint + labelled file in, report out (and the checkpoint saved).

The labelled data and the settings are ``lmkit.train.finetune.data``, the heads and the fine-tuned
checkpoint ``lmkit.train.finetune.heads``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from lmkit.errors import LmkitError
from lmkit.models import LanguageModel
from lmkit.models.encdec import EncoderDecoder
from lmkit.models.encoder import Encoder
from lmkit.models.registry import spec_of
from lmkit.train.finetune.data import (
    IGNORE_INDEX,
    Example,
    FinetuneConfig,
    encode_text,
    encode_words,
    index_batches,
    pad,
    read_examples,
    split_examples,
)
from lmkit.train.finetune.heads import Classifier, SequenceClassifier, TokenClassifier, predict_classes, save_finetuned
from lmkit.train.finetune.scores import classification_metrics, entity_metrics, word_f1
from lmkit.train.steps import adamw, param_groups, scheduled_lr

# --------------------------------------------------------------------------- training


def _update(model: nn.Module, opt: torch.optim.Optimizer, loss: torch.Tensor, bar: Any, epoch: int) -> float:
    """One optimizer step on ``loss`` (gradients clipped to norm 1); the loss value, shown on the bar."""
    loss.backward()
    torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    value = loss.item()
    if bar is not None:
        bar.update(1)
        bar.set_postfix(epoch=epoch + 1, loss=f"{value:.3f}")
    return value


def _optimizer(groups: list[tuple[list[nn.Parameter], float]], weight_decay: float) -> torch.optim.AdamW:
    """AdamW over (parameters, learning rate) pairs, each split into decayed matrices and undecayed vectors."""
    params = [g for ps, lr in groups for g in param_groups(ps, weight_decay, lr=lr) if g["params"]]
    return adamw(params, lr=groups[0][1], betas=(0.9, 0.999))


def _set_lr(opt: torch.optim.Optimizer, step: int, total: int, warmup: int) -> None:
    """Each group's rate at ``step``: its ``base_lr`` times linear warmup, then linear decay to 0."""
    factor = scheduled_lr(step, 1.0, warmup, total, "linear")
    for g in opt.param_groups:
        g["lr"] = g["base_lr"] * factor


def _progress(total: int, desc: str, show: bool) -> Any:
    if not show:
        return None
    from lmkit.progress import progress

    return progress(total=total, desc=desc, unit="step")


@dataclass
class Prepared:
    """A task's examples turned into tensors-to-be, plus the label vocabulary."""

    labels: list[str]
    train: list[tuple[list[int], Any]]
    val: list[tuple[list[int], Any]]
    truncated_words: int = 0


def _prepare_classification(
    tokenizer: Any, cfg: FinetuneConfig, train: list[Example], val: list[Example], max_len: int
) -> Prepared:
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


def finetune_classifier(
    encoder: LanguageModel,
    tokenizer: Any,
    train: list[Example],
    val: list[Example],
    cfg: FinetuneConfig,
    device: str | torch.device = "cpu",
    show_progress: bool = False,
) -> tuple[Classifier, dict[str, Any]]:
    """Put a classification head on ``encoder`` and fine-tune; returns (classifier, held-out report)."""
    cfg.validate()
    if cfg.task not in spec_of(encoder.cfg.family).finetune_tasks:
        raise LmkitError(
            f"--task {cfg.task} needs an encoder checkpoint (this one is a {encoder.cfg.family}); "
            "an encoder-decoder fine-tunes with --task seq2seq"
        )
    device = torch.device(device)
    torch.manual_seed(cfg.seed)
    prep = _prepare_classification(tokenizer, cfg, train, val, encoder.cfg.max_seq_len)
    if len(prep.labels) < 2:
        raise LmkitError(f"only one label ({prep.labels[0]!r}) in the data: a classifier needs at least two")
    head_cls = SequenceClassifier if cfg.task == "sequence-classification" else TokenClassifier
    model = head_cls(cast(Encoder, encoder), len(prep.labels), cfg.dropout).to(device)  # family "encoder"
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
        for idx in index_batches(len(prep.train), cfg.batch_size, gen):
            _set_lr(opt, step, total, warmup)
            ids = pad([prep.train[i][0] for i in idx], pad_id).to(device)
            mask = pad([[1] * len(prep.train[i][0]) for i in idx], 0).to(device)
            logits = model(ids, mask)
            if cfg.task == "sequence-classification":
                y = torch.tensor([prep.train[i][1] for i in idx], device=device)
                loss = F.cross_entropy(logits, y)
            else:
                y = pad([prep.train[i][1] for i in idx], IGNORE_INDEX, ids.shape[1]).to(device)
                loss = F.cross_entropy(logits.flatten(0, 1), y.flatten(), ignore_index=IGNORE_INDEX)
            losses.append(_update(model, opt, loss, bar, epoch))
            step += 1
        preds = predict_classes(model, prep.val, cfg.task, pad_id, cfg.batch_size, device)
        rep = _classification_report(prep, preds, cfg.task)
        history.append(
            {
                "epoch": epoch + 1,
                "train_loss": sum(losses) / len(losses),
                "accuracy": rep["accuracy"],
                **({"entity_f1": rep["entity"]["f1"]} if "entity" in rep else {}),
            }
        )
    if bar is not None:
        bar.close()
    model.eval()
    report = {
        "task": cfg.task,
        "train_examples": len(train),
        "val_examples": len(val),
        "labels": prep.labels,
        "history": history,
        **rep,
    }
    return model, report


# --------------------------------------------------------------------------- seq2seq


def _fit(ids: list[int], n: int) -> list[int]:
    """``ids`` cut to ``n``, keeping the last one (the text's closing EOS)."""
    return ids if len(ids) <= n else [*ids[: n - 1], ids[-1]]


def _seq2seq_batch(tokenizer: Any, exs: Sequence[Example], max_in: int, max_tgt: int) -> dict[str, torch.Tensor]:
    """Inputs and targets as the model's tokenizer reads a text (``Tokenizer.encoder_ids``: T5's text + EOS,
    BART's ``<s> .. </s>``, as transformers' ``text_target``); decoder inputs from its ``decoder_start``."""
    inputs = [_fit(tokenizer.encoder_ids(e.source), max_in) for e in exs]
    targets = [_fit(tokenizer.encoder_ids(e.target), max_tgt) for e in exs]
    return {
        "input_ids": pad(inputs, tokenizer.pad_id),
        "attention_mask": pad([[1] * len(s) for s in inputs], 0),
        "decoder_input_ids": pad([[tokenizer.decoder_start_id, *t[:-1]] for t in targets], tokenizer.pad_id),
        "labels": pad(targets, IGNORE_INDEX),
    }


@torch.no_grad()
def evaluate_seq2seq(
    model: EncoderDecoder, tokenizer: Any, val: list[Example], batch_size: int, device: torch.device
) -> dict[str, Any]:
    """Held-out loss (teacher forcing), and exact match / word F1 of greedy generations."""
    from lmkit.infer.generate import generate_seq2seq_ids
    from lmkit.infer.sampling import GenerationConfig

    model.eval()
    cfg = model.cfg
    nats = tokens = 0.0
    exact = f1 = 0.0
    examples: list[dict[str, str]] = []
    gen_cfg = GenerationConfig(max_new_tokens=cfg.max_target_len)
    for idx in index_batches(len(val), batch_size, None):
        exs = [val[i] for i in idx]
        batch = {
            k: v.to(device) for k, v in _seq2seq_batch(tokenizer, exs, cfg.max_seq_len, cfg.max_target_len).items()
        }
        n = int((batch["labels"] != IGNORE_INDEX).sum())
        nats += float(model.loss(batch)) * n
        tokens += n
        out = generate_seq2seq_ids(
            model,
            batch["input_ids"],
            gen_cfg,
            start_id=tokenizer.decoder_start_id,
            eos_id=tokenizer.eos_ids,
            attention_mask=batch["attention_mask"],
            vocab=tokenizer.vocab_size,  # never a padding row of the embedding (T5's)
        )
        for e, row in zip(exs, out.tolist()):
            row = row[: next((i for i, t in enumerate(row) if t in tokenizer.eos_ids), len(row))]
            text = tokenizer.decode(row).strip()
            exact += float(text == e.target.strip())
            f1 += word_f1(text, e.target)
            if len(examples) < 5:
                examples.append({"input": e.source, "target": e.target, "output": text})
    loss = nats / max(1.0, tokens)
    return {
        "loss": loss,
        "perplexity": math.exp(min(loss, 50.0)),
        "exact_match": exact / len(val),
        "word_f1": f1 / len(val),
        "examples": examples,
    }


def finetune_seq2seq(
    model: LanguageModel,
    tokenizer: Any,
    train: list[Example],
    val: list[Example],
    cfg: FinetuneConfig,
    device: str | torch.device = "cpu",
    show_progress: bool = False,
) -> tuple[EncoderDecoder, dict[str, Any]]:
    """Fine-tune an encoder-decoder on input/target pairs; returns (model, held-out report)."""
    cfg.validate()
    if cfg.task not in spec_of(model.cfg.family).finetune_tasks:
        raise LmkitError(f"--task seq2seq needs an encoder-decoder checkpoint (this one is a {model.cfg.family})")
    model = cast(EncoderDecoder, model)  # a model of family "encdec" is an EncoderDecoder
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
        for idx in index_batches(len(train), cfg.batch_size, gen):
            _set_lr(opt, step, total, warmup)
            batch = _seq2seq_batch(tokenizer, [train[i] for i in idx], model.cfg.max_seq_len, model.cfg.max_target_len)
            loss = model.loss({k: v.to(device) for k, v in batch.items()})
            losses.append(_update(model, opt, loss, bar, epoch))
            step += 1
        rep = evaluate_seq2seq(model, tokenizer, val, cfg.batch_size, device)
        history.append(
            {
                "epoch": epoch + 1,
                "train_loss": sum(losses) / len(losses),
                "val_loss": rep["loss"],
                "exact_match": rep["exact_match"],
            }
        )
    if bar is not None:
        bar.close()
    model.eval()
    return model, {"task": cfg.task, "train_examples": len(train), "val_examples": len(val), "history": history, **rep}


# --------------------------------------------------------------------------- the whole run


def run_finetune(
    checkpoint: str,
    data: str,
    cfg: FinetuneConfig,
    eval_data: str | None = None,
    out: str | None = None,
    overwrite: bool = False,
    device: str = "cpu",
    show_progress: bool = True,
) -> dict[str, Any]:
    """Load a checkpoint, fine-tune it on a labelled JSONL file, report (and save with ``out``)."""
    from lmkit.files import Manifest, check_out_dir
    from lmkit.models.checkpoint import checkpoint_files, load_model, load_tokenizer, resolve_checkpoint

    cfg.validate()
    ckpt = resolve_checkpoint(checkpoint)
    if out:  # before any training: an unusable --out fails now, not after the epochs
        check_out_dir(
            Path(out),
            overwrite,
            [checkpoint, ckpt, data, *([eval_data] if eval_data else [])],
            ours=Manifest(checkpoint_files),
            kind="checkpoint",
        )
    examples = read_examples(data, cfg.task)
    if eval_data:
        train, val = examples, read_examples(eval_data, cfg.task)
    else:
        train, val = split_examples(examples, cfg.val_fraction, cfg.seed)
    tokenizer = load_tokenizer(ckpt)
    model = load_model(ckpt, device=device)
    tuned: EncoderDecoder | Classifier
    if cfg.task == "seq2seq":
        tuned, report = finetune_seq2seq(model, tokenizer, train, val, cfg, device, show_progress)
    else:
        tuned, report = finetune_classifier(model, tokenizer, train, val, cfg, device, show_progress)
    report["checkpoint"] = str(ckpt)
    report["data"] = str(data)
    if out:
        report["out"] = str(save_finetuned(out, tuned, tokenizer, cfg, report, str(ckpt), overwrite))
    return report
