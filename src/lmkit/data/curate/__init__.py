"""Curation: from raw text to clean documents, with a report of what every stage removed and why.

What this module owns:

* the curation stages, each a callable ``text -> text | Removed(reason)`` configured by a small
  dataclass: :class:`Normalise` (Unicode NFC, control characters, whitespace, optional mojibake
  repair with ``ftfy``), :class:`GopherQuality` and :class:`C4Quality` (the published quality
  rules, with the papers' thresholds as defaults), :class:`GopherRepetition` (duplicate lines,
  paragraphs and n-grams), :class:`BlockList` (harmful-content words/phrases with a threshold)
  and :class:`PiiRedact` (e-mail addresses, phone numbers, IPv4/IPv6 addresses replaced by
  placeholders). Exact and near-duplicate removal are in :mod:`lmkit.data.dedup`.
* :class:`CurateConfig` (the YAML ``--config``), :func:`curate` (the streaming, parallel run) and
  the report (``report.json`` + ``report.md``), and ``lmkit curate``'s runner :func:`cli_curate`.

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

Rule notes. Words for the Gopher rules are the same regex tokens (``datatrove``, whose defaults
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
tokenises in Python; this one streams once and is several times faster on the same cores
(``benchmarks/curate_speed.py``).
"""

from __future__ import annotations

import dataclasses
import gzip
import ipaddress
import json
import os
import re
import shutil
import sys
import time
import unicodedata
from collections import Counter, deque
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Literal, NamedTuple, Sequence

import numpy as np

from lmkit.errors import LmkitError
from lmkit.files import check_out_dir

# --------------------------------------------------------------------------- configuration

STAGES = ("normalise", "gopher_quality", "c4", "gopher_repetition", "blocklist", "pii", "exact_dedup", "minhash")
DEDUP_STAGES = ("exact_dedup", "minhash")
GOPHER_STOP_WORDS = ["the", "be", "to", "of", "and", "that", "have", "with"]


@dataclass
class NormaliseConfig:
    """Unicode and whitespace clean-up; a document empty afterwards is removed."""

    enabled: bool = True
    nfc: bool = True  # Unicode NFC composition
    fix_mojibake: bool = True  # repair UTF-8 read as Latin-1/cp1252 ("cafÃ©") with ftfy
    remove_control: bool = True  # drop control and zero-width characters; \r\n, \r, \f -> \n
    collapse_spaces: bool = True  # runs of spaces/tabs -> one space; no spaces at line ends/starts
    max_blank_lines: int = 1  # longer runs of blank lines shrink to this many


@dataclass
class GopherQualityConfig:
    """Gopher (Rae et al. 2021) quality rules; ``null`` switches one rule off."""

    enabled: bool = True
    min_words: int | None = 50  # non-symbol words
    max_words: int | None = 100_000
    min_mean_word_length: float | None = 3
    max_mean_word_length: float | None = 10
    max_symbol_word_ratio: float | None = 0.1  # '#' per word and '...' per word
    max_bullet_lines_ratio: float | None = 0.9
    max_ellipsis_lines_ratio: float | None = 0.3
    min_alpha_words_ratio: float | None = 0.8  # words with at least one letter
    alpha_ratio_of: Literal["words", "tokens"] = "words"  # tokens: punctuation counts too (datatrove)
    min_stop_words: int | None = 2
    stop_words: list[str] = field(default_factory=lambda: list(GOPHER_STOP_WORDS))


@dataclass
class C4Config:
    """C4 (Raffel et al. 2020) line and page rules."""

    enabled: bool = True
    paragraph_aware: bool = True  # judge a hard-wrapped block as one paragraph (see module doc)
    remove_citations: bool = True  # strip [1], [edit], [citation needed]
    terminal_punct: bool = True  # drop lines not ending in . ? ! " ' (or ending in ...)
    min_words_per_line: int = 3
    max_word_length: int = 1000  # drop a line with a longer word
    min_sentences: int = 5  # drop the page if fewer sentences are left
    lorem_ipsum: bool = True  # drop the page
    javascript: bool = True  # drop lines mentioning javascript
    curly_bracket: bool = True  # drop the page if it has '{'
    policy: bool = True  # drop lines with terms-of-use / privacy / cookie phrases


@dataclass
class RepetitionConfig:
    """Gopher repetition rules: fractions above these remove the document; ``null`` disables."""

    enabled: bool = True
    dup_line_frac: float | None = 0.30
    dup_para_frac: float | None = 0.30
    dup_line_char_frac: float | None = 0.20
    dup_para_char_frac: float | None = 0.20
    top_ngram_char_frac: dict[int, float] = field(default_factory=lambda: {2: 0.20, 3: 0.18, 4: 0.16})
    dup_ngram_char_frac: dict[int, float] = field(
        default_factory=lambda: {5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10})


@dataclass
class BlocklistConfig:
    """Harmful-content filter: remove a document whose share of block-listed words is too high."""

    enabled: bool = True
    words_file: str | None = None  # one word/phrase per line ('#' comments); replaces the default list
    extra: list[str] = field(default_factory=list)  # words/phrases added to the list
    max_fraction: float = 0.001  # remove when hits / words exceeds this (0: any hit removes)


@dataclass
class PiiConfig:
    """Replace personal data with placeholders (the document is kept)."""

    enabled: bool = True
    emails: bool = True
    phones: bool = True
    ips: bool = True
    public_ips_only: bool = True  # leave private, loopback and documentation addresses (127.0.0.1, 10.x, ...)
    email_placeholder: str = "<EMAIL>"
    phone_placeholder: str = "<PHONE>"
    ip_placeholder: str = "<IP_ADDRESS>"


@dataclass
class ExactDedupConfig:
    """Remove later copies of a document with the same normalised text (case, whitespace)."""

    enabled: bool = True


@dataclass
class MinHashConfig:
    """Near-duplicate removal with MinHash + LSH (see :mod:`lmkit.data.dedup`)."""

    enabled: bool = True
    shingle_size: int = 5  # words per shingle
    num_perm: int = 112  # hash functions (signature length)
    bands: int = 14  # LSH bands; rows per band = num_perm / bands
    threshold: float | None = None  # also require this estimated Jaccard; null: LSH alone (~0.72)
    seed: int = 1


@dataclass
class CurateConfig:
    """Everything ``lmkit curate --config curate.yaml`` can set (YAML keys = these fields)."""

    order: list[str] = field(default_factory=lambda: list(STAGES))
    normalise: NormaliseConfig = field(default_factory=NormaliseConfig)
    gopher_quality: GopherQualityConfig = field(default_factory=GopherQualityConfig)
    c4: C4Config = field(default_factory=C4Config)
    gopher_repetition: RepetitionConfig = field(default_factory=RepetitionConfig)
    blocklist: BlocklistConfig = field(default_factory=BlocklistConfig)
    pii: PiiConfig = field(default_factory=PiiConfig)
    exact_dedup: ExactDedupConfig = field(default_factory=ExactDedupConfig)
    minhash: MinHashConfig = field(default_factory=MinHashConfig)
    text_field: str = "text"  # JSONL/Parquet field holding the text
    # plain-text files are cut into documents at the first paragraph break after this many
    # characters (at most 4x as many): pieces stay under Gopher's 100,000-word limit, so a book
    # in a .txt file is judged by the rules instead of removed as one over-long document
    text_doc_chars: int = 100_000
    chunk_docs: int = 1000  # documents per unit of parallel work ...
    chunk_chars: int = 2_000_000  # ... or this many characters, whichever comes first
    shard_docs: int = 100_000  # documents per output shard ...
    shard_chars: int = 256_000_000  # ... or this many characters
    compress_level: int = 5  # gzip level of the shards
    examples_per_stage: int = 3  # removed documents shown per stage in the report
    example_chars: int = 500  # characters of each example shown

    def validate(self) -> None:
        for name in self.order:
            if name not in STAGES:
                raise LmkitError(f"curate config: unknown stage {name!r} in order (stages: {', '.join(STAGES)})")
        if len(set(self.order)) != len(self.order):
            raise LmkitError("curate config: a stage is listed twice in order")
        seen_dedup = False
        for name in self.order:
            if name in DEDUP_STAGES:
                seen_dedup = True
            elif seen_dedup:
                raise LmkitError(f"curate config: stage {name!r} comes after a dedup stage; dedup stages "
                                 "(exact_dedup, minhash) must be last in order")
        for key, table in (("top_ngram_char_frac", self.gopher_repetition.top_ngram_char_frac),
                           ("dup_ngram_char_frac", self.gopher_repetition.dup_ngram_char_frac)):
            if not isinstance(table, dict):
                raise LmkitError(f"curate config: gopher_repetition.{key} must map n to a fraction, e.g. {{2: 0.2}}")
            for n, frac in table.items():
                if not isinstance(n, int) or isinstance(n, bool) or n < 1 or not isinstance(frac, (int, float)):
                    raise LmkitError(f"curate config: gopher_repetition.{key}: bad entry {n!r}: {frac!r}")
        m = self.minhash
        if m.num_perm < 1 or m.bands < 1 or m.num_perm % m.bands:
            raise LmkitError(f"curate config: minhash.num_perm ({m.num_perm}) must be a multiple of "
                             f"minhash.bands ({m.bands})")
        if m.shingle_size < 1:
            raise LmkitError("curate config: minhash.shingle_size must be at least 1")
        if m.threshold is not None and not 0.0 < m.threshold <= 1.0:
            raise LmkitError(f"curate config: minhash.threshold must be in (0, 1], got {m.threshold}")
        if self.normalise.max_blank_lines < 0:
            raise LmkitError("curate config: normalise.max_blank_lines must be >= 0")
        for key in ("chunk_docs", "chunk_chars", "shard_docs", "shard_chars", "text_doc_chars"):
            if getattr(self, key) < 1:
                raise LmkitError(f"curate config: {key} must be at least 1")
        if not 0 <= self.compress_level <= 9:
            raise LmkitError("curate config: compress_level must be 0..9")

    def enabled_stages(self) -> list[str]:
        return [n for n in self.order if getattr(self, n).enabled]


