"""Progress bars (``lmkit.progress``): a live bar on a terminal, whole lines, few of them, when stderr is
piped or written to a file."""

from __future__ import annotations

import io
import time

import pytest

from lmkit.progress import EVERY_SECONDS, LineProgress, progress


def test_line_progress_writes_few_whole_lines() -> None:
    buf = io.StringIO()
    bar = progress(total=1000, desc="train", unit="step", file=buf)
    assert isinstance(bar, LineProgress)  # a StringIO is not a terminal
    for i in range(1000):
        bar.update(1)
        bar.set_postfix(loss=f"{1 / (i + 1):.3f}")
    bar.close()
    lines = buf.getvalue().splitlines()
    assert "\r" not in buf.getvalue() and 20 <= len(lines) <= 22
    assert lines[0].startswith("train:   0% 0/1,000 [") and lines[-1].startswith("train: 100% 1,000/1,000 [")
    assert "loss=0.001" in lines[-1]
    quiet = io.StringIO()
    for _ in progress(range(50), desc="x", disable=True, file=quiet):
        pass
    assert quiet.getvalue() == ""
    seen = io.StringIO()
    assert sum(progress(range(10), desc="docs", file=seen)) == 45
    assert seen.getvalue().splitlines()[-1].startswith("docs: 100% 10/10")


def test_line_progress_without_total_prints_by_time(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [0.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    buf = io.StringIO()
    bar = progress(desc="packing", unit=" docs", file=buf, unit_scale=True)
    for _ in range(100):
        clock[0] += EVERY_SECONDS / 10
        bar.update(1000)
    bar.close()
    lines = buf.getvalue().splitlines()
    assert 10 <= len(lines) <= 12 and lines[-1].startswith("packing: 100k docs [")
