"""Deduplication: exact (normalised-text hash) and near-duplicate (MinHash + LSH) removal.

What this module owns:

* :class:`HashIndex`, an open-addressing hash table of 64-bit keys (optionally with a 32-bit value
  per key) held in two numpy arrays and probed for a whole batch of keys at once. It is the
  dedup index, the one part of curation whose memory grows with the corpus.
* :func:`exact_key`: the 64-bit hash of a document's normalised text (lower-cased, every run of
  whitespace made one space), so copies that differ only in case or spacing are caught.
* :class:`MinHasher`: MinHash signatures of word n-gram shingles, computed for a whole batch of
  documents with numpy (one matrix of hashes per block of shingles, a segmented minimum per
  document), and the LSH band keys derived from them.
* :class:`ExactDeduper` and :class:`MinHashDeduper`: streaming decisions "seen before?" in
  input order, so the first copy of a document is kept and later copies are removed.

How near-duplicates are decided. Text is lower-cased, split into words (letters and digits),
every number becomes ``0`` and diacritics are dropped; each word n-gram (``shingle_size``
words, 5 by default) is hashed to 32 bits. ``num_perm`` hash functions of the multiply-add-shift
family ``h(x) = ((a*x + b) mod 2**64) >> 32`` (``a`` odd, ``a`` and ``b`` drawn from ``seed``)
stand in for random permutations, and a document's signature is the minimum of each over its
shingles. The signature is cut into ``bands`` bands of ``num_perm // bands`` rows; two documents
whose signatures agree on every row of at least one band are candidates (probability
``1 - (1 - s**r)**b`` for Jaccard similarity ``s``; 14 bands x 8 rows gives a threshold of about
``(1/14)**(1/8) = 0.72`` and catches a pair at s = 0.8 with probability 0.92). Without a
``threshold`` every candidate is a duplicate (as ``datatrove`` does); with one, a candidate must
also have at least that fraction of equal signature rows with the earlier document, which
needs the signatures kept in memory. A document with fewer words than ``shingle_size`` has no
shingle and is left to exact dedup. A document is a duplicate if it collides with any earlier
document, including one that was itself removed as a duplicate, so chains of near-copies
collapse to their first member, as a union-find clustering would.

Memory (measured by ``HashIndex.nbytes``; the table doubles when it is 60% full, so it is
between 30% and 60% full): one key per document for exact dedup and ``bands`` keys per
document for MinHash, 8 bytes per slot. Per million documents that is about 13-27 MB for exact
dedup and 187-373 MB for MinHash with 14 bands (the power-of-two table size decides where in
the range a corpus falls). With ``threshold`` set, add 4 bytes per slot for the owner of each
key (93-187 MB) and ``4 * num_perm`` bytes per document for the signatures (448 MB per million
documents with 112 permutations). ``num_perm`` is at most :data:`MAX_NUM_PERM` (1024), which bounds
the signature matrix hashed at once (:func:`check_minhash`).

Why written here rather than taken from ``datasketch``: its ``MinHashLSH`` computes signatures
one document at a time in Python and keeps every band key in Python dicts (hundreds of bytes per
key); batching the hashing through numpy and keeping the index in flat arrays is what makes
whole-corpus near-dedup fast and its memory predictable.
"""

from __future__ import annotations

import hashlib
import unicodedata
from collections.abc import Sequence

import numpy as np

from lmkit.errors import LmkitError

_EMPTY = np.uint64(0)
_FIB = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_SHINGLE_MUL = np.uint64(0x100000001B3)  # odd multiplier combining word hashes into a shingle hash