def load_curate_config(path: str | Path | None) -> CurateConfig:
    """Read a curate YAML (any subset of :class:`CurateConfig`'s keys); None -> the defaults."""
    import yaml

    from lmkit.config import ConfigError, from_dict

    if path is None:
        cfg = CurateConfig()
    else:
        p = Path(path)
        if not p.is_file():
            raise LmkitError(f"{p}: config file not found")
        try:
            raw = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f"{p}:{mark.line + 1}" if mark is not None else str(p)
            what = getattr(e, "problem", None) or str(e).splitlines()[0]
            raise LmkitError(f"{where}: not valid YAML ({what})") from None
        except (OSError, UnicodeDecodeError) as e:
            raise LmkitError(f"{p}: cannot read config ({e})") from None
        if not isinstance(raw, dict):
            raise LmkitError(f"{p}: top level must be a mapping of curate settings")
        try:
            cfg = from_dict(CurateConfig, raw)
        except ConfigError as e:
            raise LmkitError(f"{p}: {e}") from None
        try:
            cfg.validate()
        except LmkitError as e:
            raise LmkitError(f"{p}: {e}") from None
        return cfg
    cfg.validate()
    return cfg


def config_to_dict(cfg: CurateConfig) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def config_from_dict(d: dict[str, Any]) -> CurateConfig:
    from lmkit.config import from_dict

    cfg: CurateConfig = from_dict(CurateConfig, d)
    # JSON turns int keys into strings; bring the n-gram tables back
    rep = cfg.gopher_repetition
    rep.top_ngram_char_frac = {int(k): float(v) for k, v in rep.top_ngram_char_frac.items()}
    rep.dup_ngram_char_frac = {int(k): float(v) for k, v in rep.dup_ngram_char_frac.items()}
    return cfg


# --------------------------------------------------------------------------- shared text helpers


class Removed(NamedTuple):
    """A stage's verdict that the document goes, with the reason counted in the report."""

    reason: str


_WORD_RE = re.compile(r"\w+|[^\w\s]+")
_LAST_WORDS: list[Any] = [None, None]


def words_of(text: str) -> list[str]:
    """Regex word tokens (``\\w+`` and ``[^\\w\\s]+`` runs); the last result is memoised by identity."""
    if _LAST_WORDS[0] is text:
        return _LAST_WORDS[1]  # type: ignore[no-any-return]
    words = _WORD_RE.findall(text)
    _LAST_WORDS[0], _LAST_WORDS[1] = text, words
    return words


# ASCII byte -> 0 whitespace, 1 word character, 2 other (punctuation): \s, \w and the rest in `re`
_ASCII_CLASS = bytes(0 if chr(i).isspace() else 1 if (chr(i).isalnum() or i == 95) else 2 for i in range(128)) \
    + bytes(128)


def proxy_tokens(text: str) -> int:
    """The report's default token count: the number of regex word tokens (``len(words_of(text))``).

    Pure-ASCII text is counted without building the token list: classify every byte as space,
    word or punctuation with ``bytes.translate`` and count where a non-space run starts.
    """
    if _LAST_WORDS[0] is text:
        return len(_LAST_WORDS[1])
    if not text.isascii() or (_LAST_TOKENS[0] is not None and _LAST_TOKENS[0].text is text):
        return len(tokens_of(text))
    a = np.frombuffer(text.encode("ascii").translate(_ASCII_CLASS), dtype=np.uint8)
    if a.size == 0:
        return 0
    return int(np.count_nonzero((a[1:] != a[:-1]) & (a[1:] != 0))) + int(a[0] != 0)


_SENT_END_RE = re.compile(r"[.!?…]+[\"'”’)\]]*(?=\s|$)")


def count_sentences(line: str) -> int:
    """Sentences in a line: runs of . ! ? … followed by space or the end (at least 1)."""
    return max(1, len(_SENT_END_RE.findall(line)))


# --------------------------------------------------------------------------- vectorised tokens
#
# The rules need counts over the regex tokens (\w+ and [^\w\s]+ runs) of every document, and
# building those tokens as Python strings is the slowest thing a curation run could do. Instead
# each character gets a class from a lookup table indexed by its code point (numpy over the
# UTF-32 code units), runs of word/symbol characters are found with array comparisons, and
# everything the rules ask (token counts and lengths, letters, symbols, token hashes for n-grams)
# comes from a few reductions over those arrays.

# classes: space (\s), letter (isalpha), other \w (digits, numerals), '_', punctuation (a token made
# only of these is a "symbol", not a word, for the Gopher rules), other symbols (e.g. ©, €, emoji)
C_SPACE, C_LETTER, C_ALNUM, C_UNDERSCORE, C_PUNCT, C_SYMBOL = range(6)
_GROUP = np.array([0, 1, 1, 1, 2, 2], dtype=np.uint8)  # 0 space, 1 word (\w), 2 symbol ([^\w\s])
_CLASS_TABLE: list[np.ndarray] = []


def _char_class(ch: str) -> int:
    if ch.isspace():
        return C_SPACE
    if ch.isalpha():
        return C_LETTER
    if ch.isalnum():
        return C_ALNUM
    if ch == "_":
        return C_UNDERSCORE
    cat = unicodedata.category(ch)
    # punctuation: Unicode P* and control characters, and every ASCII non-word character
    return C_PUNCT if cat[0] == "P" or cat == "Cc" or ch.isascii() else C_SYMBOL


def _class_table() -> np.ndarray:
    """Class of every code point of the Basic Multilingual Plane (built once, ~65k lookups)."""
    if not _CLASS_TABLE:
        _CLASS_TABLE.append(np.fromiter((_char_class(chr(i)) for i in range(0x10000)), dtype=np.uint8,
                                        count=0x10000))
    return _CLASS_TABLE[0]


_TOKEN_BASE = np.uint64(0x100000001B3)
_NGRAM_MUL = np.uint64(0x9E3779B97F4A7C15)
_TOKEN_BASE_INV = np.uint64(pow(0x100000001B3, -1, 1 << 64))


