"""Quantized checkpoints: int8 is about 4x smaller on disk and in memory, stays int8 when loaded,
loses little held-out quality, and loads through the ordinary checkpoint loader (generate works)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from torch import nn

from lmkit.cli import main
from lmkit.config import ModelConfig, load_run_config
from lmkit.errors import LmkitError
from lmkit.models.checkpoint import load_model, load_tokenizer, save_checkpoint
from lmkit.models.int8 import Int8Embedding, Int8Linear, memory_bytes
from lmkit.ship.quantize import quantize_checkpoint

ROOT = Path(__file__).resolve().parents[1]
# A bound on the held-out perplexity increase int8 may cause, checked here on the tiny trained model
# (measured: well under 1%). cpu-small (configs/cpu-small.yaml, 300 steps on 8 MB of the demo's
# default corpus), measured once by hand with `lmkit quantize RUN --to int8 --eval-batches 16`:
# 21.25 MB -> 5.40 MB on disk (3.93x), 3.87x in memory, perplexity 9.4464 -> 9.4468 (+0.004%).
INT8_PERPLEXITY_BOUND_PCT = 3.0


def grammar_corpus(folder: Path, n_docs: int = 200, seed: int = 0) -> Path:
    rng = random.Random(seed)
    subjects = ["the cat", "a dog", "the old man", "my sister", "the farmer"]
    verbs = ["sees", "likes", "finds", "feeds", "calls"]
    objects = ["the bird", "a red ball", "the river", "his friend", "the small house"]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "corpus.jsonl"
    with path.open("w", encoding="utf-8") as f:
        for i in range(n_docs):
            text = " ".join(f"{rng.choice(subjects)} {rng.choice(verbs)} {rng.choice(objects)}." for _ in range(6))
            f.write(json.dumps({"id": f"doc{i}", "text": text}) + "\n")
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny decoder trained for 40 steps on a small grammar (its run keeps validation shards)."""
    from lmkit.train.loop import train

    root = tmp_path_factory.mktemp("quant")
    data = grammar_corpus(root / "data")
    cfg = load_run_config(
        ROOT / "configs" / "tiny.yaml",
        {
            "data.paths": [str(data)],
            "out": str(root / "run"),
            "train.max_steps": 40,
            "train.eval_every": 0,
            "train.ckpt_every": 0,
            "train.log_every": 10,
        },
    )
    return Path(train(cfg, show_progress=False)["checkpoint"])


def test_int8_checkpoint_is_4x_smaller_and_keeps_quality(trained: Path, tmp_path: Path) -> None:
    rep = quantize_checkpoint(trained, tmp_path / "int8", to="int8", show_progress=False)
    assert rep["disk_bytes"]["ratio"] > 3.5  # fp32 -> int8 + one fp32 scale per row + fp32 norms
    assert rep["memory_bytes"]["ratio"] > 3.5
    assert rep["eval_before"] and rep["eval_after"]  # found the run's own validation shards
    assert rep["eval_after"]["tokens"] == rep["eval_before"]["tokens"] > 0
    assert rep["perplexity_change_pct"] < INT8_PERPLEXITY_BOUND_PCT
    assert "smaller on disk" in rep["summary"] and "perplexity" in rep["summary"]
    # what generate/evaluate load: int8 tensors in memory, nothing left in fp32 but norms and scales
    model = load_model(tmp_path / "int8")
    assert isinstance(model.tok_emb, Int8Embedding) and isinstance(model.blocks[0].attn.q_proj, Int8Linear)
    assert model.blocks[0].mlp.down_proj.qweight.dtype == torch.int8
    assert not any(isinstance(m, (nn.Linear, nn.Embedding)) for m in model.modules())
    fp32_tensors = sum(t.numel() for t in model.state_dict().values() if t.dtype == torch.float32)
    assert fp32_tensors < 0.05 * sum(t.numel() for t in model.state_dict().values())
    meta = json.loads((tmp_path / "int8" / "meta.json").read_text())
    assert meta["quantization"]["method"] == "int8-absmax-per-channel"
    # the quantized model's logits follow the original's
    orig = load_model(trained)
    tok = load_tokenizer(trained)
    ids = torch.tensor([tok.encode("the cat sees the bird. a dog likes")])
    with torch.no_grad():
        a, b = orig(ids), model(ids)
    assert torch.equal(a[0, -1].argmax(), b[0, -1].argmax())
    assert (a - b).abs().max() < 0.05 * a.abs().max()


