"""``compare.png``: bits per byte on the user's text against parameters (log scale), one marker per
model, its area growing with generated tokens/s (a model without a speed gets the smallest marker,
hollow), foundation models and the user's own told apart by colour, the families by shape. Rows with an error are left
out of the picture (they are in the table). matplotlib with the Agg backend, written atomically.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

COLOURS = {"own": "tab:blue", "continued": "tab:green", "imported": "tab:orange"}
LABELS = {"own": "your own (from scratch)", "continued": "continued from a foundation model", "imported": "imported"}
MARKERS = {"decoder": "o", "encdec": "s", "encoder": "^"}
MIN_AREA, MAX_AREA = 40.0, 600.0


def marker_areas(speeds: Sequence[float | None]) -> list[float]:
    """Marker areas from generated tokens/s: the fastest model MAX_AREA, the others in proportion,
    none under MIN_AREA (nor a model without a speed)."""
    known = [s for s in speeds if s]
    top = max(known) if known else 0.0
    return [max(MIN_AREA, MAX_AREA * s / top) if s and top else MIN_AREA for s in speeds]


def plot_compare(rows: Sequence[dict[str, Any]], path: Path, title: str = "") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if not r.get("error") and r.get("bits_per_byte") is not None]
    speeds = [(r.get("speed") or {}).get("generated_tokens_per_s") for r in ok]
    areas = marker_areas(speeds)
    from matplotlib.lines import Line2D

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=100)
    for r, a, s in zip(ok, areas, speeds):
        c = COLOURS.get(str(r.get("origin", "own")), "tab:grey")
        m = MARKERS.get(str(r.get("family")), "o")
        ax.scatter([r["params"]], [r["bits_per_byte"]], s=a, marker=m, c=c if s else "none", edgecolors=c, lw=1.5)
        ax.annotate(str(r["name"]), (r["params"], r["bits_per_byte"]), xytext=(8, 6), textcoords="offset points")
    origins = list(dict.fromkeys(str(r.get("origin", "own")) for r in ok))
    families = list(dict.fromkeys(str(r.get("family")) for r in ok))
    handles = [
        Line2D([], [], ls="", marker="o", color=COLOURS.get(o, "tab:grey"), label=LABELS.get(o, o)) for o in origins
    ]
    handles += [Line2D([], [], ls="", marker=MARKERS.get(f, "o"), color="black", mfc="none", label=f) for f in families]
    ax.set_xscale("log")
    ax.set_xlabel("parameters")
    ax.set_ylabel("bits per byte on your text (lower is better)")
    ax.set_title(title or "models on your text (marker area: generated tokens/s)", fontsize=10)
    ax.margins(x=0.2, y=0.15)
    if ok:
        ax.legend(handles=handles, loc="best", fontsize=8)
    ax.grid(True, which="major", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".png")
    os.close(fd)
    try:
        fig.savefig(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        Path(tmp).unlink(missing_ok=True)
    return path


__all__ = ["marker_areas", "plot_compare"]
