"""Curation: from raw text to clean documents, with a report of what every stage removed and why.

What this module owns:

* the curation stages, each configured by a small dataclass: the document stages
  (``apply(doc) -> doc | Removed``) :class:`UrlFilter` (FineWeb's URL block-list),
  :class:`Extract` (HTML to main text) and :class:`LanguageId` (py3langid; ``--languages``), and
  the text stages (``text -> text | Removed(reason)``) :class:`Normalise` (Unicode NFC, control characters, whitespace, optional mojibake
  repair with ``ftfy``), :class:`GopherQuality` and :class:`C4Quality` (the published quality
  rules, with the papers' thresholds as defaults), :class:`GopherRepetition` (duplicate lines,
  paragraphs and n-grams), :class:`BlockList` (harmful-content words/phrases with a threshold)
  and :class:`PiiRedact` (e-mail addresses, phone numbers, IPv4/IPv6 addresses replaced by
  placeholders). Exact and near-duplicate removal are in :mod:`lmkit.data.dedup`.
* :class:`CurateConfig` (the YAML ``--config``), :func:`curate` (the streaming, parallel run) and
  the report (``report.json`` + ``report.md``). ``lmkit curate``'s runner is in :mod:`lmkit.cli.data`.

Where each part lives: :mod:`~lmkit.data.curate.config` (settings), :mod:`~lmkit.data.curate.text`
(tokens, normalisation), :mod:`~lmkit.data.curate.rules` (Gopher and C4 rules),
:mod:`~lmkit.data.curate.web` (URL filter, extraction, language), :mod:`~lmkit.data.curate.safety`
(block-list, PII), :mod:`~lmkit.data.curate.report` (statistics, languages, warnings,
``report.md``), :mod:`~lmkit.data.curate.pipeline` (the stages and dedup keys over one chunk) and
:mod:`~lmkit.data.curate.engine` (chunks, workers, shards, the run). This package re-exports
their public names.

How a run flows. The main process streams documents from :func:`lmkit.data.read.iter_documents`
(lenient: a bad file or line is counted in the report with its line number and the rest is
processed; plain-text files are cut at paragraph breaks into documents of about
``text_doc_chars``, so a book is judged piece by piece rather than removed as one over-long
document), shows a progress bar over the input bytes, cuts the documents into chunks
(``chunk_docs`` / ``chunk_chars``) and hands each chunk to a
worker: the per-document stages run there, in the declared ``order``, and so do the exact-dedup
hash and the MinHash signature. At most ``2 * workers + 2`` chunks are in flight, so memory
stays bounded whatever the corpus size. Results come back in input order; the main process keeps
the dedup index (the only structure that grows: see :mod:`lmkit.data.dedup` for its size per
million documents), removes duplicates of earlier documents, and writes the kept documents as
``part-NNNNN.jsonl.gz`` shards of ``{"id", "text", "source"}`` lines. Workers are processes
(``multiprocessing``) on one machine, or the workers of a Dask cluster (``client=`` /
``--dask ADDRESS``): the same function runs on every chunk, so the kept documents are the same.

Tokens in the report are counted with the tokenizer given (``tokenizer=``), or else with a fixed
proxy: the number of regex word tokens ``\\w+|[^\\w\\s]+`` (runs of letters/digits and runs of
punctuation), the same split the Gopher rules use. The report says which.

Rule notes. Gopher's stop words are counted up to case (``THE`` is ``the``), so ALL-CAPS legal
prose is not removed as "not English"; ``stop_words_case_sensitive`` restores the published
reading. Words for the Gopher rules are the same regex tokens (``datatrove``, whose defaults
we follow, uses spaCy's tokenizer; with the same tokens it keeps the same documents, see the
benchmark). The paper's "80% of words contain a letter" is measured over words, i.e. tokens
that are not punctuation (``alpha_ratio_of: tokens`` counts punctuation tokens in the
denominator as ``datatrove`` does, which removes most legal and technical text with many
parentheses, dates and addresses). "Top n-gram" fractions count only n-grams that occur at
least twice (an n-gram seen once is not repetition; counting it, as ``datatrove`` does, removes
most short documents). C4's line rules assume one paragraph per line; with ``paragraph_aware``
(the default), a block of hard-wrapped lines (similar long lengths, mostly not ending a
sentence) is judged as one paragraph, so books and licences are not emptied line by line. PII:
only globally routable IP addresses are personal data by default (``public_ips_only``); 127.0.0.1
or 192.168.x.x in technical text are kept.

Speed. Tokenising every document into Python strings would dominate a run, so the rules work on
arrays: each character's class comes from a table indexed by its code point (numpy over the
UTF-32 code units), token boundaries from array comparisons, token hashes from prefix sums
(:class:`Tokens`); the n-gram rules sort hashes instead of counting strings; PII patterns run
only in windows located with numpy. Written here rather than run through ``datatrove``: its
pipeline writes every intermediate stage to disk, runs dedup as separate multi-pass jobs and
tokenises in Python; this one streams once (``benchmarks/curate_speed.py`` compares the two).
"""

from __future__ import annotations

from lmkit.data.curate.config import (
    DEDUP_STAGES,
    GOPHER_STOP_WORDS,
    STAGES,
    BlocklistConfig,
    C4Config,
    CurateConfig,
    ExactDedupConfig,
    ExtractConfig,
    GopherQualityConfig,
    LanguageConfig,
    MinHashConfig,
    NormaliseConfig,
    PiiConfig,
    Removed,
    RepetitionConfig,
    UrlFilterConfig,
    config_from_dict,
    config_to_dict,
    load_curate_config,
)
from lmkit.data.curate.engine import OUR_FILES, ShardWriter, bounded_ordered_map, cap_workers, curate, default_workers
from lmkit.data.curate.pipeline import ChunkResult, DocPipeline, build_stage, process_chunk
from lmkit.data.curate.report import StageStats, report_markdown, source_warnings
from lmkit.data.curate.rules import C4Quality, GopherQuality, GopherRepetition
from lmkit.data.curate.safety import BlockList, PiiRedact, blocklist_terms, default_blocklist
from lmkit.data.curate.text import Normalise, Tokens, count_sentences, proxy_tokens, tokens_of, words_of
from lmkit.data.curate.web import Extract, LanguageId, UrlFilter, identify, url_blocklist

__all__ = [
    "DEDUP_STAGES",
    "GOPHER_STOP_WORDS",
    "OUR_FILES",
    "STAGES",
    "BlockList",
    "BlocklistConfig",
    "C4Config",
    "C4Quality",
    "ChunkResult",
    "CurateConfig",
    "DocPipeline",
    "ExactDedupConfig",
    "Extract",
    "ExtractConfig",
    "GopherQuality",
    "GopherQualityConfig",
    "GopherRepetition",
    "LanguageConfig",
    "LanguageId",
    "MinHashConfig",
    "Normalise",
    "NormaliseConfig",
    "PiiConfig",
    "PiiRedact",
    "Removed",
    "RepetitionConfig",
    "ShardWriter",
    "StageStats",
    "Tokens",
    "UrlFilter",
    "UrlFilterConfig",
    "blocklist_terms",
    "bounded_ordered_map",
    "build_stage",
    "cap_workers",
    "config_from_dict",
    "config_to_dict",
    "count_sentences",
    "curate",
    "default_blocklist",
    "default_workers",
    "identify",
    "load_curate_config",
    "process_chunk",
    "proxy_tokens",
    "report_markdown",
    "source_warnings",
    "tokens_of",
    "url_blocklist",
    "words_of",
]
