"""The curation run: chunks of documents go through the per-document stages and the dedup keys
(:mod:`lmkit.data.curate.pipeline`) on worker processes or a Dask cluster, at most a bounded
number of chunks in flight and results in input order; the main process removes duplicates,
writes ``part-NNNNN.jsonl.gz`` shards (:class:`ShardWriter`) and the report (with the warnings of
:func:`lmkit.data.curate.report.source_warnings`, also printed), and publishes the folder in one
step (:func:`curate`). HTML pages travel to the workers unextracted, so extraction runs on every
core. No more worker processes start than there are cores and chunks of work in the input
(:func:`cap_workers`, which says so when it lowers a request).
"""

from __future__ import annotations

import gzip
import itertools
import json
import os
import re
import shutil
import sys
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lmkit import __version__
from lmkit.data.curate.config import DEDUP_STAGES, CurateConfig, config_to_dict
from lmkit.data.curate.pipeline import ChunkResult, DocPipeline, process_chunk
from lmkit.data.curate.report import StageStats, language_table, pct, report_markdown, source_warnings
from lmkit.data.curate.safety import blocklist_terms
from lmkit.data.curate.web import url_blocklist
from lmkit.data.dedup import ExactDeduper, MinHashDeduper
from lmkit.data.document import Document, ReadReport
from lmkit.data.read import iter_documents, list_files
from lmkit.errors import LmkitError
from lmkit.files import check_out_dir, replace_dir

# --------------------------------------------------------------------------- engines


def _chunks(docs: Iterable[Document], max_docs: int, max_chars: int) -> Iterator[list[Document]]:
    chunk: list[Document] = []
    size = 0
    for d in docs:
        chunk.append(d)
        size += len(d.text) if d.html is None else len(d.html)
        if len(chunk) >= max_docs or size >= max_chars:
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk


def bounded_ordered_map(submit: Callable[[Any], Callable[[], Any]], items: Iterable[Any], window: int) -> Iterator[Any]:
    """Results of ``submit(item)()`` in input order, with at most ``window`` items in flight.

    ``submit`` starts the work and returns a function that waits for the result; items are pulled
    from ``items`` only as results are taken, which is what bounds memory.
    """
    pending: deque[Callable[[], Any]] = deque()
    for item in items:
        pending.append(submit(item))
        if len(pending) >= window:
            yield pending.popleft()()
    while pending:
        yield pending.popleft()()


def default_workers() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def cap_workers(requested: int, work: int | None = None, flag: str = "--workers") -> int:
    """How many worker processes to start for ``requested`` (0: one per core): never more than the
    cores (:func:`default_workers`), nor than ``work``, the units of work the input holds when known
    (a process more than either only costs memory). A request lowered is said in one line on stderr."""
    if requested < 0:
        raise LmkitError(f"{flag} must be 0 (one process per core) or more, got {requested}")
    cores = default_workers()
    n = min(requested or cores, cores)
    if work is not None:
        n = max(1, min(n, work))
    if requested > n:
        why = (
            f"the input is {work} chunk{'s' if work != 1 else ''} of work"
            if work is not None and work < cores
            else f"this machine has {cores} core{'s' if cores != 1 else ''}"
        )
        print(f"lmkit: {flag} {requested:,} capped at {n} ({why})", file=sys.stderr)
    return n


# --------------------------------------------------------------------------- output


