"""The whole chain end to end: `lmkit demo --quick` on a small corpus the test writes (not the host's files),
and what the demo prints: no blank lines, one 100% line per bar, one set of held-out tokens for both models."""

from __future__ import annotations

import io
import json
import os
import random
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from lmkit.demo import gather_default_corpus
from lmkit.errors import LmkitError
from lmkit.ship.card.render import parse_front_matter
from lmkit.ship.hub import Hub
from lmkit.ship.hub_search import search

_SUBJECTS = [
    "The river",
    "A small town",
    "The old library",
    "Our garden",
    "The morning train",
    "A quiet teacher",
    "The market",
    "The harbour",
    "An early storm",
    "The school choir",
]
_VERBS = ["carried", "welcomed", "remembered", "filled", "crossed", "surprised", "changed", "opened", "followed"]
_OBJECTS = [
    "the people of the valley",
    "a letter from the north",
    "the light of the evening",
    "many new visitors",
    "the sound of the bells",
    "the stories of the winter",
    "a long road by the sea",
    "the children after school",
]
_TAILS = [
    "and nobody could forget it.",
    "while the rain kept falling.",
    "before the sun went down.",
    "as it had done for years.",
    "and the whole street was glad.",
    "because it was the right time.",
]


def write_fixture_corpus(folder: Path, docs: int = 1500, duplicates: int = 100) -> Path:
    """Deterministic English-like documents plus exact duplicates (so curation has something to drop)."""
    rng = random.Random(0)
    folder.mkdir(parents=True)
    texts = []
    for _ in range(docs):
        sentences = [
            f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)} {rng.choice(_TAILS)}"
            for _ in range(rng.randint(8, 16))
        ]
        texts.append(" ".join(sentences))
    texts += texts[:duplicates]
    with (folder / "corpus.jsonl").open("w", encoding="utf-8") as f:
        for text in texts:
            f.write(json.dumps({"text": text}) + "\n")
    return folder


@dataclass(frozen=True)
class DemoRun:
    """One `lmkit demo --quick --json` run, shared by the tests below: what it wrote and printed."""

    parent: Path  # the folder holding the demo's output folder
    summary: dict[str, Any]  # the JSON summary on stdout
    log: str  # the progress log on stderr


