"""``lmkit scale``: scaling laws measured on your own data. ``scale fit`` fits IsoFLOP points
(Approaches 1-3 of Hoffmann et al. 2022, Approach 3 as Besiroglu et al. 2024 showed it should be
fitted, and Kaplan's L(C)); flags, runner and printing. The maths is in ``lmkit.lab.scale_fit``
and ``lmkit.lab.scale_approach3``, the pictures in ``lmkit.lab.scale_plots``.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

FIT_HELP = """\
Fit scaling laws to IsoFLOP points: training runs of several model sizes at each of several
compute budgets, each trained for C/(6N) tokens, with their final held-out loss.

POINTS.csv has columns params, tokens, flops, loss (optionally budget, run; '#' lines are
comments). Runs are grouped into budgets by the budget column, or else by their compute.

Approaches (--approach, default all):
  1  the envelope: at each budget the lowest-loss run; N_opt ∝ C^a and D_opt ∝ C^b through them.
  2  IsoFLOP profiles: a parabola of loss in log N per budget and its minimum, N_opt ∝ C^a and
     D_opt ∝ C^b by least squares in log space. The loss is not a parabola in log N (the
     vertex lands +1.3% off the optimum on a ±4x grid, +5.4% at ±16x), so the minimum is
     corrected by fitting the true profile c + u/N^α + v·N^β (α, β shared by all budgets); a
     budget whose minimum is at the edge of its grid is flagged.
  3  the parametric law L(N, D) = E + A/N^α + B/D^β, minimising the SUM of Huber losses
     (δ = 1e-3) of log-space residuals with L-BFGS from Hoffmann et al.'s 4,500 starts (all
     at once, in one batch), with bootstrap intervals for E, A, B, α, β and a = β/(α+β).
     Hoffmann et al. minimised a mean and stopped early; their published fit (E 1.69, α 0.34,
     β 0.28) scores worse than the refit (E 1.82, α 0.348, β 0.367) on their own points.
Always reported: Kaplan et al.'s L(C) = (C_c/C)^γ on the compute-efficient frontier, and the
compute-optimal tokens per parameter for this data next to Chinchilla's ≈20.

Writes fit.json and three plots (isoflops.png, optimal.png, loss_vs_compute.png) into --out;
`lmkit plan --scaling-law OUT/fit.json` then plans with this law instead of Chinchilla's.

