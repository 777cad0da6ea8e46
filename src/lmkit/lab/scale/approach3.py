"""Chinchilla's Approach 3, fitted as its replication showed it should be: the parametric law
L(N, D) = E + A/N^α + B/D^β by minimising the **sum** of Huber losses of log-space residuals
over a grid of initialisations with L-BFGS, and bootstrap intervals for every parameter.

The law is fitted in the form of Hoffmann et al. (2022): with A = e^a, B = e^b, E = e^e,
    log L̂(N, D) = LSE(a − α log N, b − β log D, e),
and the objective is Σ_i Huber_δ(log L̂(N_i, D_i) − log L_i) with δ = 1e-3. Besiroglu et al.
(2024) found that the original fit minimised a *mean* at a loss scale where L-BFGS stops early;
summing (and tight tolerances in float64) lets the optimiser finish.

The whole grid of starts is one batch: :func:`batched_lbfgs` runs an independent L-BFGS (own
history, own backtracking line search) for every row of a (starts, 5) tensor at once. A bootstrap
replicate is the same problem with the points weighted by how often the resample drew them, so all
replicates are also one batch. A batch holds at most ``BATCH_CELLS`` (rows x points): more starts or
resamples than that are run batch after batch (:func:`row_batches`; rows are independent, so the
answer is the same), and memory does not grow with their number. What makes the 4,500-start grid
on Chinchilla's 240 points take seconds rather than minutes (benchmarks/README.md has the timings,
before and after):

* the objective and its gradient in one closed-form pass (:func:`objective_and_grad`): two
  exponentials and one logarithm per (start, point), no autograd, float64 throughout;
* a start leaves the batch as soon as it stops, and the batch's state is compacted, so each
  iteration costs only the starts still running (after 100 iterations about 450 of 4,500 are);
* one CPU thread by default: the batch's tensors are small, and on a machine whose cores are busy
  torch's second thread makes every operation wait for it (the fit then runs many times slower).

Why nothing is pruned that could hold the minimum: the only starts removed from the batch are
those that have stopped by the rule each would stop by on its own (a relative change of the
objective under ``ftol``, a gradient under ``gtol``, or no step that lowers it). A row's iterates
depend only on its own history and line search, never on other rows, so the answer is exactly the
best of 4,500 separate runs. A cheaper scheme (a coarse pass over every start, then full
iterations only for the best few) was tried on Chinchilla's points and not used: after a loose
pass (ftol 1e-9), 586 of the starts that end at the optimum were still more than 1e-6 above it and one start still had
0.02 to fall (in float32 at 1e-8: 975 starts, and 0.31), so a start's early value does not bound
where it ends, and pruning on it could miss the minimum on other data. Polishing the winner with
scipy's L-BFGS-B lowered nothing (it is stationary to the last digits) and was left out too.

Pure maths on tensors and numbers: torch and numpy only, nothing else from lmkit.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

HUBER_DELTA = 1e-3
# (rows x points) of one L-BFGS batch: each float64 temporary of the objective stays under 16 MiB,
# whatever the number of starts or bootstrap resamples (Hoffmann's 4,500 starts on 240 points: one batch)
BATCH_CELLS = 1 << 21
# Hoffmann et al.'s grid of starts: α, β in 0..2 by 0.5; e in −1..1 by 0.5; a, b in 0..25 by 5.
GRID_ALPHA = (0.0, 0.5, 1.0, 1.5, 2.0)
GRID_E = (-1.0, -0.5, 0.0, 0.5, 1.0)
GRID_AB = (0.0, 5.0, 10.0, 15.0, 20.0, 25.0)
ArrayLike = Sequence[float] | np.ndarray
NAMES = ("E", "A", "B", "alpha", "beta")


@dataclass(frozen=True)
class Law:
    """L(N, D) = E + A/N^α + B/D^β and its compute-optimal frontier under C = 6ND."""

    E: float
    A: float
    B: float
    alpha: float
    beta: float

    def loss(self, params: float | np.ndarray, tokens: float | np.ndarray) -> Any:
        return (
            self.E + self.A / np.asarray(params, float) ** self.alpha + self.B / np.asarray(tokens, float) ** self.beta
        )

    @property
    def a(self) -> float:
        """N_opt ∝ C^a with a = β/(α+β); D_opt ∝ C^b with b = α/(α+β)."""
        return self.beta / (self.alpha + self.beta)

    def optimal(self, flops: float | np.ndarray) -> tuple[Any, Any]:
        """(N_opt, D_opt) = (G·(C/6)^a, (C/6)/N_opt) with G = (αA/(βB))^(1/(α+β))."""
        g = (self.alpha * self.A / (self.beta * self.B)) ** (1.0 / (self.alpha + self.beta))
        c6 = np.asarray(flops, float) / 6.0
        n = g * c6**self.a
        return n, c6 / n

    def tokens_per_param(self, flops: float | np.ndarray) -> Any:
        n, d = self.optimal(flops)
        return d / n

    def as_dict(self) -> dict[str, float]:
        return {"E": self.E, "A": self.A, "B": self.B, "alpha": self.alpha, "beta": self.beta}


def law_of(theta: ArrayLike) -> Law:
    """The law of a parameter vector (a, b, e, α, β) in the fitting form."""
    a, b, e, al, be = (float(v) for v in theta)
    return Law(E=math.exp(e), A=math.exp(a), B=math.exp(b), alpha=al, beta=be)


def theta_of(law: Law) -> list[float]:
    return [math.log(law.A), math.log(law.B), math.log(law.E), law.alpha, law.beta]


def start_grid() -> torch.Tensor:
    """Hoffmann et al.'s 4,500 initialisations (5 α × 5 β × 5 e × 6 a × 6 b), rows (a, b, e, α, β)."""
    g = torch.cartesian_prod(
        torch.tensor(GRID_AB),
        torch.tensor(GRID_AB),
        torch.tensor(GRID_E),
        torch.tensor(GRID_ALPHA),
        torch.tensor(GRID_ALPHA),
    )
    return g.to(torch.float64)


