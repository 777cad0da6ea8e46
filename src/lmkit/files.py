"""Writing files safely: the one place for atomic writes, atomic folder publishing and checksums.

Every command that writes a file or a folder goes through these helpers, so the rules hold
everywhere: a reader never sees half a file (write to a temporary sibling, then rename), a
finished folder replaces an old one in one step, and a file's integrity is a SHA-256 digest.
New files and folders get the permissions the user's umask gives (``tempfile`` alone would
make them private: 0600/0700).

It also holds the one check every command runs on its ``--out`` before any work
(:func:`check_out_dir` for folders, :func:`check_out_file` for single files): an output never
is, lies inside, or contains one of the command's inputs (symlinks resolved), a non-empty folder
is replaced only with ``--overwrite``, and even then only when it is recognisably a previous
output of that command and nothing else: every entry in it, at every depth, is something the
command writes (each command says how it knows: a pattern of the paths it writes, or a
:class:`Manifest`, the record a previous output keeps of the files it wrote). A file or folder
the user put there (``mine.txt``, ``mydir/``) makes the folder refused, never deleted; a test
of the folder as a whole ("is an lmkit checkpoint") is never enough on its own.

A single file lmkit writes carries a :func:`stamp`, the SHA-256 of what lmkit wrote, so that
``--overwrite`` replaces only a file lmkit wrote that nobody has changed since (any other file of
the same name or kind, the user's own, is refused). Where the stamp lives depends on the format:

* a text file for people to read and edit (a model card): a line of its own holding the digest of
  the rest of the file (:func:`is_stamped`);
* a PNG picture: a ``tEXt`` chunk named ``lmkit`` holding the digest of the file without that
  chunk (:func:`stamp_png`, :func:`is_stamped_png`); PNG readers skip text chunks;
* a file whose format has room for neither (``tokenizer.json``: the ``tokenizers`` library refuses
  any key it does not know): a sidecar ``.<name>.lmkit-sha256`` beside it holding the digest of
  the file (:func:`write_sidecar_stamp`, :func:`has_sidecar_stamp`). A file copied away from its
  sidecar, or a sidecar left beside another file, is not recognised: refused, never replaced.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import struct
import tempfile
import zlib
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

from lmkit.errors import LmkitError

_CHUNK = 1 << 20


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def chmod_default(path: Path) -> None:
    """Give ``path`` (file or folder) the mode a plain ``open``/``mkdir`` would have under the umask."""
    mode = 0o777 if path.is_dir() else 0o666
    os.chmod(path, mode & ~_umask())


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to ``path`` via a temporary sibling file and rename."""
    write_text_atomic(path, json.dumps(data, indent=2, default=str) + "\n")


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` via a temporary sibling file and rename."""
    write_bytes_atomic(path, text.encode("utf-8"))


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary sibling file and rename."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        chmod_default(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def replace_dir(tmp: Path, final: Path) -> None:
    """Move the finished temporary folder ``tmp`` into place, replacing ``final`` if it exists.

    Everything inside gets the umask's modes too: some writers (safetensors) make files 0600.
    """
    for sub, dirs, names in os.walk(tmp):
        for name in dirs + names:
            if not os.path.islink(os.path.join(sub, name)):
                chmod_default(Path(sub, name))
    chmod_default(tmp)
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)


def sha256_file(path: Path, chunk: int = _CHUNK) -> str:
    """Hex SHA-256 digest of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


# --------------------------------------------------------------------------- stamps (files lmkit wrote)

_STAMP = re.compile(r"^.*lmkit-sha256: ([0-9a-f]{64}).*(?:\n|\Z)", re.M)
_STAMP_WORDS = re.compile(r"lmkit-sha256: ([0-9a-f]{64})")
_STAMP_MAX_BYTES = 16 << 20  # a card is a few KiB: a larger file is not one lmkit wrote
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_KEY = b"lmkit"
_PNG_MAX_BYTES = 256 << 20  # lmkit's pictures are a few MiB
_SIDECAR_MAX_BYTES = 4096


def stamp(content: str | bytes) -> str:
    """The words that say lmkit wrote ``content``: ``lmkit-sha256: <hex>``, the digest of ``content``
    (text is hashed as UTF-8).

    In a text file the writer puts them on a line of their own (in a comment of the file's
    language) anywhere in ``content``; the file's text without that line must be ``content``
    exactly (:func:`is_stamped`).
    """
    data = content if isinstance(content, bytes) else content.encode("utf-8", "surrogatepass")
    return f"lmkit-sha256: {hashlib.sha256(data).hexdigest()}"


def is_stamped(path: Path) -> bool:
    """True if text file ``path`` carries a :func:`stamp` that matches the rest of it: lmkit wrote it
    and nobody has edited it since."""
    try:
        if path.stat().st_size > _STAMP_MAX_BYTES:
            return False
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    found = _STAMP.search(text)
    if found is None:
        return False
    rest = text[: found.start()] + text[found.end() :]
    return stamp(rest) == f"lmkit-sha256: {found.group(1)}"


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png_chunks(data: bytes) -> list[tuple[int, int, bytes, bytes]] | None:
    """(start, end, type, body) of every chunk of PNG ``data``, IHDR first and IEND last; None if
    ``data`` is not a whole PNG."""
    if not data.startswith(_PNG_SIGNATURE):
        return None
    chunks: list[tuple[int, int, bytes, bytes]] = []
    at = len(_PNG_SIGNATURE)
    while at < len(data):
        if at + 12 > len(data):
            return None
        (size,) = struct.unpack(">I", data[at : at + 4])
        end = at + 12 + size
        if end > len(data):
            return None
        chunks.append((at, end, data[at + 4 : at + 8], data[at + 8 : end - 4]))
        at = end
    if not chunks or chunks[0][2] != b"IHDR" or chunks[-1][2] != b"IEND":
        return None
    return chunks


def stamp_png(png: bytes, what: str) -> bytes:
    """``png`` with lmkit's stamp: a ``tEXt`` chunk ``lmkit`` = ``written by <what>; lmkit-sha256:
    <digest of png>`` right after the header chunk (:func:`is_stamped_png` checks it)."""
    chunks = _png_chunks(png)
    if chunks is None:
        raise ValueError("stamp_png: not a PNG")
    words = f"written by {what}; {stamp(png)}".encode("latin-1")  # tEXt is Latin-1
    head_end = chunks[0][1]
    return png[:head_end] + _png_chunk(b"tEXt", _PNG_KEY + b"\0" + words) + png[head_end:]


def is_stamped_png(path: Path) -> bool:
    """True if ``path`` is a PNG carrying exactly one lmkit ``tEXt`` chunk whose digest is that of the
    file without the chunk: lmkit wrote it (:func:`stamp_png`) and nobody has changed it since."""
    try:
        if path.stat().st_size > _PNG_MAX_BYTES:
            return False
        data = path.read_bytes()
    except OSError:
        return False
    chunks = _png_chunks(data)
    if chunks is None:
        return False
    ours = [
        (start, end, body) for start, end, kind, body in chunks if kind == b"tEXt" and body.startswith(_PNG_KEY + b"\0")
    ]
    if len(ours) != 1:
        return False
    start, end, body = ours[0]
    found = _STAMP_WORDS.search(body.decode("latin-1"))
    return found is not None and stamp(data[:start] + data[end:]) == found.group(0)


def sidecar(path: Path) -> Path:
    """Where :func:`write_sidecar_stamp` keeps the stamp of ``path``: ``.<name>.lmkit-sha256`` beside it."""
    return path.with_name(f".{path.name}.lmkit-sha256")


def write_sidecar_stamp(path: Path, what: str) -> Path:
    """Record in :func:`sidecar` (atomically) that lmkit (``what``: the command) wrote ``path``: the
    digest of its content at the call."""
    side = sidecar(path)
    write_text_atomic(side, f"lmkit-sha256: {sha256_file(path)} of {path.name}, written by {what}\n")
    return side


def has_sidecar_stamp(path: Path) -> bool:
    """True if ``path``'s :func:`sidecar` holds the digest of ``path``'s content: lmkit wrote it
    (:func:`write_sidecar_stamp`) and nobody has changed it since."""
    side = sidecar(path)
    try:
        if not path.is_file() or side.stat().st_size > _SIDECAR_MAX_BYTES:
            return False
        found = _STAMP_WORDS.match(side.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError):
        return False
    return found is not None and found.group(1) == sha256_file(path)


# --------------------------------------------------------------------------- output folders


@dataclass(frozen=True)
class Manifest:
    """A previous output's own record of what it wrote: ``files(folder)`` reads it and returns the
    relative, '/'-separated paths of those files (None: the folder holds no such record)."""

    files: Callable[[Path], Collection[str] | None]


#: How a command recognises a previous output of its own, entry by entry: a pattern every path in
#: the folder must match (relative, '/'-separated, folders included: ``train`` and
#: ``train/000000.bin``), or a :class:`Manifest`. A test of the folder as a whole (``Callable[[Path],
#: bool]``, e.g. "its settings file has this format") may be added to one of those, never used alone.
#: A sequence means all of them must hold, checked in order (the first that fails words the refusal).
Recogniser = Union["re.Pattern[str]", Manifest, Callable[[Path], bool]]


def _forms(path: Path) -> set[Path]:
    """The path as written (made absolute) and with every symlink resolved."""
    absolute = Path(os.path.abspath(path.expanduser()))
    try:
        real = path.expanduser().resolve()
    except (OSError, RuntimeError):
        real = absolute
    return {absolute, real}


def _overlap(out: Path, inputs: Sequence[str | Path], what: str, out_is_file: bool = False) -> None:
    """Refuse ``out`` equal to, inside, or (for a folder) containing one of ``inputs``."""
    outs = _forms(out)
    pairs = [(given, _forms(Path(given))) for given in inputs]
    thing = "file" if out_is_file else "folder"
    for given, ins in pairs:  # the closest relation first: the same path, then inside, then around
        if outs & ins:
            raise LmkitError(f"{what} {out} is the input {given}; choose a {thing} outside the inputs")
    for given, ins in pairs:
        if any(i in o.parents for o in outs for i in ins):
            raise LmkitError(f"{what} {out} is inside the input {given}; choose a {thing} outside the inputs")
    for given, ins in pairs:
        if not out_is_file and any(o in i.parents for o in outs for i in ins):
            raise LmkitError(
                f"{what} {out} contains the input {given}; --overwrite would delete it: "
                "choose a folder outside the inputs"
            )


def _recognisers(ours: Recogniser | Sequence[Recogniser] | None) -> list[Recogniser]:
    if ours is None:
        return []
    if isinstance(ours, (re.Pattern, Manifest)) or callable(ours):
        return [ours]
    return list(ours)


def _entries(folder: Path) -> dict[str, bool]:
    """Every path under ``folder`` (relative, '/'-separated) and whether it is a folder; links are
    entries of their own, never followed."""
    found: dict[str, bool] = {}
    for sub, dirs, names in os.walk(folder):
        rel = Path(sub).relative_to(folder)
        for name in dirs:
            found[(rel / name).as_posix()] = not os.path.islink(os.path.join(sub, name))
        for name in names:
            found[(rel / name).as_posix()] = False
    return found


def _with_folders(files: Collection[str]) -> set[str]:
    """The paths in ``files`` and every folder on the way to one of them."""
    out: set[str] = set()
    for f in files:
        parts = f.strip("/").split("/")
        out.update("/".join(parts[:i]) for i in range(1, len(parts) + 1))
    return out


def _shown(names: list[str], folders: dict[str, bool]) -> str:
    listed = ", ".join(repr(n + ("/" if folders.get(n) else "")) for n in names[:3])
    return listed + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def check_out_dir(
    out: str | Path,
    overwrite: bool,
    inputs: Sequence[str | Path] = (),
    what: str = "--out",
    ours: Recogniser | Sequence[Recogniser] | None = None,
    kind: str = "output",
) -> None:
    """Refuse an output folder that would lose data; call it before any work.

    Refused: ``out`` an existing file; ``out`` equal to, inside, or containing any of ``inputs``
    (checked as written and with symlinks resolved, whether or not ``--overwrite`` is given); a
    non-empty folder without ``overwrite``; with ``overwrite``, a non-empty folder that ``ours``
    does not recognise as a previous lmkit ``kind`` (no ``ours``: never replaced), or one holding
    any entry, at any depth, that the command did not write (a file or folder the user added).
    Each refusal is one :class:`LmkitError` line naming ``what`` (the flag), the folder and the
    input or the entries that are not lmkit's.
    """
    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise LmkitError(f"{what} {out}: exists and is not a folder")
    _overlap(out, inputs, what)
    if not out.is_dir():
        return
    names = sorted(p.name for p in out.iterdir())
    if not names:
        return
    if not overwrite:
        raise LmkitError(
            f"{what} {out} already exists and is not empty (holds {names[0]!r}{' ...' if len(names) > 1 else ''}); "
            "pass --overwrite to replace a previous output, or choose a new folder"
        )
    tests = _recognisers(ours)
    if not tests:
        raise LmkitError(
            f"{what} {out} is not empty and lmkit cannot tell it is a previous output; choose an empty or new folder"
        )
    if not any(isinstance(t, (re.Pattern, Manifest)) for t in tests):
        raise TypeError(
            "check_out_dir: `ours` needs a pattern or a Manifest: a test of the whole folder cannot "
            "tell the user's own files from lmkit's"
        )
    not_ours = LmkitError(
        f"{what} {out} is not a previous lmkit {kind} (holds {names[0]!r}"
        f"{' ...' if len(names) > 1 else ''}); --overwrite only replaces lmkit's own outputs: "
        "choose an empty or new folder"
    )
    entries = _entries(out)
    for test in tests:  # in the order given: the first that fails words the refusal
        if isinstance(test, re.Pattern):
            foreign = {e for e in entries if not test.fullmatch(e)}
        elif isinstance(test, Manifest):
            files = test.files(out)
            if files is None:
                raise not_ours
            written = _with_folders(files)
            foreign = {e for e in entries if e not in written}
        elif test(out):
            continue
        else:
            raise not_ours
        top = sorted(e for e in foreign if e.rpartition("/")[0] not in foreign)
        if top:
            raise LmkitError(
                f"{what} {out} holds {_shown(top, entries)}, which lmkit did not write and never "
                f"deletes (--overwrite replaces only a previous {kind}): move "
                f"{'it' if len(top) == 1 else 'them'} out, or choose an empty or new folder"
            )


def check_out_file(
    out: str | Path,
    overwrite: bool,
    inputs: Sequence[str | Path] = (),
    what: str = "--out",
    ours: Callable[[Path], bool] | None = None,
    kind: str = "output",
    inside_inputs: bool = False,
) -> None:
    """The same rules for a command that writes one file (a tokenizer, a card, a picture).

    Refused: ``out`` an existing folder; ``out`` one of ``inputs``; ``out`` inside an input folder
    unless ``inside_inputs`` (then an existing file there is replaced only when ``ours`` says it
    is a previous ``kind``); an existing file without ``overwrite``; with ``overwrite``, an
    existing file ``ours`` does not recognise.
    """
    out = Path(out).expanduser()
    if out.is_dir():
        raise LmkitError(f"{what} {out}: is a folder; give a file name")
    if not inside_inputs:
        _overlap(out, inputs, what, out_is_file=True)
    else:
        outs = _forms(out)
        for given in inputs:
            if outs & _forms(Path(given)):
                raise LmkitError(f"{what} {out} is the input {given}; choose a file outside the inputs")
    if not out.exists():
        return
    if not overwrite:
        raise LmkitError(f"{what} {out} already exists; pass --overwrite to replace it")
    if ours is not None and not ours(out):
        raise LmkitError(
            f"{what} {out} is not a previous lmkit {kind}; --overwrite only replaces lmkit's own "
            "outputs: choose another file"
        )
