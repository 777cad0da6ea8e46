"""Scale-out under torchrun (CPU processes, gloo): sharded checkpoints (each rank writes its own
slices, atomically, checksummed), a run saved on 4 processes resumed on 2 and on 1 (and a
one-process checkpoint on 2) with the same global batch and the 4-process loss curve, DDP and FSDP
training alike, the global batch kept unless --new-batch, an older per-rank checkpoint held to its
world size, and the sharded checkpoint read without a process group (load_model, export, card)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from lmkit.cli import main
from lmkit.errors import LmkitError
from lmkit.models.checkpoint import CHECKSUMS_KEY, list_checkpoints, load_model, load_state, load_train_state
from lmkit.train.metrics import read_metrics
from test_train import TINY, learnable_corpus

pytestmark = pytest.mark.slow
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
STEPS, CUT = 24, 4  # the resumed runs train the 20 steps after the cut
# A model whose whole training state (weights + two Adam moments, ~40 MB) is four shards' worth.
SHAPE = ["--model.d_model", "256", "--model.n_layers", "4", "--train.micro_batch_size", "2"]


def _pretrain(nproc: int, args: list[str]) -> dict[str, Any]:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--standalone"]
    cmd = [*(launcher if nproc > 1 else [sys.executable]), "-m", "lmkit.cli", "pretrain", *args, "--json", "--quiet"]
    r = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout[r.stdout.index("{") :])


def _losses(run: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_metrics(run) if "loss" in r}


def _resume_copy(src: Path, dst: Path, ckpt: str) -> Path:
    """A run folder holding ``src``'s data and its checkpoint ``ckpt`` alone (the run cut there)."""
    dst.mkdir(parents=True)
    for name in (".lmkit-run", "shards", "tokenizer.json", "metrics.jsonl", ckpt):
        (shutil.copytree if (src / name).is_dir() else shutil.copy2)(src / name, dst / name)
    return dst


