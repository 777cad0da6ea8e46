"""Streaming readers: plain text, JSON lines, Parquet, each optionally ``.gz``/``.zst``
compressed, and folders of them -> an iterator of :class:`Document`.

What this module owns:

* :func:`list_files` expands the user's paths (folders recursively, sorted, hidden files
  skipped) so that every later stage sees the same files in the same order.
* :func:`iter_documents` streams documents out of those files without loading a whole file
  (Parquet is read one record batch at a time, compressed files are decompressed as a stream).
* Every problem with the input (a missing path, binary or non-UTF-8 bytes, a broken
  compressed stream, a JSON line that is not JSON, a record without the text field) becomes an
  :class:`~lmkit.errors.LmkitError` whose message names the file, and the line where there is
  one (for a compressed stream that breaks part-way, the first line that could not be read).
  With ``lenient=True`` the bad file (or line) is skipped instead and counted in a
  :class:`ReadReport`, so a long job over messy data is not stopped by one bad file. The
  report also follows the bytes read (:meth:`ReadReport.bytes_read`), for progress bars.

Format by file name (after removing a ``.gz``/``.zst``/``.zstd`` suffix):
``.jsonl``/``.ndjson``/``.json`` -> JSON lines (a ``.json`` file whose first character is ``[``
is read as one JSON array of records); ``.parquet``/``.pq`` -> Parquet; anything else -> text.

Plain text: a file is one document, except that a large file is cut into several documents so
that one big book does not become one giant document for packing, parallel tokenisation and
the held-out split (which all work per document). A document is closed at the first blank line
(paragraph break) after :data:`TEXT_DOC_SOFT_CHARS` characters, or at the first line end after
:data:`TEXT_DOC_HARD_CHARS` when a file has no blank lines. Pieces keep the file's text
exactly: joining a file's documents gives the file back. A file that yields one document has
the file path as its id; pieces of a larger file have ``<file>#<k>`` (k = 0, 1, ...).

Readers written by hand rather than taken from a library (e.g. ``datasets``): the formats are
simple, and hand-written streaming lets every failure name the file and line and lets lenient
mode skip exactly one bad line or file, which is the point of this module.
"""

from __future__ import annotations

import codecs
import io
import json
import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

from lmkit.data.compressed import (
    COMPRESSION_ERRORS,
    ReadFailure,
    broken_reason,
    file_format,
    numbered_lines,
    open_binary,
    sniff,
    split_suffix,
)
from lmkit.errors import LmkitError

# A plain-text document is closed at a paragraph break after this many characters ...
TEXT_DOC_SOFT_CHARS = 1 << 20
# ... or at any line end after this many (for files with no blank lines).
TEXT_DOC_HARD_CHARS = 4 << 20
# Longest piece read at once from a text line (a file with no newlines is read in pieces).
_READ_PIECE = 1 << 20
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


@dataclass
class ReadReport:
    """What a read did: files read, documents yielded, what was skipped and why."""

    files_read: int = 0
    documents: int = 0
    text_chars: int = 0
    empty_files: list[str] = field(default_factory=list)
    empty_records: int = 0  # JSON/Parquet records whose text is the empty string
    skipped_files: list[tuple[str, str]] = field(default_factory=list)  # (file, reason)
    bad_lines: list[tuple[str, int, str]] = field(default_factory=list)  # (file, line, reason)
    skipped_file_count: int = 0
    bad_line_count: int = 0

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

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["skipped_files"] = [list(x) for x in self.skipped_files]
        d["bad_lines"] = [list(x) for x in self.bad_lines]
        return d

    def summary(self) -> str:
        parts = [f"{self.documents:,} documents ({self.text_chars / 1e6:.1f} M chars) from "
                 f"{self.files_read:,} files"]
        if self.empty_files:
            parts.append(f"{len(self.empty_files)} empty files")
        if self.skipped_file_count:
            first = self.skipped_files[0]
            parts.append(f"{self.skipped_file_count} files skipped (first: {first[0]}: {first[1]})")
        if self.bad_line_count:
            f, n, why = self.bad_lines[0]
            parts.append(f"{self.bad_line_count} bad lines skipped (first: {f}:{n}: {why})")
        return "; ".join(parts)


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
                found.extend(Path(root) / f for f in sorted(files)
                             if not _is_hidden(f) and not _is_output_report(f, files))
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



