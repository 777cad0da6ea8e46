"""One row of ``lmkit compare``: everything measured about one checkpoint, lmkit's own or imported.

What this module owns: :class:`CompareInputs` (what every row is measured on: the user's text, the
task, the speed settings, this machine's figures) and :func:`model_row`, which loads one
checkpoint once and fills its row by calling lmkit's own measures, never its own copies of them:

* facts from the card (:func:`lmkit.ship.card.render.card_facts`): family, parameters, context
  window, tokenizer kind and size, the ``base_model`` record (name, license) of ``meta.json``;
* bits per byte on the user's text, and on ``--general`` text, by
  :func:`lmkit.infer.evaluate.held_out` and :func:`~lmkit.infer.evaluate.evaluate_model` over the
  whole text (so equal to ``lmkit evaluate --data`` with batches covering it);
* fertility (:func:`lmkit.fertility.fertility`, :func:`~lmkit.fertility.split_words`);
* accuracy at each shot count (:func:`lmkit.lab.icl.run.run_icl` on a
  :class:`~lmkit.lab.icl.models.LocalLM`; an encoder by fill-mask scoring of a multiple-choice
  task's choices, :mod:`lmkit.lab.compare.masked`, or marked ``needs finetune-head``);
* speed (:func:`lmkit.lab.compare.speed.measure_speed`);
* memory: inference at the checkpoint's format and at int8
  (:func:`lmkit.plan.memory.inference_memory`) and continued pre-training (``lmkit plan``'s
  figure: :func:`lmkit.plan.make.make_plan` on this machine, fp32, micro-batch 1), each against
  the memory this machine has available.

Invariant: a row never raises for a checkpoint that cannot be loaded or measured: it holds
``error``, one line saying why; whatever was measured before the failure stays in the row.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmkit.errors import LmkitError
from lmkit.lab.icl.tasks import Task

WHOLE_TEXT = sys.maxsize  # max_batches that covers any held-out text
NEEDS_FINETUNE = "needs finetune-head"


@dataclass
class CompareInputs:
    """What each row is measured on (the same for every model)."""

    data: list[str]
    texts: list[str]  # the documents of ``data`` (empty for a shard folder): fertility and the speed prompt
    general: list[str] = field(default_factory=list)
    text_field: str = "text"
    terms: list[str] = field(default_factory=list)
    task: Task | None = None
    shots: list[int] = field(default_factory=lambda: [0])
    limit: int | None = None
    seed: int = 0
    batch_size: int = 8
    speed_prompt_tokens: int = 128
    speed_new_tokens: int = 32  # 0: no speed measurement
    available_bytes: float | None = None  # this machine's memory still available
    peak_flops: float | None = None  # this machine's fp32 matmul peak, for lmkit plan's figure
    runtime_bytes: dict[str, float] | None = None  # by model.family: lmkit.plan.baseline's figures
    finish_bytes: dict[str, float] | None = None


def one_line(e: BaseException) -> str:
    """An exception as one line: an LmkitError's message, else its type and first line."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return text if isinstance(e, LmkitError) else f"{type(e).__name__}: {text}" if text else type(e).__name__


def bits_per_byte(
    model: Any, ckpt: Path, tok: Any, paths: Sequence[str], text_field: str, batch_size: int
) -> dict[str, float]:
    """Held-out loss, perplexity and bits per byte over the whole of ``paths`` (``lmkit evaluate --data``'s)."""
    from lmkit.infer.evaluate import evaluate_model, held_out

    windows = held_out(ckpt, list(paths), tok, text_field)
    if windows is None:
        raise LmkitError(f"{ckpt}: no held-out windows in {', '.join(paths)}")
    result = evaluate_model(model, model.cfg, windows[0], tok, batch_size, WHOLE_TEXT)
    if not result:
        raise LmkitError(f"{windows[1]}: no token was scored (the held-out data is empty or all padding)")
    return result


