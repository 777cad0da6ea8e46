"""The stages that see a document, not only its text: :class:`UrlFilter` (FineWeb's URL block-list
of domains and words), :class:`Extract` (HTML to main text, on the worker processes) and
:class:`LanguageId` (py3langid's model, which ships inside the package: no download at run time).

Each has ``apply(doc) -> doc | Removed``; the document's URL, title and language travel on it
(:class:`~lmkit.data.document.Document`). A document without a URL passes the URL filter, one
without HTML passes extraction unchanged, and the language stage labels every document it sees
(``language``, ``language_score``) and counts them per language (``counts``, ``chars``: the
pipeline moves them into the report after each chunk).
"""

from __future__ import annotations

import re
from collections import Counter
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from lmkit.data.curate.config import ExtractConfig, LanguageConfig, Removed, UrlFilterConfig
from lmkit.data.document import Document
from lmkit.data.extract import ExtractError, decode_html, extract_document
from lmkit.errors import LmkitError

# --------------------------------------------------------------------------- URL filter

URL_KINDS = ("domain", "word", "subword", "soft")


def url_blocklist(cfg: UrlFilterConfig) -> dict[str, list[str]]:
    """The URL block-list a config asks for (``list_file``, else the shipped list, plus ``extra``),
    as kind -> values. A malformed line is one error naming the file and line."""
    if cfg.list_file:
        p = Path(cfg.list_file).expanduser()
        try:
            text, where = p.read_text(encoding="utf-8"), str(p)
        except OSError as e:
            raise LmkitError(f"{p}: cannot read the URL block-list ({e.strerror or e})") from None
        except UnicodeDecodeError:
            raise LmkitError(f"{p}: the URL block-list is not UTF-8 text") from None
    else:
        text = resources.files("lmkit").joinpath("resources/url_blocklist.txt").read_text(encoding="utf-8")
        where = "lmkit/resources/url_blocklist.txt"
    out: dict[str, list[str]] = {k: [] for k in URL_KINDS}
    lines = [(f"{where}:{i}", line) for i, line in enumerate(text.splitlines(), 1)]
    lines += [(f"url_filter.extra[{i}]", line) for i, line in enumerate(cfg.extra)]
    for at, line in lines:
        line = line.split("#", 1)[0].strip().lower()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 2 or parts[0] not in URL_KINDS:
            raise LmkitError(
                f"{at}: {line!r} is not '<kind> <value>' with kind one of {', '.join(URL_KINDS)} (e.g. 'domain x.com')"
            )
        out[parts[0]].append(parts[1].removeprefix("www.") if parts[0] == "domain" else parts[1])
    return out


_URL_WORD_RE = re.compile(r"[^\W_]+")


class UrlFilter:
    """Remove a page whose URL's host is a blocked domain (or under one), or whose host and path
    hold a blocked word, a blocked subword, or ``soft_word_hits`` soft words."""

    name = "url_filter"

    def __init__(self, cfg: UrlFilterConfig, lists: dict[str, list[str]] | None = None) -> None:
        self.cfg = cfg
        lists = url_blocklist(cfg) if lists is None else lists
        self.domains = frozenset(lists.get("domain", []))
        self.words = frozenset(lists.get("word", []))
        self.soft = frozenset(lists.get("soft", []))
        subs = sorted(set(lists.get("subword", [])), key=len, reverse=True)
        self._sub_re = re.compile("|".join(map(re.escape, subs))) if subs else None

    def verdict(self, url: str) -> str | None:
        """The reason ``url`` is blocked, or None."""
        try:
            parts = urlsplit(url.strip().lower())
        except ValueError:
            return None
        host = (parts.hostname or "").removeprefix("www.")
        labels = host.split(".")
        for i in range(len(labels) - 1):  # the host and every parent domain but the bare suffix
            if ".".join(labels[i:]) in self.domains:
                return "url_blocked_domain"
        rest = host + "/" + parts.path + "?" + parts.query
        words = _URL_WORD_RE.findall(rest)
        if self.words.intersection(words):
            return "url_blocked_word"
        if self._sub_re is not None and self._sub_re.search("".join(words)):
            return "url_blocked_subword"
        if self.soft and len(self.soft.intersection(words)) >= self.cfg.soft_word_hits:
            return "url_soft_words"
        return None

    def apply(self, doc: Document) -> Document | Removed:
        if not doc.url:
            return doc
        why = self.verdict(doc.url)
        return Removed(why) if why else doc


# --------------------------------------------------------------------------- extraction


class Extract:
    """HTML to its main text (see :mod:`lmkit.data.extract`); disabled, the page's HTML becomes its text."""

    name = "extract"

    def __init__(self, cfg: ExtractConfig) -> None:
        self.cfg = cfg
        self.failures: list[tuple[str, str, str]] = []  # (source, page, reason), moved to the read report per chunk

    def apply(self, doc: Document) -> Document | Removed:
        if doc.html is None:
            return doc
        if not self.cfg.enabled:
            doc.text, doc.html = decode_html(doc.html), None
            return doc
        try:
            out = extract_document(doc, self.cfg.html, self.cfg.timeout_s)
        except ExtractError as e:
            self.failures.append((doc.source, doc.url or doc.id, str(e)))
            return Removed("extract_failed")
        return out if out.text else Removed("extract_no_main_text")


# --------------------------------------------------------------------------- language


_IDENTIFIER: list[Any] = []


def language_identifier() -> Any:
    """py3langid's identifier with normalised probabilities (loaded once per process)."""
    if not _IDENTIFIER:
        try:
            from py3langid.langid import MODEL_FILE, LanguageIdentifier
        except ImportError:
            raise LmkitError("language identification needs py3langid (pip install py3langid)") from None
        _IDENTIFIER.append(LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True))
    return _IDENTIFIER[0]


def identify(text: str) -> tuple[str, float]:
    """(ISO 639-1 code, probability) of ``text``."""
    label, score = language_identifier().classify(text)
    return str(label), float(score)


class LanguageId:
    """Label each document with its language; with ``languages`` set, keep only those at ``min_score``."""

    name = "language"

    def __init__(self, cfg: LanguageConfig) -> None:
        self.cfg = cfg
        self.keep = frozenset(cfg.languages)
        self.counts: Counter[str] = Counter()  # documents seen per language
        self.chars: Counter[str] = Counter()  # their characters
        language_identifier()

    def apply(self, doc: Document) -> Document | Removed:
        c = self.cfg
        label, score = identify(doc.text[: c.sample_chars])
        doc.language, doc.language_score = label, round(score, 4)
        self.counts[label] += 1
        self.chars[label] += len(doc.text)
        if self.keep:
            if label not in self.keep:
                return Removed("language_not_wanted")
            if score < c.min_score:
                return Removed("language_low_score")
        return doc


__all__ = ["URL_KINDS", "Extract", "LanguageId", "UrlFilter", "identify", "language_identifier", "url_blocklist"]
