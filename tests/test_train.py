"""Training: the loss really falls, a killed run resumes onto the same curve, bad input is refused."""

from __future__ import annotations

import json
import math
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from lmkit.config import load_run_config
from lmkit.config_io import ConfigError
from lmkit.data.shards import TokenShards
from lmkit.errors import LmkitError
from lmkit.models.checkpoint import list_checkpoints, load_meta, load_model, load_tokenizer
from lmkit.train.loop import train
from lmkit.train.metrics import read_metrics
from lmkit.train.steps import lr_at, make_optimizer, plan_horizon

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "tiny.yaml"


def learnable_corpus(folder: Path, n_docs: int = 300, seed: int = 0) -> Path:
    """Sentences from a small grammar: predictable given the prefix, far from uniform."""
    rng = random.Random(seed)
    subjects = ["the cat", "a dog", "the old man", "my sister", "the farmer"]
    verbs = ["sees", "likes", "finds", "feeds", "calls"]
    objects = ["the bird", "a red ball", "the river", "his friend", "the small house"]
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(n_docs):
        sents = [f"{rng.choice(subjects)} {rng.choice(verbs)} {rng.choice(objects)}." for _ in range(6)]
        lines.append(json.dumps({"id": f"doc{i}", "text": " ".join(sents)}))
    path = folder / "corpus.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def unigram_entropy(shards: TokenShards) -> float:
    tokens = np.concatenate([np.asarray(a) for a in shards._arrays])
    counts = np.bincount(tokens).astype(np.float64)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def tiny_cfg(tmp_path: Path, data: Path, **overrides: object):
    ov = {"data.paths": [str(data)], "out": str(tmp_path / "run")}
    ov.update(overrides)
    return load_run_config(TINY, ov)


@pytest.mark.slow
def test_loss_falls_well_below_unigram_entropy(tmp_path: Path) -> None:
    data = learnable_corpus(tmp_path / "data")
    cfg = tiny_cfg(tmp_path, data, **{"train.max_steps": 120, "train.eval_every": 0})
    summary = train(cfg, show_progress=False)
    shards = TokenShards(tmp_path / "run" / "shards" / "train")
    h = unigram_entropy(shards)
    assert summary["eval"]["loss"] < 0.5 * h, (summary["eval"], h)
    # the artefacts a user is promised
    ckpt = Path(summary["checkpoint"])
    assert (ckpt / "model.safetensors").is_file() and (ckpt / "tokenizer.json").is_file()
    meta = load_meta(ckpt)
    assert meta["step"] == 120 and meta["tokens"] == 120 * 8 * 64 and meta["flops"] > 0
    assert "bits_per_byte" in meta["eval"] and meta["eval"]["bits_per_byte"] > 0
    assert Path(summary["loss_curve"]).stat().st_size > 5000
    model = load_model(ckpt)
    assert not model.training
    tok = load_tokenizer(ckpt)
    assert tok.sha256 == meta["tokenizer_sha256"]


@pytest.mark.slow
def test_kill_and_resume_continues_the_same_curve(tmp_path: Path) -> None:
    data = learnable_corpus(tmp_path / "data", n_docs=120)
    common = [
        "--config",
        str(TINY),
        "--data",
        str(data),
        "--quiet",
        "--train.max_steps",
        "30",
        "--train.ckpt_every",
        "10",
        "--train.eval_every",
        "0",
        "--train.keep_checkpoints",
        "5",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ref = tmp_path / "ref"
    subprocess.run(
        [sys.executable, "-m", "lmkit.cli", "pretrain", *common, "--out", str(ref)],
        check=True,
        env=env,
        capture_output=True,
    )
    # the same run, killed (SIGKILL) once its first checkpoint exists, then resumed
    run = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, "-m", "lmkit.cli", "pretrain", *common, "--out", str(run)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    while time.time() < deadline and not list_checkpoints(run):
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = list_checkpoints(run)
    assert done and done[-1].name != "ckpt-0000030", "the run finished before it could be killed"
    subprocess.run(
        [sys.executable, "-m", "lmkit.cli", "pretrain", *common, "--out", str(run), "--resume"],
        check=True,
        env=env,
        capture_output=True,
    )
    a = [(r["step"], r["loss"]) for r in read_metrics(ref) if "loss" in r]
    b = [(r["step"], r["loss"]) for r in read_metrics(run) if "loss" in r]
    assert [s for s, _ in a] == list(range(1, 31)) == [s for s, _ in b]
    assert a == b  # fp32 on CPU: bit-identical
    final_ref = load_model(ref)
    final_run = load_model(run)
    for (n, p), (_, q) in zip(final_ref.state_dict().items(), final_run.state_dict().items()):
        assert torch.equal(p, q), n


def test_refuses_to_overwrite_a_run_and_resume_without_checkpoint(tmp_path: Path) -> None:
    data = learnable_corpus(tmp_path / "data", n_docs=60)
    cfg = tiny_cfg(tmp_path, data, **{"train.max_steps": 3, "train.eval_every": 0})
    train(cfg, show_progress=False)
    with pytest.raises(LmkitError, match="already holds checkpoints"):
        train(tiny_cfg(tmp_path, data, **{"train.max_steps": 3}), show_progress=False)
    with pytest.raises(LmkitError, match="no checkpoint to resume"):
        train(tiny_cfg(tmp_path, data, out=str(tmp_path / "fresh")), resume=True, show_progress=False)


def test_bad_config_values_name_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="train.lr must be a number"):
        load_run_config(TINY, {"train.lr": "fast"})
    with pytest.raises(ConfigError, match="unknown config key 'train.learning_rate'"):
        load_run_config(TINY, {"train.learning_rate": "1"})
    with pytest.raises(ConfigError, match="model.family must be one of"):
        load_run_config(TINY, {"model.family": "rnn"})
    with pytest.raises(ConfigError, match="divisible"):
        load_run_config(TINY, {"model.n_heads": "3"})


