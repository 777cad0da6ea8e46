"""Packing: documents -> token shards on disk, and fixed-length windows back out of them.

What this module owns:

* :func:`pack` tokenises documents once into memory-mapped shards: flat little-endian
  ``uint16`` (vocabulary < 65,536) or ``uint32`` ``.bin`` files, every document followed by the
  tokenizer's document separator (lmkit's ``</s>``; a model's own end-of-text, such as GPT-2's
  ``<|endoftext|>``) and preceded by BOS where the model's tokenizer adds one (``adds_bos``, as
  Llama-3's), plus ``meta.json`` (dtype, vocabulary size, tokenizer sha256, tokens per
  source, documents, text bytes, ...). Two splits, ``train/`` and ``val/``, chosen per document by
  a hash of its id (deterministic, independent of order and of the number of workers). The
  output appears atomically: everything is written into a hidden temporary sibling folder that
  is renamed into place at the end, and removed if anything fails.
* the reading side, :class:`~lmkit.data.shards.TokenShards` (random windows that are a pure
  function of ``(step, seed, rank)``), is in :mod:`lmkit.data.shards`: import it from there.
* :func:`lmkit.data.prepare.prepare`, the glue training calls (raw files -> a tokenizer ->
  shards, reusing shards already packed from the same inputs), is in :mod:`lmkit.data.prepare`.

Held-out split of a small corpus. The hash gives each document a ``val_fraction`` chance of
going to ``val/``, so a corpus of a few documents can end with an empty ``val/`` (or an empty
``train/``). Then the last ``ceil(val_fraction * N)`` tokens of the token stream (N tokens in
all) are moved from the end of ``train/`` to ``val/`` (for an empty ``train/``, the first
tokens of ``val/`` stay and the rest become ``train/``); ``meta.json`` records
``"split_rule": "tail"``. The cut may fall inside a document; its two parts are then counted in
both splits' ``documents``. For ``val_fraction`` > 0 neither split is ever empty (given at
least two tokens).

Parallelism: ``workers`` is the number of encoding threads (0: one per core), never more than
the cores this process may use (``cap_workers``, as for curation: a request lowered is said on
stderr). Both encoders (tiktoken and Hugging Face ``tokenizers``) run in Rust outside the GIL and
parallelise a batch themselves, so threads inside this process give the parallel speed-up without pickling text to other
processes or loading the tokenizer once per process (and without fork-after-threads hazards
when training has already started torch). Reading, decompressing and JSON parsing stay in
the main thread; they run far faster than encoding. A process pool doing only the encoding was
tried and gave no gain worth the copies. With the Hugging Face fallback, its own thread pool uses all
cores (``RAYON_NUM_THREADS`` limits it) and ``workers`` has no further effect.
"""

from __future__ import annotations

import array
import hashlib
import json
import math
import os
import re
import shutil
import sys
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lmkit.data.document import Document
from lmkit.data.shards import SHARD_FORMAT, is_shard_folder
from lmkit.errors import LmkitError
from lmkit.files import check_out_dir, replace_dir
from lmkit.tokenizer import Tokenizer

SHARD_VERSION = 1
SPLITS = ("train", "val")
#: every path a shards folder holds (what :func:`pack` writes): all that overwrite=True may replace
#: (lmkit.files.check_out_dir); a file or folder the user added makes it refuse instead
SHARD_PATHS = re.compile(r"tokenizer(_roles)?\.json|pack\.json|(train|val)(/(meta\.json|\d{6,}\.bin))?")
# Encode documents in batches of about this many characters (or this many documents).
_BATCH_CHARS = 2 << 20
_BATCH_DOCS = 1024
# Before trusting the fast (tiktoken) path on a corpus, compare it with Hugging Face on the
# first documents, up to this many characters.
_VERIFY_CHARS = 200_000


def token_dtype(vocab_size: int) -> np.dtype:
    """Little-endian uint16 when every id fits, else uint32."""
    return np.dtype("<u2") if vocab_size <= 65536 else np.dtype("<u4")


