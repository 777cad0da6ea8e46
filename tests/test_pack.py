"""Packing and token windows: counts match encoding, EOS separators, deterministic batches that
never cross a shard end, a non-empty disjoint held-out split, atomic output, and prepare()."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from lmkit.config import DataConfig
from lmkit.data.document import Document
from lmkit.data.pack import in_val_split, pack
from lmkit.data.prepare import prepare
from lmkit.data.shards import TokenShards
from lmkit.errors import LmkitError
from lmkit.tokenizer import Tokenizer, train_tokenizer

WORDS = "the cat sat on a mat while dogs ran far away über naïve café 日本 😀".split()


def gen_docs(n: int, seed: int = 0, lo: int = 5, hi: int = 120) -> list[Document]:
    rng = random.Random(seed)
    return [
        Document(f"doc-{seed}-{i}", " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi))), f"src{i % 3}")
        for i in range(n)
    ]


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return train_tokenizer([d.text for d in gen_docs(200, 99)], vocab_size=400, show_progress=False)


def _all_tokens(shards: TokenShards) -> np.ndarray:
    return np.concatenate([np.asarray(a) for a in shards._arrays]) if shards._arrays else np.zeros(0, np.uint16)


def test_pack_counts_eos_and_split(tok: Tokenizer, tmp_path: Path) -> None:
    docs = gen_docs(300)
    s = pack(docs, tok, tmp_path / "sh", val_fraction=0.1, workers=1, shard_tokens=3000, show_progress=False)
    train, val = TokenShards(tmp_path / "sh" / "train"), TokenShards(tmp_path / "sh" / "val")
    enc = {d.id: tok.encode(d.text) for d in docs}
    is_val = {d.id: in_val_split(d.id, 0.1) for d in docs}
    want_train = [t for d in docs if not is_val[d.id] for t in enc[d.id] + [tok.eos_id]]
    want_val = [t for d in docs if is_val[d.id] for t in enc[d.id] + [tok.eos_id]]
    assert _all_tokens(train).tolist() == want_train  # documents in order, each followed by EOS
    assert _all_tokens(val).tolist() == want_val
    assert 0 < val.num_tokens < train.num_tokens
    assert s["tokens"] == train.num_tokens + val.num_tokens == sum(len(v) + 1 for v in enc.values())
    assert s["train"]["documents"] + s["val"]["documents"] == s["documents"] == 300
    assert train.meta["documents"] == sum(not v for v in is_val.values())
    assert train.dtype == np.dtype("<u2") and train.meta["vocab_size"] == tok.vocab_size
    assert train.tokenizer_sha256 == tok.sha256 and train.eos_id == tok.eos_id
    assert len(train.shard_sizes) > 2 and max(train.shard_sizes) <= 3000
    per_source = train.meta["tokens_per_source"]
    assert sum(per_source.values()) == train.num_tokens and set(per_source) == {"src0", "src1", "src2"}
    assert s["text_bytes"] == sum(len(d.text.encode()) for d in docs)
    assert s["bytes_per_token"] == pytest.approx(s["text_bytes"] / s["tokens"])
    assert Tokenizer.load(tmp_path / "sh").sha256 == tok.sha256  # tokenizer saved beside the shards


def test_split_independent_of_workers_and_order_deterministic(tok: Tokenizer, tmp_path: Path) -> None:
    docs = gen_docs(120, 1)
    pack(docs, tok, tmp_path / "a", val_fraction=0.2, workers=1, show_progress=False)
    pack(iter(docs), tok, tmp_path / "b", val_fraction=0.2, workers=2, show_progress=False)
    for split in ("train", "val"):
        a = (tmp_path / "a" / split / "000000.bin").read_bytes()
        assert a == (tmp_path / "b" / split / "000000.bin").read_bytes()


def test_workers_never_more_than_the_cores(
    tok: Tokenizer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """data.workers is capped like curation's --workers: a huge request starts one thread per core, and says so."""
    from lmkit.data.curate.engine import default_workers

    asked: list[int | None] = []
    encode = tok.encode_batch

    def counted(texts: list[str], num_threads: int | None = None) -> list[list[int]]:
        asked.append(num_threads)
        return encode(texts, num_threads=num_threads)

    monkeypatch.setattr(tok, "encode_batch", counted)
    pack(gen_docs(30, 2), tok, tmp_path / "a", val_fraction=0.1, workers=1_000_000, show_progress=False)
    cores = default_workers()
    assert asked and set(asked) == {cores}
    assert f"lmkit: data.workers 1,000,000 capped at {cores} (this machine has {cores} core" in capsys.readouterr().err
    pack(gen_docs(30, 2), tok, tmp_path / "b", val_fraction=0.1, workers=0, show_progress=False)
    assert asked[-1] == cores and capsys.readouterr().err == ""  # the default is one per core, not a request