def fertility_of(tok: Any, texts: Sequence[str], terms: Sequence[str]) -> dict[str, Any] | None:
    """Tokens per word, bytes per token on ``texts`` and how each of ``terms`` is cut."""
    from lmkit.fertility import fertility, split_words

    if not texts:
        return None
    out = dict(fertility(tok, texts))
    out["terms"] = [{"term": t, "tokens": pieces, "n_tokens": len(pieces)} for t, pieces in split_words(tok, terms)]
    return out


def task_accuracy(model: Any, tok: Any, inputs: CompareInputs, name: str) -> dict[str, Any]:
    """Accuracy (the task's first metric) with its 95% interval at each shot count, by ``lmkit icl``'s
    run: a decoder or encoder-decoder prompted (:class:`~lmkit.lab.icl.models.LocalLM`), an encoder by
    fill-mask scoring of the choices (:class:`~lmkit.lab.compare.masked.MaskedChoiceLM`; a free-form
    task ``needs finetune-head``). A task this model cannot run is its status, never the row's error."""
    from lmkit.lab.compare.masked import MaskedChoiceLM
    from lmkit.lab.icl.models import LocalLM
    from lmkit.lab.icl.run import run_icl
    from lmkit.models.registry import spec_of

    task = inputs.task
    assert task is not None
    lm: Any  # an icl LM (LocalLM's family is a Literal, the protocol's a str)
    if not spec_of(model.cfg.family).generates:  # a masked LM: it scores the choices it fills in
        if task.kind != "multiple_choice":
            return {"task": task.name, "status": NEEDS_FINETUNE, "results": []}
        lm = MaskedChoiceLM(model, tok, inputs.batch_size, name)
        how = "fill-mask scoring of the choices"
    else:
        lm = LocalLM(model, tok, inputs.batch_size)
        lm.name = name
        how = "prompting"
    try:
        report, _ = run_icl(lm, task, inputs.shots, inputs.seed, inputs.limit)
    except Exception as e:  # noqa: BLE001 - the task's failure, not the model's
        return {"task": task.name, "status": f"failed: {one_line(e)}", "results": []}
    metric = report["metrics"][0]
    results = [{"shots": r["shots"], **r[metric]} for r in report["results"]]
    return {
        "task": report["task"],
        "metric": metric,
        "chance": report["chance"],
        "how": how,
        "status": "ok",
        "results": results,
    }


def memory_of(cfg: Any, params: float, fmt: str, inputs: CompareInputs) -> dict[str, Any]:
    """Inference memory at ``fmt`` and at int8, and continued pre-training's (``lmkit plan --gpu here``'s
    figure at fp32, micro-batch 1, the model's own window), each with whether it fits on this machine."""
    from lmkit.plan.make import make_plan
    from lmkit.plan.memory import choose_heap, inference_memory

    fmt = fmt if fmt in ("fp32", "fp16", "bf16", "int8") else "fp32"
    runtime = (inputs.runtime_bytes or {}).get(cfg.family)  # None: lmkit's default for the family
    infer_fmt = inference_memory(cfg, params, batch=1, weight_format=fmt, runtime_bytes=runtime)["total"]
    infer_int8 = inference_memory(cfg, params, batch=1, weight_format="int8", runtime_bytes=runtime)["total"]
    plan_in: dict[str, Any] = dict(
        cfg=cfg,
        gpu="here",
        precision="fp32",
        micro_batch=1,
        this_machine_peak=inputs.peak_flops,
        runtime_bytes=runtime,
        finish_bytes=(inputs.finish_bytes or {}).get(cfg.family),
    )
    plan = make_plan(**plan_in, heap="fast")
    fast = plan["memory"]["training_bytes"]
    heap, _ = choose_heap("auto", fast, fast - plan["memory"]["training_breakdown"]["heap"], inputs.available_bytes)
    train = fast if heap == "fast" else make_plan(**plan_in, heap="lean")["memory"]["training_bytes"]
    avail = inputs.available_bytes

    def fits(b: float) -> bool | None:
        return None if avail is None else b <= avail

    return {
        "format": fmt,
        "inference_bytes": infer_fmt,
        "inference_int8_bytes": infer_int8,
        "train_bytes": train,
        "train_heap": heap,
        "available_bytes": avail,
        "inference_fits": fits(infer_fmt),
        "inference_int8_fits": fits(infer_int8),
        "train_fits": fits(train),
    }


