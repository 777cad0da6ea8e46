"""IsoFLOP points as a fit reads them: :class:`Points` (model size N, tokens D, compute C, final loss
and the budget each run was planned for), :func:`read_points` for ``points.csv`` and
:func:`drop_highest`, the points without their highest-loss runs.

What a points file may be: a regular file of at most ``MAX_POINTS_BYTES`` (checked before a byte
is read, so a device, a pipe or a folder never is), of at most ``MAX_POINTS`` runs, every value
(given or derived from C = 6ND) in ``POINT_RANGES``; anything else is one LmkitError naming the
file and the row. Points without a ``budget`` column are grouped into budgets by their compute.
The fits themselves live in ``lmkit.lab.scale.fit``.
"""

from __future__ import annotations

import csv
import math
import stat
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lmkit.errors import LmkitError
from lmkit.plan.compute import MAX_FLOPS, MAX_PARAMS, MAX_TOKENS

COLUMNS = ("params", "tokens", "flops", "loss")
MAX_POINTS = 10_000  # runs in one fit (Chinchilla's has 245); Approach 3's work grows with starts x runs
MAX_POINTS_BYTES = 4 * 2**20  # a points file: 10,000 rows of 400 characters
# What a point may hold: parameters and tokens as lmkit plan bounds them (1e15 parameters is a
# thousand times the largest model trained), a loss in nats per token.
POINT_RANGES = {
    "params": (1.0, MAX_PARAMS),
    "tokens": (1.0, MAX_TOKENS),
    "flops": (1.0, MAX_FLOPS),
    "loss": (1e-6, 1e3),
}


@dataclass
class Points:
    """IsoFLOP training runs: model size N, tokens D, compute C, final loss; ``budget`` groups runs
    of one IsoFLOP profile (the C they were planned for)."""

    params: np.ndarray
    tokens: np.ndarray
    flops: np.ndarray
    loss: np.ndarray
    budget: np.ndarray
    run: list[str]

    def __len__(self) -> int:
        return len(self.loss)

    def subset(self, keep: np.ndarray) -> Points:
        return Points(
            self.params[keep],
            self.tokens[keep],
            self.flops[keep],
            self.loss[keep],
            self.budget[keep],
            [r for r, k in zip(self.run, keep) if k],
        )


def group_budgets(flops: np.ndarray, gap_dex: float = 0.05) -> np.ndarray:
    """Budgets for points without a ``budget`` column: runs whose log10 C lie within ``gap_dex`` of
    their sorted neighbour form one group, labelled by its geometric-mean compute."""
    order = np.argsort(flops)
    lc = np.log10(flops[order])
    labels = np.zeros(len(flops))
    start = 0
    for i in range(1, len(lc) + 1):
        if i == len(lc) or lc[i] - lc[i - 1] > gap_dex:
            labels[order[start:i]] = 10 ** lc[start:i].mean()
            start = i
    return labels


def check_points_file(path: str | Path) -> Path:
    """``path`` if it is a regular file of at most ``MAX_POINTS_BYTES``; one line saying why not,
    before a byte of it is read (a device such as /dev/zero, a pipe or a folder never is)."""
    p = Path(path)
    try:
        st = p.stat()
    except OSError as e:
        raise LmkitError(f"{p}: cannot read points ({e.strerror or e})") from None
    if not stat.S_ISREG(st.st_mode):
        raise LmkitError(f"{p}: not a regular file (a points CSV with columns params,tokens,flops,loss)")
    if st.st_size > MAX_POINTS_BYTES:
        raise LmkitError(
            f"{p}: {st.st_size / 2**20:,.1f} MiB is more than a points file holds (at most "
            f"{MAX_POINTS_BYTES // 2**20} MiB, {MAX_POINTS:,} runs)"
        )
    return p


