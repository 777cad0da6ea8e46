"""Fine-tuning beside prompting: the same labelled examples through ``lmkit finetune-head``.

What this module owns: :func:`finetune_beside`, which turns a :class:`~lmkit.lab.icl.tasks.Task`
into fine-tuning examples (an encoder: sequence classification of the input into its answer; an
encoder-decoder: seq2seq from the query as the prompt writes it to the answer), trains on the
exemplar pool (the train split, or the examples outside the evaluated ones' held-out part) and
returns the held-out accuracy in the shape ``icl.json`` keeps under ``finetune``, and
:func:`against_prompting`, which sets it beside the best prompting result of the same run.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any

from lmkit.errors import LmkitError
from lmkit.lab.icl.prompts import render_example
from lmkit.lab.icl.tasks import Task

if TYPE_CHECKING:
    import torch


def finetune_beside(
    checkpoint: str,
    task: Task,
    seed: int,
    device: str | torch.device = "cpu",
    epochs: int = 3,
    show_progress: bool = False,
) -> dict[str, Any]:
    """Fine-tune ``checkpoint`` on ``device`` (resolved by the caller: ``lmkit icl --device``) on the
    task's examples; held-out accuracy (exact match for seq2seq)."""
    from lmkit.models.checkpoint import load_model, load_model_config, load_tokenizer
    from lmkit.models.registry import spec_of
    from lmkit.train.finetune.data import Example, FinetuneConfig
    from lmkit.train.finetune.loop import finetune_classifier, finetune_seq2seq

    model = load_model(checkpoint, device=device)
    tokenizer = load_tokenizer(checkpoint)
    tasks = spec_of(load_model_config(checkpoint).family).finetune_tasks  # what `lmkit finetune-head` trains
    if not tasks:
        raise LmkitError("--finetune is for encoder and encoder-decoder checkpoints")
    if task.train is not None:
        train_src, val_src, split = task.train, task.examples, "train split -> evaluated examples"
    else:
        order = list(range(len(task.examples)))
        random.Random(f"icl-finetune:{seed}").shuffle(order)
        n_val = max(1, len(order) // 5)
        if len(order) - n_val < 2:
            raise LmkitError(f"{len(task.examples)} examples are too few to fine-tune on (need at least 3)")
        val_src = [task.examples[i] for i in sorted(order[:n_val])]
        train_src = [task.examples[i] for i in sorted(order[n_val:])]
        split = "80% of the examples -> the other 20%"
    if "sequence-classification" in tasks:
        cfg = FinetuneConfig(task="sequence-classification", epochs=epochs, seed=seed)

        def conv(e: Any) -> Example:
            return Example(e.where, text=e.input, label=e.target)

        _, rep = finetune_classifier(
            model, tokenizer, [conv(e) for e in train_src], [conv(e) for e in val_src], cfg, device, show_progress
        )
        acc, metric = rep["accuracy"], "accuracy"
    else:
        cfg = FinetuneConfig(task="seq2seq", epochs=epochs, seed=seed, lr=1e-3)

        def conv2(e: Any) -> Example:
            return Example(e.where, source=render_example(task.format, e, False), target=e.target)

        _, rep = finetune_seq2seq(
            model, tokenizer, [conv2(e) for e in train_src], [conv2(e) for e in val_src], cfg, device, show_progress
        )
        acc, metric = rep["exact_match"], "exact_match"
    return {
        "task": cfg.task,
        "metric": metric,
        "accuracy": acc,
        "train_examples": len(train_src),
        "val_examples": len(val_src),
        "split": split,
        "epochs": epochs,
    }


def against_prompting(ft: dict[str, Any], report: dict[str, Any]) -> dict[str, Any]:
    """``ft`` (:func:`finetune_beside`'s result) with the run's best prompting result beside it
    (``best_prompting``: its shots and primary metric with the 95% interval) and ``beats_prompting``:
    whether the fine-tuned accuracy lies above that interval. Unchanged when nothing was prompted."""
    primary = report["metrics"][0]
    best = max(report["results"], key=lambda r: r[primary]["value"], default=None)
    if best is not None:
        ft["best_prompting"] = {"shots": best["shots"], "metric": primary, **best[primary]}
        ft["beats_prompting"] = ft["accuracy"] > best[primary]["ci_high"]
    return ft
