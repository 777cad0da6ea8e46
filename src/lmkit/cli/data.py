"""The data commands: ``curate``, ``mix`` and ``tokenizer train|stats``.

Each command has an ``add_<name>(sub)`` that declares its flags, with help that teaches, and a runner.
"""

from __future__ import annotations

import argparse
from typing import Any


def add_tokenizer(sub: Any) -> None:
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


def add_curate(sub: Any) -> None:
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


def add_mix(sub: Any) -> None:
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

