"""The data commands: ``curate``, ``mix`` and ``tokenizer train|stats``.

Each command has an ``add_<name>(sub)`` that declares its flags, with help that teaches, and a
``_run_<name>(args)`` runner that calls the domain functions (:mod:`lmkit.tokenizer`,
:mod:`lmkit.data.curate`, :mod:`lmkit.data.mix`) and prints the result; the heavy modules are
imported inside the runners so that ``lmkit --help`` stays instant. Where output goes and how it
is checked belongs to those modules (:func:`lmkit.tokenizer.check_tokenizer_out`,
:func:`lmkit.data.curate.cluster.dask_client`), not to the runners.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Iterator, Sequence
from typing import Any

from lmkit.cli.common import add_json, add_out, add_overwrite, add_seed, add_text_field, add_token_counter, print_json
from lmkit.errors import LmkitError
from lmkit.plan.units import parse_count


def add_tokenizer(sub: Any) -> None:
    p = sub.add_parser("tokenizer", help="train a byte-level BPE tokenizer and inspect how it splits words")
    tsub = p.add_subparsers(dest="tokenizer_command", required=True, metavar="ACTION")
    t = tsub.add_parser(
        "train",
        help="train a tokenizer on text files/folders",
        description="Train a byte-level BPE tokenizer (Hugging Face `tokenizers`) with the "
        "special tokens all three model families need: <pad>, <s>, </s>, <unk>, "
        "[MASK] and 100 sentinels <extra_id_0..99>. Writes DIR/tokenizer.json, and beside "
        "it .tokenizer.json.lmkit-sha256, the stamp by which --overwrite knows "
        "lmkit wrote it.",
    )
    t.add_argument("data", nargs="+", help="text/jsonl/parquet files (optionally .gz/.zst) or folders")
    t.add_argument("--vocab-size", type=int, default=8192, help="vocabulary size (default 8192)")
    add_out(t, "output folder for tokenizer.json (or a file name ending in .json)", required=True)
    add_text_field(t)
    t.add_argument("--min-frequency", type=int, default=2, help="ignore merges seen fewer times")
    t.add_argument("--max-docs", type=int, default=None, help="train on at most this many documents")
    t.add_argument("--lenient", action="store_true", help="skip unreadable files (reported) instead of stopping")
    add_overwrite(t, "a tokenizer this command wrote before", "another file")
    t.set_defaults(func=_run_tokenizer_train)
    s = tsub.add_parser(
        "stats",
        help="fertility (tokens per word) and how chosen words are split",
        description="Report a tokenizer's fertility (tokens per word) and bytes per token on "
        "a text sample, and how each word you list is split. With --compare, the "
        "same figures for a second tokenizer side by side (e.g. a domain tokenizer "
        "against a general one).",
    )
    s.add_argument("tokenizer", help="tokenizer.json or a folder/checkpoint holding one")
    s.add_argument("--data", nargs="*", default=[], help="text to measure fertility on")
    s.add_argument("--words", nargs="*", default=[], help="words or phrases to show split, e.g. 'mens rea'")
    s.add_argument("--compare", default=None, help="a second tokenizer to compare against")
    add_text_field(s)
    s.add_argument("--max-docs", type=int, default=2000, help="documents sampled for fertility")
    add_json(s)
    s.set_defaults(func=_run_tokenizer_stats)


def _progress_docs(
    paths: Sequence[str], text_field: str, lenient: bool, max_docs: int | None, report: Any, desc: str
) -> Iterator[str]:
    from lmkit.data.read import iter_documents
    from lmkit.progress import progress

    bar = progress(desc=desc, unit=" docs", mininterval=0.5)
    nbytes = 0
    try:
        for i, doc in enumerate(iter_documents(paths, text_field=text_field, lenient=lenient, report=report)):
            if max_docs is not None and i >= max_docs:
                break
            nbytes += len(doc.text)
            bar.update(1)
            if bar.n % 64 == 0:
                bar.set_postfix_str(f"{nbytes / 1e6:.1f} M chars", refresh=False)
            yield doc.text
    finally:
        bar.set_postfix_str(f"{nbytes / 1e6:.1f} M chars")
        bar.close()


def _check_max_docs(args: argparse.Namespace) -> None:
    if args.max_docs is not None and args.max_docs <= 0:
        raise LmkitError(f"--max-docs must be positive, got {args.max_docs}")


def _run_tokenizer_train(args: argparse.Namespace) -> int:
    """``lmkit tokenizer train DATA... --vocab-size N --out DIR``."""
    from lmkit.data.document import ReadReport
    from lmkit.data.read import list_files
    from lmkit.tokenizer import check_tokenizer_out, save_stamped, train_tokenizer

    target = check_tokenizer_out(args.out, args.overwrite, args.data)
    _check_max_docs(args)
    list_files(args.data)  # fail fast on a missing path, before any work
    report = ReadReport()
    t0 = time.time()
    tok = train_tokenizer(
        _progress_docs(args.data, args.text_field, args.lenient, args.max_docs, report, "reading"),
        vocab_size=args.vocab_size,
        min_frequency=args.min_frequency,
        show_progress=sys.stderr.isatty(),
    )
    path = save_stamped(tok, target)
    secs = time.time() - t0
    print(f"read: {report.summary()}")
    print(f"trained byte-level BPE: vocab {tok.vocab_size:,} (asked {args.vocab_size:,}) in {secs:.1f} s")
    if tok.vocab_size < args.vocab_size:
        print(f"  (fewer tokens than asked: the text supports no more merges at --min-frequency {args.min_frequency})")
    print(
        f"special ids: pad={tok.pad_id} bos={tok.bos_id} eos={tok.eos_id} unk={tok.unk_id} "
        f"mask={tok.mask_id} sentinels={tok.sentinel_ids[0]}..{tok.sentinel_ids[-1]}"
    )
    print(f"wrote {path}  (sha256 {tok.sha256[:16]}…)")
    return 0


def _fmt(x: float | None, spec: str = ".3f") -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def _run_tokenizer_stats(args: argparse.Namespace) -> int:
    """``lmkit tokenizer stats TOK [--data ...] [--words ...] [--compare OTHER] [--json]``."""
    from lmkit.data.document import ReadReport
    from lmkit.fertility import tokenizer_stats
    from lmkit.tokenizer import Tokenizer

    _check_max_docs(args)
    tok = Tokenizer.load(args.tokenizer, strict=False)
    other = Tokenizer.load(args.compare, strict=False) if args.compare else None
    texts: list[str] = []
    report = ReadReport()
    if args.data:
        texts = list(_progress_docs(args.data, args.text_field, False, args.max_docs, report, "sampling"))
    words = list(args.words or [])
    if args.data and not texts and not words:
        raise LmkitError(
            f"nothing to measure: --data {' '.join(args.data)} holds no non-empty documents "
            f"({report.summary()}); give other --data and/or --words"
        )
    if not texts and not words:
        raise LmkitError("nothing to measure: give --data FILES for fertility and/or --words for splits")
    results = [tokenizer_stats(tok, args.tokenizer, texts, words)]
    if other is not None:
        results.append(tokenizer_stats(other, args.compare, texts, words))
    if args.json:
        print_json(
            {
                "tokenizer": results[0],
                "compare": results[1] if other else None,
                "data": report.to_dict() if texts else None,
            }
        )
        return 0
    for r in results:
        print(f"{r['path']}: vocab {r['vocab_size']:,}")
        f = r.get("fertility")
        if f:
            print(
                f"  fertility on {f['documents']:,} documents, {f['words']:,} words, {f['bytes'] / 1e6:.2f} MB: "
                f"{_fmt(f['tokens_per_word'])} tokens/word, {_fmt(f['bytes_per_token'], '.2f')} bytes/token, "
                f"{f['tokens']:,} tokens"
            )
    if words:
        print("how words are split (as inside running text, after a space):")
        width = max(len(w) for w in words)
        for i, w in enumerate(words):
            line = f"  {w:<{width}}  " + _split_repr(results[0]["words"][i]["tokens"])
            if other is not None:
                line += "   |   " + _split_repr(results[1]["words"][i]["tokens"])
            print(line)
        if other is not None:
            print(f"  (left: {args.tokenizer}; right: {args.compare})")
    return 0


def _split_repr(pieces: list[str]) -> str:
    shown = ('"' + p.replace("\n", "\\n").replace("\t", "\\t").replace("\r", "\\r") + '"' for p in pieces)
    return f"{len(pieces)} tok: " + " ".join(shown)


def add_curate(sub: Any) -> None:
    p = sub.add_parser(
        "curate",
        help="clean, filter and deduplicate raw text into training documents, with a report",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Curate raw text (txt, jsonl, parquet, a scrape's .warc/.warc.gz, .html, .pdf; .gz/.zst; "
        "folders) into DIR as jsonl.gz shards of {id, text, source, and url, title, language where known} "
        "that `lmkit tokenizer train` and packing read directly.\n\n"
        "Stages, in this order unless --config says otherwise (each can be switched off):\n"
        "  url_filter         pages whose URL is block-listed (domains, words: lmkit/resources/url_blocklist.txt)\n"
        "  extract            HTML to its main text (resiliparse; or --extract.html trafilatura)\n"
        "  normalise          Unicode NFC, control characters, whitespace, mojibake (ftfy)\n"
        "  language           identify the language (py3langid); --languages keeps only those\n"
        "  gopher_quality     word count/length, symbols, bullets, ellipses, letters, stop words\n"
        "  c4                 lines without end punctuation, javascript/policy lines, lorem ipsum, {\n"
        "  gopher_repetition  duplicate lines/paragraphs, top and duplicated n-grams\n"
        "  blocklist          harmful words/phrases above a threshold (replace or extend the list)\n"
        "  pii                e-mails, phone numbers, IP addresses -> <EMAIL>, <PHONE>, <IP_ADDRESS>\n"
        "  exact_dedup        same text up to case and whitespace, across the whole corpus\n"
        "  minhash            near-duplicates (MinHash + LSH), across the whole corpus\n\n"
        "DIR/report.json and DIR/report.md give documents, characters and tokens in and out of every "
        "stage, the reasons and a few examples of what each removed, and unreadable files/lines "
        "(skipped and counted, with line numbers), documents per language, and a warning (also "
        "printed) when one rule removes most of one source, naming the setting that keeps it. The "
        "published thresholds are the defaults; a YAML --config overrides any of them, e.g.\n"
        "  gopher_quality: {min_words: 30}\n  c4: {enabled: false}\n"
        "  blocklist: {extra: [casino bonus], max_fraction: 0.0}\n"
        "  minhash: {bands: 20, num_perm: 120, threshold: 0.8}\n"
        "and so does a dotted flag after the others: --c4.curly_bracket false, --gopher_quality.min_words 30\n\n"
        "A Common Crawl segment is curated the same way, from its WARC files to English and German "
        "text: `lmkit curate CC-MAIN-*.warc.gz --out clean/web --languages en de`.\n\n"
        "examples:\n  lmkit curate scraped/ books.jsonl.gz --out clean/finance --workers 8\n"
        "  lmkit curate scraped/ --out clean/english --languages en --min-language-score 0.8",
    )
    p.add_argument("inputs", nargs="+", metavar="RAW", help="files or folders of raw text")
    add_out(p, "output folder (must be new or empty unless --overwrite)", required=True)
    p.add_argument("--config", default=None, help="curate YAML: stage order, switches and thresholds")
    add_overwrite(p, "a previous curate output in --out")
    p.add_argument(
        "--workers",
        type=int,
        default=0,
        help="processes (default 0 = all cores; 1 = no subprocesses); never more than the cores "
        "or the input's chunks of work",
    )
    add_token_counter(p)
    add_text_field(p, None, shown="the --config's text_field, else text")
    p.add_argument(
        "--languages",
        nargs="+",
        default=None,
        metavar="LANG",
        help="keep only documents identified as these languages (ISO 639-1: en de fr ...); default: keep all",
    )
    p.add_argument(
        "--min-language-score",
        type=float,
        default=None,
        metavar="P",
        help="with --languages, the identifier's probability needed to keep a document (default 0.65)",
    )
    p.add_argument(
        "--dask",
        default=None,
        metavar="ADDRESS",
        help="run the stages on a Dask cluster: a scheduler address (tcp://host:8786) or 'local'",
    )
    add_json(p, "the report as JSON instead of a summary")
    p.set_defaults(func=_run_curate)


def _run_curate(args: argparse.Namespace) -> int:
    """``lmkit curate``: run, print a one-paragraph summary (or the report with --json)."""
    from lmkit.data.curate import curate, load_curate_config
    from lmkit.data.curate.cluster import dask_client

    overrides: dict[str, Any] = dict(getattr(args, "overrides", {}) or {})
    if args.languages:
        overrides["language.languages"] = list(args.languages)
    if args.min_language_score is not None:
        overrides["language.min_score"] = args.min_language_score
    cfg = load_curate_config(args.config, overrides)
    if args.text_field:
        cfg.text_field = args.text_field
    with dask_client(args.dask, args.workers) as client:
        report = curate(
            args.inputs,
            args.out,
            cfg,
            workers=args.workers,
            overwrite=args.overwrite,
            tokenizer=args.tokenizer,
            client=client,
            progress=not args.json,
        )
    if args.json:
        print_json({k: v for k, v in report.items() if k != "config"})
        return 0
    t = report["totals"]
    print(
        f"curated {t['docs_in']:,} documents -> kept {t['docs_out']:,} ({t['docs_kept_pct']:.1f}%), "
        f"tokens {t['tokens_in']:,} -> {t['tokens_out']:,} ({t['tokens_kept_pct']:.1f}%) "
        f"in {report['seconds']:.1f} s ({report['mb_per_s']:.2f} M chars/s)"
    )
    for s in report["stages"]:
        top = ", ".join(f"{k} {v:,}" for k, v in list(s["reasons"].items())[:3])
        print(
            f"  {s['name']:<18} removed {s['removed']:>9,}  kept {s['docs_kept_pct']:6.2f}%"
            + (f"  ({top})" if top else "")
        )
    langs = report["languages"]
    if langs:
        shown = ", ".join(f"{k} {v['docs_out']:,}/{v['docs_in']:,}" for k, v in list(langs.items())[:6])
        print(f"  languages (kept/identified): {shown}" + (f" and {len(langs) - 6} more" if len(langs) > 6 else ""))
    rd = report["read"]
    if rd["skipped_file_count"] or rd["bad_line_count"] or rd["surrogate_docs"] or rd["bad_record_count"]:
        print(
            f"  read problems: {rd['skipped_file_count']} files skipped, {rd['bad_line_count']} bad lines, "
            f"{rd['bad_record_count']} unreadable records or pages, "
            f"{rd['surrogate_docs']} documents with lone surrogates replaced by U+FFFD (see report.md)"
        )
    for w in report["warnings"]:
        print(f"lmkit: warning: {w['message']}", file=sys.stderr)
    print(f"wrote {len(report['output']['shards'])} shards, report.json and report.md to {report['out']}")
    return 0


def add_mix(sub: Any) -> None:
    p = sub.add_parser(
        "mix",
        help="build a training mix in token proportions from curated sources",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Mix curated sources in token proportions (weights are normalised to sum to 1). A source "
        "with too few tokens is up-sampled (documents repeated), one with too many is down-sampled "
        "(a seeded random subset). Without --tokens the mix is the largest one that repeats nothing. "
        "Writes jsonl.gz shards (source = the source's name) and report.json/report.md with the "
        "realised proportions.\n\n"
        "examples (BloombergGPT-style):\n"
        "  lmkit mix clean/finance=51% clean/general=49% --out mix/              the largest mix "
        "that repeats nothing\n"
        "  lmkit mix clean/finance=51% clean/general=49% --out mix-1m/ --tokens 1M   exactly 1M tokens "
        "(up-samples a source that is short)",
    )
    p.add_argument("sources", nargs="+", metavar="SRC=WEIGHT", help="curated folder/file and its weight (0.51 or 51%%)")
    add_out(p, "output folder (must be new or empty unless --overwrite)", required=True)
    p.add_argument("--tokens", default=None, help="total tokens of the mix, e.g. 20M (default: no repeats)")
    add_seed(p, 0, "the sampling")
    add_token_counter(p)
    add_text_field(p)
    add_overwrite(p, "a previous mix in --out")
    add_json(p, "the report as JSON")
    p.set_defaults(func=_run_mix)


def _run_mix(args: argparse.Namespace) -> int:
    """``lmkit mix``: build the mix and print the realised proportions (or JSON with --json)."""
    from lmkit.data.mix import mix, parse_sources

    sources = parse_sources(args.sources)
    total = int(parse_count(args.tokens, "--tokens")) if args.tokens is not None else None
    report = mix(
        sources,
        args.out,
        total,
        seed=args.seed,
        tokenizer=args.tokenizer,
        text_field=args.text_field,
        overwrite=args.overwrite,
        progress=not args.json,
    )
    if args.json:
        print_json(report)
        return 0
    print(f"mix of {report['realised_tokens']:,} tokens ({report['docs']:,} documents) in {report['out']}:")
    for s in report["sources"]:
        print(
            f"  {s['name']:<20} target {100 * s['target_share']:6.2f}%  realised {100 * s['realised_share']:6.2f}%  "
            f"{s['realised_tokens']:>12,} tokens  {s['sampling']} x{s['sampling_factor']:.3f}"
        )
    print(f"tokens counted with {report['token_counter']}")
    return 0
