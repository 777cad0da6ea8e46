"""The per-format readers: plain text, JSON lines (or one JSON array) and Parquet -> :class:`Document`.

Each reader streams one file (already chosen by :func:`lmkit.data.read.iter_documents` from its
name) and raises :class:`~lmkit.data.compressed.ReadFailure` for a file it cannot read, or
:class:`~lmkit.errors.LmkitError` naming the file and line for one bad line or record (with
``lenient`` such a line is counted in the :class:`ReadReport` instead and skipped).

Plain text (:func:`read_text`): a file is one document, except that a large file is cut into
several documents so that one big book does not become one giant document for packing, parallel
tokenisation and the held-out split (which all work per document). A document is closed at the
first blank line (paragraph break) after :data:`TEXT_DOC_SOFT_CHARS` characters, or at the first
line end after :data:`TEXT_DOC_HARD_CHARS` when a file has no blank lines. Pieces keep the file's
text exactly: joining a file's documents gives the file back. A file that yields one document has
the file path as its id; pieces of a larger file have ``<file>#<k>`` (k = 0, 1, ...). Binary data
(compressed or NUL bytes) and bytes that are not UTF-8 are refused, naming the line.

JSON (:func:`read_jsonl`): one record per line, or, when the file's first character is ``[``,
one array of records. A record is an object with the text field; its ``id`` and ``source`` are
kept (else ``<file>:<line>`` and the file), and so are a curated record's ``url``, ``title``,
``language`` and ``language_score``. JSON can spell lone UTF-16 surrogates
(``"\\ud800"``), which no UTF-8 file can hold; in a record's text, id or source each becomes
U+FFFD (the replacement character) and the document is kept and counted
(``ReadReport.surrogate_docs``), so one bad document neither stops a job nor breaks the files
written from it.

Parquet (:func:`read_parquet`): one record batch at a time; the text column must be strings, and
``id`` and ``source`` columns are kept when present. A compressed Parquet file is decompressed to
a temporary file first (Parquet needs random access).
"""

from __future__ import annotations

import codecs
import io
import json
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from lmkit.data.compressed import (
    COMPRESSION_ERRORS,
    ReadFailure,
    broken_reason,
    numbered_lines,
    open_binary,
    sniff,
    split_suffix,
)
from lmkit.data.document import Document, ReadReport
from lmkit.errors import LmkitError

# A plain-text document is closed at a paragraph break after this many characters ...
TEXT_DOC_SOFT_CHARS = 1 << 20
# ... or at any line end after this many (for files with no blank lines).
TEXT_DOC_HARD_CHARS = 4 << 20
# Longest piece read at once from a text line (a file with no newlines is read in pieces).
_READ_PIECE = 1 << 20


def _check_not_binary(stream: io.BufferedReader) -> None:
    head = stream.peek(8192)[:8192]
    kind = sniff(head)
    if kind is not None and kind != "parquet":
        raise ReadFailure(f"looks binary ({kind} data); not text")
    if kind == "parquet":
        raise ReadFailure("looks like Parquet data; name the file .parquet to read it as Parquet")
    if b"\x00" in head:
        raise ReadFailure("looks binary (NUL bytes); not text")


def read_text(path: Path, report: ReadReport | None = None, doc_chars: int | None = None) -> Iterator[Document]:
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
                raise ReadFailure(
                    f"line {line_no}: not valid UTF-8 (byte 0x{raw[e.start]:02x})"
                    if e.start < len(raw)
                    else f"line {line_no}: not valid UTF-8"
                ) from None
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


# A JSON escape of a UTF-16 surrogate (a pair is fine: it decodes to one character; a lone one is not)
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def _json_document(
    rec: dict[str, Any], text: str, default_id: str, src: str, report: ReadReport, escapes: bool
) -> Document:
    """The Document of a JSON record; with ``escapes`` (its JSON spells a surrogate), every lone
    surrogate of its text, id and source becomes U+FFFD and the document is counted in ``report``."""
    rid = rec.get("id")
    doc = Document(str(rid) if rid is not None else default_id, text, _source_of(rec, src), **_meta_of(rec))
    if escapes:
        fields = [_SURROGATE.subn("\ufffd", v) for v in (doc.id, doc.text, doc.source)]
        if any(n for _, n in fields):
            report.surrogate_docs += 1
            doc = Document(*(v for v, _ in fields), **_meta_of(rec))
    return doc


def _meta_of(rec: dict[str, Any]) -> dict[str, Any]:
    """A record's url, title, language (strings) and language_score (a number), where it has them."""
    out: dict[str, Any] = {k: rec[k] for k in ("url", "title", "language") if isinstance(rec.get(k), str)}
    score = rec.get("language_score")
    if isinstance(score, (int, float)) and not isinstance(score, bool):
        out["language_score"] = float(score)
    return out


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


def read_jsonl(path: Path, text_field: str, report: ReadReport, lenient: bool) -> Iterator[Document]:
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
                yield _json_document(
                    rec, text, f"{src}:{line_no}", src, report, _SURROGATE_ESCAPE.search(raw) is not None
                )
                continue
            if not lenient:
                raise LmkitError(f"{src}:{line_no}: {reason}")
            report.bad_line(src, line_no, reason)


def _read_json_array(
    path: Path, stream: IO[bytes], text_field: str, report: ReadReport, lenient: bool
) -> Iterator[Document]:
    src = str(path)
    raw = stream.read()
    escapes = _SURROGATE_ESCAPE.search(raw) is not None
    try:
        data = _parse_json(raw.decode("utf-8"))
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
        yield _json_document(rec, text, f"{src}:{i}", src, report, escapes)


def read_parquet(path: Path, text_field: str, report: ReadReport, lenient: bool) -> Iterator[Document]:
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
                    yield Document(
                        str(rid) if rid is not None else f"{src}:{row}",
                        text,
                        rsrc if isinstance(rsrc, str) and rsrc else src,
                    )
        except (pa.ArrowException, OSError) as e:
            raise ReadFailure(f"row {row + 1}: broken Parquet data ({str(e).splitlines()[0]})") from None
    finally:
        if spool is not None:
            spool.close()


__all__ = ["TEXT_DOC_HARD_CHARS", "TEXT_DOC_SOFT_CHARS", "read_jsonl", "read_parquet", "read_text"]
