"""Curation settings: the stage names, one dataclass per stage, :class:`CurateConfig` (the YAML
``--config``, with dotted command-line overrides such as ``--c4.curly_bracket false``) with its
validation, loading and round trip through a dict, and :class:`Removed` (a stage's verdict that a
document goes).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple

from lmkit.config_io import ConfigError, apply_overrides, from_dict
from lmkit.data.dedup import check_minhash
from lmkit.errors import LmkitError

# --------------------------------------------------------------------------- configuration

STAGES = (
    "url_filter",
    "extract",
    "normalise",
    "language",
    "gopher_quality",
    "c4",
    "gopher_repetition",
    "blocklist",
    "pii",
    "exact_dedup",
    "minhash",
)
DEDUP_STAGES = ("exact_dedup", "minhash")
GOPHER_STOP_WORDS = ["the", "be", "to", "of", "and", "that", "have", "with"]


@dataclass
class UrlFilterConfig:
    """FineWeb's URL filter: remove a page whose URL is on the block-list (documents without a URL pass)."""

    enabled: bool = True
    list_file: str | None = None  # replaces the shipped list (lmkit/resources/url_blocklist.txt), same format
    extra: list[str] = field(default_factory=list)  # entries added, e.g. "domain casino.example", "word warez"
    soft_word_hits: int = 2  # "soft" words remove a page only when this many are in its URL


@dataclass
class ExtractConfig:
    """HTML pages (WARC records, .html files) to their main text; switched off, the page's HTML is kept as text."""

    enabled: bool = True
    html: str = "resiliparse"  # or trafilatura (FineWeb's extractor, ~30x slower here)
    timeout_s: float | None = 10.0  # a page still being extracted after this long is dropped and named; null: none


