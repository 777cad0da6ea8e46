"""Readers for what a scrape or a document collection arrives as: WARC files (``.warc``,
``.warc.gz``), HTML files and PDF files -> :class:`~lmkit.data.document.Document`.

What this module owns:

* :func:`read_warc` streams the ``response`` and ``resource`` records of a WARC file (``warcio``,
  which reads both plain and per-record gzip WARCs). A record holding HTML becomes a document
  whose ``html`` holds the page's bytes (decoded with the HTTP charset when one is declared and
  stored as UTF-8) for :mod:`lmkit.data.extract` to turn into text, with ``id`` = the record's
  ``WARC-Record-ID`` (else ``<file>#<record>``), ``url`` = its ``WARC-Target-URI`` and ``source`` =
  the WARC file. A PDF record is extracted here (:func:`lmkit.data.extract.pdf_pages`). Every
  other record (a request, metadata, an image, a redirect) is skipped; the non-HTML responses
  are counted (``ReadReport.non_text_records``).
* An unreadable record never stops a lenient read: a record shorter than its ``Content-Length``
  (a truncated download), bytes after the last readable record (a cut gzip member), or a
  record ``warcio`` cannot parse is counted and named (file, record number, reason) with
  :meth:`ReadReport.bad_record`; what came before it is kept. Where the file cannot be read on
  past a broken record, the reason says so. A strict read stops there with one
  :class:`~lmkit.errors.LmkitError` naming the file and record.
* :func:`read_html` reads one HTML file (optionally ``.gz``/``.zst``) as one document to extract.
* :func:`read_pdf` extracts a PDF file page by page (``pypdf``) and cuts it at page boundaries
  into documents of about ``doc_chars`` characters (ids ``<file>#p<first>-<last>``), so a long
  manual is judged piece by piece like a long text file; a page that cannot be extracted is
  counted and named with its page number, and the other pages are kept. Pages are joined by a
  blank line (a paragraph break), except where a sentence runs on over the page break: then by
  a line break, so the paragraph stays one paragraph for the rules (a cut can still fall there).

HTML is extracted where the work runs (:func:`lmkit.data.read.iter_documents` in the reading
process; ``lmkit curate`` on its worker processes, so extraction uses every core); PDF text is
extracted while reading, in the reading process.
"""

from __future__ import annotations

import io
import re
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lmkit.data.compressed import ReadFailure, open_binary, split_suffix
from lmkit.data.document import Document, ReadReport
from lmkit.data.extract import pdf_pages
from lmkit.errors import LmkitError

_CHARSET_RE = re.compile(r"charset\s*=\s*[\"']?([\w.:-]+)", re.I)
_PAYLOAD_RECORDS = ("response", "resource")
_SENTENCE_END = (".", "!", "?", ":", '"', "'", "”", "’", ")")


def _as_utf8(body: bytes, content_type: str) -> bytes:
    """The page's bytes as UTF-8 when the HTTP header names another charset that decodes them."""
    m = _CHARSET_RE.search(content_type)
    if not m or m.group(1).lower().replace("_", "-") in ("utf-8", "utf8"):
        return body
    try:
        return body.decode(m.group(1)).encode("utf-8")
    except (LookupError, UnicodeDecodeError):  # an unknown or wrong charset: the extractor detects it
        return body


def _record_kind(record: Any) -> tuple[str | None, str]:
    """("html" | "pdf" | None, content type) of a response/resource record's payload."""
    if record.rec_type == "response":
        http = record.http_headers
        if http is None:
            return None, ""
        status = http.get_statuscode() or ""
        if not status.startswith("2"):
            return None, f"HTTP {status}"
        ctype = http.get_header("Content-Type") or ""
    else:
        ctype = record.rec_headers.get_header("Content-Type") or ""
    low = ctype.lower()
    if "html" in low:
        return "html", ctype
    if "application/pdf" in low:
        return "pdf", ctype
    return None, ctype


def read_warc(path: Path, report: ReadReport, lenient: bool, doc_chars: int) -> Iterator[Document]:
    """The HTML (and PDF) pages of one WARC file; see the module docstring."""
    from warcio.archiveiterator import ArchiveIterator
    from warcio.exceptions import ArchiveLoadFailed

    src = str(path)
    comp, _ = split_suffix(path)
    with open_binary(path, report) if comp == "zstd" else _RawFile(path, report) as stream:
        _check_warc(stream, comp)
        it = ArchiveIterator(stream, no_record_parse=False)
        n = 0
        try:
            for record in it:
                n += 1
                if record.rec_type not in _PAYLOAD_RECORDS:
                    continue
                kind, ctype = _record_kind(record)
                body = record.content_stream().read()
                left = getattr(record.raw_stream, "limit", 0) or 0
                url = record.rec_headers.get_header("WARC-Target-URI")
                if left > 0:
                    declared = record.rec_headers.get_header("Content-Length")
                    why = f"{url or 'record'}: truncated ({left:,} of {declared} bytes missing)"
                    _bad_record(report, lenient, src, n, why)
                    continue
                if kind is None:
                    report.non_text_records += 1
                    continue
                rid = record.rec_headers.get_header("WARC-Record-ID") or f"{src}#{n}"
                if kind == "pdf":
                    for piece in _pdf_documents(io.BytesIO(body), rid, src, report, n, doc_chars):
                        piece.url = url
                        yield piece
                    continue
                yield Document(rid, "", src, url=url, html=_as_utf8(body, ctype))
        except (ArchiveLoadFailed, ValueError, EOFError, OSError) as e:
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            why = f"unreadable record ({reason}); the rest of the file could not be read"
            _bad_record(report, lenient, src, n + 1, why)
            return
        if comp != "zstd":
            size = path.stat().st_size
            if it.offset < size:
                why = (
                    f"{size - it.offset:,} unreadable bytes from byte {it.offset:,} to the end "
                    "(a truncated or broken record)"
                )
                _bad_record(report, lenient, src, n + 1, why)


