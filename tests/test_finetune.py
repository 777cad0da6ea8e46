"""finetune-head: heads learn separable labelled sets, metrics count right, data errors name the line."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from lmkit.cli import main
from lmkit.config import ModelConfig
from lmkit.errors import LmkitError
from lmkit.models import build_model
from lmkit.models.checkpoint import save_checkpoint
from lmkit.tokenizer import Tokenizer, train_tokenizer
from lmkit.train.finetune.data import Example, FinetuneConfig, encode_words, read_examples, split_examples
from lmkit.train.finetune.heads import load_finetuned
from lmkit.train.finetune.loop import finetune_classifier, finetune_seq2seq
from lmkit.train.finetune.scores import bio_spans, classification_metrics, entity_metrics, word_f1

FILLER = [
    "the",
    "a",
    "this",
    "that",
    "movie",
    "film",
    "story",
    "plot",
    "it",
    "was",
    "is",
    "and",
    "but",
    "with",
    "very",
    "quite",
    "really",
    "so",
]
POSITIVE = ["good", "great", "wonderful", "excellent", "lovely"]
NEGATIVE = ["bad", "awful", "terrible", "poor", "boring"]
FIRST = ["Ada", "Alan", "Grace", "Linus", "Marie"]
LAST = ["Lovelace", "Turing", "Hopper", "Curie"]
CITIES = ["London", "Paris", "Berlin", "Madrid", "Rome"]
ANIMALS = ["cat", "dog", "horse", "bird", "fish"]
COLOURS = ["red", "blue", "green", "yellow", "white"]


def sentiment_examples(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        label = "positive" if i % 2 else "negative"
        words = [rng.choice(FILLER) for _ in range(rng.randint(4, 9))]
        words.insert(rng.randint(0, len(words)), rng.choice(POSITIVE if label == "positive" else NEGATIVE))
        out.append({"text": " ".join(words), "label": label})
    return out


def ner_examples(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        first, last, city = rng.choice(FIRST), rng.choice(LAST), rng.choice(CITIES)
        pattern = rng.choice(["{p} lives in {c}", "in {c} we met {p}", "{p} and {q} went to {c} today"])
        tokens, labels = [], []
        for piece in pattern.split():
            if piece in ("{p}", "{q}"):
                name = [first, last] if piece == "{p}" else [rng.choice(FIRST)]
                tokens += name
                labels += ["B-PER"] + ["I-PER"] * (len(name) - 1)
            elif piece == "{c}":
                tokens.append(city)
                labels.append("B-LOC")
            else:
                tokens.append(piece)
                labels.append("O")
        out.append({"tokens": tokens, "labels": labels})
    return out


def seq2seq_examples(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        kind = "animal" if i % 2 else "colour"
        words = [rng.choice(FILLER) for _ in range(rng.randint(3, 6))]
        words.insert(rng.randint(0, len(words)), rng.choice(ANIMALS if kind == "animal" else COLOURS))
        out.append({"input": "what kind: " + " ".join(words), "target": kind})
    return out


def to_examples(rows: list[dict], task: str) -> list[Example]:
    if task == "sequence-classification":
        return [Example(f"row{i}", text=r["text"], label=r["label"]) for i, r in enumerate(rows)]
    if task == "token-classification":
        return [Example(f"row{i}", words=tuple(r["tokens"]), tags=tuple(r["labels"])) for i, r in enumerate(rows)]
    return [Example(f"row{i}", source=r["input"], target=r["target"]) for i, r in enumerate(rows)]


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    texts = [r["text"] for r in sentiment_examples(200)] + [" ".join(r["tokens"]) for r in ner_examples(200)]
    texts += [r["input"] + " " + r["target"] for r in seq2seq_examples(200)]
    return train_tokenizer(texts * 3, vocab_size=420, show_progress=False)


def encoder(tok: Tokenizer, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(
        ModelConfig(
            family="encoder",
            vocab_size=tok.vocab_size,
            d_model=32,
            n_layers=2,
            n_heads=4,
            max_seq_len=32,
            pos_encoding="rotary",
        )
    )


def test_sequence_classification_head_learns_a_separable_set(tok: Tokenizer) -> None:
    rows = sentiment_examples(240)
    train, val = split_examples(to_examples(rows, "sequence-classification"), 0.25, seed=0)
    cfg = FinetuneConfig(task="sequence-classification", epochs=8, lr=5e-3, head_lr=2e-2, batch_size=16)
    _, rep = finetune_classifier(encoder(tok), tok, train, val, cfg)
    assert rep["labels"] == ["negative", "positive"] and rep["val_examples"] == 60
    assert rep["accuracy"] >= 0.9, rep
    assert rep["majority_baseline"] <= 0.6
    assert rep["macro_f1"] >= 0.9 and set(rep["per_label"]) == {"negative", "positive"}
    assert [h["epoch"] for h in rep["history"]] == list(range(1, 9))


def test_token_classification_head_finds_entities(tok: Tokenizer) -> None:
    train, val = split_examples(to_examples(ner_examples(240), "token-classification"), 0.25, seed=0)
    cfg = FinetuneConfig(task="token-classification", epochs=8, lr=5e-3, head_lr=2e-2, batch_size=16)
    _, rep = finetune_classifier(encoder(tok, 1), tok, train, val, cfg)
    assert rep["labels"] == ["B-LOC", "B-PER", "I-PER", "O"]
    assert rep["accuracy"] >= 0.95, rep
    assert rep["entity"]["f1"] >= 0.9 and rep["entity"]["entities"] > 60


def test_seq2seq_learns_input_to_target_pairs(tok: Tokenizer) -> None:
    torch.manual_seed(0)
    model = build_model(
        ModelConfig(
            family="encdec",
            vocab_size=tok.vocab_size,
            d_model=32,
            n_layers=2,
            n_heads=4,
            max_seq_len=32,
            max_target_len=8,
        )
    )
    train, val = split_examples(to_examples(seq2seq_examples(200), "seq2seq"), 0.2, seed=0)
    cfg = FinetuneConfig(task="seq2seq", epochs=6, lr=1e-2, batch_size=16)
    model, rep = finetune_seq2seq(model, tok, train, val, cfg)
    assert rep["exact_match"] >= 0.9, rep
    assert rep["word_f1"] >= rep["exact_match"] and rep["loss"] < rep["history"][0]["train_loss"]
    assert rep["examples"] and {"input", "target", "output"} <= set(rep["examples"][0])


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_command_saves_a_classifier_that_loads_back(
    tok: Tokenizer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    enc = encoder(tok, 2)
    save_checkpoint(tmp_path / "pre", enc, enc.cfg, tokenizer=tok)
    data = write_jsonl(tmp_path / "train.jsonl", sentiment_examples(160, seed=1))
    held = write_jsonl(tmp_path / "held.jsonl", sentiment_examples(40, seed=2))
    args = [
        "finetune-head",
        str(tmp_path / "pre"),
        "--task",
        "sequence-classification",
        "--data",
        str(data),
        "--eval",
        str(held),
        "--epochs",
        "8",
        "--lr",
        "5e-3",
        "--head-lr",
        "2e-2",
        "--out",
        str(tmp_path / "ft"),
        "--json",
    ]
    assert main(args) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["train_examples"] == 160 and rep["val_examples"] == 40 and rep["accuracy"] >= 0.9
    ft = load_finetuned(tmp_path / "ft")
    texts = [r["text"] for r in sentiment_examples(40, seed=2)]
    gold = [r["label"] for r in sentiment_examples(40, seed=2)]
    pred = ft.predict(texts)
    assert sum(p == g for p, g in zip(pred, gold)) / 40 == pytest.approx(rep["accuracy"])
    # the saved folder is still an ordinary encoder checkpoint
    from lmkit.models.checkpoint import load_model

    assert load_model(tmp_path / "ft").cfg.family == "encoder"
    # an existing --out is not replaced without --overwrite; the text report reads well
    assert main(args[:-1]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main([*args[:-1], "--overwrite", "--quiet", "--epochs", "1"]) == 0
    out = capsys.readouterr().out
    assert "held-out: accuracy" in out and "majority-label baseline" in out and "saved:" in out


def test_token_classifier_predicts_per_word_after_reload(tok: Tokenizer, tmp_path: Path) -> None:
    enc = encoder(tok, 3)
    save_checkpoint(tmp_path / "pre", enc, enc.cfg, tokenizer=tok)
    data = write_jsonl(tmp_path / "ner.jsonl", ner_examples(200, seed=4))
    assert (
        main(
            [
                "finetune-head",
                str(tmp_path / "pre"),
                "--task",
                "token-classification",
                "--data",
                str(data),
                "--epochs",
                "8",
                "--lr",
                "5e-3",
                "--head-lr",
                "2e-2",
                "--out",
                str(tmp_path / "ner"),
                "--quiet",
            ]
        )
        == 0
    )
    ft = load_finetuned(tmp_path / "ner")
    words = ["Grace", "Hopper", "lives", "in", "Rome"]
    assert ft.predict([words]) == [["B-PER", "I-PER", "O", "O", "B-LOC"]]


def test_wrong_family_and_bad_data_are_refused(tok: Tokenizer, tmp_path: Path) -> None:
    enc = encoder(tok)
    with pytest.raises(LmkitError, match="needs an encoder-decoder"):
        finetune_seq2seq(enc, tok, [], [], FinetuneConfig(task="seq2seq"))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine", "label": "a"}\n{"text": "oops"}\n', encoding="utf-8")
    with pytest.raises(LmkitError, match=r"bad.jsonl:2: missing 'label'"):
        read_examples(bad, "sequence-classification")
    bad.write_text('{"tokens": ["a", "b"], "labels": ["O"]}\n', encoding="utf-8")
    with pytest.raises(LmkitError, match=r"bad.jsonl:1: 'labels' must be a list with one label per token"):
        read_examples(bad, "token-classification")
    bad.write_text("not json\n", encoding="utf-8")
    with pytest.raises(LmkitError, match=r"bad.jsonl:1: not valid JSON"):
        read_examples(bad, "seq2seq")
    with pytest.raises(LmkitError, match="--task must be one of"):
        FinetuneConfig(task="regression").validate()


def test_metrics_count_right() -> None:
    assert bio_spans(["B-PER", "I-PER", "O", "B-LOC", "I-LOC", "I-PER"]) == {
        ("PER", 0, 2),
        ("LOC", 3, 5),
        ("PER", 5, 6),
    }
    assert bio_spans(["I-LOC", "I-LOC", "B-LOC"]) == {("LOC", 0, 2), ("LOC", 2, 3)}
    e = entity_metrics([["B-PER", "I-PER", "O", "B-LOC"]], [["B-PER", "O", "O", "B-LOC"]])
    assert e["precision"] == pytest.approx(0.5) and e["recall"] == pytest.approx(0.5) and e["entities"] == 2
    m = classification_metrics(["a", "a", "b", "b"], ["a", "b", "b", "b"], ["a", "b"])
    assert m["accuracy"] == 0.75
    assert m["per_label"]["a"] == {"precision": 1.0, "recall": 0.5, "f1": pytest.approx(2 / 3), "support": 2}
    assert m["macro_f1"] == pytest.approx((2 / 3 + 0.8) / 2)
    assert word_f1("the red cat", "a red cat") == pytest.approx(2 / 3)
    assert word_f1("", "") == 1.0
    ids, labels, kept = encode_words(_FakeTok(), ["ab", "c"], [7, 8], max_len=16)
    assert ids == [2, 10, 11, 12, 13, 2] and labels == [-100, 7, -100, 8, -100, -100] and kept == 2


class _FakeTok:
    """Two tokens per word (the leading space is part of the first), to check label alignment."""

    eos_id, unk_id, pad_id = 2, 3, 0
    template = ([2], [2])  # the tokens around one text (Tokenizer.template): lmkit's own, EOS
    _next = 10

    def encode(self, text: str) -> list[int]:
        out = [self._next, self._next + 1]
        _FakeTok._next += 2
        return out
