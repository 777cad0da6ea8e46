"""``train.optimizer: muon`` (issue 17): the update of a hidden matrix is orthogonalised, embeddings
and norms stay with AdamW, and a checkpointed and resumed run continues bit for bit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lmkit.cli import main
from lmkit.config import ModelConfig, TrainConfig
from lmkit.config_io import ConfigError
from lmkit.models import build_model
from lmkit.train.muon import MuonWithAdamW
from lmkit.train.steps import make_optimizer

pytestmark = pytest.mark.usefixtures("one_thread")


def test_muon_update_of_a_hidden_matrix_is_orthogonalised() -> None:
    torch.manual_seed(0)
    model = build_model(ModelConfig(vocab_size=128, d_model=64, n_layers=1, n_heads=4, max_seq_len=16))
    opt = make_optimizer(model, lr=1e-2, weight_decay=0.0, kind="muon")
    assert isinstance(opt, MuonWithAdamW)
    muon_ids = {id(p) for g in opt.muon.param_groups for p in g["params"]}
    names = {n for n, p in model.named_parameters() if id(p) in muon_ids}
    assert names and all("blocks." in n and model.get_parameter(n).dim() == 2 for n in names)
    assert "tok_emb.weight" not in names and not any("norm" in n for n in names)
    w = model.get_parameter("blocks.0.mlp.up_proj.weight")  # (ffn, d): rectangular
    before = w.detach().clone()
    ids = torch.randint(0, 128, (4, 17))
    model.loss({"input_ids": ids[:, :-1], "labels": ids[:, 1:]}).backward()
    g = w.grad.detach().clone()
    opt.step()
    scale = 0.2 * max(w.shape) ** 0.5 * 1e-2  # match_rms_adamw: lr x 0.2 sqrt(max(rows, cols))
    update = (before - w.detach()) / scale
    s = torch.linalg.svdvals(update)  # descending
    # five Newton-Schulz steps land the singular values in about [0.7, 1.2]; only the last few
    # directions, where the gradient itself is almost zero, are not lifted all the way
    bulk = s[: int(0.9 * len(s))]
    assert bulk.min() > 0.6 and s.max() < 1.3
    sg = torch.linalg.svdvals(g)[: len(bulk)]
    assert (sg.max() / sg.min()) > 5 * (bulk.max() / bulk.min())  # the raw gradient is far from it


def test_muon_with_fsdp_is_refused() -> None:
    with pytest.raises(ConfigError, match="ddp"):
        TrainConfig(optimizer="muon", distributed="fsdp").validate()


def test_muon_checkpoint_and_resume_is_bit_exact(word_corpus: Path, tmp_path: Path) -> None:
    data = word_corpus
    common = [
        "--config",
        "tiny",
        "--data",
        str(data),
        "--train.optimizer",
        "muon",
        "--train.precision",
        "fp32",
        "--train.eval_every",
        "0",
        "--train.ckpt_every",
        "10",
        "--quiet",
    ]
    assert main(["pretrain", *common, "--out", str(tmp_path / "whole"), "--max-steps", "20"]) == 0
    assert (
        main(["pretrain", *common, "--out", str(tmp_path / "split"), "--max-steps", "20", "--train.max_steps", "10"])
        == 0
    )
    assert main(["pretrain", "--out", str(tmp_path / "split"), "--resume", "--max-steps", "20", "--quiet"]) == 0
    a = load_file(str(tmp_path / "whole" / "ckpt-0000020" / "model.safetensors"))
    b = load_file(str(tmp_path / "split" / "ckpt-0000020" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    losses = [
        json.loads(line)["loss"]
        for line in (tmp_path / "whole" / "metrics.jsonl").read_text().splitlines()
        if '"loss"' in line
    ]
    assert losses[-1] < losses[0]