def _error(capsys: pytest.CaptureFixture[str]) -> str:
    err = [ln[ln.index("lmkit: error:") :] for ln in capsys.readouterr().err.splitlines() if "lmkit: error:" in ln]
    assert len(err) == 1, err
    return err[0]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One 4-process FSDP run (checkpoint every 4 steps), the same cut at step 4 and resumed on 2
    processes and on 1, and a 2-process DDP run of the same recipe."""
    root = tmp_path_factory.mktemp("dist")
    data = learnable_corpus(root / "data", n_docs=150)
    common = ["--config", str(TINY), "--data", str(data), *SHAPE, "--train.max_steps", str(STEPS)]
    common += ["--train.schedule", "constant", "--train.eval_every", "0", "--train.tensorboard", "false"]
    common += ["--train.keep_checkpoints", "0", "--train.precision", "fp32"]  # fp32: the runs agree to 1e-6
    out: dict[str, Any] = {"root": root, "data": data, "common": common}
    fsdp = [*common, "--train.distributed", "fsdp", "--train.ckpt_every", str(CUT)]
    out["fsdp4"] = _pretrain(4, [*fsdp, "--out", str(root / "fsdp4")])
    for n in (2, 1):
        run = _resume_copy(root / "fsdp4", root / f"on{n}", f"ckpt-{CUT:07d}")
        out[f"on{n}"] = _pretrain(n, [*fsdp, "--out", str(run), "--resume"])
    out["ddp2"] = _pretrain(
        2, [*common, "--train.distributed", "ddp", "--train.ckpt_every", "0", "--out", str(root / "ddp2")]
    )
    return out


def test_each_rank_writes_its_own_shards_into_a_checksummed_checkpoint(runs: dict[str, Any]) -> None:
    ckpt = runs["root"] / "fsdp4" / f"ckpt-{CUT:07d}"
    meta = json.loads((ckpt / "meta.json").read_text())
    assert meta["state_format"] == "dcp" and meta["data_order"] == "global"
    assert meta["batch"] == {"global": 8, "micro": 2, "accumulation": 1, "processes": 4}
    assert not (ckpt / "model.safetensors").exists()  # nothing gathered into one file
    shards = sorted(p.name for p in (ckpt / "sharded").iterdir())
    assert shards == [".metadata", "__0_0.distcp", "__1_0.distcp", "__2_0.distcp", "__3_0.distcp"]
    assert {f"sharded/{n}" for n in shards} <= set(meta[CHECKSUMS_KEY])  # every shard file checked on load
    assert load_train_state(ckpt)["optimizer"] == "sharded"  # the optimizer state lies in the shards
    sizes = meta["checkpoint_write"]["bytes_per_rank"]
    assert max(sizes) < 0.3 * sum(sizes)  # each rank wrote about a quarter


def test_the_main_rank_saves_without_holding_the_whole_state(runs: dict[str, Any]) -> None:
    write = json.loads((runs["root"] / "fsdp4" / f"ckpt-{CUT:07d}" / "meta.json").read_text())["checkpoint_write"]
    whole = sum(write["bytes_per_rank"])  # weights and Adam moments of all ranks: ~40 MB
    assert whole > 30e6
    grew = write["main_rss_peak_bytes"] - write["main_rss_before_bytes"]
    assert grew < 0.5 * whole / 4 + 4e6, (grew, whole)  # a gather onto rank 0 would add the whole 40 MB


def test_a_run_saved_on_4_processes_resumes_on_2_and_1_on_the_same_curve(runs: dict[str, Any]) -> None:
    root = runs["root"]
    whole = _losses(root / "fsdp4")
    assert sorted(whole) == list(range(1, STEPS + 1))
    for n, accumulation in ((2, 2), (1, 4)):
        resumed = _losses(root / f"on{n}")
        assert sorted(resumed) == list(range(1, STEPS + 1))
        assert all(resumed[s] == whole[s] for s in range(1, CUT + 1))  # copied from before the cut
        assert max(abs(resumed[s] - whole[s]) for s in range(CUT + 1, STEPS + 1)) < 2e-3
        assert runs[f"on{n}"]["eval"]["loss"] == pytest.approx(runs["fsdp4"]["eval"]["loss"], abs=2e-3)
        meta = json.loads((root / f"on{n}" / f"ckpt-{STEPS:07d}" / "meta.json").read_text())
        assert meta["batch"] == {"global": 8, "micro": 2, "accumulation": accumulation, "processes": n}
        assert meta["state_format"] == ("dcp" if n > 1 else "safetensors")  # one process: the one-file format
        assert meta["tokens"] == STEPS * 8 * 64


def test_ddp_and_fsdp_train_alike(runs: dict[str, Any]) -> None:
    ddp, fsdp = _losses(runs["root"] / "ddp2"), _losses(runs["root"] / "fsdp4")
    assert max(abs(ddp[s] - fsdp[s]) for s in fsdp) < 2e-3  # same windows per step on 2 and 4 processes
    assert runs["ddp2"]["eval"]["loss"] < 4.0  # it learned (uniform over 512 tokens would be 6.2)


def test_a_sharded_checkpoint_is_read_without_a_process_group(runs: dict[str, Any], tmp_path: Path) -> None:
    import transformers

    sharded, whole = runs["root"] / "fsdp4" / f"ckpt-{STEPS:07d}", runs["root"] / "on1" / f"ckpt-{STEPS:07d}"
    a, b = load_state(sharded), load_state(whole)  # consolidated from the shards / the one-file format
    assert sorted(a) == sorted(b)
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-3  # the same training, split otherwise
    model = load_model(sharded)
    assert main(["export", str(sharded), "--out", str(tmp_path / "hf")]) == 0
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "hf"), local_files_only=True).eval()
    x = torch.randint(5, hf.config.vocab_size, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours, theirs = model(x), hf(input_ids=x).logits
    assert float((ours - theirs).abs().max()) < 1e-4 * max(1.0, float(ours.abs().max()))
    assert main(["card", str(sharded), "--out", str(tmp_path / "README.md")]) == 0
    assert "parameters" in (tmp_path / "README.md").read_text()


def test_a_changed_shard_is_refused(runs: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = _resume_copy(runs["root"] / "fsdp4", tmp_path / "run", f"ckpt-{CUT:07d}")
    shard = run / f"ckpt-{CUT:07d}" / "sharded" / "__2_0.distcp"
    data = bytearray(shard.read_bytes())
    data[-10] ^= 1
    shard.write_bytes(bytes(data))
    with pytest.raises(LmkitError, match="__2_0.distcp: checksum mismatch"):
        load_model(run)
    assert main(["pretrain", "--out", str(run), "--resume", "--quiet"]) == 2
    assert "__2_0.distcp: checksum mismatch" in _error(capsys)


def test_another_global_batch_is_refused_unless_new_batch(
    runs: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = _resume_copy(runs["root"] / "fsdp4", tmp_path / "run", f"ckpt-{CUT:07d}")
    args = ["pretrain", "--out", str(run), "--resume", "--max-steps", str(CUT + 2), "--train.batch_size", "16"]
    assert main([*args, "--quiet"]) == 2
    err = _error(capsys)
    assert "train.batch_size (the global batch: micro-batch x accumulation x processes) is 8" in err
    assert "but 16 was given" in err and "--new-batch" in err
    assert [c.name for c in list_checkpoints(run)] == [f"ckpt-{CUT:07d}"]  # untouched
    assert main([*args, "--new-batch", "--quiet"]) == 0
    meta = json.loads((run / f"ckpt-{CUT + 2:07d}" / "meta.json").read_text())
    assert meta["batch_changes"] == [{"step": CUT, "from": 8, "to": 16}]
    assert meta["batch"] == {"global": 16, "micro": 2, "accumulation": 8, "processes": 1}
    assert meta["tokens"] == (CUT * 8 + 2 * 16) * 64


def test_a_per_rank_order_checkpoint_resumes_only_on_its_world_size(
    runs: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A checkpoint of an lmkit before the process-independent data order (no data_order in meta.json)."""
    run = _resume_copy(runs["root"] / "fsdp4", tmp_path / "run", f"ckpt-{CUT:07d}")
    meta_path = run / f"ckpt-{CUT:07d}" / "meta.json"
    meta = json.loads(meta_path.read_text())
    del meta["data_order"]
    meta_path.write_text(json.dumps(meta))
    assert main(["pretrain", "--out", str(run), "--resume", "--max-steps", str(CUT + 2), "--quiet"]) == 2
    err = _error(capsys)
    assert "was trained on 4 processes but this resume runs on 1 process" in err
    assert "torchrun --nproc_per_node 4" in err
    assert [c.name for c in list_checkpoints(run)] == [f"ckpt-{CUT:07d}"]