# --------------------------------------------------------------------------- format readers


def _check_not_binary(stream: io.BufferedReader) -> None:
    head = stream.peek(8192)[:8192]
    kind = sniff(head)
    if kind is not None and kind != "parquet":
        raise ReadFailure(f"looks binary ({kind} data); not text")
    if kind == "parquet":
        raise ReadFailure("looks like Parquet data; name the file .parquet to read it as Parquet")
    if b"\x00" in head:
        raise ReadFailure("looks binary (NUL bytes); not text")


def _read_text(path: Path, report: ReadReport | None = None, doc_chars: int | None = None) -> Iterator[Document]:
    """Plain text: one document per file, cut at paragraph breaks when the file is large
    (after ``doc_chars`` characters, or at any line end after 4 times that; default
    :data:`TEXT_DOC_SOFT_CHARS` / :data:`TEXT_DOC_HARD_CHARS`)."""
    src = str(path)
    soft = TEXT_DOC_SOFT_CHARS if doc_chars is None else doc_chars
    hard = TEXT_DOC_HARD_CHARS if doc_chars is None else 4 * doc_chars
    with open_binary(path, report) as stream:
        try:
            _check_not_binary(stream)
        except COMPRESSION_ERRORS as e:
            raise ReadFailure(f"line 1: {broken_reason(path, e)}") from None
        decoder = codecs.getincrementaldecoder("utf-8")(errors="strict")
        buf: list[str] = []
        size = 0
        line_no = 1
        at_line_start = True
        pending: str | None = None  # a finished piece held back until we know if more follows
        k = 0
        first = True
        while True:
            try:
                raw = stream.readline(_READ_PIECE)
            except COMPRESSION_ERRORS as e:
                raise ReadFailure(f"line {line_no}: {broken_reason(path, e)}") from None
            if not raw:
                try:
                    tail = decoder.decode(b"", final=True)
                except UnicodeDecodeError:
                    raise ReadFailure(f"line {line_no}: not valid UTF-8 (file ends inside a character)") from None
                if tail:
                    buf.append(tail)
                break
            if b"\x00" in raw:
                raise ReadFailure(f"line {line_no}: NUL byte; binary data, not text")
            try:
                text = decoder.decode(raw)
            except UnicodeDecodeError as e:
                raise ReadFailure(f"line {line_no}: not valid UTF-8 (byte 0x{raw[e.start]:02x})"
                                   if e.start < len(raw) else f"line {line_no}: not valid UTF-8") from None
            if first:
                text = text.removeprefix("\ufeff")
                first = False
            blank = at_line_start and raw.endswith(b"\n") and not raw.strip()
            ends_line = raw.endswith(b"\n")
            buf.append(text)
            size += len(text)
            if ends_line:
                line_no += 1
            at_line_start = ends_line
            if ends_line and ((blank and size >= soft) or size >= hard):
                if pending is not None:
                    yield Document(f"{src}#{k}", pending, src)
                    k += 1
                pending = "".join(buf)
                buf, size = [], 0
        rest = "".join(buf)
        if pending is None:
            final = [rest] if rest.strip() else []
        elif rest.strip():
            final = [pending, rest]
        else:  # a whitespace-only tail joins the last piece, so the file is kept exactly
            final = [pending + rest]
        if k == 0 and len(final) == 1:
            yield Document(src, final[0], src)
            return
        for i, text in enumerate(final):
            yield Document(f"{src}#{k + i}", text, src)


