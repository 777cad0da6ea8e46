"""IsoFLOP sweeps (``lmkit scale sweep``): for each compute budget C, models of several sizes
around the rule-of-thumb optimum N = sqrt(C/120), shapes derived from a base config by width and
depth, each trained for C/(6N) tokens with its schedule ending there; the final held-out losses
go to ``points.csv`` for ``lmkit scale fit``.

The sweep folder: ``sweep.json`` (the plan: every run's shape and horizon), ``tokenizer.json`` and
``shards/`` (the data, packed once for all runs; a packed folder given as the data is used in
place), ``runs/<name>/`` (one run folder each) and ``points.csv``. Each run is a sub-run that
resumes: started again, the sweep skips finished runs (``result.json`` in their folder), resumes a
run with checkpoints and starts the rest.
N is the model's total parameter count (as Chinchilla counts it); flops = 6·N·D.
"""

from __future__ import annotations

import copy
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from lmkit.config import ModelConfig, RunConfig
from lmkit.config_io import to_dict
from lmkit.errors import LmkitError
from lmkit.files import write_json_atomic
from lmkit.plan.compute import MAX_FLOPS, count_params
from lmkit.plan.shapes import shape_for

MAX_PER_BUDGET = 64  # model sizes per budget (Chinchilla's IsoFLOP profiles have under 20)
SPREAD_RANGE = (1.0, 100.0)  # sizes from N_opt/spread to N_opt·spread: ±100x is far wider than any profile needs


def check_request(budgets: list[float], per_budget: int, spread: float) -> None:
    """The sweep's own inputs, in one line each, before anything is read or trained."""
    bad = [b for b in budgets if not 1 <= b <= MAX_FLOPS]  # NaN included
    if not budgets or bad:
        raise LmkitError(f"--budgets must be 1 to {MAX_FLOPS:g} FLOPs each, got {bad[0] if bad else 'none'}")
    if not 1 <= per_budget <= MAX_PER_BUDGET:
        raise LmkitError(f"--per-budget must be 1 to {MAX_PER_BUDGET} model sizes per budget, got {per_budget}")
    lo, hi = SPREAD_RANGE
    if not lo <= spread <= hi:
        raise LmkitError(
            f"--spread must be between {lo:g} and {hi:g} (sizes from N_opt/spread to N_opt*spread), got {spread:g}"
        )


def plan_sweep(
    base: RunConfig, budgets: list[float], per_budget: int, vocab_size: int, spread: float = 4.0
) -> list[dict[str, Any]]:
    """Every run of the sweep: budget, shape, parameters, tokens = C/(6N), steps."""
    runs = []
    tokens_per_step = base.train.batch_size * base.model.max_seq_len
    for c in budgets:
        n_star = math.sqrt(c / 120.0)
        seen: set[tuple[int, int]] = set()
        for f in np.exp(np.linspace(-math.log(spread), math.log(spread), per_budget)):
            m = shape_for(base.model, n_star * float(f), vocab_size)
            if (m.d_model, m.n_layers) in seen:
                continue
            seen.add((m.d_model, m.n_layers))
            n = count_params(m).total
            tokens = c / (6.0 * n)
            steps = max(1, math.ceil(tokens / tokens_per_step))
            runs.append(
                {
                    "name": f"C{c:.3g}-d{m.d_model}-L{m.n_layers}".replace("+", ""),
                    "budget": c,
                    "params": n,
                    "tokens": tokens,
                    "steps": steps,
                    "model": to_dict(m),
                }
            )
    return runs