class Tokens:
    r"""The regex tokens of a text as arrays: ``starts``/``ends`` (character offsets), ``word``
    (True for \w+ runs, False for punctuation runs) and per-token flags; see :func:`tokens_of`."""

    __slots__ = ("text", "cp", "cls", "starts", "ends", "word", "_hashes", "_lower_hashes")

    def __init__(self, text: str) -> None:
        self.text = text
        cp = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
        cls = _class_table().take(cp, mode="clip")
        if cp.size and int(cp.max()) > 0xFFFF:  # emoji, rare scripts: classify each distinct one directly
            astral = cp > 0xFFFF
            for c in np.unique(cp[astral]).tolist():
                cls[cp == c] = _char_class(chr(c))
        self.cp, self.cls = cp, cls
        grp = _GROUP.take(cls)
        n = grp.shape[0]
        if n == 0:
            self.starts = self.ends = np.zeros(0, dtype=np.int64)
            self.word = np.zeros(0, dtype=bool)
        else:
            # runs of equal group (space / word / symbol); tokens are the runs that are not space
            change = np.flatnonzero(grp[1:] != grp[:-1]) + 1
            bounds = np.concatenate(([0], change, [n]))
            kind = grp.take(bounds[:-1])
            solid = kind != 0
            self.starts = bounds[:-1][solid]
            self.ends = bounds[1:][solid]
            self.word = kind[solid] == 1
        self._hashes: np.ndarray | None = None
        self._lower_hashes: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.starts.shape[0])

    def any_of(self, lo: int, hi: int | None = None) -> np.ndarray:
        """Per token: does it contain a character of class ``lo`` (or of classes ``lo..hi``)?"""
        if not len(self):
            return np.zeros(0, dtype=bool)
        if hi is None:
            mask = self.cls == lo
        else:  # lo <= cls <= hi, in one comparison thanks to uint8 wrap-around
            mask = (self.cls - np.uint8(lo)) <= np.uint8(hi - lo)
        return np.maximum.reduceat(mask.view(np.uint8), self.starts) > 0  # spaces after a token add zeros

    def hashes(self, lower: bool = False) -> np.ndarray:
        """A 64-bit hash per token, equal for equal token strings (polynomial hash of the code
        points: differences of prefix sums, divided by the position's power). ``lower``: of the
        lower-cased tokens."""
        cached = self._lower_hashes if lower else self._hashes
        if cached is not None:
            return cached
        from lmkit.data.dedup import mix64

        n = self.cp.shape[0]
        if n == 0:
            return np.zeros(0, dtype=np.uint64)
        cp = self.cp
        if lower:
            cp = _lower_table().take(cp, mode="clip")
            astral = self.cp > 0xFFFF
            if astral.any():
                cp[astral] = self.cp[astral]
        pw = np.full(n, _TOKEN_BASE, dtype=np.uint64)
        pw[0] = 1
        np.cumprod(pw, out=pw)
        inv = np.full(n, _TOKEN_BASE_INV, dtype=np.uint64)
        inv[0] = 1
        np.cumprod(inv, out=inv)
        prefix = np.zeros(n + 1, dtype=np.uint64)
        np.cumsum(cp.astype(np.uint64) * pw, out=prefix[1:])
        h = (prefix[self.ends] - prefix[self.starts]) * inv[self.starts]
        h = mix64(h + (self.ends - self.starts).astype(np.uint64) * _NGRAM_MUL)  # the length too
        if lower:
            self._lower_hashes = h
        else:
            self._hashes = h
        return h


_LOWER_TABLE: list[np.ndarray] = []


def _lower_table() -> np.ndarray:
    """Lower-case code point of every BMP code point (itself when lower() is not one character)."""
    if not _LOWER_TABLE:
        low = np.arange(0x10000, dtype=np.uint32)
        for i in range(0x10000):
            x = chr(i).lower()
            if len(x) == 1 and x != chr(i):
                low[i] = ord(x)
        _LOWER_TABLE.append(low)
    return _LOWER_TABLE[0]


_LAST_TOKENS: list[Any] = [None]


def tokens_of(text: str) -> Tokens:
    """:class:`Tokens` of ``text``; the last one is memoised by identity (stages share it)."""
    t = _LAST_TOKENS[0]
    if t is not None and t.text is text:
        return t  # type: ignore[no-any-return]
    t = Tokens(text)
    _LAST_TOKENS[0] = t
    return t


# --------------------------------------------------------------------------- normalisation

