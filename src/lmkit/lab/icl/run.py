"""Running a task at several shot counts: the samples, the metrics and the report files.

What this module owns: :func:`evaluate_shots` (one shot count: prompts, model calls, per-example
records), :func:`run_icl` (all shot counts -> the ``icl.json`` report and the sample records),
:func:`check_out` (before any work: ``--out`` may hold only a previous run's files) and
:func:`write_outputs` (``samples.jsonl``, ``icl.json``, ``accuracy_vs_shots.png`` into a fresh
folder), :func:`plot_accuracy` and :func:`table_rows` (the metric x shots table the command prints).

The model is a :class:`~lmkit.lab.icl.models.LocalLM` or :class:`~lmkit.lab.icl.models.ServerLM`;
nothing here depends on which. Every record in ``samples.jsonl`` is a function of the task, the
seed and the model only (not of the batch size or ``--limit``), written with sorted keys.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, Protocol

from lmkit.lab.icl.prompts import Prompt, build_prompt, continuation
from lmkit.lab.icl.score import GEN_METRICS, MC_METRICS, choose, cut_answer, exact_match, summarise
from lmkit.lab.icl.tasks import Example, Task

OUTPUT_NAMES = re.compile(r"samples\.jsonl|icl\.json|accuracy_vs_shots\.png")


class LM(Protocol):
    window: int
    family: str
    name: str

    def count(self, text: str) -> int | None: ...

    def loglikelihood(self, requests: Sequence[tuple[str, str]]) -> list[tuple[float, int]]: ...

    def generate(self, prompts: Sequence[str], max_new_tokens: int, separator: str) -> list[str]: ...


def fits_for(lm: LM, task: Task) -> Any:
    """The ``fits(text, query)`` test of :func:`build_prompt` for this model and task: the prompt
    plus its longest answer in tokens (multiple choice: every choice is counted, tokenised with the
    prompt as it is scored, since a choice short in characters can be long in tokens) or plus
    ``max_new_tokens`` (free-form) in the window."""
    from lmkit.models.registry import spec_of

    fmt = task.format
    continues = spec_of(lm.family).decodes == "causal"  # the answer shares the prompt's window

    def fits(text: str, query: Example) -> bool:
        if task.kind == "multiple_choice" and continues:
            for answer in query.choices or (query.target,):
                n = lm.count(text + continuation(fmt, answer))
                if n is not None and n > lm.window:
                    return False
            return True
        n = lm.count(text)
        if n is None:
            return True
        extra = fmt.max_new_tokens if continues else 1  # seq2seq: its EOS
        return n + extra <= lm.window

    return fits


def metric_names(task: Task) -> tuple[str, ...]:
    return MC_METRICS if task.kind == "multiple_choice" else GEN_METRICS


def evaluate_shots(
    lm: LM, task: Task, k: int, seed: int, indices: Sequence[int], uncond: dict[str, float], progress: Any = None
) -> list[dict[str, Any]]:
    """The sample records of ``k``-shot prompts for ``indices`` (``uncond``: the calibration
    log-likelihood of each continuation, filled as needed and shared across shot counts)."""
    fmt, fits = task.format, fits_for(lm, task)
    prompts: list[Prompt] = [build_prompt(task, i, k, seed, fits) for i in indices]
    records: list[dict[str, Any]] = []
    if task.kind == "multiple_choice":
        reqs = [
            (p.text, continuation(fmt, c)) for p, i in zip(prompts, indices) for c in task.examples[i].choices or ()
        ]
        lls = lm.loglikelihood(reqs)
        missing = sorted({cont for _, cont in reqs if cont not in uncond})
        if missing:
            for cont, (ll_c, _) in zip(missing, lm.loglikelihood([(fmt.calibration_context, c) for c in missing])):
                uncond[cont] = ll_c
        pos = 0
        for p, i in zip(prompts, indices):
            ex = task.examples[i]
            choices = list(ex.choices or ())
            got = lls[pos : pos + len(choices)]
            pos += len(choices)
            conts = [continuation(fmt, c) for c in choices]
            ll = [g[0] for g in got]
            ll_u = [uncond[c] for c in conts]
            pred = choose(ll, [len(c) for c in conts], ll_u)
            records.append(
                {
                    "shots": k,
                    "index": i,
                    "shots_used": p.shots,
                    "exemplars": list(p.exemplars),
                    "prompt": p.text,
                    "choices": choices,
                    "label": ex.label,
                    "loglik": ll,
                    "tokens": [g[1] for g in got],
                    "loglik_calibration": ll_u,
                    "pred": pred,
                    "correct": {m: pred[m] == ex.label for m in MC_METRICS},
                }
            )
            if progress is not None:
                progress.update(1)
    else:
        gens = lm.generate([p.text for p in prompts], fmt.max_new_tokens, fmt.separator)
        for p, i, g in zip(prompts, indices, gens):
            ex = task.examples[i]
            answer = cut_answer(g, fmt.separator, fmt.target_delimiter, fmt.stop)
            records.append(
                {
                    "shots": k,
                    "index": i,
                    "shots_used": p.shots,
                    "exemplars": list(p.exemplars),
                    "prompt": p.text,
                    "target": ex.target,
                    "generation": g,
                    "prediction": answer,
                    "correct": {"exact_match": exact_match(answer, ex.target)},
                }
            )
            if progress is not None:
                progress.update(1)
    return records


def summarise_shots(records: Sequence[dict[str, Any]], task: Task, k: int, seed: int) -> dict[str, Any]:
    """One row of the report: each metric's mean and 95% interval, and how many shots fitted."""
    used = [r["shots_used"] for r in records]
    row: dict[str, Any] = {"shots": k}
    for m in metric_names(task):
        row[m] = summarise([r["correct"][m] for r in records], seed)
    row["shots_used_mean"] = sum(used) / len(used) if used else 0.0
    row["shots_used_min"] = min(used) if used else 0
    row["examples_with_fewer_shots"] = sum(1 for u in used if u < k)
    return row


