"""Throughput of the curation filter chain in lmkit and in datatrove, on the same real text.

The chain: Gopher quality + C4 + Gopher repetition + exact dedup + MinHash dedup (14 bands x 8
rows, word 5-grams). The corpus (~50 MB by default) is built at run time from text every Debian
system has (/usr/share/doc/*/copyright, /usr/share/common-licenses, compressed changelogs) plus,
when installed, python3.11-doc sources, the KJV bible (`bible`), fortunes and the GCIDE
dictionary (dict-gcide). It is written as 8 JSONL files so both tools can use 2 processes.

lmkit runs `lmkit.data.curate.curate` with a like-for-like config (the same five stages; C4 line
by line and the alpha ratio over all tokens, as datatrove does them). datatrove 0.10 runs its
documented multi-stage pipeline (filters -> JSONL, exact dedup in 3 steps, MinHash in 4 steps)
with LocalPipelineExecutor, tasks = workers = 2, in its fastest fair setting: the same regex word
tokenizer passed in as a WordTokenizer instead of spaCy (spaCy is ~4x slower here). Both write
gzip JSONL. Printed: MB/s (UTF-8 input bytes per second), documents/s, the speed ratio, and the
agreement of the kept documents (by id) after the filters and after the whole chain.

    .venv/bin/python benchmarks/curate_speed.py [--mb 50] [--workers 2] [--repeat 3] [--dt-repeat 1] [--chain both]

``--chain warc`` (or ``both``, the default) also runs the WARC-to-curated chain of
``curate_warc.py`` (WARC reader, URL filter, HTML extraction, language ID, Gopher, C4, MinHash) on
WARC files made from this machine's HTML documentation; ``--chain text`` runs only the chain above.

Needs the `bench` extra (datatrove[io,processing], spacy). Others using the CPU make timings
noisy: the lmkit time is the median of --repeat runs, and both tools run in the same session.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import gzip
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from lmkit.data.curate import CurateConfig, count_sentences, curate, words_of
from lmkit.data.read import iter_documents

# --------------------------------------------------------------------------- corpus


def _read(path: str) -> str:
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8", errors="replace") as f:  # type: ignore[operator]
        return f.read()


def _groups(pieces: list[str], size: int, sep: str) -> Iterator[str]:
    buf: list[str] = []
    n = 0
    for p in pieces:
        buf.append(p)
        n += len(p)
        if n >= size:
            yield sep.join(buf)
            buf, n = [], 0
    if buf:
        yield sep.join(buf)


def corpus_sources() -> list[tuple[str, int, Iterator[tuple[str, str]]]]:
    """(name, cap in MB, documents) for every source found on this machine."""

    def copyright_docs() -> Iterator[tuple[str, str]]:
        for f in sorted(glob.glob("/usr/share/doc/*/copyright")):
            yield f"copyright/{Path(f).parent.name}", _read(f)

    def licenses() -> Iterator[tuple[str, str]]:
        for f in sorted(glob.glob("/usr/share/common-licenses/*")):
            if os.path.isfile(f):
                yield f"license/{Path(f).name}", _read(f)

    def python_docs() -> Iterator[tuple[str, str]]:
        for f in sorted(glob.glob("/usr/share/doc/python3*/html/_sources/**/*.rst.txt", recursive=True)):
            for k, part in enumerate(_groups(_read(f).split("\n\n"), 20_000, "\n\n")):
                yield f"pydoc/{Path(f).name}#{k}", part

    def bible() -> Iterator[tuple[str, str]]:
        if not shutil.which("bible"):
            return
        out = subprocess.run(["bible", "-f", "gen1:1-rev22:21"], capture_output=True, text=True).stdout
        chapter: list[str] = []
        key = None
        for line in out.splitlines():
            m = re.match(r"(\S+?)(\d+):\d+ ", line)
            k = m.group(1) + m.group(2) if m else key
            if k != key and chapter:
                yield f"bible/{key}", "\n".join(chapter)
                chapter = []
            key = k
            chapter.append(line)
        if chapter:
            yield f"bible/{key}", "\n".join(chapter)

    def fortunes() -> Iterator[tuple[str, str]]:
        for f in sorted(glob.glob("/usr/share/games/fortunes/*")):
            if os.path.isfile(f) and not f.endswith((".dat", ".u8")):
                for k, part in enumerate(_read(f).split("\n%\n")):
                    if part.strip():
                        yield f"fortune/{Path(f).name}#{k}", part

    def gcide() -> Iterator[tuple[str, str]]:
        f = "/usr/share/dictd/gcide.dict.dz"
        if os.path.exists(f):
            for k, part in enumerate(_groups(_read(f).split("\n\n"), 4_000, "\n\n")):
                yield f"gcide#{k}", part

    def changelogs() -> Iterator[tuple[str, str]]:
        for f in sorted(glob.glob("/usr/share/doc/*/changelog*.gz")):
            for k, part in enumerate(_groups(_read(f).split("\n\n"), 8_000, "\n\n")):
                yield f"changelog/{Path(f).parent.name}/{Path(f).name}#{k}", part

    return [
        ("copyright", 20, copyright_docs()),
        ("licenses", 1, licenses()),
        ("python-doc", 12, python_docs()),
        ("bible", 5, bible()),
        ("fortunes", 3, fortunes()),
        ("gcide", 15, gcide()),
        ("changelogs", 50, changelogs()),
    ]


def build_corpus(folder: Path, target_mb: float, n_files: int = 8) -> dict[str, float]:
    """Write ~target_mb of documents as n_files JSONL files; returns MB per source."""
    folder.mkdir(parents=True)
    files = [open(folder / f"part-{i}.jsonl", "w", encoding="utf-8") for i in range(n_files)]
    total = 0
    per: dict[str, float] = {}
    k = 0
    for name, cap_mb, docs in corpus_sources():
        got = 0
        for doc_id, text in docs:
            if total >= target_mb * 1e6 or got >= cap_mb * 1e6:
                break
            size = len(text.encode("utf-8"))
            files[k % n_files].write(json.dumps({"id": doc_id, "text": text}) + "\n")
            k += 1
            got += size
            total += size
        if got:
            per[name] = got / 1e6
    for f in files:
        f.close()
    return per


# --------------------------------------------------------------------------- lmkit


def lmkit_config(filters_only: bool = False) -> CurateConfig:
    """The same chain as the datatrove pipeline below, with datatrove's readings of the rules."""
    cfg = CurateConfig()
    cfg.order = ["gopher_quality", "c4", "gopher_repetition"] + ([] if filters_only else ["exact_dedup", "minhash"])
    cfg.c4.paragraph_aware = False  # datatrove judges C4 line by line
    cfg.gopher_quality.alpha_ratio_of = "tokens"  # datatrove counts punctuation tokens in the alpha ratio
    cfg.gopher_quality.stop_words_case_sensitive = True  # datatrove compares stop words as written
    return cfg