_BREAKS_RE = re.compile("[\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")  # -> \n (after \r\n -> \n)
_CTRL_RE = re.compile("[\x00-\x08\x0e-\x1b\x1f\x7f-\x84\x86-\x9f\u200b\u200c\u200d\u2060\ufeff\ufffe\uffff]")
_ASCII_BREAKS = ("\r", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e")
_ASCII_CTRL = bytes([*range(0, 9), *range(0x0e, 0x1c), 0x1f, 0x7f])
_USPACE_RE = re.compile("[\u00a0\u1680\u2000-\u200a\u202f\u205f\u3000]")
# a Latin-1/cp1252 reading of UTF-8 leaves a lead character U+00C2..U+00F4 followed by one of these
_MOJIBAKE_HINT_RE = re.compile("[\u00c2-\u00f4][\u0080-\u00bf\u0152\u0153\u0160\u0161\u0178\u017d\u017e\u0192"
                               "\u02c6\u02dc\u2013\u2014\u2018-\u201e\u2020-\u2022\u2026\u2030\u2039\u203a"
                               "\u20ac\u2122]")


class Normalise:
    """NFC, mojibake repair, line breaks and control characters, whitespace; empty -> removed."""

    name = "normalise"

    def __init__(self, cfg: NormaliseConfig) -> None:
        self.cfg = cfg
        self._blank_re = re.compile("\n" * (cfg.max_blank_lines + 1) + "\n+")  # literal prefix: fast
        self._blank_to = "\n" * (cfg.max_blank_lines + 1)
        self._ftfy: Any = None
        if cfg.fix_mojibake:
            try:
                import ftfy
                import ftfy.badness
            except ImportError:
                raise LmkitError("normalise.fix_mojibake needs the ftfy package (pip install ftfy), or set "
                                 "normalise.fix_mojibake: false") from None
            self._ftfy = ftfy

    def _fix_mojibake(self, text: str) -> str:
        """ftfy's repair, only on the lines that look broken (ftfy is slow on long text)."""
        spans: dict[int, int] = {}
        for m in _MOJIBAKE_HINT_RE.finditer(text):
            a = text.rfind("\n", 0, m.start()) + 1
            if a not in spans:
                b = text.find("\n", m.end())
                spans[a] = len(text) if b < 0 else b
        pieces: list[str] = []
        last = 0
        for a, b in spans.items():  # in text order
            line = text[a:b]
            if self._ftfy.badness.is_bad(line):
                fixed = self._ftfy.fix_encoding(line)
                if fixed != line:
                    pieces += [text[last:a], unicodedata.normalize("NFC", fixed)]
                    last = b
        if not pieces:
            return text
        pieces.append(text[last:])
        return "".join(pieces)

    def __call__(self, text: str) -> str | Removed:
        cfg = self.cfg
        ascii_ = text.isascii()
        if not ascii_:
            if cfg.nfc and not unicodedata.is_normalized("NFC", text):
                # line by line: only the lines that change pay for normalize()
                nfc = unicodedata.is_normalized
                text = "\n".join([x if nfc("NFC", x) else unicodedata.normalize("NFC", x)
                                  for x in text.split("\n")])
            if self._ftfy is not None and _MOJIBAKE_HINT_RE.search(text):  # cheap test first
                text = self._fix_mojibake(text)
        if cfg.remove_control:
            if ascii_:  # substring tests and bytes.translate run at memory speed
                if any(ch in text for ch in _ASCII_BREAKS):
                    text = _BREAKS_RE.sub("\n", text.replace("\r\n", "\n"))
                raw = text.encode("ascii")
                cleaned = raw.translate(None, _ASCII_CTRL)
                if len(cleaned) != len(raw):
                    text = cleaned.decode("ascii")
            else:
                if _BREAKS_RE.search(text):
                    text = _BREAKS_RE.sub("\n", text.replace("\r\n", "\n"))
                if _CTRL_RE.search(text):
                    text = _CTRL_RE.sub("", text)
        if cfg.collapse_spaces and ("\t" in text or "  " in text or " \n" in text or "\n " in text
                                    or (not ascii_ and _USPACE_RE.search(text))):
            # every run of whitespace inside a line becomes one space, none at the line ends
            text = "\n".join([" ".join(x.split()) for x in text.split("\n")])
        if self._blank_to + "\n" in text:
            text = self._blank_re.sub(self._blank_to, text)
        stripped = text.strip()
        if not stripped:
            return Removed("empty")
        return stripped if len(stripped) != len(text) else text


# --------------------------------------------------------------------------- Gopher quality



class GopherQuality:
    """Gopher's quality rules (word count and length, symbols, bullets, ellipses, letters, stop words)."""

    name = "gopher_quality"

    def __init__(self, cfg: GopherQualityConfig) -> None:
        self.cfg = cfg
        self.stop = frozenset(cfg.stop_words)
        plain = [w for w in cfg.stop_words if re.fullmatch(r"\w+", w)]
        # stop words are whole \w+ tokens: a regex finds them without building the token list
        self._stop_re = (re.compile(r"\b(?:" + "|".join(map(re.escape, sorted(set(plain), key=len, reverse=True)))
                                    + r")\b") if plain and len(plain) == len(cfg.stop_words) else None)

    def _stop_words(self, text: str, need: int) -> int:
        """Distinct stop words present, counting only up to ``need``."""
        if self._stop_re is None:
            return len(self.stop.intersection(words_of(text)))
        found: set[str] = set()
        for m in self._stop_re.finditer(text):
            found.add(m.group(0))
            if len(found) >= need:
                break
        return len(found)

    def __call__(self, text: str) -> str | Removed:
        c = self.cfg
        tok = tokens_of(text)
        n_words = len(tok)
        if n_words == 0:
            return Removed("gopher_short_doc")
        word = tok.word
        lens = tok.ends - tok.starts
        # a token is a symbol if all its characters are punctuation: a punctuation run without
        # other symbols (e.g. "©"), or a run of underscores
        symbol = ~word & ~tok.any_of(C_SYMBOL)
        if "_" in text:
            symbol |= word & ~tok.any_of(C_LETTER, C_ALNUM)
        n_non_symbol = n_words - int(np.count_nonzero(symbol))
        if c.min_words is not None and n_non_symbol < c.min_words:
            return Removed("gopher_short_doc")
        if c.max_words is not None and n_non_symbol > c.max_words:
            return Removed("gopher_long_doc")
        if n_non_symbol == 0:
            return Removed("gopher_short_doc")
        mean_len = (int(lens.sum()) - int(lens[symbol].sum())) / n_non_symbol
        if c.min_mean_word_length is not None and mean_len < c.min_mean_word_length:
            return Removed("gopher_below_avg_word_length")
        if c.max_mean_word_length is not None and mean_len > c.max_mean_word_length:
            return Removed("gopher_above_avg_word_length")
        if c.max_symbol_word_ratio is not None:
            if text.count("#") / n_words > c.max_symbol_word_ratio:
                return Removed("gopher_too_many_hashes")
            if (text.count("...") + text.count("…")) / n_words > c.max_symbol_word_ratio:
                return Removed("gopher_too_many_ellipsis")
        if c.max_bullet_lines_ratio is not None or c.max_ellipsis_lines_ratio is not None:
            bullets, ellipses, n_lines = self._line_stats(tok)
            if c.max_bullet_lines_ratio is not None and bullets / n_lines > c.max_bullet_lines_ratio:
                return Removed("gopher_too_many_bullets")
            if c.max_ellipsis_lines_ratio is not None and ellipses / n_lines > c.max_ellipsis_lines_ratio:
                return Removed("gopher_too_many_end_ellipsis")
        if c.min_alpha_words_ratio is not None:
            n_alpha = int(np.count_nonzero(word & tok.any_of(C_LETTER)))
            denominator = n_non_symbol if c.alpha_ratio_of == "words" else n_words
            if n_alpha / denominator < c.min_alpha_words_ratio:
                return Removed("gopher_below_alpha_threshold")
        if c.min_stop_words is not None and self._stop_words(text, c.min_stop_words) < c.min_stop_words:
            return Removed("gopher_not_enough_stop_words")
        return text

    @staticmethod
    def _line_stats(tok: Tokens) -> tuple[int, int, int]:
        """(lines starting with a bullet, lines ending with an ellipsis, lines), over '\\n' lines."""
        cp = tok.cp
        n = cp.shape[0]
        nl = np.flatnonzero(cp == 10)
        line_start = np.concatenate(([0], nl + 1))
        line_end = np.concatenate((nl, [n]))
        if n and cp[-1] == 10:  # a final newline does not open another line (as str.splitlines)
            line_start, line_end = line_start[:-1], line_end[:-1]
        n_lines = max(1, line_start.shape[0])
        solid = np.flatnonzero(tok.cls != C_SPACE)
        if solid.size == 0:
            return 0, 0, n_lines
        first = np.searchsorted(solid, line_start)  # first non-space character of each line
        ok = first < solid.size
        first_pos = solid[np.minimum(first, solid.size - 1)]
        ok &= first_pos < line_end
        lead = cp[first_pos]
        bullets = int(np.count_nonzero(ok & ((lead == 0x2D) | (lead == 0x2022))))  # '-' or '•'
        last = np.searchsorted(solid, line_end) - 1  # last non-space character of each line
        okl = last >= 0
        last_pos = solid[np.maximum(last, 0)]
        okl &= last_pos >= line_start
        dots = (cp[last_pos] == 0x2E) & (last_pos >= line_start + 2)
        dots &= (cp[np.maximum(last_pos - 1, 0)] == 0x2E) & (cp[np.maximum(last_pos - 2, 0)] == 0x2E)
        ellipses = int(np.count_nonzero(okl & (dots | (cp[last_pos] == 0x2026))))
        return bullets, ellipses, n_lines


# --------------------------------------------------------------------------- C4

_CITATION_RE = re.compile(r"\[\d*]|\[edit]|\[citation needed]")
_END_PUNCT = (".", "?", "!", '"', "'")
_POLICY = ("terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies", "use cookies")
_BLOCK_SPLIT_RE = re.compile(r"\n[^\S\n]*\n\s*")


def _is_wrapped(lines: list[str]) -> bool:
    """A block of hard-wrapped prose: long lines of similar length, mostly not ending a sentence."""
    if len(lines) < 2:
        return False
    body = lines[:-1]
    longest = max(len(x) for x in lines)
    if longest < 40:
        return False
    long_ = sum(1 for x in body if len(x) >= 0.6 * longest)
    ends = sum(1 for x in body if x.endswith(_END_PUNCT))
    return long_ >= 0.7 * len(body) and ends <= 0.5 * len(body)


class C4Quality:
    """C4's rules: lines without terminal punctuation, short lines, javascript/policy lines are
    dropped; pages with lorem ipsum, '{' or fewer than ``min_sentences`` sentences are removed."""

    name = "c4"

    def __init__(self, cfg: C4Config) -> None:
        self.cfg = cfg

    def _keep_unit(self, unit: str, words: list[str]) -> str | Removed | None:
        """The unit's kept text, None to drop the unit, or Removed for the whole page."""
        c = self.cfg
        if c.max_word_length >= 0 and words and max(map(len, words)) > c.max_word_length:
            return None
        if c.remove_citations and "[" in unit:
            unit = _CITATION_RE.sub("", unit)
        if c.terminal_punct and (not unit.endswith(_END_PUNCT) or unit.endswith("...")):
            return None
        if len(words) < c.min_words_per_line:
            return None
        low = unit.lower()
        if c.lorem_ipsum and "lorem ipsum" in low:
            return Removed("c4_lorem_ipsum")
        if c.javascript and "javascript" in low:
            return None
        if c.curly_bracket and "{" in unit:
            return Removed("c4_curly_bracket")
        if c.policy and any(p in low for p in _POLICY):
            return None
        return unit

    def __call__(self, text: str) -> str | Removed:
        c = self.cfg
        sentences = 0
        if not c.paragraph_aware:
            kept: list[str] = []
            for line in text.splitlines():
                line = line.strip()
                r = self._keep_unit(line, line.split())
                if r is None:
                    continue
                if type(r) is Removed:
                    return r
                sentences += count_sentences(r)  # type: ignore[arg-type]
                kept.append(r)  # type: ignore[arg-type]
            if sentences < c.min_sentences:
                return Removed("c4_too_few_sentences")
            out = "\n".join(kept).strip()
        else:
            blocks_out: list[str] = []
            for block in _BLOCK_SPLIT_RE.split(text):
                lines = [x.strip() for x in block.split("\n")]
                if _is_wrapped(lines):
                    joined = " ".join(x for x in lines if x)
                    r = self._keep_unit(joined, joined.split())
                    if r is None:
                        continue
                    if type(r) is Removed:
                        return r
                    sentences += count_sentences(r)  # type: ignore[arg-type]
                    if c.remove_citations and "[" in block:
                        lines = [_CITATION_RE.sub("", x) for x in lines]
                    blocks_out.append("\n".join(x for x in lines if x))
                    continue
                kept = []
                for line in lines:
                    r = self._keep_unit(line, line.split())
                    if r is None:
                        continue
                    if type(r) is Removed:
                        return r
                    sentences += count_sentences(r)  # type: ignore[arg-type]
                    kept.append(r)  # type: ignore[arg-type]
                if kept:
                    blocks_out.append("\n".join(kept))
            if sentences < c.min_sentences:
                return Removed("c4_too_few_sentences")
            out = "\n\n".join(blocks_out).strip()
        return text if out == text else out


# --------------------------------------------------------------------------- Gopher repetition

_PARA_RE = re.compile(r"\n\n+")  # (a literal prefix lets `re` scan fast)


def _split_lines(text: str) -> list[str]:
    """``re.split(r"\\n+", text)`` without the regex: empty lines dropped except at the two ends."""
    parts = text.split("\n")
    if "\n\n" in text:
        last = len(parts) - 1
        parts = [x for i, x in enumerate(parts) if x or i == 0 or i == last]
    return parts


def _dup_stats(items: list[str]) -> tuple[int, int]:
    """(elements that repeat an earlier one, their characters)."""
    uniq = set(items)
    return len(items) - len(uniq), sum(map(len, items)) - sum(map(len, uniq))


class GopherRepetition:
    """Gopher's repetition rules: duplicate lines/paragraphs (count and characters), the most
    common 2-4-gram's share of characters, and the share of characters in duplicated 5-10-grams.

    N-grams are over the regex tokens, identified by their 64-bit token hashes combined
    polynomially (no strings are built). The duplicated n-gram share follows the Gopher/datatrove
    walk: left to right, an n-gram seen before counts its characters (without spaces) and the
    walk jumps past it; the walk only stops at n-grams that occurred earlier, so its cost is in
    the number of repeats, not of words.
    """

    name = "gopher_repetition"

    def __init__(self, cfg: RepetitionConfig) -> None:
        self.cfg = cfg
        self.top = sorted((int(n), float(f)) for n, f in cfg.top_ngram_char_frac.items())
        self.dup = sorted((int(n), float(f)) for n, f in cfg.dup_ngram_char_frac.items())

    def __call__(self, text: str) -> str | Removed:
        c = self.cfg
        if not text:
            return Removed("empty")
        n_chars = len(text)
        paras = _PARA_RE.split(text.strip())
        dup_n, dup_c = _dup_stats(paras)
        if c.dup_para_frac is not None and dup_n / len(paras) > c.dup_para_frac:
            return Removed("dup_para_frac")
        if c.dup_para_char_frac is not None and dup_c / n_chars > c.dup_para_char_frac:
            return Removed("dup_para_char_frac")
        lines = _split_lines(text)
        dup_n, dup_c = _dup_stats(lines)
        if c.dup_line_frac is not None and dup_n / len(lines) > c.dup_line_frac:
            return Removed("dup_line_frac")
        if c.dup_line_char_frac is not None and dup_c / n_chars > c.dup_line_char_frac:
            return Removed("dup_line_char_frac")
        if not self.top and not self.dup:
            return text
        tok = tokens_of(text)
        L = len(tok)
        if L < 2:
            return text
        h = tok.hashes()
        cs = np.zeros(L + 1, dtype=np.int64)
        np.cumsum(tok.ends - tok.starts, out=cs[1:])  # characters of tokens before each position
        keys: dict[int, np.ndarray] = {1: h}
        max_n = min(max([n for n, _ in self.top] + [n for n, _ in self.dup]), L)
        for n in range(2, max_n + 1):  # n-gram keys from the (n-1)-gram keys
            keys[n] = keys[n - 1][:L - n + 1] * _NGRAM_MUL + h[n - 1:]
        for n, frac in self.top:
            k = keys.get(n)
            if k is None:
                continue
            srt = np.sort(k)
            new_run = np.empty(srt.shape[0], dtype=bool)
            new_run[0] = True
            np.not_equal(srt[1:], srt[:-1], out=new_run[1:])
            run_start = np.flatnonzero(new_run)
            run_len = np.empty(run_start.shape[0], dtype=np.int64)
            run_len[:-1] = run_start[1:] - run_start[:-1]
            run_len[-1] = srt.shape[0] - run_start[-1]
            best = int(run_len.max())
            if best < 2:
                continue
            tops = srt[run_start[run_len == best]]
            # ties: the most common n-gram that appears first
            if tops.shape[0] <= 4:
                i = min(int(np.argmax(k == t)) for t in tops)
            else:
                i = int(np.argmax(np.isin(k, tops)))
            gram_chars = int(cs[i + n] - cs[i]) + n - 1
            if gram_chars * best / n_chars > frac:
                return Removed(f"top_{n}_gram")
        rep: np.ndarray | None = None  # positions whose (prev_n)-gram occurs more than once
        prev_n = 0
        for n, frac in self.dup:
            k = keys.get(n)
            if k is None:
                break
            m = k.shape[0]
            if rep is None:
                cand = np.arange(m)
            else:  # an n-gram can only repeat if every shorter n-gram inside it repeats
                ok = rep[:m].copy()
                for j in range(1, n - prev_n + 1):
                    ok &= rep[j:j + m]
                cand = np.flatnonzero(ok)
            if cand.size < 2:
                break  # no repeated n-gram: none of any larger n either
            order = np.argsort(k[cand], kind="stable")
            sk = k[cand][order]
            same = sk[1:] == sk[:-1]
            if not same.any():
                break
            order = cand[order]  # positions, sorted by n-gram, in position order within a group
            if self._dup_chars(order, same, cs, n, frac * n_chars):
                return Removed(f"duplicated_{n}_n_grams")
            in_group = np.zeros(order.shape[0], dtype=bool)
            in_group[:-1] |= same
            in_group[1:] |= same
            rep = np.zeros(m, dtype=bool)
            rep[order[in_group]] = True
            prev_n = n
        return text

    @staticmethod
    def _dup_chars(order: np.ndarray, same: np.ndarray, cs: np.ndarray, n: int, limit: float) -> bool:
        """Whether the greedy walk's duplicated characters exceed ``limit``.

        ``order`` sorts the positions by n-gram (stably); ``same[j]`` says order[j + 1] has the
        same n-gram as order[j]. A position whose n-gram occurred earlier is a candidate; it
        counts if one of those earlier occurrences was visited (not jumped over).
        """
        m = int(order.max()) + 1
        in_rep = np.zeros(order.shape[0], dtype=bool)  # sorted entries of an n-gram occurring more than once
        in_rep[:-1] |= same
        in_rep[1:] |= same
        sel = np.flatnonzero(in_rep)
        pos = order[sel]
        later = pos[1:][same[sel[1:] - 1] & (sel[1:] - 1 == sel[:-1])]  # every occurrence after the first
        if int((cs[later + n] - cs[later]).sum()) <= limit:
            return False  # even counting every repeat the share stays under the limit: no walk needed
        first = np.empty(sel.shape[0], dtype=bool)  # a new n-gram starts here
        first[0] = True
        first[1:] = ~same[sel[1:] - 1] | (sel[1:] - 1 != sel[:-1])
        group_start = np.maximum.accumulate(np.where(first, np.arange(sel.shape[0]), 0))
        cand = np.flatnonzero(~first)
        by_pos = np.argsort(pos[cand], kind="stable")
        cand_l = cand[by_pos].tolist()
        pos_l = pos.tolist()
        gs = group_start.tolist()
        skipped = bytearray(m)
        idx = 0
        total = 0
        for j in cand_l:
            p = pos_l[j]
            if p < idx:
                continue  # jumped over: not visited
            # visited; its n-gram was seen if an earlier occurrence was visited
            seen = False
            for e in range(j - 1, gs[j] - 1, -1):
                if not skipped[pos_l[e]]:
                    seen = True
                    break
            if seen:
                total += int(cs[p + n] - cs[p])
                if total > limit:
                    return True
                idx = p + n
                stop = min(p + n, m)
                skipped[p + 1:stop] = bytes([1]) * (stop - p - 1)
            else:
                idx = p + 1
        return False


# --------------------------------------------------------------------------- block-list


def default_blocklist() -> list[str]:
    """The small default block-list shipped with lmkit (``lmkit/resources/blocklist.txt``)."""
    text = resources.files("lmkit").joinpath("resources/blocklist.txt").read_text(encoding="utf-8")
    return _parse_terms(text)


def blocklist_terms(cfg: BlocklistConfig) -> list[str]:
    """The block-list a config asks for: ``words_file`` (or the default list) plus ``extra``."""
    if cfg.words_file:
        p = Path(cfg.words_file).expanduser()
        try:
            terms = _parse_terms(p.read_text(encoding="utf-8"))
        except OSError as e:
            raise LmkitError(f"{p}: cannot read block-list ({e.strerror or e})") from None
        except UnicodeDecodeError:
            raise LmkitError(f"{p}: block-list is not UTF-8 text") from None
    else:
        terms = default_blocklist()
    return terms + [" ".join(t.lower().split()) for t in cfg.extra if t.strip()]


def _parse_terms(text: str) -> list[str]:
    out = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip().lower()
        if line:
            out.append(" ".join(line.split()))
    return out


class BlockList:
    """Remove a document when block-listed words/phrases make up more than ``max_fraction`` of its words."""

    name = "blocklist"

    def __init__(self, cfg: BlocklistConfig, terms: list[str] | None = None) -> None:
        self.cfg = cfg
        self.terms = blocklist_terms(cfg) if terms is None else terms
        terms = self.terms
        self.words = frozenset(t for t in terms if " " not in t and _WORD_RE.fullmatch(t))
        # single words are matched by the lower-case hash of each token (no strings built)
        self._word_hashes = np.unique(np.array([int(tokens_of(w).hashes(lower=True)[0]) for w in self.words],
                                               dtype=np.uint64))
        self.phrases = [(t, re.compile(r"(?<!\w)" + re.escape(t).replace(r"\ ", r"\s+") + r"(?!\w)"))
                        for t in sorted(set(terms) - self.words)]

    def __call__(self, text: str) -> str | Removed:
        tok = tokens_of(text)
        if not len(tok):
            return text
        hits = 0
        if self._word_hashes.size:
            h = tok.hashes(lower=True)
            at = np.minimum(np.searchsorted(self._word_hashes, h), self._word_hashes.size - 1)
            hits = int(np.count_nonzero(self._word_hashes[at] == h))
        if self.phrases:
            low = text.lower()
            for first, pat in self.phrases:
                if first.split(" ", 1)[0] in low:
                    hits += len(pat.findall(low))
        if hits and hits / len(tok) > self.cfg.max_fraction:
            return Removed("blocklisted_words")
        return text


# --------------------------------------------------------------------------- PII

_EMAIL_RE = re.compile(
    r"(?<![\w.%+-])[A-Za-z0-9][A-Za-z0-9._%+-]*@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}(?![\w-])")
_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_IPV4_RE = re.compile(rf"(?<![\d.])(?:{_OCTET}\.){{3}}{_OCTET}(?!\d|\.\d)")
_IPV6_RE = re.compile(r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:[0-9A-Fa-f]{1,4}|(?:\d{1,3}\.){3}\d{1,3})?(?![\w:])")
_PHONE_RE = re.compile(
    r"(?<![\w+])(?:"
    r"\+\d{1,3}(?:[ .-]?(?:\(\d{1,4}\)|\d{1,5})){1,6}"  # international: +CC then groups
    r"|(?:1[ .-]?)?(?:\(\d{3}\)[ .-]?\d{3}[ .-]|\d{3}(?P<sep>[ .-])\d{3}(?P=sep))\d{4}"  # North American 3-3-4
    r"|0\d{1,4}(?:[ .-]\d{2,4}){2,4}"  # national trunk prefix 0 then groups (UK, FR, DE, ...)
    r")(?![\w])")


class PiiRedact:
    """Replace e-mail addresses, phone numbers and IPv4/IPv6 addresses with placeholders."""

    name = "pii"

    def __init__(self, cfg: PiiConfig) -> None:
        self.cfg = cfg
        self.counts: Counter[str] = Counter()

    def _ip(self, m: re.Match[str]) -> str:
        s = m.group(0)
        try:
            ip = ipaddress.ip_address(s)
        except ValueError:
            return s
        if self.cfg.public_ips_only and not ip.is_global:
            return s
        self.counts["ip_addresses"] += 1
        return self.cfg.ip_placeholder

    def _phone(self, m: re.Match[str]) -> str:
        s = m.group(0)
        digits = sum(ch.isdigit() for ch in s)
        if not (8 if s.startswith("+") else 10) <= digits <= 15:
            return s
        self.counts["phone_numbers"] += 1
        return self.cfg.phone_placeholder

    def _email(self, m: re.Match[str]) -> str:
        self.counts["emails"] += 1
        return self.cfg.email_placeholder

    def __call__(self, text: str) -> str | Removed:
        c = self.cfg
        # where to look is decided on the code points with numpy; the full patterns then run only
        # in those windows (tried at every position of a long text, they are slow)
        if c.emails and "@" in text:
            cp = _codepoints(text)
            text = _sub_windows(_EMAIL_RE, text, _windows(np.flatnonzero(cp == 64), 80, 260, cp.size), self._email)
        if c.ips and "." in text:
            cp = _codepoints(text)
            digit = (cp - np.uint32(48)) <= 9
            dots = np.flatnonzero(digit[:-2] & (cp[1:-1] == 46) & digit[2:]) + 1  # digit.digit
            if dots.size >= 3:
                text = _sub_windows(_IPV4_RE, text, _windows(dots, 5, 6, cp.size), self._ip)
        if c.ips and ":" in text:
            cp = _codepoints(text)
            colons = np.flatnonzero(cp == 58)
            close = colons[:-1][np.diff(colons) <= 5]  # two colons near each other
            if close.size:
                text = _sub_windows(_IPV6_RE, text, _windows(close, 45, 50, cp.size), self._ip)
        if c.phones:
            cp = _codepoints(text)
            text = _sub_windows(_PHONE_RE, text, _phone_windows(cp), self._phone)
        return text


def _codepoints(text: str) -> np.ndarray:
    t = _LAST_TOKENS[0]
    if t is not None and t.text is text:
        return t.cp  # type: ignore[no-any-return]
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)