def _facts(ckpt: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(row's facts, card facts) of a checkpoint, from its card."""
    from lmkit.ship.card.describe import default_name
    from lmkit.ship.card.render import card_facts

    f = card_facts(ckpt)
    cfg, meta, tok = f["cfg"], f["meta"], f["tokenizer"]
    base = meta.get("base_model") if isinstance(meta.get("base_model"), dict) else None
    imported = isinstance(meta.get("imported_from"), dict)
    row = {
        "name": default_name(f["path"]),
        "checkpoint": str(f["path"]),
        "family": cfg.family,
        "objective": cfg.objective,
        "params": f["params"],
        "context": cfg.max_seq_len,
        "tokenizer_kind": tok.get("kind"),
        "vocab_size": tok.get("vocab_size"),
        "origin": "imported" if imported else "continued" if base else "own",
        "base_model": base.get("name") if base else None,
        "license": base.get("license") if base else None,
    }
    return row, f


def model_row(ckpt: str, inputs: CompareInputs, stage: Any = None) -> dict[str, Any]:
    """Every figure of one checkpoint (see the module's docstring); ``stage(text)`` is told what is
    being measured (a progress line). A failure ends the row with its one-line ``error``."""
    from lmkit.infer.evaluate import checkpoint_format
    from lmkit.lab.compare.speed import measure_speed
    from lmkit.models.checkpoint import load_model, load_tokenizer, resolve_checkpoint

    row: dict[str, Any] = {"name": Path(ckpt).name, "checkpoint": str(ckpt), "error": None}
    what = "loading"

    def tell(text: str) -> None:
        nonlocal what
        what = text
        if stage is not None:
            stage(f"{row['name']}: {text}")

    try:
        tell("loading")
        path = resolve_checkpoint(ckpt)
        if not (path / "tokenizer.json").is_file():
            raise LmkitError(f"{path}: no tokenizer.json, so it cannot be scored on your text")
        model = load_model(path).eval()  # first: its errors name what is wrong with the files
        tok = load_tokenizer(path)
        facts, f = _facts(path)
        row.update(facts)
        tell("bits per byte")
        ev = bits_per_byte(model, path, tok, inputs.data, inputs.text_field, inputs.batch_size)
        row.update({"loss": ev["loss"], "bits_per_byte": ev.get("bits_per_byte"), "scored_tokens": int(ev["tokens"])})
        if inputs.general:
            tell("bits per byte on --general")
            row["general_bits_per_byte"] = bits_per_byte(
                model, path, tok, inputs.general, inputs.text_field, inputs.batch_size
            ).get("bits_per_byte")
        tell("fertility")
        row["fertility"] = fertility_of(tok, inputs.texts, inputs.terms)
        tell("memory")
        row["memory"] = memory_of(f["cfg"], float(f["params"]), checkpoint_format(f["config"]), inputs)
        if inputs.speed_new_tokens > 0:
            tell("speed")
            text = "\n\n".join(inputs.texts[:50]) or "The quick brown fox jumps over the lazy dog. " * 40
            row["speed"] = measure_speed(model, tok, text, inputs.speed_prompt_tokens, inputs.speed_new_tokens)
        if inputs.task is not None:
            tell(f"task {inputs.task.name}")
            row["task"] = task_accuracy(model, tok, inputs, row["name"])
    except Exception as e:  # noqa: BLE001 - any failure is this row's, never the whole comparison's
        row["error"] = one_line(e)
        row["failed_at"] = what
    return row


__all__ = ["NEEDS_FINETUNE", "CompareInputs", "model_row", "one_line"]