def _bad_record(report: ReadReport, lenient: bool, src: str, record: int, why: str) -> None:
    if not lenient:
        raise LmkitError(f"{src}: record {record}: {why}")
    report.bad_record(src, record, why)


def _check_warc(stream: Any, comp: str | None) -> None:
    """Refuse a file that does not start with a WARC record (``warcio`` would guess at it, noisily)."""
    head = stream.peek(4096)[:4096]
    if comp == "gzip" or head.startswith(b"\x1f\x8b"):
        try:
            head = zlib.decompressobj(31).decompress(head, 64)
        except zlib.error:
            raise ReadFailure("broken gzip data at the start; not a WARC file") from None
    if not head.lstrip(b"\r\n").startswith(b"WARC/"):
        shown = head[:20].decode("utf-8", "replace").encode("unicode_escape").decode("ascii")
        raise ReadFailure(f"not a WARC file (starts with {shown!r}, not 'WARC/')")


class _RawFile:
    """The raw file (``warcio`` undoes per-record gzip itself), registered for progress."""

    def __init__(self, path: Path, report: ReadReport) -> None:
        self.path, self.report = path, report

    def __enter__(self) -> io.BufferedReader:
        try:
            self.f = open(self.path, "rb")  # noqa: SIM115 - closed in __exit__
        except OSError as e:
            raise ReadFailure(f"cannot open ({e.strerror or e})") from None
        self.report._open = self.f
        return self.f

    def __exit__(self, *exc: object) -> None:
        self.report._open = None
        self.f.close()


def read_html(path: Path, report: ReadReport) -> Iterator[Document]:
    """One HTML file as one document to extract (its text is filled by :mod:`lmkit.data.extract`)."""
    src = str(path)
    with open_binary(path, report) as stream:
        body = stream.read()
    if body.strip():
        yield Document(src, "", src, html=body)


def read_pdf(path: Path, report: ReadReport, doc_chars: int) -> Iterator[Document]:
    """A PDF file's text, page by page, in documents of about ``doc_chars`` characters."""
    src = str(path)
    comp, _ = split_suffix(path)
    if comp is None:
        with _RawFile(path, report) as f:
            yield from _pdf_documents(f, src, src, report, 0, doc_chars)
        return
    with open_binary(path, report) as stream:  # pypdf needs random access
        data = io.BytesIO(stream.read())
    yield from _pdf_documents(data, src, src, report, 0, doc_chars)


def _pdf_documents(
    stream: Any, doc_id: str, src: str, report: ReadReport, record: int, doc_chars: int
) -> Iterator[Document]:
    """Pages of a PDF joined into documents of about ``doc_chars`` characters; a PDF that makes
    one document keeps ``doc_id``, pieces of a longer one are ``<doc_id>#p<first>-<last>``."""
    buf: list[str] = []
    size = first = last = 0
    title: str | None = None
    pending: tuple[int, int, str] | None = None  # a finished piece held back until we know more follow
    emitted = 0
    for page_no, text, meta_title in pdf_pages(stream, src, report, record):
        title = meta_title
        if not buf:
            first = page_no
        elif not buf[-1].rstrip().endswith(_SENTENCE_END):  # a sentence runs on over the page break
            buf[-1] = buf[-1].rstrip() + "\n" + text.lstrip()
            size += len(text)
            last = page_no
            text = ""
        if text:
            buf.append(text)
            size += len(text)
            last = page_no
        if size >= doc_chars:
            joined = "\n\n".join(buf)
            buf, size = [], 0
            if not joined.strip():
                continue
            if pending is not None:
                yield Document(f"{doc_id}#p{pending[0]}-{pending[1]}", pending[2], src, title=title)
                emitted += 1
            pending = (first, last, joined)
    rest = "\n\n".join(buf)
    pieces = ([pending] if pending is not None else []) + ([(first, last, rest)] if rest.strip() else [])
    if emitted == 0 and len(pieces) == 1:
        yield Document(doc_id, pieces[0][2], src, title=title)
        return
    for a, b, text in pieces:
        yield Document(f"{doc_id}#p{a}-{b}", text, src, title=title)


__all__ = ["read_html", "read_pdf", "read_warc"]
