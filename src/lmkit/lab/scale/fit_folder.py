"""What ``lmkit scale fit`` writes, and where: a fit of a points file into a folder.

What this module owns: :data:`FIT_FILES` (every file a fit writes, so all that ``--overwrite``
may replace), the default folder (``fit/`` beside the points file) and :func:`fit_into_folder`,
which checks the settings and the folder before any work (``lmkit.files.check_out_dir``: never the
points file's folder's other files, never an input), reads the points, fits them
(``lmkit.lab.scale.fit.fit_points``), writes ``fit.json`` atomically and, unless told not to, the
three plots (``lmkit.lab.scale.plots.plot_fit``). A problem the points cannot fit names the file.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lmkit.errors import LmkitError

#: what a fit writes into its folder, all that --overwrite may replace there (lmkit.files.check_out_dir)
FIT_FILES = re.compile(r"fit\.json|isoflops\.png|optimal\.png|loss_vs_compute\.png")


def default_out(points_path: Path) -> Path:
    """Where a fit goes without ``--out``: ``fit/`` beside the points file."""
    return points_path.parent / "fit"


def fit_into_folder(
    points: str | Path,
    out: str | Path | None,
    *,
    overwrite: bool = False,
    approaches: Sequence[int] = (1, 2, 3),
    drop_highest: int = 0,
    n_bootstrap: int = 200,
    seed: int = 0,
    device: str = "cpu",
    grid: str = "full",
    threads: int | None = 1,
    plots: bool = True,
) -> dict[str, Any]:
    """Fit the points file ``points`` into ``out`` (None: :func:`default_out`); returns the fit (the
    dict ``fit.json`` holds, NaN where it holds null: ``lmkit.lab.scale.fit.json_ready``) with ``points``, ``dropped_highest`` and ``files`` (the
    fit.json path and the plots' paths) added. The arguments are those of
    ``lmkit.lab.scale.fit.fit_points``; ``drop_highest`` leaves out that many highest-loss runs."""
    from lmkit.files import check_out_dir, write_json_atomic
    from lmkit.lab.scale.fit import MAX_BOOTSTRAP, fit_points, json_ready
    from lmkit.lab.scale.points import check_points_file, read_points
    from lmkit.lab.scale.points import drop_highest as without_highest

    if not 0 <= n_bootstrap <= MAX_BOOTSTRAP:  # before the file is read: a settings problem comes first
        raise LmkitError(f"--bootstrap must be 0 to {MAX_BOOTSTRAP:,} resamples, got {n_bootstrap:,}")
    if drop_highest < 0:
        raise LmkitError(f"--drop-highest must be 0 or more, got {drop_highest}")
    points_path = check_points_file(points)
    folder = Path(out) if out else default_out(points_path)
    check_out_dir(folder, overwrite, inputs=[points_path], ours=FIT_FILES, kind="scaling-law fit")
    pts = without_highest(read_points(points_path), drop_highest)
    try:
        fit = fit_points(pts, approaches, n_bootstrap=n_bootstrap, seed=seed, device=device, grid=grid, threads=threads)
    except LmkitError as e:  # what the points do not identify: name the file
        raise LmkitError(f"{points_path}: {e}") from None
    fit["points"] = str(points_path)
    fit["dropped_highest"] = drop_highest
    folder.mkdir(parents=True, exist_ok=True)
    write_json_atomic(folder / "fit.json", json_ready(fit))
    written: list[str] = []
    if plots:
        from lmkit.lab.scale.plots import plot_fit

        written = [str(p) for p in plot_fit(pts, fit, folder)]
    fit["files"] = {"fit": str(folder / "fit.json"), "plots": written}
    return fit


__all__ = ["FIT_FILES", "default_out", "fit_into_folder"]
