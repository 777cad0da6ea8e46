"""Run folders: a user's files are never written over, one run at a time, Ctrl-C keeps the work,
a kill at any moment (even mid-checkpoint) resumes onto the same loss curve with nothing left over."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lmkit.cli import main
from lmkit.config import load_run_config
from lmkit.models.checkpoint import is_checkpoint, list_checkpoints, load_model
from lmkit.train.loop import train
from lmkit.train.metrics import read_metrics
from lmkit.train.runfolder import LOCK, MARKER, claim_run_folder, release_run_folder

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "tiny.yaml"
# tiny.yaml made smaller still: each step takes milliseconds
SMALL = {
    "model.d_model": 32,
    "model.n_layers": 1,
    "model.n_heads": 2,
    "model.max_seq_len": 32,
    "train.batch_size": 4,
    "train.eval_every": 0,
    "train.eval_batches": 1,
}
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def corpus(folder: Path, n_docs: int = 80, seed: int = 0) -> Path:
    rng = random.Random(seed)
    words = "the cat dog sees likes a red ball river friend old man my sister farmer calls".split()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "corpus.txt"
    path.write_text(
        "\n".join(" ".join(rng.choice(words) for _ in range(40)) for _ in range(n_docs)) + "\n", encoding="utf-8"
    )
    return path


def small_cfg(data: Path, out: Path, **overrides: object):
    return load_run_config(TINY, {**SMALL, "data.paths": [str(data)], "out": str(out), **overrides})


def small_flags(**overrides: object) -> list[str]:
    return [a for k, v in {**SMALL, **overrides}.items() for a in (f"--{k}", str(v))]


def pretrain_args(data: Path, out: Path, *extra: str) -> list[str]:
    return [
        "pretrain",
        "--config",
        str(TINY),
        "--data",
        str(data),
        "--out",
        str(out),
        "--quiet",
        *small_flags(**{"train.max_steps": 3}),
        *extra,
    ]


def hidden(run: Path) -> list[str]:
    """Entries a finished run folder should not have: leftovers of interrupted writes."""
    return sorted(n for n in os.listdir(run) if n.startswith(".") and n not in (MARKER, LOCK))


# --------------------------------------------------------------------------- item 1: marker


@pytest.mark.slow
def test_pretrain_never_writes_into_a_folder_of_someone_elses_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = corpus(tmp_path / "data")
    mine = tmp_path / "mine"
    mine.mkdir()
    files = {"metrics.jsonl": '{"my":1}\n', "loss_curve.png": "x\n", "tokenizer.json": "{}\n"}
    for name, text in files.items():
        (mine / name).write_text(text, encoding="utf-8")
    assert main(pretrain_args(data, mine)) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(mine) in err and "not an lmkit run folder" in err
    assert "loss_curve.png" in err  # an example of what it would have replaced
    assert {p.name: p.read_text(encoding="utf-8") for p in mine.iterdir()} == files  # nothing touched


@pytest.mark.slow
def test_out_that_is_a_file_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = corpus(tmp_path / "data")
    assert main(pretrain_args(data, data)) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"lmkit: error: {data}: is a file, not a folder; --out (config key out) must name a run folder"
    assert main(pretrain_args(data, data / "run")) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err and f"{data / 'run'}: cannot create the run folder" in err


@pytest.mark.slow
def test_lmkit_marks_its_run_folders_and_adopts_unmarked_old_ones(tmp_path: Path) -> None:
    data = corpus(tmp_path / "data")
    empty = tmp_path / "empty"
    empty.mkdir()  # an empty folder is fine
    train(small_cfg(data, empty, **{"train.max_steps": 2}), show_progress=False)
    marker = json.loads((empty / MARKER).read_text(encoding="utf-8"))
    assert marker["format"] == "lmkit-run/1" and marker["lmkit_version"] and marker["created"]
    # a run folder an lmkit before markers wrote: checkpoints, no marker; resuming adopts it
    (empty / MARKER).unlink()
    (empty / LOCK).unlink()
    (empty / "notes.txt").write_text("my notes\n", encoding="utf-8")
    s = train(small_cfg(data, empty, **{"train.max_steps": 4}), resume=True, show_progress=False)
    assert s["steps"] == 4 and (empty / MARKER).is_file()
    assert (empty / "notes.txt").read_text(encoding="utf-8") == "my notes\n"


# --------------------------------------------------------------------------- item 2: lock


HOLD = """
import sys, time
from lmkit.train.runfolder import claim_run_folder
claim_run_folder(sys.argv[1])
print("held", flush=True)
time.sleep(60)
"""


@pytest.mark.slow
def test_a_second_run_into_a_locked_folder_names_the_holder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = corpus(tmp_path / "data")
    run = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(run)], stdout=subprocess.PIPE, text=True, env=ENV)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        assert main(pretrain_args(data, run)) == 2
        err = capsys.readouterr().err.strip()
        assert err == (
            f"lmkit: error: {run}: another lmkit run (PID {holder.pid}) is writing to this run folder; "
            "wait for it to finish or stop it, or choose another --out"
        )
        assert not list_checkpoints(run) and not (run / "metrics.jsonl").exists()
    finally:
        holder.kill()  # SIGKILL: the lock goes with the process, nothing stale is left
        holder.wait()
    assert main(pretrain_args(data, run)) == 0
    assert [c.name for c in list_checkpoints(run)] == ["ckpt-0000003"]


CLAIM = "import sys\nfrom lmkit.train.runfolder import claim_run_folder\nclaim_run_folder(sys.argv[1])\n"


@pytest.mark.slow
def test_the_lock_is_held_for_the_run_and_let_go_after(tmp_path: Path) -> None:
    run = tmp_path / "run"
    claim_run_folder(run)
    try:
        out = subprocess.run([sys.executable, "-c", CLAIM, str(run)], capture_output=True, text=True, env=ENV)
        assert out.returncode != 0 and f"PID {os.getpid()}" in out.stderr
    finally:
        release_run_folder(run)
    out = subprocess.run([sys.executable, "-c", CLAIM, str(run)], capture_output=True, text=True, env=ENV)
    assert out.returncode == 0, out.stderr


# --------------------------------------------------------------------------- item 8


@pytest.mark.slow
def test_torn_metrics_line_orphans_and_umask_modes(tmp_path: Path) -> None:
    data = corpus(tmp_path / "data")
    run = tmp_path / "run"
    previous = os.umask(0o027)
    try:
        train(
            small_cfg(data, run, **{"train.max_steps": 4, "train.ckpt_every": 2, "train.keep_checkpoints": 5}),
            show_progress=False,
        )
        # what a SIGKILL leaves: a torn metrics line, a half-written checkpoint, a tokenizer temp
        # file, and a checkpoint moved aside between the two renames of its replacement
        with open(run / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write('{"step": 5, "tokens": 64')
        (run / ".ckpt-0000006.tmp-k1ll3d").mkdir()
        (run / ".ckpt-0000006.tmp-k1ll3d" / "model.safetensors").write_bytes(b"\0" * 10)
        (run / ".tokenizer.json.tmp-4242").write_text("{", encoding="utf-8")
        os.replace(run / "ckpt-0000004", run / ".ckpt-0000004.old-4242")
        # and what a kill during pruning leaves: a checkpoint being deleted, and (older lmkit) a
        # half-deleted one that no longer looks like a checkpoint
        (run / ".ckpt-0000000.del-4242").mkdir()
        (run / "ckpt-0000001").mkdir()
        (run / "ckpt-0000001" / "model.safetensors").write_bytes(b"\0" * 10)
        s = train(
            small_cfg(data, run, **{"train.max_steps": 6, "train.ckpt_every": 2, "train.keep_checkpoints": 5}),
            resume=True,
            show_progress=False,
        )
        assert s["steps"] == 6
        assert hidden(run) == []
        assert [c.name for c in list_checkpoints(run)] == ["ckpt-0000002", "ckpt-0000004", "ckpt-0000006"]
        steps = [r["step"] for r in read_metrics(run) if "loss" in r]
        assert steps == [1, 2, 3, 4, 5, 6]  # resumed from the restored ckpt-0000004, torn line dropped
        for path in [run, *run.rglob("*")]:
            mode = stat.S_IMODE(path.stat().st_mode)
            assert mode == (0o750 if path.is_dir() else 0o640), (path, oct(mode))
    finally:
        os.umask(previous)


# --------------------------------------------------------------------------- item 6: signals


def _wait_for_step(proc: subprocess.Popen, run: Path, step: int, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, "the run ended before it could be signalled"
        if any(r.get("step", 0) >= step for r in read_metrics(run)):
            return
        time.sleep(0.01)
    raise AssertionError(f"step {step} not reached")


@pytest.mark.slow
def test_sigint_and_sigterm_save_a_checkpoint_and_exit_130(tmp_path: Path) -> None:
    data = corpus(tmp_path / "data")
    run = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "lmkit.cli",
        "pretrain",
        "--config",
        str(TINY),
        "--data",
        str(data),
        "--out",
        str(run),
        "--quiet",
        *small_flags(**{"train.max_steps": 60, "train.ckpt_every": 30}),
    ]
    stopped_at = 0
    for sig, resume in ((signal.SIGINT, []), (signal.SIGTERM, ["--resume"])):
        proc = subprocess.Popen(cmd + resume, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        _wait_for_step(proc, run, stopped_at + 3)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 130, err
        newest = list_checkpoints(run)[-1]
        step = int(newest.name.removeprefix("ckpt-"))
        assert stopped_at + 3 <= step < 30  # the step it was on, not the last ckpt_every one
        assert err.strip() == (
            f"lmkit: interrupted by {sig.name} after step {step}; saved checkpoint {newest}; "
            f"continue with: lmkit pretrain --out {run} --resume"
        )
        stopped_at = step
    done = subprocess.run(cmd + ["--resume"], env=ENV, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert [r["step"] for r in read_metrics(run) if "loss" in r] == list(range(1, 61))


# --------------------------------------------------------------------------- the chaos test

CHAOS = {
    "train.max_steps": 36,
    "train.ckpt_every": 3,
    "train.keep_checkpoints": 2,
    "train.log_every": 1,
    "train.warmup_steps": 5,
}
TMP_CKPT = re.compile(r"^\.ckpt-(\d+)\.tmp-")


def _packed(tmp_path: Path) -> Path:
    """Shards packed once, shared by the reference run and the killed one (no packing per start)."""
    from lmkit.data.prepare import prepare

    cfg = small_cfg(corpus(tmp_path / "data", n_docs=120), tmp_path / "prep")
    prepare(cfg.data, tmp_path / "prep", cfg.model.vocab_size, show_progress=False)
    return tmp_path / "prep" / "shards"


def _kill_when(proc: subprocess.Popen, run: Path, target: int, during_save: bool) -> bool:
    """SIGKILL ``proc`` once it logged step ``target`` (or started writing a checkpoint of a step
    >= ``target``); returns whether a half-written checkpoint folder was left behind."""
    rng = random.Random(target)
    deadline = time.time() + 120
    while time.time() < deadline:
        assert proc.poll() is None, f"the run ended before the kill at step {target}"
        if during_save:
            if any((m := TMP_CKPT.match(n)) and int(m[1]) >= target for n in os.listdir(run)):
                break
            time.sleep(0.0005)
        else:
            if any(r.get("step", 0) >= target for r in read_metrics(run)):
                time.sleep(rng.uniform(0, 0.02))
                break
            time.sleep(0.005)
    else:
        raise AssertionError(f"no kill point at step {target}")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return any(TMP_CKPT.match(n) for n in os.listdir(run))


@pytest.mark.slow
def test_chaos_sigkill_at_random_moments_resumes_onto_the_same_curve(tmp_path: Path) -> None:
    shards = _packed(tmp_path)
    common = [
        sys.executable,
        "-m",
        "lmkit.cli",
        "pretrain",
        "--config",
        str(TINY),
        "--data",
        str(shards),
        "--quiet",
        *small_flags(**CHAOS),
    ]
    ref = tmp_path / "ref"
    subprocess.run(common + ["--out", str(ref)], env=ENV, check=True, capture_output=True)

    rng = random.Random(10)
    run = tmp_path / "killed"
    target, left_half_written = 3, []
    for i in range(5):  # the last kill lands by step 28, so the final resume still has steps to run
        target += rng.randint(4, 5)  # each kill lands past the checkpoint the last one resumed from
        during_save = i % 2 == 1 or rng.random() < 0.3
        proc = subprocess.Popen(
            common + ["--out", str(run)] + (["--resume"] if i else []),
            env=ENV,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        left_half_written.append(_kill_when(proc, run, target, during_save))
    done = subprocess.run(common + ["--out", str(run), "--resume"], env=ENV, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr

    a = [(r["step"], r["loss"]) for r in read_metrics(ref) if "loss" in r]
    b = [(r["step"], r["loss"]) for r in read_metrics(run) if "loss" in r]
    assert [s for s, _ in a] == list(range(1, 37))
    assert a == b  # fp32 on CPU, one thread: bit-identical
    assert any(left_half_written), "no kill struck during a checkpoint write"
    assert hidden(run) == []  # no orphaned temporary or moved-aside folder
    ckpts = list_checkpoints(run)
    assert [c.name for c in ckpts] == ["ckpt-0000033", "ckpt-0000036"]
    assert all(is_checkpoint(c) for c in run.glob("ckpt-*"))
    for c in ckpts:
        load_model(c)  # complete and loadable
