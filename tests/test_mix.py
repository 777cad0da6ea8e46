"""Mixing curated sources in token proportions: up/down-sampling, realised shares, determinism."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from lmkit.data.mix import MixSource, mix, parse_sources, plan_mix
from lmkit.data.read import iter_documents
from lmkit.errors import LmkitError
from lmkit.plan.units import parse_count


def make_source(folder: Path, n_docs: int, words_per_doc: int, tag: str) -> None:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(len(tag) * 7 + n_docs)
    with open(folder / "part-00000.jsonl", "w") as f:
        for i in range(n_docs):
            k = int(rng.integers(words_per_doc // 2, words_per_doc * 3 // 2))
            f.write(json.dumps({"id": f"{tag}{i}", "text": " ".join([tag] * k), "source": "x"}) + "\n")


def read_mix(out: Path) -> list[tuple[str, str, str]]:
    files = sorted(out / n for n in os.listdir(out) if n.startswith("part-"))
    docs = []
    for fp in files:
        import gzip

        with gzip.open(fp, "rt") as f:
            for line in f:
                d = json.loads(line)
                docs.append((d["id"], d["text"], d["source"]))
    return docs


def test_mix_hits_target_proportions_with_up_and_down_sampling(tmp_path: Path) -> None:
    make_source(tmp_path / "domain", 40, 50, "law")  # ~2,000 tokens: needs up-sampling
    make_source(tmp_path / "general", 400, 50, "web")  # ~20,000 tokens: needs down-sampling
    srcs = parse_sources([f"{tmp_path / 'domain'}=51%", f"{tmp_path / 'general'}=49%"])
    rep = mix(srcs, tmp_path / "out", total_tokens=10_000, seed=3, progress=False)
    by = {s["name"]: s for s in rep["sources"]}
    assert by["domain"]["sampling"] == "up-sampled" and by["domain"]["max_copies"] >= 2
    assert by["general"]["sampling"] == "down-sampled" and by["general"]["max_copies"] == 1
    assert abs(rep["realised_tokens"] - 10_000) <= 150
    assert abs(by["domain"]["realised_share"] - 0.51) < 0.01
    assert abs(by["general"]["realised_share"] - 0.49) < 0.01
    docs = read_mix(tmp_path / "out")
    assert len(docs) == rep["docs"]
    counted = {"domain": 0, "general": 0}
    for _, text, source in docs:
        counted[source] += len(text.split())
    assert counted == {"domain": by["domain"]["realised_tokens"], "general": by["general"]["realised_tokens"]}
    # the sources are interleaved: the first tenth already has about the target share
    head = docs[: len(docs) // 10]
    share = sum(len(t.split()) for _, t, s in head if s == "domain") / sum(len(t.split()) for _, t, _ in head)
    assert abs(share - 0.51) < 0.1
    # the output is curated format: lmkit's reader reads it back directly
    assert [(d.id, d.text, d.source) for d in iter_documents([tmp_path / "out"])] == docs
    assert "realised" in (tmp_path / "out" / "report.md").read_text()


def test_mix_is_deterministic_and_default_size_repeats_nothing(tmp_path: Path) -> None:
    make_source(tmp_path / "a", 30, 40, "alpha")
    make_source(tmp_path / "b", 60, 40, "beta")
    srcs = parse_sources([f"{tmp_path / 'a'}=1", f"{tmp_path / 'b'}=1"])
    r1 = mix(srcs, tmp_path / "o1", seed=7, progress=False)
    r2 = mix(srcs, tmp_path / "o2", seed=7, progress=False)
    assert read_mix(tmp_path / "o1") == read_mix(tmp_path / "o2")
    assert all(s["max_copies"] <= 1 for s in r1["sources"])
    by = {s["name"]: s for s in r1["sources"]}
    assert by["a"]["realised_tokens"] == by["a"]["available_tokens"]  # the smaller source is used whole
    assert abs(by["b"]["realised_share"] - 0.5) < 0.02
    mix(srcs, tmp_path / "o3", seed=8, progress=False)
    assert read_mix(tmp_path / "o3") != read_mix(tmp_path / "o1")
    assert r2["realised_tokens"] == r1["realised_tokens"]


def test_plan_mix_exact_copies() -> None:
    toks = [np.full(10, 100), np.full(10, 100)]
    plans = plan_mix([MixSource("a", 3, "a"), MixSource("b", 1, "b")], toks, total_tokens=4000, seed=0)
    assert plans[0].realised_tokens == 3000 and plans[0].copies.tolist() == [3] * 10
    assert plans[1].realised_tokens == 1000 and plans[1].copies.tolist() == [1] * 10


def test_mix_argument_errors(tmp_path: Path) -> None:
    make_source(tmp_path / "a", 3, 10, "x")
    with pytest.raises(LmkitError, match="PATH=WEIGHT"):
        parse_sources([str(tmp_path / "a")])
    with pytest.raises(LmkitError, match="not a number"):
        parse_sources([f"{tmp_path / 'a'}=lots"])
    with pytest.raises(LmkitError, match="no such"):
        parse_sources([f"{tmp_path / 'missing'}=1"])
    assert parse_count("2.5M") == 2_500_000 and parse_count("1000") == 1000
    with pytest.raises(LmkitError):
        parse_count("many")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "report.json").write_text("{}")
    with pytest.raises(LmkitError, match="not empty"):
        mix(parse_sources([f"{tmp_path / 'a'}=1"]), tmp_path / "out", progress=False)


def test_cli_mix(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from lmkit.cli import main

    make_source(tmp_path / "a", 20, 20, "alpha")
    make_source(tmp_path / "b", 20, 20, "beta")
    assert (
        main(
            [
                "mix",
                f"{tmp_path / 'a'}=0.7",
                f"{tmp_path / 'b'}=0.3",
                "--out",
                str(tmp_path / "m"),
                "--tokens",
                "1k",
                "--json",
            ]
        )
        == 0
    )
    rep = json.loads(capsys.readouterr().out)
    assert abs(rep["sources"][0]["realised_share"] - 0.7) < 0.05