def in_val_split(doc_id: str, val_fraction: float, salt: int = 0) -> bool:
    """Whether a document goes to the held-out split: a hash of its id, compared with the fraction."""
    if val_fraction <= 0:
        return False
    h = hashlib.blake2b(f"{salt}\x00{doc_id}".encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(h, "little") / 2.0**64 < val_fraction


# --------------------------------------------------------------------------- writing


@dataclass
class _SplitWriter:
    """Appends token arrays to ``folder/NNNNNN.bin`` files of at most ``shard_tokens`` tokens."""

    folder: Path
    dtype: np.dtype
    shard_tokens: int
    shards: list[list[Any]] = field(default_factory=list)  # [file name, tokens]
    documents: int = 0
    text_bytes: int = 0
    tokens: int = 0
    per_source: dict[str, int] = field(default_factory=dict)
    # per document: source index and token count (with its EOS), to recount after a tail move
    doc_src: array.array = field(default_factory=lambda: array.array("I"))
    doc_len: array.array = field(default_factory=lambda: array.array("Q"))
    _fh: Any = None

    def _open_next(self) -> None:
        if self._fh is not None:
            self._fh.close()
        name = f"{len(self.shards):06d}.bin"
        self._fh = open(self.folder / name, "wb")
        self.shards.append([name, 0])

    def write(self, tokens: np.ndarray) -> None:
        pos = 0
        while pos < len(tokens):
            if self._fh is None or self.shards[-1][1] >= self.shard_tokens:
                self._open_next()
            room = self.shard_tokens - self.shards[-1][1]
            piece = tokens[pos : pos + room]
            self._fh.write(piece.tobytes())
            self.shards[-1][1] += len(piece)
            pos += len(piece)
        self.tokens += len(tokens)

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def _take_tail(src: _SplitWriter, dst: _SplitWriter, n: int, sources: list[str]) -> None:
    """Move the last ``n`` tokens of ``src``'s shards to (empty) ``dst``, truncating ``src``."""
    src.close()
    pieces: list[np.ndarray] = []
    need = n
    while need > 0:
        name, count = src.shards[-1]
        path = src.folder / name
        take = min(need, count)
        mm = np.memmap(path, dtype=src.dtype, mode="r", shape=(count,))
        pieces.append(np.array(mm[count - take :]))
        del mm
        if take == count:
            path.unlink()
            src.shards.pop()
        else:
            os.truncate(path, (count - take) * src.dtype.itemsize)
            src.shards[-1][1] = count - take
        need -= take
    for piece in reversed(pieces):
        dst.write(piece)
    dst.close()
    src.tokens -= n
    # Recount documents and tokens per source on both sides of the cut.
    lens = np.frombuffer(src.doc_len, dtype=np.uint64).astype(np.int64)
    srcs = np.frombuffer(src.doc_src, dtype=np.uint32)
    ends = np.cumsum(lens)
    starts = ends - lens
    cut = int(ends[-1]) - n
    keep = np.clip(cut - starts, 0, lens)  # tokens of each doc that stay
    moved = lens - keep
    frac_docs_src = int((keep > 0).sum())
    frac_docs_dst = int((moved > 0).sum())
    bytes_total = src.text_bytes
    src.per_source, dst.per_source = {}, {}
    for i, name in enumerate(sources):
        mask = srcs == i
        if mask.any():
            k, m = int(keep[mask].sum()), int(moved[mask].sum())
            if k:
                src.per_source[name] = k
            if m:
                dst.per_source[name] = m
    share = n / max(1, int(ends[-1]))
    dst.text_bytes = int(round(bytes_total * share))  # text bytes split in proportion to tokens
    src.text_bytes = bytes_total - dst.text_bytes
    src.documents, dst.documents = frac_docs_src, frac_docs_dst


def _atomic_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False), encoding="utf-8")
    os.replace(tmp, path)


