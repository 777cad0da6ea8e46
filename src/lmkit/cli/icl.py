"""The ``lmkit icl`` command: zero-, one- and few-shot prompting of a checkpoint (or a server), measured.

Flags, the runner and the printing; the prompts are :mod:`lmkit.lab.icl.prompts`, the tasks
:mod:`lmkit.lab.icl.tasks`, the scoring :mod:`lmkit.lab.icl.score`, the models
:mod:`lmkit.lab.icl.models` and the run and its files :mod:`lmkit.lab.icl.run` (imported inside the
runner so that ``lmkit --help`` stays instant).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from lmkit.cli.common import (
    add_checkpoint,
    add_device,
    add_json,
    add_no_verify,
    add_out,
    add_overwrite,
    add_seed,
    device_from,
    print_json,
)
from lmkit.errors import LmkitError

DESCRIPTION = """\
Measure in-context learning: how well a model answers a task from the prompt alone, with no
example (zero-shot), one (one-shot) or several (few-shot) completed examples ("exemplars")
written before the question. No weights change. Large models do well zero-shot; small ones gain
from examples; past a handful of examples fine-tuning (`lmkit finetune-head`) is the better route.

The prompt of a k-shot query (see it with --show-prompt):
  <instruction><sep><template(x1)><delim><y1><sep> ... <sep><template(xk)><delim><yk><sep><template(query)>
