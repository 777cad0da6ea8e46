"""Chinchilla's Approach 3, fitted as its replication showed it should be: the parametric law
L(N, D) = E + A/N^α + B/D^β by minimising the **sum** of Huber losses of log-space residuals
over a grid of initialisations with L-BFGS, and bootstrap intervals for every parameter.

The law is fitted in the form of Hoffmann et al. (2022): with A = e^a, B = e^b, E = e^e,
    log L̂(N, D) = LSE(a − α log N, b − β log D, e),
and the objective is Σ_i Huber_δ(log L̂(N_i, D_i) − log L_i) with δ = 1e-3. Besiroglu et al.
(2024) found that the original fit minimised a *mean* at a loss scale where L-BFGS stops early;
summing (and tight tolerances in float64) lets the optimiser finish.

The whole grid of starts is one batch: :func:`batched_lbfgs` runs an independent L-BFGS (own
history, own backtracking line search) for every row of a (starts, 5) tensor at once, so the
4,500-start grid on 245 points takes seconds. A bootstrap replicate is the same problem with the
points weighted by how often the resample drew them, so all replicates are also one batch.

Pure maths on tensors and numbers: torch and numpy only, nothing else from lmkit.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

HUBER_DELTA = 1e-3
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
        return self.E + self.A / np.asarray(params, float) ** self.alpha + self.B / np.asarray(tokens, float) ** self.beta

    @property
    def a(self) -> float:
        """N_opt ∝ C^a with a = β/(α+β); D_opt ∝ C^b with b = α/(α+β)."""
        return self.beta / (self.alpha + self.beta)

    def optimal(self, flops: float | np.ndarray) -> tuple[Any, Any]:
        """(N_opt, D_opt) = (G·(C/6)^a, (C/6)/N_opt) with G = (αA/(βB))^(1/(α+β))."""
        g = (self.alpha * self.A / (self.beta * self.B)) ** (1.0 / (self.alpha + self.beta))
        c6 = np.asarray(flops, float) / 6.0
        n = g * c6 ** self.a
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
    g = torch.cartesian_prod(torch.tensor(GRID_AB), torch.tensor(GRID_AB), torch.tensor(GRID_E),
                             torch.tensor(GRID_ALPHA), torch.tensor(GRID_ALPHA))
    return g.to(torch.float64)


def huber(r: torch.Tensor, delta: float = HUBER_DELTA) -> torch.Tensor:
    """r²/2 for |r| ≤ δ, δ(|r| − δ/2) beyond (scipy.special.huber's convention)."""
    ar = r.abs()
    return torch.where(ar <= delta, 0.5 * r * r, delta * (ar - 0.5 * delta))


def objective(theta: torch.Tensor, log_n: torch.Tensor, log_d: torch.Tensor, log_l: torch.Tensor,
              weights: torch.Tensor | None = None, delta: float = HUBER_DELTA) -> torch.Tensor:
    """Σ_i w_i Huber_δ(LSE(a − α log N_i, b − β log D_i, e) − log L_i) for each row of ``theta``
    (S, 5) -> (S,). ``weights`` (S, P) or (P,) (default 1: the plain sum)."""
    return objective_and_grad(theta, log_n, log_d, log_l, weights, delta)[0]


def objective_and_grad(theta: torch.Tensor, log_n: torch.Tensor, log_d: torch.Tensor, log_l: torch.Tensor,
                       weights: torch.Tensor | None = None, delta: float = HUBER_DELTA
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """The objective (S,) and its gradient (S, 5) in closed form: with p the softmax of the three
    LSE terms and h' = clip(r, −δ, δ), ∂/∂(a, b, e) = Σ w h' p_k, ∂/∂α = −Σ w h' p_1 log N,
    ∂/∂β = −Σ w h' p_2 log D."""
    a, b, e, al, be = (theta[:, k : k + 1] for k in range(5))
    t1 = a - al * log_n
    t2 = b - be * log_d
    m = torch.maximum(torch.maximum(t1, t2), e)
    x1, x2, x3 = torch.exp(t1 - m), torch.exp(t2 - m), torch.exp(e - m)
    z = x1 + x2 + x3
    r = m + torch.log(z) - log_l  # (S, P)
    ar = r.abs()
    h = torch.where(ar <= delta, 0.5 * r * r, delta * (ar - 0.5 * delta))
    dh = r.clamp(-delta, delta)
    if weights is not None:
        h = h * weights
        dh = dh * weights
    dh = dh / z
    g1, g2, g3 = dh * x1, dh * x2, dh * x3
    grad = torch.stack([g1.sum(-1), g2.sum(-1), g3.sum(-1), -(g1 * log_n).sum(-1), -(g2 * log_d).sum(-1)], -1)
    return h.sum(-1), grad


FunGrad = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def batched_lbfgs(fg: FunGrad, x0: torch.Tensor, max_iter: int = 500, history: int = 10, ftol: float = 1e-12,
                  gtol: float = 1e-12, c1: float = 1e-4, max_backtracks: int = 40
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Minimise each row of ``x0`` (S, n) independently with L-BFGS. ``fg(x, rows)`` returns the
    objective (k,) and gradient (k, n) of the rows ``rows`` (indices into x0) at ``x`` (k, n).

    Every row has its own curvature pairs and its own backtracking (Armijo) line search, and only
    the rows still running are evaluated; a row stops when its objective changes by under ``ftol``
    (relative), its largest gradient component is under ``gtol``, or no step lowers it. Returns
    (x, f, iterations per row).
    """
    x = x0.detach().clone()
    S, n = x.shape
    f, g = fg(x, torch.arange(S, device=x.device))
    hs = torch.zeros(history, S, n, dtype=x.dtype, device=x.device)
    hy = torch.zeros(history, S, n, dtype=x.dtype, device=x.device)
    hrho = torch.zeros(history, S, dtype=x.dtype, device=x.device)
    count = torch.zeros(S, dtype=torch.long, device=x.device)  # pairs stored per row (ring buffer of ``history``)
    done = ~torch.isfinite(f) | (g.abs().amax(-1) <= gtol)
    iters = torch.zeros(S, dtype=torch.long, device=x.device)
    for _ in range(max_iter):
        act = torch.nonzero(~done).squeeze(-1)
        if act.numel() == 0:
            break
        xa, fa, ga = x[act], f[act], g[act]
        k = int(count[act].max())
        q = ga.clone()
        alphas = []
        slots = [(int(count[act].max()) - 1 - j) % history for j in range(min(k, history))]  # newest first
        for sl in slots:
            s, y, rho = hs[sl, act], hy[sl, act], hrho[sl, act]
            a_ = rho * (s * q).sum(-1)
            q = q - a_[:, None] * y
            alphas.append(a_)
        if slots:
            s, y = hs[slots[0], act], hy[slots[0], act]
            sy, yy = (s * y).sum(-1), (y * y).sum(-1)
            gamma = torch.where((hrho[slots[0], act] > 0) & (yy > 0), sy / yy.clamp_min(1e-300), torch.ones_like(sy))
            q = q * gamma[:, None]
        for sl, a_ in zip(reversed(slots), reversed(alphas)):
            s, y, rho = hs[sl, act], hy[sl, act], hrho[sl, act]
            b_ = rho * (y * q).sum(-1)
            q = q + (a_ - b_)[:, None] * s
        d = -q
        gtd = (ga * d).sum(-1)
        bad = ~(gtd < 0) | ~torch.isfinite(gtd)
        d = torch.where(bad[:, None], -ga, d)
        gtd = torch.where(bad, -(ga * ga).sum(-1), gtd)
        fresh = (count[act] == 0) | bad  # no curvature yet: a step of at most 1 in the max-norm
        t = torch.where(fresh, (1.0 / d.abs().amax(-1).clamp_min(1e-300)).clamp(max=1.0), torch.ones_like(gtd))
        pending = torch.arange(len(act), device=x.device)
        xn, fn, gn = xa.clone(), fa.clone(), ga.clone()
        ok_all = torch.zeros(len(act), dtype=torch.bool, device=x.device)
        for _ in range(max_backtracks):
            trial = xa[pending] + t[pending, None] * d[pending]
            ft, gt = fg(trial, act[pending])
            ok = torch.isfinite(ft) & (ft <= fa[pending] + c1 * t[pending] * gtd[pending])
            got = pending[ok]
            xn[got], fn[got], gn[got] = trial[ok], ft[ok], gt[ok]
            ok_all[got] = True
            pending = pending[~ok]
            if pending.numel() == 0:
                break
            t[pending] = 0.5 * t[pending]
        s_new, y_new = xn - xa, gn - ga
        sy = (s_new * y_new).sum(-1)
        good = ok_all & (sy > 1e-300)
        slot = count[act] % history
        hs[slot, act] = torch.where(good[:, None], s_new, torch.zeros_like(s_new))
        hy[slot, act] = torch.where(good[:, None], y_new, torch.zeros_like(y_new))
        hrho[slot, act] = torch.where(good, 1.0 / sy.clamp_min(1e-300), torch.zeros_like(sy))
        count[act] += 1
        small = (fa - fn).abs() <= ftol * torch.maximum(torch.maximum(fa.abs(), fn.abs()), torch.ones_like(fa))
        iters[act] += 1
        x[act], f[act], g[act] = xn, fn, gn
        done[act] = ~ok_all | small | (gn.abs().amax(-1) <= gtol)
    return x, f, iters


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
        return {"law": self.law.as_dict(), "a": self.law.a, "b": 1.0 - self.law.a, "objective": self.objective,
                "huber_delta": self.delta, "n_points": self.n_points, "n_starts": self.n_starts,
                "seconds": self.seconds, "intervals": self.intervals, "n_bootstrap": self.n_bootstrap}


def _tensors(params: ArrayLike, tokens: ArrayLike, loss: ArrayLike, device: str = "cpu"
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    t = [torch.log(torch.as_tensor(np.asarray(v, float), dtype=torch.float64, device=device))
         for v in (params, tokens, loss)]
    return t[0], t[1], t[2]


def score(law: Law, params: ArrayLike, tokens: ArrayLike, loss: ArrayLike,
          delta: float = HUBER_DELTA) -> float:
    """The objective (sum of Huber losses) of a given law on these points: to compare fits."""
    ln, ld, ll = _tensors(params, tokens, loss)
    return float(objective(torch.tensor([theta_of(law)], dtype=torch.float64), ln, ld, ll, delta=delta)[0])


def fit_approach3(params: ArrayLike, tokens: ArrayLike, loss: ArrayLike,
                  starts: torch.Tensor | None = None, delta: float = HUBER_DELTA, max_iter: int = 1000,
                  device: str = "cpu") -> Approach3Fit:
    """Fit L(N, D) from every start of ``starts`` (default: the 4,500-start grid) at once; keep the
    best. ``device`` "cuda" runs the batch on a GPU."""
    t0 = time.perf_counter()
    ln, ld, ll = _tensors(params, tokens, loss, device)
    x0 = (start_grid() if starts is None else starts).to(device=device, dtype=torch.float64)
    x, f, _ = batched_lbfgs(lambda th, rows: objective_and_grad(th, ln, ld, ll, delta=delta), x0, max_iter=max_iter)
    f = torch.where(torch.isfinite(f) & (x[:, 3] > 0) & (x[:, 4] > 0), f, torch.full_like(f, math.inf))
    best = int(torch.argmin(f))
    theta = [float(v) for v in x[best].cpu()]
    return Approach3Fit(law=law_of(theta), theta=theta, objective=float(f[best]), n_points=len(ll),
                        n_starts=int(x0.shape[0]), seconds=time.perf_counter() - t0, delta=delta)


def bootstrap(fit: Approach3Fit, params: ArrayLike, tokens: ArrayLike, loss: ArrayLike,
              n: int = 400, seed: int = 0, level: float = 0.95, flops_for_ratio: ArrayLike = (),
              max_iter: int = 1000, device: str = "cpu") -> dict[str, dict[str, float]]:
    """Refit ``n`` resamples of the points (drawn with replacement, as weights) from the best fit's
    parameters, all in one batch; store the percentile intervals (and standard errors) of E, A, B, α,
    β, a = β/(α+β) and, for each budget in ``flops_for_ratio``, the compute-optimal tokens per
    parameter, in ``fit.intervals``. Returns them."""
    ln, ld, ll = _tensors(params, tokens, loss, device)
    P = len(ll)
    rng = np.random.default_rng(seed)
    counts = np.stack([np.bincount(rng.integers(0, P, P), minlength=P) for _ in range(n)])
    w = torch.as_tensor(counts, dtype=torch.float64, device=device)
    x0 = torch.tensor([fit.theta] * n, dtype=torch.float64, device=device)
    x, f, _ = batched_lbfgs(lambda th, rows: objective_and_grad(th, ln, ld, ll, weights=w[rows], delta=fit.delta),
                            x0, max_iter=max_iter)
    keep = torch.isfinite(f) & (x[:, 3] > 0) & (x[:, 4] > 0)
    th = x[keep].cpu().numpy()
    samples: dict[str, np.ndarray] = {
        "E": np.exp(th[:, 2]), "A": np.exp(th[:, 0]), "B": np.exp(th[:, 1]), "alpha": th[:, 3], "beta": th[:, 4]}
    samples["a"] = samples["beta"] / (samples["alpha"] + samples["beta"])
    for c in flops_for_ratio:
        g = (samples["alpha"] * samples["A"] / (samples["beta"] * samples["B"])) ** (1 / (samples["alpha"] + samples["beta"]))
        nopt = g * (c / 6.0) ** samples["a"]
        samples[f"tokens_per_param@{c:.3g}"] = (c / 6.0) / nopt ** 2
    lo, hi = 100 * (1 - level) / 2, 100 * (1 + level) / 2
    point = {**fit.law.as_dict(), "a": fit.law.a}
    for c in flops_for_ratio:
        point[f"tokens_per_param@{c:.3g}"] = float(fit.law.tokens_per_param(c))
    out = {k: {"value": float(point[k]), "low": float(np.percentile(v, lo)), "high": float(np.percentile(v, hi)),
               "se": float(np.std(v, ddof=1)) if len(v) > 1 else 0.0} for k, v in samples.items()}
    fit.intervals, fit.n_bootstrap = out, int(keep.sum())
    return out


__all__ = ["GRID_AB", "GRID_ALPHA", "GRID_E", "HUBER_DELTA", "NAMES", "Approach3Fit", "Law", "batched_lbfgs",
           "bootstrap", "fit_approach3", "huber", "law_of", "objective", "objective_and_grad", "score", "start_grid", "theta_of"]
