"""What reading yields and what it counts: :class:`Document` and :class:`ReadReport`.

A :class:`Document` is the unit every data stage passes on (curation, mixing, packing, the
tokenizer trainer): an id kept from the input when it has one, the text, and where it came from;
a page from the web or a PDF also carries its URL, title and language when known. An HTML page
read but not yet turned into text holds its bytes in ``html`` with ``text`` empty:
:func:`lmkit.data.extract.extract_document` fills ``text`` and clears ``html``.
A :class:`ReadReport` is the account of one read (:func:`lmkit.data.read.iter_documents`): files
read, documents yielded, empty inputs, what was skipped and why (files, lines, WARC records and
pages that could not be read; the first :data:`MAX_RECORDED` reasons kept, all counted), and the
on-disk bytes read so far for progress bars.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import IO, Any

# At most this many skipped files / bad lines are kept with their reason (all are counted).
MAX_RECORDED = 1000


@dataclass
class Document:
    """One document: its id (kept from the input when it has one), its text, and its source:
    a JSON/Parquet record's own ``source`` field when it has one (curated documents keep where
    they came from), else the path of the file it was read from."""

    id: str
    text: str
    source: str
    url: str | None = None  # the WARC record's target URI (or an HTML page's canonical link)
    title: str | None = None  # the page's <title>, or the PDF's title
    language: str | None = None  # ISO 639-1: declared by the page, or identified by curation
    language_score: float | None = None  # the identifier's probability for ``language``
    html: bytes | None = None  # an HTML page not yet extracted (see the module docstring)

    def meta(self) -> dict[str, Any]:
        """The known metadata (url, title, language, language_score), for a curated JSON line."""
        return {
            k: v
            for k, v in (
                ("url", self.url),
                ("title", self.title),
                ("language", self.language),
                ("language_score", self.language_score),
            )
            if v is not None
        }


@dataclass
class ReadReport:
    """What a read did: files read, documents yielded, what was skipped and why."""

    files_read: int = 0
    documents: int = 0
    text_chars: int = 0
    empty_files: list[str] = field(default_factory=list)
    empty_records: int = 0  # JSON/Parquet records whose text is the empty string
    surrogate_docs: int = 0  # JSON records whose lone surrogates (\ud800..\udfff escapes) became U+FFFD
    skipped_files: list[tuple[str, str]] = field(default_factory=list)  # (file, reason)
    bad_lines: list[tuple[str, int, str]] = field(default_factory=list)  # (file, line, reason)
    skipped_file_count: int = 0
    bad_line_count: int = 0
    # WARC records, HTML pages and PDF pages that could not be read or extracted: (file, record,
    # reason); record is the 1-based record number in a WARC file, the page in a PDF, 0 for a file
    bad_records: list[tuple[str, int, str]] = field(default_factory=list)
    bad_record_count: int = 0
    non_text_records: int = 0  # WARC records skipped as not HTML (images, requests, metadata, ...)
    no_text_pages: int = 0  # HTML/PDF pages with no main text to extract

    def __post_init__(self) -> None:
        # progress over the input (not part of the report): on-disk bytes of the files finished,
        # and the raw handle of the file being read, whose position counts too
        self._done_bytes = 0
        self._open: IO[bytes] | None = None

    def bytes_read(self) -> int:
        """On-disk (compressed) bytes of the input read so far: the files finished plus the
        position in the one being read (Parquet files count when finished)."""
        pos = 0
        f = self._open
        if f is not None:
            try:
                pos = f.tell()
            except (OSError, ValueError):  # closed meanwhile
                pos = 0
        return self._done_bytes + pos

    def skip_file(self, path: str, reason: str) -> None:
        self.skipped_file_count += 1
        if len(self.skipped_files) < MAX_RECORDED:
            self.skipped_files.append((path, reason))

    def bad_line(self, path: str, line: int, reason: str) -> None:
        self.bad_line_count += 1
        if len(self.bad_lines) < MAX_RECORDED:
            self.bad_lines.append((path, line, reason))

    def bad_record(self, path: str, record: int, reason: str) -> None:
        self.bad_record_count += 1
        if len(self.bad_records) < MAX_RECORDED:
            self.bad_records.append((path, record, reason))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["skipped_files"] = [list(x) for x in self.skipped_files]
        d["bad_lines"] = [list(x) for x in self.bad_lines]
        d["bad_records"] = [list(x) for x in self.bad_records]
        return d

    def summary(self) -> str:
        parts = [f"{self.documents:,} documents ({self.text_chars / 1e6:.1f} M chars) from {self.files_read:,} files"]
        if self.empty_files:
            parts.append(f"{len(self.empty_files)} empty files")
        if self.skipped_file_count:
            first = self.skipped_files[0]
            parts.append(f"{self.skipped_file_count} files skipped (first: {first[0]}: {first[1]})")
        if self.bad_line_count:
            f, n, why = self.bad_lines[0]
            parts.append(f"{self.bad_line_count} bad lines skipped (first: {f}:{n}: {why})")
        if self.bad_record_count:
            f, n, why = self.bad_records[0]
            where = f"{f} record {n}" if n else f
            parts.append(f"{self.bad_record_count} unreadable records/pages skipped (first: {where}: {why})")
        if self.non_text_records:
            parts.append(f"{self.non_text_records:,} WARC records not HTML")
        if self.no_text_pages:
            parts.append(f"{self.no_text_pages:,} pages with no main text")
        if self.surrogate_docs:
            parts.append(f"{self.surrogate_docs:,} documents with lone surrogates replaced by U+FFFD")
        return "; ".join(parts)


__all__ = ["MAX_RECORDED", "Document", "ReadReport"]
