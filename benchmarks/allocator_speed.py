"""The allocator a training run gets by default against glibc's as it is: tokens/s and peak memory.

``train.memory`` (lmkit.train.rss) is ``auto`` by default: glibc's allocator as it is (``fast``)
unless the plan says the run would then not fit in this machine's available memory, then ``lean``
(large blocks returned to the system on free: less memory, slower). On a machine with room the
default run must train as fast as ``--train.memory fast``, and ``lmkit plan``'s prediction must hold
for its peak. This benchmark runs ``lmkit pretrain`` of a recipe (default cpu-small) on the demo's
curated corpus (built once into ``--work``, packed once), as separate processes one after another,
alternating which side goes first in each round, and prints for every run its tokens/s (median of
the logged windows after the first, which pays for warm-up), its peak RSS, the plan's prediction and
the settled ``train.memory``; then each side's median tokens/s and the ratio default / fast (the
target: at least 0.95), and the default runs' peak against the plan (the target: within 10%).
``--lean`` adds a third side, ``--train.memory lean``, for the price of the lean allocator.

Before the runs, this machine's runtime baseline (while training, and what a run's end adds) is
measured (what ``lmkit plan --this-machine`` does) into the work folder's own cache, so the plan the
runs report is the one for this machine.

    python benchmarks/allocator_speed.py [--rounds 3] [--steps 40] [--lean] [--config cpu-small]
        [--work /tmp/lmkit-alloc]

Run it on an idle machine: a 2-thread run loses about half its speed whenever anything else runs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

SIDES = {"default": [], "fast": ["--train.memory", "fast"], "lean": ["--train.memory", "lean"]}


def demo_shards(work: Path, config: str) -> Path:
    """The demo's curated corpus, packed with the recipe's vocabulary (built once into ``work``)."""
    from lmkit.config import load_run_config
    from lmkit.data.curate import curate
    from lmkit.data.prepare import prepare
    from lmkit.demo import gather_default_corpus

    curated, packed = work / "curated", work / "packed"
    if not (curated / "report.json").exists():
        gather_default_corpus(work / "raw")
        curate([str(work / "raw")], curated, workers=0, progress=False)
    if not (packed / "shards").is_dir():
        cfg = load_run_config(config, {"data.paths": [str(curated)]})
        prepare(cfg.data, packed, cfg.model.vocab_size, show_progress=False)
    return packed / "shards"


def one_run(side: str, i: int, args: argparse.Namespace, shards: Path, env: dict[str, str]) -> dict[str, Any]:
    """One ``lmkit pretrain`` of ``args.steps`` steps; its tokens/s, peak memory and the plan's figure."""
    out = Path(args.work) / "runs" / f"{side}-{i}"
    log_every = max(1, args.steps // 8)
    shutil.rmtree(out, ignore_errors=True)  # this benchmark's own run folder, from an earlier round or call
    # the recipe's run as it is (its evaluation, checkpoints and TensorBoard writer count in its memory)
    cmd = [
        sys.executable,
        "-m",
        "lmkit.cli",
        "pretrain",
        "--config",
        args.config,
        "--data",
        str(shards),
        "--out",
        str(out),
        "--max-steps",
        str(args.steps),
        "--train.log_every",
        str(log_every),
        "--quiet",
        "--json",
        *SIDES[side],
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"{side} run {i} failed:\n{done.stderr[-3000:]}")
    summary = json.loads(done.stdout[done.stdout.index("{") :])
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    windows = [r["tokens_per_s"] for r in logged if "tokens_per_s" in r]
    mem = summary["memory"]
    return {
        "side": side,
        "round": i,
        "tokens_per_s": statistics.median(windows[1:] or windows),
        "peak_bytes": mem["measured_bytes"],
        "plan_bytes": mem["predicted_bytes"],
        "plan_error": mem["error"],
        "memory_choice": mem.get("memory_choice"),
        "precision": summary.get("precision"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--config", default="cpu-small", help="the recipe (a YAML file or a shipped name; default cpu-small)"
    )
    ap.add_argument("--rounds", type=int, default=3, help="rounds of one run per side (default 3)")
    ap.add_argument("--steps", type=int, default=40, help="training steps per run (default 40)")
    ap.add_argument("--lean", action="store_true", help="also run --train.memory lean")
    ap.add_argument("--work", default=None, help="folder for the corpus, shards and runs (default: a temporary one)")
    args = ap.parse_args()
    if args.rounds < 1 or args.steps < 2:
        raise SystemExit("--rounds must be at least 1 and --steps at least 2")
    work = Path(args.work or Path(tempfile.gettempdir()) / "lmkit-alloc")
    work.mkdir(parents=True, exist_ok=True)
    args.work = str(work)
    env = {**os.environ, "LMKIT_CACHE": str(work / "cache")}  # this machine's baseline, measured below
    os.environ["LMKIT_CACHE"] = env["LMKIT_CACHE"]
    from lmkit.plan.baseline import finish_baseline, runtime_baseline

    shards = demo_shards(work, args.config)
    baseline, _ = runtime_baseline(measure=True)
    sides = ["default", "fast"] + (["lean"] if args.lean else [])
    print(
        f"{args.config} on the demo corpus ({shards}), {args.steps} steps per run, {args.rounds} round(s); "
        f"runtime baseline measured here: {baseline / 1e6:.0f} MB while training, "
        f"{finish_baseline() / 1e6:.0f} MB more at the run's end"
    )
    runs: list[dict[str, Any]] = []
    for i in range(args.rounds):
        for side in sides if i % 2 == 0 else sides[::-1]:
            r = one_run(side, i, args, shards, env)
            runs.append(r)
            print(
                f"  round {i + 1} {side:<8} {r['tokens_per_s']:8,.0f} tokens/s   peak RSS {r['peak_bytes'] / 1e6:7.1f} MB"
                f"   plan {r['plan_bytes'] / 1e6:7.1f} MB ({100 * r['plan_error']:+.1f}%)   "
                f"train.memory {r['memory_choice']}",
                flush=True,
            )
    med = {s: statistics.median(r["tokens_per_s"] for r in runs if r["side"] == s) for s in sides}
    print("\nmedian tokens/s: " + "   ".join(f"{s} {med[s]:,.0f}" for s in sides))
    print(f"default / fast (glibc's allocator as it is): {med['default'] / med['fast']:.3f}  (target >= 0.95)")
    if args.lean:
        print(f"lean / fast: {med['lean'] / med['fast']:.3f}  (what the lean allocator costs)")
    errors = [r["plan_error"] for r in runs if r["side"] == "default"]
    print(
        f"default runs' peak RSS against lmkit plan: {100 * min(errors):+.1f}% to {100 * max(errors):+.1f}%  "
        "(target within ±10%)"
    )


if __name__ == "__main__":
    main()
