"""The ``lmkit`` command line: one entry point, each subcommand a thin call into one module.

Every subcommand has a ``_add_<name>(sub)`` function that declares its flags (with help that
teaches) and a runner that imports its module lazily, so ``lmkit --help`` is instant. Errors
about the user's input (``LmkitError``) are printed as one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Callable

from lmkit.errors import LmkitError

DESCRIPTION = """\
lmkit: from raw text to a pre-trained transformer you understand, can measure and can ship.

The usual path:
  lmkit curate RAW... --out clean/          clean and deduplicate scraped text
  lmkit tokenizer train clean/ --out tok/   train a byte-level BPE tokenizer
  lmkit pretrain --config configs/cpu-small.yaml --data clean/ --tokenizer tok/ --out runs/x
  lmkit generate runs/x "Once upon a time"  complete a prompt
  lmkit demo                                all of it on a built-in corpus, in minutes
"""


def _overrides(extra: list[str]) -> dict[str, str]:
    """Turn ``--train.lr 3e-4 --model.d_model=128`` into {"train.lr": "3e-4", ...}."""
    out: dict[str, str] = {}
    i = 0
    while i < len(extra):
        tok = extra[i]
        if not tok.startswith("--") or "." not in tok:
            raise LmkitError(f"unexpected argument {tok!r} (config overrides look like --train.lr 3e-4)")
        key = tok[2:]
        if "=" in key:
            key, value = key.split("=", 1)
            i += 1
        else:
            if i + 1 >= len(extra):
                raise LmkitError(f"override {tok} needs a value")
            value = extra[i + 1]
            i += 2
        out[key.replace("-", "_")] = value
    return out


# --------------------------------------------------------------------------- subcommands


def _add_tokenizer(sub: Any) -> None:
    p = sub.add_parser("tokenizer", help="train a byte-level BPE tokenizer and inspect how it splits words")
    tsub = p.add_subparsers(dest="tokenizer_command", required=True, metavar="ACTION")
    t = tsub.add_parser("train", help="train a tokenizer on text files/folders",
                        description="Train a byte-level BPE tokenizer (Hugging Face `tokenizers`) with the "
                                    "special tokens all three model families need: <pad>, <s>, </s>, <unk>, "
                                    "[MASK] and 100 sentinels <extra_id_0..99>. Writes DIR/tokenizer.json.")
    t.add_argument("data", nargs="+", help="text/jsonl/parquet files (optionally .gz/.zst) or folders")
    t.add_argument("--vocab-size", type=int, default=8192, help="vocabulary size (default 8192)")
    t.add_argument("--out", required=True, help="output folder for tokenizer.json")
    t.add_argument("--text-field", default="text", help="JSONL/Parquet field holding the text")
    t.add_argument("--min-frequency", type=int, default=2, help="ignore merges seen fewer times")
    t.add_argument("--max-docs", type=int, default=None, help="train on at most this many documents")
    t.add_argument("--lenient", action="store_true", help="skip unreadable files (reported) instead of stopping")
    t.add_argument("--overwrite", action="store_true", help="replace an existing tokenizer in --out")
    t.set_defaults(func=_run_tokenizer_train)
    s = tsub.add_parser("stats", help="fertility (tokens per word) and how chosen words are split",
                        description="Report a tokenizer's fertility (tokens per word) and bytes per token on "
                                    "a text sample, and how each word you list is split. With --compare, the "
                                    "same figures for a second tokenizer side by side (e.g. a domain tokenizer "
                                    "against a general one).")
    s.add_argument("tokenizer", help="tokenizer.json or a folder/checkpoint holding one")
    s.add_argument("--data", nargs="*", default=[], help="text to measure fertility on")
    s.add_argument("--words", nargs="*", default=[], help="words or phrases to show split, e.g. 'mens rea'")
    s.add_argument("--compare", default=None, help="a second tokenizer to compare against")
    s.add_argument("--text-field", default="text")
    s.add_argument("--max-docs", type=int, default=2000, help="documents sampled for fertility")
    s.add_argument("--json", action="store_true", help="print one JSON object")
    s.set_defaults(func=_run_tokenizer_stats)


def _run_tokenizer_train(args: argparse.Namespace) -> int:
    from lmkit import tokenizer

    return tokenizer.cli_train(args)


def _run_tokenizer_stats(args: argparse.Namespace) -> int:
    from lmkit import tokenizer

    return tokenizer.cli_stats(args)


def _add_pretrain(sub: Any) -> None:
    p = sub.add_parser(
        "pretrain", help="pre-train a model (any family) on text, from a YAML config",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Pre-train an encoder (masked LM), decoder (causal LM) or encoder-decoder (span "
                    "corruption) as model.family in the config says.\n\n"
                    "Raw text given by --data is tokenised and packed into shards on the first run (a tokenizer "
                    "is trained when --tokenizer is not given). Any config value can be overridden with a dotted "
                    "flag, e.g. --train.lr 1e-3 --model.n_layers 6 --train.precision bf16.\n"
                    "Stop conditions (the first reached ends the run): train.max_steps, train.max_tokens, "
                    "train.max_time (s), train.max_flops, train.tokens_per_param (20 = Chinchilla).\n"
                    "Under torchrun the same command trains on several GPUs/machines "
                    "(train.distributed: ddp | fsdp).\n\n"
                    "example:\n  lmkit pretrain --config configs/cpu-small.yaml --data corpus/ --out runs/small\n"
                    "  torchrun --nproc_per_node 8 -m lmkit.cli pretrain --config configs/gpu-124m.yaml "
                    "--data shards/ --train.distributed fsdp")
    p.add_argument("--config", default=None, help="run config YAML (sections model/train/data); see configs/")
    p.add_argument("--data", nargs="+", default=None, help="training text (files, folders) or a packed shard folder")
    p.add_argument("--tokenizer", default=None, help="tokenizer.json or folder; default: train one on --data")
    p.add_argument("--out", default=None, help="run folder for checkpoints, metrics and plots (default runs/run)")
    p.add_argument("--max-steps", type=int, default=None, help="shortcut for --train.max_steps")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its newest checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the run summary as JSON")
    p.set_defaults(func=_run_pretrain)


def _run_pretrain(args: argparse.Namespace) -> int:
    from lmkit import train

    return train.cli_pretrain(args)


def _add_curate(sub: Any) -> None:
    p = sub.add_parser(
        "curate", help="clean, filter and deduplicate raw text into training documents, with a report",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Curate raw text (txt, jsonl, parquet, .gz/.zst, folders) into DIR as jsonl.gz shards of "
                    "{id, text, source} that `lmkit tokenizer train` and packing read directly.\n\n"
                    "Stages, in this order unless --config says otherwise (each can be switched off):\n"
                    "  normalise          Unicode NFC, control characters, whitespace, mojibake (ftfy)\n"
                    "  gopher_quality     word count/length, symbols, bullets, ellipses, letters, stop words\n"
                    "  c4                 lines without end punctuation, javascript/policy lines, lorem ipsum, {\n"
                    "  gopher_repetition  duplicate lines/paragraphs, top and duplicated n-grams\n"
                    "  blocklist          harmful words/phrases above a threshold (replace or extend the list)\n"
                    "  pii                e-mails, phone numbers, IP addresses -> <EMAIL>, <PHONE>, <IP_ADDRESS>\n"
                    "  exact_dedup        same text up to case and whitespace, across the whole corpus\n"
                    "  minhash            near-duplicates (MinHash + LSH), across the whole corpus\n\n"
                    "DIR/report.json and DIR/report.md give documents, characters and tokens in and out of every "
                    "stage, the reasons and a few examples of what each removed, and unreadable files/lines "
                    "(skipped and counted, with line numbers). The published thresholds are the defaults; a YAML "
                    "--config overrides any of them, e.g.\n"
                    "  gopher_quality: {min_words: 30}\n  c4: {enabled: false}\n"
                    "  blocklist: {extra: [casino bonus], max_fraction: 0.0}\n"
                    "  minhash: {bands: 20, num_perm: 120, threshold: 0.8}\n\n"
                    "example:\n  lmkit curate scraped/ books.jsonl.gz --out clean/ --workers 8")
    p.add_argument("inputs", nargs="+", metavar="RAW", help="files or folders of raw text")
    p.add_argument("--out", required=True, help="output folder (must be new or empty unless --overwrite)")
    p.add_argument("--config", default=None, help="curate YAML: stage order, switches and thresholds")
    p.add_argument("--overwrite", action="store_true", help="replace a previous curate output in --out")
    p.add_argument("--workers", type=int, default=0, help="processes (default 0 = all cores; 1 = no subprocesses)")
    p.add_argument("--tokenizer", default=None,
                   help="count tokens with this tokenizer.json/folder (default: a regex word-token proxy)")
    p.add_argument("--text-field", default=None, help="JSONL/Parquet field holding the text (default text)")
    p.add_argument("--dask", default=None, metavar="ADDRESS",
                   help="run the stages on a Dask cluster: a scheduler address (tcp://host:8786) or 'local'")
    p.add_argument("--json", action="store_true", help="print the report as JSON instead of a summary")
    p.set_defaults(func=_run_curate)


def _run_curate(args: argparse.Namespace) -> int:
    from lmkit.data import curate

    return curate.cli_curate(args)


def _add_mix(sub: Any) -> None:
    p = sub.add_parser(
        "mix", help="build a training mix in token proportions from curated sources",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Mix curated sources in token proportions (weights are normalised to sum to 1). A source "
                    "with too few tokens is up-sampled (documents repeated), one with too many is down-sampled "
                    "(a seeded random subset). Without --tokens the mix is the largest one that repeats nothing. "
                    "Writes jsonl.gz shards (source = the source's name) and report.json/report.md with the "
                    "realised proportions.\n\n"
                    "example (BloombergGPT-style):\n  lmkit mix clean/finance=51% clean/general=49% --out mix/ "
                    "--tokens 20M")
    p.add_argument("sources", nargs="+", metavar="SRC=WEIGHT", help="curated folder/file and its weight (0.51 or 51%%)")
    p.add_argument("--out", required=True, help="output folder (must be new or empty unless --overwrite)")
    p.add_argument("--tokens", default=None, help="total tokens of the mix, e.g. 20M (default: no repeats)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampling (default 0)")
    p.add_argument("--tokenizer", default=None,
                   help="count tokens with this tokenizer.json/folder (default: a regex word-token proxy)")
    p.add_argument("--text-field", default="text", help="JSONL/Parquet field holding the text")
    p.add_argument("--overwrite", action="store_true", help="replace a previous mix in --out")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=_run_mix)


def _run_mix(args: argparse.Namespace) -> int:
    from lmkit.data import mix

    return mix.cli_mix(args)


# --------------------------------------------------------------------------- parser and main

ADDERS: tuple[Callable[[Any], None], ...] = (
    _add_curate,
    _add_mix,
    _add_tokenizer,
    _add_pretrain,
)
# Subcommands whose unknown ``--a.b value`` arguments are config overrides.
TAKES_OVERRIDES = {"pretrain", "demo", "plan"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lmkit", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    from lmkit import __version__

    parser.add_argument("--version", action="version", version=f"lmkit {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in ADDERS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    try:
        if extra:
            if args.command not in TAKES_OVERRIDES:
                parser.error(f"unrecognized arguments: {' '.join(extra)}")
            args.overrides = _overrides(extra)
        elif args.command in TAKES_OVERRIDES:
            args.overrides = {}
        return int(args.func(args) or 0)
    except LmkitError as e:
        print(f"lmkit: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lmkit: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