def run_lmkit(corpus: Path, out: Path, workers: int, cfg: CurateConfig) -> tuple[float, dict]:
    if out.exists():
        shutil.rmtree(out)
    t0 = time.perf_counter()
    rep = curate([corpus], out, cfg, workers=workers, progress=False)
    return time.perf_counter() - t0, rep


def kept_ids(folder: Path) -> set[str]:
    return {d.id for d in iter_documents([folder], lenient=True)}


# --------------------------------------------------------------------------- datatrove


def _datatrove_tokenizer():  # noqa: ANN202 - the class is built lazily: datatrove is optional
    from datatrove.utils.word_tokenizers import WordTokenizer

    class RegexTokenizer(WordTokenizer):
        """lmkit's regex words and sentence ends, handed to datatrove instead of spaCy."""

        def word_tokenize(self, text: str) -> list[str]:
            return words_of(text)

        def sent_tokenize(self, text: str) -> list[str]:
            return [text[a:b] for a, b in self.span_tokenize(text)]

        def span_tokenize(self, text: str) -> list[tuple[int, int]]:
            n = count_sentences(text)
            ends = [m.end() for m in re.finditer(r"[.!?…]+[\"'”’)\]]*(?=\s|$)", text)][:n]
            if len(ends) < n:
                ends = [len(text)]
            ends[-1] = len(text)
            starts = [0] + ends[:-1]
            return list(zip(starts, ends))

    return RegexTokenizer("en")


