"""Scaling-law fits of IsoFLOP points, as pure functions: Approach 1 (the lowest-loss run of each
budget), Approach 2 (IsoFLOP profiles, with the parabola's bias corrected), the Kaplan-style L(C)
power law on the compute-efficient frontier, and :func:`fit_points`, which runs the chosen
approaches (Approach 3 lives in ``lmkit.lab.scale.approach3``) and returns one JSON-ready dict.

What a fit accepts: :class:`Points` as ``lmkit.lab.scale.points`` reads and bounds them (a points
file's size, its number of runs and every value's range are checked there); an approach the
points cannot identify (too few sizes, budgets or runs) is skipped with its reason, and a fit
where no approach asked for can be fitted is one LmkitError saying why.

Approach 2's bias: the loss at a fixed budget C is not a parabola in x = log N. Under
L = E + A/N^α + B/D^β and D = C/(6N) it is c + u·e^(−αx) + v·e^(βx), which is asymmetric, so a
parabola's vertex lands off the true minimum (+1.3% at ±4×, +5.4% at ±16× on a centred grid).
The correction fits that form itself: α and β shared by all budgets (found by a zooming grid
search), c, u, v per budget by linear least squares; its minimum is
x* = log(αu/(βv))/(α+β). Both minima are reported, and a budget whose minimum lies at or beyond
the edge of its grid is flagged (its N_opt is an extrapolation).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from lmkit.errors import LmkitError
from lmkit.lab.scale.points import Points

CHINCHILLA_TOKENS_PER_PARAM = 20.0
MAX_BOOTSTRAP = 10_000  # resamples for Approach 3's intervals (percentiles settle within a few thousand)


def power_fit(x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """y = k·x^p by least squares in log space: exponent p, coefficient k, p's standard error."""
    lx, ly = np.log(x), np.log(y)
    if len(lx) < 2 or np.ptp(lx) == 0:
        raise LmkitError("a power law needs at least two different budgets")
    A = np.stack([np.ones_like(lx), lx], 1)
    coef, *_ = np.linalg.lstsq(A, ly, rcond=None)
    resid = ly - A @ coef
    dof = len(lx) - 2
    se = math.sqrt(float(resid @ resid) / dof / float(((lx - lx.mean()) ** 2).sum())) if dof > 0 else math.nan
    return {"exponent": float(coef[1]), "coefficient": float(math.exp(coef[0])), "exponent_se": se}


# --------------------------------------------------------------------------- Approach 1 and Kaplan


def approach1(points: Points) -> dict[str, Any]:
    """The envelope: at each budget the lowest-loss run; N_opt ∝ C^a and D_opt ∝ C^b through them."""
    rows: list[dict[str, Any]] = []
    for c in np.unique(points.budget):
        m = points.budget == c
        i = np.flatnonzero(m)[np.argmin(points.loss[m])]
        rows.append(
            {
                "budget": float(c),
                "params": float(points.params[i]),
                "tokens": float(points.tokens[i]),
                "loss": float(points.loss[i]),
            }
        )
    c = np.array([r["budget"] for r in rows])
    out: dict[str, Any] = {"frontier": rows}
    if len(rows) < 2:
        out["note"] = "one budget: its exponents need runs at 2 or more budgets"
    elif len(np.unique(points.params)) < 2:  # N_opt ∝ C^0 would only repeat the one size there is
        out["note"] = (
            f"every run has {rows[0]['params']:.3g} parameters: no exponent without runs of several sizes per budget"
        )
    else:
        out["n_opt"] = power_fit(c, np.array([r["params"] for r in rows]))
        out["d_opt"] = power_fit(c, np.array([r["tokens"] for r in rows]))
    return out


def kaplan(points: Points) -> dict[str, Any]:
    """Kaplan et al.'s L(C) = (C_c / C)^γ on the compute-efficient frontier (each budget's lowest loss)."""
    front = approach1(points)["frontier"]
    c = np.array([r["budget"] for r in front])
    loss = np.array([r["loss"] for r in front])
    if len(front) < 2:
        return {"frontier": front}
    pf = power_fit(c, loss)
    gamma = -pf["exponent"]
    log_cc = math.log(pf["coefficient"]) / gamma if gamma > 0 else math.inf
    cc = math.exp(log_cc) if log_cc < 700 else math.nan  # past float's range: the loss hardly falls
    return {
        "gamma": gamma,
        "gamma_se": pf["exponent_se"],
        "C_c": cc,
        "coefficient": pf["coefficient"],
        "frontier": front,
    }


