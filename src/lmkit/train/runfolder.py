"""Run folders: what makes a folder an lmkit run folder and who may write to it.

``lmkit pretrain --out DIR`` writes checkpoints, metrics, plots, shards and a tokenizer into DIR,
and replaces files of those names that are already there. So it writes only into a folder that
is missing, empty, or already one of its own run folders:

* **Marker.** When lmkit creates or claims a run folder it writes ``DIR/.lmkit-run`` (JSON: format,
  lmkit version, creation time). A folder with other files and no marker is refused with a
  one-line error naming the folder and a few of the files, so a user's files are never replaced.
  A folder from before markers existed is adopted (marked) when it holds lmkit checkpoints.
* **Lock.** For the whole run the writer holds an exclusive ``flock`` on ``DIR/.lmkit-lock`` and
  writes its PID there. The lock belongs to the open file, so it ends with the process however it
  ends (even SIGKILL): there is never a stale lock to remove by hand. A second run into the same
  folder is refused with the folder and the PID that holds it. Under ``torchrun`` only the main
  rank claims the folder.
* **Orphans.** A SIGKILL in the middle of an atomic write leaves its temporary sibling behind
  (``.ckpt-0000040.tmp-*``, ``.shards.tmp-*``, ``.tokenizer.json.tmp-*``) or, when it struck
  between the two renames of a folder replacement, the previous version as ``.NAME.old-*``; one
  during pruning leaves ``.ckpt-*.del-*``. Once the lock is held these are removed (an ``.old-*``
  whose folder is missing is moved back instead), and so is a ``ckpt-*`` folder without
  ``config.json``/``meta.json`` (what a kill during an older lmkit's pruning left).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from lmkit import __version__
from lmkit.errors import LmkitError
from lmkit.files import write_json_atomic

try:  # POSIX; elsewhere runs are not locked
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

MARKER = ".lmkit-run"
LOCK = ".lmkit-lock"
MARKER_FORMAT = "lmkit-run/1"

# Temporary siblings of atomic writes: ``.NAME.tmp-SUFFIX`` / ``.NAME.old-SUFFIX`` (folders and
# files), checkpoints being pruned (``.NAME.del-PID``) and write_json_atomic's ``.NAME.RANDOM.tmp``.
_ORPHAN = re.compile(r"^\.(?P<name>.+?)\.(?P<kind>tmp|old|del)-[^/]+$")
# A checkpoint folder name: one without config.json/meta.json is what an older lmkit's pruning
# left when killed while deleting it (checkpoints are written elsewhere and renamed in whole).
_CKPT = re.compile(r"^ckpt-\d+$")
_JSON_TMP = re.compile(r"^\..+\.tmp$")

# Folders this process holds the lock of: real path -> open lock file descriptor.
_held: dict[str, int] = {}


def _marker_ok(folder: Path) -> bool:
    try:
        data = json.loads((folder / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("format") == MARKER_FORMAT


def is_run_folder(folder: str | Path) -> bool:
    """Whether ``folder`` carries lmkit's run-folder marker."""
    return _marker_ok(Path(folder))


