"""This machine's runtime baseline: what a training process holds beside its tensors while it
trains (``runtime_baseline``) and what the end of a run adds on top (``finish_baseline``: the final
evaluation, a checkpoint, the loss-curve plot), as the probe (``lmkit.train.rss_probe``, in a child
process) measured them, cached per machine and library versions (``lmkit.plan.measure.machine_key``);
lmkit's defaults (``lmkit.plan.compute.PlanTerms.runtime_bytes``, ``lmkit.plan.memory``) where this
machine has not been measured. Both are per ``model.family``: a family's kernels map their own share
of torch's library (an encoder's a few MB more than a decoder's). A cache without a family's figures
(one written before they were measured per family) counts as not measured for it.

Not maths: kept apart, like ``lmkit.plan.measure``, so the rest of ``lmkit.plan`` stays pure.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any

from lmkit.errors import LmkitError
from lmkit.plan.compute import PLAN_TERMS, plan_terms
from lmkit.plan.measure import cache_dir, machine_key
from lmkit.plan.memory import FINISH_BASELINE_BYTES

BASELINE_FILE = "runtime-baseline.json"
FIGURES = ("runtime_bytes", "finish_bytes")  # what the probe prints and the cache holds, per family


def _cached(family: str) -> dict[str, Any] | None:
    """This machine's cached figures for ``family`` (both of ``FIGURES``, as floats, and ``when``), or None."""
    try:
        saved = json.loads((cache_dir() / BASELINE_FILE).read_text())
        if saved.get("key") == machine_key():
            mine = saved["families"][family]
            return {**{k: float(mine[k]) for k in FIGURES}, "when": str(saved.get("when", "?"))}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass
    return None


def _probe(family: str, work: str) -> subprocess.Popen[str]:
    """The probe for ``family`` started in a child process (its own scratch cache in ``work``, so
    its run stays out of this machine's track record)."""
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "LMKIT_CACHE": work}
    return subprocess.Popen(
        [sys.executable, "-m", "lmkit.train.rss_probe", work, family],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def measure_baselines() -> dict[str, dict[str, float]]:
    """Run the probe for every family (each in its own child process, side by side, so that it takes
    seconds; side by side each measured ~7 MB more than alone on a 2-core machine) and cache their
    figures for this machine."""
    with tempfile.TemporaryDirectory(prefix="lmkit-probe-") as work:
        procs = {}
        for fam in PLAN_TERMS:
            os.makedirs(os.path.join(work, fam))
            procs[fam] = _probe(fam, os.path.join(work, fam))
        figures = {}
        for fam, proc in procs.items():
            try:
                out, err = proc.communicate(timeout=300)
            except subprocess.TimeoutExpired:
                for p in procs.values():
                    p.kill()
                raise LmkitError(f"measuring the runtime baseline ({fam}) took over 300 s") from None
            if proc.returncode != 0:
                raise LmkitError(f"measuring the runtime baseline ({fam}) failed: {err.strip().splitlines()[-1:]}")
            printed = json.loads(out.strip().splitlines()[-1])
            figures[fam] = {k: float(printed[k]) for k in FIGURES}
    path = cache_dir() / BASELINE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"key": machine_key(), "families": figures, "when": time.strftime("%Y-%m-%d")}) + "\n")
    tmp.replace(path)
    return figures


def runtime_baseline(family: str = "decoder", measure: bool = False) -> tuple[float, str]:
    """Bytes a training process of a ``family`` model holds beside its tensors while it trains, and
    where the figure comes from.

    ``measure``: run the probes in this call (``measure_baselines``: a child process per family
    training a negligible model end to end) and cache their figures; otherwise the cached figure
    for this machine, or lmkit's default for the family."""
    terms = plan_terms(family)
    if measure:
        return measure_baselines()[family]["runtime_bytes"], "measured on this machine (now)"
    saved = _cached(family)
    if saved is None:
        return terms.runtime_bytes, "lmkit's default (lmkit plan --this-machine measures this machine's)"
    return saved["runtime_bytes"], f"measured on this machine ({saved['when']})"


def finish_baseline(family: str = "decoder") -> float:
    """Bytes the end of a ``family`` model's training run (final evaluation, checkpoint, loss-curve
    plot) adds to what the process holds beside its tensors: this machine's cached figure
    (``measure_baselines`` measures it) or lmkit's default."""
    saved = _cached(family)
    return float(FINISH_BASELINE_BYTES) if saved is None else saved["finish_bytes"]


__all__ = ["BASELINE_FILE", "finish_baseline", "measure_baselines", "runtime_baseline"]
