"""A model hub in a folder or any fsspec URL: where it is, its layout, and push, pull, list and show.

``lmkit hub push CKPT NAME`` publishes a checkpoint under a name; ``pull NAME[@REV] --out DIR``
fetches it back; ``list`` and ``show NAME`` browse it (``search QUERY``, by name, family, task,
size and card text, is :mod:`lmkit.ship.hub_search`). Where the hub is: ``--hub URL``, else the
environment variable ``LMKIT_HUB``, else ``$XDG_CACHE_HOME/lmkit/hub`` (``~/.cache/lmkit/hub``).
A URL is anything fsspec opens: a plain folder, ``file://``, ``memory://`` (tests),
``s3://bucket/hub`` or ``gs://...`` when the user has installed fsspec's plugin for it (``s3fs``,
``gcsfs``). A hub that is a file, or a place lmkit cannot write (for push), is one line naming the
hub, found before anything is written.

Layout (content-addressed, so a new revision uploads only the files that changed)::

    HUB/models/<name>/@blobs/<sha256>            file contents, named by their sha256
    HUB/models/<name>/@revisions/<n>.json        manifest of revision n: every file's path,
                                                 sha256 and size, plus a summary (family, task,
                                                 parameters, tokens, held-out loss, ...)

A name is ``model`` or ``namespace/model``; each part starts with an ASCII letter or digit and holds
only ASCII letters, digits, ``.``, ``_`` and ``-`` (no ``..``): no name can point outside the hub folder, and
``@`` (which starts lmkit's internal folders) cannot appear in one. Every push creates revision
n+1 (the manifest is created exclusively, so two pushes cannot take the same number on a folder
hub or a store that supports exclusive creation); a revision is never changed afterwards.
``NAME@3`` pulls revision 3, ``NAME`` the latest. Pull checks every file against the manifest's
sha256 and size while copying into a temporary sibling of ``--out``, so a file changed or damaged
in the hub is reported and nothing half-verified is left behind. The checksums detect damage and
tampering of the files; someone able to rewrite the manifests too is outside what they protect.
A pulled folder also holds ``.lmkit-pull.json`` (:data:`PULL_RECORD`: name, revision and the files
the pull wrote; hidden, so a push of that folder leaves it out). ``pull --overwrite`` replaces a
folder only when that record names every entry in it: a file the user added is never deleted.

A checkpoint is pushed without ``train_state/`` (optimizer state, about twice the weights) unless
``--include-train-state``; its model card is the checkpoint's ``README.md`` when it has one
(``lmkit card``), otherwise one is written at push time. The ``lmkit hub`` command's flags and
printing live in ``lmkit.cli.hub``.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lmkit.errors import LmkitError
from lmkit.files import sha256_file

HUB_ENV = "LMKIT_HUB"
MANIFEST_FORMAT = "lmkit-hub/1"
CARD_FILE = "README.md"
PULL_RECORD = ".lmkit-pull.json"
PULL_FORMAT = "lmkit-hub-pull/1"
_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}")
_CHUNK = 1 << 20


def default_hub() -> str:
    """``$XDG_CACHE_HOME/lmkit/hub``, or ``~/.cache/lmkit/hub``."""
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path("~/.cache").expanduser())
    return str(Path(cache) / "lmkit" / "hub")


def hub_url(explicit: str | None = None) -> str:
    """The hub to use: ``--hub``, else ``$LMKIT_HUB``, else :func:`default_hub`."""
    return explicit or os.environ.get(HUB_ENV) or default_hub()


def validate_name(name: str) -> str:
    """``name`` if it is a safe hub name (``model`` or ``namespace/model``), else a clear error."""
    if not isinstance(name, str) or not name.strip():
        raise LmkitError("hub name is empty")
    if "\\" in name:
        raise LmkitError(f"hub name {name!r}: backslashes are not allowed (use namespace/model)")
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name) or name.startswith("~"):
        raise LmkitError(f"hub name {name!r}: absolute paths are not allowed (a name is model or namespace/model)")
    parts = name.split("/")
    if any(p == "" for p in parts):
        raise LmkitError(f"hub name {name!r}: empty part (a name is model or namespace/model)")
    if any(p in (".", "..") or ".." in p for p in parts):
        raise LmkitError(f"hub name {name!r}: '..' and '.' parts are not allowed")
    if len(parts) > 2:
        raise LmkitError(f"hub name {name!r}: at most two parts, namespace/model")
    for p in parts:
        if not _PART.fullmatch(p):
            bad = next((c for c in p if not (c.isascii() and (c.isalnum() or c in "._-"))), None)
            what = f" ({bad!r} is not allowed)" if bad is not None else ""
            raise LmkitError(
                f"hub name {name!r}: part {p!r} must start with an ASCII letter or digit and hold "
                f"only ASCII letters (a-z, A-Z), digits, '.', '_' and '-', at most 96 characters{what}"
            )
    return name


def parse_spec(spec: str) -> tuple[str, int | None]:
    """``NAME[@REV]`` -> (name, revision or None for the latest)."""
    name, sep, rev = spec.partition("@")
    validate_name(name)
    if not sep or rev == "latest":
        return name, None
    if not rev.isdigit() or int(rev) <= 0:
        raise LmkitError(f"{spec!r}: revision must be a positive number (NAME@3) or 'latest'")
    return name, int(rev)


def safe_relpath(path: str, where: str) -> str:
    """A manifest's file path, refused if it could land outside the output folder."""
    if (
        not isinstance(path, str)
        or not path
        or "\\" in path
        or "\x00" in path
        or path.startswith("/")
        or re.match(r"^[A-Za-z]:", path)
    ):
        raise LmkitError(f"{where}: unsafe file path {path!r} in the manifest")
    if any(p in ("", ".", "..") for p in path.split("/")):
        raise LmkitError(f"{where}: unsafe file path {path!r} in the manifest")
    return path