def test_batches_deterministic_and_step_dependent(tok: Tokenizer, tmp_path: Path) -> None:
    pack(gen_docs(200, 2), tok, tmp_path / "sh", val_fraction=0.05, workers=1, show_progress=False)
    train = TokenShards(tmp_path / "sh" / "train")
    b = train.batch(step=7, batch_size=8, length=33, seed=1)
    assert b.shape == (8, 33) and b.dtype == torch.int64
    assert torch.equal(b, train.batch(7, 8, 33, 1))
    assert torch.equal(b, TokenShards(tmp_path / "sh" / "train").batch(7, 8, 33, 1))  # reopened: same
    assert not torch.equal(b, train.batch(8, 8, 33, 1))
    assert not torch.equal(b, train.batch(7, 8, 33, 2))
    assert not torch.equal(b, train.batch(7, 8, 33, 1, rank=1))
    # every row is a real window of the stream
    flat = _all_tokens(train)
    for row in b.tolist():
        starts = np.flatnonzero(flat[: len(flat) - 32] == row[0])
        assert any(flat[s : s + 33].tolist() == row for s in starts)


def _hand_made_shards(folder: Path, sizes: list[int]) -> TokenShards:
    """Shard k holds only token k+1: a window mixing values crossed a shard end."""
    folder.mkdir(parents=True)
    shards = []
    for k, n in enumerate(sizes):
        np.full(n, k + 1, dtype="<u2").tofile(folder / f"{k:06d}.bin")
        shards.append({"file": f"{k:06d}.bin", "tokens": n})
    meta = {
        "format": "lmkit-token-shards",
        "version": 1,
        "split": "train",
        "dtype": "uint16",
        "vocab_size": 100,
        "tokenizer_sha256": "x",
        "eos_id": 2,
        "shards": shards,
        "num_tokens": sum(sizes),
        "documents": 1,
        "text_bytes": 0,
    }
    (folder / "meta.json").write_text(json.dumps(meta))
    return TokenShards(folder)


def test_windows_never_cross_shard_ends(tmp_path: Path) -> None:
    sh = _hand_made_shards(tmp_path / "t", [50, 37, 20, 64])
    seen = set()
    for step in range(200):
        b = sh.batch(step, 16, 30, seed=0)
        for row in b.tolist():
            assert len(set(row)) == 1, row
            seen.add(row[0])
    assert seen == {1, 2, 4}  # shard 3 (20 tokens) is shorter than a window: never used
    with pytest.raises(LmkitError, match=r"has 171 tokens \(largest shard 64\), fewer than the 65"):
        sh.batch(0, 2, 65, seed=0)
    rows = torch.cat(list(sh.sequential_batches(3, 30)))
    assert [r[0] for r in rows.tolist()] == [1, 2, 4, 4]  # non-overlapping, in order, within shards
    assert len(list(sh.sequential_batches(1, 30, max_batches=2))) == 2


def test_truncated_shard_is_an_error(tmp_path: Path) -> None:
    _hand_made_shards(tmp_path / "t", [50])
    with open(tmp_path / "t" / "000000.bin", "r+b") as f:
        f.truncate(40)
    with pytest.raises(LmkitError, match="000000.bin: shard is 40 bytes, meta.json says 100"):
        TokenShards(tmp_path / "t")
    with pytest.raises(LmkitError, match="no meta.json"):
        TokenShards(tmp_path)


