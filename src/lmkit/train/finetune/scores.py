"""Held-out scores of fine-tuning: accuracy and per-label precision/recall/F1, entity-level F1 of
BIO tags (``B-PER``, ``I-PER``, ...) and the word-overlap F1 of generated texts.

A few lines of counting, written here rather than taken from scikit-learn or seqeval so that lmkit
needs neither at run time.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


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
    return {
        "precision": prec,
        "recall": rec,
        "f1": 2 * prec * rec / (prec + rec) if prec + rec else 0.0,
        "entities": n_gold,
    }


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