@dataclass
class LanguageConfig:
    """Language identification (py3langid's model, shipped inside the package): every document is
    labelled, and with ``languages`` set only those languages at ``min_score`` or more are kept."""

    enabled: bool = True
    languages: list[str] = field(default_factory=list)  # ISO 639-1 codes to keep; empty keeps every language
    min_score: float = 0.65  # the identifier's probability needed to keep a document (FineWeb's 0.65)
    sample_chars: int = 1000  # identify on this many characters from the start of the text (speed)


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
    # THE, OF and TO in ALL-CAPS legal text are stop words too; true restores the published
    # (case-sensitive) reading that removes capitalised disclaimers
    stop_words_case_sensitive: bool = False


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
        default_factory=lambda: {5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10}
    )


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
    url_filter: UrlFilterConfig = field(default_factory=UrlFilterConfig)
    extract: ExtractConfig = field(default_factory=ExtractConfig)
    normalise: NormaliseConfig = field(default_factory=NormaliseConfig)
    language: LanguageConfig = field(default_factory=LanguageConfig)
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
    # warn (printed and in the report) when one rule removes at least this share of one source's
    # documents; null: no warnings
    warn_source_share: float | None = 0.5

    def validate(self) -> None:
        for name in self.order:
            if name not in STAGES:
                raise LmkitError(f"curate config: unknown stage {name!r} in order (stages: {', '.join(STAGES)})")
        if len(set(self.order)) != len(self.order):
            raise LmkitError("curate config: a stage is listed twice in order")
        text_stages = [n for n in self.order if n not in ("url_filter", "extract")]
        if "extract" in self.order and text_stages and self.order.index("extract") > self.order.index(text_stages[0]):
            raise LmkitError(
                f"curate config: stage 'extract' comes after {text_stages[0]!r}; HTML must become text "
                "before the text stages (only url_filter may come before it)"
            )
        seen_dedup = False
        for name in self.order:
            if name in DEDUP_STAGES:
                seen_dedup = True
            elif seen_dedup:
                raise LmkitError(
                    f"curate config: stage {name!r} comes after a dedup stage; dedup stages "
                    "(exact_dedup, minhash) must be last in order"
                )
        for key, table in (
            ("top_ngram_char_frac", self.gopher_repetition.top_ngram_char_frac),
            ("dup_ngram_char_frac", self.gopher_repetition.dup_ngram_char_frac),
        ):
            if not isinstance(table, dict):
                raise LmkitError(f"curate config: gopher_repetition.{key} must map n to a fraction, e.g. {{2: 0.2}}")
            for n, frac in table.items():
                if not isinstance(n, int) or isinstance(n, bool) or n < 1 or not isinstance(frac, (int, float)):
                    raise LmkitError(f"curate config: gopher_repetition.{key}: bad entry {n!r}: {frac!r}")
        m = self.minhash
        try:
            check_minhash(m.num_perm, m.bands, m.shingle_size)
        except LmkitError as e:
            raise LmkitError(f"curate config: {e}") from None
        if isinstance(m.seed, bool) or not isinstance(m.seed, int) or m.seed < 0:
            raise LmkitError(f"curate config: minhash.seed must be a non-negative integer, got {m.seed!r}")
        if m.threshold is not None and not 0.0 < m.threshold <= 1.0:
            raise LmkitError(f"curate config: minhash.threshold must be in (0, 1], got {m.threshold}")
        if self.normalise.max_blank_lines < 0:
            raise LmkitError("curate config: normalise.max_blank_lines must be >= 0")
        for key in ("chunk_docs", "chunk_chars", "shard_docs", "shard_chars", "text_doc_chars"):
            if getattr(self, key) < 1:
                raise LmkitError(f"curate config: {key} must be at least 1")
        if not 0 <= self.compress_level <= 9:
            raise LmkitError("curate config: compress_level must be 0..9")
        from lmkit.data.extract import HTML_EXTRACTORS

        if self.extract.html not in HTML_EXTRACTORS:
            raise LmkitError(
                f"curate config: extract.html must be {' or '.join(HTML_EXTRACTORS)}, got {self.extract.html!r}"
            )
        lang = self.language
        bad = [x for x in lang.languages if not (isinstance(x, str) and re.fullmatch(r"[a-z]{2,3}", x))]
        if bad:
            raise LmkitError(
                f"curate config: language.languages: {bad[0]!r} is not an ISO 639-1 code such as en, de, fr"
            )
        if not 0.0 <= lang.min_score <= 1.0:
            raise LmkitError(f"curate config: language.min_score must be in [0, 1], got {lang.min_score}")
        if lang.sample_chars < 1:
            raise LmkitError("curate config: language.sample_chars must be at least 1")
        if self.extract.timeout_s is not None and self.extract.timeout_s <= 0:
            raise LmkitError(f"curate config: extract.timeout_s must be positive or null, got {self.extract.timeout_s}")
        if self.url_filter.soft_word_hits < 1:
            raise LmkitError("curate config: url_filter.soft_word_hits must be at least 1")
        if self.warn_source_share is not None and not 0.0 < self.warn_source_share <= 1.0:
            raise LmkitError(
                f"curate config: warn_source_share must be in (0, 1] or null, got {self.warn_source_share}"
            )

    def enabled_stages(self) -> list[str]:
        return [n for n in self.order if getattr(self, n).enabled]


def load_curate_config(path: str | Path | None, overrides: dict[str, Any] | None = None) -> CurateConfig:
    """Read a curate YAML (any subset of :class:`CurateConfig`'s keys; None: the defaults) and apply
    dotted ``overrides`` (``{"c4.curly_bracket": "false"}``, values read as YAML)."""
    import yaml

    where = "curate config"
    raw: Any = {}
    if path is not None:
        p = Path(path)
        where = str(p)
        if not p.is_file():
            raise LmkitError(f"{p}: config file not found")
        try:
            raw = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            at = f"{p}:{mark.line + 1}" if mark is not None else str(p)
            what = getattr(e, "problem", None) or str(e).splitlines()[0]
            raise LmkitError(f"{at}: not valid YAML ({what})") from None
        except (OSError, UnicodeDecodeError) as e:
            raise LmkitError(f"{p}: cannot read config ({e})") from None
        if not isinstance(raw, dict):
            raise LmkitError(f"{p}: top level must be a mapping of curate settings")
    try:
        if overrides:
            where = f"{where} with {', '.join('--' + k for k in overrides)}" if path is not None else "curate flags"
            raw = apply_overrides(raw, overrides)
        cfg = from_dict(CurateConfig, raw)
    except ConfigError as e:
        raise LmkitError(f"{where}: {e}") from None
    try:
        cfg.validate()
    except LmkitError as e:
        raise LmkitError(f"{where}: {e}" if path is not None else str(e)) from None
    return cfg


def config_to_dict(cfg: CurateConfig) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def config_from_dict(d: dict[str, Any]) -> CurateConfig:
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
