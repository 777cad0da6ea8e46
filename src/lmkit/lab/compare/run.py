"""A whole ``lmkit compare``: this machine's figures, one row per checkpoint, the cost of matching
each model from scratch, the verdict, and the report files.

What this module owns: :func:`machine_figures` (measured once per comparison: the memory this
machine has available, its fp32 matmul peak, the runtime baselines ``lmkit plan`` uses and the
training rate a run's hours are predicted at), :func:`compare` (the report, ``compare.json``'s
content), :func:`check_out` and :func:`write_outputs` (``compare.json`` and ``compare.png`` into a
folder that holds nothing else).

The cost of reaching a model's bits per byte from scratch is counted with the user's own tokenizer:
the target loss is the bits per byte times ln 2 times the bytes per scored token of the first of the
user's own models (one trained from scratch with lmkit) on the same text, since that is the
tokenizer a model trained from scratch would use; without one, each model's own tokenizer (its own
held-out loss). Chinchilla's law was fitted on other text with another tokenizer, so its hours are
an order of magnitude; a law the user fitted on their own data (``--scaling-law``) is the honest one.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lmkit.lab.compare.rows import CompareInputs, model_row, one_line
from lmkit.plan.chinchilla import ScalingFit

OUTPUT_NAMES = re.compile(r"compare\.json|compare\.png")


def machine_figures() -> dict[str, Any]:
    """This machine's figures every row uses (see the module's docstring)."""
    from lmkit.plan.baseline import finish_baseline, runtime_baseline
    from lmkit.plan.compute import PLAN_TERMS
    from lmkit.plan.measure import available_memory_bytes, measure_matmul_peak, training_rate

    runtime = {fam: runtime_baseline(fam) for fam in PLAN_TERMS}
    rate, rate_source = training_rate("auto", "auto")
    return {
        "available_bytes": available_memory_bytes(),
        "peak_flops": measure_matmul_peak(),
        "runtime_bytes": {fam: figure for fam, (figure, _) in runtime.items()},
        "runtime_source": runtime["decoder"][1],
        "finish_bytes": {fam: finish_baseline(fam) for fam in PLAN_TERMS},
        "training_rate_flops": rate,
        "training_rate_source": rate_source,
    }


def own_bytes_per_token(rows: Sequence[dict[str, Any]]) -> tuple[float | None, str | None]:
    """Bytes per scored token of the first of the user's own models on the text, and its name."""
    for r in rows:
        if r.get("origin") == "own" and not r.get("error") and r.get("bits_per_byte"):
            return r["loss"] / (r["bits_per_byte"] * math.log(2)), r["name"]
    return None, None


def _unique_names(rows: list[dict[str, Any]], given: Sequence[str]) -> None:
    names = [r["name"] for r in rows]
    for r, g in zip(rows, given):
        if names.count(r["name"]) > 1:
            r["name"] = str(g)


def compare(
    checkpoints: Sequence[str],
    inputs: CompareInputs,
    law: ScalingFit,
    budget_hours: float | None = None,
    show_progress: bool = False,
    machine: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The report of one comparison (``compare.json``)."""
    from lmkit.lab.compare.cost import scratch_cost
    from lmkit.lab.compare.verdict import decide
    from lmkit.progress import progress

    here = machine if machine is not None else machine_figures()
    for k in ("available_bytes", "peak_flops", "runtime_bytes", "finish_bytes"):
        setattr(inputs, k, here[k])
    rows: list[dict[str, Any]] = []
    bar = progress(total=len(checkpoints), desc="compare", unit="model", disable=not show_progress)
    try:
        for ckpt in checkpoints:
            rows.append(model_row(ckpt, inputs, stage=bar.set_postfix_str))
            bar.update(1)
    finally:
        bar.close()
    _unique_names(rows, checkpoints)
    own_bpt, own_name = own_bytes_per_token(rows)
    for r in rows:
        if r.get("error") or not r.get("bits_per_byte"):
            continue
        bpt = own_bpt if own_bpt is not None else r["loss"] / (r["bits_per_byte"] * math.log(2))
        try:
            r["scratch"] = scratch_cost(r["bits_per_byte"], bpt, law, here["training_rate_flops"])
        except Exception as e:  # noqa: BLE001 - a law that overflows for this target says so in the row
            r["scratch"] = {"reachable": False, "why": one_line(e), "law": law.name}
    notes = [
        "bits per byte: lmkit evaluate's measure over the whole of --data, tokenizer-independent",
        "speed: batch 1, greedy, this machine, under whatever else runs on it",
        "memory to continue pre-training: lmkit plan --gpu here (fp32, micro-batch 1, the model's own window)",
        "from scratch: the least compute whose compute-optimal model reaches the bits per byte under "
        f"{law.name} ({law.source}), counted in "
        + (f"the tokens of your own model {own_name}" if own_name else "each model's own tokens")
        + f"; hours at {here['training_rate_source']}",
    ]
    return {
        "models": rows,
        "data": list(inputs.data),
        "general": list(inputs.general),
        "terms": list(inputs.terms),
        "task": inputs.task.source if inputs.task is not None else None,
        "shots": list(inputs.shots) if inputs.task is not None else [],
        "scaling_law": {"name": law.name, "source": law.source},
        "own_bytes_per_token": own_bpt,
        "own_model": own_name,
        "budget_hours": budget_hours,
        "machine": here,
        "verdict": decide(rows, budget_hours),
        "notes": notes,
    }


def check_out(out: str | Path, overwrite: bool, inputs: Sequence[str]) -> None:
    """``--out`` before any work: a folder that is none of the inputs and holds at most a previous
    comparison's two files (replaced only with ``overwrite``)."""
    from lmkit.files import check_out_dir

    check_out_dir(out, overwrite, list(inputs), ours=OUTPUT_NAMES, kind="compare output")


def write_outputs(out: str | Path, report: dict[str, Any]) -> Path:
    """``compare.json`` and ``compare.png`` into a temporary sibling folder, then put in place at ``out``."""
    import shutil
    import tempfile

    from lmkit.files import replace_dir, write_json_atomic
    from lmkit.lab.compare.plot import plot_compare

    final = Path(out)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.tmp-"))
    try:
        write_json_atomic(tmp / "compare.json", report)
        plot_compare(report["models"], tmp / "compare.png")
        replace_dir(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


__all__ = ["OUTPUT_NAMES", "check_out", "compare", "machine_figures", "own_bytes_per_token", "write_outputs"]
