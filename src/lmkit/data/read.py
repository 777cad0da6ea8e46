"""Reading the user's input: plain text, JSON lines, Parquet, WARC, HTML and PDF, each optionally
``.gz``/``.zst`` compressed, and folders of them -> an iterator of :class:`~lmkit.data.document.Document`.

What this module owns:

* :func:`list_files` expands the user's paths (folders recursively, sorted, hidden files
  skipped) so that every later stage sees the same files in the same order.
* :func:`iter_documents` streams documents out of those files without loading a whole file
  (Parquet is read one record batch at a time, compressed files are decompressed as a stream),
  each file by the reader of its format (:mod:`lmkit.data.formats`).
* Every problem with the input (a missing path, binary or non-UTF-8 bytes, a broken
  compressed stream, a JSON line that is not JSON, a record without the text field) becomes an
  :class:`~lmkit.errors.LmkitError` whose message names the file, and the line where there is
  one (for a compressed stream that breaks part-way, the first line that could not be read).
  With ``lenient=True`` the bad file (or line) is skipped instead and counted in a
  :class:`~lmkit.data.document.ReadReport`, so a long job over messy data is not stopped by one
  bad file. The report also follows the bytes read (``ReadReport.bytes_read``), for progress bars.
* Every document is valid Unicode (a JSON record's lone surrogates become U+FFFD, counted).

Format by file name (after removing a ``.gz``/``.zst``/``.zstd`` suffix):
``.jsonl``/``.ndjson``/``.json`` -> JSON lines (a ``.json`` file whose first character is ``[``
is read as one JSON array of records); ``.parquet``/``.pq`` -> Parquet; ``.warc`` -> the HTML
pages of a web archive, ``.html``/``.htm``/``.xhtml`` -> one HTML page, ``.pdf`` -> a PDF's text
(:mod:`lmkit.data.scrape`); anything else -> text (a large text file is cut into several
documents at paragraph breaks: :mod:`lmkit.data.formats`). HTML pages are turned into their main
text here (:mod:`lmkit.data.extract`) unless the caller asks for them unextracted
(``html_extractor=None``: ``lmkit curate`` extracts on its worker processes); a WARC record or
page that cannot be read is counted and named (``ReadReport.bad_records``) and the rest read.

Readers written by hand rather than taken from a library (e.g. ``datasets``): the formats are
simple, and hand-written streaming lets every failure name the file and line and lets lenient
mode skip exactly one bad line or file, which is the point of this module.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path

from lmkit.data.compressed import COMPRESSION_ERRORS, ReadFailure, broken_reason, file_format
from lmkit.data.document import Document, ReadReport
from lmkit.data.extract import ExtractError, extract_document
from lmkit.data.formats import TEXT_DOC_SOFT_CHARS, read_jsonl, read_parquet, read_text
from lmkit.data.scrape import read_html, read_pdf, read_warc
from lmkit.errors import LmkitError

# --------------------------------------------------------------------------- listing files


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


# The reports ``lmkit curate``/``lmkit mix`` write beside their ``part-NNNNN.jsonl.gz`` shards.
_OUTPUT_REPORTS = ("report.json", "report.md")


def _is_output_report(name: str, siblings: Sequence[str]) -> bool:
    return name in _OUTPUT_REPORTS and any(s.startswith("part-") and s.endswith(".jsonl.gz") for s in siblings)


def list_files(paths: Sequence[str | Path]) -> list[Path]:
    """Expand files and folders (recursively) into a sorted, de-duplicated list of files.

    Folders are walked in sorted order; hidden files and folders (name starting with ``.``)
    inside them are skipped, and so are the ``report.json``/``report.md`` of a curated folder
    (one holding ``part-*.jsonl.gz`` shards), so the folder reads as its documents only. A path
    named explicitly is always kept. A path that does not exist, or a folder with no files, is
    an :class:`LmkitError`.
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    out: list[Path] = []
    seen: set[Path] = set()
    for raw in paths:
        p = Path(raw).expanduser()
        if not p.exists():
            raise LmkitError(f"{p}: no such file or folder")
        if p.is_dir():
            found: list[Path] = []
            for root, dirs, files in os.walk(p):
                dirs[:] = sorted(d for d in dirs if not _is_hidden(d))
                found.extend(
                    Path(root) / f for f in sorted(files) if not _is_hidden(f) and not _is_output_report(f, files)
                )
            found = sorted((f for f in found if f.is_file()), key=lambda f: f.relative_to(p).parts)
            if not found:
                raise LmkitError(f"{p}: folder holds no (non-hidden) files")
        elif p.is_file():
            found = [p]
        else:
            raise LmkitError(f"{p}: not a regular file or folder")
        for f in found:
            if f not in seen:
                seen.add(f)
                out.append(f)
    return out