def pack(
    docs: Iterable[Document],
    tokenizer: Tokenizer,
    out_dir: str | Path,
    val_fraction: float = 0.01,
    workers: int = 0,
    shard_tokens: int = 50_000_000,
    show_progress: bool = True,
    overwrite: bool = False,
    fingerprint: str | None = None,
    split_salt: int = 0,
    inputs: Sequence[str | Path] = (),
) -> dict[str, Any]:
    """Tokenise ``docs`` into ``out_dir/train`` and ``out_dir/val`` shards; return a summary.

    ``overwrite`` allows replacing an existing shard folder (only once the new one is complete;
    never a folder of other files, nor one in or around ``inputs``, the paths ``docs`` come from).
    ``fingerprint`` (what the inputs were) and ``split_salt`` (changes which documents are held
    out) are recorded in ``meta.json``. The tokenizer is saved as ``out_dir/tokenizer.json``.
    """
    from lmkit.progress import progress

    out = Path(out_dir)
    if not 0 <= val_fraction < 1:
        raise LmkitError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if shard_tokens <= 0:
        raise LmkitError(f"shard_tokens must be positive, got {shard_tokens}")
    if workers < 0:
        raise LmkitError(f"workers must be 0 (all cores) or more, got {workers}")
    check_out_dir(
        out, overwrite, inputs, what="shards folder", ours=[SHARD_PATHS, is_shard_folder], kind="shards folder"
    )
    from lmkit.data.curate.engine import cap_workers

    threads = cap_workers(workers, flag="data.workers")  # never more threads than cores, said when lowered
    dtype = token_dtype(tokenizer.vocab_size)
    eos = tokenizer.require("separator", "packing documents")  # the model's own end-of-text
    bos = [tokenizer.bos_id] if tokenizer.adds_bos else []  # first where the model's tokenizer adds it
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    t0 = time.time()
    try:
        writers = {}
        for split in SPLITS:
            (tmp / split).mkdir(parents=True)
            writers[split] = _SplitWriter(tmp / split, dtype, shard_tokens)
        sources: list[str] = []
        source_idx: dict[str, int] = {}
        verified = not tokenizer.fast
        bar = progress(desc="packing", unit=" docs", disable=not show_progress, mininterval=0.5)
        batch: list[Document] = []
        batch_chars = 0
        totals = {"bytes": 0, "tokens": 0}

        def flush() -> None:
            nonlocal verified, batch_chars
            texts = [d.text for d in batch]
            if not verified:
                sample, size = [], 0
                for t in texts:
                    if size >= _VERIFY_CHARS:
                        break
                    sample.append(t[:_VERIFY_CHARS])
                    size += len(sample[-1])
                if not tokenizer.verify_fast(sample):
                    tokenizer.disable_fast("tiktoken ids differ from Hugging Face on this corpus")
                    print(
                        "lmkit: note: fast tokenizer path disagrees with Hugging Face on this corpus; "
                        "using Hugging Face (slower)",
                        file=sys.stderr,
                    )
                verified = True
            encoded = tokenizer.encode_batch(texts, num_threads=threads)
            for d, ids in zip(batch, encoded):
                if not ids:
                    continue
                split = "val" if in_val_split(d.id, val_fraction, split_salt) else "train"
                w = writers[split]
                arr = np.array([*bos, *ids, eos], dtype=dtype)
                w.write(arr)
                nbytes = len(d.text.encode("utf-8", "surrogatepass"))
                w.documents += 1
                w.text_bytes += nbytes
                w.per_source[d.source] = w.per_source.get(d.source, 0) + len(arr)
                if d.source not in source_idx:
                    source_idx[d.source] = len(sources)
                    sources.append(d.source)
                w.doc_src.append(source_idx[d.source])
                w.doc_len.append(len(arr))
                totals["bytes"] += nbytes
                totals["tokens"] += len(arr)
            bar.update(len(batch))
            bar.set_postfix_str(f"{totals['bytes'] / 1e6:.1f} MB, {totals['tokens'] / 1e6:.2f} M tokens")
            batch.clear()
            batch_chars = 0

        try:
            for d in docs:
                batch.append(d)
                batch_chars += len(d.text)
                if batch_chars >= _BATCH_CHARS or len(batch) >= _BATCH_DOCS:
                    flush()
            if batch:
                flush()
        finally:
            bar.close()
            for w in writers.values():
                w.close()
        train, val = writers["train"], writers["val"]
        total = train.tokens + val.tokens
        if total == 0:
            raise LmkitError("no text to pack: every document was empty")
        split_rule = "hash(doc id)"
        if val_fraction > 0 and total >= 2 and (val.tokens == 0 or train.tokens == 0):
            split_rule = "tail"
            n_val = min(total - 1, max(1, math.ceil(val_fraction * total)))
            if val.tokens == 0:
                _take_tail(train, val, n_val, sources)
            else:
                _take_tail(val, train, total - n_val, sources)
                # ``train`` now holds the end of the stream and ``val`` the start: fine for a
                # held-out split, and both stay deterministic.
        tokenizer.save(tmp / "tokenizer.json")
        created = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        split_meta = {}
        for split, w in writers.items():
            meta = {
                "format": SHARD_FORMAT,
                "version": SHARD_VERSION,
                "split": split,
                "dtype": dtype.name,
                "byteorder": "little",
                "vocab_size": tokenizer.vocab_size,
                "tokenizer_sha256": tokenizer.sha256,
                "eos_id": eos,
                "num_tokens": w.tokens,
                "documents": w.documents,
                "text_bytes": w.text_bytes,
                "shards": [{"file": n, "tokens": c} for n, c in w.shards if c > 0],
                "tokens_per_source": dict(sorted(w.per_source.items())),
                "val_fraction": val_fraction,
                "split_rule": split_rule,
                "split_salt": split_salt,
                "inputs_fingerprint": fingerprint,
                "created": created,
            }
            for n, c in w.shards:
                if c == 0:
                    (w.folder / n).unlink(missing_ok=True)
            _atomic_json(w.folder / "meta.json", meta)
            split_meta[split] = meta
        secs = time.time() - t0
        summary = {
            "out_dir": str(out),
            "train": {k: split_meta["train"][k] for k in ("num_tokens", "documents", "text_bytes")},
            "val": {k: split_meta["val"][k] for k in ("num_tokens", "documents", "text_bytes")},
            "tokens": total,
            "documents": len(train.doc_len) + len(val.doc_len),
            "text_bytes": totals["bytes"],
            "bytes_per_token": totals["bytes"] / total,
            "dtype": dtype.name,
            "tokenizer_sha256": tokenizer.sha256,
            "fast_tokenizer": tokenizer.fast,
            "split_rule": split_rule,
            "seconds": secs,
            "mb_per_s": totals["bytes"] / 1e6 / secs if secs > 0 else None,
        }
        _atomic_json(tmp / "pack.json", summary)
        replace_dir(tmp, out)  # an old folder is moved aside first and removed only after success
        return summary
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


__all__ = ["SHARD_PATHS", "token_dtype", "in_val_split", "pack"]
