"""Markup to text: the main text, title, declared language and canonical URL of an HTML page, and
the text of a PDF page by page.

What this module owns:

* :func:`html_page` -> :class:`Page`. Two extractors: ``resiliparse`` (the default: its
  main-content extraction keeps each paragraph on one line and ran ~30x faster than
  trafilatura on this machine's HTML documentation, see ``benchmarks/curate_speed.py``) and
  ``trafilatura`` (FineWeb's choice, with datatrove's settings: precision over recall, no
  comments, its own deduplication). The bytes are read as UTF-8, else in the encoding
  resiliparse detects. The declared language is the ``<html lang>`` primary subtag, lower case.
* :func:`extract_document` fills a read :class:`~lmkit.data.document.Document`'s text from its
  ``html`` (a page with no main text comes back with empty text); an extractor that fails on a
  page, or is still busy after the time limit given (a page that makes it loop), raises
  :class:`ExtractError` with a one-line reason, never its own traceback.
* :func:`pdf_pages` yields ``(page number, text, title)`` for each page of a PDF (``pypdf``); a
  page that cannot be extracted is counted and named in the :class:`ReadReport` and skipped, a
  file that is not a readable PDF is a :class:`~lmkit.data.compressed.ReadFailure` (inside a WARC
  record: a bad record, so the rest of the WARC is read).
"""

from __future__ import annotations

import contextlib
import dataclasses
import html as html_lib
import logging
import re
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from lmkit.data.compressed import ReadFailure
from lmkit.data.document import Document, ReadReport
from lmkit.errors import LmkitError

HTML_EXTRACTORS = ("resiliparse", "trafilatura")

_LANG_RE = re.compile(rb"<html\b[^>]*?\blang\s*=\s*[\"']?([A-Za-z]{2,3})\b", re.I)
_TITLE_RE = re.compile(r"<title[^>]*>(.*?)</title\s*>", re.I | re.S)
_CANONICAL_RE = re.compile(r"<link\b[^>]*\brel\s*=\s*[\"']?canonical[\"']?[^>]*\bhref\s*=\s*[\"']([^\"']+)[\"']", re.I)


class ExtractError(Exception):
    """An extractor failed on one page; the message is one line."""


@dataclass
class Page:
    """What an HTML page yields: its main text (empty when it has none) and what it says of itself."""

    text: str
    title: str | None = None
    language: str | None = None  # the <html lang> primary subtag, lower case
    url: str | None = None  # <link rel="canonical">


def decode_html(html: bytes) -> str:
    """The page as text: UTF-8 when it is, else the encoding resiliparse detects (meta charset, sniffing)."""
    try:
        return html.decode("utf-8")
    except UnicodeDecodeError:
        from resiliparse.parse.encoding import bytes_to_str, detect_encoding

        return str(bytes_to_str(html, detect_encoding(html) or "cp1252"))


def _declared_language(html: bytes) -> str | None:
    m = _LANG_RE.search(html[:4096])
    return m.group(1).decode("ascii").lower() if m else None


def _resiliparse(text: str) -> tuple[str, str | None]:
    from resiliparse.extract.html2text import extract_plain_text
    from resiliparse.parse.html import HTMLTree

    tree = HTMLTree.parse(text)
    body = extract_plain_text(
        tree, main_content=True, alt_texts=False, links=False, form_fields=False, noscript=False, comments=False
    )
    title = tree.title.strip() if tree.title else None
    return body, title or None


def _trafilatura(text: str) -> tuple[str, str | None]:
    import trafilatura

    # extract() without its metadata search (dates, authors: twice the time), as datatrove calls it
    body = trafilatura.extract(text, favor_precision=True, include_comments=False, deduplicate=True)
    m = _TITLE_RE.search(text[:20000])
    title = " ".join(html_lib.unescape(m.group(1)).split()) if m else ""
    return body or "", title or None


class _TimedOut(BaseException):
    """Not an Exception: a parser that catches every Exception (trafilatura 2) must not swallow it."""


@contextlib.contextmanager
def _time_limit(seconds: float | None) -> Iterator[None]:
    """Raise :class:`_TimedOut` in this thread after ``seconds`` (Unix, main thread only: elsewhere no limit)."""
    if not seconds or not hasattr(signal, "setitimer") or threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_alarm(signum: int, frame: Any) -> None:
        raise _TimedOut

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def html_page(html: bytes, extractor: str = "resiliparse", timeout_s: float | None = None) -> Page:
    """The main text and metadata of one HTML page (see the module docstring); an extractor still
    busy after ``timeout_s`` seconds is stopped (an :class:`ExtractError`), as datatrove does."""
    if extractor not in HTML_EXTRACTORS:
        raise LmkitError(f"unknown HTML extractor {extractor!r} (choose {' or '.join(HTML_EXTRACTORS)})")
    text = decode_html(html)
    try:
        with _time_limit(timeout_s):
            body, title = _resiliparse(text) if extractor == "resiliparse" else _trafilatura(text)
    except _TimedOut:
        raise ExtractError(f"{extractor} took longer than {timeout_s:g} s (extract.timeout_s)") from None
    except Exception as e:  # noqa: BLE001 - a third-party parser on hostile input: one line, not its traceback
        raise ExtractError(
            f"{extractor} failed ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
        ) from None
    m = _CANONICAL_RE.search(text[:20000])
    return Page(body.strip(), title, _declared_language(html), m.group(1) if m else None)


def extract_document(doc: Document, extractor: str = "resiliparse", timeout_s: float | None = None) -> Document:
    """``doc`` with its text extracted from ``doc.html`` (a document without ``html`` is returned
    as it is). The record's URL wins over the page's canonical link; the declared language is kept
    in ``language`` until language identification replaces it. Raises :class:`ExtractError`."""
    if doc.html is None:
        return doc
    page = html_page(doc.html, extractor, timeout_s)
    return dataclasses.replace(
        doc,
        text=page.text,
        html=None,
        title=doc.title or page.title,
        url=doc.url or page.url,
        language=doc.language or page.language,
    )


def pdf_pages(stream: Any, src: str, report: ReadReport, record: int = 0) -> Iterator[tuple[int, str, str | None]]:
    """``(page number from 1, text, the PDF's title)`` for each page; see the module docstring."""
    from pypdf import PdfReader

    logging.getLogger("pypdf").setLevel(logging.ERROR)  # malformed PDFs log warnings per object
    where = f"record {record}: " if record else ""
    try:
        reader = PdfReader(stream)
        if reader.is_encrypted and not reader.decrypt(""):
            raise ValueError("encrypted with a password")
        n_pages = len(reader.pages)
    except Exception as e:  # noqa: BLE001 - pypdf raises many types on broken files
        reason = f"not a readable PDF ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
        if record:
            report.bad_record(src, record, reason)
            return
        raise ReadFailure(reason) from None
    title: str | None = None
    try:
        meta = reader.metadata
        title = str(meta.title).strip() or None if meta is not None and meta.title else None
    except Exception:  # noqa: BLE001 - a broken info dictionary only loses the title
        title = None
    for i in range(n_pages):
        try:
            text = reader.pages[i].extract_text() or ""
        except Exception as e:  # noqa: BLE001 - one broken page is counted, the others kept
            reason = f"{where}page {i + 1}: not extractable ({type(e).__name__})"
            report.bad_record(src, record or i + 1, reason)
            continue
        yield i + 1, text, title


__all__ = ["HTML_EXTRACTORS", "ExtractError", "Page", "decode_html", "extract_document", "html_page", "pdf_pages"]