def test_small_corpus_val_never_empty(tok: Tokenizer, tmp_path: Path) -> None:
    one = gen_docs(1, 3, lo=200, hi=200)
    s = pack(one, tok, tmp_path / "one", val_fraction=0.1, workers=1, show_progress=False)
    train, val = TokenShards(tmp_path / "one" / "train"), TokenShards(tmp_path / "one" / "val")
    assert s["split_rule"] == "tail"
    assert train.num_tokens > 0 and val.num_tokens > 0
    whole = tok.encode(one[0].text) + [tok.eos_id]
    assert _all_tokens(train).tolist() + _all_tokens(val).tolist() == whole  # disjoint, nothing lost
    assert val.num_tokens == int(np.ceil(0.1 * len(whole)))
    # a few documents whose hashes all land in train: still a val split
    few = [d for d in gen_docs(40, 4) if not in_val_split(d.id, 0.05)][:3]
    pack(few, tok, tmp_path / "few", val_fraction=0.05, workers=1, show_progress=False)
    tr, va = TokenShards(tmp_path / "few" / "train"), TokenShards(tmp_path / "few" / "val")
    assert va.num_tokens > 0 and tr.num_tokens > 0
    assert sum(tr.meta["tokens_per_source"].values()) == tr.num_tokens
    assert sum(va.meta["tokens_per_source"].values()) == va.num_tokens
    # the other way round: everything hashed to val
    allval = [d for d in gen_docs(400, 5) if in_val_split(d.id, 0.3)][:2]
    pack(allval, tok, tmp_path / "allval", val_fraction=0.3, workers=1, show_progress=False)
    assert (
        TokenShards(tmp_path / "allval" / "train").num_tokens > TokenShards(tmp_path / "allval" / "val").num_tokens > 0
    )


def test_val_disjoint_from_train(tok: Tokenizer, tmp_path: Path) -> None:
    docs = gen_docs(200, 6)
    pack(docs, tok, tmp_path / "sh", val_fraction=0.1, workers=1, show_progress=False)
    train, val = TokenShards(tmp_path / "sh" / "train"), TokenShards(tmp_path / "sh" / "val")

    def split_docs(sh: TokenShards) -> list[tuple[int, ...]]:
        flat = _all_tokens(sh).tolist()
        out, cur = [], []
        for t in flat:
            if t == tok.eos_id:
                out.append(tuple(cur))
                cur = []
            else:
                cur.append(t)
        return out

    tr, va = split_docs(train), split_docs(val)
    assert len(tr) + len(va) == 200 and va
    enc_val = {tuple(tok.encode(d.text)) for d in docs if in_val_split(d.id, 0.1)}
    assert set(va) == enc_val and not enc_val & (set(tr) - set(va))


def test_atomic_write_and_no_overwrite(tok: Tokenizer, tmp_path: Path) -> None:
    def exploding():
        yield from gen_docs(30, 7)
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError):
        pack(exploding(), tok, tmp_path / "out", workers=1, show_progress=False)
    assert list(tmp_path.iterdir()) == []  # no partial folder, no temporary left
    pack(gen_docs(30, 7), tok, tmp_path / "out", workers=1, show_progress=False)
    with pytest.raises(LmkitError, match="already exists"):
        pack(gen_docs(30, 7), tok, tmp_path / "out", workers=1, show_progress=False)
    before = (tmp_path / "out" / "train" / "meta.json").read_text()
    with pytest.raises(RuntimeError):
        pack(exploding(), tok, tmp_path / "out", workers=1, show_progress=False, overwrite=True)
    assert (tmp_path / "out" / "train" / "meta.json").read_text() == before  # old shards intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    with pytest.raises(LmkitError, match="no text to pack"):
        pack([Document("e", "", "s")], tok, tmp_path / "empty", workers=1, show_progress=False)


def test_uint32_for_large_vocab() -> None:
    from lmkit.data.pack import token_dtype

    assert token_dtype(65536) == np.dtype("<u2") and token_dtype(65537) == np.dtype("<u4")


def _write_corpus(folder: Path, n: int = 40, seed: int = 8) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for d in gen_docs(n, seed, lo=40, hi=150):
        (folder / f"{d.id}.txt").write_text(d.text, encoding="utf-8")