def _windows(pos: np.ndarray, before: int, after: int, size: int) -> list[tuple[int, int]]:
    """Merged ``[p - before, p + after)`` windows around sorted positions."""
    if pos.size == 0:
        return []
    lo = np.maximum(pos - before, 0)
    hi = np.maximum.accumulate(np.minimum(pos + after, size))
    new = np.empty(pos.size, dtype=bool)
    new[0] = True
    new[1:] = lo[1:] > hi[:-1]
    last = np.empty(pos.size, dtype=bool)
    last[:-1] = new[1:]
    last[-1] = True
    return list(zip(lo[new].tolist(), hi[last].tolist()))


_PHONE_CHARS = np.array([32, 40, 41, 43, 45, 46], dtype=np.uint32)  # space ( ) + - .


def _phone_windows(cp: np.ndarray) -> list[tuple[int, int]]:
    """Runs of phone characters (digits, space, ( ) + - .) holding at least 8 digits."""
    digit = (cp - np.uint32(48)) <= 9
    if np.count_nonzero(digit) < 8:
        return []
    ok = digit | np.isin(cp, _PHONE_CHARS)
    edge = np.empty(ok.size + 1, dtype=bool)
    edge[0], edge[-1] = ok[0], ok[-1]
    np.not_equal(ok[1:], ok[:-1], out=edge[1:-1])
    b = np.flatnonzero(edge)
    starts, ends = b[0::2], b[1::2]
    count = np.zeros(cp.size + 1, dtype=np.int64)
    np.cumsum(digit, out=count[1:])
    keep = (count[ends] - count[starts]) >= 8
    return list(zip(np.maximum(starts[keep] - 1, 0).tolist(), np.minimum(ends[keep] + 1, cp.size).tolist()))


