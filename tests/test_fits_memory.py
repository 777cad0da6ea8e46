"""The memory verdict of ``lmkit plan`` (``lmkit.plan.fits_memory``): the named device's memory, whether
a training run fits in it, and what would make it fit, each change with its memory per device."""

from __future__ import annotations

import pytest

from lmkit.cli import main
from lmkit.config import ModelConfig
from lmkit.plan.fits_memory import DEVICE_MEMORY_GIB, GIB, device_memory_bytes, memory_verdict, tensor_parallel_memory
from lmkit.plan.make import make_plan
from lmkit.plan.memory import training_memory


def test_device_table_and_verdict() -> None:
    assert device_memory_bytes("a100") == 80 * GIB and device_memory_bytes("H200") == 141 * GIB
    assert device_memory_bytes("here") is None
    shape = ModelConfig(family="decoder", vocab_size=32000, d_model=2048, n_layers=16, n_heads=16, max_seq_len=2048)
    for device, gib in DEVICE_MEMORY_GIB.items():
        for mb in (1, 4, 16):
            need = training_memory(shape, None, mb, 2048, "bf16", "ddp", 1, False)["total"]
            f = memory_verdict(
                shape,
                float(_params(shape)),
                device,
                micro_batch=mb,
                seq_len=2048,
                precision="bf16",
                sharding="ddp",
                n_gpus=1,
                checkpointing=False,
            )
            assert f is not None and f["capacity_bytes"] == gib * GIB
            assert f["needed_bytes"] == pytest.approx(need)
            assert f["fits"] == (need <= gib * GIB)


def _params(cfg: ModelConfig) -> int:
    from lmkit.plan.compute import count_params

    return count_params(cfg).total


def test_the_70b_plan_on_a100_does_not_fit_and_says_what_does(capsys: pytest.CaptureFixture[str]) -> None:
    p = make_plan(params=70e9, gpu="A100", n_gpus=2048, sharding="fsdp", seq_len=4096)
    f = p["memory"]["on_device"]
    assert f["device"] == "A100" and f["capacity_bytes"] == 80 * GIB
    assert f["needed_bytes"] == p["memory"]["training_bytes"] > f["capacity_bytes"] and not f["fits"]
    by = {s["change"]: s for s in f["suggestions"]}
    ck = by["activation checkpointing"]
    shape = make_plan(params=70e9, gpu="A100", n_gpus=2048, sharding="fsdp", seq_len=4096, checkpointing=True)["memory"]
    assert ck["bytes"] == pytest.approx(shape["training_bytes"]) and ck["fits"]
    assert f["fitting"]["change"] == "activation checkpointing"
    measured = make_plan(params=70e9, gpu="A100", n_gpus=2048, sharding="fsdp", seq_len=4096, runtime_bytes=2e9)
    assert measured["memory"]["on_device"]["needed_bytes"] == measured["memory"]["training_bytes"]  # same runtime
    assert any(s["change"].startswith("tensor parallelism") and s["flags"] is None for s in f["suggestions"])
    # Korthikanti's figure is labelled: without fused attention, and with it (the 5as/h term dropped)
    m = p["memory"]
    assert m["korthikanti_fused_attention_activation_bytes"] < m["korthikanti_activation_bytes"]
    assert "without fused attention" in m["activation_assumptions"]["korthikanti_activation_bytes"]
    assert (
        main(["plan", "--params", "70e9", "--gpu", "A100", "--gpus", "2048", "--sharding", "fsdp", "--seq-len", "4096"])
        == 0
    )
    out = capsys.readouterr().out
    assert "DOES NOT FIT on one A100 (80 GiB" in out and "--activation-checkpointing" in out
    assert "without fused attention" in out and "lmkit's model, fused attention" in out
    assert main(["plan", "--params", "1B", "--gpu", "H100"]) == 0
    assert "FITS on one H100" in capsys.readouterr().out


def test_smaller_micro_batch_sharding_and_tensor_parallelism() -> None:
    cfg = ModelConfig(family="decoder", vocab_size=32000, d_model=4096, n_layers=32, n_heads=32, max_seq_len=4096)
    n = float(_params(cfg))
    f = memory_verdict(
        cfg, n, "A100", micro_batch=8, seq_len=4096, precision="bf16", sharding="ddp", n_gpus=8, checkpointing=False
    )
    assert f is not None and not f["fits"]
    by = {s["change"].split(" ")[0]: s for s in f["suggestions"]}
    assert {"activation", "micro-batch", "FSDP", "tensor"} <= set(by)
    mb = int(by["micro-batch"]["flags"].split()[-1])
    assert by["micro-batch"]["bytes"] == training_memory(cfg, n, mb, 4096, "bf16", "ddp", 8, False)["total"]
    assert by["FSDP"]["bytes"] == training_memory(cfg, n, 8, 4096, "bf16", "fsdp", 8, False)["total"]
    one = tensor_parallel_memory(cfg, n, 2, 4096, "bf16", "ddp", 8, False, 1)
    assert one["total"] == pytest.approx(training_memory(cfg, n, 2, 4096, "bf16", "ddp", 8, False)["total"])
    assert f["fitting"] is not None and f["fitting"]["bytes"] <= f["capacity_bytes"]


def test_the_verdict_counts_the_run_optimizer_and_end_as_the_plan_does() -> None:
    from lmkit.config import TrainConfig

    cfg = ModelConfig(family="decoder", vocab_size=32000, d_model=2048, n_layers=16, n_heads=16, max_seq_len=2048)
    plans = {
        o: make_plan(
            cfg=cfg, train=TrainConfig(optimizer=o), gpu="A100", micro_batch=4, runtime_bytes=1e9, finish_bytes=5e7
        )
        for o in ("adamw", "muon")
    }
    for o, p in plans.items():
        assert p["memory"]["training_settings"]["optimizer"] == o
        assert p["memory"]["on_device"]["needed_bytes"] == p["memory"]["training_bytes"]
    # Muon keeps one moment (4 B in mixed precision's 12) of the blocks' matrices, not Adam's two
    saved = plans["adamw"]["memory"]["training_bytes"] - plans["muon"]["memory"]["training_bytes"]
    assert saved == pytest.approx(4 * 16 * (4 * 2048**2 + 3 * 2048 * cfg.ffn_width))
    tp = tensor_parallel_memory(cfg, float(_params(cfg)), 4, 2048, "bf16", "ddp", 2, False, 2, 1e9, 5e7, "muon")
    adam_tp = tensor_parallel_memory(cfg, float(_params(cfg)), 4, 2048, "bf16", "ddp", 2, False, 2, 1e9, 5e7)
    assert adam_tp["optimizer"] - tp["optimizer"] == pytest.approx(saved / 2)