def _check_point(path: Path, row: int, key: str, value: float, name: str) -> None:
    """One line when ``value`` (column ``name``, row ``row``) lies outside ``POINT_RANGES[key]``."""
    lo, hi = POINT_RANGES[key]
    if not lo <= value <= hi:  # NaN and inf included
        raise LmkitError(f"{path}: row {row}: {name} {value:.3g} is out of range ({key} must be {lo:g} to {hi:g})")


def read_points(path: str | Path) -> Points:
    """``points.csv``: columns params, tokens, flops, loss (and optionally budget, run); lines
    starting with ``#`` are comments. Missing tokens or flops are derived from C = 6ND. Every value
    must lie in ``POINT_RANGES`` (finite, positive, and small enough that the fits' sums stay finite)."""
    p = check_points_file(path)
    try:
        with p.open("rb") as fh:
            raw = fh.read(MAX_POINTS_BYTES + 1)  # a file that grew since its stat is still bounded
        text = raw.decode("utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise LmkitError(f"{p}: cannot read points ({e})") from None
    if len(raw) > MAX_POINTS_BYTES:
        raise LmkitError(f"{p}: more than {MAX_POINTS_BYTES // 2**20} MiB, more than a points file holds")
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    if len(lines) > MAX_POINTS + 1:
        raise LmkitError(f"{p}: {len(lines) - 1:,} runs; a fit takes at most {MAX_POINTS:,}")
    rows = list(csv.DictReader(lines))
    if not rows:
        raise LmkitError(f"{p}: no points (expected a CSV with columns params,tokens,flops,loss)")
    head = set(rows[0])
    if not {"params", "loss"} <= head or not ({"tokens", "flops"} & head):
        raise LmkitError(f"{p}: needs columns params, loss and tokens or flops; has {', '.join(sorted(head))}")
    cols: dict[str, list[float]] = {k: [] for k in (*COLUMNS, "budget")}
    runs: list[str] = []
    for i, r in enumerate(rows, start=2):
        try:
            vals = {k: float(r[k]) for k in (*COLUMNS, "budget") if r.get(k) not in (None, "")}
        except (TypeError, ValueError):
            vals = {}
        if not {"params", "loss"} <= set(vals) or not {"tokens", "flops"} & set(vals):
            raise LmkitError(f"{p}: row {i} is not numbers: {dict(r)}")
        for key, v in vals.items():
            _check_point(p, i, "flops" if key == "budget" else key, v, key)
        n, loss, b = vals["params"], vals["loss"], vals.get("budget", math.nan)
        d = vals["tokens"] if "tokens" in vals else vals["flops"] / (6 * n)
        c = vals["flops"] if "flops" in vals else 6 * n * d
        _check_point(p, i, "tokens", d, "tokens (flops / 6·params)")
        _check_point(p, i, "flops", c, "flops (6·params·tokens)")
        for k, v in zip((*COLUMNS, "budget"), (n, d, c, loss, b)):
            cols[k].append(v)
        runs.append(r.get("run") or "")
    arr = {k: np.asarray(v, float) for k, v in cols.items()}
    budget = arr["budget"]
    if np.isnan(budget).any():
        budget = group_budgets(arr["flops"])
    return Points(arr["params"], arr["tokens"], arr["flops"], arr["loss"], budget, runs)


def drop_highest(points: Points, k: int) -> Points:
    """The points without the ``k`` highest-loss runs (Besiroglu et al. drop 5 of Chinchilla's 245)."""
    if not 0 <= k < len(points):
        raise LmkitError(f"--drop-highest must be 0 to {len(points) - 1} (the points have {len(points)} runs), got {k}")
    if k == 0:
        return points
    keep = np.ones(len(points), bool)
    keep[np.argsort(points.loss)[len(points) - k :]] = False
    return points.subset(keep)


__all__ = [
    "COLUMNS",
    "MAX_POINTS",
    "MAX_POINTS_BYTES",
    "POINT_RANGES",
    "Points",
    "check_points_file",
    "drop_highest",
    "group_budgets",
    "read_points",
]
