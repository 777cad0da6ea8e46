"""The WARC-to-curated chain in lmkit and in datatrove, on the same WARC files made from this machine's
HTML documentation pages (``/usr/share/doc/**/*.html``).

The chain, as FineWeb runs it: read the WARC -> URL filter -> HTML to main text -> language ID
(English at a score >= 0.65) -> Gopher repetition -> Gopher quality -> C4 -> MinHash dedup. Both
tools get the same URL block-list (lmkit's shipped list) and the same language identifier
(py3langid, wrapped as a datatrove filter: datatrove's own LanguageFilter downloads fastText's
model, which this machine cannot), and datatrove's readings of the rules (C4 line by line, the
alpha ratio over all tokens, stop words case-sensitive, the same regex word tokenizer as
``curate_speed.py``). datatrove extracts with trafilatura (its only HTML extractor in FineWeb);
lmkit runs twice: with its default extractor (resiliparse) and with trafilatura at datatrove's
settings. Every record is served under a made-up URL; a few pages are added again under
block-listed URLs so the URL filter has work.

Printed: MB/s of HTML (the records' payload bytes), the throughput ratio, and the agreement of the
kept documents (by WARC-Record-ID). Run through ``curate_speed.py --chain warc`` (or ``both``).
"""

from __future__ import annotations

import glob
import io
import os
import shutil
import time
from pathlib import Path
from typing import Any

from lmkit.data.curate import CurateConfig, curate, identify, url_blocklist
from lmkit.data.read import iter_documents

BLOCKED_HOSTS = ["https://freeporn-videos.example", "https://hot-girls-cams.example/sexy"]


def build_warcs(folder: Path, n_files: int = 4, blocked: int = 12) -> tuple[float, int]:
    """Write the machine's HTML pages as ``n_files`` gzip WARCs; returns (MB of HTML, records)."""
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    folder.mkdir(parents=True)
    files = sorted(f for f in glob.glob("/usr/share/doc/**/*.htm*", recursive=True) if f.endswith((".html", ".htm")))
    pages = [(f"https://docs.example.org{f}", Path(f).read_bytes()) for f in files if os.path.isfile(f)]
    pages += [(f"{BLOCKED_HOSTS[i % 2]}/{i}", pages[i][1]) for i in range(min(blocked, len(pages)))]
    outs = [open(folder / f"crawl-{i}.warc.gz", "wb") for i in range(n_files)]  # noqa: SIM115 - closed below
    writers = [WARCWriter(f, gzip=True) for f in outs]
    for k, (url, body) in enumerate(pages):
        http = StatusAndHeaders("200 OK", [("Content-Type", "text/html; charset=utf-8")], protocol="HTTP/1.1")
        w = writers[k % n_files]
        w.write_record(w.create_warc_record(url, "response", payload=io.BytesIO(body), http_headers=http))
    for f in outs:
        f.close()
    return sum(len(b) for _, b in pages) / 1e6, len(pages)


def lmkit_warc_config(html: str) -> CurateConfig:
    cfg = CurateConfig()
    cfg.order = ["url_filter", "extract", "language", "gopher_repetition", "gopher_quality", "c4", "minhash"]
    cfg.extract.html = html
    cfg.language.languages = ["en"]
    cfg.language.min_score = 0.65
    cfg.c4.paragraph_aware = False  # datatrove's readings of the rules, as in curate_speed.py
    cfg.gopher_quality.alpha_ratio_of = "tokens"
    cfg.gopher_quality.stop_words_case_sensitive = True
    return cfg


def run_lmkit_warc(warcs: Path, out: Path, workers: int, html: str) -> tuple[float, dict[str, Any]]:
    if out.exists():
        shutil.rmtree(out)
    t0 = time.perf_counter()
    rep = curate([warcs], out, lmkit_warc_config(html), workers=workers, progress=False)
    return time.perf_counter() - t0, rep


def _language_filter() -> Any:
    """py3langid as a datatrove filter (English at >= 0.65), built lazily: datatrove is optional."""
    from datatrove.pipeline.filters.base_filter import BaseFilter

    class Py3LangidFilter(BaseFilter):
        name = "py3langid"

        def filter(self, doc: Any) -> bool | tuple[bool, str]:
            label, score = identify(doc.text[: CurateConfig().language.sample_chars])  # as lmkit samples
            doc.metadata["language"], doc.metadata["language_score"] = label, score
            return label == "en" and score >= 0.65

    return Py3LangidFilter()


