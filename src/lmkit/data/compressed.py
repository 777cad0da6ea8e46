"""Opening input files: the format a file is read as (by suffix), the compression it claims (checked
against its magic bytes), decompressed byte streams (gzip, zstd with truncation noticed) and
numbered lines whose errors name the line. :mod:`lmkit.data.formats` turns these streams into documents.
"""

from __future__ import annotations

import gzip
import io
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Protocol


class _Tracker(Protocol):
    """What :func:`open_binary` registers the open raw file with (a ``ReadReport``), for progress in bytes."""

    _open: Any


JSONL_SUFFIXES = {".jsonl", ".ndjson", ".json"}
PARQUET_SUFFIXES = {".parquet", ".pq"}
COMPRESSION_SUFFIXES = {".gz": "gzip", ".zst": "zstd", ".zstd": "zstd"}


def split_suffix(path: Path) -> tuple[str | None, str]:
    """(compression or None, format suffix) from a file name."""
    suffixes = [s.lower() for s in path.suffixes]
    comp = None
    if suffixes and suffixes[-1] in COMPRESSION_SUFFIXES:
        comp = COMPRESSION_SUFFIXES[suffixes[-1]]
        suffixes = suffixes[:-1]
    return comp, (suffixes[-1] if suffixes else "")


MARKUP_SUFFIXES = {".warc": "warc", ".html": "html", ".htm": "html", ".xhtml": "html", ".pdf": "pdf"}


def file_format(path: str | Path) -> str:
    """``"jsonl"``, ``"parquet"``, ``"warc"``, ``"html"``, ``"pdf"`` or ``"text"``: how
    :func:`iter_documents` reads this file."""
    _, suf = split_suffix(Path(path))
    if suf in JSONL_SUFFIXES:
        return "jsonl"
    if suf in PARQUET_SUFFIXES:
        return "parquet"
    return MARKUP_SUFFIXES.get(suf, "text")


_MAGIC = {
    b"\x1f\x8b": "gzip",
    b"\x28\xb5\x2f\xfd": "zstd",
    b"PAR1": "parquet",
    b"PK\x03\x04": "zip",
    b"\x89PNG": "png",
    b"%PDF": "pdf",
    b"\x7fELF": "ELF executable",
}


def sniff(head: bytes) -> str | None:
    for magic, name in _MAGIC.items():
        if head.startswith(magic):
            return name
    return None


class ReadFailure(Exception):
    """A file could not be read as a whole (the message says why; the file is added by the caller)."""


class ZstdStream(io.RawIOBase):
    """Decompress a zstd file (one or more frames) as a stream, and notice a truncated one.

    ``zstandard``'s own stream reader returns the data it has when a file ends inside a frame,
    which would silently drop the end of a damaged file; this stream raises instead.
    """

    def __init__(self, raw: IO[bytes]) -> None:
        import zstandard

        self._zstd = zstandard
        self._raw = raw
        self._dctx = zstandard.ZstdDecompressor()
        self._obj = self._dctx.decompressobj()
        self._buf = bytearray()
        self._in_frame = False
        self._done = False

    def readable(self) -> bool:
        return True

    def _feed(self, data: bytes) -> None:
        while data:
            self._in_frame = True
            self._buf += self._obj.decompress(data)
            if self._obj.eof:
                data = self._obj.unused_data
                self._obj = self._dctx.decompressobj()
                self._in_frame = False
            else:
                data = b""

    def readinto(self, b: Any) -> int:
        while not self._buf and not self._done:
            chunk = self._raw.read(1 << 17)
            if not chunk:
                if self._in_frame:
                    raise self._zstd.ZstdError("file ends inside a frame; truncated")
                self._done = True
                break
            self._feed(chunk)
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        del self._buf[:n]
        return n


@contextmanager
def open_binary(path: Path, report: _Tracker | None = None) -> Iterator[io.BufferedReader]:
    """Open ``path`` for reading decompressed bytes, checking the compression magic first.

    With ``report``, the raw file is registered there while open, for progress in bytes.
    """
    comp, _ = split_suffix(path)
    try:
        raw = open(path, "rb")
    except OSError as e:
        raise ReadFailure(f"cannot open ({e.strerror or e})") from None
    if report is not None:
        report._open = raw
    try:
        if comp is None:
            yield io.BufferedReader(raw, buffer_size=1 << 16)  # type: ignore[arg-type]
            return
        head = raw.read(4)
        raw.seek(0)
        if comp == "gzip":
            if not head.startswith(b"\x1f\x8b"):
                raise ReadFailure("broken gzip data (not a gzip file despite the .gz name)")
            stream: IO[bytes] = gzip.GzipFile(fileobj=raw, mode="rb")
        else:
            if not head.startswith(b"\x28\xb5\x2f\xfd"):
                raise ReadFailure("broken zstd data (not a zstd file despite the .zst name)")
            stream = ZstdStream(raw)
        yield io.BufferedReader(stream, buffer_size=1 << 16)  # type: ignore[arg-type]
    finally:
        if report is not None:
            report._open = None
        raw.close()


def _compression_errors() -> tuple[type[BaseException], ...]:
    errs: list[type[BaseException]] = [gzip.BadGzipFile, zlib.error, EOFError]
    try:
        import zstandard

        errs.append(zstandard.ZstdError)
    except ImportError:  # pragma: no cover - zstandard is a core dependency
        pass
    return tuple(errs)


COMPRESSION_ERRORS = _compression_errors()


def broken_reason(path: Path, e: BaseException) -> str:
    """The reason given for a compressed stream that fails while being read."""
    comp = split_suffix(path)[0] or "compressed"
    return f"broken {comp} data ({e or type(e).__name__})"


def numbered_lines(stream: IO[bytes], path: Path) -> Iterator[tuple[int, bytes]]:
    """``enumerate(stream, start=1)``, where a compressed stream breaking names the first line
    that could not be read (decompression is buffered: lines just before it may be lost too)."""
    line_no = 0
    it = iter(stream)
    while True:
        try:
            raw = next(it)
        except StopIteration:
            return
        except COMPRESSION_ERRORS as e:
            raise ReadFailure(f"line {line_no + 1}: {broken_reason(path, e)}") from None
        line_no += 1
        yield line_no, raw
