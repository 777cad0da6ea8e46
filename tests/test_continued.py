"""Continued pre-training (`lmkit pretrain --init CKPT`) refuses, in one line naming the flag, what it would
otherwise drop silently: a --model.* flag that would change the checkpoint's shape, and a --tokenizer that is
not the checkpoint's own. The run's own dropout is applied; the checkpoint's own tokenizer, given again, is
accepted."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
import torch

from lmkit.cli import main
from lmkit.config import ModelConfig
from lmkit.models import build_model
from lmkit.models.checkpoint import load_model_config, load_tokenizer, save_checkpoint
from lmkit.tokenizer import train_tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py

WORDS = ["the cat", "a dog", "sees", "likes", "the bird", "a red ball", "the river", "my sister"]


def _texts(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(24)) + "." for _ in range(n)]


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("continued")
    tok = train_tokenizer(_texts(60, 0), vocab_size=420, show_progress=False)
    cfg = ModelConfig(family="decoder", vocab_size=tok.vocab_size, d_model=32, n_layers=1, n_heads=4, max_seq_len=32)
    torch.manual_seed(0)
    save_checkpoint(root / "ckpt", build_model(cfg), cfg, tokenizer=tok)
    data = root / "data"
    data.mkdir()
    (data / "docs.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in _texts(80, 1)), encoding="utf-8")
    other = train_tokenizer(_texts(60, 2)[:20], vocab_size=380, show_progress=False)  # smaller, and not its own
    other.save(root / "other")
    return {"root": root, "ckpt": root / "ckpt", "data": data, "other": root / "other" / "tokenizer.json"}


def _pretrain(base: dict[str, Any], out: Path, *extra: str) -> int:
    argv = ["pretrain", "--init", str(base["ckpt"]), "--data", str(base["data"]), "--out", str(out), "--quiet"]
    argv += ["--max-steps", "1", "--train.batch_size", "2", "--train.eval_every", "0", "--train.ckpt_every", "0"]
    argv += ["--train.tensorboard", "false", "--data.val_fraction", "0.2"]
    return main([*argv, *extra])


@pytest.mark.parametrize(
    "flag,value",
    [
        ("--model.d_model", "64"),
        ("--model.n_layers", "3"),
        ("--model.vocab_size", "512"),
        ("--model.family", "encoder"),
    ],
)
def test_a_shape_changing_model_flag_is_refused_naming_it(
    base: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str, value: str
) -> None:
    capsys.readouterr()
    assert _pretrain(base, tmp_path / "run", flag, value) == 2
    err = capsys.readouterr().err.strip()
    assert flag in err and "--init" in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").glob("ckpt*"))


def test_dropout_is_the_runs_own_and_applied(base: dict[str, Any], tmp_path: Path) -> None:
    assert load_model_config(base["ckpt"]).dropout == 0.0
    assert _pretrain(base, tmp_path / "run", "--model.dropout", "0.25", "--json") == 0
    saved = load_model_config(tmp_path / "run")
    assert saved.dropout == 0.25
    assert {**saved.__dict__, "dropout": 0.0} == load_model_config(base["ckpt"]).__dict__  # nothing else changed


def test_a_tokenizer_that_is_not_the_checkpoints_own_is_refused(
    base: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    assert _pretrain(base, tmp_path / "run", "--tokenizer", str(base["other"])) == 2
    err = capsys.readouterr().err.strip()
    assert str(base["other"]) in err and "--tokenizer" in err and len(err.splitlines()) == 1, err
    assert f"{load_tokenizer(base['ckpt']).vocab_size}" in err
    # the checkpoint's own tokenizer, given again, is the same one: accepted
    own = str(base["ckpt"] / "tokenizer.json")
    assert _pretrain(base, tmp_path / "run2", "--tokenizer", own, "--json") == 0
    assert load_tokenizer(tmp_path / "run2").sha256 == load_tokenizer(base["ckpt"]).sha256