def _source_of(rec: dict[str, Any], path: str) -> str:
    """A record's own ``source`` (curated documents keep where they came from), else the file."""
    s = rec.get("source")
    return s if isinstance(s, str) and s else path


def _record_text(rec: Any, text_field: str) -> str:
    if not isinstance(rec, dict):
        raise ValueError(f"not a JSON object (got {type(rec).__name__})")
    if text_field not in rec:
        keys = ", ".join(k if k.isprintable() else repr(k) for k in list(rec)[:8])  # one-line message
        raise ValueError(f"no {text_field!r} field (fields: {keys or 'none'}); set the text field")
    text = rec[text_field]
    if not isinstance(text, str):
        raise ValueError(f"field {text_field!r} is {type(text).__name__}, not a string")
    return text


class _BadJson(ValueError):
    """JSON that cannot be parsed; the message says why, in a form fit for a one-line error."""

    def __init__(self, reason: str, line: int | None = None) -> None:
        super().__init__(reason)
        self.line = line


def _parse_json(text: str) -> Any:
    """``json.loads``, with every way it fails (nesting too deep, a number of more digits than
    Python converts, bad syntax) as one :class:`_BadJson`."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise _BadJson(f"not valid JSON ({e.msg} at column {e.colno})", e.lineno) from None
    except RecursionError:
        raise _BadJson("not readable JSON (nested too deeply)") from None
    except ValueError:  # int(...) refusing a number of thousands of digits
        raise _BadJson("not readable JSON (a number with too many digits)") from None


def _read_jsonl(path: Path, text_field: str, report: ReadReport, lenient: bool) -> Iterator[Document]:
    src = str(path)
    with open_binary(path, report) as stream:
        try:
            head = stream.peek(4096)[:4096]
        except COMPRESSION_ERRORS as e:
            raise ReadFailure(f"line 1: {broken_reason(path, e)}") from None
        kind = sniff(head)
        if kind is not None or b"\x00" in head:
            raise ReadFailure(f"looks binary ({kind or 'NUL bytes'}); not JSON lines")
        if head.lstrip().startswith(b"["):
            yield from _read_json_array(path, stream, text_field, report, lenient)
            return
        for line_no, raw in numbered_lines(stream, path):
            if not raw.strip():
                continue
            try:
                line = raw.decode("utf-8")
                if line_no == 1:
                    line = line.removeprefix("\ufeff")
                rec = _parse_json(line)
                text = _record_text(rec, text_field)
            except UnicodeDecodeError:
                reason = "not valid UTF-8"
            except ValueError as e:  # _BadJson, or a record without its text
                reason = str(e)
            else:
                if not text:
                    report.empty_records += 1
                    continue
                rid = rec.get("id")
                yield Document(str(rid) if rid is not None else f"{src}:{line_no}", text, _source_of(rec, src))
                continue
            if not lenient:
                raise LmkitError(f"{src}:{line_no}: {reason}")
            report.bad_line(src, line_no, reason)


def _read_json_array(path: Path, stream: IO[bytes], text_field: str, report: ReadReport,
                     lenient: bool) -> Iterator[Document]:
    src = str(path)
    try:
        data = _parse_json(stream.read().decode("utf-8"))
    except UnicodeDecodeError:
        raise ReadFailure("not valid UTF-8") from None
    except _BadJson as e:
        raise ReadFailure(f"line {e.line}: {e}" if e.line is not None else str(e)) from None
    if not isinstance(data, list):
        raise ReadFailure("a .json file must hold JSON lines or one array of records")
    for i, rec in enumerate(data, start=1):
        try:
            text = _record_text(rec, text_field)
        except ValueError as e:
            if not lenient:
                raise LmkitError(f"{src}: record {i}: {e}") from None
            report.bad_line(src, i, str(e))
            continue
        if not text:
            report.empty_records += 1
            continue
        rid = rec.get("id")
        yield Document(str(rid) if rid is not None else f"{src}:{i}", text, _source_of(rec, src))


def _read_parquet(path: Path, text_field: str, report: ReadReport, lenient: bool) -> Iterator[Document]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    src = str(path)
    comp, _ = split_suffix(path)
    spool: IO[bytes] | None = None
    try:
        if comp is not None:  # Parquet needs random access: decompress to a temporary file first
            spool = tempfile.TemporaryFile()
            with open_binary(path) as stream:
                while chunk := stream.read(1 << 20):
                    spool.write(chunk)
            spool.seek(0)
        try:
            pf = pq.ParquetFile(spool if spool is not None else path)
        except (pa.ArrowException, OSError) as e:
            raise ReadFailure(f"not a readable Parquet file ({str(e).splitlines()[0]})") from None
        names = pf.schema_arrow.names
        if text_field not in names:
            raise ReadFailure(f"no {text_field!r} column (columns: {', '.join(names[:8])}); set the text field")
        ftype = pf.schema_arrow.field(text_field).type
        if not (pa.types.is_string(ftype) or pa.types.is_large_string(ftype)):
            raise ReadFailure(f"column {text_field!r} is {ftype}, not a string")
        cols = [text_field] + [c for c in ("id", "source") if c in names and c != text_field]
        row = 0
        try:
            for batch in pf.iter_batches(batch_size=1024, columns=cols):
                texts = batch.column(text_field).to_pylist()
                ids = batch.column("id").to_pylist() if "id" in cols else [None] * len(texts)
                srcs = batch.column("source").to_pylist() if "source" in cols else [None] * len(texts)
                for text, rid, rsrc in zip(texts, ids, srcs):
                    row += 1
                    if text is None:
                        if not lenient:
                            raise LmkitError(f"{src}: row {row}: {text_field!r} is null")
                        report.bad_line(src, row, f"{text_field!r} is null")
                        continue
                    if not text:
                        report.empty_records += 1
                        continue
                    yield Document(str(rid) if rid is not None else f"{src}:{row}", text,
                                   rsrc if isinstance(rsrc, str) and rsrc else src)
        except (pa.ArrowException, OSError) as e:
            raise ReadFailure(f"row {row + 1}: broken Parquet data ({str(e).splitlines()[0]})") from None
    finally:
        if spool is not None:
            spool.close()


# --------------------------------------------------------------------------- public iterator


def _file_size(path: Path) -> int:
    """On-disk size of ``path`` (0 if it cannot be read), for :meth:`ReadReport.bytes_read`."""
    try:
        return path.stat().st_size
    except OSError:
        return 0


def iter_documents(paths: Sequence[str | Path], text_field: str = "text", lenient: bool = False,
                   report: ReadReport | None = None, text_doc_chars: int | None = None) -> Iterator[Document]:
    """Stream the documents of every file under ``paths`` (see the module docstring for formats).

    Raises :class:`LmkitError` naming the file (and line) for unreadable input; with
    ``lenient=True`` such a file or line is skipped and recorded in ``report`` instead. A file
    that fails part-way in lenient mode keeps the documents it yielded before the failure (the
    reason recorded says how many). ``text_doc_chars``: cut plain-text files into documents at
    the first paragraph break after this many characters (default :data:`TEXT_DOC_SOFT_CHARS`).
    """
    report = report if report is not None else ReadReport()
    for path in list_files(paths):
        fmt = file_format(path)
        n_before, bad_before = report.documents, report.bad_line_count
        reason: str | None = None
        try:
            if fmt == "jsonl":
                docs = _read_jsonl(path, text_field, report, lenient)
            elif fmt == "parquet":
                docs = _read_parquet(path, text_field, report, lenient)
            else:
                docs = _read_text(path, report, text_doc_chars)
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


__all__ = ["Document", "ReadReport", "list_files", "iter_documents", "file_format",
           "TEXT_DOC_SOFT_CHARS", "TEXT_DOC_HARD_CHARS"]
