"""Dedup: the numpy hash index, exact keys, and MinHash-LSH recall/precision on generated near-copies."""

from __future__ import annotations

import numpy as np
import pytest

from lmkit.data.dedup import (
    ExactDeduper,
    HashIndex,
    MinHashDeduper,
    MinHasher,
    exact_key,
    lsh_probability,
    lsh_threshold,
)


def test_hash_index_seen_semantics_and_growth() -> None:
    idx = HashIndex(capacity=16)
    rng = np.random.default_rng(0)
    keys = rng.integers(1, 2**63, size=50_000, dtype=np.uint64)
    seen, _ = idx.get_or_insert(keys)
    assert not seen.any() and len(idx) == 50_000
    assert idx.size <= HashIndex.MAX_LOAD * idx.capacity
    batch = np.concatenate([keys[:100], rng.integers(1, 2**63, size=100, dtype=np.uint64), keys[:5]])
    batch[150] = batch[120]  # a repeat inside the batch
    seen, _ = idx.get_or_insert(batch)
    assert seen[:100].all() and not seen[100:120].any() and seen[150] and seen[-5:].all()
    assert seen.sum() == 106
    zero, _ = idx.get_or_insert(np.array([0, 0], dtype=np.uint64))  # 0 is reserved but still works
    assert zero.tolist() == [False, True]


def test_hash_index_values_keep_the_first_inserter() -> None:
    idx = HashIndex(with_values=True)
    seen, owner = idx.get_or_insert(np.array([5, 6, 5, 7], dtype=np.uint64), np.array([1, 2, 3, 4]))
    assert seen.tolist() == [False, False, True, False] and owner.tolist() == [1, 2, 1, 4]
    seen, owner = idx.get_or_insert(np.array([7, 8], dtype=np.uint64), np.array([9, 10]))
    assert seen.tolist() == [True, False] and owner.tolist() == [4, 10]


def test_index_size_per_million_documents_is_as_documented() -> None:
    # 14 band keys per document: the module docstring says 187-373 bytes per document
    rng = np.random.default_rng(1)
    idx = HashIndex()
    for _ in range(10):
        idx.get_or_insert(rng.integers(1, 2**63, size=14 * 5_000, dtype=np.uint64))
    per_doc = idx.nbytes / 50_000
    assert 187 <= per_doc <= 374


def test_exact_key_normalises_case_and_whitespace() -> None:
    assert exact_key("Hello  World\n") == exact_key("hello world")
    assert exact_key("hello world") != exact_key("hello, world")
    d = ExactDeduper()
    keys = np.array([exact_key(t) for t in ["a b", "A  b", "c", "a b"]], dtype=np.uint64)
    assert d.check(keys).tolist() == [False, True, False, True]
    assert d.check(np.array([exact_key("c")], dtype=np.uint64)).tolist() == [True]


def _corpus(n: int, seed: int = 0) -> tuple[list[str], list[str], list[str]]:
    """(originals, near-copies, distinct documents) of 300 words each.

    A near-copy has 1-8 words substituted, inserted or deleted (Jaccard of 5-gram shingles about
    0.77-0.97) and sometimes different case; half of the distinct documents share their first
    half with an original (Jaccard about 0.33), the other half share nothing.
    """
    rng = np.random.default_rng(seed)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    vocab = np.array(sorted({"".join(rng.choice(letters, 7)) for _ in range(20_000)}))
    originals = [rng.choice(vocab, 300) for _ in range(n)]
    copies = []
    for words in originals:
        w = words.copy()
        for _ in range(rng.integers(1, 9)):
            i = int(rng.integers(0, len(w)))
            op = rng.integers(0, 3)
            if op == 0:
                w[i] = rng.choice(vocab)
            elif op == 1:
                w = np.insert(w, i, rng.choice(vocab))
            else:
                w = np.delete(w, i)
        copies.append(" ".join(w).upper() if rng.random() < 0.2 else " ".join(w))
    distinct = []
    for k in range(n):
        fresh = rng.choice(vocab, 300)
        if k % 2:
            fresh[:150] = originals[k][:150]
        distinct.append(" ".join(fresh))
    return [" ".join(w) for w in originals], copies, distinct


@pytest.mark.parametrize("threshold", [None, 0.7])
def test_minhash_recall_and_precision_on_generated_near_copies(threshold: float | None) -> None:
    originals, copies, distinct = _corpus(200)
    mh = MinHasher(num_perm=112, bands=14, shingle_size=5, seed=1)
    dd = MinHashDeduper(bands=14, threshold=threshold)
    docs = originals + distinct + copies  # the copies come last: they are the ones to remove
    flags = []
    for i in range(0, len(docs), 128):  # in batches, as curate does
        sigs, has = mh.signatures(docs[i : i + 128])
        assert has.all()
        flags.append(dd.check(mh.band_keys(sigs), sigs))
    dup = np.concatenate(flags)
    n = len(originals)
    is_copy = np.zeros(len(docs), dtype=bool)
    is_copy[2 * n :] = True
    tp = int((dup & is_copy).sum())
    recall = tp / n
    precision = tp / max(1, int(dup.sum()))
    assert recall >= 0.9, recall
    assert precision >= 0.95, precision
    assert not dup[:n].any()  # no original is removed
    assert int(dup[n : 2 * n].sum()) <= 2  # and hardly any distinct document (half-overlap ones: J ~ 0.33)


def test_minhash_threshold_rejects_weak_candidates() -> None:
    mh = MinHasher(num_perm=64, bands=32, shingle_size=3, seed=3)  # 2 rows per band: many candidates
    rng = np.random.default_rng(4)
    vocab = [f"v{i}" for i in range(50)]
    base = list(rng.choice(vocab, 120))
    half = base[:60] + list(rng.choice(vocab, 60))  # about a third of the shingles shared
    sigs, _ = mh.signatures([" ".join(base), " ".join(half)])
    keys = mh.band_keys(sigs)
    assert MinHashDeduper(32, None).check(keys, sigs).tolist() == [False, True]  # LSH alone: a candidate
    assert MinHashDeduper(32, 0.8).check(keys, sigs).tolist() == [False, False]  # not similar enough


def test_short_documents_have_no_shingles_and_shingles_do_not_cross_documents() -> None:
    mh = MinHasher(shingle_size=5)
    sigs, has = mh.signatures(["one two three", "a b c d e f", "", "x y z w v"])
    assert has.tolist() == [False, True, False, True]
    sh, doc = mh.shingle_hashes(["a b c d e f", "g h i j k"])
    assert doc.tolist() == [0, 0, 1]  # 2 shingles in the first, 1 in the second, none across
    # the same text gives the same signature alone or in a batch
    alone, _ = mh.signatures(["g h i j k"])
    assert (alone[0] == mh.signatures(["a b c d e f", "g h i j k"])[0][1]).all()


def test_lsh_formulas() -> None:
    assert abs(lsh_threshold(14, 8) - 0.719) < 0.001
    assert abs(lsh_probability(0.8, 14, 8) - 0.924) < 0.001