# --------------------------------------------------------------------------- reading


def _file_size(path: Path) -> int:
    """On-disk size of ``path`` (0 if it cannot be read), for :meth:`ReadReport.bytes_read`."""
    try:
        return path.stat().st_size
    except OSError:
        return 0


def iter_documents(
    paths: Sequence[str | Path],
    text_field: str = "text",
    lenient: bool = False,
    report: ReadReport | None = None,
    text_doc_chars: int | None = None,
    html_extractor: str | None = "resiliparse",
) -> Iterator[Document]:
    """Stream the documents of every file under ``paths`` (see the module docstring for formats).

    Raises :class:`LmkitError` naming the file (and line) for unreadable input; with
    ``lenient=True`` such a file or line is skipped and recorded in ``report`` instead. A file
    that fails part-way in lenient mode keeps the documents it yielded before the failure (the
    reason recorded says how many). ``text_doc_chars``: cut plain-text files into documents at
    the first paragraph break after this many characters (default :data:`TEXT_DOC_SOFT_CHARS`),
    and PDFs at the first page break after as many. ``html_extractor``: how HTML pages become text
    (:data:`lmkit.data.extract.HTML_EXTRACTORS`); None yields them unextracted (``doc.html`` set).
    """
    report = report if report is not None else ReadReport()
    for path in list_files(paths):
        fmt = file_format(path)
        n_before, bad_before = report.documents, report.bad_line_count
        reason: str | None = None
        try:
            if fmt == "jsonl":
                docs = read_jsonl(path, text_field, report, lenient)
            elif fmt == "parquet":
                docs = read_parquet(path, text_field, report, lenient)
            elif fmt == "warc":
                docs = read_warc(path, report, lenient, text_doc_chars or TEXT_DOC_SOFT_CHARS)
            elif fmt == "html":
                docs = read_html(path, report)
            elif fmt == "pdf":
                docs = read_pdf(path, report, text_doc_chars or TEXT_DOC_SOFT_CHARS)
            else:
                docs = read_text(path, report, text_doc_chars)
            if html_extractor is not None and fmt in ("warc", "html"):
                docs = _extracted(docs, html_extractor, report, lenient)
            for doc in docs:
                report.documents += 1
                report.text_chars += len(doc.text)
                yield doc
        except ReadFailure as e:
            reason = str(e)
        except COMPRESSION_ERRORS as e:
            reason = broken_reason(path, e)
        except OSError as e:
            reason = f"read error ({e.strerror or e})"
        finally:
            report._open = None
            report._done_bytes += _file_size(path)
        if reason is not None:
            if not lenient:
                raise LmkitError(f"{path}: {reason}") from None
            kept = report.documents - n_before
            if kept:
                reason += f"; the {kept:,} document{'s' if kept > 1 else ''} before it kept"
            report.skip_file(str(path), reason)
            continue
        report.files_read += 1
        if report.documents == n_before and report.bad_line_count == bad_before:
            report.empty_files.append(str(path))


def _extracted(docs: Iterator[Document], extractor: str, report: ReadReport, lenient: bool) -> Iterator[Document]:
    """HTML pages turned into their main text; a page without any is counted, one that fails named
    (or, in a strict read, an error)."""
    for doc in docs:
        try:
            doc = extract_document(doc, extractor)
        except ExtractError as e:
            if not lenient:
                raise LmkitError(f"{doc.source}: {doc.url or doc.id}: {e}") from None
            report.bad_record(doc.source, 0, f"{doc.url or doc.id}: {e}")
            continue
        if not doc.text:
            report.no_text_pages += 1
            continue
        yield doc


__all__ = ["iter_documents", "list_files"]
