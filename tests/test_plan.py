"""Planning maths against worked examples: parameter counts of the real models, FLOPs counted by
running them, GPT-3's PF-days, the course's 1B memory figures, Chinchilla's table and fit, and the
precise memory estimate against the measured peak of real lmkit training steps."""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from lmkit.cli import main
from lmkit.config import ModelConfig, load_run_config
from lmkit.errors import LmkitError
from lmkit.plan import (
    ACCELERATORS,
    FITS,
    PF_DAY,
    count_params,
    flops_per_token,
    gpu_hours,
    known_models_table,
    korthikanti_activation_bytes,
    make_plan,
    measure_matmul_peak,
    model_state_bytes,
    parse_count,
    rule_optimal,
    training_flops,
    training_memory,
    training_rule_of_thumb_bytes,
    weights_bytes,
)

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "tiny.yaml"


def n_params_of_model(cfg: ModelConfig) -> int:
    from lmkit.models import build_model

    return sum(p.numel() for p in build_model(cfg).parameters())


# --------------------------------------------------------------------------- parameters


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"pos_encoding": "learned"},
        {"pos_encoding": "sinusoidal", "tie_embeddings": False},
        {"d_model": 96, "n_heads": 3, "n_layers": 3, "d_ff": 100, "vocab_size": 1000},
    ],
)
def test_decoder_params_match_the_model(kw: dict[str, Any]) -> None:
    cfg = ModelConfig(family="decoder", **kw)
    p = count_params(cfg)
    assert p.total == n_params_of_model(cfg)
    assert p.embedding == cfg.vocab_size * cfg.d_model + (
        cfg.max_seq_len * cfg.d_model if cfg.pos_encoding == "learned" else 0
    )
    assert p.embedding + p.non_embedding == p.total


@pytest.mark.parametrize("family,module", [("encoder", "lmkit.models.encoder"), ("encdec", "lmkit.models.encdec")])
def test_other_families_params_match_the_model(family: str, module: str) -> None:
    pytest.importorskip(module)
    for kw in (
        {},
        {"n_layers": 3, "d_model": 128, "n_heads": 4, "vocab_size": 700, "max_seq_len": 96},
        {"tie_embeddings": False, "pos_encoding": "learned", "d_ff": 300, "n_decoder_layers": 2},
    ):
        cfg = ModelConfig(family=family, **kw)
        assert count_params(cfg).total == n_params_of_model(cfg)


# --------------------------------------------------------------------------- FLOPs


class MatmulFlops(TorchDispatchMode):
    """Counts 2·m·n·k for every 2-D matrix product the model really runs (forward and backward).

    The linear layers and the output projection run as mm/addmm; attention runs in a fused kernel
    (or, on the math path, as batched bmm), which is left out here and checked by formula. A product
    with a single row is a reduction written as a matmul (a bias gradient: a row of weights times
    the rows' gradients), not a token multiplied by a weight matrix, and is left out too: the
    6N + attention count leaves biases out.
    """

    def __init__(self) -> None:
        super().__init__()
        self.flops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        name = func.__name__.split(".")[0]
        if name in ("mm", "addmm", "addmm_"):
            a, b = (args[0], args[1]) if name == "mm" else (args[1], args[2])
            if a.shape[0] > 1:
                self.flops += 2 * a.shape[0] * a.shape[1] * b.shape[1]
        return func(*args, **(kwargs or {}))


SPECIALS_512 = dict(pad=0, bos=1, eos=2, mask=4, sentinels=tuple(range(5, 105)), vocab_size=512, n_special=105)