def test_ddp_with_muon_keeps_its_optimizer_whole_and_resumes_on_one_process(
    runs: dict[str, Any], tmp_path: Path
) -> None:
    """Muon + AdamW (two optimizers, DDP only) is saved beside the shards, whole, as every rank holds it."""
    args = [
        "--config",
        str(TINY),
        "--data",
        str(runs["data"]),
        "--train.schedule",
        "constant",
        "--train.eval_every",
        "0",
    ]
    args += ["--train.precision", "fp32", "--train.distributed", "ddp", "--train.optimizer", "muon"]
    args += [
        "--train.keep_checkpoints",
        "0",
        "--train.ckpt_every",
        "4",
        "--max-steps",
        "8",
    ]  # tiny: Muon is slow on CPU
    _pretrain(2, [*args, "--out", str(tmp_path / "two")])
    ckpt = tmp_path / "two" / "ckpt-0000004"
    assert (ckpt / "sharded" / ".metadata").is_file() and not (ckpt / "model.safetensors").exists()
    assert set(load_train_state(ckpt)["optimizer"]) == {"muon", "adamw"}
    run = _resume_copy(tmp_path / "two", tmp_path / "one", ckpt.name)
    _pretrain(1, [*args, "--out", str(run), "--resume"])
    two, one = _losses(tmp_path / "two"), _losses(run)
    assert sorted(one) == list(range(1, 9))
    assert max(abs(one[s] - two[s]) for s in range(5, 9)) < 2e-3


def test_a_one_process_checkpoint_resumes_on_2_processes_on_the_same_curve(
    runs: dict[str, Any], tmp_path: Path
) -> None:
    """The one-file format (the 1-process resumed run's step 8) scattered to FSDP's shards on 2 processes."""
    ckpt = f"ckpt-{2 * CUT:07d}"
    assert json.loads((runs["root"] / "on1" / ckpt / "meta.json").read_text())["state_format"] == "safetensors"
    run = _resume_copy(runs["root"] / "on1", tmp_path / "run", ckpt)
    _pretrain(2, ["--out", str(run), "--resume"])
    resumed, whole = _losses(run), _losses(runs["root"] / "fsdp4")
    assert sorted(resumed) == list(range(1, STEPS + 1))
    assert max(abs(resumed[s] - whole[s]) for s in range(2 * CUT + 1, STEPS + 1)) < 2e-3
