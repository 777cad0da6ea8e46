"""The built wheel is complete: installed alone (no source tree), it trains from a packaged recipe
named bare (``--config tiny``), which needs the YAML recipes inside the package."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


def test_wheel_installs_alone_and_trains_from_a_packaged_recipe(tmp_path: Path) -> None:
    wheels, target, cwd = tmp_path / "wheels", tmp_path / "site", tmp_path / "cwd"
    cwd.mkdir()
    pip = [sys.executable, "-m", "pip", "-q", "--disable-pip-version-check"]
    # build from a clean copy of the sources, so no stale build/ folder of the checkout leaks into the wheel
    src = tmp_path / "src-copy"
    shutil.copytree(REPO / "src", src / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (REPO / name).is_file():
            shutil.copy(REPO / name, src / name)
    subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(src)],
        check=True,
        cwd=tmp_path,
        timeout=300,
    )
    (wheel,) = wheels.glob("lmkit-*.whl")
    subprocess.run([*pip, "install", "--no-deps", "--target", str(target), str(wheel)], check=True, timeout=300)
    assert list((target / "lmkit" / "configs").glob("*.yaml")), "the wheel ships no recipes"

    (cwd / "corpus.txt").write_text("the cat sat on the mat and the dog sat on the log.\n" * 300, encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(target)}
    where = subprocess.run(
        [sys.executable, "-c", "import lmkit; print(lmkit.__file__)"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert Path(where.stdout.strip()).resolve().is_relative_to(target.resolve()), where.stdout
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "lmkit.cli",
            "pretrain",
            "--config",
            "tiny",
            "--max-steps",
            "2",
            "--data",
            "corpus.txt",
            "--out",
            str(tmp_path / "run"),
        ],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert (tmp_path / "run" / "ckpt-0000002").is_dir()
