"""``lmkit scale``: scaling laws measured on your own data. ``scale sweep`` trains IsoFLOP runs;
``scale fit`` fits their points (Approaches 1-3 of Hoffmann et al. 2022, Approach 3 as Besiroglu
et al. 2024 showed it should be fitted, and Kaplan's L(C)). Flags, runners and printing only: the
sweep is ``lmkit.lab.scale.sweep``, the fit's folder ``lmkit.lab.scale.fit_folder``, the maths
``lmkit.lab.scale.fit`` and ``lmkit.lab.scale.approach3``, the pictures ``lmkit.lab.scale.plots``.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

from lmkit.cli.common import (
    add_device,
    add_json,
    add_out,
    add_overwrite,
    add_quiet,
    add_run_config,
    add_seed,
    add_threads,
    add_training_text,
    add_yes,
    device_from,
    print_json,
)

FIT_HELP = """\
Fit scaling laws to IsoFLOP points: training runs of several model sizes at each of several
compute budgets, each trained for C/(6N) tokens, with their final held-out loss.

POINTS.csv has columns params, tokens, flops, loss (optionally budget, run; '#' lines are
comments). Runs are grouped into budgets by the budget column, or else by their compute. Every
value is a number in range: params 1 to 1e15, tokens 1 to 1e17, flops 1 to 1e33, loss 1e-6 to
1000 (nats per token). An approach these runs cannot identify (Approach 2 needs 3 sizes at a
budget, Approach 3 five runs of several sizes) is skipped with its reason; when none can be
fitted, the command says why in one line.

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
    p = sub.add_parser(
        "scale",
        help="scaling laws on your own data: fit IsoFLOP points (Approaches 1-3, Kaplan)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Measure how loss scales with model size and tokens on your data.\n\n"
        "  lmkit scale fit POINTS.csv    fit the laws, plot them, write fit.json\n\n"
        "see `lmkit scale fit --help`.",
    )
    ss = p.add_subparsers(dest="scale_command", required=True, metavar="SUBCOMMAND")
    w = ss.add_parser(
        "sweep",
        help="train IsoFLOP sweeps: several sizes at each compute budget",
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
        "  lmkit scale fit runs/sweep/points.csv",
    )
    add_run_config(w, "base run config", required=True)
    add_training_text(w, required=True)
    w.add_argument("--budgets", nargs="+", required=True, help="compute budgets in FLOPs, e.g. 3e12 1e13 3e13")
    w.add_argument("--per-budget", type=int, default=5, help="model sizes per budget, 1 to 64 (default 5)")
    w.add_argument(
        "--spread", type=float, default=4.0, help="sizes span N_opt/spread .. N_opt*spread, spread 1 to 100 (default 4)"
    )
    add_out(w, "sweep folder (continued when it holds the same sweep)", required=True)
    add_yes(w, "the sweep", "predicted from all its runs' FLOPs at this machine's measured peak")
    add_quiet(w)
    w.set_defaults(func=_run_sweep)
    f = ss.add_parser(
        "fit",
        help="fit scaling laws to IsoFLOP points",
        description=FIT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    f.add_argument(
        "points", help="points CSV (params, tokens, flops, loss): a regular file of at most 4 MiB, 10,000 runs"
    )
    f.add_argument(
        "--approach",
        type=int,
        nargs="+",
        choices=[1, 2, 3],
        default=[1, 2, 3],
        help="which approaches to fit (default 1 2 3)",
    )
    f.add_argument(
        "--drop-highest",
        type=int,
        default=0,
        metavar="K",
        help="leave out the K highest-loss runs (Besiroglu et al. drop 5 of Chinchilla's 245)",
    )
    f.add_argument(
        "--bootstrap",
        type=int,
        default=200,
        metavar="N",
        help="bootstrap resamples for Approach 3's intervals, 0 to 10,000 (default 200; 0: none)",
    )
    f.add_argument(
        "--grid",
        choices=["full", "small"],
        default="full",
        help="Approach 3's starts: Hoffmann et al.'s 4,500 (full, default; seconds of one CPU core for a "
        "few hundred points) or 36 of them (small: a quick look)",
    )
    add_seed(f, 0, "the bootstrap")
    add_out(f, "folder for fit.json and the plots (default: POINTS's folder/fit)")
    add_overwrite(f, "a previous fit in --out")
    f.add_argument("--no-plots", action="store_true", help="write fit.json only")
    add_device(
        f, "where Approach 3's batch runs (in float64, which MPS lacks)", "auto (cuda, else cpu), cpu, cuda or cuda:N"
    )
    add_threads(f, 1, "for Approach 3 (its tensors are small: on busy cores a second thread slows it many times over)")
    add_json(f, "the fit as one JSON object")
    f.set_defaults(func=_run_fit)


def _run_sweep(args: argparse.Namespace) -> int:
    """``lmkit scale sweep``: plan (or continue) the sweep, train its runs, write points.csv."""
    from lmkit.config import load_run_config
    from lmkit.lab.scale.sweep import sweep
    from lmkit.plan.units import parse_count

    budgets = [parse_count(b, "--budgets") for b in args.budgets]
    overrides: dict[str, Any] = {"data.paths": list(args.data)}
    if args.tokenizer:
        overrides["data.tokenizer"] = args.tokenizer
    base = load_run_config(args.config, overrides)
    res = sweep(base, budgets, args.per_budget, Path(args.out), args.spread, show_progress=not args.quiet, yes=args.yes)
    print(
        f"{res['runs']} runs, {res['flops']:.3g} FLOPs; points: {res['points']}\nnext: lmkit scale fit {res['points']}"
    )
    return 0


def _run_fit(args: argparse.Namespace) -> int:
    """``lmkit scale fit POINTS.csv``: fit into the folder, print the laws."""
    from lmkit.lab.scale.fit import json_ready
    from lmkit.lab.scale.fit_folder import fit_into_folder

    device = str(device_from(args, kinds=("cuda", "cpu")))
    fit = fit_into_folder(
        args.points,
        args.out,
        overwrite=args.overwrite,
        approaches=args.approach,
        drop_highest=args.drop_highest,
        n_bootstrap=args.bootstrap,
        seed=args.seed,
        device=device,
        grid=args.grid,
        threads=args.threads,
        plots=not args.no_plots,
    )
    if args.json:
        print_json(json_ready(fit))
    else:
        _print_scaling_fit(fit)
    return 0


def _se(x: float, digits: int = 3) -> str:
    """ "±SE", or why there is none: a line through two budgets has no error estimate."""
    return f"±{x:.{digits}f}" if math.isfinite(x) else "two budgets: no interval"


def _exp_line(name: str, sec: dict[str, Any]) -> str:
    n, d = sec["n_opt"], sec["d_opt"]
    return (
        f"  {name:<11} N_opt ∝ C^{n['exponent']:.3f} ({_se(n['exponent_se'])})   "
        f"D_opt ∝ C^{d['exponent']:.3f} ({_se(d['exponent_se'])})"
    )


def _print_scaling_fit(fit: dict[str, Any]) -> None:
    """The fitted scaling laws: each approach's exponents, Approach 3's law with its intervals and
    tokens per parameter, Kaplan's L(C), and the files written."""
    print(
        f"{fit['n_points']} runs at {len(fit['budgets'])} budgets ({min(fit['budgets']):.3g} to "
        f"{max(fit['budgets']):.3g} FLOPs){', the ' + str(fit['dropped_highest']) + ' highest-loss left out' if fit['dropped_highest'] else ''}"
    )
    print("\ncompute-optimal exponents (Chinchilla: approach 1 0.50/0.50, 2 0.49/0.51, 3 0.46/0.54; Kaplan 0.73/0.27)")
    a1 = fit.get("approach1", {})
    if "n_opt" in a1:
        print(_exp_line("approach 1", a1))
    elif a1.get("note"):
        print(f"  approach 1  {a1['note']}")
    a2 = fit.get("approach2")
    if a2:
        if "n_opt" in a2:
            print(_exp_line("approach 2", a2))
        for r in a2["budgets"]:
            if not math.isfinite(r["n_opt"]):
                print(
                    f"      C {r['budget']:9.3g}: {r['method']}: over its {r['n_points']} runs the loss is not "
                    "convex in log N"
                )
                continue
            par = (
                f"parabola {r['n_opt_parabola']:10.4g}, {100 * r['parabola_bias']:+.1f}%"
                if math.isfinite(r["parabola_bias"])
                else "the parabola has no minimum"
            )
            print(
                f"      C {r['budget']:9.3g}: N_opt {r['n_opt']:10.4g} ({par})  {r['tokens_per_param']:6.1f} tokens/param"
                + ("   EDGE of grid" if r["edge"] else "")
            )
        if a2.get("note"):
            print(f"      note: {a2['note']}" if a2["budgets"] else f"  approach 2  {a2['note']}")
    a3 = fit.get("approach3")
    if a3 and "skipped" in a3:
        print(f"  approach 3  skipped: {a3['skipped']}")
    elif a3:
        law, iv = a3["law"], a3["intervals"]
        print(f"  approach 3  N_opt ∝ C^{a3['a']:.3f}   D_opt ∝ C^{a3['b']:.3f}")
        print(
            f"\nL(N, D) = E + A/N^α + B/D^β  (sum of Huber losses, δ {a3['huber_delta']:g}, {a3['n_starts']:,} starts, "
            f"objective {a3['objective']:.5g}, {a3['seconds']:.1f} s)"
        )
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