class ShardWriter:
    """Writes ``part-NNNNN.jsonl.gz`` shards of ``{"id", "text", "source"}`` lines into a folder."""

    def __init__(self, folder: Path, shard_docs: int, shard_chars: int, level: int) -> None:
        self.folder = folder
        self.shard_docs, self.shard_chars, self.level = shard_docs, shard_chars, level
        self.files: list[Path] = []
        self._f: Any = None
        self._docs = 0
        self._chars = 0

    def _open(self) -> None:
        path = self.folder / f"part-{len(self.files):05d}.jsonl.gz"
        self.files.append(path)
        self._f = gzip.open(path, "wb", compresslevel=self.level)
        self._docs = self._chars = 0

    def write(
        self,
        ids: Sequence[str],
        texts: Sequence[str],
        sources: Sequence[str],
        metas: Sequence[dict[str, Any]] | None = None,
    ) -> None:
        """Append documents; ``metas`` adds each one's url, title, language (only the keys it has)."""
        lines: list[str] = []
        for k, (i, t, s) in enumerate(zip(ids, texts, sources)):
            if self._f is None or self._docs >= self.shard_docs or self._chars >= self.shard_chars:
                self._flush(lines)
                lines = []
                if self._f is not None:
                    self._f.close()
                self._open()
            rec = {"id": i, "text": t, "source": s}
            if metas is not None and metas[k]:
                rec.update(metas[k])
            lines.append(json.dumps(rec, ensure_ascii=False))
            self._docs += 1
            self._chars += len(t)
        self._flush(lines)

    def _flush(self, lines: list[str]) -> None:
        if lines:
            self._f.write(("\n".join(lines) + "\n").encode("utf-8", "surrogatepass"))

    def close(self) -> list[Path]:
        """Finish the last shard. A run that kept nothing still writes one (empty) shard, so
        the folder reads as curated data with no documents, not as its report files."""
        if self._f is None and not self.files:
            self._open()
        if self._f is not None:
            self._f.close()
            self._f = None
        return self.files


#: the files a curate or mix output holds; --overwrite (lmkit.files.check_out_dir) replaces nothing else
OUR_FILES = re.compile(r"part-\d{5}\.jsonl\.gz|report\.json|report\.md")


# --------------------------------------------------------------------------- the run