def huber(r: torch.Tensor, delta: float = HUBER_DELTA) -> torch.Tensor:
    """r²/2 for |r| ≤ δ, δ(|r| − δ/2) beyond (scipy.special.huber's convention)."""
    ar = r.abs()
    return torch.where(ar <= delta, 0.5 * r * r, delta * (ar - 0.5 * delta))


def objective(
    theta: torch.Tensor,
    log_n: torch.Tensor,
    log_d: torch.Tensor,
    log_l: torch.Tensor,
    weights: torch.Tensor | None = None,
    delta: float = HUBER_DELTA,
) -> torch.Tensor:
    """Σ_i w_i Huber_δ(LSE(a − α log N_i, b − β log D_i, e) − log L_i) for each row of ``theta``
    (S, 5) -> (S,). ``weights`` (S, P) or (P,) (default 1: the plain sum)."""
    return objective_and_grad(theta, log_n, log_d, log_l, weights, delta)[0]


def objective_and_grad(
    theta: torch.Tensor,
    log_n: torch.Tensor,
    log_d: torch.Tensor,
    log_l: torch.Tensor,
    weights: torch.Tensor | None = None,
    delta: float = HUBER_DELTA,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The objective (S,) and its gradient (S, 5) in closed form, one fused pass over (S, P).

    With x1 = e^(a − α log N), x2 = e^(b − β log D), z = x1 + x2 + e^e, r = log z − log L and
    c = clip(r, −δ, δ): Huber_δ(r) = c·(r − c/2) and Huber' = c, so with u = w·c/z,
    ∂/∂a = Σ u x1, ∂/∂b = Σ u x2, ∂/∂e = e^e Σ u, ∂/∂α = −Σ u x1 log N, ∂/∂β = −Σ u x2 log D.
    The sums are computed without the max-shift of a log-sum-exp: in float64 e^t overflows only
    for t > 709 (a loss of e^709), so a finite value is exact and an absurd trial point comes out
    non-finite, which the line search rejects."""
    a, b, e, al, be = theta.unbind(-1)
    x1 = torch.exp(torch.addcmul(a[:, None], al[:, None], log_n, value=-1.0))  # (S, P)
    x2 = torch.exp(torch.addcmul(b[:, None], be[:, None], log_d, value=-1.0))
    ee = torch.exp(e)
    z = (x1 + x2).add_(ee[:, None])
    r = torch.log(z).sub_(log_l)
    c = r.clamp(-delta, delta)
    hub = r.sub_(c, alpha=0.5).mul_(c)  # c·(r − c/2), in r's storage
    if weights is not None:
        hub = hub.mul_(weights)
        c = c * weights
    f = hub.sum(-1)
    u = c.div_(z)
    su = u.sum(-1)
    mn = torch.stack([torch.ones_like(log_n), -log_n], -1)  # (P, 2): Σ and −Σ·log N in one product
    md = torch.stack([torch.ones_like(log_d), -log_d], -1)
    g1 = (u * x1) @ mn
    g2 = u.mul_(x2) @ md
    return f, torch.stack([g1[:, 0], g2[:, 0], ee * su, g1[:, 1], g2[:, 1]], -1)


FunGrad = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def batched_lbfgs(
    fg: FunGrad,
    x0: torch.Tensor,
    max_iter: int = 500,
    history: int = 10,
    ftol: float = 1e-12,
    gtol: float = 1e-12,
    c1: float = 1e-4,
    max_backtracks: int = 40,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Minimise each row of ``x0`` (S, n) independently with L-BFGS. ``fg(x, rows)`` returns the
    objective (k,) and gradient (k, n) of the rows ``rows`` (indices into x0) at ``x`` (k, n).

    Every row has its own curvature pairs and its own backtracking (Armijo) line search. A row
    stops when its objective changes by under ``ftol`` (relative to max(|f|, 1)), its largest
    gradient component is under ``gtol``, or no step lowers it; stopped rows leave the batch (the
    state is compacted), so later iterations cost only what is still running. Returns (x, f,
    iterations per row).
    """
    S, n = x0.shape
    dev, dt = x0.device, x0.dtype
    x_out = x0.detach().clone()
    f_out = torch.full((S,), math.inf, dtype=dt, device=dev)
    it_out = torch.zeros(S, dtype=torch.long, device=dev)
    rows = torch.arange(S, device=dev)
    x = x_out.clone()
    f, g = fg(x, rows)
    f_out.copy_(f)
    hs = torch.zeros(history, S, n, dtype=dt, device=dev)
    hy = torch.zeros_like(hs)
    hrho = torch.zeros(history, S, dtype=dt, device=dev)
    alive = torch.isfinite(f) & (g.abs().amax(-1) > gtol)
    k = 0  # curvature pairs stored so far: the same for every row still in the batch
    for it in range(max_iter + 1):
        if not bool(alive.all()):  # write back the rows that stopped, keep the rest
            keep = torch.nonzero(alive).squeeze(-1)
            gone = rows[~alive]
            x_out[gone], f_out[gone], it_out[gone] = x[~alive], f[~alive], it
            rows, x, f, g = rows[keep], x[keep], f[keep], g[keep]
            hs, hy, hrho = hs[:, keep], hy[:, keep], hrho[:, keep]
        if rows.numel() == 0 or it == max_iter:
            break
        slots = [(k - 1 - j) % history for j in range(min(k, history))]  # newest first
        q = g.clone()
        alphas = []
        for sl in slots:
            a_ = hrho[sl] * (hs[sl] * q).sum(-1)
            q.sub_(a_[:, None] * hy[sl])
            alphas.append(a_)
        if slots:
            s, y = hs[slots[0]], hy[slots[0]]
            sy, yy = (s * y).sum(-1), (y * y).sum(-1)
            gamma = torch.where((hrho[slots[0]] > 0) & (yy > 0), sy / yy.clamp_min(1e-300), torch.ones_like(sy))
            q.mul_(gamma[:, None])
        for sl, a_ in zip(reversed(slots), reversed(alphas)):
            b_ = hrho[sl] * (hy[sl] * q).sum(-1)
            q.add_((a_ - b_)[:, None] * hs[sl])
        d = q.neg_()
        gtd = (g * d).sum(-1)
        bad = ~(gtd < 0) | ~torch.isfinite(gtd)
        if bool(bad.any()):
            d = torch.where(bad[:, None], -g, d)
            gtd = torch.where(bad, -(g * g).sum(-1), gtd)
        fresh = bad if k else torch.ones_like(bad)  # no curvature yet: a step of at most 1 in the max-norm
        t = torch.where(fresh, (1.0 / d.abs().amax(-1).clamp_min(1e-300)).clamp(max=1.0), torch.ones_like(gtd))
        xn, fn, gn = x.clone(), f.clone(), g.clone()
        ok_all = torch.zeros(len(rows), dtype=torch.bool, device=dev)
        pending = torch.arange(len(rows), device=dev)
        for _ in range(max_backtracks):
            if pending.numel() == len(rows):
                trial = x + t[:, None] * d
                ft, gt = fg(trial, rows)
                ok = torch.isfinite(ft) & (ft <= f + c1 * t * gtd)
            else:
                trial = x[pending] + t[pending, None] * d[pending]
                ft, gt = fg(trial, rows[pending])
                ok = torch.isfinite(ft) & (ft <= f[pending] + c1 * t[pending] * gtd[pending])
            got = pending[ok]
            xn[got], fn[got], gn[got] = trial[ok], ft[ok], gt[ok]
            ok_all[got] = True
            pending = pending[~ok]
            if pending.numel() == 0:
                break
            t[pending] = 0.5 * t[pending]
        s_new, y_new = xn - x, gn - g
        sy = (s_new * y_new).sum(-1)
        good = ok_all & (sy > 1e-300)
        slot = k % history
        hs[slot] = torch.where(good[:, None], s_new, torch.zeros_like(s_new))
        hy[slot] = torch.where(good[:, None], y_new, torch.zeros_like(y_new))
        hrho[slot] = torch.where(good, 1.0 / sy.clamp_min(1e-300), torch.zeros_like(sy))
        k += 1
        small = (f - fn).abs() <= ftol * torch.maximum(torch.maximum(f.abs(), fn.abs()), torch.ones_like(f))
        x, f, g = xn, fn, gn
        alive = ok_all & ~small & (gn.abs().amax(-1) > gtol)
    x_out[rows], f_out[rows], it_out[rows] = x, f, max_iter
    return x_out, f_out, it_out


@dataclass
class Approach3Fit:
    """The best law over the grid, its objective, and (after :func:`bootstrap`) the intervals."""

    law: Law
    theta: list[float]
    objective: float
    n_points: int
    n_starts: int
    seconds: float
    delta: float = HUBER_DELTA
    intervals: dict[str, dict[str, float]] = field(default_factory=dict)
    n_bootstrap: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "law": self.law.as_dict(),
            "a": self.law.a,
            "b": 1.0 - self.law.a,
            "objective": self.objective,
            "huber_delta": self.delta,
            "n_points": self.n_points,
            "n_starts": self.n_starts,
            "seconds": self.seconds,
            "intervals": self.intervals,
            "n_bootstrap": self.n_bootstrap,
        }


