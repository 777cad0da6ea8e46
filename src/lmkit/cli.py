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


# --------------------------------------------------------------------------- parser and main

ADDERS: tuple[Callable[[Any], None], ...] = (
    _add_tokenizer,
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