def curate(
    inputs: Sequence[str | Path],
    out: str | Path,
    config: CurateConfig | None = None,
    *,
    workers: int = 0,
    overwrite: bool = False,
    tokenizer: str | None = None,
    client: Any = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Curate ``inputs`` into ``out`` (shards + report.json + report.md); returns the report.

    ``workers``: processes (0 = all cores, 1 = in this process). ``client``: a
    ``dask.distributed.Client`` to run the per-document work on its cluster instead. Raises
    :class:`LmkitError` for an unusable ``out`` or config; unreadable input is reported, not fatal.
    """
    cfg = config if config is not None else CurateConfig()
    cfg.validate()
    out = Path(out).expanduser()
    check_out_dir(out, overwrite, inputs, ours=OUR_FILES, kind="curate/mix output")
    input_bytes = 0  # a missing input is an error before anything starts
    for f in list_files(inputs):
        try:
            input_bytes += f.stat().st_size
        except OSError:
            pass
    # a bad tokenizer or block-list file fails here, not in a worker; the block-list travels with
    # the work (workers on other machines need not see the file), the tokenizer by its path
    terms = blocklist_terms(cfg.blocklist) if "blocklist" in cfg.enabled_stages() else []
    url_lists = url_blocklist(cfg.url_filter) if "url_filter" in cfg.enabled_stages() else {}
    DocPipeline(cfg, tokenizer, terms, url_lists)
    spec = json.dumps(
        {"config": config_to_dict(cfg), "tokenizer": tokenizer, "blocklist": terms, "url_lists": url_lists},
        sort_keys=True,
    )
    enabled = cfg.enabled_stages()
    per_doc = [n for n in enabled if n not in DEDUP_STAGES]
    dedup_order = [n for n in enabled if n in DEDUP_STAGES]
    stats = {n: StageStats(n) for n in enabled}
    exact = ExactDeduper() if "exact_dedup" in enabled else None
    near = MinHashDeduper(cfg.minhash.bands, cfg.minhash.threshold) if "minhash" in enabled else None
    lim, ex_chars = cfg.examples_per_stage, cfg.example_chars

    read_report = ReadReport()
    docs = iter_documents(
        inputs,
        text_field=cfg.text_field,
        lenient=True,
        report=read_report,
        text_doc_chars=cfg.text_doc_chars,
        html_extractor=None,  # HTML is extracted on the workers (the extract stage)
    )
    chunks = _chunks(docs, cfg.chunk_docs, cfg.chunk_chars)

    pool: Any = None
    n_workers = 1
    if client is None:  # as many processes as there are cores and chunks of work, found by reading ahead
        ahead = list(itertools.islice(chunks, default_workers() if workers != 1 else 1))
        n_workers = cap_workers(workers, len(ahead) if len(ahead) < default_workers() else None)
        chunks = itertools.chain(ahead, chunks)
    if client is not None:
        try:
            threads = sum(client.nthreads().values())
        except Exception:  # noqa: BLE001 - any client without nthreads(): assume a few
            threads = 2
        engine = (
            f"dask ({client.scheduler.address if getattr(client, 'scheduler', None) else 'client'}, "
            f"{threads} thread{'s' if threads != 1 else ''})"
        )
        window = 2 * threads + 2

        def submit(chunk: list[Document]) -> Callable[[], ChunkResult]:
            fut = client.submit(process_chunk, spec, chunk, pure=False)
            return fut.result  # type: ignore[no-any-return]
    elif n_workers == 1:
        engine, window = "in-process", 1

        def submit(chunk: list[Document]) -> Callable[[], ChunkResult]:
            r = process_chunk(spec, chunk)
            return lambda: r
    else:
        import multiprocessing as mp

        pool = mp.get_context().Pool(n_workers)
        engine, window = f"{n_workers} processes", 2 * n_workers + 2

        def submit(chunk: list[Document]) -> Callable[[], ChunkResult]:
            return pool.apply_async(process_chunk, (spec, chunk)).get  # type: ignore[no-any-return]

    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    writer = ShardWriter(tmp, cfg.shard_docs, cfg.shard_chars, cfg.compress_level)
    totals: Counter[str] = Counter()
    source_docs: Counter[str] = Counter()
    source_removed: Counter[tuple[str, str, str]] = Counter()
    lang_in: Counter[str] = Counter()
    lang_in_chars: Counter[str] = Counter()
    lang_out: Counter[str] = Counter()
    lang_out_chars: Counter[str] = Counter()
    lang_out_tokens: Counter[str] = Counter()
    t0 = time.perf_counter()
    from lmkit.progress import progress as progress_bar

    # progress over the input: on-disk bytes read (compressed size for .gz/.zst), with the
    # documents seen and the share kept so far
    bar = progress_bar(
        total=input_bytes,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc="curate",
        disable=not progress,
        mininterval=0.5,
    )
    try:
        for res in bounded_ordered_map(submit, chunks, window):
            totals["docs_in"] += res.docs_in
            totals["chars_in"] += res.chars_in
            totals["tokens_in"] += res.tokens_in
            for n in per_doc:
                stats[n].merge(res.stats[n], lim)
            source_docs.update(res.source_docs)
            source_removed.update(res.source_removed)
            lang_in.update(res.language_docs)
            lang_in_chars.update(res.language_chars)
            for src, page, why in res.bad_pages:
                read_report.bad_record(src, 0, f"{page}: {why}")
            keep = np.ones(len(res.ids), dtype=bool)
            for n in dedup_order:
                st = stats[n]
                t_dedup = time.perf_counter()
                idx = np.flatnonzero(keep)
                st.docs_in += idx.size
                st.chars_in += sum(len(res.texts[i]) for i in idx)
                st.tokens_in += int(res.tokens[idx].sum())
                if n == "exact_dedup":
                    assert exact is not None and res.exact_keys is not None
                    dup_local = exact.check(res.exact_keys[idx])
                    reason = "exact_duplicate"
                else:
                    assert near is not None and res.band_keys is not None and res.has_shingles is not None
                    cand = idx[res.has_shingles[idx]]
                    flags = near.check(res.band_keys[cand], res.sigs[cand] if res.sigs is not None else None)
                    dup_local = np.zeros(idx.size, dtype=bool)
                    dup_local[np.searchsorted(idx, cand)] = flags
                    reason = "near_duplicate"
                dups = idx[dup_local]
                keep[dups] = False
                if dups.size:
                    st.reasons[reason] += int(dups.size)
                    for i in dups[:lim]:
                        st.add_example(reason, res.ids[i], res.sources[i], res.texts[i], lim, ex_chars)
                kept = idx[~dup_local]
                st.seconds += res.key_seconds.get(n, 0.0) + time.perf_counter() - t_dedup
                st.docs_out += kept.size
                st.chars_out += sum(len(res.texts[i]) for i in kept)
                st.tokens_out += int(res.tokens[kept].sum())
            kept_idx = np.flatnonzero(keep).tolist()
            writer.write(
                [res.ids[i] for i in kept_idx],
                [res.texts[i] for i in kept_idx],
                [res.sources[i] for i in kept_idx],
                [res.metas[i] for i in kept_idx],
            )
            for i in kept_idx:
                lang = res.metas[i].get("language")
                if lang is not None:
                    lang_out[lang] += 1
                    lang_out_chars[lang] += len(res.texts[i])
                    lang_out_tokens[lang] += int(res.tokens[i])
            totals["docs_out"] += len(kept_idx)
            totals["chars_out"] += sum(len(res.texts[i]) for i in kept_idx)
            totals["tokens_out"] += int(res.tokens[kept_idx].sum()) if kept_idx else 0
            bar.update(min(read_report.bytes_read(), input_bytes) - bar.n)
            bar.set_postfix(
                docs=totals["docs_in"], kept=f"{pct(totals['docs_out'], totals['docs_in']):.1f}%", refresh=False
            )
        files = writer.close()
        bar.update(input_bytes - bar.n)
        bar.close()
        seconds = time.perf_counter() - t0
        report = {
            "lmkit_version": __version__,
            "inputs": [str(p) for p in inputs],
            "out": str(out),
            "engine": engine,
            "token_counter": (
                f"tokenizer {tokenizer}"
                if tokenizer
                else "proxy: regex word tokens \\w+|[^\\w\\s]+ (runs of letters/digits, runs of punctuation)"
            ),
            "totals": {
                "docs_in": totals["docs_in"],
                "docs_out": totals["docs_out"],
                "chars_in": totals["chars_in"],
                "chars_out": totals["chars_out"],
                "tokens_in": totals["tokens_in"],
                "tokens_out": totals["tokens_out"],
                "docs_kept_pct": pct(totals["docs_out"], totals["docs_in"]),
                "chars_kept_pct": pct(totals["chars_out"], totals["chars_in"]),
                "tokens_kept_pct": pct(totals["tokens_out"], totals["tokens_in"]),
                "removed": totals["docs_in"] - totals["docs_out"],
            },
            "stages": [stats[n].to_dict(lim) for n in enabled],
            "languages": language_table(lang_in, lang_in_chars, lang_out, lang_out_chars, lang_out_tokens),
            "warnings": source_warnings(source_docs, source_removed, cfg.warn_source_share),
            "read": read_report.to_dict(),
            "dedup_index": {
                "exact_keys": len(exact.index) if exact else 0,
                "exact_bytes": exact.nbytes if exact else 0,
                "minhash_keys": len(near.index) if near else 0,
                "minhash_bytes": near.nbytes if near else 0,
            },
            "output": {"shards": [f.name for f in files], "format": "jsonl.gz lines of {id, text, source}"},
            "seconds": round(seconds, 3),
            "mb_per_s": round(totals["chars_in"] / 1e6 / seconds, 3) if seconds else 0.0,
            "docs_per_s": round(totals["docs_in"] / seconds, 1) if seconds else 0.0,
            "config": config_to_dict(cfg),
        }
        _write_text(tmp / "report.json", json.dumps(report, indent=2, ensure_ascii=False) + "\n")
        _write_text(tmp / "report.md", report_markdown(report))
        replace_dir(tmp, out)  # the old folder (checked above to hold only OUR_FILES) goes in one step
        return report
    finally:
        bar.close()
        writer.close()
        if pool is not None:
            pool.terminate()
            pool.join()
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _write_text(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")
