"""The whole chain end to end: `lmkit demo --quick` on the built-in corpus found on this machine."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lmkit.ship.card import parse_front_matter
from lmkit.demo import gather_default_corpus, run_demo
from lmkit.errors import LmkitError
from lmkit.ship.hub import Hub


def test_demo_quick_produces_every_artefact(tmp_path: Path) -> None:
    s = run_demo(out=tmp_path / "demo", quick=True)
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
    assert (root / "model-int8" / "model.safetensors").stat().st_size < 0.4 * (ckpt / "model.safetensors").stat().st_size
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
