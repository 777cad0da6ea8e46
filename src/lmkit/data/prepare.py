"""Preparing training data: :func:`prepare`, the glue training calls, from ``data.paths`` to
(tokenizer, train shards, val shards).

What this module owns: a packed shard folder given as the data is opened as it is, and its
tokenizer must be the one it was packed with (same sha256); raw files and folders are read, a
tokenizer trained on them when none is given (saved as ``tokenizer.json`` in the run folder), and
the documents packed by :func:`lmkit.data.pack.pack`. Shards packed earlier from the same inputs
(:func:`inputs_fingerprint`: paths, sizes, modification times, and the settings that shape
shards) with the same tokenizer are reused as they are; a shards folder holding anything else is
never overwritten.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lmkit.config import DataConfig
from lmkit.data.document import Document, ReadReport
from lmkit.data.pack import SHARD_VERSION, pack
from lmkit.data.read import iter_documents, list_files
from lmkit.data.shards import SHARD_FORMAT, TokenShards, is_shard_folder
from lmkit.errors import LmkitError
from lmkit.tokenizer import Tokenizer, train_tokenizer


def inputs_fingerprint(files: list[Path], **settings: Any) -> str:
    """A hash of the input files (path, size, modification time) and the settings that shape shards."""
    h = hashlib.sha256()
    for f in files:
        st = f.stat()
        h.update(f"{f.resolve()}\x00{st.st_size}\x00{st.st_mtime_ns}\n".encode("utf-8", "surrogatepass"))
    h.update(json.dumps(settings, sort_keys=True, default=str).encode("utf-8"))
    return h.hexdigest()


def _read_meta(folder: Path) -> dict[str, Any] | None:
    try:
        return json.loads((folder / "train" / "meta.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _open_splits(folder: Path) -> tuple[TokenShards, TokenShards]:
    return TokenShards(folder / "train"), TokenShards(folder / "val")


def prepare(
    data_cfg: DataConfig, out_dir: str | Path, vocab_size: int, seed: int = 0, show_progress: bool = True
) -> tuple[Tokenizer, TokenShards, TokenShards]:
    """Everything training needs from ``data_cfg``: (tokenizer, train shards, val shards).

    * ``data_cfg.paths`` is one packed shard folder: open it. The tokenizer is
      ``data_cfg.tokenizer`` if given, else the ``tokenizer.json`` saved in the shard folder; its
      sha256 must match the shards'.
    * Otherwise the paths are raw files/folders: the tokenizer is ``data_cfg.tokenizer`` or one
      trained on them (vocabulary ``data_cfg.vocab_size`` or ``vocab_size``) and saved to
      ``out_dir/tokenizer.json``; the documents are packed into ``data_cfg.shards`` (default
      ``out_dir/shards``). Shards packed earlier from the same inputs (paths, sizes, modification
      times, text field, split settings) with the same tokenizer are reused as they are.

    ``seed`` salts the held-out split's hash (0 keeps the default split).
    """
    out = Path(out_dir)
    paths = [Path(p).expanduser() for p in data_cfg.paths]
    if not paths:
        raise LmkitError("no training data: set data.paths in the config or pass --data PATH")
    # A packed shard folder (or one of its split folders, by mistake).
    if (
        len(paths) == 1
        and paths[0].is_dir()
        and not is_shard_folder(paths[0])
        and (paths[0] / "meta.json").is_file()
        and is_shard_folder(paths[0].parent)
    ):
        paths = [paths[0].parent]
    if any(is_shard_folder(p) for p in paths):
        if len(paths) > 1:
            raise LmkitError(f"{paths[0]}: a packed shard folder cannot be mixed with other data paths")
        folder = paths[0]
        train, val = _open_splits(folder)
        if data_cfg.tokenizer:
            tok = Tokenizer.load(data_cfg.tokenizer)
        elif (folder / "tokenizer.json").is_file():
            tok = Tokenizer.load(folder)
        else:
            raise LmkitError(f"{folder}: packed shards without tokenizer.json; set data.tokenizer / --tokenizer")
        if tok.sha256 != train.tokenizer_sha256:
            raise LmkitError(
                f"{tok.source}: tokenizer (sha256 {tok.sha256[:12]}) is not the one {folder} was "
                f"packed with (sha256 {train.tokenizer_sha256[:12]})"
            )
        return tok, train, val

    files = list_files(paths)
    vocab = int(data_cfg.vocab_size or vocab_size)
    given_tok = Tokenizer.load(data_cfg.tokenizer) if data_cfg.tokenizer else None
    tok_key = given_tok.sha256 if given_tok else f"trained:vocab={vocab}:min_frequency=2"
    fp = inputs_fingerprint(
        files,
        text_field=data_cfg.text_field,
        lenient=data_cfg.lenient,
        val_fraction=data_cfg.val_fraction,
        split_salt=seed,
        tokenizer=tok_key,
        format=SHARD_VERSION,
    )
    shards_dir = Path(data_cfg.shards).expanduser() if data_cfg.shards else out / "shards"
    if shards_dir.exists() and not shards_dir.is_dir():
        key = "data.shards" if data_cfg.shards else "the run folder's shards/"
        raise LmkitError(f"{shards_dir}: {key} must be a folder for the packed shards, but it is a file")
    meta = _read_meta(shards_dir) if shards_dir.exists() else None

    # Reuse shards packed from the same inputs with the same tokenizer.
    if meta is not None and meta.get("format") == SHARD_FORMAT and meta.get("inputs_fingerprint") == fp:
        tok = given_tok
        if tok is None and (shards_dir / "tokenizer.json").is_file():
            tok = Tokenizer.load(shards_dir)
        if tok is not None and tok.sha256 == meta.get("tokenizer_sha256"):
            if given_tok is None:
                _save_if_changed(tok, out)
            if show_progress:
                print(f"lmkit: reusing shards in {shards_dir} (same inputs and tokenizer)", file=sys.stderr)
            train, val = _open_splits(shards_dir)
            return tok, train, val

    if shards_dir.exists() and any(shards_dir.iterdir()):
        own_default = data_cfg.shards is None
        if not (own_default and is_shard_folder(shards_dir)):
            raise LmkitError(
                f"{shards_dir} already exists and holds other data (or other inputs' shards); "
                "delete it or set data.shards to a new folder"
            )

    def read(report: ReadReport) -> Iterator[Document]:
        return iter_documents(files, text_field=data_cfg.text_field, lenient=data_cfg.lenient, report=report)

    tok = given_tok
    if tok is None:
        from lmkit.progress import progress

        report = ReadReport()
        bar = progress(
            read(report), desc="reading for tokenizer", unit=" docs", disable=not show_progress, mininterval=0.5
        )
        tok = train_tokenizer(
            (d.text for d in bar),
            vocab_size=vocab,
            min_frequency=2,
            show_progress=show_progress and sys.stderr.isatty(),
        )
        bar.close()
        tok.save(out)
        if show_progress:
            print(f"lmkit: trained tokenizer (vocab {tok.vocab_size:,}) -> {out / 'tokenizer.json'}", file=sys.stderr)
    report = ReadReport()
    summary = pack(
        read(report),
        tok,
        shards_dir,
        val_fraction=data_cfg.val_fraction,
        workers=data_cfg.workers,
        show_progress=show_progress,
        overwrite=True,
        fingerprint=fp,
        split_salt=seed,
        inputs=files,
    )
    if show_progress:
        if report.skipped_file_count or report.bad_line_count:
            print(f"lmkit: read {report.summary()}", file=sys.stderr)
        print(
            f"lmkit: packed {summary['tokens']:,} tokens ({summary['train']['num_tokens']:,} train, "
            f"{summary['val']['num_tokens']:,} val) from {summary['documents']:,} documents -> {shards_dir}",
            file=sys.stderr,
        )
    train, val = _open_splits(shards_dir)
    return tok, train, val


def _save_if_changed(tok: Tokenizer, out: Path) -> None:
    """Keep ``out/tokenizer.json`` equal to the tokenizer in use."""
    path = out / "tokenizer.json"
    try:
        if path.is_file() and Tokenizer.load(path, strict=False).sha256 == tok.sha256:  # roles included
            return
    except (OSError, LmkitError):
        pass
    tok.save(out)


__all__ = ["inputs_fingerprint", "prepare"]