def pulled_files(folder: Path) -> list[str] | None:
    """The files a previous ``pull`` wrote into ``folder``, read from its :data:`PULL_RECORD` (the record
    itself included); None without a readable record: then ``--overwrite`` does not replace it."""
    try:
        record = json.loads((folder / PULL_RECORD).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    files = record.get("files") if isinstance(record, dict) and record.get("format") == PULL_FORMAT else None
    if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
        return None
    return [*files, PULL_RECORD]


def _files_of(ckpt: Path, include_train_state: bool) -> Iterator[tuple[str, Path]]:
    for p in sorted(ckpt.rglob("*")):
        rel = p.relative_to(ckpt).as_posix()
        if not p.is_file() or any(part.startswith(".") for part in rel.split("/")):
            continue
        if rel.startswith("train_state/") and not include_train_state:
            continue
        yield rel, p


def _summary(ckpt: Path) -> dict[str, Any]:
    """What list/search show without opening the files: read from the checkpoint's config and meta."""
    from lmkit.families import PIPELINE_TAG
    from lmkit.models.hf import hf_architecture
    from lmkit.models.int8 import quant_label
    from lmkit.ship.card.render import card_facts

    f = card_facts(ckpt)
    cfg, meta = f["cfg"], f["meta"]
    ev = meta.get("eval") or {}
    return {
        "family": cfg.family,
        "task": PIPELINE_TAG[cfg.family],
        "objective": cfg.objective,
        "architecture": hf_architecture(cfg),
        "params": f["params"],
        "vocab_size": cfg.vocab_size,
        "context": cfg.max_seq_len,
        "tokens": meta.get("tokens"),
        "steps": meta.get("step"),
        "eval_loss": ev.get("loss"),
        "perplexity": ev.get("perplexity"),
        "bits_per_byte": ev.get("bits_per_byte"),
        "quantization": quant_label(f["quantization"]) if f["quantization"] else None,
        "imported": bool(meta.get("imported_from")),
        "source": str(ckpt.resolve()),
    }


class Hub:
    """One hub: a folder or fsspec URL holding named models with numbered revisions."""

    def __init__(self, url: str | None = None) -> None:
        import fsspec

        self.url = hub_url(url)
        try:
            self.fs, root = fsspec.core.url_to_fs(os.path.expanduser(self.url))
        except (ImportError, ValueError) as e:
            raise LmkitError(f"hub {self.url!r}: cannot open ({e}); for s3:// or gs:// install s3fs or gcsfs") from None
        self.root = root.rstrip("/") or "/"
        if self._local_roots() and os.path.exists(self.root) and not os.path.isdir(self.root):
            raise LmkitError(
                f"hub {self.url}: is a file, not a hub folder (--hub or ${HUB_ENV} names a folder, "
                "new or made by lmkit hub push, or an fsspec URL)"
            )

    # ------------------------------------------------------------------ paths

    def _local_roots(self) -> list[str]:
        """The hub's own folder when it is on this machine (an output must not be in or around it)."""
        protocol = self.fs.protocol if isinstance(self.fs.protocol, (tuple, list)) else (self.fs.protocol,)
        return [self.root] if {"file", "local"} & set(protocol) else []

    def _model_dir(self, name: str) -> str:
        return posixpath.join(self.root, "models", validate_name(name))

    def _manifest_path(self, name: str, revision: int) -> str:
        return posixpath.join(self._model_dir(name), "@revisions", f"{revision}.json")

    def _blob_path(self, name: str, sha: str) -> str:
        if not re.fullmatch(r"[0-9a-f]{64}", sha or ""):
            raise LmkitError(f"{name}: manifest holds a malformed sha256 {sha!r}")
        return posixpath.join(self._model_dir(name), "@blobs", sha)

    # ------------------------------------------------------------------ reading

    def names(self) -> list[str]:
        """Every model name in the hub, sorted."""
        base = posixpath.join(self.root, "models")
        if not self.fs.exists(base):
            return []
        found = set()
        for pattern in ("*/@revisions", "*/*/@revisions"):
            for p in self.fs.glob(posixpath.join(base, pattern)):
                folder = posixpath.dirname(p.rstrip("/")).lstrip("/")
                rel = posixpath.relpath(folder, base.lstrip("/"))
                try:
                    found.add(validate_name(rel))
                except LmkitError:
                    continue  # a foreign folder in the hub: not a model
        return sorted(found)

    def revisions(self, name: str) -> list[int]:
        """Revision numbers of ``name``, oldest first (empty if the name is not in the hub)."""
        d = posixpath.join(self._model_dir(name), "@revisions")
        if not self.fs.exists(d):
            return []
        revs = []
        for p in self.fs.ls(d, detail=False):
            stem = posixpath.basename(p.rstrip("/"))
            if stem.endswith(".json") and stem[:-5].isdigit():
                revs.append(int(stem[:-5]))
        return sorted(revs)

    def manifest(self, name: str, revision: int | None = None) -> dict[str, Any]:
        """The manifest of ``name`` at ``revision`` (latest when None)."""
        revs = self.revisions(name)
        if not revs:
            raise LmkitError(f"{name}: not in hub {self.url}" + (self._did_you_mean(name)))
        rev = revs[-1] if revision is None else revision
        if rev not in revs:
            raise LmkitError(
                f"{name}@{rev}: no such revision in hub {self.url} (revisions: {', '.join(map(str, revs))})"
            )
        path = self._manifest_path(name, rev)
        try:
            with self.fs.open(path, "rb") as f:
                m = json.loads(f.read().decode("utf-8"))
        except (OSError, ValueError, UnicodeDecodeError) as e:
            raise LmkitError(f"{name}@{rev}: manifest {path} is unreadable ({e})") from None
        if not isinstance(m, dict) or m.get("format") != MANIFEST_FORMAT or not isinstance(m.get("files"), dict):
            raise LmkitError(f"{name}@{rev}: {path} is not an lmkit hub manifest")
        if m.get("name") != name or m.get("revision") != rev:
            raise LmkitError(f"{name}@{rev}: manifest {path} names {m.get('name')}@{m.get('revision')}")
        return m

    def _did_you_mean(self, name: str) -> str:
        close = [n for n in self.names() if name.lower() in n.lower() or n.lower() in name.lower()]
        return f" (did you mean {', '.join(close[:3])}?)" if close else ""

    def read_file(self, name: str, revision: int | None, path: str) -> bytes:
        """One file of a revision, verified against its sha256 and size."""
        m = self.manifest(name, revision)
        entry = m["files"].get(path)
        if entry is None:
            raise LmkitError(f"{name}@{m['revision']}: has no {path}")
        with self.fs.open(self._blob_path(name, entry["sha256"]), "rb") as f:
            data = f.read()
        got = hashlib.sha256(data).hexdigest()
        if got != entry["sha256"] or len(data) != entry["size"]:
            raise LmkitError(self._corrupt(name, m["revision"], path, entry, got, len(data)))
        return data

    def _corrupt(self, name: str, rev: int, path: str, entry: dict[str, Any], got: str, size: int) -> str:
        return (
            f"{name}@{rev}: {path} fails its checksum (expected sha256 {entry['sha256'][:16]}… and "
            f"{entry['size']:,} bytes, got {got[:16]}… and {size:,} bytes): the hub copy was changed or damaged "
            f"({self._blob_path(name, entry['sha256'])})"
        )

    def card(self, spec: str) -> str:
        name, rev = parse_spec(spec)
        return self.read_file(name, rev, CARD_FILE).decode("utf-8")

    def entries(self) -> list[dict[str, Any]]:
        """Latest manifest of every model, with its revision count."""
        out = []
        for name in self.names():
            try:
                m = self.manifest(name)
            except LmkitError:
                continue  # unreadable entries are reported by show/pull, not by listing
            m["revisions"] = len(self.revisions(name))
            out.append(m)
        return out

    # ------------------------------------------------------------------ writing

    def _writable(self, name: str) -> None:
        """On a hub folder of this machine: refuse, before anything is written, a path whose nearest
        existing part is a file or a folder this process cannot write."""
        if not self._local_roots():
            return
        here = Path(self._model_dir(name))
        while not here.exists() and here != here.parent:
            here = here.parent
        if not here.is_dir():
            raise LmkitError(
                f"hub {self.url}: cannot push there ({here} is a file, not a folder); --hub or "
                f"${HUB_ENV} must name a folder lmkit can write, or an fsspec URL"
            )
        if not os.access(here, os.W_OK | os.X_OK):
            raise LmkitError(
                f"hub {self.url}: cannot push there ({here} is not writable); --hub or ${HUB_ENV} "
                "must name a folder lmkit can write, or an fsspec URL"
            )

    def _write_error(self, e: OSError) -> LmkitError:
        """A failed write to the hub as one line naming the hub and the path that failed."""
        where = f": {e.filename}" if e.filename else ""
        return LmkitError(
            f"hub {self.url}: cannot push there ({e.strerror or str(e) or type(e).__name__}{where}); --hub or "
            f"${HUB_ENV} must name a folder lmkit can write, or an fsspec URL"
        )

    def push(
        self,
        ckpt: str | Path,
        name: str,
        message: str | None = None,
        include_train_state: bool = False,
        card: str | Path | None = None,
        show_progress: bool = False,
    ) -> dict[str, Any]:
        """Publish checkpoint ``ckpt`` as the next revision of ``name``; returns the manifest."""
        from lmkit import __version__
        from lmkit.models.checkpoint import resolve_checkpoint
        from lmkit.ship.card.render import render_card

        validate_name(name)
        self._writable(name)  # before the checkpoint is read
        path = resolve_checkpoint(ckpt)
        summary = _summary(path)
        files: dict[str, Path] = dict(_files_of(path, include_train_state))
        card_text: bytes | None = None
        if card is not None:
            cp = Path(card)
            if not cp.is_file():
                raise LmkitError(f"{cp}: card file not found")
            card_text = cp.read_bytes()
            files.pop(CARD_FILE, None)
        elif CARD_FILE not in files:
            card_text = render_card(path, hub_name=name).encode("utf-8")
        entries: dict[str, dict[str, Any]] = {}
        for rel, p in files.items():
            entries[rel] = {"sha256": sha256_file(p), "size": p.stat().st_size}
        from lmkit.models.checkpoint import verify_digests

        verify_digests(path, {rel: e["sha256"] for rel, e in entries.items()})  # unchanged since saved
        if card_text is not None:
            entries[CARD_FILE] = {"sha256": hashlib.sha256(card_text).hexdigest(), "size": len(card_text)}
        total = sum(e["size"] for e in entries.values())

        from lmkit.progress import progress

        bar = progress(total=total, unit="B", unit_scale=True, desc=f"push {name}", disable=not show_progress)
        uploaded = 0
        try:
            self.fs.makedirs(posixpath.join(self._model_dir(name), "@blobs"), exist_ok=True)
            self.fs.makedirs(posixpath.join(self._model_dir(name), "@revisions"), exist_ok=True)
            for rel in sorted(entries):
                e = entries[rel]
                blob = self._blob_path(name, e["sha256"])
                if self.fs.exists(blob) and self.fs.size(blob) == e["size"]:
                    bar.update(e["size"])
                    continue
                part = f"{blob}.partial-{uuid.uuid4().hex[:8]}"
                with self.fs.open(part, "wb") as out:
                    if rel == CARD_FILE and card_text is not None:
                        out.write(card_text)
                        bar.update(len(card_text))
                    else:
                        with open(files[rel], "rb") as src:
                            while block := src.read(_CHUNK):
                                out.write(block)
                                bar.update(len(block))
                self.fs.mv(part, blob)
                uploaded += 1
        except OSError as e:
            raise self._write_error(e) from None
        finally:
            bar.close()
        manifest = {
            "format": MANIFEST_FORMAT,
            "name": name,
            "revision": 0,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "message": message or "",
            "lmkit_version": __version__,
            "files": dict(sorted(entries.items())),
            "size": total,
            "info": summary,
        }
        for _ in range(100):
            revs = self.revisions(name)
            manifest["revision"] = (revs[-1] if revs else 0) + 1
            data = (json.dumps(manifest, indent=2) + "\n").encode("utf-8")
            target = self._manifest_path(name, manifest["revision"])
            try:
                with self.fs.open(target, "xb") as f:
                    f.write(data)
                break
            except FileExistsError:
                continue  # another push took this number: take the next
            except (ValueError, NotImplementedError):  # this store has no exclusive create
                if self.fs.exists(target):
                    continue
                with self.fs.open(target, "wb") as f:
                    f.write(data)
                break
            except OSError as e:
                raise self._write_error(e) from None
        else:
            raise LmkitError(f"{name}: could not claim a new revision number in {self.url}")
        manifest["uploaded_blobs"] = uploaded
        return manifest

    def pull(self, spec: str, out: str | Path, overwrite: bool = False, show_progress: bool = False) -> dict[str, Any]:
        """Copy ``NAME[@REV]`` into folder ``out``, verifying every file; returns the manifest."""
        import shutil
        import tempfile

        from lmkit.files import Manifest, check_out_dir, replace_dir
        from lmkit.progress import progress

        name, rev = parse_spec(spec)
        m = self.manifest(name, rev)
        where = f"{name}@{m['revision']}"
        for rel in m["files"]:
            safe_relpath(rel, where)
        out = Path(out)
        check_out_dir(out, overwrite, self._local_roots(), ours=Manifest(pulled_files), kind="pulled checkpoint")
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.pull-"))
        bar = progress(
            total=sum(int(e.get("size", 0)) for e in m["files"].values()),
            unit="B",
            unit_scale=True,
            desc=f"pull {where}",
            disable=not show_progress,
        )
        try:
            for rel, e in sorted(m["files"].items()):
                dest = tmp / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                blob = self._blob_path(name, e["sha256"])
                if not self.fs.exists(blob):
                    raise LmkitError(f"{where}: {rel} is missing from the hub ({blob})")
                h, size = hashlib.sha256(), 0
                with self.fs.open(blob, "rb") as src, open(dest, "wb") as dst:
                    while block := src.read(_CHUNK):
                        h.update(block)
                        size += len(block)
                        dst.write(block)
                        bar.update(len(block))
                if h.hexdigest() != e["sha256"] or size != e["size"]:
                    raise LmkitError(self._corrupt(name, m["revision"], rel, e, h.hexdigest(), size))
            record = {
                "format": PULL_FORMAT,
                "hub": self.url,
                "name": name,
                "revision": m["revision"],
                "files": sorted(m["files"]),
            }
            (tmp / PULL_RECORD).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
            replace_dir(tmp, out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        finally:
            bar.close()
        return m