@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory: pytest.TempPathFactory) -> DemoRun:
    """The quick demo on the fixture corpus, run once as a piped subprocess (stdout and stderr apart)."""
    parent = tmp_path_factory.mktemp("demo")
    corpus = write_fixture_corpus(parent / "corpus")
    r = subprocess.run(
        [sys.executable, "-m", "lmkit.cli", "demo", "--quick", "--data", str(corpus), "--out", str(parent / "demo")]
        + ["--json"],
        capture_output=True,
        text=True,
        cwd=parent,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    return DemoRun(parent=parent, summary=json.loads(r.stdout), log=r.stderr)


@pytest.mark.slow
def test_demo_quick_produces_every_artefact(quick_demo: DemoRun) -> None:
    s = quick_demo.summary
    root = Path(s["out"])
    assert root == quick_demo.parent / "demo"
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
    # the int8 copy is scored on the very held-out tokens of the run's last evaluation
    assert q["eval_before"]["tokens"] == tr["eval"]["tokens"] > 0
    assert q["eval_before"]["perplexity"] == pytest.approx(tr["eval"]["perplexity"], rel=0.02)
    # the card carries the run's real figures; the hub has the model
    front, body = parse_front_matter((ckpt / "README.md").read_text())
    assert front["pipeline_tag"] == "text-generation"
    assert f"{tr['tokens']:,}" in body
    assert [m["name"] for m in search(Hub(str(root / "hub")), "family:decoder")] == ["demo/lmkit-demo-decoder"]
    # a second demo never overwrites the first
    assert not (quick_demo.parent / "demo-2").exists()


def test_gather_refuses_when_no_text_is_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import lmkit.demo as demo

    monkeypatch.setattr(demo, "SOURCES", {"nothing": lambda: iter(())})
    with pytest.raises(LmkitError, match="found only 0 bytes"):
        gather_default_corpus(tmp_path / "raw")


# --------------------------------------------------------------------------- what the demo prints


def test_tokenizer_training_writes_nothing_into_a_pipe(capfd: pytest.CaptureFixture[str]) -> None:
    from lmkit.tokenizer import train_tokenizer

    texts = [f"the licence {i} grants the rights to use, copy and modify the work {i % 7}" for i in range(300)]
    tok = train_tokenizer(texts, vocab_size=400, show_progress=True)
    assert tok.vocab_size > 361
    out, err = capfd.readouterr()
    assert (out, err) == ("", ""), "the trainer's bars wrote into a stream that is not a terminal"


def test_a_finished_bar_prints_its_100_percent_line_once() -> None:
    from lmkit.progress import progress

    buf = io.StringIO()
    bar = progress(total=262_000, desc="curate", unit="B", unit_scale=True, file=buf)
    bar.update(131_000)
    bar.update(131_000)
    bar.set_postfix(docs=113, kept="29.2%")  # as curate does after its last update
    bar.close()
    done = [line for line in buf.getvalue().splitlines() if "100%" in line]
    assert len(done) == 1 and done[0].endswith("docs=113, kept=29.2%]")


def _summary(tmp_path: Path) -> dict:
    before = {"loss": 4.925, "perplexity": 137.749, "bits_per_byte": 3.391, "tokens": 4096.0}
    after = {"loss": 4.9251, "perplexity": 137.763, "bits_per_byte": 3.392, "tokens": 4096.0}
    out = str(tmp_path / "demo")
    return {
        "out": out,
        "wall_time_s": 88.0,
        "curation": {"docs_in": 113, "docs_out": 33, "tokens_kept_pct": 16.4},
        "training": {
            "params": 139_584,
            "steps": 40,
            "tokens": 20_480,
            "wall_time_s": 58.0,
            "eval": {**before, "perplexity": 145.6},  # a training eval on other windows: not shown
            "checkpoint": f"{out}/run/ckpt-0000040",
            "loss_curve": f"{out}/run/loss_curve.png",
        },
        "quantization": {
            "eval_before": before,
            "eval_after": after,
            "perplexity_change_pct": 0.01,
            "disk_bytes": {"before": 560_000, "after": 151_000, "ratio": 3.70},
            "memory_bytes": {"before": 560_000, "after": 155_000, "ratio": 3.62},
        },
        "generation": {
            "prompt": "Permission",
            "greedy": "Permission is",
            "sampled (T=0.8, top-p 0.95)": "Permission x",
        },
        "card": f"{out}/run/ckpt-0000040/README.md",
        "hub": {"url": f"{out}/hub"},
    }


def test_demo_summary_has_one_set_of_held_out_tokens_and_no_blank_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from lmkit.cli.train import print_demo_summary

    print_demo_summary(_summary(tmp_path))
    text = capsys.readouterr().out
    lines = text.splitlines()
    assert all(line.strip() for line in lines), "a blank line in the summary"
    held = next(i for i, line in enumerate(lines) if line.startswith("held-out"))
    assert "4,096 tokens" in lines[held] and "the same for both" in lines[held]
    assert lines[held + 1].split() == ["the", "model", "loss", "4.925,", "perplexity", "137.75,", "bits/byte", "3.391"]
    assert lines[held + 2].startswith("  int8 copy  loss 4.925, perplexity 137.76 (+0.01%)")
    assert "145.6" not in text  # one figure per model, not a second evaluation on other tokens
    assert "3.70x smaller on disk" in text


# --------------------------------------------------------------------------- the demo's log in a pipe


@pytest.mark.slow
def test_piped_demo_log_stays_short(quick_demo: DemoRun) -> None:
    log = quick_demo.log
    assert "\r" not in log, "carriage-return redraws in a piped log"
    assert len(log.splitlines()) < 200, f"{len(log.splitlines())} lines"
    assert log.count("train: 100%") == 1 and log.count("curate: 100%") == 1, "a 100% line printed twice"
    assert "\n\n" not in log.strip(), "a blank line in the demo's log"