def _tensors(
    params: ArrayLike, tokens: ArrayLike, loss: ArrayLike, device: str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    t = [
        torch.log(torch.as_tensor(np.asarray(v, float), dtype=torch.float64, device=device))
        for v in (params, tokens, loss)
    ]
    return t[0], t[1], t[2]


def score(law: Law, params: ArrayLike, tokens: ArrayLike, loss: ArrayLike, delta: float = HUBER_DELTA) -> float:
    """The objective (sum of Huber losses) of a given law on these points: to compare fits."""
    ln, ld, ll = _tensors(params, tokens, loss)
    return float(objective(torch.tensor([theta_of(law)], dtype=torch.float64), ln, ld, ll, delta=delta)[0])


def row_batches(rows: int, points: int, cells: int | None = None) -> list[slice]:
    """``rows`` independent L-BFGS runs over ``points`` points split into batches of at most
    ``cells`` (default ``BATCH_CELLS``) rows x points each (at least one row), so that memory does
    not grow with the rows."""
    step = max(1, (cells or BATCH_CELLS) // max(1, points))
    return [slice(i, min(i + step, rows)) for i in range(0, rows, step)]


@contextmanager
def cpu_threads(n: int | None, device: str = "cpu") -> Iterator[None]:
    """Run the block with ``n`` torch CPU threads (None: leave torch's setting), then restore it."""
    if n is None or not str(device).startswith("cpu"):
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(max(1, n))
    try:
        yield
    finally:
        torch.set_num_threads(old)


def fit_approach3(
    params: ArrayLike,
    tokens: ArrayLike,
    loss: ArrayLike,
    starts: torch.Tensor | None = None,
    delta: float = HUBER_DELTA,
    max_iter: int = 1000,
    device: str = "cpu",
    threads: int | None = 1,
) -> Approach3Fit:
    """Fit L(N, D) from every start of ``starts`` (default: the 4,500-start grid) at once; keep the
    best. ``device`` "cuda" runs the batch on a GPU; ``threads`` is the CPU thread count for the fit
    (default 1, see the module docstring; None keeps torch's)."""
    t0 = time.perf_counter()
    with cpu_threads(threads, device):
        ln, ld, ll = _tensors(params, tokens, loss, device)
        x0 = (start_grid() if starts is None else starts).to(device=device, dtype=torch.float64)
        xs, fs = [], []
        for part in row_batches(len(x0), len(ll)):
            xb, fb, _ = batched_lbfgs(
                lambda th, rows: objective_and_grad(th, ln, ld, ll, delta=delta), x0[part], max_iter=max_iter
            )
            xs.append(xb)
            fs.append(fb)
        x, f = torch.cat(xs), torch.cat(fs)
        f = torch.where(torch.isfinite(f) & (x[:, 3] > 0) & (x[:, 4] > 0), f, torch.full_like(f, math.inf))
        best = int(torch.argmin(f))
        theta, obj = [float(v) for v in x[best].cpu()], float(f[best])
    return Approach3Fit(
        law=law_of(theta),
        theta=theta,
        objective=obj,
        n_points=len(ll),
        n_starts=int(x0.shape[0]),
        seconds=time.perf_counter() - t0,
        delta=delta,
    )


def bootstrap(
    fit: Approach3Fit,
    params: ArrayLike,
    tokens: ArrayLike,
    loss: ArrayLike,
    n: int = 400,
    seed: int = 0,
    level: float = 0.95,
    flops_for_ratio: ArrayLike = (),
    max_iter: int = 1000,
    device: str = "cpu",
    threads: int | None = 1,
) -> dict[str, dict[str, float]]:
    """Refit ``n`` resamples of the points (drawn with replacement, as weights) from the best fit's
    parameters, in batches of ``row_batches``; store the percentile intervals (and standard errors) of E, A, B, α,
    β, a = β/(α+β) and, for each budget in ``flops_for_ratio``, the compute-optimal tokens per
    parameter, in ``fit.intervals``. Returns them."""
    ln, ld, ll = _tensors(params, tokens, loss, device)
    P = len(ll)
    rng = np.random.default_rng(seed)
    xs, fs = [], []
    for part in row_batches(n, P):  # the resamples drawn batch by batch, in the order one batch would draw them
        k = part.stop - part.start
        counts = np.stack([np.bincount(rng.integers(0, P, P), minlength=P) for _ in range(k)])
        w = torch.as_tensor(counts, dtype=torch.float64, device=device)
        x0 = torch.tensor([fit.theta] * k, dtype=torch.float64, device=device)

        def fg(th: torch.Tensor, rows: torch.Tensor, w: torch.Tensor = w) -> tuple[torch.Tensor, torch.Tensor]:
            return objective_and_grad(th, ln, ld, ll, weights=w[rows], delta=fit.delta)

        with cpu_threads(threads, device):
            xb, fb, _ = batched_lbfgs(fg, x0, max_iter=max_iter)
        xs.append(xb)
        fs.append(fb)
    x, f = torch.cat(xs), torch.cat(fs)
    keep = torch.isfinite(f) & (x[:, 3] > 0) & (x[:, 4] > 0)
    th = x[keep].cpu().numpy()
    samples: dict[str, np.ndarray] = {
        "E": np.exp(th[:, 2]),
        "A": np.exp(th[:, 0]),
        "B": np.exp(th[:, 1]),
        "alpha": th[:, 3],
        "beta": th[:, 4],
    }
    samples["a"] = samples["beta"] / (samples["alpha"] + samples["beta"])
    for c in flops_for_ratio:
        g = (samples["alpha"] * samples["A"] / (samples["beta"] * samples["B"])) ** (
            1 / (samples["alpha"] + samples["beta"])
        )
        nopt = g * (c / 6.0) ** samples["a"]
        samples[f"tokens_per_param@{c:.3g}"] = (c / 6.0) / nopt**2
    lo, hi = 100 * (1 - level) / 2, 100 * (1 + level) / 2
    point = {**fit.law.as_dict(), "a": fit.law.a}
    for c in flops_for_ratio:
        point[f"tokens_per_param@{c:.3g}"] = float(fit.law.tokens_per_param(c))
    out = {
        k: {
            "value": float(point[k]),
            "low": float(np.percentile(v, lo)),
            "high": float(np.percentile(v, hi)),
            "se": float(np.std(v, ddof=1)) if len(v) > 1 else 0.0,
        }
        for k, v in samples.items()
    }
    fit.intervals, fit.n_bootstrap = out, int(keep.sum())
    return out


__all__ = [
    "BATCH_CELLS",
    "GRID_AB",
    "GRID_ALPHA",
    "GRID_E",
    "HUBER_DELTA",
    "NAMES",
    "Approach3Fit",
    "Law",
    "batched_lbfgs",
    "bootstrap",
    "cpu_threads",
    "fit_approach3",
    "huber",
    "law_of",
    "objective",
    "objective_and_grad",
    "row_batches",
    "score",
    "start_grid",
    "theta_of",
]