def _sub_windows(pattern: re.Pattern[str], text: str, windows: list[tuple[int, int]],
                 repl: Callable[[re.Match[str]], str]) -> str:
    """``pattern.sub(repl, text)`` for matches inside the windows (``repl`` may return the match
    unchanged to keep it). Lookbehinds see the text before a window; a window ends a character
    after the last one a match can use, so lookaheads see it."""
    pieces: list[str] = []
    last = 0
    for lo, hi in windows:
        if hi <= last:
            continue
        for m in pattern.finditer(text, max(lo, last), hi):
            new = repl(m)
            if new == m.group(0):
                continue
            pieces.append(text[last:m.start()])
            pieces.append(new)
            last = m.end()
    if not pieces:
        return text
    pieces.append(text[last:])
    return "".join(pieces)


# --------------------------------------------------------------------------- per-stage statistics


@dataclass
class StageStats:
    """Counts for one stage: what came in, what went out, why documents were removed."""

    name: str
    docs_in: int = 0
    docs_out: int = 0
    chars_in: int = 0
    chars_out: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    modified: int = 0  # documents kept but changed (normalised, lines dropped, PII redacted)
    seconds: float = 0.0  # time spent in the stage, summed over workers
    reasons: Counter[str] = field(default_factory=Counter)
    examples: dict[str, list[dict[str, str]]] = field(default_factory=dict)  # a few per reason
    extra: Counter[str] = field(default_factory=Counter)  # stage-specific counts (e.g. redactions)

    def add_example(self, reason: str, doc_id: str, source: str, text: str, limit: int, chars: int) -> None:
        lst = self.examples.setdefault(reason, [])
        if len(lst) < limit:
            lst.append({"id": doc_id, "source": source, "reason": reason, "text": text[:chars]})

    def merge(self, other: "StageStats", limit: int) -> None:
        for f in ("docs_in", "docs_out", "chars_in", "chars_out", "tokens_in", "tokens_out", "modified", "seconds"):
            setattr(self, f, getattr(self, f) + getattr(other, f))
        self.reasons.update(other.reasons)
        self.extra.update(other.extra)
        for reason, lst in other.examples.items():
            mine = self.examples.setdefault(reason, [])
            mine.extend(lst[:max(0, limit - len(mine))])

    @property
    def removed(self) -> int:
        return self.docs_in - self.docs_out

    def to_dict(self, n_examples: int) -> dict[str, Any]:
        # a few examples, taking one reason after another (most frequent reasons first)
        picked: list[dict[str, str]] = []
        queues = [list(self.examples.get(r, [])) for r, _ in self.reasons.most_common()]
        while len(picked) < n_examples and any(queues):
            for q in queues:
                if q and len(picked) < n_examples:
                    picked.append(q.pop(0))
        return {
            "name": self.name, "docs_in": self.docs_in, "docs_out": self.docs_out, "removed": self.removed,
            "docs_kept_pct": _pct(self.docs_out, self.docs_in), "chars_in": self.chars_in,
            "chars_out": self.chars_out, "tokens_in": self.tokens_in, "tokens_out": self.tokens_out,
            "tokens_kept_pct": _pct(self.tokens_out, self.tokens_in), "modified": self.modified,
            "seconds": round(self.seconds, 3),
            "reasons": dict(self.reasons.most_common()), "extra": dict(self.extra), "examples": picked,
        }


def _pct(a: float, b: float) -> float:
    return round(100.0 * a / b, 3) if b else 0.0


# --------------------------------------------------------------------------- the per-document pipeline

Doc = tuple[str, str, str]  # (id, text, source)