def test_generate_loads_the_int8_checkpoint(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    quantize_checkpoint(trained, tmp_path / "int8", to="int8", eval_batches=1, show_progress=False)
    capsys.readouterr()
    assert main(["generate", str(tmp_path / "int8"), "the cat", "--max-new-tokens", "8"]) == 0
    assert "the cat" in capsys.readouterr().out
    # setting up the KV cache does not dequantise the int8 embedding table
    model = load_model(tmp_path / "int8")
    monkeypatch.setattr(Int8Embedding, "weight", property(lambda self: pytest.fail("table dequantised")))
    cache = model.new_cache(2, 16)
    assert cache.k[0].shape[0] == 2 and cache.k[0].dtype == torch.float32


def test_evaluate_loads_quantized_checkpoints(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rep = quantize_checkpoint(trained, tmp_path / "int8", to="int8", eval_batches=2, batch_size=4, show_progress=False)
    scores = {}
    for name, ckpt in (("fp32", trained), ("int8", tmp_path / "int8")):
        assert main(["evaluate", str(ckpt), "--batches", "2", "--batch-size", "4", "--json"]) == 0
        scores[name] = json.loads(capsys.readouterr().out)
    assert scores["fp32"]["format"] == "fp32" and scores["int8"]["format"] == "int8"
    # the same numbers the quantize report measured, on the same held-out windows
    assert scores["fp32"]["loss"] == pytest.approx(rep["eval_before"]["loss"], rel=1e-6)
    assert scores["int8"]["loss"] == pytest.approx(rep["eval_after"]["loss"], rel=1e-6)
    assert scores["int8"]["tokens"] == scores["fp32"]["tokens"] > 0
    assert scores["fp32"]["memory_bytes"] / scores["int8"]["memory_bytes"] > 3.5
    # the readable form
    assert main(["evaluate", str(tmp_path / "int8"), "--batches", "1"]) == 0
    text = capsys.readouterr().out
    assert "int8 weights" in text and "perplexity" in text and "bits per byte" in text


def test_evaluate_needs_held_out_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from lmkit.models import build_model

    cfg = ModelConfig(vocab_size=300, d_model=32, n_layers=1, n_heads=2, max_seq_len=16)
    ckpt = save_checkpoint(tmp_path / "bare", build_model(cfg), cfg, meta={})
    assert main(["evaluate", str(ckpt)]) == 2  # no tokenizer, no run: nothing to score it on
    assert "lmkit: error:" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path / "missing")]) == 2


