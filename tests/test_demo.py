"""The whole chain end to end: `lmkit demo --quick` on a small corpus the test writes (not the host's files)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from lmkit.demo import gather_default_corpus, run_demo
from lmkit.errors import LmkitError
from lmkit.ship.card import parse_front_matter
from lmkit.ship.hub import Hub

_SUBJECTS = ["The river", "A small town", "The old library", "Our garden", "The morning train", "A quiet teacher",
             "The market", "The harbour", "An early storm", "The school choir"]
_VERBS = ["carried", "welcomed", "remembered", "filled", "crossed", "surprised", "changed", "opened", "followed"]
_OBJECTS = ["the people of the valley", "a letter from the north", "the light of the evening",
            "many new visitors", "the sound of the bells", "the stories of the winter", "a long road by the sea",
            "the children after school"]
_TAILS = ["and nobody could forget it.", "while the rain kept falling.", "before the sun went down.",
          "as it had done for years.", "and the whole street was glad.", "because it was the right time."]


def write_fixture_corpus(folder: Path, docs: int = 1500, duplicates: int = 100) -> Path:
    """Deterministic English-like documents plus exact duplicates (so curation has something to drop)."""
    rng = random.Random(0)
    folder.mkdir(parents=True)
    texts = []
    for _ in range(docs):
        sentences = [f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)} {rng.choice(_TAILS)}"
                     for _ in range(rng.randint(8, 16))]
        texts.append(" ".join(sentences))
    texts += texts[:duplicates]
    with (folder / "corpus.jsonl").open("w", encoding="utf-8") as f:
        for text in texts:
            f.write(json.dumps({"text": text}) + "\n")
    return folder


@pytest.mark.slow
def test_demo_quick_produces_every_artefact(tmp_path: Path) -> None:
    corpus = write_fixture_corpus(tmp_path / "corpus")
    s = run_demo(out=tmp_path / "demo", data=[str(corpus)], quick=True)
    root = Path(s["out"])
    # curation kept something and said how much
    report = json.loads((root / "curated" / "report.json").read_text())
    assert 0 < report["totals"]["docs_out"] < report["totals"]["docs_in"]
    # a trained, evaluated checkpoint whose loss fell
    tr = s["training"]
    assert tr["steps"] == 40 and tr["eval"]["loss"] < 6.0  # uniform over 512 tokens is 6.24
    ckpt = Path(tr["checkpoint"])
    assert (ckpt / "model.safetensors").is_file() and Path(tr["loss_curve"]).is_file()
    # the completion is the prompt followed by generated text
    assert s["generation"]["greedy"].startswith(s["generation"]["prompt"])
    # int8 is smaller and barely worse
    q = s["quantization"]
    int8_bytes = (root / "model-int8" / "model.safetensors").stat().st_size
    assert int8_bytes < 0.4 * (ckpt / "model.safetensors").stat().st_size
    assert "smaller" in q["summary"]
    # the card carries the run's real figures; the hub has the model
    front, body = parse_front_matter((ckpt / "README.md").read_text())
    assert front["pipeline_tag"] == "text-generation"
    assert f"{tr['tokens']:,}" in body
    assert [m["name"] for m in Hub(str(root / "hub")).search("family:decoder")] == ["demo/lmkit-demo-decoder"]
    # a second demo never overwrites the first
    assert not (tmp_path / "demo-2").exists()


def test_gather_refuses_when_no_text_is_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import lmkit.demo as demo

    monkeypatch.setattr(demo, "SOURCES", {"nothing": lambda: iter(())})
    with pytest.raises(LmkitError, match="found only 0 bytes"):
        gather_default_corpus(tmp_path / "raw")
