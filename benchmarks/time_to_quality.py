"""Time to quality: how long lmkit's CPU recipe needs to reach a reference recipe's held-out bits
per byte, on the same text, the same held-out bytes and the same number of threads.

The reference is nanoGPT's published CPU recipe, written here in plain PyTorch: a character-level
GPT (learned positions, LayerNorm, GELU MLP, tied head; 4 layers x 128, 4 heads, context 64),
batch 12, AdamW (lr 1e-3, betas 0.9/0.99, weight decay 0.1 on matrices), 100 warm-up steps, cosine
to 1e-4 at 2,000 steps, gradient clipping at 1.0, no dropout. lmkit's side is ``lmkit pretrain``'s
own recipe (a config file, default ``configs/cpu-small.yaml``) driven step by step through
``lmkit.train.Trainer``: its tokenizer training and packing, model, optimizer and schedule.

Both sides run at the same time, one process each with ``--threads`` threads (so machine noise
hits both alike). Wall time counts set-up (the reference's character vocabulary; lmkit's tokenizer
training and packing) and training; the clock stops while the held-out text is scored. Held-out
bits per byte = the summed negative log-likelihood (in bits) of every held-out token, scored in
windows of the model's context, over the held-out text's UTF-8 bytes: a number both sides share
whatever their tokenizers.

The text: the demo's curated corpus (built once into ``--work``) or ``--text FILES``, documents
joined by blank lines; the last 10% of its characters are held out.

    python benchmarks/time_to_quality.py [--runs 3] [--threads 1] [--config configs/cpu-small.yaml]
        [--set train.lr=2e-3 ...] [--lmkit-time 60] [--png docs/time-to-quality.png]

Prints both curves, the reference's final bits per byte, the time lmkit needs to reach it
(interpolated between its evaluations), and the ratio of that time to the reference's; with
``--runs`` > 1 the median of the ratios.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HELD_OUT = 0.10
REF = {
    "n_layer": 4,
    "n_head": 4,
    "n_embd": 128,
    "block": 64,
    "batch": 12,
    "lr": 1e-3,
    "min_lr": 1e-4,
    "warmup": 100,
    "steps": 2000,
    "beta2": 0.99,
    "weight_decay": 0.1,
    "grad_clip": 1.0,
}


# --------------------------------------------------------------------------- the shared text


def corpus_text(work: Path, files: list[str] | None) -> str:
    """The benchmark's text: ``files`` read as lmkit reads them, else the demo's curated corpus."""
    from lmkit.data.read import iter_documents

    if not files:
        curated = work / "curated"
        if not (curated / "report.json").exists():
            from lmkit.data.curate import curate
            from lmkit.demo import gather_default_corpus

            gather_default_corpus(work / "raw")
            curate([str(work / "raw")], curated, workers=0, progress=False)
        files = [str(curated)]
    return "\n\n".join(d.text for d in iter_documents(files))


def split_text(text: str) -> tuple[str, str]:
    cut = int(len(text) * (1 - HELD_OUT))
    return text[:cut], text[cut:]


# --------------------------------------------------------------------------- the reference recipe


def reference_worker(train_text: str, val_text: str, eval_every: int, threads: int, seed: int) -> dict[str, Any]:
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    chars = sorted(set(train_text + val_text))
    stoi = {c: i for i, c in enumerate(chars)}
    train_ids = torch.tensor([stoi[c] for c in train_text], dtype=torch.long)
    val_ids = torch.tensor([stoi[c] for c in val_text], dtype=torch.long)
    c = REF

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            d = c["n_embd"]
            self.ln1, self.ln2 = nn.LayerNorm(d, bias=False), nn.LayerNorm(d, bias=False)
            self.qkv, self.proj = nn.Linear(d, 3 * d, bias=False), nn.Linear(d, d, bias=False)
            self.fc, self.out = nn.Linear(d, 4 * d, bias=False), nn.Linear(4 * d, d, bias=False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, C)
            B, T, C = x.shape
            q, k, v = self.qkv(self.ln1(x)).split(C, dim=2)
            q, k, v = (t.view(B, T, c["n_head"], C // c["n_head"]).transpose(1, 2) for t in (q, k, v))
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, T, C)
            x = x + self.proj(y)
            return x + self.out(F.gelu(self.fc(self.ln2(x))))

    class CharGPT(nn.Module):
        def __init__(self, vocab: int) -> None:
            super().__init__()
            d = c["n_embd"]
            self.wte, self.wpe = nn.Embedding(vocab, d), nn.Embedding(c["block"], d)
            self.blocks = nn.ModuleList(Block() for _ in range(c["n_layer"]))
            self.ln_f = nn.LayerNorm(d, bias=False)
            for name, p in self.named_parameters():
                if p.dim() == 2:
                    std = 0.02 / math.sqrt(2 * c["n_layer"]) if name.endswith(("proj.weight", "out.weight")) else 0.02
                    nn.init.normal_(p, 0.0, std)

        def forward(self, idx: torch.Tensor) -> torch.Tensor:  # (B, T) -> (B, T, vocab)
            x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1]))
            for b in self.blocks:
                x = b(x)
            return F.linear(self.ln_f(x), self.wte.weight)

    model = CharGPT(len(chars))
    decay = [p for p in model.parameters() if p.dim() >= 2]
    other = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": c["weight_decay"]}, {"params": other, "weight_decay": 0.0}],
        lr=c["lr"],
        betas=(0.9, c["beta2"]),
    )

    def lr_at(it: int) -> float:
        if it < c["warmup"]:
            return c["lr"] * (it + 1) / (c["warmup"] + 1)
        ratio = (it - c["warmup"]) / (c["steps"] - c["warmup"])
        return c["min_lr"] + 0.5 * (1 + math.cos(math.pi * ratio)) * (c["lr"] - c["min_lr"])

    gen = torch.Generator().manual_seed(seed)
    val_bytes = len(val_text.encode("utf-8"))
    curve = []
    clock = time.perf_counter() - t0  # set-up counts
    for it in range(c["steps"] + 1):
        if it % eval_every == 0 or it == c["steps"]:
            model.eval()
            curve.append({"step": it, "seconds": clock, "bpb": held_out_bits(model, val_ids, c["block"]) / val_bytes})
            model.train()
        if it == c["steps"]:
            break
        t = time.perf_counter()
        ix = torch.randint(len(train_ids) - c["block"] - 1, (c["batch"],), generator=gen)
        x = torch.stack([train_ids[i : i + c["block"]] for i in ix.tolist()])
        y = torch.stack([train_ids[i + 1 : i + 1 + c["block"]] for i in ix.tolist()])
        for g in opt.param_groups:
            g["lr"] = lr_at(it)
        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), c["grad_clip"])
        opt.step()
        opt.zero_grad(set_to_none=True)
        clock += time.perf_counter() - t
    n = sum(p.numel() for p in model.parameters())
    return {
        "side": "reference",
        "recipe": f"char-level GPT {c['n_layer']}x{c['n_embd']}, context {c['block']}, "
        f"batch {c['batch']}, AdamW lr {c['lr']:g}, {c['steps']} steps",
        "params": n,
        "curve": curve,
    }


def held_out_bits(model: Any, ids: Any, window: int, autocast: Any = None) -> float:
    """Total negative log-likelihood in bits of ids[1:], windows of ``window`` overlapping by one
    token (each window's first token is context only; every later token is scored exactly once)."""
    import torch
    import torch.nn.functional as F

    total = 0.0
    starts = list(range(0, len(ids) - 1, window - 1))
    with torch.no_grad():
        for i in range(0, len(starts), 32):
            chunk = [ids[s : s + window] for s in starts[i : i + 32]]
            by_len: dict[int, list[Any]] = {}
            for ch in chunk:
                if len(ch) > 1:
                    by_len.setdefault(len(ch), []).append(ch)
            for group in by_len.values():
                x = torch.stack(group)
                if autocast is not None:
                    with autocast:
                        logits = model(x[:, :-1])
                else:
                    logits = model(x[:, :-1])
                total += float(F.cross_entropy(logits.float().flatten(0, 1), x[:, 1:].flatten(), reduction="sum"))
    return total / math.log(2)


# --------------------------------------------------------------------------- lmkit's recipe


def lmkit_worker(
    train_text: str,
    val_text: str,
    config: str,
    sets: list[str],
    max_time: float | None,
    eval_seconds: float,
    threads: int,
    work: Path,
    prepare: Callable[[Any], str] | None = None,
) -> dict[str, Any]:
    """lmkit's recipe, step by step, scored every ``eval_seconds`` of its own wall time.

    ``prepare`` (used by ``recipe_levers.py``) may change the built Trainer's model in place before
    the first step, outside the clock; what it returns is added to the recipe's name.
    """
    import torch

    from lmkit.config import load_run_config
    from lmkit.train.loop import Trainer
    from lmkit.train.steps import lr_at

    torch.set_num_threads(threads)
    train_file = work / "train.txt"
    train_file.write_text(train_text, encoding="utf-8")
    overrides: dict[str, Any] = {
        "data.paths": [str(train_file)],
        "out": str(work / "run"),
        "data.val_fraction": 0.002,
        "train.tensorboard": False,
        "train.ckpt_every": 0,
        "train.eval_every": 0,
    }
    if max_time is not None:
        overrides.update({"train.max_time": max_time, "train.max_steps": None})
    for s in sets:
        key, _, value = s.partition("=")
        overrides[key] = value  # coerced to the field's type as a command-line override is
    cfg = load_run_config(config, overrides)
    t0 = time.perf_counter()
    tr = Trainer(cfg, show_progress=False)  # trains the tokenizer and packs the text
    clock = time.perf_counter() - t0
    changed = prepare(tr) if prepare is not None else ""
    val_ids = torch.tensor(tr.tokenizer.encode(val_text), dtype=torch.long)
    val_bytes = len(val_text.encode("utf-8"))
    window = cfg.model.max_seq_len
    horizon = tr.horizon
    curve = []
    next_eval, step = 0.0, 0

    def score() -> None:
        tr.model.eval()
        curve.append(
            {"step": step, "seconds": clock, "bpb": held_out_bits(tr.model, val_ids, window, tr.autocast) / val_bytes}
        )
        tr.model.train()

    while True:
        if clock >= next_eval:
            score()
            next_eval = clock + eval_seconds
        if (horizon.steps is not None and step >= horizon.steps) or (
            horizon.max_time is not None and clock >= horizon.max_time
        ):
            break
        t = time.perf_counter()
        progress = clock / horizon.max_time if horizon.steps is None and horizon.max_time else None
        tr.train_step(step, lr_at(step, cfg.train, horizon.steps, progress))
        step += 1
        clock += time.perf_counter() - t
    if curve[-1]["step"] != step:
        score()
    m = cfg.model
    name = " ".join([Path(config).name, *sets, *([changed] if changed else [])])
    return {
        "side": "lmkit",
        "recipe": f"{name}: {m.family} {m.n_layers}x{m.d_model}, "
        f"vocab {m.vocab_size}, context {m.max_seq_len}, batch {cfg.train.batch_size}, "
        f"{cfg.train.precision}, lr {cfg.train.lr:g}, {step} steps",
        "params": tr.n_params,
        "curve": curve,
    }


# --------------------------------------------------------------------------- comparing


def time_to_reach(curve: list[dict[str, float]], target: float) -> float | None:
    """The first time the curve reaches ``target`` bits per byte, linear between evaluations."""
    for a, b in zip(curve, curve[1:]):
        if b["bpb"] <= target:
            if a["bpb"] <= target:
                return a["seconds"]
            f = (a["bpb"] - target) / (a["bpb"] - b["bpb"])
            return a["seconds"] + f * (b["seconds"] - a["seconds"])
    return None


def one_run(args: argparse.Namespace, work: Path, i: int) -> dict[str, Any]:
    """Both workers at once, one process each; returns their curves and the ratio."""
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    procs = {}
    for side in ("reference", "lmkit"):
        out = work / f"run{i}-{side}.json"
        cmd = (
            [
                sys.executable,
                __file__,
                "--worker",
                side,
                "--work",
                str(work),
                "--threads",
                str(args.threads),
                "--config",
                args.config,
                "--eval-seconds",
                str(args.eval_seconds),
                "--seed",
                str(args.seed + i),
                "--result",
                str(out),
            ]
            + [f"--set={s}" for s in args.set]
            + (["--lmkit-time", str(args.lmkit_time)] if args.lmkit_time else [])
            + [x for f in (args.text or []) for x in ("--text", f)]
        )
        procs[side] = (subprocess.Popen(cmd, env=env), out)
    res = {}
    for side, (p, out) in procs.items():
        if p.wait() != 0:
            raise SystemExit(f"time_to_quality: the {side} worker failed (exit {p.returncode})")
        res[side] = json.loads(out.read_text())
    ref, lm = res["reference"], res["lmkit"]
    target = ref["curve"][-1]["bpb"]
    ref_time = ref["curve"][-1]["seconds"]
    t = time_to_reach(lm["curve"], target)
    res["target_bpb"], res["reference_seconds"], res["lmkit_seconds_to_target"] = target, ref_time, t
    res["ratio"] = t / ref_time if t is not None else None
    return res


def print_run(r: dict[str, Any]) -> None:
    for side in ("reference", "lmkit"):
        s = r[side]
        print(f"{side:9s} {s['recipe']}; {s['params']:,} parameters")
        print("          " + "  ".join(f"{p['seconds']:.0f}s:{p['bpb']:.3f}" for p in s["curve"]))
    t = r["lmkit_seconds_to_target"]
    print(
        f"reference final {r['target_bpb']:.3f} bits/byte after {r['reference_seconds']:.1f}s; lmkit reaches it "
        + (f"after {t:.1f}s: ratio {r['ratio']:.3f}" if t is not None else "never in its run (ratio undefined)")
    )


def plot(runs: list[dict[str, Any]], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, r in enumerate(runs):
        for side, colour in (("reference", "tab:grey"), ("lmkit", "tab:blue")):
            c = r[side]["curve"]
            ax.plot(
                [p["seconds"] for p in c],
                [p["bpb"] for p in c],
                color=colour,
                alpha=0.8,
                label=(r[side]["recipe"][:70] if i == 0 else None),
                marker=".",
            )
        ax.axhline(r["target_bpb"], color="tab:grey", ls=":", lw=0.8)
    ax.set_xlabel("wall time (s), set-up included, scoring excluded")
    ax.set_ylabel("held-out bits per byte")
    ax.set_ylim(top=min(6.0, ax.get_ylim()[1]))
    ratios = [r["ratio"] for r in runs if r["ratio"] is not None]
    ax.set_title("time to quality" + (f": median ratio {statistics.median(ratios):.2f}" if ratios else ""))
    ax.legend(fontsize=7)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=1, help="repetitions; the median ratio is reported")
    ap.add_argument("--threads", type=int, default=1, help="threads per side (default 1)")
    ap.add_argument("--config", default=str(Path(__file__).resolve().parent.parent / "configs" / "cpu-small.yaml"))
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override lmkit's config")
    ap.add_argument(
        "--lmkit-time",
        type=float,
        default=None,
        help="give lmkit's run this many seconds (train.max_time, schedule over time) instead of its steps",
    )
    ap.add_argument("--eval-seconds", type=float, default=5.0, help="lmkit scores the held-out text this often")
    ap.add_argument("--text", action="append", default=None, help="your text instead of the demo corpus")
    ap.add_argument("--work", default=None, help="folder for the corpus and runs (default: a temporary one)")
    ap.add_argument("--png", default=None, help="write the curves here")
    ap.add_argument("--json", default=None, help="write every run's curves here")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--worker", choices=["reference", "lmkit"], help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    args = ap.parse_args()
    work = Path(args.work or os.environ.get("LMKIT_TTQ_WORK") or Path(tempfile.gettempdir()) / "lmkit-ttq")
    work.mkdir(parents=True, exist_ok=True)
    if args.worker:
        train_text, val_text = split_text(corpus_text(work, args.text))
        if args.worker == "reference":
            res = reference_worker(train_text, val_text, 100, args.threads, args.seed)
        else:
            with tempfile.TemporaryDirectory(dir=work) as tmp:
                res = lmkit_worker(
                    train_text,
                    val_text,
                    args.config,
                    args.set,
                    args.lmkit_time,
                    args.eval_seconds,
                    args.threads,
                    Path(tmp),
                )
        Path(args.result).write_text(json.dumps(res))
        return
    text = corpus_text(work, args.text)  # built once, before the timed workers start
    train_text, val_text = split_text(text)
    print(
        f"text: {len(text.encode('utf-8')):,} bytes; held out: the last {len(val_text.encode('utf-8')):,} bytes; "
        f"{args.threads} thread(s) per side, both sides at once"
    )
    runs = []
    for i in range(args.runs):
        r = one_run(args, work, i)
        print(f"\nrun {i + 1}/{args.runs}")
        print_run(r)
        runs.append(r)
    ratios = [r["ratio"] for r in runs if r["ratio"] is not None]
    if ratios:
        print(
            f"\nmedian ratio (lmkit's time to the reference's final quality / reference's time) over "
            f"{len(ratios)} run(s): {statistics.median(ratios):.3f}  (target <= 0.33)"
        )
    if args.png:
        plot(runs, Path(args.png))
        print(f"plot: {args.png}")
    if args.json:
        Path(args.json).write_text(json.dumps(runs, indent=1))


if __name__ == "__main__":
    main()