@pytest.mark.parametrize("fmt,dtype", [("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_16bit_casts(trained: Path, tmp_path: Path, fmt: str, dtype: torch.dtype) -> None:
    rep = quantize_checkpoint(trained, tmp_path / fmt, to=fmt, eval_batches=2, show_progress=False)
    assert 1.9 < rep["disk_bytes"]["ratio"] < 2.05 and 1.9 < rep["memory_bytes"]["ratio"] < 2.05
    assert abs(rep["loss_change"]) < 0.05
    model = load_model(tmp_path / fmt)
    assert {p.dtype for p in model.parameters()} == {dtype}


def test_cli_report_and_overwrite_rules(trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "q"
    assert main(["quantize", str(trained), "--to", "int8", "--out", str(out), "--eval-batches", "2", "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["to"] == "int8" and rep["disk_bytes"]["after"] == (out / "model.safetensors").stat().st_size
    # an existing output is never replaced silently
    assert main(["quantize", str(trained), "--to", "int8", "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (
        main(["quantize", str(trained), "--to", "bf16", "--out", str(out), "--overwrite", "--eval-batches", "1"]) == 0
    )
    assert "perplexity" in capsys.readouterr().out
    assert json.loads((out / "config.json").read_text())["quantization"]["dtype"] == "bf16"
    # quantizing a quantized checkpoint is refused
    with pytest.raises(LmkitError, match="already quantized"):
        quantize_checkpoint(out, tmp_path / "again", to="int8", show_progress=False)
    # a non-checkpoint folder is not overwritten even with --overwrite
    other = tmp_path / "precious"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    assert main(["quantize", str(trained), "--to", "int8", "--out", str(other), "--overwrite"]) == 2
    assert (other / "notes.txt").read_text() == "keep me"


@pytest.mark.parametrize("family", ["encoder", "encdec"])
def test_other_families_round_trip(family: str, tmp_path: Path) -> None:
    from lmkit.models import build_model
    from lmkit.objectives import SpecialIds, make_batch, window_length

    cfg = ModelConfig(
        family=family,
        vocab_size=400,
        d_model=64,
        n_layers=2,
        n_heads=4,
        max_seq_len=64,
        max_target_len=16,
        pos_encoding="learned" if family == "encoder" else "rotary",
    )
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    src = save_checkpoint(tmp_path / "ckpt", model, cfg, meta={"step": 0})
    rep = quantize_checkpoint(src, tmp_path / "int8", to="int8", show_progress=False)
    assert rep["eval_before"] is None and rep["disk_bytes"]["ratio"] > 3.0
    q = load_model(tmp_path / "int8")
    assert memory_bytes(model) / memory_bytes(q) > 3.0
    g = torch.Generator().manual_seed(1)
    sp = SpecialIds(pad=0, bos=1, eos=2, mask=4, sentinels=tuple(range(5, 105)), vocab_size=400, n_special=105)
    batch = make_batch(cfg, torch.randint(105, 400, (4, window_length(cfg)), generator=g), sp, g)
    with torch.no_grad():
        assert abs(float(model.loss(batch)) - float(q.loss(batch))) < 0.02


def test_int8_layers_match_float_layers() -> None:
    torch.manual_seed(0)
    lin = nn.Linear(48, 32)
    q = Int8Linear.from_linear(lin)
    x = torch.randn(5, 7, 48)
    with torch.no_grad():
        ref = lin(x)
        assert torch.allclose(q(x), nn.functional.linear(x, q.weight, q.bias), atol=1e-5)
        assert (q(x) - ref).abs().max() < 0.02 * ref.abs().max()
    emb = nn.Embedding(100, 16)
    qe = Int8Embedding.from_embedding(emb)
    ids = torch.tensor([[0, 5, 99], [7, 7, 1]])
    assert torch.allclose(qe(ids), qe.weight[ids])
    assert (qe(ids) - emb(ids)).abs().max() <= (qe.scale.max() / 2 + 1e-6)


# --------------------------------------------------------------------------- what int8 did, per layer


def test_quantize_reports_each_layers_int8_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from lmkit.models import build_model

    cfg = ModelConfig(family="decoder", vocab_size=128, d_model=32, n_layers=2, n_heads=4, max_seq_len=32)
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "ckpt", build_model(cfg), cfg)
    assert main(["quantize", str(tmp_path / "ckpt"), "--to", "int8", "--out", str(tmp_path / "q"), "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    rows = rep["int8_layers"]
    meta = json.loads((tmp_path / "q" / "config.json").read_text())
    assert [r["name"] for r in rows] == meta["quantization"]["modules"]
    for r in rows:
        assert r["per_channel"]["relative_rms"] <= r["per_tensor"]["relative_rms"] + 1e-9
        assert r["per_channel"]["max_abs"] <= r["row_absmax_max"] / 127 / 2 + 1e-7
        assert r["integer_grid"]["relative_rms"] == pytest.approx(1.0)  # small weights all round to 0
    assert main(["quantize", str(tmp_path / "ckpt"), "--to", "int8", "--out", str(tmp_path / "q2")]) == 0
    out = capsys.readouterr().out
    assert "what int8 did to the weights, per layer" in out and "blocks.1.mlp.down_proj" in out