@contextlib.contextmanager
def _output_to(path: Path) -> Iterator[None]:
    """Send this process's (and its children's) stdout and stderr to a file, at the fd level."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(path, "ab") as f:
        os.dup2(f.fileno(), 1)
        os.dup2(f.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def normalised_text(doc) -> str:  # noqa: ANN001 - a datatrove Document
    """Exact-dedup content: lower-cased, whitespace runs made one space (as lmkit's exact_key)."""
    return " ".join(doc.text.lower().split())


def run_datatrove(corpus: Path, work: Path, workers: int) -> tuple[dict[str, float], Path, Path]:
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup import (
        ExactDedupConfig,
        ExactDedupFilter,
        ExactDedupSignature,
        ExactFindDedups,
        MinhashConfig,
        MinhashDedupBuckets,
        MinhashDedupCluster,
        MinhashDedupFilter,
        MinhashDedupSignature,
    )
    from datatrove.pipeline.filters import C4QualityFilter, GopherQualityFilter, GopherRepetitionFilter
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter

    if work.exists():
        shutil.rmtree(work)
    tok = _datatrove_tokenizer()
    tasks = len(list(corpus.glob("*.jsonl")))
    times: dict[str, float] = {}

    def run(name: str, pipeline: list, n_tasks: int) -> None:
        ex = LocalPipelineExecutor(
            pipeline=pipeline, tasks=n_tasks, workers=min(workers, n_tasks), logging_dir=str(work / "logs" / name)
        )
        t0 = time.perf_counter()
        with _output_to(work / "datatrove.log"):  # datatrove prints its stats tables
            ex.run()
        times[name] = time.perf_counter() - t0

    filtered, exact_out, final = work / "filtered", work / "exact", work / "final"
    run(
        "filters",
        [
            JsonlReader(str(corpus), glob_pattern="*.jsonl"),
            GopherQualityFilter(language=tok),
            C4QualityFilter(language=tok),
            GopherRepetitionFilter(language=tok),
            JsonlWriter(str(filtered)),
        ],
        tasks,
    )
    ecfg = ExactDedupConfig(content_getter=normalised_text)
    run("exact signatures", [JsonlReader(str(filtered)), ExactDedupSignature(str(work / "esig"), ecfg)], tasks)
    run("exact find", [ExactFindDedups(str(work / "esig"), str(work / "edup"), ecfg)], 1)
    run(
        "exact filter",
        [JsonlReader(str(filtered)), ExactDedupFilter(str(work / "edup"), ecfg), JsonlWriter(str(exact_out))],
        tasks,
    )
    mcfg = MinhashConfig()  # 5-grams, 14 buckets x 8 hashes
    run(
        "minhash signatures",
        [JsonlReader(str(exact_out)), MinhashDedupSignature(str(work / "msig"), mcfg, language=tok)],
        tasks,
    )
    run(
        "minhash buckets", [MinhashDedupBuckets(str(work / "msig"), str(work / "mbuck"), config=mcfg)], mcfg.num_buckets
    )
    run("minhash cluster", [MinhashDedupCluster(str(work / "mbuck"), str(work / "mrem"), config=mcfg)], 1)
    run(
        "minhash filter",
        [JsonlReader(str(exact_out)), MinhashDedupFilter(str(work / "mrem")), JsonlWriter(str(final))],
        tasks,
    )
    return times, filtered, final


# --------------------------------------------------------------------------- main


def agreement(a: set[str], b: set[str]) -> str:
    both = len(a & b)
    union = len(a | b)
    return (
        f"{100 * both / union if union else 100:.2f}% of the union kept by both "
        f"(lmkit {len(a):,}, datatrove {len(b):,}, only lmkit {len(a - b):,}, only datatrove {len(b - a):,})"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mb", type=float, default=50.0, help="corpus size in MB (default 50)")
    ap.add_argument("--workers", type=int, default=2, help="processes for both tools (default 2)")
    ap.add_argument("--repeat", type=int, default=3, help="lmkit runs (median reported)")
    ap.add_argument("--dt-repeat", type=int, default=1, help="datatrove runs (median reported; ~2-3 min each)")
    ap.add_argument("--work", default=None, help="working folder (default: a temporary one, removed)")
    ap.add_argument("--chain", choices=["text", "warc", "both"], default="both", help="which chains to run")
    args = ap.parse_args()

    try:
        from loguru import logger

        logger.remove()
        logger.add(sys.stderr, level="WARNING")
    except ImportError:
        pass

    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="curate-bench-"))
    try:
        if args.chain in ("text", "both"):
            text_chain(args, work)
        if args.chain in ("warc", "both"):
            from curate_warc import main_warc

            main_warc(work, args.workers, _datatrove_tokenizer(), _output_to, agreement)
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    return 0