@pytest.mark.parametrize(
    "family,kw",
    [
        ("decoder", {"d_model": 64, "n_layers": 2, "n_heads": 4, "max_seq_len": 64}),
        ("decoder", {"d_model": 96, "n_layers": 3, "n_heads": 3, "max_seq_len": 48, "tie_embeddings": False}),
        ("encoder", {"d_model": 64, "n_layers": 2, "n_heads": 4, "max_seq_len": 128}),
        ("encdec", {"d_model": 64, "n_layers": 2, "n_heads": 4, "max_seq_len": 128, "max_target_len": 32}),
    ],
)
def test_flops_per_token_counts_what_a_training_step_multiplies(
    family: str, kw: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from lmkit.models import build_model
    from lmkit.objectives import MLM_PROBABILITY, SpecialIds, make_batch, window_length
    from lmkit.plan import compute as plan

    if family != "decoder":
        pytest.importorskip(f"lmkit.models.{family}")
    assert plan.MLM_SCORED_FRACTION == MLM_PROBABILITY
    cfg = ModelConfig(family=family, vocab_size=512, **kw)
    model = build_model(cfg)
    g = torch.Generator().manual_seed(0)
    windows = torch.randint(105, cfg.vocab_size, (4, window_length(cfg)), generator=g)
    batch = make_batch(cfg, windows, SpecialIds(**SPECIALS_512), g)
    B, S = batch["input_ids"].shape
    counter = MatmulFlops()
    with counter:
        model.loss(batch).backward()
    d, L = cfg.d_model, cfg.n_layers
    if family == "encdec":
        Tt = int((batch["labels"] != -100).any(dim=0).nonzero().max()) + 1  # the loss decodes these
        assert Tt == plan.decoded_target_len(cfg, S) < cfg.max_target_len
        attention = 12 * d * (L * S * S + L * Tt * Tt + L * Tt * S) / S
    else:
        attention = 12 * L * d * S
    if family == "encoder":  # the MLM head runs on the scored positions: use this batch's share
        monkeypatch.setattr(plan, "MLM_SCORED_FRACTION", float((batch["labels"] != -100).float().mean()))
    predicted = (flops_per_token(cfg, S) - attention) * B * S
    assert counter.flops == pytest.approx(predicted, rel=1e-9)
    # forward is a third of training
    assert flops_per_token(cfg, S, training=False) * 3 == pytest.approx(flops_per_token(cfg, S))


def test_flops_attention_term_and_6nd() -> None:
    cfg = ModelConfig(vocab_size=8192, d_model=256, n_layers=4, n_heads=4, max_seq_len=256)
    p = count_params(cfg)
    assert flops_per_token(cfg, 256) == 6 * p.matmul + 12 * 4 * 256 * 256
    assert flops_per_token(cfg, 512) - flops_per_token(cfg, 256) == 12 * 4 * 256 * 256
    assert training_flops(1e9, 20e9) == 1.2e20


def test_gpt3_training_compute_in_pf_days() -> None:
    # GPT-3 paper: 3.64e3 PF-days for 175B parameters on 300B tokens
    pfd = training_flops(175e9, 300e9) / PF_DAY
    assert pfd == pytest.approx(3645.8, abs=0.1)
    assert pfd == pytest.approx(3640, rel=0.01)
    gpt3 = next(r for r in known_models_table() if r["name"] == "GPT-3")
    assert gpt3["pf_days"] == pytest.approx(pfd)


def test_gpu_hours() -> None:
    # 1 PF-day on 8 V100s at their full 125 TFLOP/s is one day: 192 GPU-hours
    assert gpu_hours(PF_DAY, ACCELERATORS["V100"], 1.0) == pytest.approx(192.0)
    assert gpu_hours(PF_DAY, ACCELERATORS["A100"], 0.5) == pytest.approx(1e15 * 86400 / (312e12 * 0.5) / 3600)
    with pytest.raises(LmkitError):
        gpu_hours(1e20, 1e12, 0.0)


def test_measure_matmul_peak_is_plausible() -> None:
    peak = measure_matmul_peak(seconds=0.1)
    assert 1e9 < peak < 1e14
    assert measure_matmul_peak(seconds=0.1) == peak  # cached for the process


# --------------------------------------------------------------------------- memory


def test_course_memory_figures_for_1b() -> None:
    w = weights_bytes(1e9)
    assert (w["fp32"], w["fp16"], w["bf16"], w["int8"]) == (4e9, 2e9, 2e9, 1e9)
    assert training_rule_of_thumb_bytes(1e9) == 24e9 == 6 * w["fp32"]


def test_zero_sharding_of_model_states() -> None:
    n = 1e9
    per_param = {
        s: sum(model_state_bytes(n, "bf16", s, 8).values()) / n for s in ("ddp", "zero1", "zero2", "zero3", "fsdp")
    }
    assert per_param == {"ddp": 16.0, "zero1": 2 + 2 + 12 / 8, "zero2": 2 + 14 / 8, "zero3": 2.0, "fsdp": 2.0}
    assert sum(model_state_bytes(n, "fp32", "ddp").values()) == 16e9
    assert sum(model_state_bytes(n, "fp32", "zero1", 4).values()) == (4 + 4 + 2) * n
    with pytest.raises(LmkitError):
        model_state_bytes(n, "fp32", "zero4")


def test_activation_checkpointing_and_korthikanti() -> None:
    # Korthikanti et al.: sbh(34 + 5as/h) per layer at 16-bit; 2sbh with full recomputation
    s, b, h, a, L = 2048, 1, 12288, 96, 96
    assert korthikanti_activation_bytes(s, b, h, a, L) == L * s * b * h * (34 + 5 * a * s / h)
    assert korthikanti_activation_bytes(s, b, h, a, L, recompute=True) == L * 2 * s * b * h
    cfg = ModelConfig(vocab_size=8192, d_model=512, n_layers=12, n_heads=8, max_seq_len=512)
    full = training_memory(cfg, micro_batch=8)
    ckpt = training_memory(cfg, micro_batch=8, checkpointing=True)
    assert ckpt["activations"] < full["activations"] / 4
    assert ckpt["weights"] == full["weights"]
    half = training_memory(cfg, micro_batch=8, precision="bf16")
    assert half["activations"] < 0.75 * full["activations"]
    # activations grow linearly with the micro-batch
    two = training_memory(cfg, micro_batch=16)
    assert two["activations"] == pytest.approx(2 * full["activations"])


# --------------------------------------------------------------------------- Chinchilla

# Hoffmann et al. 2022, Table 3: compute-optimal (FLOPs, parameters, tokens)
CHINCHILLA_TABLE = [
    (1.92e19, 400e6, 8.0e9),
    (1.21e20, 1e9, 20.2e9),
    (1.23e22, 10e9, 205.1e9),
    (5.76e23, 67e9, 1.5e12),
    (3.85e24, 175e9, 3.7e12),
    (9.90e24, 280e9, 5.9e12),
    (3.43e25, 520e9, 11.0e12),
    (1.27e26, 1e12, 21.2e12),
    (1.30e28, 10e12, 216.2e12),
]


@pytest.mark.parametrize("flops,params,tokens", CHINCHILLA_TABLE)
def test_rule_reproduces_the_chinchilla_table(flops: float, params: float, tokens: float) -> None:
    n, d = rule_optimal(flops)
    assert n == pytest.approx(params, rel=0.08) and d == pytest.approx(tokens, rel=0.08)
    assert 6 * n * d == pytest.approx(flops)


def test_chinchilla_budget_by_the_rule() -> None:
    n, d = rule_optimal(5.76e23)
    assert n == pytest.approx(70e9, rel=0.02) and d == pytest.approx(1.4e12, rel=0.02)


def test_parametric_fit_optimum() -> None:
    # the fit's optimum from the closed form, typed in here independently of lmkit's constants
    E, A, B, alpha, beta = 1.69337, 406.401, 410.723, 0.33917, 0.28491
    C = 5.76e23
    G = (alpha * A / (beta * B)) ** (1 / (alpha + beta))
    n_expected = G * (C / 6) ** (beta / (alpha + beta))
    fit = FITS["chinchilla"]
    n, d = fit.optimal(C)
    assert n == pytest.approx(n_expected, rel=1e-9) and d == pytest.approx(C / 6 / n_expected, rel=1e-9)
    assert 1e10 <= n < 1e11  # tens of billions of parameters
    loss = fit.loss(n, d)
    assert loss == pytest.approx(E + A / n**alpha + B / d**beta)
    # it is the minimum along the iso-compute curve
    for k in (0.8, 0.95, 1.05, 1.25):
        assert fit.loss(n * k, C / 6 / (n * k)) > loss
    # the optimal tokens of a model invert the frontier
    assert fit.optimal(6 * n * fit.optimal_tokens(n))[0] == pytest.approx(n, rel=1e-9)
    # Epoch AI's replication: about 18 tokens per parameter at this budget
    ne, de = FITS["epoch"].optimal(C)
    assert 15 < de / ne < 22


def test_known_models_verdicts() -> None:
    rows = {r["name"]: r for r in known_models_table()}
    assert rows["GPT-3"]["verdict"].startswith("under-trained")
    assert rows["Gopher"]["verdict"].startswith("under-trained")
    assert rows["BLOOM"]["verdict"].startswith("under-trained")
    assert rows["Chinchilla"]["verdict"] == "about right"
    assert rows["LLaMA 65B"]["verdict"] == "about right"
    assert rows["BloombergGPT"]["verdict"] == "about right"
    assert rows["LLaMA 7B"]["verdict"].startswith("over-trained")
    assert {"PaLM", "Llama 2 70B"} <= set(rows)


# --------------------------------------------------------------------------- the plan and its CLI

REQUIRED = [
    "params",
    "tokens",
    "flops",
    "pf_days",
    "memory.weights_bytes.fp32",
    "memory.weights_bytes.fp16",
    "memory.weights_bytes.bf16",
    "memory.weights_bytes.int8",
    "memory.training_rule_of_thumb_bytes",
    "memory.training_bytes",
    "memory.inference_bytes",
    "chinchilla.rule.params",
    "chinchilla.rule.tokens",
    "chinchilla.fit.params",
    "chinchilla.fit.tokens",
    "chinchilla.fit.loss",
]


def _get(d: dict[str, Any], dotted: str) -> Any:
    for k in dotted.split("."):
        d = d[k]
    return d


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, Any]:
    assert main(["plan", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_plan_json_for_1b(capsys: pytest.CaptureFixture[str]) -> None:
    out = run_json(capsys, "--params", "1B")
    for key in REQUIRED:
        assert isinstance(_get(out, key), (int, float)), key
    assert out["params"] == 1e9 and out["tokens"] == 20e9
    assert out["memory"]["weights_bytes"]["fp32"] == 4e9 and out["memory"]["training_rule_of_thumb_bytes"] == 24e9
    assert 16e9 < out["memory"]["training_bytes"] < 40e9
    assert out["chinchilla"]["rule"]["params"] == pytest.approx(1e9)


def test_plan_from_a_budget(capsys: pytest.CaptureFixture[str]) -> None:
    out = run_json(capsys, "--flops", "5.76e23")
    assert out["params"] == pytest.approx(69.3e9, rel=0.01) and out["flops"] == 5.76e23
    out = run_json(capsys, "--gpu-hours", "1000", "--gpu", "H100")
    assert out["flops"] == pytest.approx(1000 * 3600 * 989e12 * 0.4)
    out2 = run_json(capsys, "--pf-days", str(out["flops"] / PF_DAY))
    assert out2["params"] == pytest.approx(out["params"])
    out = run_json(capsys, "--params", "7B", "--flops", "8.4e22")  # a model and a budget: the tokens it affords
    assert out["tokens"] == pytest.approx(8.4e22 / 6 / 7e9)


def test_plan_from_a_config_with_overrides_and_sharding(capsys: pytest.CaptureFixture[str]) -> None:
    out = run_json(capsys, "--config", str(TINY))
    cfg = load_run_config(TINY)
    assert out["params"] == count_params(cfg.model).total
    assert out["tokens"] == cfg.train.max_steps * cfg.train.batch_size * cfg.model.max_seq_len
    big = run_json(capsys, "--config", str(TINY), "--model.d_model", "128")
    assert big["params"] > out["params"]
    one = run_json(capsys, "--params", "7B", "--gpus", "8")
    fsdp = run_json(capsys, "--params", "7B", "--gpus", "8", "--sharding", "fsdp")
    assert fsdp["memory"]["training_bytes"] < one["memory"]["training_bytes"] - 7e9 * 16 * 0.8


def test_plan_seq_len_micro_batch_and_checkpointing_flags(capsys: pytest.CaptureFixture[str]) -> None:
    cfg = load_run_config(TINY).model
    base = run_json(capsys, "--config", str(TINY), "--seq-len", "32", "--micro-batch", "4", "--precision", "fp32")
    s = base["memory"]["training_settings"]
    assert (s["seq_len"], s["micro_batch"], s["precision"], s["activation_checkpointing"]) == (32, 4, "fp32", False)
    assert base["flops_per_token"] == flops_per_token(cfg, 32)
    assert base["memory"]["training_bytes"] == training_memory(cfg, micro_batch=4, seq_len=32)["total"]
    double = run_json(capsys, "--config", str(TINY), "--seq-len", "32", "--micro-batch", "8", "--precision", "fp32")
    acts = base["memory"]["training_breakdown"]["activations"]
    assert double["memory"]["training_breakdown"]["activations"] == pytest.approx(2 * acts)
    ckpt = run_json(
        capsys,
        "--config",
        str(TINY),
        "--seq-len",
        "32",
        "--micro-batch",
        "4",
        "--precision",
        "fp32",
        "--activation-checkpointing",
    )
    assert ckpt["memory"]["training_settings"]["activation_checkpointing"] is True
    assert ckpt["memory"]["training_breakdown"]["activations"] < acts
    assert ckpt["memory"]["korthikanti_activation_bytes"] == korthikanti_activation_bytes(
        32, 4, cfg.d_model, cfg.n_heads, cfg.n_layers, recompute=True
    )
    # the inference estimate uses the same batch and context
    assert base["memory"]["inference_settings"] == {"weights": "fp32", "batch": 4, "context": 32}


def test_plan_epoch_fit_and_optimal_tokens_of_a_model(capsys: pytest.CaptureFixture[str]) -> None:
    chin = run_json(capsys, "--params", "1B")["chinchilla"]
    epoch = run_json(capsys, "--params", "1B", "--fit", "epoch")["chinchilla"]
    assert chin["fit"]["name"] == "chinchilla" and chin["fit"]["coefficients"]["alpha"] == 0.33917
    assert epoch["fit"]["name"] == "epoch" and epoch["fit"]["coefficients"] == {
        "E": 1.8172,
        "A": 482.01,
        "B": 2085.43,
        "alpha": 0.3478,
        "beta": 0.3658,
    }
    for out, fit in ((chin, FITS["chinchilla"]), (epoch, FITS["epoch"])):
        n, d = fit.optimal(out["budget_flops"])
        assert (out["fit"]["params"], out["fit"]["tokens"]) == pytest.approx((n, d))
        assert out["fit"]["loss"] == pytest.approx(fit.loss(n, d))
        assert out["fit"]["optimal_tokens_for_params"] == pytest.approx(fit.optimal_tokens(1e9))
        assert out["rule_tokens_for_params"] == 20e9
    assert epoch["fit"]["params"] != pytest.approx(chin["fit"]["params"], rel=0.01)


def test_plan_gpu_hours_on_this_machine(capsys: pytest.CaptureFixture[str]) -> None:
    out = run_json(capsys, "--params", "10M", "--this-machine", "--utilisation", "0.5")
    c = out["compute"]
    peak = c["peak_flops"]["this machine"]
    assert 1e9 < peak < 1e14 and c["utilisation"] == 0.5
    assert set(ACCELERATORS) <= set(c["gpu_hours"])
    for name, hours in c["gpu_hours"].items():
        assert hours == pytest.approx(out["flops"] / (c["peak_flops"][name] * 0.5) / 3600)
    # a budget in hours of this machine
    here = run_json(capsys, "--gpu-hours", "2", "--gpu", "here")
    assert here["compute"]["gpu"] == "this machine"
    assert here["flops"] == pytest.approx(2 * 3600 * here["compute"]["peak_flops"]["this machine"] * 0.4)
    assert here["compute"]["gpu_hours"]["this machine"] == pytest.approx(2.0)


def test_plan_known_models_table(capsys: pytest.CaptureFixture[str]) -> None:
    rows = run_json(capsys, "--known-models")["known_models"]
    assert {r["name"] for r in rows} >= {"GPT-3", "Chinchilla", "LLaMA 7B", "BloombergGPT"}
    for r in rows:
        assert r["flops"] == pytest.approx(6 * r["params"] * r["tokens"]) and r["pf_days"] == pytest.approx(
            r["flops"] / PF_DAY
        )
    assert main(["plan", "--known-models"]) == 0
    text = capsys.readouterr().out
    assert "under-trained" in text and "about right" in text and "BloombergGPT" in text


def test_inference_memory_counts_the_real_kv_cache() -> None:
    from lmkit.models import build_model
    from lmkit.plan import inference_memory, kv_cache_bytes

    def nbytes(ts: list[torch.Tensor]) -> int:
        return sum(t.numel() * t.element_size() for t in ts)

    dec = ModelConfig(vocab_size=300, d_model=64, n_layers=3, n_heads=4, max_seq_len=128)
    cache = build_model(dec).new_cache(2, 100)
    assert kv_cache_bytes(dec, 2, 100) == nbytes(cache.k + cache.v)
    pytest.importorskip("lmkit.models.encdec")
    ed = ModelConfig(
        family="encdec", vocab_size=400, d_model=64, n_layers=2, n_heads=4, max_seq_len=64, max_target_len=16
    )
    model = build_model(ed).eval()
    with torch.no_grad():
        enc = model.encode(torch.randint(105, 400, (3, 50)))
        cross = model.cross_kv(enc)
    cache = model.new_cache(3)
    assert kv_cache_bytes(ed, 3, 50) == nbytes(cache.k + cache.v) + nbytes([t for kv in cross for t in kv])
    assert kv_cache_bytes(ModelConfig(family="encoder"), 4, 128) == 0
    # weights in each format + a KV cache growing with the context
    short, long = inference_memory(dec, None, 1, 64, "int8"), inference_memory(dec, None, 1, 128, "int8")
    assert short["weights"] == count_params(dec).total
    assert long["kv_cache"] == 2 * short["kv_cache"] == 2 * kv_cache_bytes(dec, 1, 64)
    assert inference_memory(dec, None, 1, 64, "bf16")["kv_cache"] == short["kv_cache"] / 2


def test_plan_readable_output_and_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "--params", "125M", "--tokens", "2.5B"]) == 0
    text = capsys.readouterr().out
    assert "Chinchilla" in text and "PF-days" in text and "H100" in text
    assert main(["plan"]) == 0  # nothing to plan: the table of known models
    assert "GPT-3" in capsys.readouterr().out
    assert main(["plan", "--params", "1B", "--gpu-hours", "10", "--gpu", "Z80"]) == 2
    assert "--gpu" in capsys.readouterr().err
    assert main(["plan", "--params", "lots"]) == 2
    with pytest.raises(LmkitError):
        make_plan(params=1e9, tokens=1e10, flops=1e20)
    assert parse_count("1.4T") == 1.4e12 and parse_count("125M") == 125e6


