"""Restarts without a person: under ``torchrun --max-restarts``, a run started with ``--resume auto``
whose worker is killed is restarted by the launcher and finishes on the uninterrupted run's curve
(bit for bit: the same number of processes); a worker that hangs makes the others fail after
``--collective-timeout`` with one line naming the rank; a half-written checkpoint is never loaded."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lmkit.cli import main
from lmkit.models.checkpoint import list_checkpoints
from lmkit.train.metrics import read_metrics
from test_train import TINY, learnable_corpus

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs /proc")]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _common(data: Path, out: Path, steps: int) -> list[str]:
    return [
        "--config",
        str(TINY),
        "--data",
        str(data),
        "--out",
        str(out),
        "--train.max_steps",
        str(steps),
        "--train.schedule",
        "constant",
        "--train.eval_every",
        "0",
        "--train.ckpt_every",
        "5",
        "--train.keep_checkpoints",
        "0",
        "--train.tensorboard",
        "false",
        "--train.precision",
        "fp32",
        "--train.distributed",
        "fsdp",
    ]


def _losses(run: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_metrics(run) if "loss" in r}


def _worker(launcher: int, rank: int) -> int:
    """The PID of torchrun ``launcher``'s worker process of ``rank``."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            environ = (entry / "environ").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if ppid == launcher and f"RANK={rank}".encode() in environ:
            return int(entry.name)
    raise AssertionError(f"no worker of rank {rank} under PID {launcher}")


def _wait_for(what: Path, proc: subprocess.Popen[str], timeout: float = 180) -> None:
    end = time.monotonic() + timeout
    while not what.exists():
        assert proc.poll() is None, f"the run ended before {what.name} appeared"
        assert time.monotonic() < end, f"{what.name} did not appear in {timeout} s"
        time.sleep(0.02)


def _torchrun(args: list[str], log: Path, restarts: int) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    cmd += ["--max-restarts", str(restarts), "--monitor-interval", "0.2", "-m", "lmkit.cli", "pretrain", *args]
    return subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=log.open("w"), text=True)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return learnable_corpus(tmp_path_factory.mktemp("restart") / "data", n_docs=150)


def test_killed_workers_are_restarted_and_the_run_ends_on_the_uninterrupted_curve(data: Path, tmp_path: Path) -> None:
    """Rank 1 killed while the ranks write checkpoint 10, then rank 0 killed mid-run after checkpoint
    20: torchrun restarts the workers twice and the run ends on its own, on the uninterrupted curve."""
    steps = 30
    whole = tmp_path / "whole"  # the uninterrupted run, on the same 2 processes
    assert _torchrun([*_common(data, whole, steps), "--quiet"], tmp_path / "whole.log", restarts=0).wait(300) == 0
    run, log = tmp_path / "run", tmp_path / "torchrun.log"
    proc = _torchrun([*_common(data, run, steps), "--resume", "auto", "--quiet"], log, restarts=2)
    try:
        _wait_for(run / "ckpt-0000005", proc)
        rank1 = _worker(proc.pid, 1)
        while not any(n.startswith(".ckpt-0000010.tmp-") for n in os.listdir(run)):
            assert not (run / "ckpt-0000010").exists(), "checkpoint 10 was written before the kill could land"
            time.sleep(0.0005)
        os.kill(rank1, signal.SIGKILL)  # mid-checkpoint: its shards half written or not sent
        _wait_for(run / "ckpt-0000020", proc)  # restarted from checkpoint 5
        os.kill(_worker(proc.pid, 0), signal.SIGKILL)  # mid-run
        assert proc.wait(timeout=300) == 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert log.read_text().count("exitcode: -9") == 2  # two workers died; the launcher restarted the job twice
    restarted, reference = _losses(run), _losses(whole)
    assert sorted(restarted) == list(range(1, steps + 1))  # every step once: the log cut back to the checkpoint
    assert restarted == reference  # bit for bit: resumed twice on the same number of processes
    assert [c.name for c in list_checkpoints(run)][-1] == f"ckpt-{steps:07d}"
    assert not [n for n in os.listdir(run) if n.startswith(".ckpt-")]  # the half-written one removed
    meta = json.loads((run / f"ckpt-{steps:07d}" / "meta.json").read_text())
    assert meta["state_format"] == "dcp" and meta["step"] == steps


def test_a_hung_worker_ends_the_run_after_the_collective_timeout_naming_the_rank(data: Path, tmp_path: Path) -> None:
    run, log = tmp_path / "run", tmp_path / "torchrun.log"
    proc = _torchrun([*_common(data, run, 100_000), "--collective-timeout", "4", "--quiet"], log, restarts=0)
    stopped = 0
    try:
        _wait_for(run / "ckpt-0000005", proc)
        stopped = _worker(proc.pid, 1)
        os.kill(stopped, signal.SIGSTOP)  # rank 1 hangs: rank 0 waits in its next collective
        started = time.monotonic()
        while "lmkit: error:" not in log.read_text() and time.monotonic() - started < 120:
            time.sleep(0.1)
        waited = time.monotonic() - started
    finally:
        if stopped:
            os.kill(stopped, signal.SIGKILL)
        proc.wait(timeout=120)
    errors = [line for line in log.read_text().splitlines() if "lmkit: error:" in line]
    assert errors, log.read_text()[-3000:]
    line = errors[0][errors[0].index("lmkit: error:") :]
    assert line.startswith("lmkit: error: rank 0 of 2: a collective waited 4 s for the other processes and timed out")
    assert 3 < waited < 60
    assert proc.returncode != 0


def test_a_half_written_checkpoint_is_never_loaded(tmp_path: Path) -> None:
    """What a kill in the middle of a sharded save leaves (a temporary sibling with some shard files)
    is removed, and --resume auto continues from the newest complete checkpoint."""
    data = learnable_corpus(tmp_path / "data", n_docs=150)
    run = tmp_path / "run"
    assert main(["pretrain", *_common(data, run, 10), "--quiet"]) == 0
    ckpt = run / "ckpt-0000010"
    half = run / ".ckpt-0000015.tmp-abc123"  # a save killed after some ranks wrote their shards
    (half / "sharded").mkdir(parents=True)
    (half / "sharded" / "__0_0.distcp").write_bytes(b"\0" * 64)
    assert main(["pretrain", *_common(data, run, 12), "--resume", "auto", "--quiet"]) == 0
    assert not half.exists()
    assert [c.name for c in list_checkpoints(run)] == ["ckpt-0000005", ckpt.name, "ckpt-0000012"]
    shutil.rmtree(run / "ckpt-0000012")
