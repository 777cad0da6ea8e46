"""Writing files safely: the one place for atomic writes, atomic folder publishing and checksums.

Every command that writes a file or a folder goes through these helpers, so the rules hold
everywhere: a reader never sees half a file (write to a temporary sibling, then rename), a
finished folder replaces an old one in one step, and a file's integrity is a SHA-256 digest.
New files and folders get the permissions the user's umask gives (``tempfile`` alone would
make them private: 0600/0700).

It also holds the one check every command runs on its ``--out`` before any work
(:func:`check_out_dir` for folders, :func:`check_out_file` for single files): an output never
is, lies inside, or contains one of the command's inputs (symlinks resolved), a non-empty folder
is replaced only with ``--overwrite``, and even then only when it is recognisably one of lmkit's
own outputs (each command says how it recognises its outputs: by file names, or by a test of the
folder such as "is an lmkit checkpoint").
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Sequence
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
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
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


# --------------------------------------------------------------------------- output folders

#: How a command recognises a previous output of its own: a pattern every entry name of the
#: folder must match, or a test of the path; a sequence means all of them must hold.
Recogniser = Union["re.Pattern[str]", Callable[[Path], bool]]


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
            raise LmkitError(f"{what} {out} contains the input {given}; --overwrite would delete it: "
                             "choose a folder outside the inputs")


def _recognisers(ours: Recogniser | Sequence[Recogniser] | None) -> list[Recogniser]:
    if ours is None:
        return []
    if isinstance(ours, re.Pattern) or callable(ours):
        return [ours]
    return list(ours)


def check_out_dir(out: str | Path, overwrite: bool, inputs: Sequence[str | Path] = (), what: str = "--out",
                  ours: Recogniser | Sequence[Recogniser] | None = None, kind: str = "output") -> None:
    """Refuse an output folder that would lose data; call it before any work.

    Refused: ``out`` an existing file; ``out`` equal to, inside, or containing any of ``inputs``
    (checked as written and with symlinks resolved, whether or not ``--overwrite`` is given); a
    non-empty folder without ``overwrite``; with ``overwrite``, a non-empty folder that ``ours``
    does not recognise as a previous lmkit ``kind`` (no ``ours``: never replaced). Each refusal
    is one :class:`LmkitError` line naming ``what`` (the flag), the folder and the input.
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
        raise LmkitError(f"{what} {out} already exists and is not empty (holds {names[0]!r}{' ...' if len(names) > 1 else ''}); "
                         "pass --overwrite to replace a previous output, or choose a new folder")
    tests = _recognisers(ours)
    for test in tests:
        if isinstance(test, re.Pattern):
            foreign = [n for n in names if not test.fullmatch(n)]
            if foreign:
                raise LmkitError(f"{what} {out} holds files lmkit did not write (e.g. {foreign[0]!r}); "
                                 f"--overwrite only replaces a previous {kind}: choose an empty or new folder")
        elif not test(out):
            raise LmkitError(f"{what} {out} is not a previous lmkit {kind} (holds {names[0]!r}"
                             f"{' ...' if len(names) > 1 else ''}); --overwrite only replaces lmkit's own outputs: "
                             "choose an empty or new folder")
    if not tests:
        raise LmkitError(f"{what} {out} is not empty and lmkit cannot tell it is a previous output; "
                         "choose an empty or new folder")


def check_out_file(out: str | Path, overwrite: bool, inputs: Sequence[str | Path] = (), what: str = "--out",
                   ours: Callable[[Path], bool] | None = None, kind: str = "output",
                   inside_inputs: bool = False) -> None:
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
        raise LmkitError(f"{what} {out} is not a previous lmkit {kind}; --overwrite only replaces lmkit's own "
                         "outputs: choose another file")
