"""The pictures of a scaling-law fit (``lmkit scale fit``), as PNG files (matplotlib, Agg):
IsoFLOP curves with their minima, N_opt and D_opt against C (log-log, with the fitted lines and
Chinchilla's 20 tokens per parameter for reference), and loss against compute.
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from lmkit.lab.scale.fit import CHINCHILLA_TOKENS_PER_PARAM
from lmkit.lab.scale.points import Points


def _tick_label(v: float, _pos: Any = None) -> str:
    """A log axis's label: plain (2.5, 300) between 0.001 and 10^4, else m × 10^k."""
    if v <= 0 or not math.isfinite(v):
        return ""
    if 1e-3 <= v < 1e4:
        return f"{v:g}"
    k = math.floor(math.log10(v) + 1e-9)
    m = v / 10**k
    return f"$10^{{{k}}}$" if abs(m - 1) < 1e-6 else f"${m:.3g}\\times10^{{{k}}}$"


def _log_axes(ax: Any, y: bool = False) -> None:
    """Log scale with labels at 1, 2 and 5 × 10^k only: matplotlib labels every minor tick when an
    axis spans under a decade, and those labels overlap. Where a span holds too few of those,
    matplotlib picks its own ticks: they are labelled plainly too (2.5, not 2.5 × 10^0)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    for axis in (ax.xaxis, ax.yaxis) if y else (ax.xaxis,):
        axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        axis.set_major_formatter(FuncFormatter(_tick_label))
        axis.set_minor_formatter(NullFormatter())


def _save(fig: Any, path: Path) -> Path:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".png")
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=110, bbox_inches="tight")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path


def plot_fit(points: Points, fit: dict[str, Any], out: Path, prefix: str = "") -> list[Path]:
    """Write isoflops.png, optimal.png and loss_vs_compute.png into ``out``; return their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lmkit.lab.scale.approach3 import Law

    law = Law(**fit["approach3"]["law"]) if "law" in fit.get("approach3", {}) else None  # none when skipped
    budgets = sorted(np.unique(points.budget))
    cmap = plt.get_cmap("viridis")
    colours = {b: cmap(i / max(1, len(budgets) - 1)) for i, b in enumerate(budgets)}
    written = []

    fig, ax = plt.subplots(figsize=(7, 4.5))
    a2 = {r["budget"]: r for r in fit.get("approach2", {}).get("budgets", [])}
    prof = fit.get("approach2", {}).get("profile_exponents")
    for b in budgets:
        m = points.budget == b
        ax.scatter(points.params[m], points.loss[m], s=14, color=colours[b], label=f"C = {b:.2g}")
        r = a2.get(b)
        if r is not None and math.isfinite(r["n_opt"]):
            xs = np.log(points.params[m])
            grid = np.linspace(xs.min(), xs.max(), 100)
            y = points.loss[m]
            p = np.polyfit(xs - xs.mean(), y, 2)
            ax.plot(np.exp(grid), np.polyval(p, grid - xs.mean()), color=colours[b], lw=0.8, ls=":")
            if prof:
                al, be = prof["alpha"], prof["beta"]
                M = np.stack([np.ones_like(xs), np.exp(-al * (xs - xs.mean())), np.exp(be * (xs - xs.mean()))], 1)
                coef, *_ = np.linalg.lstsq(M, y, rcond=None)
                g = grid - xs.mean()
                ax.plot(
                    np.exp(grid),
                    coef[0] + coef[1] * np.exp(-al * g) + coef[2] * np.exp(be * g),
                    color=colours[b],
                    lw=1.2,
                )
            ax.scatter(
                [r["n_opt"]], [r["loss_at_opt"]], marker="*", s=90, color=colours[b], edgecolor="black", zorder=5
            )
    ax.set_xscale("log")
    _log_axes(ax)
    ax.set_xlabel("parameters N")
    ax.set_ylabel("final loss")
    ax.set_title(f"{prefix}IsoFLOP profiles (solid: bias-corrected fit, dotted: parabola, *: minimum)")
    if len(budgets) <= 12:
        ax.legend(fontsize=7)
    written.append(_save(fig, out / "isoflops.png"))
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    c_lo, c_hi = min(budgets), max(budgets)
    cs = np.logspace(math.log10(c_lo) - 0.3, math.log10(c_hi) + 0.3, 50)
    rule_n = np.sqrt(cs / (6 * CHINCHILLA_TOKENS_PER_PARAM))
    for ax, key, label, rule in (
        (axes[0], "n_opt", "N_opt (parameters)", rule_n),
        (axes[1], "d_opt", "D_opt (tokens)", CHINCHILLA_TOKENS_PER_PARAM * rule_n),
    ):
        for name, marker in (("approach1", "s"), ("approach2", "o")):
            sec = fit.get(name)
            if not sec:
                continue
            rows = sec.get("frontier") or sec.get("budgets") or []
            xs = np.array([r["budget"] for r in rows])
            ys = np.array([r.get(key, r.get("params" if key == "n_opt" else "tokens")) for r in rows])
            ax.scatter(xs, ys, marker=marker, s=20, label=f"{name} points")
            if key in sec:
                pf = sec[key]
                ax.plot(cs, pf["coefficient"] * cs ** pf["exponent"], lw=1, label=f"{name}: ∝ C^{pf['exponent']:.3f}")
        if law is not None:
            n, d = law.optimal(cs)
            ax.plot(
                cs,
                n if key == "n_opt" else d,
                lw=1.5,
                label=f"approach 3: ∝ C^{law.a if key == 'n_opt' else 1 - law.a:.3f}",
            )
        ax.plot(cs, rule, color="grey", ls="--", lw=1, label="Chinchilla, 20 tokens/param")
        ax.set_xscale("log")
        ax.set_yscale("log")
        _log_axes(ax, y=True)
        ax.set_xlabel("compute C (FLOPs)")
        ax.set_ylabel(label)
        ax.legend(fontsize=7)
    fig.suptitle(f"{prefix}compute-optimal size and tokens")
    fig.tight_layout()
    written.append(_save(fig, out / "optimal.png"))
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.scatter(points.flops, points.loss, s=10, color="lightgrey", label="runs")
    k = fit.get("kaplan", {})
    front = k.get("frontier", [])
    ax.scatter([r["budget"] for r in front], [r["loss"] for r in front], s=25, color="C1", label="frontier")
    if "gamma" in k:
        ax.plot(
            cs,
            k["coefficient"] * cs ** (-k["gamma"]),
            color="C1",
            lw=1,
            label=f"Kaplan L(C) = (C_c/C)^{k['gamma']:.3f}",
        )
    if law is not None:
        n, d = law.optimal(cs)
        ax.plot(cs, law.loss(n, d), color="C0", lw=1.5, label=f"approach 3 frontier (E = {law.E:.3g})")
    ax.set_xscale("log")
    ax.set_yscale("log")
    _log_axes(ax, y=True)
    ax.set_xlabel("compute C (FLOPs)")
    ax.set_ylabel("final loss")
    ax.set_title(f"{prefix}loss against compute")
    ax.legend(fontsize=7)
    written.append(_save(fig, out / "loss_vs_compute.png"))
    plt.close(fig)
    return written


__all__ = ["plot_fit"]
