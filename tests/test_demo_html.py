"""The demo's default corpus takes the machine's HTML documentation pages through lmkit's HTML reader:
their main text, not their markup, and no more than its share of the corpus."""

from __future__ import annotations

import glob
import gzip
import json
from pathlib import Path

import pytest

import lmkit.demo as demo


def test_demo_gathers_html_documentation_as_text(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if not any(
        p.endswith(".html") for p in glob.glob("/usr/share/doc/*/*.html") + glob.glob("/usr/share/doc/*/*/*.html")
    ):
        pytest.skip("no HTML documentation under /usr/share/doc on this machine")
    monkeypatch.setattr(demo, "SOURCES", {"html-docs": demo._html_docs})
    monkeypatch.setattr(demo, "MIN_CORPUS_BYTES", 1)
    found = demo.gather_default_corpus(tmp_path / "raw", max_bytes=300_000)
    info = found["html-docs"]
    with gzip.open(info["file"], "rt", encoding="utf-8") as f:
        docs = [json.loads(line) for line in f]
    assert len(docs) == info["documents"] >= 1
    assert all(d["id"].endswith((".html", ".htm")) and d["source"] == "html-docs" for d in docs)
    assert not any("</p>" in d["text"] or "<div" in d["text"] for d in docs)  # the main text, not the markup
    cap = 300_000 * demo.SOURCE_SHARE["html-docs"]
    assert info["bytes"] - len(docs[-1]["text"].encode("utf-8")) < cap  # it stopped at its share