template defaults to "{input}\\nAnswer:", delim to " " and sep to "\\n\\n". Exemplars come from the
task's train split, else from the rest of the file (never the query itself), drawn by a generator
seeded by (--seed, the example's index): the same example gets the same prompt in every run, at
every --batch-size and under every --limit, and the 2-shot exemplars are the first 2 of the 4-shot
ones. When the prompt with k exemplars plus the longest answer in tokens (multiple choice: every
choice is counted; free-form: --max-new-tokens) does not fit in the context window, the last-drawn
exemplars are dropped (the query is never cut); the table says how many fitted.

Scoring. Multiple choice ({"input", "choices", "label"}): the log-likelihood of each choice after
the prompt, tokenised as the whole prompt + choice and split at the token boundary:
  acc         the choice with the largest summed log-probability
  acc_norm    largest log-probability per character (long choices are not penalised)
  calibrated  largest P(choice | prompt) / P(choice | "Answer:") (GPT-3: removes the model's
              prior preference for some answers)
Free-form ({"input", "target"}): greedy generation until the separator, exact_match. Every number
comes with a bootstrap 95% interval (1,000 resamples of the examples); chance is printed below.

TASK is a JSONL file, with an optional YAML of the same name beside it holding instruction,
template, target_delimiter, separator, calibration_context, stop, max_new_tokens and train (a JSONL
of exemplars); records with "split": "train" are exemplars too. Or a built-in task:
  copy-pairs     "kc vd ka vb kc" -> "vd" (4 choices): copying from context (induction); many
                 random mappings, each query shown other queries of its own mapping
  add2           two-digit addition "12 + 34 =" (free-form)
  reverse        a word backwards "reverse: stone ->" (free-form)
  next-sentence  the true next sentence among 4 (needs --from-text FILES)
  last-word      the last word of a sentence, LAMBADA-style (needs --from-text FILES)

Writes, with --out DIR: samples.jsonl (each example at each shot count: prompt, choices, scores,
prediction, correct), icl.json (the table) and accuracy_vs_shots.png (with the chance line).

examples:
  lmkit icl runs/x --task copy-pairs --shots 0 1 2 4 --out icl-copy
  lmkit icl runs/x --task copy-pairs --shots 0 2 --show-prompt
  lmkit icl runs/x --task qa.jsonl --limit 100 --json
  lmkit icl runs/x --task next-sentence --from-text book.txt --shots 0 1 4
  lmkit icl --server http://127.0.0.1:8000 --task add2 --shots 0 4
  lmkit icl runs/t5 --task qa.jsonl --finetune --out icl-vs-ft
"""


def _unescape(value: str | None) -> str | None:
    """``\\n`` and ``\\t`` typed on a command line as the characters they name."""
    if value is None:
        return None
    return value.replace("\\n", "\n").replace("\\t", "\t")


def add_icl(sub: Any) -> None:
    p = sub.add_parser(
        "icl",
        help="zero-, one- and few-shot prompting measured: accuracy against the number of examples in the prompt",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=DESCRIPTION,
    )
    add_checkpoint(p, "decoder or encoder-decoder checkpoint folder", "; not with --server", optional=True)
    p.add_argument("--task", required=True, help="a JSONL file of labelled examples, or a built-in task name")
    p.add_argument(
        "--shots", type=int, nargs="+", default=[0, 1, 2, 4, 8], help="numbers of exemplars to try (default 0 1 2 4 8)"
    )
    add_seed(p, 1234, "the exemplar draw and of the bootstrap")
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N examples")
    p.add_argument("--n-examples", type=int, default=200, help="examples a built-in task makes (default 200)")
    p.add_argument(
        "--from-text",
        nargs="+",
        default=None,
        metavar="FILE",
        help="text files (or folders) next-sentence and last-word are made from",
    )
    p.add_argument("--instruction", default=None, help="text before the exemplars (\\n for a newline)")
    p.add_argument("--template", default=None, help="how an example's input is written; must hold {input}")
    p.add_argument("--target-delimiter", default=None, help='between an example and its answer (default " ")')
    p.add_argument("--separator", default=None, help="between examples; ends a free-form answer (default \\n\\n)")
    p.add_argument("--max-new-tokens", type=int, default=None, help="longest free-form answer in tokens (default 16)")
    p.add_argument(
        "--show-prompt",
        action="store_true",
        help="print the prompts of one example (--example) at each --shots and stop; nothing is scored",
    )
    p.add_argument("--example", type=int, default=0, help="with --show-prompt: which example (default 0)")
    p.add_argument(
        "--batch-size", type=int, default=8, help="sequences scored together (speed only: the numbers do not change)"
    )
    p.add_argument(
        "--server",
        default=None,
        metavar="URL",
        help="score through an OpenAI-compatible completions endpoint (e.g. `lmkit serve`) instead "
        "of a checkpoint; it must support echo with logprobs",
    )
    p.add_argument("--model", default=None, help="with --server: the model name to ask for (default: its first)")
    p.add_argument("--api-key", default=None, help="with --server: sent as Authorization: Bearer KEY")
    p.add_argument(
        "--finetune",
        action="store_true",
        help="encoder or encoder-decoder checkpoint: also fine-tune it on the task's labelled examples "
        "(as `lmkit finetune-head`) and report that accuracy beside the prompting",
    )
    p.add_argument(
        "--write-pretraining-text",
        default=None,
        metavar="FILE",
        help="with --task copy-pairs: write a synthetic pre-training corpus of the task's world "
        "(--lines documents, each a fresh mapping's key-value pairs then repeats of them) and "
        "stop; pre-train a decoder on it to see shots help (no checkpoint needed)",
    )
    p.add_argument("--lines", type=int, default=30000, help="documents --write-pretraining-text writes (default 30000)")
    add_out(p, "folder for samples.jsonl, icl.json and accuracy_vs_shots.png")
    add_overwrite(
        p,
        "a previous `lmkit icl` output in --out, or a --write-pretraining-text file lmkit wrote",
        "a folder holding other files, nor a file lmkit did not write",
    )
    add_device(p)
    add_json(p, "icl.json's report as JSON")
    add_no_verify(p)
    p.set_defaults(func=_run_icl)


def _check(args: argparse.Namespace) -> list[int]:
    if (args.checkpoint is None) == (args.server is None):
        raise LmkitError("give a CHECKPOINT or --server URL (one of them)")
    if args.server and args.finetune:
        raise LmkitError("--finetune trains a checkpoint; it cannot be used with --server")
    shots = sorted(set(args.shots))
    if shots[0] < 0:
        raise LmkitError(f"--shots must be 0 or more, got {shots[0]}")
    for name in ("limit", "n_examples", "batch_size", "max_new_tokens"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise LmkitError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    return shots


def _task(args: argparse.Namespace) -> Any:
    from pathlib import Path

    from lmkit.lab.icl.tasks import BUILTIN, builtin_task, format_from_dict, load_task

    flags = {
        "instruction": _unescape(args.instruction),
        "template": _unescape(args.template),
        "target_delimiter": _unescape(args.target_delimiter),
        "separator": _unescape(args.separator),
        "max_new_tokens": args.max_new_tokens,
    }
    if args.task in BUILTIN and not Path(args.task).is_file():
        texts = None
        if args.from_text:
            from lmkit.data.read import iter_documents

            texts = [d.text for d in iter_documents(args.from_text)]
        task = builtin_task(args.task, args.n_examples, args.seed, texts)
        task.format = format_from_dict(flags, task.format, "flags")
        return task
    if args.from_text:
        raise LmkitError(
            f"--from-text makes the built-in tasks next-sentence and last-word; --task {args.task} is a file"
        )
    return load_task(args.task, flags)


def _lm(args: argparse.Namespace) -> Any:
    from lmkit.lab.icl.models import LocalLM, ServerLM

    if args.server:
        return ServerLM(args.server, args.model, args.api_key, args.batch_size)
    from lmkit.models.checkpoint import load_model, load_model_config, load_tokenizer
    from lmkit.models.registry import spec_of

    if not spec_of(load_model_config(args.checkpoint).family).generates:
        raise LmkitError(
            f"{args.checkpoint} is an encoder (masked language model): it does not continue a prompt; "
            "use `lmkit fill-mask` to query it, or `lmkit finetune-head` to train it on the labelled "
            "set"
        )
    lm = LocalLM(
        load_model(args.checkpoint, device=device_from(args)), load_tokenizer(args.checkpoint), args.batch_size
    )
    lm.name = str(args.checkpoint)
    return lm


def _show_prompts(lm: Any, task: Any, shots: list[int], args: argparse.Namespace) -> int:
    from lmkit.lab.icl.prompts import build_prompt, continuation
    from lmkit.lab.icl.run import fits_for

    if not 0 <= args.example < len(task.examples):
        raise LmkitError(f"--example {args.example}: the task has examples 0..{len(task.examples) - 1}")
    ex = task.examples[args.example]
    fits = fits_for(lm, task)
    for k in shots:
        p = build_prompt(task, args.example, k, args.seed, fits)
        cut = f", {p.shots} fitted in the window of {lm.window}" if p.shots < k else ""
        print(f"----- {k}-shot prompt of example {args.example} (exemplars {list(p.exemplars)}{cut}) -----")
        print(p.text)
        answers = ex.choices if ex.choices else (ex.target,)
        print(
            "----- scored continuations: "
            + ", ".join(repr(continuation(task.format, a)) for a in answers)
            + (f" (right: {ex.label})" if ex.choices else "")
            + " -----\n"
        )
    return 0


def _write_pretraining_text(args: argparse.Namespace) -> int:
    """``--write-pretraining-text FILE``: the copy-pairs world as a text corpus."""
    from lmkit.lab.icl.tasks import write_copy_pairs_text

    if args.task != "copy-pairs":
        raise LmkitError(f"--write-pretraining-text writes the copy-pairs world; --task is {args.task}")
    chars = write_copy_pairs_text(args.write_pretraining_text, args.lines, args.seed, args.overwrite)
    print(
        f"wrote {args.lines:,} copy-pairs documents ({chars:,} characters) to {args.write_pretraining_text}",
        file=sys.stderr,
    )
    return 0


def _run_icl(args: argparse.Namespace) -> int:
    """``lmkit icl CKPT --task TASK [--shots ...]``: accuracy at each number of shots."""
    if args.write_pretraining_text:
        return _write_pretraining_text(args)
    shots = _check(args)
    task = _task(args)
    if args.out and not args.show_prompt:
        from lmkit.lab.icl.run import check_out

        check_out(args.out, args.overwrite, task, args.checkpoint, args.from_text or [])
    spec = None
    if args.checkpoint is not None:
        from lmkit.models.checkpoint import load_model_config
        from lmkit.models.registry import spec_of

        spec = spec_of(load_model_config(args.checkpoint).family)
    if args.finetune and spec is not None and not spec.finetune_tasks:
        raise LmkitError(
            "--finetune is for encoder and encoder-decoder checkpoints (what `lmkit finetune-head` "
            "trains); prompt a decoder without it"
        )
    report: dict[str, Any]
    samples: list[dict[str, Any]] = []
    prompting = not (args.finetune and spec is not None and not spec.generates)  # an encoder is only fine-tuned
    if prompting:
        lm = _lm(args)
        if args.show_prompt:
            return _show_prompts(lm, task, shots, args)
        from lmkit.lab.icl.run import run_icl

        report, samples = run_icl(lm, task, shots, args.seed, args.limit, show_progress=sys.stderr.isatty())
    else:
        from lmkit.lab.icl.run import empty_report

        report = empty_report(task, args.checkpoint, args.limit, args.seed)
    if args.finetune:
        from lmkit.lab.icl.finetune import against_prompting, finetune_beside

        ft = finetune_beside(args.checkpoint, task, args.seed, device_from(args), show_progress=sys.stderr.isatty())
        report["finetune"] = against_prompting(ft, report)
    if args.out:
        from lmkit.lab.icl.run import write_outputs

        write_outputs(args.out, report, samples)
        report["out"] = str(args.out)
    if args.json:
        print_json(report)
        return 0
    from lmkit.lab.icl.run import table_rows

    print(
        f"{report['task']}: {report['n_examples']} examples, {report['kind'].replace('_', ' ')}, model "
        f"{report['model']} (window {report['window']}), seed {report['seed']}"
    )
    for line in table_rows(report):
        print("  " + line)
    if args.out:
        print(f"wrote {args.out}/samples.jsonl, icl.json, accuracy_vs_shots.png")
    return 0
