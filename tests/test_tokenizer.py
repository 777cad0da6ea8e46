"""Tokenizer: stable special ids, exact round trips, tiktoken ids identical to Hugging Face,
save/load/sha, transformers compatibility, fertility and the CLI."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from lmkit import cli
from lmkit.errors import LmkitError
from lmkit.fertility import fertility, split_words
from lmkit.tokenizer import BOS, EOS, MASK, PAD, SENTINELS, UNK, Tokenizer, train_tokenizer

WORDS = [
    "the",
    "cat",
    "sat",
    "on",
    "a",
    "mat",
    "über",
    "naïve",
    "café",
    "日本語",
    "テキスト",
    "русский",
    "😀",
    "👍🏽",
    "it's",
    "they'LL",
    "12345",
    "3.14",
    "x**2",
    "e-mail",
    "Straße",
    "ελληνικά",
    "हिन्दी",
]
SEPS = [" ", " ", " ", "  ", "\n", "\n\n", "\t", "\u00a0", "\u3000", "\r\n", ", ", ". "]


def gen_corpus(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        k = rng.randint(3, 80)
        parts = []
        for _ in range(k):
            w = rng.choice(WORDS)
            if rng.random() < 0.1:  # random code points, some outside the BMP
                w = "".join(
                    chr(
                        rng.choice(
                            [rng.randint(0x20, 0x2FF), rng.randint(0x4E00, 0x4FFF), rng.randint(0x1F300, 0x1F5FF)]
                        )
                    )
                    for _ in range(rng.randint(1, 4))
                )
            parts.append(w + rng.choice(SEPS))
        out.append("".join(parts))
    return out


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return train_tokenizer(gen_corpus(400, 0), vocab_size=500, show_progress=False)


def test_special_token_ids_are_the_first(tok: Tokenizer) -> None:
    assert (tok.pad_id, tok.bos_id, tok.eos_id, tok.unk_id, tok.mask_id) == (0, 1, 2, 3, 4)
    assert tok.sentinel_ids == list(range(5, 105))
    for i, t in enumerate([PAD, BOS, EOS, UNK, MASK, *SENTINELS]):
        assert tok.hf.id_to_token(i) == t
    assert 361 < tok.vocab_size <= 500


def test_round_trip_is_exact_on_any_string(tok: Tokenizer) -> None:
    cases = [
        "",
        "hello",
        "  leading and trailing  ",
        "tabs\tand\r\nCRLF\n\n\n",
        "ünïcödé ✓ 🎉👍🏽 日本語",
        "\x00\x01 control \x7f",
        "literal </s> and <s> and [MASK] and <extra_id_3>",
        "🧪" * 5,
        "".join(chr(c) for c in range(0x20, 0x250)),
    ]
    for s in cases + gen_corpus(50, 123):
        ids = tok.encode(s)
        assert tok.decode(ids) == s
        assert tok.decode(tok.encode_batch([s])[0]) == s
    # text never turns into special tokens by accident
    ids = tok.encode("a </s> b")
    assert tok.eos_id not in ids
    # ... unless asked
    ids = tok.encode("a </s> b <extra_id_0>", allow_special=True)
    assert tok.eos_id in ids and tok.sentinel_ids[0] in ids
    assert tok.decode(ids, skip_special=False) == "a </s> b <extra_id_0>"
    assert tok.decode(ids) == "a  b "


def test_tiktoken_path_gives_identical_ids(tok: Tokenizer) -> None:
    assert tok.fast, tok.fast_reason
    for seed in (1, 2):
        corpus = gen_corpus(300, seed)
        assert tok.encode_batch(corpus) == tok.encode_batch_reference(corpus)
        assert [tok.encode(t) for t in corpus[:50]] == tok.encode_batch_reference(corpus[:50])
    big = train_tokenizer(gen_corpus(600, 5), vocab_size=1200, min_frequency=1, show_progress=False)
    assert big.fast and big.vocab_size > 800
    corpus = gen_corpus(300, 6)
    assert big.encode_batch(corpus) == big.encode_batch_reference(corpus)


def test_fast_path_can_be_switched_off(tok: Tokenizer, monkeypatch) -> None:
    monkeypatch.setenv("LMKIT_FAST_TOKENIZER", "0")
    slow = Tokenizer.from_str(tok.to_str())
    assert not slow.fast and "LMKIT_FAST_TOKENIZER" in slow.fast_reason
    corpus = gen_corpus(20, 9)
    assert slow.encode_batch(corpus) == tok.encode_batch(corpus)


def test_save_load_sha_and_folder_forms(tok: Tokenizer, tmp_path: Path) -> None:
    p = tok.save(tmp_path / "tokdir")
    assert p == tmp_path / "tokdir" / "tokenizer.json"
    for form in (p, tmp_path / "tokdir"):
        t2 = Tokenizer.load(form)
        assert t2.sha256 == tok.sha256 and t2.vocab_size == tok.vocab_size
        assert t2.encode("naïve café 😀") == tok.encode("naïve café 😀")
    assert tok.save(tmp_path / "x.json") == tmp_path / "x.json"
    other = train_tokenizer(gen_corpus(100, 77), vocab_size=420, show_progress=False)
    assert other.sha256 != tok.sha256
    assert not list(tmp_path.glob("**/.*tmp*"))  # no temporary files left


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(LmkitError, match="no such tokenizer"):
        Tokenizer.load(tmp_path / "missing.json")
    (tmp_path / "empty").mkdir()
    with pytest.raises(LmkitError, match="folder has no tokenizer.json"):
        Tokenizer.load(tmp_path / "empty")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(LmkitError, match="bad.json: not a valid tokenizer.json"):
        Tokenizer.load(tmp_path / "bad.json")


def test_foreign_tokenizer_needs_strict_false(tmp_path: Path) -> None:
    from tokenizers import Tokenizer as HF
    from tokenizers import models, pre_tokenizers, trainers

    hf = HF(models.BPE(unk_token="[UNK]"))
    hf.pre_tokenizer = pre_tokenizers.Whitespace()
    hf.train_from_iterator(
        ["some words here"] * 10, trainers.BpeTrainer(vocab_size=60, special_tokens=["[UNK]"], show_progress=False)
    )
    hf.save(str(tmp_path / "foreign.json"))
    with pytest.raises(LmkitError, match="not an lmkit tokenizer"):
        Tokenizer.load(tmp_path / "foreign.json")
    t = Tokenizer.load(tmp_path / "foreign.json", strict=False)
    assert t.eos_id == -1 and not t.fast
    assert t.encode("some words") == hf.encode("some words").ids


def test_vocab_too_small_and_empty_corpus() -> None:
    with pytest.raises(LmkitError, match="vocab size 300 is too small"):
        train_tokenizer(["abc"], vocab_size=300)
    with pytest.raises(LmkitError, match="no text"):
        train_tokenizer(["", ""], vocab_size=400, show_progress=False)


def test_token_str_readable(tok: Tokenizer) -> None:
    assert tok.token_str(tok.eos_id) == EOS
    ids = tok.encode(" cat")
    assert "".join(tok.token_str(i) for i in ids) == " cat"
    # a lone byte of a multi-byte character is shown as an escape, not as U+FFFD
    byte_id = tok.hf.token_to_id("Ã")  # byte 0xC3 in the ByteLevel alphabet
    assert tok.token_str(byte_id) == "\\xc3"
    assert tok.token_bytes(byte_id) == b"\xc3"


def test_transformers_loads_the_saved_file(tok: Tokenizer, tmp_path: Path) -> None:
    from transformers import PreTrainedTokenizerFast

    path = tok.save(tmp_path)
    hft = PreTrainedTokenizerFast(
        tokenizer_file=str(path), eos_token=EOS, bos_token=BOS, pad_token=PAD, unk_token=UNK, mask_token=MASK
    )
    text = "the naïve cat sat on the mat 😀"
    assert hft(text, add_special_tokens=False)["input_ids"] == tok.encode(text)
    assert hft.eos_token_id == tok.eos_id and hft.pad_token_id == tok.pad_id and hft.mask_token_id == 4
    assert hft.decode(tok.encode(text)) == text


def test_fertility_and_split_words(tok: Tokenizer) -> None:
    texts = ["the cat sat on the mat", "the cat sat"]
    f = fertility(tok, texts)
    assert f["documents"] == 2 and f["words"] == 9
    assert f["tokens"] == sum(len(tok.encode(t)) for t in texts)
    assert f["bytes"] == sum(len(t.encode()) for t in texts)
    assert 1.0 <= f["tokens_per_word"] <= 3.0  # frequent words are whole tokens or close
    assert f["bytes_per_token"] == pytest.approx(f["bytes"] / f["tokens"])
    rare = fertility(tok, ["zqxj vwpk yyzz"])
    assert rare["tokens_per_word"] > f["tokens_per_word"]  # unseen words cost more tokens
    (w1, p1), (w2, p2) = split_words(tok, ["cat", "zqxj vwpk"])
    assert w1 == "cat" and "".join(p1) == " cat" and len(p1) <= 2
    assert "".join(p2) == " zqxj vwpk" and len(p2) > 2
    assert fertility(tok, [])["tokens_per_word"] is None


def test_cli_train_and_stats(tmp_path: Path, capsys) -> None:
    data = tmp_path / "data"
    data.mkdir()
    for i, text in enumerate(gen_corpus(60, 3)):
        (data / f"{i:03d}.txt").write_text(text, encoding="utf-8")
    out = tmp_path / "tok"
    assert cli.main(["tokenizer", "train", str(data), "--vocab-size", "450", "--out", str(out)]) == 0
    assert (out / "tokenizer.json").is_file()
    capsys.readouterr()
    # refuses to overwrite without --overwrite
    assert cli.main(["tokenizer", "train", str(data), "--vocab-size", "450", "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert (
        cli.main(
            [
                "tokenizer",
                "train",
                str(data),
                "--vocab-size",
                "400",
                "--out",
                str(out),
                "--overwrite",
                "--max-docs",
                "10",
            ]
        )
        == 0
    )
    assert Tokenizer.load(out).vocab_size <= 400
    capsys.readouterr()
    other = tmp_path / "other"
    assert cli.main(["tokenizer", "train", str(data), "--vocab-size", "380", "--out", str(other)]) == 0
    capsys.readouterr()
    assert (
        cli.main(
            [
                "tokenizer",
                "stats",
                str(out),
                "--data",
                str(data),
                "--words",
                "naïve",
                "mens rea",
                "--compare",
                str(other),
                "--json",
            ]
        )
        == 0
    )
    res = json.loads(capsys.readouterr().out)
    assert res["tokenizer"]["fertility"]["documents"] == 60
    assert [w["word"] for w in res["tokenizer"]["words"]] == ["naïve", "mens rea"]
    assert res["compare"]["vocab_size"] == Tokenizer.load(other).vocab_size
    assert cli.main(["tokenizer", "stats", str(out), "--words", "naïve", "--compare", str(other)]) == 0
    text = capsys.readouterr().out
    assert "naïve" in text and "tok:" in text
    # bad input: a one-line error, exit 2
    assert cli.main(["tokenizer", "train", str(tmp_path / "nope"), "--out", str(tmp_path / "t2")]) == 2
    assert "nope: no such file or folder" in capsys.readouterr().err
    assert cli.main(["tokenizer", "stats", str(out)]) == 2
    assert "nothing to measure" in capsys.readouterr().err