def run_datatrove_warc(warcs: Path, work: Path, workers: int, tokenizer: Any, quiet: Any) -> tuple[float, Path]:
    """datatrove's chain: the filters in one job, then MinHash in its four steps."""
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup import (
        MinhashConfig,
        MinhashDedupBuckets,
        MinhashDedupCluster,
        MinhashDedupFilter,
        MinhashDedupSignature,
    )
    from datatrove.pipeline.extractors import Trafilatura
    from datatrove.pipeline.filters import C4QualityFilter, GopherQualityFilter, GopherRepetitionFilter, URLFilter
    from datatrove.pipeline.readers import JsonlReader, WarcReader
    from datatrove.pipeline.writers import JsonlWriter

    from lmkit.data.curate import UrlFilterConfig

    if work.exists():
        shutil.rmtree(work)
    lists = url_blocklist(UrlFilterConfig())
    tasks = len(list(warcs.glob("*.warc.gz")))
    total = 0.0

    def run(name: str, pipeline: list[Any], n_tasks: int) -> None:
        nonlocal total
        ex = LocalPipelineExecutor(
            pipeline=pipeline, tasks=n_tasks, workers=min(workers, n_tasks), logging_dir=str(work / "logs" / name)
        )
        t0 = time.perf_counter()
        with quiet(work / "datatrove.log"):
            ex.run()
        total += time.perf_counter() - t0

    filtered, final = work / "filtered", work / "final"
    run(
        "filters",
        [
            WarcReader(str(warcs), glob_pattern="*.warc.gz"),
            URLFilter(
                extra_domains=lists["domain"],
                banned_words=lists["word"],
                banned_subwords=lists["subword"],
                soft_banned_words=lists["soft"],
                use_integrated_lists=False,
            ),
            Trafilatura(favour_precision=True, timeout=10),
            _language_filter(),
            GopherRepetitionFilter(language=tokenizer),
            GopherQualityFilter(language=tokenizer),
            C4QualityFilter(language=tokenizer),
            JsonlWriter(str(filtered)),
        ],
        tasks,
    )
    mcfg = MinhashConfig()
    run(
        "minhash signatures",
        [JsonlReader(str(filtered)), MinhashDedupSignature(str(work / "msig"), mcfg, language=tokenizer)],
        tasks,
    )
    run(
        "minhash buckets", [MinhashDedupBuckets(str(work / "msig"), str(work / "mbuck"), config=mcfg)], mcfg.num_buckets
    )
    run("minhash cluster", [MinhashDedupCluster(str(work / "mbuck"), str(work / "mrem"), config=mcfg)], 1)
    run(
        "minhash filter",
        [JsonlReader(str(filtered)), MinhashDedupFilter(str(work / "mrem")), JsonlWriter(str(final))],
        tasks,
    )
    return total, final


def kept_ids(folder: Path) -> set[str]:
    return {d.id for d in iter_documents([folder], lenient=True)}


def main_warc(work: Path, workers: int, tokenizer: Any, quiet: Any, agreement: Any) -> None:
    warcs = work / "warc"
    if warcs.exists():
        shutil.rmtree(warcs)
    mb, n = build_warcs(warcs)
    print(f"\nWARC chain: {n:,} HTML records, {mb:.1f} MB of HTML in {len(list(warcs.iterdir()))} .warc.gz files")
    t_res, rep_res = run_lmkit_warc(warcs, work / "lmkit-warc", workers, "resiliparse")
    t_traf, rep_traf = run_lmkit_warc(warcs, work / "lmkit-warc-traf", workers, "trafilatura")
    t_dt, dt_final = run_datatrove_warc(warcs, work / "datatrove-warc", workers, tokenizer, quiet)
    print(f"{'':44s} {'seconds':>8s} {'MB/s':>7s} {'records/s':>10s} {'kept':>6s}")
    for name, t, rep in (
        ("lmkit     (resiliparse extraction)", t_res, rep_res),
        ("lmkit     (trafilatura extraction)", t_traf, rep_traf),
        ("datatrove (trafilatura extraction)", t_dt, None),
    ):
        kept = rep["totals"]["docs_out"] if rep else len(kept_ids(dt_final))
        print(f"{name:44s} {t:8.1f} {mb / t:7.2f} {n / t:10.1f} {kept:6,}")
    print(
        f"throughput ratio: lmkit (resiliparse) is {t_dt / t_res:.1f}x datatrove; with trafilatura {t_dt / t_traf:.1f}x"
    )
    dt_ids = kept_ids(dt_final)
    print(f"agreement, lmkit (trafilatura) vs datatrove: {agreement(kept_ids(work / 'lmkit-warc-traf'), dt_ids)}")
    print(f"agreement, lmkit (resiliparse) vs datatrove: {agreement(kept_ids(work / 'lmkit-warc'), dt_ids)}")
    for label, rep in (("resiliparse", rep_res), ("trafilatura", rep_traf)):
        stages = ", ".join(f"{s['name']} -{s['removed']:,}" for s in rep["stages"])
        t = rep["totals"]
        print(
            f"lmkit ({label}) removed per stage: {stages}; tokens {t['tokens_in']:,} -> {t['tokens_out']:,} "
            f"({t['tokens_kept_pct']:.1f}% of the scraped tokens kept)"
        )
