"""The per-document part of curation, the unit of work every engine runs on a chunk: the stages of a
config in order (:class:`DocPipeline`), then the dedup keys of the survivors, sent back as a
:class:`ChunkResult` (:func:`process_chunk`).

A stage is a callable ``text -> text | Removed`` (the text rules), or has ``apply(doc) -> doc |
Removed`` when it needs the document itself (URL filter, HTML extraction, language: see
:mod:`lmkit.data.curate.web`). Characters and tokens are counted on what each stage receives; an
HTML page enters with its decoded HTML, so the report's totals start from the scraped bytes.
Per source, the pipeline counts the documents in and what each rule removed (for the warning
when one rule removes most of a source); per language, what the language stage saw.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lmkit.data.curate.config import DEDUP_STAGES, CurateConfig, ExtractConfig, Removed, config_from_dict
from lmkit.data.curate.report import StageStats
from lmkit.data.curate.rules import C4Quality, GopherQuality, GopherRepetition
from lmkit.data.curate.safety import BlockList, PiiRedact
from lmkit.data.curate.text import Normalise, proxy_tokens
from lmkit.data.curate.web import Extract, LanguageId, UrlFilter
from lmkit.data.dedup import MinHasher, exact_key
from lmkit.data.document import Document
from lmkit.data.extract import decode_html
from lmkit.errors import LmkitError
from lmkit.tokenizer import Tokenizer


@dataclass
class ChunkResult:
    """What a worker sends back for one chunk: the surviving documents and everything dedup needs."""

    ids: list[str]
    texts: list[str]
    sources: list[str]
    tokens: np.ndarray  # tokens of each surviving document
    stats: dict[str, StageStats]
    metas: list[dict[str, Any]] = field(default_factory=list)  # url, title, language of each survivor
    docs_in: int = 0
    chars_in: int = 0
    tokens_in: int = 0
    exact_keys: np.ndarray | None = None  # uint64 per surviving document
    band_keys: np.ndarray | None = None  # (n, bands) uint64
    has_shingles: np.ndarray | None = None  # bool per surviving document
    sigs: np.ndarray | None = None  # (n, num_perm) uint32, only with a MinHash threshold
    key_seconds: dict[str, float] = field(default_factory=dict)  # worker time of the dedup keys
    source_docs: Counter[str] = field(default_factory=Counter)  # documents in, per source
    source_removed: Counter[tuple[str, str, str]] = field(default_factory=Counter)  # (source, stage, reason)
    language_docs: Counter[str] = field(default_factory=Counter)  # documents the language stage saw, per language
    language_chars: Counter[str] = field(default_factory=Counter)
    bad_pages: list[tuple[str, str, str]] = field(default_factory=list)  # (source, page, reason): extraction failed


Stage = Any  # a text rule (callable) or a document stage (with apply)


def build_stage(
    name: str, cfg: CurateConfig, blocklist: list[str] | None = None, url_lists: dict[str, list[str]] | None = None
) -> Stage:
    """The per-document stage called ``name``, configured from ``cfg`` (and the block-lists read
    beforehand, which travel with the work to workers that cannot see the files)."""
    if name == "url_filter":
        return UrlFilter(cfg.url_filter, url_lists)
    if name == "extract":
        return Extract(cfg.extract)
    if name == "language":
        return LanguageId(cfg.language)
    if name == "normalise":
        return Normalise(cfg.normalise)
    if name == "gopher_quality":
        return GopherQuality(cfg.gopher_quality)
    if name == "c4":
        return C4Quality(cfg.c4)
    if name == "gopher_repetition":
        return GopherRepetition(cfg.gopher_repetition)
    if name == "blocklist":
        return BlockList(cfg.blocklist, blocklist)
    if name == "pii":
        return PiiRedact(cfg.pii)
    raise LmkitError(f"curate: {name!r} is not a per-document stage")


def _token_counter(tokenizer: str | None) -> Callable[[str], int]:
    if tokenizer is None:
        return proxy_tokens
    tok = Tokenizer.load(tokenizer, strict=False)
    return lambda text: len(tok.encode(text))


class DocPipeline:
    """The per-document stages of a config, plus the dedup keys, run over one chunk at a time."""

    def __init__(
        self,
        cfg: CurateConfig,
        tokenizer: str | None = None,
        blocklist: list[str] | None = None,
        url_lists: dict[str, list[str]] | None = None,
    ) -> None:
        self.cfg = cfg
        enabled = cfg.enabled_stages()
        self.stages = [(n, build_stage(n, cfg, blocklist, url_lists)) for n in enabled if n not in DEDUP_STAGES]
        if "extract" not in enabled:  # an HTML page still becomes text: its HTML, as with extract switched off
            self.stages.insert(0, ("", Extract(ExtractConfig(enabled=False))))
        self.exact = "exact_dedup" in enabled
        m = cfg.minhash
        self.minhasher = MinHasher(m.num_perm, m.bands, m.shingle_size, m.seed) if "minhash" in enabled else None
        self.count_tokens = _token_counter(tokenizer)

    def run(self, docs: Sequence[Document]) -> ChunkResult:
        cfg = self.cfg
        lim, ex_chars = cfg.examples_per_stage, cfg.example_chars
        stats = {n: StageStats(n) for n, _ in self.stages if n}
        res = ChunkResult([], [], [], np.zeros(0, dtype=np.int64), stats)
        count = self.count_tokens
        toks: list[int] = []
        for doc in docs:
            text = doc.text if doc.html is None else decode_html(doc.html)
            n_chr = len(text)
            n_tok = count(text)
            res.docs_in += 1
            res.chars_in += n_chr
            res.tokens_in += n_tok
            res.source_docs[doc.source] += 1
            for name, stage in self.stages:
                st = stats.get(name)
                if st is not None:
                    st.docs_in += 1
                    st.chars_in += n_chr
                    st.tokens_in += n_tok
                t0 = time.perf_counter()
                if hasattr(stage, "apply"):
                    doc.text = text
                    out: Any = stage.apply(doc)
                    if type(out) is not Removed:
                        doc = out
                        out = doc.text
                else:
                    out = stage(text)
                if st is not None:
                    st.seconds += time.perf_counter() - t0
                if type(out) is Removed:
                    if st is not None:
                        st.reasons[out.reason] += 1
                        st.add_example(out.reason, doc.id, doc.source, text, lim, ex_chars)
                        res.source_removed[(doc.source, name, out.reason)] += 1
                    break
                if out is not text:
                    if st is not None:
                        st.modified += 1
                    text = out
                    n_chr = len(text)
                    n_tok = count(text)
                if st is not None:
                    st.docs_out += 1
                    st.chars_out += n_chr
                    st.tokens_out += n_tok
            else:
                res.ids.append(doc.id)
                res.texts.append(text)
                res.sources.append(doc.source)
                doc.text = text
                res.metas.append(doc.meta())
                toks.append(n_tok)
        res.tokens = np.asarray(toks, dtype=np.int64)
        for name, stage in self.stages:
            if isinstance(stage, PiiRedact):
                stats[name].extra.update(stage.counts)
                stage.counts.clear()
            elif isinstance(stage, LanguageId):
                res.language_docs.update(stage.counts)
                res.language_chars.update(stage.chars)
                stage.counts.clear()
                stage.chars.clear()
            elif isinstance(stage, Extract):
                res.bad_pages += stage.failures
                stage.failures.clear()
        t0 = time.perf_counter()
        if self.exact:
            res.exact_keys = np.fromiter((exact_key(t) for t in res.texts), dtype=np.uint64, count=len(res.texts))
        t1 = time.perf_counter()
        if self.minhasher is not None:
            sigs, has = self.minhasher.signatures(res.texts)
            res.band_keys = self.minhasher.band_keys(sigs)
            res.has_shingles = has
            if cfg.minhash.threshold is not None:
                res.sigs = sigs
        res.key_seconds = {"exact_dedup": t1 - t0, "minhash": time.perf_counter() - t1}
        return res


_PIPELINES: dict[str, DocPipeline] = {}


def process_chunk(spec: str, docs: Sequence[Document]) -> ChunkResult:
    """Run the per-document part of curation on one chunk (the unit of work of every engine).

    ``spec`` is the JSON of ``{"config", "tokenizer", "blocklist", "url_lists"}``; the pipeline
    built from it is cached per process, so a worker builds it once.
    """
    pipe = _PIPELINES.get(spec)
    if pipe is None:
        d = json.loads(spec)
        pipe = DocPipeline(config_from_dict(d["config"]), d.get("tokenizer"), d.get("blocklist"), d.get("url_lists"))
        _PIPELINES.clear()
        _PIPELINES[spec] = pipe
    return pipe.run(docs)


__all__ = ["ChunkResult", "DocPipeline", "build_stage", "process_chunk"]