def _is_legacy_run(folder: Path) -> bool:
    """A run folder an lmkit without markers made: it holds checkpoints of lmkit's format."""
    from lmkit.models.checkpoint import FORMAT, list_checkpoints

    for ckpt in list_checkpoints(folder):
        try:
            config = json.loads((ckpt / "config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(config, dict) and config.get("format") == FORMAT:
            return True
    return False


def check_run_folder(folder: str | Path) -> bool:
    """Refuse (``LmkitError``) a path lmkit may not write a run into; True when it must be created.

    Allowed: a missing path, an empty folder, a folder with lmkit's marker, or an unmarked folder
    an older lmkit made (one holding lmkit checkpoints).
    """
    p = Path(folder)
    if not p.exists():
        if p.is_symlink():
            raise LmkitError(f"{p}: is a broken symbolic link; choose another run folder (--out)")
        return True
    if not p.is_dir():
        raise LmkitError(f"{p}: is a file, not a folder; --out (config key out) must name a run folder")
    if _marker_ok(p):
        return False
    try:
        names = sorted(n for n in os.listdir(p) if n != LOCK)
    except OSError as e:
        raise LmkitError(f"{p}: cannot read the run folder ({e.strerror})") from None
    if not names or _is_legacy_run(p):
        return False
    shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    raise LmkitError(
        f"{p}: not an lmkit run folder (no {MARKER} marker) and not empty: it holds {shown}; "
        "lmkit will not write over them: choose a new or empty folder for --out"
    )


def _holder_pid(lock_path: Path) -> str:
    for _ in range(20):  # the holder writes its PID right after taking the lock
        try:
            text = lock_path.read_text(encoding="ascii", errors="replace").strip()
        except OSError:
            text = ""
        if text:
            return text
        time.sleep(0.01)
    return "unknown"


def _lock(folder: Path) -> None:
    key = os.path.realpath(folder)
    if key in _held or fcntl is None:
        return
    lock_path = folder / LOCK
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as e:
        raise LmkitError(f"{lock_path}: cannot create the run lock ({e.strerror})") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        pid = _holder_pid(lock_path)
        raise LmkitError(
            f"{folder}: another lmkit run (PID {pid}) is writing to this run folder; wait for it to "
            "finish or stop it, or choose another --out"
        ) from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode("ascii"))
    _held[key] = fd


def release_run_folder(folder: str | Path) -> None:
    """Let go of this process's lock on ``folder`` (nothing happens if it holds none)."""
    fd = _held.pop(os.path.realpath(folder), None)
    if fd is not None:
        os.close(fd)  # closing the last descriptor of the open file releases the flock


def holds_run_folder(folder: str | Path) -> bool:
    """Whether this process holds the lock on ``folder``."""
    return os.path.realpath(folder) in _held


def clean_orphans(folder: str | Path) -> list[str]:
    """Remove what interrupted atomic writes left in a run folder; returns the names handled.

    Call only with the folder's lock held. ``.NAME.old-*`` whose ``NAME`` is missing was the
    complete previous version when the writer died between its two renames: it is moved back.
    """
    from lmkit.models.checkpoint import is_checkpoint

    p = Path(folder)
    done: list[str] = []
    for entry in sorted(p.iterdir()):
        m = _ORPHAN.match(entry.name)
        half_deleted = bool(_CKPT.match(entry.name)) and entry.is_dir() and not is_checkpoint(entry)
        if m is None and not half_deleted and not (_JSON_TMP.match(entry.name) and entry.is_file()):
            continue
        if m is not None and m["kind"] == "old":
            final = p / m["name"]
            restorable = is_checkpoint(entry) if m["name"].startswith("ckpt-") else True
            if not final.exists() and restorable:
                os.replace(entry, final)
                done.append(entry.name)
                continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        done.append(entry.name)
    return done


def claim_run_folder(folder: str | Path, lock: bool = True, create: bool = True) -> list[str]:
    """Make ``folder`` this process's run folder: check, create, lock, mark, clean orphans.

    ``lock=False`` (the non-main ranks of a distributed run) does nothing: the main rank alone
    decides, and checking beside it could see its folder half made. With ``create=False`` a
    missing folder is left missing (and nothing is locked). Returns the orphan names cleaned.
    Raises ``LmkitError`` for a file, a foreign folder, or a folder another process is writing.
    """
    if not lock:
        return []
    p = Path(folder)
    missing = check_run_folder(p)
    if missing and not create:
        return []
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise LmkitError(f"{p}: cannot create the run folder ({e.strerror})") from None
    _lock(p)
    try:
        check_run_folder(p)  # again, now that no other lmkit run can change it
        if not _marker_ok(p):
            write_json_atomic(p / MARKER, _marker())
        return clean_orphans(p)
    except BaseException:
        release_run_folder(p)
        raise


def _marker() -> dict[str, Any]:
    return {
        "format": MARKER_FORMAT,
        "lmkit_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


__all__ = [
    "MARKER",
    "LOCK",
    "is_run_folder",
    "check_run_folder",
    "claim_run_folder",
    "release_run_folder",
    "holds_run_folder",
    "clean_orphans",
]
