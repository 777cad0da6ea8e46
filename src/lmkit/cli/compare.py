"""The ``compare`` command: foundation models and the user's own, side by side on the user's text.

Its flags, its runner and its printing: one table with one row per checkpoint, how the user's terms
split, and the verdict. The measuring is :mod:`lmkit.lab.compare`.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

from lmkit.cli.common import (
    add_json,
    add_no_verify,
    add_out,
    add_overwrite,
    add_quiet,
    add_scaling_law,
    add_seed,
    add_text_field,
    print_json,
)
from lmkit.errors import LmkitError

TEXT_CHARS = 20_000_000  # the characters of --data read for fertility and the speed prompt


def add_compare(sub: Any) -> None:
    p = sub.add_parser(
        "compare",
        help="compare checkpoints (your own and imported foundation models) on your text: one table and a verdict",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Score any mix of lmkit checkpoints and imported ones (`lmkit import-hf`), of any family, on\n"
        "your held-out text, one row per model:\n"
        "  - family, parameters, context window, tokenizer kind and size, license and base model;\n"
        "  - bits per byte on your text (tokenizer-independent: what `lmkit evaluate --data` gives over the\n"
        "    whole text), and on --general text;\n"
        "  - tokens per word on your text, and how your --terms split;\n"
        "  - with --task, accuracy at each --shots count with its 95% interval (an encoder: needs finetune-head);\n"
        "  - prompt and generated tokens/s at batch 1 on this machine;\n"
        "  - memory to run it (its own precision, and int8) and to continue pre-training (`lmkit plan\n"
        "    --gpu here`), and whether each fits in the memory this machine has available;\n"
        "  - the compute and hours to reach its bits per byte by training your own model from scratch\n"
        "    (Chinchilla's law, or the one `lmkit scale fit` fitted on your data: --scaling-law).\n"
        "Then a verdict: the best model on your text, per GB of memory and per unit of time, and whether\n"
        "training from scratch could match the best foundation model within --budget-hours.\n\n"
        "A checkpoint that fails to load or to score is a row with its one-line reason. With --out,\n"
        "compare.json (everything) and compare.png (bits per byte against parameters, marker size by\n"
        "generated tokens/s) are written there.\n\n"
        "examples:\n"
        "  lmkit compare runs/small models/smollm2 --data notes.txt --out cmp/\n"
        "  lmkit compare runs/small models/smollm2 --data legal/ --general general/ --terms licensee indemnify\n"
        "  lmkit compare runs/small runs/t5 --data notes.txt --task qa.jsonl --shots 0 1 --budget-hours 24",
    )
    p.add_argument("checkpoints", nargs="+", metavar="CKPT", help="checkpoint folders or run folders (their newest)")
    p.add_argument(
        "--data",
        nargs="+",
        required=True,
        metavar="PATH",
        help="your held-out text: files and folders (each model reads it with its own tokenizer)",
    )
    p.add_argument(
        "--general", nargs="+", default=[], metavar="PATH", help="general text to score too (e.g. a Wikipedia sample)"
    )
    add_text_field(p)
    p.add_argument(
        "--terms",
        nargs="+",
        default=[],
        metavar="WORD",
        help="words or phrases of your domain: how each model cuts them",
    )
    p.add_argument(
        "--task",
        default=None,
        metavar="T.jsonl",
        help="a labelled task: a JSONL file as `lmkit icl --task` reads it, or a built-in task's name "
        "(next-sentence and last-word are made from --data): accuracy of each model at each --shots count",
    )
    p.add_argument("--shots", nargs="+", type=int, default=[0], help="shot counts for --task (default 0)")
    p.add_argument("--limit", type=int, default=None, help="score only the first N examples of --task")
    add_scaling_law(p, "count the cost from scratch with", "Chinchilla's")
    p.add_argument(
        "--budget-hours",
        type=float,
        default=None,
        metavar="H",
        help="hours of training on this machine you would spend: the verdict says if a model trained from scratch "
        "could match the best foundation model within them",
    )
    p.add_argument("--batch-size", type=int, default=8, help="sequences per held-out batch (default 8, as evaluate)")
    p.add_argument(
        "--speed-prompt-tokens", type=int, default=128, help="prompt tokens the speed is timed on (default 128)"
    )
    p.add_argument(
        "--speed-new-tokens",
        type=int,
        default=32,
        help="tokens generated when timing the speed (default 32; 0: no speed measurement)",
    )
    add_seed(p, 0, "the task's exemplars and the masks of an encoder's bits per byte")
    add_out(p, "folder for compare.json and compare.png (default: print only)")
    add_overwrite(p, "a previous comparison's compare.json and compare.png")
    add_json(p, "the report (compare.json's content)")
    add_quiet(p)
    add_no_verify(p)
    p.set_defaults(func=_run_compare)


def _check_flags(args: argparse.Namespace) -> None:
    for flag, value, least in (
        ("--batch-size", args.batch_size, 1),
        ("--speed-prompt-tokens", args.speed_prompt_tokens, 1),
        ("--speed-new-tokens", args.speed_new_tokens, 0),
        ("--limit", args.limit, 1),
    ):
        if value is not None and value < least:
            raise LmkitError(f"{flag} must be at least {least}, got {value}")
    if args.speed_new_tokens == 1:
        raise LmkitError("--speed-new-tokens must be 0 (no speed) or at least 2 (a prefill and a decode step)")
    if any(k < 0 for k in args.shots):
        raise LmkitError(f"--shots must be 0 or more, got {min(args.shots)}")
    if args.budget_hours is not None and not (math.isfinite(args.budget_hours) and args.budget_hours > 0):
        raise LmkitError(f"--budget-hours must be a number of hours above 0, got {args.budget_hours}")
    for flag, paths in (("--data", args.data), ("--general", args.general)):
        for path in paths:
            if not Path(path).exists():
                raise LmkitError(f"{flag} {path}: no such file or folder")
    if args.task is not None and args.task not in _builtin() and not Path(args.task).is_file():
        raise LmkitError(f"--task {args.task}: no such file (a JSONL task as `lmkit icl --task` reads it)")


def _builtin() -> tuple[str, ...]:
    from lmkit.lab.icl.tasks import BUILTIN

    return tuple(BUILTIN)


def _run_compare(args: argparse.Namespace) -> int:
    """``lmkit compare CKPT... --data PATH...``: the table, the verdict and the files."""
    from lmkit.data.read import iter_documents
    from lmkit.lab.compare.rows import CompareInputs
    from lmkit.lab.compare.run import check_out, compare, write_outputs
    from lmkit.plan.chinchilla import get_fit, load_scaling_law

    _check_flags(args)
    if args.out:
        check_out(args.out, args.overwrite, [*args.checkpoints, *args.data, *args.general])
    law = load_scaling_law(args.scaling_law) if args.scaling_law else get_fit("chinchilla")
    from lmkit.data.shards import is_shard_folder

    texts: list[str] = []  # fertility's and the speed prompt's text: --data's documents, up to TEXT_CHARS
    if not is_shard_folder(args.data[0]):
        chars = 0
        for doc in iter_documents(args.data, args.text_field):
            texts.append(doc.text)
            chars += len(doc.text)
            if chars >= TEXT_CHARS:
                break
    task = None
    if args.task is not None:
        from lmkit.lab.icl.tasks import builtin_task, load_task

        if args.task in _builtin() and not Path(args.task).is_file():
            task = builtin_task(args.task, seed=args.seed, texts=texts)
        else:
            task = load_task(args.task)
    inputs = CompareInputs(
        data=list(args.data),
        texts=texts,
        general=list(args.general),
        text_field=args.text_field,
        terms=list(args.terms),
        task=task,
        shots=sorted(set(args.shots)),
        limit=args.limit,
        seed=args.seed,
        batch_size=args.batch_size,
        speed_prompt_tokens=args.speed_prompt_tokens,
        speed_new_tokens=args.speed_new_tokens,
    )
    report = compare(args.checkpoints, inputs, law, args.budget_hours, show_progress=not args.quiet)
    if args.out:
        write_outputs(args.out, report)
        report["out"] = str(args.out)
    if args.json:
        print_json(report)
        return 0
    for line in table_lines(report):
        print(line)
    if args.out:
        print(f"\nwrote {args.out}/compare.json and compare.png", file=sys.stderr)
    return 0


# --------------------------------------------------------------------------- printing


def _si(x: float | None, unit: str = "") -> str:
    if x is None:
        return "-"
    for div, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= div:
            return f"{x / div:.3g}{suffix}{unit}"
    return f"{x:.3g}{unit}"


FITS = ("inference_fits", "inference_int8_fits", "train_fits")


def _flops(x: float | None) -> str:
    return "-" if x is None else f"{x:.2g}"


def _gb_cell(b: float | None) -> str:
    return "-" if b is None else f"{b / 1e9:.2f}"


def _hours_cell(h: float | None) -> str:
    if h is None:
        return "-"
    return f"{h * 3600:.0f}s" if h < 1 / 60 else f"{h * 60:.0f}min" if h < 1 else f"{h:.3g}h"


def row_cells(r: dict[str, Any], shots: list[int]) -> list[str]:
    """One row of the table, as printed (the JSON holds the same figures unrounded)."""
    if r.get("error"):
        return [str(r["name"]), f"error ({r.get('failed_at', 'loading')}): {r['error']}"]
    mem, sp, fe, sc = r.get("memory") or {}, r.get("speed") or {}, r.get("fertility") or {}, r.get("scratch") or {}
    bpb, gen = r.get("bits_per_byte"), r.get("general_bits_per_byte")
    cells = [
        str(r["name"]),
        str(r["family"]),
        _si(r["params"]),
        str(r["context"]),
        f"{r.get('tokenizer_kind') or '?'} {r.get('vocab_size') or '?'}",
        f"{r.get('license') or '-'}" + (f" ({r['base_model']})" if r.get("base_model") else ""),
        "-" if bpb is None else f"{bpb:.4f}",
        "-" if gen is None else f"{gen:.4f}",
        "-" if fe.get("tokens_per_word") is None else f"{fe['tokens_per_word']:.2f}",
    ]
    task = r.get("task")
    if shots:
        by_k = {x["shots"]: x for x in (task or {}).get("results", [])}
        for k in shots:
            x = by_k.get(k)
            if task and task.get("status") != "ok":
                cells.append(str(task["status"]))
            else:
                cells.append("-" if x is None else f"{x['value']:.2f} [{x['ci_low']:.2f},{x['ci_high']:.2f}]")
    tps = sp.get("prompt_tokens_per_s"), sp.get("generated_tokens_per_s")
    cells += [
        "-" if tps[0] is None else f"{tps[0]:,.0f}",
        "-" if tps[1] is None else f"{tps[1]:,.1f}",
        f"{_gb_cell(mem.get('inference_bytes'))} {mem.get('format', '')}".strip(),
        _gb_cell(mem.get("inference_int8_bytes")),
        _gb_cell(mem.get("train_bytes")),
        "/".join("-" if mem.get(k) is None else "yes" if mem[k] else "no" for k in FITS),
        "unreachable"
        if sc and not sc.get("reachable")
        else f"{_flops(sc.get('flops'))} / {_hours_cell(sc.get('hours'))}",
    ]
    return cells


def table_lines(report: dict[str, Any]) -> list[str]:
    """The table, the terms' splits, the notes and the verdict, as printed."""
    shots = list(report.get("shots") or [])
    head = ["model", "family", "params", "ctx", "tokenizer", "license (base)", "bpb", "bpb gen", "tok/word"]
    head += [f"acc {k}-shot [95%]" for k in shots]
    head += ["prompt tok/s", "gen tok/s", "run GB", "int8 GB", "train GB", "fits run/int8/train"]
    head += ["scratch FLOPs / time"]
    rows = [row_cells(r, shots) for r in report["models"]]
    full = [c for c in rows if len(c) == len(head)]
    widths = [max(len(h), *(len(c[i]) for c in full)) if full else len(h) for i, h in enumerate(head)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths)).rstrip()]
    for c in rows:
        lines.append("  ".join(x.ljust(w) for x, w in zip(c, widths)).rstrip() if len(c) == len(head) else "  ".join(c))
    avail = report["machine"].get("available_bytes")
    lines.append(
        f"(bpb: bits per byte on --data{', bpb gen: on --general' if report.get('general') else ''}; GB: memory "
        "to run at the checkpoint's precision, at int8, and to continue pre-training (lmkit plan --gpu here); "
        + (f"fits: within the {avail / 1e9:.1f} GB available here)" if avail else "fits: unknown here)")
    )
    terms = [(r["name"], (r.get("fertility") or {}).get("terms") or []) for r in report["models"] if not r.get("error")]
    if report.get("terms") and terms:
        lines.append("\nhow your terms split:")
        for name, ts in terms:
            lines.append(f"  {name}: " + "; ".join(f"{t['term']} = {'|'.join(t['tokens'])}" for t in ts))
    lines.append("")
    lines += [f"note: {n}" for n in report["notes"]]
    lines.append("\nverdict:")
    lines += [f"  {v}" for v in report["verdict"]["lines"]]
    return lines