# --------------------------------------------------------------------------- memory against real training

# What a user reads: `lmkit plan`'s precise training estimate (with the runtime baseline that
# `lmkit plan --this-machine` measured and cached for this machine) against the whole-process peak
# RSS of a real `lmkit pretrain` of the same settings, each in its own child process, as a user
# runs it: no allocator settings in the environment, no baseline measured by the test.
MEMORY_TOLERANCE = 0.10


def random_words_corpus(folder: Path, n_docs: int = 1200, seed: int = 0) -> Path:
    """Text over a 6,000-word made-up lexicon: enough distinct merges for an 8,192-token vocabulary."""
    rng = random.Random(seed)
    words = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(3, 9))) for _ in range(6000)]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "corpus.jsonl"
    with path.open("w", encoding="utf-8") as f:
        for i in range(n_docs):
            f.write(json.dumps({"id": f"d{i}", "text": " ".join(rng.choice(words) for _ in range(120))}) + "\n")
    return path


@pytest.fixture(scope="module")
def packed(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    """Packed shard folders (vocabulary 512, 4,096 and 8,192) of one small corpus."""
    from lmkit.config import DataConfig
    from lmkit.data.prepare import prepare

    root = tmp_path_factory.mktemp("plan_mem")
    data = random_words_corpus(root / "data")
    out = {}
    for vocab in (512, 4096, 8192):
        tok, _, _ = prepare(
            DataConfig(paths=[str(data)], val_fraction=0.05), root / f"prep{vocab}", vocab, show_progress=False
        )
        assert tok.vocab_size == vocab
        out[vocab] = root / f"prep{vocab}" / "shards"
    return out


SMALL = ROOT / "configs" / "cpu-small.yaml"
# name: (config, vocabulary, overrides, micro-batch, activation checkpointing). One case per term the
# plan adds: each family with and without checkpointing, train.memory lean, the GQA shape, Muon (as
# cpu-small is). Dropped as repeats: tiny encoder with checkpointing (cpu-small encoder's covers it),
# cpu-small decoder at mb 8 (the GQA and as-is cases cover glibc's heap), and lean on the encoder and
# on cpu-small as it is (lean's heap is nothing whatever the family: one lean case covers it).
MEMORY_CASES: dict[str, tuple[Path, int, dict[str, Any], int, bool]] = {
    "tiny decoder": (TINY, 512, {}, 4, False),
    "cpu-small decoder, mb 16, checkpointing": (SMALL, 8192, {}, 16, True),
    "cpu-small encoder": (SMALL, 8192, {"model.family": "encoder"}, 4, False),
    "cpu-small encoder, mb 16, checkpointing": (SMALL, 8192, {"model.family": "encoder"}, 16, True),
    "cpu-small-shaped encdec (context 128)": (
        SMALL,
        8192,
        {"model.family": "encdec", "model.max_seq_len": 128},
        4,
        False,
    ),
    "cpu-small-shaped encdec (context 128), mb 8, checkpointing": (
        SMALL,
        8192,
        {"model.family": "encdec", "model.max_seq_len": 128},
        8,
        True,
    ),
    # the others run with glibc's allocator (train.memory auto on a machine with room: fast); lean's plan too
    "cpu-small decoder, train.memory lean": (SMALL, 8192, {"train.memory": "lean"}, 8, False),
    # the imported GQA Llama of benchmarks/generate_speed.py (SmolLM2's shape shrunk: 8 query / 2
    # key-value heads, tied embeddings), vocabulary 8,192: 26.7M parameters (measured once from its
    # imported checkpoint, `lmkit plan --config CKPT`: -3.9% at micro-batch 4)
    "imported-GQA-shaped decoder (26.7M)": (
        SMALL,
        8192,
        {"model.d_model": 512, "model.n_layers": 8, "model.n_heads": 8, "model.n_kv_heads": 2, "model.d_ff": 1408}
        | {"model.tie_embeddings": "true", "model.rope_theta": 100000.0},
        4,
        False,
    ),
    # cpu-small as it is (vocabulary 4,096, untied head, Muon, micro-batch 16): its default run
    "cpu-small as it is": (SMALL, 4096, {"train.optimizer": "muon"}, 16, False),
}
# what the runs and their plans share unless a case says otherwise: AdamW (cpu-small's own is Muon)
CASE_DEFAULTS: dict[str, Any] = {"train.optimizer": "adamw"}


def _flags(overrides: dict[str, Any]) -> list[str]:
    return [x for k, v in overrides.items() for x in (f"--{k}", str(v))]


@pytest.fixture(scope="module")
def runs(
    lmkit_cache: Any, packed: dict[int, Path], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, subprocess.Popen[str]]:
    """`lmkit pretrain` of each case started, side by side (their time does not matter here, only
    memory): 3 steps with an evaluation, a checkpoint, the TensorBoard writer and the loss plot."""
    root = tmp_path_factory.mktemp("plan_runs")
    procs = {}
    for i, (name, (config, vocab, overrides, mb, ckpt)) in enumerate(MEMORY_CASES.items()):
        args = [
            sys.executable,
            "-m",
            "lmkit.cli",
            "pretrain",
            "--config",
            str(config),
            "--data",
            str(packed[vocab]),
            "--out",
            str(root / f"run{i}"),
            "--quiet",
            "--train.max_steps",
            "3",
            "--train.eval_every",
            "2",
            "--train.eval_batches",
            "2",
            "--train.micro_batch_size",
            str(mb),
            "--train.batch_size",
            str(mb),
            "--train.activation_checkpointing",
            str(ckpt).lower(),
            "--train.tensorboard",
            "true",
            "--train.precision",
            "fp32",
            *_flags({**CASE_DEFAULTS, **overrides}),
        ]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}  # the runs side by side: one thread each
        procs[name] = subprocess.Popen(
            [sys.executable, "-c", _LAUNCHER, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )
    return procs


@pytest.fixture(scope="module")
def measured_peaks(runs: dict[str, subprocess.Popen[str]]) -> dict[str, tuple[float, str]]:
    """Whole-process peak RSS (the child's own rusage, as /usr/bin/time reports it) of each run."""
    out = {}
    for name, proc in runs.items():
        stdout, err = proc.communicate(timeout=1200)
        assert proc.returncode == 0, (name, err[-2000:])
        rec = json.loads(stdout.strip().splitlines()[-1])
        assert rec["status"] == 0, (name, err[-2000:])
        out[name] = (float(rec["maxrss_kib"] * 1024), err)
    return out


# Starts the run from a small process, as a shell does for /usr/bin/time: Linux carries a process's
# peak-RSS figure over fork+exec from the process that started it, so a run started straight from
# this (large) test process would report at least this process's own peak.
_LAUNCHER = """
import json, os, subprocess, sys
p = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL)
_, status, usage = os.wait4(p.pid, 0)
print(json.dumps({"status": status, "maxrss_kib": usage.ru_maxrss}))
"""


@pytest.fixture(scope="module")
def planned(lmkit_cache: Any, packed: dict[int, Path], runs: dict[str, Any]) -> dict[str, float]:
    """What `lmkit plan` prints for each case, after `lmkit plan --this-machine` measured (in child
    processes) and cached this machine's runtime baselines while the runs go: the pages of torch's
    library a process maps beside those it touches vary with the kernel's page cache (the same
    probe measured 360 and 414 MB on one machine an hour apart), so the baseline is measured in the
    runs' conditions, not before them."""

    def plan_json(*argv: str) -> dict[str, Any]:
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            assert main(["plan", *argv, "--json"]) == 0
        return json.loads(buf.getvalue())

    first = plan_json("--config", str(TINY), "--this-machine")
    assert "measured on this machine" in first["memory"]["runtime_source"]
    out = {}
    for name, (config, vocab, overrides, mb, ckpt) in MEMORY_CASES.items():
        argv = [
            "--config",
            str(config),
            "--micro-batch",
            str(mb),
            *(["--activation-checkpointing"] if ckpt else []),
            "--gpu",
            "here",  # a run on this machine's CPU: the whole process, with its allocator's heap
            "--train.precision",
            "fp32",  # the runs' precision, as the runs are told
            "--model.vocab_size",
            str(vocab),  # a run takes its shards' vocabulary, whatever the config says
            *_flags({**CASE_DEFAULTS, **overrides}),
        ]
        p = plan_json(*argv)
        assert p["memory"]["runtime_source"].startswith("measured on this machine")  # the cached figure
        assert p["memory"]["training_settings"]["memory"] == overrides.get("train.memory", "fast")
        out[name] = float(p["memory"]["training_breakdown"]["total"])
    return out


@pytest.fixture(scope="module")
def lmkit_cache(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A cache folder of this module's own, shared by the plan and the runs it starts."""
    mp = pytest.MonkeyPatch()
    mp.setenv("LMKIT_CACHE", str(tmp_path_factory.mktemp("lmkit_cache")))
    mp.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    yield
    mp.undo()


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="Linux: peak RSS from the kernel")
def test_plan_memory_is_within_10_percent_of_the_real_peak(
    lmkit_cache: Any, planned: dict[str, float], measured_peaks: dict[str, tuple[float, str]]
) -> None:
    rows = []
    for name, predicted in planned.items():
        measured = measured_peaks[name][0]
        rows.append((name, predicted, measured, measured / predicted - 1))
    print(
        "\n"
        + "\n".join(
            f"{n:<60} plan {p / 1e6:8.1f} MB  measured {m / 1e6:8.1f} MB  {100 * e:+5.1f}%" for n, p, m, e in rows
        )
    )
    bad = [r for r in rows if abs(r[3]) > MEMORY_TOLERANCE]
    assert not bad, bad


def test_the_run_end_counts_only_where_it_exceeds_a_step_and_muon_keeps_one_moment() -> None:
    from lmkit.models import build_model
    from lmkit.plan.memory import optimizer_one_moment_params
    from lmkit.train.muon import is_muon_param

    # a peak is a maximum: the end of a run (final evaluation, checkpoint, plot) comes after the
    # steps' transient tensors are gone, so it adds only what it holds beyond them
    small = ModelConfig(vocab_size=512, d_model=8, n_layers=1, n_heads=1, max_seq_len=16)
    few = training_memory(small, micro_batch=1, runtime_bytes=3e8, finish_bytes=4e7, heap="lean")
    block = 16 * 512 * 4  # the loss's fp32 block of logits, kept from step to step
    assert few["total"] == pytest.approx(3e8 + few["weights"] + few["optimizer"] + block + 4e7)
    big = ModelConfig(vocab_size=4096, d_model=128, n_layers=4, n_heads=4, max_seq_len=128)
    a = training_memory(big, micro_batch=16, runtime_bytes=3e8, finish_bytes=4e7, heap="fast")
    b = training_memory(big, micro_batch=16, runtime_bytes=3e8, finish_bytes=0.0, heap="fast")
    assert a["total"] == b["total"] and a["finish"] == 4e7  # the step's tensors outweigh the end
    step = a["gradients"] + a["activations"] + a["loss"] - min(a["gradients"], a["activations"] + a["loss"])
    assert a["total"] == pytest.approx(3e8 + a["weights"] + a["optimizer"] + a["heap"] + step)
    # an evaluation holds a block of logits and its log-softmax beside the loss's block; glibc maps a
    # block of 32 MiB or more on its own, on top of the heap the steps left (vocabulary 8,192)
    wide = ModelConfig(vocab_size=8192, d_model=128, n_layers=4, n_heads=4, max_seq_len=128, tie_embeddings=False)
    lean, fast = (training_memory(wide, micro_batch=8, runtime_bytes=3e8, heap=h) for h in ("lean", "fast"))
    assert lean["evaluation"] == fast["evaluation"] == 2 * 1024 * 8192 * 4
    assert lean["total"] == pytest.approx(3e8 + lean["weights"] + lean["optimizer"] + 1024 * 8192 * 4 * 3)
    step = (
        fast["gradients"]
        + fast["activations"]
        + fast["loss"]
        - min(fast["gradients"], fast["activations"] + fast["loss"])
    )
    assert fast["total"] == pytest.approx(
        3e8 + fast["weights"] + fast["optimizer"] + fast["heap"] + step + fast["evaluation"]
    )
    # Muon keeps one moment of the matrices it steps (the ones lmkit.train.muon hands it), AdamW two
    for family, tied in (("decoder", False), ("encoder", True), ("encdec", True)):
        cfg = ModelConfig(
            family=family, vocab_size=4096, d_model=128, n_layers=4, n_heads=4, max_seq_len=128, tie_embeddings=tied
        )
        stepped = sum(p.numel() for n, p in build_model(cfg).named_parameters() if is_muon_param(n, p))
        assert optimizer_one_moment_params(cfg, "muon") == stepped and optimizer_one_moment_params(cfg) == 0
        adam, muon = (training_memory(cfg, micro_batch=4, optimizer=o)["optimizer"] for o in ("adamw", "muon"))
        assert adam - muon == 4 * stepped
    with pytest.raises(LmkitError, match="train.optimizer must be one of adamw|muon"):
        training_memory(big, optimizer="sgd")


def test_runtime_baseline_cache_holds_both_figures_per_family_and_an_old_one_counts_as_unmeasured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lmkit.plan.baseline import BASELINE_FILE, finish_baseline, runtime_baseline
    from lmkit.plan.compute import PLAN_TERMS
    from lmkit.plan.measure import machine_key
    from lmkit.plan.memory import FINISH_BASELINE_BYTES

    monkeypatch.setenv("LMKIT_CACHE", str(tmp_path))
    path = tmp_path / BASELINE_FILE
    default = "lmkit's default (lmkit plan --this-machine measures this machine's)"
    # a whole-run peak from before, and then one figure for every family: neither is a family's figure
    for old in ({"runtime_bytes": 4.1e8}, {"runtime_bytes": 3.4e8, "finish_bytes": 3e7}):
        path.write_text(json.dumps({"key": machine_key(), **old, "when": "2026-01-01"}))
        for fam in ("decoder", "encoder"):
            assert runtime_baseline(fam) == (PLAN_TERMS[fam].runtime_bytes, default)
            assert finish_baseline(fam) == FINISH_BASELINE_BYTES
    figures = {
        "decoder": {"runtime_bytes": 3.4e8, "finish_bytes": 3e7},
        "encoder": {"runtime_bytes": 3.5e8, "finish_bytes": 3.1e7},
    }
    path.write_text(json.dumps({"key": machine_key(), "families": figures, "when": "2026-01-02"}))
    assert runtime_baseline("decoder") == (3.4e8, "measured on this machine (2026-01-02)") and finish_baseline() == 3e7
    assert runtime_baseline("encoder")[0] == 3.5e8 and finish_baseline("encoder") == 3.1e7
    assert runtime_baseline("encdec") == (PLAN_TERMS["encdec"].runtime_bytes, default)  # not in this cache
    with pytest.raises(LmkitError, match="model.family must be one of"):
        runtime_baseline("gpt")
    path.write_text(json.dumps({"key": "another machine", "families": figures}))
    assert runtime_baseline()[0] == PLAN_TERMS["decoder"].runtime_bytes and finish_baseline() == FINISH_BASELINE_BYTES


def test_the_plan_counts_each_familys_own_runtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A family's measured runtime reaches its plan's total (and only its plan's), with or without a cache."""
    from lmkit.plan.baseline import BASELINE_FILE
    from lmkit.plan.compute import PLAN_TERMS
    from lmkit.plan.measure import machine_key

    monkeypatch.setenv("LMKIT_CACHE", str(tmp_path))

    def runtime(family: str) -> float:
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            assert main(["plan", "--config", str(TINY), "--model.family", family, "--json"]) == 0
        return float(json.loads(buf.getvalue())["memory"]["training_breakdown"]["runtime"])

    assert {f: runtime(f) for f in PLAN_TERMS} == {f: t.runtime_bytes for f, t in PLAN_TERMS.items()}
    figures = {f: {"runtime_bytes": 3e8 + i * 1e7, "finish_bytes": 3e7} for i, f in enumerate(PLAN_TERMS)}
    (tmp_path / BASELINE_FILE).write_text(json.dumps({"key": machine_key(), "families": figures, "when": "today"}))
    assert {f: runtime(f) for f in PLAN_TERMS} == {f: v["runtime_bytes"] for f, v in figures.items()}


def test_plan_reads_a_checkpoint_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from lmkit.models import build_model
    from lmkit.models.checkpoint import save_checkpoint

    cfg = ModelConfig(vocab_size=300, d_model=32, n_layers=2, n_heads=2, max_seq_len=32)
    ckpt = save_checkpoint(tmp_path / "ckpt", build_model(cfg), cfg, meta={})
    out = run_json(capsys, "--config", str(ckpt), "--tokens", "1M")
    assert out["params"] == count_params(cfg).total and out["tokens"] == 1e6
    assert out["flops"] == pytest.approx(flops_per_token(cfg, 32) * 1e6)
    assert main(["plan", "--config", str(tmp_path / "missing.yaml")]) == 2


@pytest.mark.slow
def test_measure_times_real_steps_and_predicts_the_run(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "--measure", str(TINY), "--measure-steps", "2", "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    cfg = load_run_config(TINY)
    assert rep["params"] == count_params(cfg.model).total and len(rep["step_seconds"]) == 2
    run = rep["run"]
    assert run["steps"] == cfg.train.max_steps and run["tokens"] == cfg.train.max_steps * cfg.train.batch_size * 64
    assert run["train_seconds"] == pytest.approx(run["steps"] * rep["step_seconds_median"])
    assert run["wall_seconds"] > run["train_seconds"] > 0
    assert rep["tokens_per_second"] == pytest.approx(rep["tokens_per_step"] / rep["step_seconds_median"])
    assert 0 < rep["mfu"] < 1
    assert rep["memory"]["measured_bytes"] > 0 and rep["memory"]["predicted_bytes"] > 0


@pytest.mark.parametrize("unbuffered", ["", "1"])
def test_output_cut_short_by_the_reader_ends_quietly(unbuffered: str) -> None:
    """`lmkit plan ... | head -1`: a reader that has gone ends the command with 141, not a traceback."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first line
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    if unbuffered:
        env["PYTHONUNBUFFERED"] = unbuffered
    proc = subprocess.run(
        [sys.executable, "-m", "lmkit.cli", "plan", "--params", "1B"],
        stdout=write_end,
        stderr=subprocess.PIPE,
        env=env,
        timeout=60,
    )
    os.close(write_end)
    assert proc.returncode == 141 and proc.stderr.decode() == ""


def test_a_run_records_its_peak_beside_the_plan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """meta.json and metrics.jsonl of every run hold the measured peak and the plan's prediction;
    the run summary and the model card print both with the error; the plan quotes its track record."""
    from lmkit.ship.card.render import render_card

    monkeypatch.setenv("LMKIT_CACHE", str(tmp_path / "cache"))
    data = random_words_corpus(tmp_path / "data", n_docs=60)
    assert (
        main(
            [
                "pretrain",
                "--config",
                str(TINY),
                "--data",
                str(data),
                "--out",
                str(tmp_path / "run"),
                "--train.max_steps",
                "2",
                "--train.eval_every",
                "0",
                "--quiet",
            ]
        )
        == 0
    )
    assert "lmkit plan predicted" in capsys.readouterr().out
    ckpt = sorted((tmp_path / "run").glob("ckpt-*"))[-1]
    mem = json.loads((ckpt / "meta.json").read_text())["memory"]
    assert mem["measured_bytes"] > 1e8 and mem["predicted_bytes"] > 1e8
    assert mem["error"] == pytest.approx(mem["measured_bytes"] / mem["predicted_bytes"] - 1)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert any("peak_memory_bytes" in r and "predicted_memory_bytes" in r for r in records)
    assert "peak memory:" in render_card(ckpt) and "`lmkit plan` predicted" in render_card(ckpt)
    out = run_json(capsys, "--config", str(TINY))
    assert len(out["memory"]["memory_track_record"]) == 1  # this machine's last run, measured / predicted - 1


# --------------------------------------------------------------------------- train.memory: the allocator


def test_glibc_heap_is_planned_for_fast_only_and_auto_goes_lean_only_when_fast_does_not_fit() -> None:
    from lmkit.plan.memory import GLIBC_HEAP_FACTOR, activation_bytes, choose_heap, training_memory

    cfg = load_run_config(ROOT / "configs" / "cpu-small.yaml").model
    acts = activation_bytes(cfg, 8, None, "fp32", checkpointing=False)
    fast = training_memory(cfg, None, 8, None, "fp32", checkpointing=True, heap="fast")
    lean = training_memory(cfg, None, 8, None, "fp32", checkpointing=True, heap="lean")
    gpu = training_memory(cfg, None, 8, None, "fp32", checkpointing=True)
    # glibc keeps about one micro-batch's activations (as if not checkpointed) beside the live tensors
    assert fast["heap"] == pytest.approx(GLIBC_HEAP_FACTOR * (acts["layers"] + acts["outside"])) and fast["heap"] > 0
    assert lean["heap"] == gpu["heap"] == 0 and fast["total"] == pytest.approx(lean["total"] + fast["heap"])
    assert choose_heap("auto", 6e8, 5e8, 2e10) == (
        "fast",
        "auto: 0.60 GB planned with glibc's allocator, 20.00 GB available",
    )
    heap, why = choose_heap("auto", 6e8, 5e8, 5.5e8)
    assert heap == "lean" and "0.60 GB planned with glibc's allocator but 0.55 GB available" in why
    assert "lean plans 0.50 GB" in why
    assert choose_heap("auto", 6e8, 5e8, None)[0] == "fast"
    assert choose_heap("lean", 6e8, 5e8, 2e10) == ("lean", "given")
    assert choose_heap("fast", 6e8, 5e8, 1.0) == ("fast", "given")
    with pytest.raises(LmkitError, match="train.memory must be one of auto|fast|lean"):
        choose_heap("slow", 6e8, 5e8, 1.0)


def test_plan_here_counts_the_heap_of_the_allocator_a_run_would_use(capsys: pytest.CaptureFixture[str]) -> None:
    fast = run_json(capsys, "--config", str(TINY), "--gpu", "here", "--train.precision", "fp32")
    lean = run_json(
        capsys, "--config", str(TINY), "--gpu", "here", "--train.precision", "fp32", "--train.memory", "lean"
    )
    gpu = run_json(capsys, "--config", str(TINY), "--train.precision", "fp32")
    assert fast["memory"]["training_settings"]["memory"] == "fast" and fast["memory"]["training_breakdown"]["heap"] > 0
    assert any(n.startswith("train.memory fast (auto: ") for n in fast["notes"])
    assert lean["memory"]["training_settings"]["memory"] == "lean" and lean["memory"]["training_breakdown"]["heap"] == 0
    assert gpu["memory"]["training_breakdown"]["heap"] == 0  # an A100's memory holds no host heap
    assert fast["memory"]["training_bytes"] == pytest.approx(
        lean["memory"]["training_bytes"] + fast["memory"]["training_breakdown"]["heap"]
    )
    assert main(["plan", "--config", str(TINY), "--train.memory", "slow"]) == 2
    assert "train.memory must be one of auto|fast|lean, got 'slow'" in capsys.readouterr().err


def test_train_memory_auto_runs_glibc_and_goes_lean_only_when_the_plan_does_not_fit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """By default a run keeps glibc's allocator (fast); where the plan says it would then not fit in
    the memory available it goes lean, says so in its first line and records it (resolved.yaml,
    meta.json); a resumed run may settle it otherwise."""
    import yaml

    import lmkit.plan.measure
    import lmkit.train.rss

    lean_calls: list[int] = []
    monkeypatch.setattr(
        lmkit.train.rss, "lean_malloc", lambda: lean_calls.append(1) or True
    )  # this process keeps its allocator
    monkeypatch.setenv("LMKIT_CACHE", str(tmp_path / "cache"))
    data = random_words_corpus(tmp_path / "data", n_docs=60)

    def run(name: str, *extra: str) -> tuple[dict[str, Any], dict[str, Any], str]:
        assert (
            main(
                [
                    "pretrain",
                    "--config",
                    str(TINY),
                    "--data",
                    str(data),
                    "--out",
                    str(tmp_path / name),
                    "--train.max_steps",
                    "2",
                    "--train.eval_every",
                    "0",
                    "--train.device",
                    "cpu",
                    *extra,
                ]
            )
            == 0
        )
        ckpt = sorted((tmp_path / name).glob("ckpt-*"))[-1]
        return (
            json.loads((ckpt / "meta.json").read_text()),
            yaml.safe_load((ckpt / "resolved.yaml").read_text()),
            capsys.readouterr().err,
        )

    meta, resolved, err = run("fast", "--quiet")
    choice = meta["memory"]["memory_choice"]
    assert choice.startswith("fast (auto: ") and "GB available" in choice
    assert resolved["train"]["memory"] == "fast" and lean_calls == []

    monkeypatch.setattr(lmkit.plan.measure, "available_memory_bytes", lambda: 0.0)  # a machine out of memory
    monkeypatch.setattr(lmkit.train.rss, "rss_bytes", lambda: 0.0)  # (a test worker's own size would count)
    meta_lean, resolved, err = run("lean")
    first = next(line for line in err.splitlines() if line.startswith("lmkit pretrain:"))
    assert ", memory lean (auto: " in first and "planned with glibc's allocator but" in first
    assert meta_lean["memory"]["memory_choice"].startswith("lean (auto: ") and resolved["train"]["memory"] == "lean"
    assert lean_calls == [1]
    assert meta_lean["memory"]["predicted_bytes"] < meta["memory"]["predicted_bytes"]  # no heap planned

    assert (
        main(
            [
                "pretrain",
                "--out",
                str(tmp_path / "lean"),
                "--resume",
                "--max-steps",
                "3",
                "--quiet",
                "--train.memory",
                "fast",
            ]
        )
        == 0
    )  # changes no number the run computes: may change on resume
    resumed = json.loads((tmp_path / "lean" / "ckpt-0000003" / "meta.json").read_text())
    assert resumed["memory"]["memory_choice"] == "fast"
    assert lean_calls == [1]


@pytest.mark.skipif(not Path("/proc/self/status").is_file() or sys.platform != "linux", reason="glibc on Linux")
def test_lean_malloc_returns_freed_blocks_that_glibc_keeps() -> None:
    """A freed 8 MB block stays resident under glibc's allocator once a 16 MB block has raised its
    mmap threshold; after lean_malloc() it goes back to the system."""
    script = """
import ctypes, ctypes.util, sys
from lmkit.train.rss import lean_malloc, rss_bytes
if sys.argv[1] == "lean":
    assert lean_malloc()
libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
big = libc.malloc(16 << 20); ctypes.memset(big, 1, 16 << 20); libc.free(big)  # glibc: threshold now 16 MB
before = rss_bytes()
block = libc.malloc(8 << 20); ctypes.memset(block, 1, 8 << 20); libc.free(block)
print(rss_bytes() - before)
"""
    kept = {
        mode: float(
            subprocess.run(
                [sys.executable, "-c", script, mode], capture_output=True, text=True, check=True, timeout=60
            ).stdout
        )
        for mode in ("fast", "lean")
    }
    assert kept["fast"] > 6e6 and kept["lean"] < 1e6, kept


def test_infill_flops_count_the_whole_window_the_decoder_writes() -> None:
    """BART's text infilling (``objective: infill``): the decoder reads and writes the whole raw window and
    EOS, not span corruption's short target; the plan's FLOPs equal a hand count and the matmuls a step runs."""
    from lmkit.models import build_model
    from lmkit.objectives import SpecialIds, make_batch, window_length
    from lmkit.plan.compute import decoded_target_len

    bart = {"norm": "layer", "bias": "all", "residual": "post", "embed_norm": True, "pos_encoding": "learned"}
    kw = {"d_model": 32, "n_layers": 2, "n_heads": 4, "d_ff": 64, "mlp": "plain", "activation": "gelu", **bart}
    cfg = ModelConfig(family="encdec", vocab_size=160, max_seq_len=40, max_target_len=24, objective="infill", **kw)
    span = ModelConfig(**{**cfg.__dict__, "objective": "span"})
    S, d, L, f, V = 40, 32, 2, 64, 160
    Tt = 24  # min(max_seq_len, max_target_len): the window of 23 tokens, then EOS
    assert decoded_target_len(cfg, S) == Tt and window_length(cfg) == Tt - 1
    assert decoded_target_len(span, S) < Tt  # what the plan counted for every encoder-decoder before
    # by hand, per window (forward): encoder blocks over S inputs (q/k/v/o 4d², MLP 2df); decoder blocks over the
    # Tt targets (self q/k/v/o and cross q/o: 6d², MLP 2df) and the vocabulary head; cross keys/values (2d²) over
    # S inputs; attention 4·d per query-key pair (scores and weighted sum) of every self and cross attention
    enc = L * (4 * d * d + 2 * d * f) * S
    dec = (L * (6 * d * d + 2 * d * f) + V * d) * Tt
    cross_kv = L * 2 * d * d * S
    attention = 4 * d * L * (S * S + Tt * Tt + Tt * S)
    hand = 3 * (2 * (enc + dec + cross_kv) + attention) / S  # training: 3 × forward, per input token
    assert flops_per_token(cfg, S) == pytest.approx(hand, rel=1e-12)
    # and a real step multiplies that much (attention's batched products aside, as above)
    specials = SpecialIds(pad=1, bos=0, eos=2, mask=3, vocab_size=V, special=(0, 1, 2, 3), decoder_start=2)
    g = torch.Generator().manual_seed(0)
    batch = make_batch(cfg, torch.randint(4, V, (4, window_length(cfg)), generator=g), specials, g)
    assert int((batch["labels"] != -100).any(dim=0).nonzero().max()) + 1 == Tt
    model = build_model(cfg)
    counter = MatmulFlops()
    with counter:
        model.loss(batch).backward()
    assert counter.flops == pytest.approx((hand - 3 * attention / S) * 4 * S, rel=1e-9)