examples:
  lmkit scale fit runs/sweep/points.csv
  lmkit scale fit chinchilla_isoflop_points.csv --drop-highest 5 --out chinchilla-fit --json
  lmkit scale fit points.csv --approach 2 --out fit2"""


def add_scale(sub: Any) -> None:
    p = sub.add_parser("scale", help="scaling laws on your own data: fit IsoFLOP points (Approaches 1-3, Kaplan)",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Measure how loss scales with model size and tokens on your data.\n\n"
                                   "  lmkit scale fit POINTS.csv    fit the laws, plot them, write fit.json\n\n"
                                   "see `lmkit scale fit --help`.")
    ss = p.add_subparsers(dest="scale_command", required=True, metavar="SUBCOMMAND")
    w = ss.add_parser("sweep", help="train IsoFLOP sweeps: several sizes at each compute budget",
                      formatter_class=argparse.RawDescriptionHelpFormatter,
                      description="For each FLOPs budget C, train --per-budget models spanning --spread x around the "
                                  "rule-of-thumb optimum N = sqrt(C/120) (shapes grown from the base config by width "
                                  "and depth, head size kept, or halved or quartered (not under 16) for models narrower than the base), each for "
                                  "C/(6N) tokens with its LR schedule ending "
                                  "there, and record the final held-out loss in OUT/points.csv (N: total parameters). "
                                  "The data is packed once (OUT/shards; a packed shard folder given as --data is used as it is). Each run is a "
                                  "sub-run in OUT/runs/: started "
                                  "again, the sweep skips finished runs and resumes the interrupted one.\n\n"
                                  "examples:\n"
                                  "  lmkit scale sweep --config tiny --data corpus/ --budgets 1e10 3e10 --per-budget 3 "
                                  "--out runs/sweep\n"
                                  "  lmkit scale fit runs/sweep/points.csv")
    w.add_argument("--config", required=True, help="base run config (YAML or a recipe name: tiny, cpu-small)")
    w.add_argument("--data", nargs="+", required=True, help="training text (files, folders) or a packed shard folder")
    w.add_argument("--tokenizer", default=None, help="tokenizer.json or folder; default: train one on --data")
    w.add_argument("--budgets", nargs="+", required=True, help="compute budgets in FLOPs, e.g. 3e12 1e13 3e13")
    w.add_argument("--per-budget", type=int, default=5, help="model sizes per budget (default 5)")
    w.add_argument("--spread", type=float, default=4.0, help="sizes span N_opt/spread .. N_opt*spread (default 4)")
    w.add_argument("--out", required=True, help="sweep folder (continued when it holds the same sweep)")
    w.add_argument("--quiet", action="store_true", help="no progress output")
    w.set_defaults(func=_run_sweep)
    f = ss.add_parser("fit", help="fit scaling laws to IsoFLOP points", description=FIT_HELP,
                      formatter_class=argparse.RawDescriptionHelpFormatter)
    f.add_argument("points", help="points CSV (params, tokens, flops, loss)")
    f.add_argument("--approach", type=int, nargs="+", choices=[1, 2, 3], default=[1, 2, 3],
                   help="which approaches to fit (default 1 2 3)")
    f.add_argument("--drop-highest", type=int, default=0, metavar="K",
                   help="leave out the K highest-loss runs (Besiroglu et al. drop 5 of Chinchilla's 245)")
    f.add_argument("--bootstrap", type=int, default=200, metavar="N",
                   help="bootstrap resamples for Approach 3's intervals (default 200; 0: none)")
    f.add_argument("--grid", choices=["full", "small"], default="full",
                   help="Approach 3's starts: Hoffmann et al.'s 4,500 (full, default; seconds: about 5 s of one CPU "
                        "core for 240 points) or 36 of them (small: a quick look)")
    f.add_argument("--seed", type=int, default=0, help="seed of the bootstrap (default 0)")
    f.add_argument("--out", default=None, help="folder for fit.json and the plots (default: POINTS's folder/fit)")
    f.add_argument("--overwrite", action="store_true", help="replace a previous fit in --out")
    f.add_argument("--no-plots", action="store_true", help="write fit.json only")
    f.add_argument("--device", default="auto", help="where Approach 3's batch runs: cpu, cuda (default auto)")
    f.add_argument("--threads", type=int, default=1,
                   help="CPU threads for Approach 3 (default 1: its tensors are small, and on busy cores a second "
                        "thread slows it many times over)")
    f.add_argument("--json", action="store_true", help="print the fit as one JSON object")
    f.set_defaults(func=_run_fit)


def _run_sweep(args: argparse.Namespace) -> int:
    """``lmkit scale sweep``: plan (or continue) the sweep, train its runs, write points.csv."""
    from lmkit.config import load_run_config
    from lmkit.errors import LmkitError
    from lmkit.lab.scale_sweep import sweep
    from lmkit.plan.units import parse_count

    if args.per_budget < 1 or args.spread < 1:
        raise LmkitError("--per-budget must be at least 1 and --spread at least 1")
    overrides: dict[str, Any] = {"data.paths": list(args.data)}
    if args.tokenizer:
        overrides["data.tokenizer"] = args.tokenizer
    base = load_run_config(args.config, overrides)
    budgets = [parse_count(b, "--budgets") for b in args.budgets]
    res = sweep(base, budgets, args.per_budget, Path(args.out), args.spread, show_progress=not args.quiet)
    print(f"{res['runs']} runs, {res['flops']:.3g} FLOPs; points: {res['points']}\n"
          f"next: lmkit scale fit {res['points']}")
    return 0


def _is_fit_folder(path: Path) -> bool:
    return all(p.name in ("fit.json", "isoflops.png", "optimal.png", "loss_vs_compute.png") for p in path.iterdir())


def _run_fit(args: argparse.Namespace) -> int:
    """``lmkit scale fit POINTS.csv``: read, fit, plot, write fit.json, print."""
    import torch

    from lmkit.errors import LmkitError
    from lmkit.files import check_out_dir, write_json_atomic
    from lmkit.lab.scale_fit import drop_highest, fit_points, json_ready, read_points

    points_path = Path(args.points)
    out = Path(args.out) if args.out else points_path.parent / "fit"
    check_out_dir(out, args.overwrite, inputs=[points_path], ours=_is_fit_folder, kind="scaling-law fit")
    if args.drop_highest < 0 or args.bootstrap < 0:
        raise LmkitError("--drop-highest and --bootstrap must be 0 or more")
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    points = drop_highest(read_points(points_path), args.drop_highest)
    fit = fit_points(points, args.approach, n_bootstrap=args.bootstrap, seed=args.seed, device=device,
                     grid=args.grid, threads=max(1, args.threads))
    fit["points"] = str(points_path)
    fit["dropped_highest"] = args.drop_highest
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "fit.json", json_ready(fit))
    plots: list[str] = []
    if not args.no_plots:
        from lmkit.lab.scale_plots import plot_fit

        plots = [str(p) for p in plot_fit(points, fit, out)]
    fit["files"] = {"fit": str(out / "fit.json"), "plots": plots}
    if args.json:
        print(json.dumps(json_ready(fit), indent=2, default=str))
    else:
        _print_fit(fit)
    return 0


def _se(x: float, digits: int = 3) -> str:
    """"±SE", or why there is none: a line through two budgets has no error estimate."""
    return f"±{x:.{digits}f}" if math.isfinite(x) else "two budgets: no interval"


def _exp_line(name: str, sec: dict[str, Any]) -> str:
    n, d = sec["n_opt"], sec["d_opt"]
    return (f"  {name:<11} N_opt ∝ C^{n['exponent']:.3f} ({_se(n['exponent_se'])})   "
            f"D_opt ∝ C^{d['exponent']:.3f} ({_se(d['exponent_se'])})")


def _print_fit(fit: dict[str, Any]) -> None:
    print(f"{fit['n_points']} runs at {len(fit['budgets'])} budgets ({min(fit['budgets']):.3g} to "
          f"{max(fit['budgets']):.3g} FLOPs){', the ' + str(fit['dropped_highest']) + ' highest-loss left out' if fit['dropped_highest'] else ''}")
    print("\ncompute-optimal exponents (Chinchilla: approach 1 0.50/0.50, 2 0.49/0.51, 3 0.46/0.54; Kaplan 0.73/0.27)")
    if "n_opt" in fit.get("approach1", {}):
        print(_exp_line("approach 1", fit["approach1"]))
    a2 = fit.get("approach2")
    if a2:
        if "n_opt" in a2:
            print(_exp_line("approach 2", a2))
        for r in a2["budgets"]:
            if not math.isfinite(r["n_opt"]):
                print(f"      C {r['budget']:9.3g}: {r['method']}: over its {r['n_points']} runs the loss is not "
                      "convex in log N")
                continue
            par = (f"parabola {r['n_opt_parabola']:10.4g}, {100 * r['parabola_bias']:+.1f}%"
                   if math.isfinite(r["parabola_bias"]) else "the parabola has no minimum")
            print(f"      C {r['budget']:9.3g}: N_opt {r['n_opt']:10.4g} ({par})  {r['tokens_per_param']:6.1f} tokens/param"
                  + ("   EDGE of grid" if r["edge"] else ""))
        if a2.get("note"):
            print(f"      note: {a2['note']}")
    a3 = fit.get("approach3")
    if a3:
        law, iv = a3["law"], a3["intervals"]
        print(f"  approach 3  N_opt ∝ C^{a3['a']:.3f}   D_opt ∝ C^{a3['b']:.3f}")
        print(f"\nL(N, D) = E + A/N^α + B/D^β  (sum of Huber losses, δ {a3['huber_delta']:g}, {a3['n_starts']:,} starts, "
              f"objective {a3['objective']:.5g}, {a3['seconds']:.1f} s)")
        for k in ("E", "A", "B", "alpha", "beta", "a"):
            v = law.get(k, a3["a"] if k == "a" else math.nan)
            ci = iv.get(k)
            band = f"   95% [{ci['low']:.4g}, {ci['high']:.4g}]  SE {ci['se']:.3g}" if ci else ""
            print(f"  {k:<6} {v:10.4g}{band}")
        if iv:
            print(f"  ({a3['n_bootstrap']} bootstrap resamples)")
        if a3.get("note"):
            print(f"  note: {a3['note']}")
        print("\ncompute-optimal tokens per parameter (Chinchilla's rule: ≈20):")
        for c, tpp in a3["tokens_per_param"].items():
            key = f"tokens_per_param@{float(c):.3g}"
            ci = iv.get(key)
            print(f"  C {c:>9}: {tpp:8.1f}" + (f"   95% [{ci['low']:.1f}, {ci['high']:.1f}]" if ci else ""))
    k = fit.get("kaplan", {})
    if "gamma" in k:
        c_c = f"C_c {k['C_c']:.3g}" if math.isfinite(k["C_c"]) else "no C_c: the loss does not fall with compute"
        print(f"\nKaplan L(C) = (C_c/C)^γ on the frontier: γ {k['gamma']:.4f} ({_se(k['gamma_se'], 4)}), {c_c}")
    print(f"\nfit:   {fit['files']['fit']}")
    for p in fit["files"]["plots"]:
        print(f"plot:  {p}")


__all__ = ["add_scale"]