def test_prepare_trains_packs_and_reuses(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    _write_corpus(raw)
    cfg = DataConfig(paths=[str(raw)], val_fraction=0.1, workers=1)
    tok, train, val = prepare(cfg, tmp_path / "run", vocab_size=420, show_progress=False)
    assert (tmp_path / "run" / "tokenizer.json").is_file() and tok.vocab_size <= 420
    assert train.num_tokens > 0 and val.num_tokens > 0 and train.tokenizer_sha256 == tok.sha256
    stamp = (tmp_path / "run" / "shards" / "train" / "meta.json").stat().st_mtime_ns
    tok2, train2, _ = prepare(cfg, tmp_path / "run", vocab_size=420, show_progress=False)
    assert tok2.sha256 == tok.sha256 and train2.num_tokens == train.num_tokens
    assert (tmp_path / "run" / "shards" / "train" / "meta.json").stat().st_mtime_ns == stamp  # reused
    # a changed input re-packs
    (raw / "extra.txt").write_text("the cat sat on the mat " * 30)
    _, train3, _ = prepare(cfg, tmp_path / "run", vocab_size=420, show_progress=False)
    assert train3.meta["inputs_fingerprint"] != train.meta["inputs_fingerprint"]
    assert train3.num_tokens + TokenShards(tmp_path / "run" / "shards" / "val").num_tokens > train.num_tokens
    # opening the shard folder directly, with the tokenizer saved beside it
    tok4, train4, val4 = prepare(
        DataConfig(paths=[str(tmp_path / "run" / "shards")]), tmp_path / "run2", vocab_size=420, show_progress=False
    )
    assert train4.num_tokens == train3.num_tokens and val4.num_tokens > 0
    # ... or with the split folder given by mistake
    assert (
        prepare(
            DataConfig(paths=[str(tmp_path / "run" / "shards" / "train")]),
            tmp_path / "run2",
            vocab_size=420,
            show_progress=False,
        )[1].num_tokens
        == train3.num_tokens
    )


def test_prepare_with_given_tokenizer_and_mismatch(tok: Tokenizer, tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    _write_corpus(raw, 20, 9)
    tok.save(tmp_path / "tok")
    cfg = DataConfig(paths=[str(raw)], tokenizer=str(tmp_path / "tok"), shards=str(tmp_path / "shards"), workers=1)
    t, train, val = prepare(cfg, tmp_path / "run", vocab_size=999, show_progress=False)
    assert t.sha256 == tok.sha256 == train.tokenizer_sha256 and val.num_tokens > 0
    other = train_tokenizer([d.text for d in gen_docs(50, 10)], vocab_size=380, show_progress=False)
    other.save(tmp_path / "other")
    with pytest.raises(LmkitError, match="is not the one .* was packed with"):
        prepare(
            DataConfig(paths=[str(tmp_path / "shards")], tokenizer=str(tmp_path / "other")),
            tmp_path / "r",
            vocab_size=400,
            show_progress=False,
        )
    # a user-chosen shard folder packed from other inputs is not silently replaced
    with pytest.raises(LmkitError, match="already exists and holds other data"):
        prepare(
            DataConfig(paths=[str(raw)], tokenizer=str(tmp_path / "other"), shards=str(tmp_path / "shards")),
            tmp_path / "run",
            vocab_size=400,
            show_progress=False,
        )
    with pytest.raises(LmkitError, match="no training data"):
        prepare(DataConfig(paths=[]), tmp_path / "run", vocab_size=400, show_progress=False)


def test_pack_falls_back_when_fast_path_disagrees(tok: Tokenizer, tmp_path: Path, monkeypatch) -> None:
    docs = gen_docs(50, 11)
    pack(docs, tok, tmp_path / "fast", workers=0, show_progress=False)
    slow = Tokenizer.from_str(tok.to_str())
    assert slow.fast
    monkeypatch.setattr(slow, "verify_fast", lambda texts: False)
    s = pack(docs, slow, tmp_path / "slow", workers=0, show_progress=False)
    assert not s["fast_tokenizer"] and not slow.fast
    for split in ("train", "val"):
        assert (
            _all_tokens(TokenShards(tmp_path / "slow" / split)).tolist()
            == _all_tokens(TokenShards(tmp_path / "fast" / split)).tolist()
        )