@dataclass
class ChunkResult:
    """What a worker sends back for one chunk: the surviving documents and everything dedup needs."""

    ids: list[str]
    texts: list[str]
    sources: list[str]
    tokens: np.ndarray  # tokens of each surviving document
    stats: dict[str, StageStats]
    docs_in: int = 0
    chars_in: int = 0
    tokens_in: int = 0
    exact_keys: np.ndarray | None = None  # uint64 per surviving document
    band_keys: np.ndarray | None = None  # (n, bands) uint64
    has_shingles: np.ndarray | None = None  # bool per surviving document
    sigs: np.ndarray | None = None  # (n, num_perm) uint32, only with a MinHash threshold
    key_seconds: dict[str, float] = field(default_factory=dict)  # worker time of the dedup keys


def build_stage(name: str, cfg: CurateConfig, blocklist: list[str] | None = None) -> Callable[[str], "str | Removed"]:
    """The per-document stage called ``name``, configured from ``cfg``."""
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
    from lmkit.tokenizer import Tokenizer

    tok = Tokenizer.load(tokenizer, strict=False)
    return lambda text: len(tok.encode(text))


class DocPipeline:
    """The per-document stages of a config, plus the dedup keys, run over one chunk at a time."""

    def __init__(self, cfg: CurateConfig, tokenizer: str | None = None, blocklist: list[str] | None = None) -> None:
        from lmkit.data.dedup import MinHasher

        self.cfg = cfg
        enabled = cfg.enabled_stages()
        self.stages = [(n, build_stage(n, cfg, blocklist)) for n in enabled if n not in DEDUP_STAGES]
        self.exact = "exact_dedup" in enabled
        m = cfg.minhash
        self.minhasher = MinHasher(m.num_perm, m.bands, m.shingle_size, m.seed) if "minhash" in enabled else None
        self.count_tokens = _token_counter(tokenizer)

    def run(self, docs: Sequence[Doc]) -> ChunkResult:
        from lmkit.data.dedup import exact_key

        cfg = self.cfg
        lim, ex_chars = cfg.examples_per_stage, cfg.example_chars
        stats = {n: StageStats(n) for n, _ in self.stages}
        res = ChunkResult([], [], [], np.zeros(0, dtype=np.int64), stats)
        count = self.count_tokens
        toks: list[int] = []
        for doc_id, text, source in docs:
            n_chr = len(text)
            n_tok = count(text)
            res.docs_in += 1
            res.chars_in += n_chr
            res.tokens_in += n_tok
            for name, stage in self.stages:
                st = stats[name]
                st.docs_in += 1
                st.chars_in += n_chr
                st.tokens_in += n_tok
                t0 = time.perf_counter()
                out = stage(text)
                st.seconds += time.perf_counter() - t0
                if type(out) is Removed:
                    st.reasons[out.reason] += 1
                    st.add_example(out.reason, doc_id, source, text, lim, ex_chars)
                    break
                if out is not text:
                    st.modified += 1
                    text = out  # type: ignore[assignment]
                    n_chr = len(text)
                    n_tok = count(text)
                st.docs_out += 1
                st.chars_out += n_chr
                st.tokens_out += n_tok
            else:
                res.ids.append(doc_id)
                res.texts.append(text)
                res.sources.append(source)
                toks.append(n_tok)
        res.tokens = np.asarray(toks, dtype=np.int64)
        for name, stage in self.stages:
            if isinstance(stage, PiiRedact):
                stats[name].extra.update(stage.counts)
                stage.counts.clear()
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


def process_chunk(spec: str, docs: Sequence[Doc]) -> ChunkResult:
    """Run the per-document part of curation on one chunk (the unit of work of every engine).

    ``spec`` is the JSON of ``{"config": ..., "tokenizer": ..., "blocklist": [...]}``; the pipeline
    built from it is cached per process, so a worker builds it once.
    """
    pipe = _PIPELINES.get(spec)
    if pipe is None:
        d = json.loads(spec)
        pipe = DocPipeline(config_from_dict(d["config"]), d.get("tokenizer"), d.get("blocklist"))
        _PIPELINES.clear()
        _PIPELINES[spec] = pipe
    return pipe.run(docs)


# --------------------------------------------------------------------------- engines


def _chunks(docs: Iterable[Any], max_docs: int, max_chars: int) -> Iterator[list[Doc]]:
    chunk: list[Doc] = []
    size = 0
    for d in docs:
        chunk.append((d.id, d.text, d.source))
        size += len(d.text)
        if len(chunk) >= max_docs or size >= max_chars:
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk


def bounded_ordered_map(submit: Callable[[Any], Callable[[], Any]], items: Iterable[Any],
                        window: int) -> Iterator[Any]:
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
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


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

    def write(self, ids: Sequence[str], texts: Sequence[str], sources: Sequence[str]) -> None:
        lines: list[str] = []
        for i, t, s in zip(ids, texts, sources):
            if self._f is None or self._docs >= self.shard_docs or self._chars >= self.shard_chars:
                self._flush(lines)
                lines = []
                if self._f is not None:
                    self._f.close()
                self._open()
            lines.append(json.dumps({"id": i, "text": t, "source": s}, ensure_ascii=False))
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


def _publish(tmp: Path, out: Path) -> None:
    """Move the finished files from the temporary sibling into ``out`` (old outputs removed first)."""
    out.mkdir(parents=True, exist_ok=True)
    for old in out.iterdir():
        if OUR_FILES.fullmatch(old.name):
            old.unlink()
    for f in sorted(tmp.iterdir()):
        os.replace(f, out / f.name)
    tmp.rmdir()


# --------------------------------------------------------------------------- the run