def test_cli_errors_are_one_line(tmp_path: Path) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "lmkit.cli", "pretrain", "--config", str(tmp_path / "nope.yaml")],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "nope.yaml: config file not found" in r.stderr
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "lmkit.cli",
            "pretrain",
            "--config",
            str(TINY),
            "--data",
            str(tmp_path / "missing"),
            "--out",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr and "missing" in r.stderr
    with pytest.raises(ConfigError, match="train.max_steps must be positive"):
        load_run_config(TINY, {"train.max_steps": 0}).validate()


def test_schedule_and_horizon() -> None:
    cfg = load_run_config(TINY, {"train.warmup_steps": 10, "train.lr": 1.0, "train.min_lr_ratio": 0.1}).train
    assert lr_at(0, cfg, 100) == pytest.approx(0.1)
    assert lr_at(9, cfg, 100) == pytest.approx(1.0)
    assert lr_at(10, cfg, 100) == pytest.approx(1.0)
    assert lr_at(100, cfg, 100) == pytest.approx(0.1)
    assert lr_at(55, cfg, 100) == pytest.approx(0.55)  # halfway down the cosine
    cfg.max_steps = None
    cfg.max_tokens = 10_000
    assert plan_horizon(cfg, 1000, 1e9, 10**6).steps == 10
    cfg.max_flops = 3e9
    h = plan_horizon(cfg, 1000, 1e9, 10**6)
    assert h.steps == 3 and "max_flops" in h.reason
    cfg.max_tokens = cfg.max_flops = None
    cfg.tokens_per_param = 20
    assert plan_horizon(cfg, 1000, 1e9, 500).steps == 10


def test_optimizer_does_not_decay_norms_biases_embeddings() -> None:
    from lmkit.config import ModelConfig
    from lmkit.models import build_model

    model = build_model(ModelConfig(vocab_size=100, d_model=32, n_layers=1, n_heads=2, max_seq_len=16))
    opt = make_optimizer(model, lr=1e-3, weight_decay=0.1)
    decayed = {id(p) for p in opt.param_groups[0]["params"]}
    for name, p in model.named_parameters():
        expect = p.dim() >= 2 and "emb" not in name
        assert (id(p) in decayed) == expect, name
    assert math.isclose(opt.param_groups[1]["weight_decay"], 0.0)


@pytest.mark.slow
def test_init_continues_pretraining_from_a_checkpoint(tmp_path: Path) -> None:
    data = learnable_corpus(tmp_path / "data", n_docs=150)
    # 40 steps: the continued run's first loss is 0.32-0.36 of the fresh run's (seeds 1337, 1, 2; at 30: 0.41-0.44)
    base = train(tiny_cfg(tmp_path, data, **{"train.max_steps": 40, "train.eval_every": 0}), show_progress=False)
    more = learnable_corpus(tmp_path / "domain", n_docs=80, seed=1)
    cont = train(
        tiny_cfg(
            tmp_path,
            more,
            out=str(tmp_path / "cont"),
            **{"train.init": base["checkpoint"], "train.max_steps": 5, "train.eval_every": 0, "model.d_model": 32},
        ),
        show_progress=False,
    )  # the checkpoint's shape wins over the config's
    fresh = train(
        tiny_cfg(
            tmp_path,
            more,
            out=str(tmp_path / "fresh"),
            **{
                "train.max_steps": 5,
                "train.eval_every": 0,
                "data.tokenizer": str(Path(base["checkpoint"]) / "tokenizer.json"),
            },
        ),
        show_progress=False,
    )
    first = [r["loss"] for r in read_metrics(tmp_path / "cont") if "loss" in r][0]
    first_fresh = [r["loss"] for r in read_metrics(tmp_path / "fresh") if "loss" in r][0]
    assert first < 0.6 * first_fresh  # starts from what the base model learned
    assert cont["eval"]["loss"] < fresh["eval"]["loss"]
    meta = load_meta(cont["checkpoint"])
    assert meta["init_from"] == base["checkpoint"] and meta["step"] == 5
    assert load_model(cont["checkpoint"]).cfg.d_model == 64