def mix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser applied element-wise: a bijective scramble of uint64 values."""
    x = x ^ (x >> np.uint64(30))
    x *= _M1
    x ^= x >> np.uint64(27)
    x *= _M2
    x ^= x >> np.uint64(31)
    return x


def hash64(data: bytes) -> int:
    """A stable 64-bit hash of bytes (the same in every process and on every machine)."""
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")


# --------------------------------------------------------------------------- the index


class HashIndex:
    """A growable hash table of uint64 keys (0 is reserved), optionally mapping each to a uint32.

    :meth:`get_or_insert` handles a whole batch with vectorised linear probing: for each key it
    says whether the key was already present (in the table, or earlier in the same batch) and,
    with values, which value the key's first inserter stored.
    """

    MAX_LOAD = 0.6

    def __init__(self, capacity: int = 1 << 12, with_values: bool = False) -> None:
        cap = 1 << max(4, int(capacity - 1).bit_length())
        self.keys = np.zeros(cap, dtype=np.uint64)
        self.values: np.ndarray | None = np.zeros(cap, dtype=np.uint32) if with_values else None
        self.size = 0

    def __len__(self) -> int:
        return self.size

    @property
    def capacity(self) -> int:
        return int(self.keys.shape[0])

    @property
    def nbytes(self) -> int:
        return int(self.keys.nbytes + (self.values.nbytes if self.values is not None else 0))

    def _home(self, keys: np.ndarray) -> np.ndarray:
        bits = self.capacity.bit_length() - 1
        return ((keys * _FIB) >> np.uint64(64 - bits)).astype(np.int64)

    def _reserve(self, extra: int) -> None:
        need = self.size + extra
        if need <= self.MAX_LOAD * self.capacity:
            return
        cap = self.capacity
        while need > self.MAX_LOAD * cap:
            cap *= 2
        old_keys, old_values = self.keys, self.values
        self.keys = np.zeros(cap, dtype=np.uint64)
        self.values = np.zeros(cap, dtype=np.uint32) if old_values is not None else None
        self.size = 0
        live = old_keys != _EMPTY
        if live.any():
            self._probe_insert(old_keys[live], old_values[live] if old_values is not None else None)

    def _probe_insert(self, keys: np.ndarray, values: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Insert distinct ``keys`` not yet present; return (was_present, slot) per key."""
        mask = self.capacity - 1
        pos = self._home(keys)
        found = np.zeros(keys.shape[0], dtype=bool)
        slots = np.empty(keys.shape[0], dtype=np.int64)
        pending = np.arange(keys.shape[0])
        table = self.keys
        while pending.size:
            p = pos[pending]
            cur = table[p]
            k = keys[pending]
            hit = cur == k
            empty = cur == _EMPTY
            if hit.any():
                found[pending[hit]] = True
                slots[pending[hit]] = p[hit]
            won = np.zeros(pending.shape[0], dtype=bool)
            e_where = np.flatnonzero(empty)
            if e_where.size:
                # several new keys may want the same empty slot: the first one takes it, the
                # others see an occupied slot on the next round and move on
                _, first = np.unique(p[e_where], return_index=True)
                w = e_where[first]
                won[w] = True
                wp = p[w]
                table[wp] = k[w]
                if values is not None and self.values is not None:
                    self.values[wp] = values[pending[w]]
                slots[pending[w]] = wp
                self.size += int(w.shape[0])
            rest = ~(hit | won)
            advance = rest & ~empty
            pos[pending[advance]] = (p[advance] + 1) & mask
            pending = pending[rest]
        return found, slots

    def get_or_insert(self, keys: np.ndarray, values: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """For each key: was it seen before (earlier batches or earlier in this one)?

        New keys are inserted, with the value of their first occurrence when the index keeps
        values. Returns ``(seen, owner)`` where ``owner`` (only with values) is the value stored
        for each key, i.e. that of the key's first inserter.
        """
        keys = np.asarray(keys, dtype=np.uint64).ravel()
        if keys.size == 0:
            return np.zeros(0, dtype=bool), (np.zeros(0, dtype=np.uint32) if self.values is not None else None)
        keys = np.where(keys == _EMPTY, np.uint64(1), keys)
        uniq, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
        self._reserve(int(uniq.shape[0]))
        vals = None
        if self.values is not None:
            if values is None:
                raise ValueError("this index keeps values: pass one per key")
            vals = np.asarray(values, dtype=np.uint32).ravel()[first]
        present, slots = self._probe_insert(uniq, vals)
        seen = np.ones(keys.shape[0], dtype=bool)
        seen[first] = present
        owner = self.values[slots][inverse] if self.values is not None else None
        return seen, owner


# --------------------------------------------------------------------------- exact


def exact_key(text: str) -> int:
    """64-bit hash of the text lower-cased with every whitespace run made one space."""
    return hash64(" ".join(text.lower().split()).encode("utf-8", "surrogatepass"))


class ExactDeduper:
    """Streaming exact dedup: a document is a duplicate if its :func:`exact_key` was seen."""

    def __init__(self) -> None:
        self.index = HashIndex()

    def check(self, keys: np.ndarray) -> np.ndarray:
        """Duplicate flag per key, in order; every key is remembered."""
        seen, _ = self.index.get_or_insert(keys)
        return seen

    @property
    def nbytes(self) -> int:
        return self.index.nbytes


# --------------------------------------------------------------------------- MinHash

_FOLD_TABLES: list[np.ndarray] = []
_POLY_BASE = np.uint64(0x100000001B3)
_POLY_BASE_INV = np.uint64(pow(0x100000001B3, -1, 1 << 64))
_ZERO_WORD = np.uint64(0x5BD1E9955BD1E995)  # the hash every number gets


def _fold_tables() -> tuple[np.ndarray, np.ndarray]:
    """For every code point of the Basic Multilingual Plane: its folded form (lower case, no
    diacritics; 0 for a character that separates words, i.e. not a letter or digit) and
    whether it is a digit. Built once per process (~65k lookups)."""
    if not _FOLD_TABLES:
        fold = np.zeros(0x10000, dtype=np.uint32)
        digit = np.zeros(0x10000, dtype=bool)
        for i in range(0x10000):
            ch = chr(i)
            if not ch.isalnum():
                continue
            low = ch.lower()
            base = "".join(c for c in unicodedata.normalize("NFD", low) if not unicodedata.combining(c)) or low
            fold[i] = ord(base[0])
            digit[i] = ch.isdigit()
        _FOLD_TABLES[:] = [fold, digit]
    return _FOLD_TABLES[0], _FOLD_TABLES[1]


def span_hashes(values: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """A 64-bit hash per span ``values[start:end]`` (code points), equal for equal spans wherever
    they sit: a polynomial of the values, read as a difference of prefix sums and divided by the
    start's power (arithmetic mod 2**64, where the odd base has an inverse), then the length mixed in."""
    n = values.shape[0]
    pw = np.full(n, _POLY_BASE, dtype=np.uint64)
    pw[0] = 1
    np.cumprod(pw, out=pw)
    inv = np.full(n, _POLY_BASE_INV, dtype=np.uint64)
    inv[0] = 1
    np.cumprod(inv, out=inv)
    prefix = np.zeros(n + 1, dtype=np.uint64)
    np.cumsum(values.astype(np.uint64) * pw, out=prefix[1:])
    return mix64((prefix[ends] - prefix[starts]) * inv[starts] + (ends - starts).astype(np.uint64) * _FIB)


def word_hashes(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Hashes of the words of all texts (runs of letters/digits, lower-cased, diacritics dropped,
    every number the same word), and the index of the text each word comes from.

    Vectorised over the whole batch: the texts are joined, their code points folded through a
    table, runs of word characters found with array comparisons, and each run hashed as a
    polynomial of its code points (a difference of prefix sums divided by the start's power).
    """
    if not texts:
        return np.zeros(0, dtype=np.uint64), np.zeros(0, dtype=np.int64)
    fold, digit = _fold_tables()
    cp = np.frombuffer("\x00".join(texts).encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    bmp = np.minimum(cp, 0xFFFF)
    f = fold[bmp]
    f[cp > 0xFFFF] = 0  # characters beyond the BMP (emoji, rare scripts) separate words
    isw = f != 0
    n = isw.shape[0]
    edge = np.empty(n + 1, dtype=bool)
    edge[0] = isw[0]
    edge[n] = isw[-1]
    np.not_equal(isw[1:], isw[:-1], out=edge[1:n])
    bounds = np.flatnonzero(edge)
    starts, ends = bounds[0::2], bounds[1::2]
    if starts.size == 0:
        return np.zeros(0, dtype=np.uint64), np.zeros(0, dtype=np.int64)
    h = span_hashes(f, starts, ends)
    number = np.minimum.reduceat(np.where(isw, digit[bmp], True).view(np.uint8), starts) > 0
    h[number] = _ZERO_WORD
    doc_start = np.zeros(len(texts), dtype=np.int64)
    np.cumsum([len(t) + 1 for t in texts[:-1]], out=doc_start[1:])
    return h, np.searchsorted(doc_start, starts, side="right") - 1


BLOCK_ROWS = 4096  # shingles hashed at once: a (BLOCK_ROWS, num_perm) uint64 matrix
# The most hash functions a MinHasher takes. Its memory is known: the (BLOCK_ROWS, num_perm) uint64
# matrix (32 MiB at 1024; 305 GiB at ten million) plus 4 bytes per permutation and document for the
# signatures. 1024 already estimates a Jaccard similarity to about +-0.03 (1/sqrt(num_perm)).
MAX_NUM_PERM = 1024


def check_minhash(num_perm: int, bands: int, shingle_size: int, prefix: str = "minhash.") -> None:
    """Refuse MinHash settings that cannot work or whose memory is out of bounds (one line; setting
    names start with ``prefix``)."""
    if num_perm < 1 or bands < 1 or num_perm % bands:
        raise LmkitError(f"{prefix}num_perm ({num_perm}) must be a multiple of {prefix}bands ({bands})")
    if num_perm > MAX_NUM_PERM:
        raise LmkitError(
            f"{prefix}num_perm ({num_perm:,}) must be at most {MAX_NUM_PERM}: signatures are hashed "
            f"{BLOCK_ROWS} shingles at a time in a {BLOCK_ROWS} x num_perm matrix of 8-byte integers "
            f"({BLOCK_ROWS * 8 * num_perm / 2**30:,.1f} GiB at {num_perm:,})"
        )
    if shingle_size < 1:
        raise LmkitError(f"{prefix}shingle_size must be at least 1, got {shingle_size}")


class MinHasher:
    """Batched MinHash signatures and LSH band keys (see the module docstring)."""

    def __init__(self, num_perm: int = 112, bands: int = 14, shingle_size: int = 5, seed: int = 1) -> None:
        check_minhash(num_perm, bands, shingle_size)
        self.num_perm = num_perm
        self.bands = bands
        self.rows = num_perm // bands
        self.shingle_size = shingle_size
        rng = np.random.default_rng(seed)
        self._a = rng.integers(0, 1 << 63, size=num_perm, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
        self._b = rng.integers(0, 1 << 63, size=num_perm, dtype=np.uint64) * np.uint64(2)
        self._band_seed = mix64(rng.integers(1, 1 << 63, size=bands, dtype=np.uint64))

    def shingle_hashes(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """32-bit shingle hashes of all texts concatenated, and the document of each shingle."""
        n = self.shingle_size
        wh, doc_of_word = word_hashes(texts)
        total = wh.shape[0]
        if total < n:
            return np.zeros(0, dtype=np.uint64), np.zeros(0, dtype=np.int64)
        m = total - n + 1
        acc = wh[:m].copy()
        for k in range(1, n):
            acc *= _SHINGLE_MUL
            acc += wh[k : k + m]
        valid = doc_of_word[:m] == doc_of_word[n - 1 :]  # the n-gram does not cross a document end
        sh = mix64(acc[valid]) >> np.uint64(32)
        return sh, doc_of_word[:m][valid]

    def signatures(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """``(sigs, has)``: uint32 signatures (n_docs, num_perm) and which documents have shingles."""
        sh, doc = self.shingle_hashes(texts)
        sig = np.full((len(texts), self.num_perm), np.iinfo(np.uint64).max, dtype=np.uint64)
        has = np.zeros(len(texts), dtype=bool)
        if sh.size:
            has[doc] = True
            buf = np.empty((BLOCK_ROWS, self.num_perm), dtype=np.uint64)
            for r0 in range(0, sh.shape[0], BLOCK_ROWS):
                x = sh[r0 : r0 + BLOCK_ROWS]
                d = doc[r0 : r0 + BLOCK_ROWS]
                b = buf[: x.shape[0]]
                np.multiply(x[:, None], self._a[None, :], out=b)
                b += self._b
                b >>= np.uint64(32)
                new_doc = np.empty(d.shape[0], dtype=bool)
                new_doc[0] = True
                np.not_equal(d[1:], d[:-1], out=new_doc[1:])
                starts = np.flatnonzero(new_doc)
                red = np.minimum.reduceat(b, starts, axis=0)
                ds = d[starts]
                sig[ds] = np.minimum(sig[ds], red)
        return sig.astype(np.uint32), has

    def band_keys(self, sigs: np.ndarray) -> np.ndarray:
        """(n_docs, bands) uint64 keys: the rows of each band hashed together with the band number."""
        s = sigs.reshape(sigs.shape[0], self.bands, self.rows).astype(np.uint64)
        acc = np.broadcast_to(self._band_seed, s.shape[:2]).copy()
        for r in range(self.rows):
            acc = mix64(acc ^ s[:, :, r])
        return acc


class MinHashDeduper:
    """Streaming near-dup decisions over band keys, in input order (see the module docstring)."""

    def __init__(self, bands: int, threshold: float | None = None) -> None:
        self.bands = bands
        self.threshold = threshold
        self.index = HashIndex(with_values=threshold is not None)
        self._sigs = np.zeros((0, 0), dtype=np.uint32)  # row i: signature of document ordinal i
        self._count = 0  # documents entered so far (their ordinals)

    def _append_sigs(self, sigs: np.ndarray) -> None:
        need = self._count + sigs.shape[0]
        if self._sigs.shape[0] < need or self._sigs.shape[1] != sigs.shape[1]:
            grown = np.zeros((max(need, 2 * self._sigs.shape[0], 1024), sigs.shape[1]), dtype=np.uint32)
            if self._count:
                grown[: self._count] = self._sigs[: self._count]
            self._sigs = grown
        self._sigs[self._count : need] = sigs

    def check(self, keys: np.ndarray, sigs: np.ndarray | None = None) -> np.ndarray:
        """Duplicate flag for each document of the batch (``keys`` is (n_docs, bands))."""
        n = keys.shape[0]
        if n == 0:
            return np.zeros(0, dtype=bool)
        if self.threshold is None:
            seen, _ = self.index.get_or_insert(keys.ravel())
            return np.asarray(seen.reshape(n, self.bands).any(axis=1))
        if sigs is None:
            raise ValueError("a MinHash threshold needs the signatures")
        ordinals = np.arange(self._count, self._count + n, dtype=np.uint32)
        self._append_sigs(sigs)
        self._count += n
        _, owner = self.index.get_or_insert(keys.ravel(), np.repeat(ordinals, self.bands))
        assert owner is not None
        owner = owner.reshape(n, self.bands)
        mine = ordinals[:, None]
        cand = owner != mine  # the key belongs to an earlier document
        dup = np.zeros(n, dtype=bool)
        rows, cols = np.nonzero(cand)
        if rows.size:
            other = owner[rows, cols]
            sim = (self._sigs[other.astype(np.int64)] == sigs[rows]).mean(axis=1)
            ok = sim >= self.threshold
            dup[rows[ok]] = True
        return dup

    @property
    def nbytes(self) -> int:
        return self.index.nbytes + self._sigs[: self._count].nbytes


def lsh_threshold(bands: int, rows: int) -> float:
    """The similarity at which LSH with these bands/rows starts catching pairs: (1/b)^(1/r)."""
    return float((1.0 / bands) ** (1.0 / rows))


def lsh_probability(similarity: float, bands: int, rows: int) -> float:
    """Probability that a pair with this Jaccard similarity becomes a candidate."""
    return float(1.0 - (1.0 - similarity**rows) ** bands)


__all__ = [
    "HashIndex",
    "exact_key",
    "ExactDeduper",
    "MinHasher",
    "MinHashDeduper",
    "mix64",
    "hash64",
    "lsh_threshold",
    "lsh_probability",
    "check_minhash",
    "MAX_NUM_PERM",
]