def curate(inputs: Sequence[str | Path], out: str | Path, config: CurateConfig | None = None, *,
           workers: int = 0, overwrite: bool = False, tokenizer: str | None = None, client: Any = None,
           progress: bool = True) -> dict[str, Any]:
    """Curate ``inputs`` into ``out`` (shards + report.json + report.md); returns the report.

    ``workers``: processes (0 = all cores, 1 = in this process). ``client``: a
    ``dask.distributed.Client`` to run the per-document work on its cluster instead. Raises
    :class:`LmkitError` for an unusable ``out`` or config; unreadable input is reported, not fatal.
    """
    from lmkit import __version__
    from lmkit.data.dedup import ExactDeduper, MinHashDeduper
    from lmkit.data.read import ReadReport, iter_documents, list_files

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
    DocPipeline(cfg, tokenizer, terms)
    spec = json.dumps({"config": config_to_dict(cfg), "tokenizer": tokenizer, "blocklist": terms}, sort_keys=True)
    enabled = cfg.enabled_stages()
    per_doc = [n for n in enabled if n not in DEDUP_STAGES]
    dedup_order = [n for n in enabled if n in DEDUP_STAGES]
    stats = {n: StageStats(n) for n in enabled}
    exact = ExactDeduper() if "exact_dedup" in enabled else None
    near = MinHashDeduper(cfg.minhash.bands, cfg.minhash.threshold) if "minhash" in enabled else None
    lim, ex_chars = cfg.examples_per_stage, cfg.example_chars

    read_report = ReadReport()
    docs = iter_documents(inputs, text_field=cfg.text_field, lenient=True, report=read_report,
                          text_doc_chars=cfg.text_doc_chars)
    chunks = _chunks(docs, cfg.chunk_docs, cfg.chunk_chars)

    n_workers = default_workers() if workers <= 0 else workers
    pool: Any = None
    if client is not None:
        try:
            threads = sum(client.nthreads().values())
        except Exception:  # noqa: BLE001 - any client without nthreads(): assume a few
            threads = 2
        engine = f"dask ({client.scheduler.address if getattr(client, 'scheduler', None) else 'client'}, " \
                 f"{threads} thread{'s' if threads != 1 else ''})"
        window = 2 * threads + 2

        def submit(chunk: list[Doc]) -> Callable[[], ChunkResult]:
            fut = client.submit(process_chunk, spec, chunk, pure=False)
            return fut.result  # type: ignore[no-any-return]
    elif n_workers == 1:
        engine, window = "in-process", 1

        def submit(chunk: list[Doc]) -> Callable[[], ChunkResult]:
            r = process_chunk(spec, chunk)
            return lambda: r
    else:
        import multiprocessing as mp

        pool = mp.get_context().Pool(n_workers)
        engine, window = f"{n_workers} processes", 2 * n_workers + 2

        def submit(chunk: list[Doc]) -> Callable[[], ChunkResult]:
            return pool.apply_async(process_chunk, (spec, chunk)).get  # type: ignore[no-any-return]

    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    writer = ShardWriter(tmp, cfg.shard_docs, cfg.shard_chars, cfg.compress_level)
    totals = Counter()
    t0 = time.perf_counter()
    from tqdm import tqdm

    # progress over the input: on-disk bytes read (compressed size for .gz/.zst), with the
    # documents seen and the share kept so far
    bar = tqdm(total=input_bytes, unit="B", unit_scale=True, unit_divisor=1024, desc="curate", file=sys.stderr,
               disable=not progress, dynamic_ncols=True, mininterval=0.5)
    try:
        for res in bounded_ordered_map(submit, chunks, window):
            totals["docs_in"] += res.docs_in
            totals["chars_in"] += res.chars_in
            totals["tokens_in"] += res.tokens_in
            for n in per_doc:
                stats[n].merge(res.stats[n], lim)
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
            writer.write([res.ids[i] for i in kept_idx], [res.texts[i] for i in kept_idx],
                         [res.sources[i] for i in kept_idx])
            totals["docs_out"] += len(kept_idx)
            totals["chars_out"] += sum(len(res.texts[i]) for i in kept_idx)
            totals["tokens_out"] += int(res.tokens[kept_idx].sum()) if kept_idx else 0
            bar.update(min(read_report.bytes_read(), input_bytes) - bar.n)
            bar.set_postfix(docs=totals["docs_in"], kept=f"{_pct(totals['docs_out'], totals['docs_in']):.1f}%",
                            refresh=False)
        files = writer.close()
        bar.update(input_bytes - bar.n)
        bar.close()
        seconds = time.perf_counter() - t0
        report = {
            "lmkit_version": __version__,
            "inputs": [str(p) for p in inputs],
            "out": str(out),
            "engine": engine,
            "token_counter": (f"tokenizer {tokenizer}" if tokenizer else
                              "proxy: regex word tokens \\w+|[^\\w\\s]+ (runs of letters/digits, runs of punctuation)"),
            "totals": {
                "docs_in": totals["docs_in"], "docs_out": totals["docs_out"],
                "chars_in": totals["chars_in"], "chars_out": totals["chars_out"],
                "tokens_in": totals["tokens_in"], "tokens_out": totals["tokens_out"],
                "docs_kept_pct": _pct(totals["docs_out"], totals["docs_in"]),
                "chars_kept_pct": _pct(totals["chars_out"], totals["chars_in"]),
                "tokens_kept_pct": _pct(totals["tokens_out"], totals["tokens_in"]),
                "removed": totals["docs_in"] - totals["docs_out"],
            },
            "stages": [stats[n].to_dict(lim) for n in enabled],
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
        _publish(tmp, out)
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


# --------------------------------------------------------------------------- report.md


def _fmt_int(n: int) -> str:
    return f"{n:,}"


def _md_escape(s: str) -> str:
    return s.replace("|", "\\|").replace("\n", " ⏎ ")


def report_markdown(r: dict[str, Any]) -> str:
    """The human-readable report: survival table, reasons, examples, read problems."""
    t = r["totals"]
    lines = ["# Curation report", ""]
    lines.append(f"Inputs: {', '.join(r['inputs'])}  ")
    lines.append(f"Output: {r['out']} ({len(r['output']['shards'])} shards, {r['output']['format']})  ")
    lines.append(f"Engine: {r['engine']}; {r['seconds']:.1f} s, {r['mb_per_s']:.2f} M chars/s, "
                 f"{r['docs_per_s']:.0f} docs/s  ")
    lines.append(f"Tokens counted with: {r['token_counter']}")
    lines += ["", "## Overall", "",
              "| | documents | characters | tokens |", "|---|---:|---:|---:|",
              f"| in | {_fmt_int(t['docs_in'])} | {_fmt_int(t['chars_in'])} | {_fmt_int(t['tokens_in'])} |",
              f"| out | {_fmt_int(t['docs_out'])} | {_fmt_int(t['chars_out'])} | {_fmt_int(t['tokens_out'])} |",
              f"| kept | {t['docs_kept_pct']:.2f}% | {t['chars_kept_pct']:.2f}% | {t['tokens_kept_pct']:.2f}% |",
              "", "## Stages (in order)", "",
              "| stage | docs in | docs out | removed | modified | chars in | chars out | tokens in | tokens out "
              "| tokens kept | seconds |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for s in r["stages"]:
        lines.append(f"| {s['name']} | {_fmt_int(s['docs_in'])} | {_fmt_int(s['docs_out'])} | {_fmt_int(s['removed'])} "
                     f"| {_fmt_int(s['modified'])} | {_fmt_int(s['chars_in'])} | {_fmt_int(s['chars_out'])} "
                     f"| {_fmt_int(s['tokens_in'])} | {_fmt_int(s['tokens_out'])} | {s['tokens_kept_pct']:.2f}% "
                     f"| {s['seconds']:.1f} |")
    lines += ["", "## Why documents were removed", ""]
    for s in r["stages"]:
        if not s["reasons"] and not s["extra"]:
            continue
        lines.append(f"### {s['name']}")
        lines.append("")
        for reason, n in s["reasons"].items():
            lines.append(f"- {reason}: {_fmt_int(n)}")
        for key, n in s["extra"].items():
            lines.append(f"- {key} replaced: {_fmt_int(n)}")
        if s["examples"]:
            lines += ["", "Examples of removed documents:", ""]
            for ex in s["examples"]:
                snippet = _md_escape(ex["text"][:300])
                lines.append(f"- `{ex['id']}` ({ex['reason']}): {snippet}")
        lines.append("")
    rd = r["read"]
    lines += ["## Reading", "",
              f"{_fmt_int(rd['files_read'])} files read, {_fmt_int(rd['documents'])} documents; "
              f"{_fmt_int(rd['skipped_file_count'])} files skipped, {_fmt_int(rd['bad_line_count'])} bad lines "
              f"skipped, {len(rd['empty_files'])} empty files, {_fmt_int(rd['empty_records'])} empty records.", ""]
    for path, reason in rd["skipped_files"]:
        lines.append(f"- skipped file `{path}`: {reason}")
    for path, line, reason in rd["bad_lines"]:
        lines.append(f"- `{path}` line {line}: {reason}")
    for path in rd["empty_files"]:
        lines.append(f"- empty file `{path}`")
    di = r["dedup_index"]
    lines += ["", "## Dedup index", "",
              f"exact: {_fmt_int(di['exact_keys'])} keys, {di['exact_bytes'] / 1e6:.1f} MB; "
              f"MinHash: {_fmt_int(di['minhash_keys'])} keys, {di['minhash_bytes'] / 1e6:.1f} MB", ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------- CLI


def cli_curate(args: Any) -> int:
    """``lmkit curate``: run, print a one-paragraph summary (or the report with --json)."""
    cfg = load_curate_config(args.config)
    if getattr(args, "text_field", None):
        cfg.text_field = args.text_field
    client = None
    cluster = None
    if getattr(args, "dask", None):
        try:
            from dask.distributed import Client, LocalCluster
        except ImportError:
            raise LmkitError("--dask needs dask[distributed] (pip install 'lmkit[dist]')") from None
        if args.dask == "local":
            cluster = LocalCluster(n_workers=args.workers or default_workers(), threads_per_worker=1,
                                   processes=True, dashboard_address=None)
            client = Client(cluster)
        else:
            try:
                client = Client(args.dask)
            except OSError as e:
                raise LmkitError(f"--dask {args.dask}: cannot reach the scheduler ({e})") from None
    try:
        report = curate(args.inputs, args.out, cfg, workers=args.workers, overwrite=args.overwrite,
                        tokenizer=args.tokenizer, client=client, progress=not args.json)
    finally:
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()
    if args.json:
        print(json.dumps({k: v for k, v in report.items() if k != "config"}, indent=2, ensure_ascii=False))
        return 0
    t = report["totals"]
    print(f"curated {t['docs_in']:,} documents -> kept {t['docs_out']:,} ({t['docs_kept_pct']:.1f}%), "
          f"tokens {t['tokens_in']:,} -> {t['tokens_out']:,} ({t['tokens_kept_pct']:.1f}%) "
          f"in {report['seconds']:.1f} s ({report['mb_per_s']:.2f} M chars/s)")
    for s in report["stages"]:
        top = ", ".join(f"{k} {v:,}" for k, v in list(s["reasons"].items())[:3])
        print(f"  {s['name']:<18} removed {s['removed']:>9,}  kept {s['docs_kept_pct']:6.2f}%" + (f"  ({top})" if top else ""))
    rd = report["read"]
    if rd["skipped_file_count"] or rd["bad_line_count"]:
        print(f"  read problems: {rd['skipped_file_count']} files skipped, {rd['bad_line_count']} bad lines "
              f"(listed in report.md)")
    print(f"wrote {len(report['output']['shards'])} shards, report.json and report.md to {report['out']}")
    return 0


__all__ = [
    "CurateConfig", "NormaliseConfig", "GopherQualityConfig", "C4Config", "RepetitionConfig", "BlocklistConfig",
    "PiiConfig", "ExactDedupConfig", "MinHashConfig", "STAGES", "load_curate_config", "Removed", "Normalise",
    "GopherQuality", "C4Quality", "GopherRepetition", "BlockList", "PiiRedact", "build_stage", "DocPipeline",
    "process_chunk", "curate", "report_markdown", "cli_curate", "words_of", "proxy_tokens", "count_sentences",
    "bounded_ordered_map", "check_out_dir", "StageStats", "default_blocklist",
]