def run_icl(
    lm: LM, task: Task, shots: Sequence[int], seed: int = 0, limit: int | None = None, show_progress: bool = False
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Every shot count over the first ``limit`` examples -> (report, sample records)."""
    from tqdm import tqdm

    indices = list(range(len(task.examples) if limit is None else min(limit, len(task.examples))))
    uncond: dict[str, float] = {}
    samples: list[dict[str, Any]] = []
    rows = []
    with tqdm(total=len(indices) * len(shots), desc="icl", unit="prompt", disable=not show_progress) as bar:
        for k in shots:
            recs = evaluate_shots(lm, task, k, seed, indices, uncond, bar)
            samples.extend(recs)
            rows.append(summarise_shots(recs, task, k, seed))
    report = {
        "task": task.name,
        "source": task.source,
        "kind": task.kind,
        "model": lm.name,
        "family": lm.family,
        "window": lm.window,
        "n_examples": len(indices),
        "exemplar_pool": "train split" if task.train is not None else "the other examples",
        "shots": list(shots),
        "seed": seed,
        "metrics": list(metric_names(task)),
        "chance": task.chance(len(indices)),
        "format": asdict(task.format),
        "results": rows,
    }
    return report, samples


def samples_text(samples: Sequence[dict[str, Any]]) -> str:
    """``samples.jsonl``: one record per line, keys sorted, so equal runs give equal bytes."""
    return "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in samples)


def table_rows(report: dict[str, Any]) -> list[str]:
    """The metric x shots table: ``value [low, high]`` per cell, and the chance level."""
    metrics = report["metrics"]
    head = f"{'shots':>5}  " + "  ".join(f"{m:<22}" for m in metrics) + "  shots fitted"
    lines = [head]
    for row in report["results"]:
        cells = "  ".join(
            f"{row[m]['value']:.3f} [{row[m]['ci_low']:.3f}, {row[m]['ci_high']:.3f}]".ljust(22) for m in metrics
        )
        fitted = f"{row['shots_used_mean']:.2f}" + (
            f" ({row['examples_with_fewer_shots']} cut)" if row["examples_with_fewer_shots"] else ""
        )
        lines.append(f"{row['shots']:>5}  {cells}  {fitted}")
    lines.append(
        f"chance {report['chance']:.3f}"
        + ("" if report["kind"] == "multiple_choice" else " (free-form: exact match by guessing is ~0)")
    )
    ft = report.get("finetune")
    if ft and ft.get("accuracy") is not None:
        lines.append(
            f"fine-tuned ({ft['task']}, {ft['train_examples']} training examples): "
            f"{ft['metric']} {ft['accuracy']:.3f} on {ft['val_examples']} held out"
        )
        best = ft.get("best_prompting")
        if best:
            verdict = "beats" if ft["beats_prompting"] else "does not beat"
            lines.append(
                f"fine-tuning {verdict} the best prompting ({best['shots']}-shot {best['metric']} "
                f"{best['value']:.3f} [{best['ci_low']:.3f}, {best['ci_high']:.3f}])"
            )
    return lines


def plot_accuracy(report: dict[str, Any], path: Path) -> None:
    """``accuracy_vs_shots.png``: each metric against the shot count with its 95% interval, the
    chance line, and the fine-tuned accuracy when there is one."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=110)
    rows = report["results"]
    xs = [r["shots"] for r in rows]
    for j, m in enumerate(report["metrics"]):
        ys = [r[m]["value"] for r in rows]
        err = [[y - r[m]["ci_low"] for y, r in zip(ys, rows)], [r[m]["ci_high"] - y for y, r in zip(ys, rows)]]
        ax.errorbar([x + 0.06 * (j - 1) for x in xs], ys, yerr=err, marker="o", capsize=3, label=m)
    ax.axhline(report["chance"], color="grey", linestyle="--", label=f"chance ({report['chance']:.2f})")
    ft = report.get("finetune")
    if ft and ft.get("accuracy") is not None:
        ax.axhline(ft["accuracy"], color="black", linestyle=":", label=f"fine-tuned ({ft['accuracy']:.2f})")
    ax.set_xlabel("shots (exemplars in the prompt)")
    ax.set_ylabel("accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xticks(xs)
    ax.set_title(f"{report['task']}: {report['n_examples']} examples, {Path(str(report['model'])).name}")
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def check_out(
    out: str | Path, overwrite: bool, task: Task, checkpoint: str | None = None, from_text: Sequence[str] = ()
) -> None:
    """The output check of ``lmkit icl --out`` (``lmkit.files.check_out_dir``), run before any work:
    a folder that is none of the run's inputs (the checkpoint, the task's file, ``from_text``) and,
    unless new or empty, holds only the files :func:`write_outputs` writes (replaced with ``overwrite``)."""
    from lmkit.files import check_out_dir

    task_file = task.source if task.source not in ("built-in", "--from-text") else None
    inputs = [x for x in (checkpoint, task_file) if x] + list(from_text)
    check_out_dir(out, overwrite, inputs, ours=OUTPUT_NAMES, kind="icl output")


def write_outputs(out: str | Path, report: dict[str, Any], samples: Sequence[dict[str, Any]]) -> Path:
    """Write the three files into a temporary sibling folder, then put it in place at ``out``."""
    import tempfile

    from lmkit.files import replace_dir, write_json_atomic

    final = Path(out)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.tmp-"))
    try:
        (tmp / "samples.jsonl").write_text(samples_text(samples), encoding="utf-8")
        write_json_atomic(tmp / "icl.json", report)
        plot_accuracy(report, tmp / "accuracy_vs_shots.png")
        replace_dir(tmp, final)
    except BaseException:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def empty_report(task: Task, model: str, limit: int | None, seed: int) -> dict[str, Any]:
    """The report of a run that prompts nothing (an encoder, only fine-tuned)."""
    n = len(task.examples) if limit is None else min(limit, len(task.examples))
    return {
        "task": task.name,
        "source": task.source,
        "kind": task.kind,
        "model": model,
        "family": "encoder",
        "window": None,
        "n_examples": n,
        "exemplar_pool": None,
        "shots": [],
        "seed": seed,
        "metrics": list(metric_names(task)),
        "chance": task.chance(n),
        "format": asdict(task.format),
        "results": [],
        "note": "an encoder does not continue a prompt: only the fine-tuned accuracy is reported",
    }
