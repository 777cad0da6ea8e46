"""Reading packed token shards: :class:`TokenShards` memory-maps one split (``train/`` or ``val/``)
and hands out batches of random windows that are a pure function of ``(step, seed, rank)`` (a
resumed run sees exactly the batches an uninterrupted one would), or walks the split in order
for evaluation; :func:`is_shard_folder` recognises a folder :func:`lmkit.data.pack.pack` wrote.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lmkit.errors import LmkitError

if TYPE_CHECKING:
    import torch

SHARD_FORMAT = "lmkit-token-shards"


def is_shard_folder(path: str | Path) -> bool:
    """True if ``path`` holds lmkit shards (``train/meta.json`` of this format)."""
    meta = Path(path) / "train" / "meta.json"
    if not meta.is_file():
        return False
    try:
        return json.loads(meta.read_text(encoding="utf-8")).get("format") == SHARD_FORMAT
    except (OSError, ValueError):
        return False


class TokenShards:
    """One split of packed shards (``train/`` or ``val/``), memory-mapped."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        meta_path = self.folder / "meta.json"
        if not meta_path.is_file():
            hint = " (give the split folder, e.g. shards/train)" if (self.folder / "train").is_dir() else ""
            raise LmkitError(f"{self.folder}: no meta.json; not a packed shard folder{hint}")
        try:
            self.meta: dict[str, Any] = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise LmkitError(f"{meta_path}: unreadable shard metadata ({e})") from None
        if self.meta.get("format") != SHARD_FORMAT:
            raise LmkitError(f"{meta_path}: not lmkit shard metadata (format {self.meta.get('format')!r})")
        self.dtype = np.dtype(self.meta["dtype"]).newbyteorder("<")
        self._arrays: list[np.ndarray] = []
        for s in self.meta["shards"]:
            path = self.folder / s["file"]
            want = int(s["tokens"]) * self.dtype.itemsize
            if not path.is_file():
                raise LmkitError(f"{path}: shard file missing")
            if path.stat().st_size != want:
                raise LmkitError(
                    f"{path}: shard is {path.stat().st_size} bytes, meta.json says {want} "
                    "(truncated or modified; pack again)"
                )
            self._arrays.append(np.memmap(path, dtype=self.dtype, mode="r", shape=(int(s["tokens"]),)))
        self.num_tokens: int = sum(len(a) for a in self._arrays)
        self.shard_sizes: list[int] = [len(a) for a in self._arrays]

    @property
    def vocab_size(self) -> int:
        return int(self.meta["vocab_size"])

    @property
    def eos_id(self) -> int:
        """The id after every document: the tokenizer's document separator (meta.json's ``eos_id``)."""
        return int(self.meta["eos_id"])

    @property
    def tokenizer_sha256(self) -> str:
        return str(self.meta["tokenizer_sha256"])

    @property
    def text_bytes(self) -> int:
        return int(self.meta.get("text_bytes", 0))

    @property
    def bytes_per_token(self) -> float:
        """UTF-8 bytes of text per stored token (EOS separators counted as tokens): the factor
        that turns a loss in nats per token into bits per byte."""
        return self.text_bytes / self.num_tokens if self.num_tokens else float("nan")

    def __len__(self) -> int:
        return self.num_tokens

    def __repr__(self) -> str:
        return f"TokenShards({str(self.folder)!r}, tokens={self.num_tokens:,}, shards={len(self._arrays)})"

    def windows_per_shard(self, length: int) -> np.ndarray:
        """Windows of ``length`` tokens each shard can start; a clear error when none at all."""
        if length <= 0:
            raise LmkitError(f"window length must be positive, got {length}")
        counts = np.array([max(0, n - length + 1) for n in self.shard_sizes], dtype=np.int64)
        if counts.sum() == 0:
            largest = max(self.shard_sizes, default=0)
            more = f" (largest shard {largest:,})" if len(self.shard_sizes) > 1 else ""
            raise LmkitError(
                f"{self.folder}: split '{self.meta.get('split')}' has {self.num_tokens:,} tokens"
                f"{more}, fewer than the {length:,} one window needs; use more data, a larger "
                "val_fraction or a shorter sequence length"
            )
        return counts

    def batch(self, step: int, batch_size: int, length: int, seed: int, rank: int = 0) -> torch.Tensor:
        """``batch_size`` random windows of ``length`` tokens as int64 (batch_size, length).

        A pure function of ``(step, seed, rank)`` and the shard contents: no hidden state.
        """
        import torch

        counts = self.windows_per_shard(length)
        cum = np.cumsum(counts)
        mask = (1 << 64) - 1
        rng = np.random.default_rng([seed & mask, rank & mask, step & mask, 0x6C6D6B6974])
        picks = rng.integers(0, int(cum[-1]), size=batch_size, dtype=np.int64)
        shard = np.searchsorted(cum, picks, side="right")
        starts = picks - (cum[shard] - counts[shard])
        out = np.empty((batch_size, length), dtype=np.int64)
        for i, (s, o) in enumerate(zip(shard.tolist(), starts.tolist())):
            out[i] = self._arrays[s][o : o + length]
        return torch.from_numpy(out)

    def sequential_batches(
        self, batch_size: int, length: int, max_batches: int | None = None
    ) -> Iterator[torch.Tensor]:
        """Non-overlapping windows in shard order, ``batch_size`` at a time (the last batch may be
        smaller); at most ``max_batches`` batches. Deterministic: for evaluation."""
        import torch

        self.windows_per_shard(length)
        rows: list[np.ndarray] = []
        produced = 0
        for arr in self._arrays:
            for o in range(0, len(arr) - length + 1, length):
                rows.append(np.asarray(arr[o : o + length], dtype=np.int64))
                if len(rows) == batch_size:
                    yield torch.from_numpy(np.stack(rows))
                    rows = []
                    produced += 1
                    if max_batches is not None and produced >= max_batches:
                        return
        if rows:
            yield torch.from_numpy(np.stack(rows))


__all__ = ["SHARD_FORMAT", "TokenShards", "is_shard_folder"]