# --------------------------------------------------------------------------- Approach 2


def parabola_min(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """Vertex (x*, y*) and curvature of the least-squares parabola through (x, y)."""
    p2, p1, p0 = np.polyfit(x, y, 2)
    if p2 <= 0:
        return math.nan, math.nan, float(p2)
    xs = -p1 / (2 * p2)
    return float(xs), float(p0 + p1 * xs + p2 * xs * xs), float(p2)


def _profile_design(x: np.ndarray, alpha: float, beta: float) -> np.ndarray:
    return np.stack([np.ones_like(x), np.exp(-alpha * x), np.exp(beta * x)], 1)


def _vp_sse(groups: list[tuple[np.ndarray, np.ndarray]], alpha: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """Σ over profiles of the least-squares residual of c + u·e^(−αx) + v·e^(βx), for each of the
    (α, β) pairs in ``alpha``, ``beta`` (K,) at once: one batched QR per profile."""
    total = np.zeros(len(alpha))
    for x, y in groups:
        M = np.stack([np.ones((len(alpha), len(x))), np.exp(-alpha[:, None] * x), np.exp(beta[:, None] * x)], -1)
        q, _ = np.linalg.qr(M)  # (K, n, 3)
        r = y - np.einsum("knj,kj->kn", q, np.einsum("knj,n->kj", q, y))
        total += (r * r).sum(-1)
    return total


def shared_exponents(
    groups: list[tuple[np.ndarray, np.ndarray]], lo: float = 0.02, hi: float = 2.0, steps: int = 25, zooms: int = 8
) -> tuple[float, float]:
    """α, β of c + u·e^(−αx) + v·e^(βx) shared by all profiles (x centred per profile), by a grid
    search over [lo, hi]² that zooms ``zooms`` times around its best cell."""
    a_lo, a_hi, b_lo, b_hi = lo, hi, lo, hi
    best = (math.inf, 0.5, 0.5)
    for _ in range(zooms + 1):
        ga, gb = np.meshgrid(np.linspace(a_lo, a_hi, steps), np.linspace(b_lo, b_hi, steps), indexing="ij")
        sse = _vp_sse(groups, ga.ravel(), gb.ravel())
        i = int(np.argmin(sse))
        if sse[i] < best[0]:
            best = (float(sse[i]), float(ga.ravel()[i]), float(gb.ravel()[i]))
        wa, wb = 2 * (a_hi - a_lo) / (steps - 1), 2 * (b_hi - b_lo) / (steps - 1)
        a_lo, a_hi = max(lo / 10, best[1] - wa), best[1] + wa
        b_lo, b_hi = max(lo / 10, best[2] - wb), best[2] + wb
    return best[1], best[2]


def approach2(points: Points, min_points: int = 3) -> dict[str, Any]:
    """IsoFLOP profiles: per budget a parabola of loss in log N and the bias-corrected minimum;
    N_opt ∝ C^a and D_opt = C/(6 N_opt) ∝ C^b through the corrected minima (budgets whose
    minimum lies at the grid's edge are fitted too, and flagged)."""
    sizes = {float(c): len(np.unique(points.params[points.budget == c])) for c in np.unique(points.budget)}
    budgets = [c for c, k in sizes.items() if k >= min_points]  # a parabola needs 3 different sizes
    skipped = [c for c, k in sizes.items() if k < min_points]
    groups, centres = [], []
    for c in budgets:
        m = points.budget == c
        x = np.log(points.params[m])
        centres.append(float(x.mean()))
        groups.append((x - x.mean(), points.loss[m]))
    if not groups:
        return {
            "budgets": [],
            "skipped_budgets": skipped,
            "note": f"no budget has runs of {min_points} or more model sizes: Approach 2 needs IsoFLOP profiles",
        }
    alpha, beta = shared_exponents(groups) if len(groups) >= 1 else (math.nan, math.nan)
    rows: list[dict[str, Any]] = []
    for c, (x, y), x0 in zip(budgets, groups, centres):
        xp, yp, curv = parabola_min(x, y)
        M = _profile_design(x, alpha, beta)
        (cc, u, v), *_ = np.linalg.lstsq(M, y, rcond=None)
        if u > 0 and v > 0:
            xs = math.log(alpha * u / (beta * v)) / (alpha + beta)
            ys = float(cc + u * math.exp(-alpha * xs) + v * math.exp(beta * xs))
            method = "local Chinchilla form"
        else:  # no interior minimum of the form: keep the parabola's
            xs, ys, method = xp, yp, "parabola (the form has no minimum here)"
        lo_x, hi_x = float(x.min()), float(x.max())
        lowest = int(np.argmin(y))
        edge = math.isfinite(xs) and (xs <= lo_x or xs >= hi_x or lowest in (0, len(x) - 1))
        if not math.isfinite(xs):
            method = "no minimum (neither the form nor a parabola has one)"
        n_opt = math.exp(xs + x0) if math.isfinite(xs) else math.nan
        n_par = math.exp(xp + x0) if math.isfinite(xp) else math.nan
        rows.append(
            {
                "budget": float(c),
                "n_points": len(x),
                "n_opt": n_opt,
                "d_opt": float(c) / (6 * n_opt),
                "loss_at_opt": ys,
                "n_opt_parabola": n_par,
                "parabola_bias": n_par / n_opt - 1 if math.isfinite(n_par) and n_opt > 0 else math.nan,
                "grid": [math.exp(lo_x + x0), math.exp(hi_x + x0)],
                "edge": bool(edge),
                "method": method,
                "tokens_per_param": float(c) / (6 * n_opt * n_opt),
            }
        )
    out: dict[str, Any] = {
        "budgets": rows,
        "profile_exponents": {"alpha": alpha, "beta": beta},
        "skipped_budgets": skipped,
    }
    ok = [r for r in rows if math.isfinite(r["n_opt"])]
    if len(ok) >= 2:
        cs = np.array([r["budget"] for r in ok])
        out["n_opt"] = power_fit(cs, np.array([r["n_opt"] for r in ok]))
        out["d_opt"] = power_fit(cs, np.array([r["d_opt"] for r in ok]))
    edges = [r["budget"] for r in rows if r["edge"] and math.isfinite(r["n_opt"])]
    flat = [r["budget"] for r in rows if not math.isfinite(r["n_opt"])]
    notes = []
    if edges:
        notes.append(
            "minimum at the edge of its grid for budget(s) "
            + ", ".join(f"{b:.3g}" for b in edges)
            + ": their N_opt is extrapolated"
        )
    if flat:
        notes.append(
            "no minimum for budget(s) " + ", ".join(f"{b:.3g}" for b in flat) + ": left out of the exponent fit"
        )
    if notes:
        out["note"] = "; ".join(notes) + "; sweep wider sizes there"
    return out


# --------------------------------------------------------------------------- everything


def json_ready(obj: Any) -> Any:
    """``obj`` with every NaN or infinite float as None: what has no value (a budget with no
    minimum, an interval from two budgets) is JSON null, which every parser reads; NaN is not JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_ready(v) for v in obj]
    if isinstance(obj, (np.generic, np.ndarray)):
        return json_ready(obj.tolist())
    return obj


def fit_points(
    points: Points,
    approaches: Sequence[int] = (1, 2, 3),
    n_bootstrap: int = 200,
    seed: int = 0,
    device: str = "cpu",
    grid: str = "full",
    threads: int | None = 1,
) -> dict[str, Any]:
    """Every asked-for approach and the Kaplan fit, as one JSON-ready dict (``lmkit scale fit --json``).

    ``grid`` "full": Approach 3 from Hoffmann et al.'s 4,500 starts; "small": only the 36 of them
    with α = β = 0.5 and e = 0.5 (a quick look; the full grid guards against poor local minima).
    ``threads``: CPU threads for Approach 3 (None: torch's setting). An approach these points
    cannot identify is skipped with its reason (``approach2["note"]``, ``approach3["skipped"]``);
    when none gives a figure, one LmkitError says why."""
    if not 0 <= n_bootstrap <= MAX_BOOTSTRAP:
        raise LmkitError(f"--bootstrap must be 0 to {MAX_BOOTSTRAP:,} resamples, got {n_bootstrap:,}")
    out: dict[str, Any] = {
        "n_points": len(points),
        "budgets": sorted(float(b) for b in np.unique(points.budget)),
        "chinchilla_tokens_per_param": CHINCHILLA_TOKENS_PER_PARAM,
    }
    if 1 in approaches:
        out["approach1"] = approach1(points)
    if 2 in approaches:
        out["approach2"] = approach2(points)
    out["kaplan"] = kaplan(points)
    if 3 in approaches:
        why_not = approach3_unfittable(points)
        out["approach3"] = (
            {"skipped": why_not}
            if why_not
            else approach3(points, out["budgets"], n_bootstrap, seed, device, grid, threads)
        )
    why_none = nothing_fitted(out)
    if why_none:
        raise LmkitError(f"nothing to fit: {why_none}")
    return out


def approach3_unfittable(points: Points) -> str | None:
    """Why L(N, D) = E + A/N^α + B/D^β cannot be fitted to these points, or None: it has 5
    parameters, and α (β) is only identified by runs of different sizes (token counts)."""
    sizes, tokens = len(np.unique(points.params)), len(np.unique(points.tokens))
    if len(points) < 5:
        return f"Approach 3 fits 5 parameters: it needs at least 5 points, got {len(points)}"
    if sizes < 2 or tokens < 2:
        what = f"{sizes} model size" if sizes < 2 else f"{tokens} token count"
        return f"the points have {what} only: Approach 3 needs runs of different sizes and token counts"
    return None


def nothing_fitted(fit: dict[str, Any]) -> str | None:
    """Why none of the approaches asked for gave a figure (one line), or None when one did (Kaplan's
    L(C), reported beside them, does not count: it is no answer to the question asked)."""
    a1, a2, a3 = (fit.get(name) or {} for name in ("approach1", "approach2", "approach3"))
    if "n_opt" in a1 or a2.get("budgets") or "law" in a3:
        return None
    n_b = len(fit["budgets"])
    reasons = [f"{fit['n_points']} runs at {n_b} budget{'s' if n_b != 1 else ''}"]
    reasons += [sec[key] for sec, key in ((a1, "note"), (a2, "note"), (a3, "skipped")) if sec.get(key)]
    return "; ".join(reasons)


def approach3(
    points: Points,
    budgets: list[float],
    n_bootstrap: int = 200,
    seed: int = 0,
    device: str = "cpu",
    grid: str = "full",
    threads: int | None = 1,
) -> dict[str, Any]:
    """Approach 3 on fittable points (see ``approach3_unfittable``), with ``n_bootstrap`` intervals."""
    from lmkit.lab.scale.approach3 import bootstrap, fit_approach3, start_grid

    starts = start_grid()
    if grid == "small":
        starts = starts[(starts[:, 2] == 0.5) & (starts[:, 3] == 0.5) & (starts[:, 4] == 0.5)]
    f3 = fit_approach3(points.params, points.tokens, points.loss, starts=starts, device=device, threads=threads)
    ref = sorted(set(budgets))
    if n_bootstrap > 1:
        bootstrap(
            f3,
            points.params,
            points.tokens,
            points.loss,
            n=n_bootstrap,
            seed=seed,
            flops_for_ratio=[ref[-1]],
            device=device,
            threads=threads,
        )
    out = f3.as_dict()
    out["tokens_per_param"] = {f"{c:.3g}": float(f3.law.tokens_per_param(c)) for c in ref}
    if f3.law.E < 1e-3 * float(points.loss.min()):
        out["note"] = (
            f"E went to {f3.law.E:.2g}: these points do not identify an irreducible loss (the fit puts all "
            "of it in A/N^α + B/D^β), so E's interval says nothing"
        )
    return out


__all__ = [
    "CHINCHILLA_TOKENS_PER_PARAM",
    "MAX_BOOTSTRAP",
    "approach1",
    "approach2",
    "approach3",
    "approach3_unfittable",
    "fit_points",
    "json_ready",
    "kaplan",
    "nothing_fitted",
    "parabola_min",
    "power_fit",
    "shared_exponents",
]
