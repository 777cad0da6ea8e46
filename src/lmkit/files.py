"""Writing files safely: the one place for atomic writes, atomic folder publishing and checksums.

Every command that writes a file or a folder goes through these helpers, so the rules hold
everywhere: a reader never sees half a file (write to a temporary sibling, then rename), a
finished folder replaces an old one in one step, and a file's integrity is a SHA-256 digest.
New files and folders get the permissions the user's umask gives (``tempfile`` alone would
make them private: 0600/0700).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

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
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, default=str)
            f.write("\n")
        chmod_default(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def replace_dir(tmp: Path, final: Path) -> None:
    """Move the finished temporary folder ``tmp`` into place, replacing ``final`` if it exists."""
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