def run_config(
    base: RunConfig, run: dict[str, Any], folder: Path, shards: Path, tokenizer: Path | None = None
) -> RunConfig:
    """The run config of one sub-run: the base with the run's shape, trained for its tokens."""
    from lmkit.config_io import from_dict

    cfg = copy.deepcopy(base)
    cfg.model = from_dict(ModelConfig, run["model"], "model")
    t = cfg.train
    t.max_steps, t.max_tokens, t.max_flops, t.tokens_per_param, t.max_time = (
        None,
        int(math.ceil(run["tokens"])),
        None,
        None,
        None,
    )
    t.warmup_steps = min(t.warmup_steps, max(1, run["steps"] // 10))
    t.tensorboard = False
    cfg.data.paths = [str(shards)]
    cfg.data.tokenizer = str(tokenizer) if tokenizer else None
    cfg.out = str(folder)
    return cfg


def sweep(
    base: RunConfig,
    budgets: list[float],
    per_budget: int,
    out: Path,
    spread: float = 4.0,
    show_progress: bool = True,
    yes: bool = False,
) -> dict[str, Any]:
    """Run (or continue) the sweep in ``out``; write points.csv; return the summary. A sweep
    predicted to take longer than ``lmkit.plan.compute.LONG_RUN_HOURS`` on this machine (all its
    runs' FLOPs at its measured rate) is refused unless ``yes``; past ``NEVER_DAYS``, always."""
    import json

    from lmkit.data.prepare import prepare
    from lmkit.files import check_out_dir
    from lmkit.models.checkpoint import list_checkpoints
    from lmkit.plan.measure import check_predicted_time
    from lmkit.train.loop import train

    check_request(budgets, per_budget, spread)
    check_predicted_time(
        per_budget * math.fsum(budgets),
        yes,
        f"this sweep of up to {per_budget * len(budgets)} runs",
        base.train.device,
        base.train.precision,
    )
    plan_file = out / "sweep.json"
    if not plan_file.exists():  # a new sweep: the shared output rules (a sweep folder itself resumes)
        check_out_dir(out, False, inputs=base.data.paths, kind="sweep")
    out.mkdir(parents=True, exist_ok=True)
    request = {
        "budgets": [float(b) for b in budgets],
        "per_budget": per_budget,
        "spread": spread,
        "base": to_dict(base),
    }
    tok, train_split, _ = prepare(base.data, out, base.model.vocab_size, show_progress=show_progress)
    shards = train_split.folder.parent  # packed here, or the packed folder given as --data
    tok_file = out / "tokenizer.json"
    if not tok_file.is_file():
        tok.save(tok_file)
    if plan_file.is_file():
        saved = json.loads(plan_file.read_text(encoding="utf-8"))
        if saved.get("request") != json.loads(json.dumps(request, default=str)):
            raise LmkitError(
                f"{plan_file}: this folder holds a sweep of other settings (budgets, sizes, base "
                "config); choose another --out"
            )
        runs = saved["runs"]
    else:
        runs = plan_sweep(base, list(budgets), per_budget, tok.vocab_size, spread)
        write_json_atomic(plan_file, {"request": request, "runs": runs})
    total = sum(r["budget"] for r in runs)
    done_flops, t0, results = 0.0, time.perf_counter(), []
    timed_flops = 0.0
    for i, r in enumerate(runs):
        folder = out / "runs" / r["name"]
        res_file = folder / "result.json"
        if res_file.is_file():
            results.append(json.loads(res_file.read_text(encoding="utf-8")))
            done_flops += r["budget"]
            continue
        if show_progress:
            rate = timed_flops / max(time.perf_counter() - t0, 1e-9)
            eta = f", ETA {(total - done_flops) / rate / 60:.1f} min" if rate > 0 else ""
            print(
                f"lmkit scale sweep: run {i + 1}/{len(runs)} {r['name']} ({r['params']:,} params, "
                f"{r['tokens']:.3g} tokens); {100 * done_flops / total:.0f}% of the sweep's FLOPs done{eta}",
                file=sys.stderr,
            )
        cfg = run_config(base, r, folder, shards, tok_file)
        resume = folder.is_dir() and bool(list_checkpoints(folder))
        summary = train(cfg, resume=resume, show_progress=show_progress)
        ev = summary["eval"] or {}
        if "loss" not in ev:
            raise LmkitError(f"{folder}: the run has no held-out loss (is data.val_fraction 0?)")
        result = {
            "params": r["params"],
            "tokens": summary["tokens"],
            "flops": 6.0 * r["params"] * summary["tokens"],
            "loss": ev["loss"],
            "budget": r["budget"],
            "run": str(folder),
        }
        write_json_atomic(res_file, result)
        results.append(result)
        done_flops += r["budget"]
        timed_flops += r["budget"]
    points = out / "points.csv"
    lines = ["params,tokens,flops,loss,budget,run"] + [
        f"{p['params']},{p['tokens']},{p['flops']},{p['loss']},{p['budget']},{p['run']}" for p in results
    ]
    tmp = points.with_suffix(".csv.tmp")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    tmp.replace(points)
    return {"points": str(points), "runs": len(results), "flops": done_flops}


__all__ = ["MAX_PER_BUDGET", "SPREAD_RANGE", "check_request", "plan_sweep", "run_config", "sweep"]
