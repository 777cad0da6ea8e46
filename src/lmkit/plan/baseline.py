"""This machine's runtime baseline: what a training process holds beside its tensors while it
trains (``runtime_baseline``) and what the end of a run adds on top (``finish_baseline``: the final
evaluation, a checkpoint, the loss-curve plot), as the probe (``lmkit.train.rss_probe``, in a child
process) measured them, cached per machine and library versions (``lmkit.plan.measure.machine_key``);
lmkit's defaults (``lmkit.plan.memory``) where this machine has not been measured. A cache without
the end-of-run figure (written before it was measured apart) counts as not measured: its one
figure was the whole run's peak, which is neither of these.

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
from lmkit.plan.measure import cache_dir, machine_key
from lmkit.plan.memory import FINISH_BASELINE_BYTES, RUNTIME_BASELINE_BYTES

BASELINE_FILE = "runtime-baseline.json"
FIGURES = ("runtime_bytes", "finish_bytes")  # what the probe prints and the cache holds


def _cached() -> dict[str, Any] | None:
    """This machine's cached figures (both of ``FIGURES``, as floats, and ``when``), or None."""
    try:
        saved = json.loads((cache_dir() / BASELINE_FILE).read_text())
        if saved.get("key") == machine_key():
            return {**{k: float(saved[k]) for k in FIGURES}, "when": str(saved.get("when", "?"))}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass
    return None


def runtime_baseline(measure: bool = False) -> tuple[float, str]:
    """Bytes a training process holds beside its tensors while it trains, and where the figure comes from.

    ``measure``: run the probe in this call (a child process training a negligible model end to
    end) and cache both of its figures; otherwise the cached figure for this machine, or lmkit's
    default."""
    if not measure:
        saved = _cached()
        if saved is None:
            return float(RUNTIME_BASELINE_BYTES), "lmkit's default (lmkit plan --this-machine measures this machine's)"
        return saved["runtime_bytes"], f"measured on this machine ({saved['when']})"
    with tempfile.TemporaryDirectory(prefix="lmkit-probe-") as work:
        # the probe's own run goes in its scratch cache, not in this machine's track record
        env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "LMKIT_CACHE": work}
        done = subprocess.run(
            [sys.executable, "-m", "lmkit.train.rss_probe", work], capture_output=True, text=True, env=env, timeout=300
        )
    if done.returncode != 0:
        raise LmkitError(f"measuring the runtime baseline failed: {done.stderr.strip().splitlines()[-1:]}")
    printed = json.loads(done.stdout.strip().splitlines()[-1])
    figures = {k: float(printed[k]) for k in FIGURES}
    path = cache_dir() / BASELINE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"key": machine_key(), **figures, "when": time.strftime("%Y-%m-%d")}) + "\n")
    tmp.replace(path)
    return figures["runtime_bytes"], "measured on this machine (now)"


def finish_baseline() -> float:
    """Bytes the end of a training run (final evaluation, checkpoint, loss-curve plot) adds to what
    the process holds beside its tensors: this machine's cached figure (``runtime_baseline(measure=True)``
    measures it) or lmkit's default."""
    saved = _cached()
    return float(FINISH_BASELINE_BYTES) if saved is None else saved["finish_bytes"]


__all__ = ["BASELINE_FILE", "finish_baseline", "runtime_baseline"]
