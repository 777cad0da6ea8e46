"""Recipe levers, one at a time: each change to lmkit's CPU recipe against the recipe itself,
the two trained side by side (one process and one thread each, so machine noise hits both alike)
on the text and held-out bytes of ``time_to_quality.py``.

Each lever is one change: a config override (``--set``-style) or, for what the config has no knob
for, a change made to the built model before its first step (QK-norm as a parameter-free RMS
normalisation of each head's queries and keys, before rotary, with no learned gain and the usual
1/sqrt(head_dim) scale, so the logits are bounded by sqrt(head_dim); two other initialisations).
Pair i trains both sides with seed ``--seed`` + i. For every pair it
prints the held-out bits per byte at the end of the recipe's steps, the wall time of the run, and
the time to reach ``--target`` bits per byte (by default 2.62, about where the nanoGPT-style
reference of ``time_to_quality.py`` ends), interpolated between evaluations. The recipe's own
numbers across all pairs show how much two identical runs differ here.

    python benchmarks/recipe_levers.py [--levers wsd untied qk-norm ...] [--runs 1]
        [--config configs/cpu-small.yaml] [--target 2.62] [--json levers.json]

A lever "wins" when it reaches the target sooner and ends no worse: that is the benchmark's
question (time to a given quality), so it is the rule for what becomes cpu-small's default.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from time_to_quality import corpus_text, lmkit_worker, split_text, time_to_reach  # noqa: E402

# --------------------------------------------------------------------------- model changes


def qk_norm(tr: Any) -> str:
    """RMS-normalise every head's query and key (no learned scale) before rotary positions."""
    import torch.nn.functional as F

    def per_head(hd: int) -> Callable[[Any, Any, Any], Any]:
        def hook(_module: Any, _inputs: Any, out: Any) -> Any:
            B, T, C = out.shape
            return F.rms_norm(out.view(B, T, C // hd, hd), (hd,)).view(B, T, C)  # (B, T, C)

        return hook

    for block in tr.model.blocks:
        for proj in (block.attn.q_proj, block.attn.k_proj):
            proj.register_forward_hook(per_head(block.attn.head_dim))
    return "qk-norm"


def init_zero_out(tr: Any) -> str:
    """Residual output projections (o_proj, down_proj) start at zero: each block starts as identity."""
    import torch

    with torch.no_grad():
        for name, p in tr.model.named_parameters():
            if name.endswith(("o_proj.weight", "down_proj.weight")):
                p.zero_()
    return "init: zero residual outputs"


def init_fan_in(tr: Any) -> str:
    """Every matrix ~ Normal(0, 1/fan_in) in place of Normal(0, 0.02) (embedding: 1/d_model)."""
    import torch

    with torch.no_grad():
        for _, p in tr.model.named_parameters():
            if p.dim() == 2:
                p.normal_(0.0, p.shape[1] ** -0.5)
    return "init: 1/sqrt(fan_in)"


PATCHES: dict[str, Callable[[Any], str]] = {
    "qk-norm": qk_norm,
    "init-zero-out": init_zero_out,
    "init-fan-in": init_fan_in,
}

# name -> (config overrides, model change or None, what it tests)
LEVERS: dict[str, tuple[list[str], str | None, str]] = {
    "wsd": (["train.schedule=wsd"], None, "warmup-stable-decay"),
    "cosine": (["train.schedule=cosine"], None, "a cosine schedule"),
    "untied": (["model.tie_embeddings=false"], None, "an output head of its own"),
    "tied": (["model.tie_embeddings=true"], None, "the output head tied to the embedding"),
    "qk-norm": ([], "qk-norm", "RMS-normalised queries and keys"),
    "init-zero-out": ([], "init-zero-out", "zero-initialised residual projections"),
    "init-fan-in": ([], "init-fan-in", "1/sqrt(fan_in) initialisation"),
    "adamw": (["train.optimizer=adamw"], None, "AdamW everywhere, same lr 3e-3"),
    "fp32": (["train.precision=fp32"], None, "fp32 in place of the probe's choice"),
    "vocab-1024": (["model.vocab_size=1024"], None, "a 1,024-token vocabulary"),
    "vocab-2048": (["model.vocab_size=2048"], None, "a 2,048-token vocabulary"),
    "vocab-4096": (["model.vocab_size=4096"], None, "a 4,096-token vocabulary"),
    "ctx64-b32": (["model.max_seq_len=64", "train.batch_size=32"], None, "context 64, batch 32 (same tokens)"),
    "ctx256-b8": (["model.max_seq_len=256", "train.batch_size=8"], None, "context 256, batch 8 (same tokens)"),
    "batch8": (["train.batch_size=8"], None, "batch 8 (half the tokens per step)"),
    "batch8-400": (["train.batch_size=8", "train.max_steps=400"], None, "batch 8 for 400 steps (same tokens)"),
    "batch32": (["train.batch_size=32"], None, "batch 32 (twice the tokens per step)"),
}


def lever(name: str) -> tuple[list[str], list[str], str]:
    """Overrides, model changes and description of ``name``: one lever or several joined by '+'."""
    parts = name.split("+")
    unknown = [x for x in parts if x not in LEVERS]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown lever {unknown[0]!r}; choose from {', '.join(LEVERS)} (join several with '+')"
        )
    sets = [x for p in parts for x in LEVERS[p][0]]
    patches = [x for p in parts if (x := LEVERS[p][1])]
    return sets, patches, " + ".join(LEVERS[p][2] for p in parts)


def changes_nothing(config: str, name: str) -> bool:
    """Whether lever ``name`` leaves ``config`` as it is (cpu-small already has a 4,096 vocabulary,
    an untied head and WSD, so those levers measure the recipe against itself there)."""
    from dataclasses import asdict

    from lmkit.config import load_run_config

    sets, patches, _ = lever(name)
    changed = load_run_config(config, dict(s.partition("=")[::2] for s in sets))
    return not patches and asdict(changed) == asdict(load_run_config(config))


def prepare_all(patches: list[str]) -> Callable[[Any], str] | None:
    if not patches:
        return None
    return lambda tr: ", ".join(PATCHES[x](tr) for x in patches)


# --------------------------------------------------------------------------- running


def run_pair(args: argparse.Namespace, work: Path, name: str, i: int) -> dict[str, Any]:
    """The recipe and the recipe with lever ``name`` at the same time; returns both results."""
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    procs = {}
    for side in ("base", name):
        out = work / f"{name}-{i}-{'base' if side == 'base' else 'lever'}.json"
        cmd = [
            sys.executable,
            __file__,
            "--worker",
            side,
            "--work",
            str(work),
            "--config",
            args.config,
            "--threads",
            str(args.threads),
            "--eval-seconds",
            str(args.eval_seconds),
            "--result",
            str(out),
            "--seed",
            str(args.seed + i),
        ]  # pair i: one seed for both sides, another for the next pair
        procs[side] = (subprocess.Popen(cmd, env=env), out)
    res = {}
    for side, (p, out) in procs.items():
        if p.wait() != 0:
            raise SystemExit(f"recipe_levers: the {side} worker failed (exit {p.returncode})")
        res["base" if side == "base" else "lever"] = json.loads(out.read_text())
    return res


def summary(r: dict[str, Any], target: float) -> dict[str, Any]:
    c = r["curve"]
    return {
        "bpb": c[-1]["bpb"],
        "seconds": c[-1]["seconds"],
        "to_target": time_to_reach(c, target),
        "params": r["params"],
        "recipe": r["recipe"],
    }


def fmt(x: float | None, spec: str) -> str:
    return "never" if x is None else format(x, spec)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--levers",
        nargs="+",
        default=None,
        metavar="LEVER",
        help=f"which changes to measure, several joined by '+' measured together "
        f"(default: each of {', '.join(LEVERS)} alone that changes --config)",
    )
    ap.add_argument("--runs", type=int, default=1, help="pairs per lever; medians are reported")
    ap.add_argument("--threads", type=int, default=1, help="threads per side (default 1)")
    ap.add_argument("--config", default=str(Path(__file__).resolve().parent.parent / "configs" / "cpu-small.yaml"))
    ap.add_argument("--target", type=float, default=2.62, help="bits per byte whose time is compared")
    ap.add_argument("--eval-seconds", type=float, default=5.0, help="held-out scoring interval, seconds of run")
    ap.add_argument("--work", default=None, help="folder for the corpus and runs (default: time_to_quality's)")
    ap.add_argument("--json", default=None, help="write every pair's results here")
    ap.add_argument(
        "--seed",
        type=int,
        default=1337,
        help="train.seed of the first pair; pair i uses seed + i on both sides, so the medians "
        "cover seeds as well as timing",
    )
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    args = ap.parse_args()
    work = Path(args.work or os.environ.get("LMKIT_TTQ_WORK") or Path(tempfile.gettempdir()) / "lmkit-ttq")
    work.mkdir(parents=True, exist_ok=True)
    train_text, val_text = split_text(corpus_text(work, None))
    if args.runs < 1 or args.threads < 1:
        ap.error("--runs and --threads must be at least 1")
    if args.levers is None:
        args.levers = [x for x in LEVERS if not changes_nothing(args.config, x)]
    for name in args.levers:
        try:
            lever(name)
        except argparse.ArgumentTypeError as e:
            ap.error(str(e))
        if not args.worker and changes_nothing(args.config, name):
            ap.error(f"lever {name!r} changes nothing in {args.config}: it would measure the recipe against itself")
    if args.worker:
        sets, patches, _ = ([], [], "") if args.worker == "base" else lever(args.worker)
        sets = [*sets, f"train.seed={args.seed}"]
        with tempfile.TemporaryDirectory(dir=work) as tmp:
            res = lmkit_worker(
                train_text,
                val_text,
                args.config,
                sets,
                None,
                args.eval_seconds,
                args.threads,
                Path(tmp),
                prepare_all(patches),
            )
        Path(args.result).write_text(json.dumps(res))
        return
    print(
        f"{len(args.levers)} lever(s) x {args.runs} pair(s); {args.threads} thread(s) per side, both at once; "
        f"time to {args.target} bits/byte"
    )
    print(f"{'lever':22s} {'bpb':>13s} {'to target, s':>15s} {'run, s':>13s}   what it changes")
    rows: dict[str, list[dict[str, Any]]] = {}
    base_all: list[dict[str, Any]] = []
    for name in args.levers:
        pairs = [run_pair(args, work, name, i) for i in range(args.runs)]
        b = [summary(p["base"], args.target) for p in pairs]
        v = [summary(p["lever"], args.target) for p in pairs]
        base_all += b
        rows[name] = [{"base": x, "lever": y} for x, y in zip(b, v)]

        def med(xs: list[dict[str, Any]], key: str) -> float | None:
            vals = [x[key] for x in xs if x[key] is not None]
            return statistics.median(vals) if len(vals) == len(xs) else None

        print(
            f"{name:22s} {fmt(med(b, 'bpb'), '.3f')}→{fmt(med(v, 'bpb'), '.3f')}"
            f" {fmt(med(b, 'to_target'), '6.1f')}→{fmt(med(v, 'to_target'), '<6.1f')}"
            f" {fmt(med(b, 'seconds'), '5.1f')}→{fmt(med(v, 'seconds'), '<5.1f')}   {lever(name)[2]}",
            flush=True,
        )
    bpbs = [x["bpb"] for x in base_all]
    times = [x["to_target"] for x in base_all if x["to_target"] is not None]
    print(
        f"\nthe recipe alone over {len(base_all)} runs: bpb {min(bpbs):.3f}..{max(bpbs):.3f}"
        + (f", to target {min(times):.1f}..{max(times):.1f} s" if times else "")
    )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
