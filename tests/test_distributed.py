"""Scale-out: the same command under torchrun (2 CPU processes, gloo) with DDP and with FSDP; a resume
on the checkpoint's number of processes continues bit-exactly, one on another number is refused."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from lmkit.cli import main
from lmkit.models.checkpoint import list_checkpoints
from lmkit.train.metrics import read_metrics
from test_train import TINY, learnable_corpus

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _torchrun(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*TORCHRUN, "-m", "lmkit.cli", "pretrain", *args, "--json", "--quiet"],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _run(args: list[str]) -> dict[str, Any]:
    r = _torchrun(args)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout[r.stdout.index("{") :])


def _losses(run: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_metrics(run) if "loss" in r}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Two-process runs of the tiny config, 16 steps: DDP; FSDP uninterrupted; FSDP stopped at step 8
    (a copy of that folder kept as "fsdp_at_8") and resumed to 16 on 2 processes."""
    root = tmp_path_factory.mktemp("dist")
    data = learnable_corpus(root / "data", n_docs=150)
    common = [
        "--config",
        str(TINY),
        "--data",
        str(data),
        "--train.schedule",
        "constant",
        "--train.eval_every",
        "0",
        "--train.ckpt_every",
        "0",
        "--train.tensorboard",
        "false",
        "--train.precision",
        "fp32",
    ]  # DDP and FSDP agree to 2e-3 in fp32 (bf16 rounds them apart)
    out: dict[str, Any] = {"root": root, "data": data}
    out["ddp"] = _run([*common, "--out", str(root / "ddp"), "--train.max_steps", "16", "--train.distributed", "ddp"])
    out["fsdp"] = _run([*common, "--out", str(root / "fsdp"), "--train.max_steps", "16", "--train.distributed", "fsdp"])
    # stop at 8, resume to 16 (sharded optimizer state gathered, saved and scattered back)
    _run([*common, "--out", str(root / "cut"), "--train.max_steps", "8", "--train.distributed", "fsdp"])
    shutil.copytree(root / "cut", root / "fsdp_at_8")
    out["resumed"] = _run(
        [*common, "--out", str(root / "cut"), "--train.max_steps", "16", "--train.distributed", "fsdp", "--resume"]
    )
    return out


@pytest.mark.slow
def test_ddp_and_fsdp_train_alike(runs: dict[str, Any]) -> None:
    ddp, fsdp = runs["ddp"], runs["fsdp"]
    assert ddp["steps"] == fsdp["steps"] == 16
    assert fsdp["eval"]["loss"] == pytest.approx(ddp["eval"]["loss"], abs=2e-3)
    assert ddp["eval"]["loss"] < 4.0  # it learned (uniform over 512 tokens would be 6.2)


@pytest.mark.slow
def test_fsdp_resumed_on_the_same_world_size_continues_bit_exactly(runs: dict[str, Any]) -> None:
    root = runs["root"]
    whole, resumed = _losses(root / "fsdp"), _losses(root / "cut")
    assert sorted(whole) == sorted(resumed) == list(range(1, 17))
    assert resumed == whole  # every step's loss, bit for bit, before and after the cut at 8
    assert runs["resumed"]["eval"]["loss"] == runs["fsdp"]["eval"]["loss"]


@pytest.mark.slow
def test_resume_on_fewer_processes_is_refused_naming_both_sizes(
    runs: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    shutil.copytree(runs["root"] / "fsdp_at_8", run)

    def files() -> list[tuple[Path, int]]:  # all but the run folder's lock, which every claim rewrites
        return sorted((p.relative_to(run), p.stat().st_mtime_ns) for p in run.rglob("*") if p.name != ".lmkit-lock")

    before = files()
    assert main(["pretrain", "--out", str(run), "--resume", "--max-steps", "16", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("lmkit: error: ")
    assert "was trained on 2 processes but this resume runs on 1 process" in err
    assert "torchrun --nproc_per_node 2" in err
    assert files() == before  # untouched
    assert [c.name for c in list_checkpoints(run)] == ["ckpt-0000008"]


@pytest.mark.slow
def test_resume_on_more_processes_is_refused_under_torchrun(runs: dict[str, Any], tmp_path: Path) -> None:
    run = tmp_path / "one"
    assert (
        main(
            [
                "pretrain",
                "--config",
                str(TINY),
                "--data",
                str(runs["data"]),
                "--out",
                str(run),
                "--quiet",
                "--train.max_steps",
                "4",
                "--train.eval_every",
                "0",
                "--train.ckpt_every",
                "0",
                "--train.tensorboard",
                "false",
                "--train.precision",
                "fp32",
            ]
        )
        == 0
    )
    r = _torchrun(["--out", str(run), "--resume", "--max-steps", "8"])
    assert r.returncode != 0
    assert "lmkit: error: " in r.stderr and "was trained on 1 process but this resume runs on 2 processes" in r.stderr
    assert "resume it on 1 process (without torchrun)" in r.stderr
    assert [c.name for c in list_checkpoints(run)] == ["ckpt-0000004"]