def text_chain(args: argparse.Namespace, work: Path) -> None:
    """The chain on text: filters, exact and MinHash dedup, lmkit against datatrove."""
    corpus = work / "corpus"
    if corpus.exists():
        shutil.rmtree(corpus)
    per = build_corpus(corpus, args.mb)
    mb = sum(per.values())
    n_docs = sum(1 for _ in iter_documents([corpus]))
    print(f"corpus: {mb:.1f} MB, {n_docs:,} documents ({', '.join(f'{k} {v:.1f} MB' for k, v in per.items())})")
    print(
        f"cores: {os.cpu_count()}, workers: {args.workers}; load average before: "
        f"{', '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )

    lm_times = []
    rep: dict = {}
    for _ in range(args.repeat):
        t, rep = run_lmkit(corpus, work / "lmkit", args.workers, lmkit_config())
        lm_times.append(t)
    t_lm = statistics.median(lm_times)
    tf_lm, rep_f = run_lmkit(corpus, work / "lmkit-filters", args.workers, lmkit_config(filters_only=True))
    td_lm, rep_d = run_lmkit(corpus, work / "lmkit-default", args.workers, CurateConfig())

    dt_runs = []
    for _ in range(args.dt_repeat):
        times, dt_filtered, dt_final = run_datatrove(corpus, work / "datatrove", args.workers)
        dt_runs.append(times)
    t_dt = statistics.median(sum(r.values()) for r in dt_runs)
    tf_dt = statistics.median(r["filters"] for r in dt_runs)

    print()
    print(f"{'':34s} {'seconds':>8s} {'MB/s':>7s} {'docs/s':>8s}")
    print(
        f"{'lmkit   full chain (median of ' + str(args.repeat) + ')':34s} {t_lm:8.1f} {mb / t_lm:7.2f} "
        f"{n_docs / t_lm:8.0f}   runs: {', '.join(f'{x:.1f}' for x in lm_times)}"
    )
    print(
        f"{'datatrove full chain':34s} {t_dt:8.1f} {mb / t_dt:7.2f} {n_docs / t_dt:8.0f}   "
        + ", ".join(f"{k} {v:.1f}" for k, v in dt_runs[-1].items())
    )
    print(f"{'lmkit   filters only':34s} {tf_lm:8.1f} {mb / tf_lm:7.2f} {n_docs / tf_lm:8.0f}")
    print(f"{'datatrove filters only':34s} {tf_dt:8.1f} {mb / tf_dt:7.2f} {n_docs / tf_dt:8.0f}")
    print(
        f"{f'lmkit   default config ({len(CurateConfig().enabled_stages())} stages)':34s} {td_lm:8.1f} {mb / td_lm:7.2f} {n_docs / td_lm:8.0f}   "
        f"kept {rep_d['totals']['docs_kept_pct']:.1f}% of documents"
    )
    print()
    print(f"speed ratio, full chain:   lmkit is {t_dt / t_lm:.1f}x datatrove (target >= 3x on 2 cores)")
    print(f"speed ratio, filters only: lmkit is {tf_dt / tf_lm:.1f}x datatrove")
    print(f"agreement after the filters:     {agreement(kept_ids(work / 'lmkit-filters'), kept_ids(dt_filtered))}")
    print(f"agreement after the whole chain: {agreement(kept_ids(work / 'lmkit'), kept_ids(dt_final))}")
    stages = ", ".join(f"{s['name']} -{s['removed']:,}" for s in rep["stages"])
    print(f"lmkit removed per stage: {stages}; kept {rep['totals']['docs_out']:,} documents")
    print(
        f"load average after: {', '.join(f'{x:.2f}' for x in os.getloadavg())} "
        "(others on the machine make the figures noisy)"
    )


if __name__ == "__main__":
    sys.exit(main())
