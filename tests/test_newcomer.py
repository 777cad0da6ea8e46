"""What a newcomer reads is true and useful (issue 18): int8 as the course teaches it and as it is
used, a fits / does-not-fit verdict for the named device, whole-line progress when stderr is piped,
and an unreachable Dask scheduler failing fast with its address."""

from __future__ import annotations

import io
import json
import math
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lmkit.cli import main
from lmkit.config import ModelConfig
from lmkit.numerics import example_tensor, int8_scheme_errors, int8_value_table, integer_grid
from lmkit.plan.fit import DEVICE_MEMORY_GIB, GIB, device_memory_bytes, fit_on_device, tensor_parallel_memory
from lmkit.plan.make import make_plan
from lmkit.plan.memory import training_memory
from lmkit.progress import EVERY_SECONDS, LineProgress, progress

ROOT = Path(__file__).resolve().parents[1]

# --------------------------------------------------------------------------- int8: the lesson, then practice


def test_int8_of_pi_on_the_integer_grid_first_then_absmax_in_a_tensor() -> None:
    rows = int8_value_table(math.pi)
    grid = rows[0]
    assert grid["scheme"].startswith("integer grid") and grid["q"] == 3 and grid["stored"] == 3.0
    assert grid["error"] == pytest.approx(3 - math.pi) and abs(grid["error"]) == pytest.approx(0.1416, abs=1e-4)
    by_absmax = {r["absmax"]: r for r in rows[1:]}
    assert by_absmax[4.0]["q"] == round(math.pi * 127 / 4) == 100 and by_absmax[8.0]["q"] == 50
    for r in rows[1:]:  # round to nearest: at most half a step (absmax / 127) off
        assert r["step"] == pytest.approx(r["absmax"] / 127, rel=1e-6)
        assert abs(r["error"]) <= r["step"] / 2 + 1e-7
    assert rows[-1]["q"] == 127 and abs(rows[-1]["error"]) < 1e-6  # the value as its own range, last
    assert int8_value_table(200.0)[0]["overflow"] and int8_value_table(200.0)[0]["stored"] == 127.0
    assert torch.equal(integer_grid(torch.tensor([-300.0, -2.5, 0.4, 3.6])), torch.tensor([-128.0, -2.0, 0.0, 4.0]))


def test_int8_schemes_on_a_tensor_per_channel_beats_per_tensor() -> None:
    e = int8_scheme_errors(example_tensor())
    assert e["absmax"] == pytest.approx(8.0) and e["row_absmax_min"] == pytest.approx(1.0)
    pc, pt, grid = e["per_channel"], e["per_tensor"], e["integer_grid"]
    assert pc["relative_rms"] < pt["relative_rms"] < grid["relative_rms"]
    assert pt["max_abs"] <= 8.0 / 127 / 2 + 1e-6 and grid["max_abs"] <= 0.5
    small = int8_scheme_errors(torch.randn(8, 32) * 0.02)  # trained weights: every entry rounds to 0
    assert small["integer_grid"]["relative_rms"] == pytest.approx(1.0)


def test_numerics_prints_the_course_projection_first(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["numerics"]) == 0
    out = capsys.readouterr().out
    int8_row = next(line for line in out.splitlines() if line.startswith("int8   3"))
    assert "-0.142" in int8_row  # in the formats table, int8 of pi is 3
    assert out.index("integer grid") < out.index("absmax 4") < out.index("absmax 8") < out.index("per channel")
    assert main(["numerics", "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["int8_value"][0]["q"] == 3 and rep["int8_tensor"]["per_channel"]["relative_rms"] > 0


def test_quantize_reports_each_layers_int8_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from lmkit.models import build_model
    from lmkit.models.checkpoint import save_checkpoint

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


# --------------------------------------------------------------------------- will it fit?


def test_device_table_and_verdict() -> None:
    assert device_memory_bytes("a100") == 80 * GIB and device_memory_bytes("H200") == 141 * GIB
    assert device_memory_bytes("here") is None
    shape = ModelConfig(family="decoder", vocab_size=32000, d_model=2048, n_layers=16, n_heads=16, max_seq_len=2048)
    for device, gib in DEVICE_MEMORY_GIB.items():
        for mb in (1, 4, 16):
            need = training_memory(shape, None, mb, 2048, "bf16", "ddp", 1, False)["total"]
            f = fit_on_device(shape, float(_params(shape)), device, micro_batch=mb, seq_len=2048,
                              precision="bf16", sharding="ddp", n_gpus=1, checkpointing=False)
            assert f is not None and f["capacity_bytes"] == gib * GIB
            assert f["needed_bytes"] == pytest.approx(need)
            assert f["fits"] == (need <= gib * GIB)


def _params(cfg: ModelConfig) -> int:
    from lmkit.plan.compute import count_params

    return count_params(cfg).total


def test_the_70b_plan_on_a100_does_not_fit_and_says_what_does(capsys: pytest.CaptureFixture[str]) -> None:
    p = make_plan(params=70e9, gpu="A100", n_gpus=2048, sharding="fsdp", seq_len=4096)
    f = p["memory"]["fit"]
    assert f["device"] == "A100" and f["capacity_bytes"] == 80 * GIB
    assert f["needed_bytes"] == p["memory"]["training_bytes"] > f["capacity_bytes"] and not f["fits"]
    by = {s["change"]: s for s in f["suggestions"]}
    ck = by["activation checkpointing"]
    shape = make_plan(params=70e9, gpu="A100", n_gpus=2048, sharding="fsdp", seq_len=4096,
                      checkpointing=True)["memory"]
    assert ck["bytes"] == pytest.approx(shape["training_bytes"]) and ck["fits"]
    assert f["fitting"]["change"] == "activation checkpointing"
    measured = make_plan(params=70e9, gpu="A100", n_gpus=2048, sharding="fsdp", seq_len=4096, runtime_bytes=2e9)
    assert measured["memory"]["fit"]["needed_bytes"] == measured["memory"]["training_bytes"]  # same runtime
    assert any(s["change"].startswith("tensor parallelism") and s["flags"] is None for s in f["suggestions"])
    # Korthikanti's figure is labelled: without fused attention, and with it (the 5as/h term dropped)
    m = p["memory"]
    assert m["korthikanti_fused_attention_activation_bytes"] < m["korthikanti_activation_bytes"]
    assert "without fused attention" in m["activation_assumptions"]["korthikanti_activation_bytes"]
    assert main(["plan", "--params", "70e9", "--gpu", "A100", "--gpus", "2048", "--sharding", "fsdp",
                 "--seq-len", "4096"]) == 0
    out = capsys.readouterr().out
    assert "DOES NOT FIT on one A100 (80 GiB" in out and "--activation-checkpointing" in out
    assert "without fused attention" in out and "lmkit's model, fused attention" in out
    assert main(["plan", "--params", "1B", "--gpu", "H100"]) == 0
    assert "FITS on one H100" in capsys.readouterr().out


def test_smaller_micro_batch_sharding_and_tensor_parallelism() -> None:
    cfg = ModelConfig(family="decoder", vocab_size=32000, d_model=4096, n_layers=32, n_heads=32, max_seq_len=4096)
    n = float(_params(cfg))
    f = fit_on_device(cfg, n, "A100", micro_batch=8, seq_len=4096, precision="bf16", sharding="ddp", n_gpus=8,
                      checkpointing=False)
    assert f is not None and not f["fits"]
    by = {s["change"].split(" ")[0]: s for s in f["suggestions"]}
    assert {"activation", "micro-batch", "FSDP", "tensor"} <= set(by)
    mb = int(by["micro-batch"]["flags"].split()[-1])
    assert by["micro-batch"]["bytes"] == training_memory(cfg, n, mb, 4096, "bf16", "ddp", 8, False)["total"]
    assert by["FSDP"]["bytes"] == training_memory(cfg, n, 8, 4096, "bf16", "fsdp", 8, False)["total"]
    one = tensor_parallel_memory(cfg, n, 2, 4096, "bf16", "ddp", 8, False, 1)
    assert one["total"] == pytest.approx(training_memory(cfg, n, 2, 4096, "bf16", "ddp", 8, False)["total"])
    assert f["fitting"] is not None and f["fitting"]["bytes"] <= f["capacity_bytes"]


# --------------------------------------------------------------------------- progress in a pipe


def test_line_progress_writes_few_whole_lines() -> None:
    buf = io.StringIO()
    bar = progress(total=1000, desc="train", unit="step", file=buf)
    assert isinstance(bar, LineProgress)  # a StringIO is not a terminal
    for i in range(1000):
        bar.update(1)
        bar.set_postfix(loss=f"{1 / (i + 1):.3f}")
    bar.close()
    lines = buf.getvalue().splitlines()
    assert "\r" not in buf.getvalue() and 20 <= len(lines) <= 22
    assert lines[0].startswith("train:   0% 0/1,000 [") and lines[-1].startswith("train: 100% 1,000/1,000 [")
    assert "loss=0.001" in lines[-1]
    quiet = io.StringIO()
    for _ in progress(range(50), desc="x", disable=True, file=quiet):
        pass
    assert quiet.getvalue() == ""
    seen = io.StringIO()
    assert sum(progress(range(10), desc="docs", file=seen)) == 45
    assert seen.getvalue().splitlines()[-1].startswith("docs: 100% 10/10")


def test_line_progress_without_total_prints_by_time(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [0.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    buf = io.StringIO()
    bar = progress(desc="packing", unit=" docs", file=buf, unit_scale=True)
    for _ in range(100):
        clock[0] += EVERY_SECONDS / 10
        bar.update(1000)
    bar.close()
    lines = buf.getvalue().splitlines()
    assert 10 <= len(lines) <= 12 and lines[-1].startswith("packing: 100k docs [")


@pytest.mark.slow
def test_piped_demo_log_stays_short(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    r = subprocess.run([sys.executable, "-m", "lmkit.cli", "demo", "--quick", "--out", str(tmp_path / "d")],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=tmp_path, env=env, timeout=300)
    log = r.stdout.decode()
    assert r.returncode == 0, log[-2000:]
    assert "\r" not in log, "carriage-return redraws in a piped log"
    assert len(log.splitlines()) < 200, f"{len(log.splitlines())} lines"
    assert "train: 100%" in log


# --------------------------------------------------------------------------- Dask


def test_unreachable_dask_scheduler_fails_fast_naming_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("dask.distributed")
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "a.txt").write_text("hello world, some text. " * 20)
    with socket.socket() as s:  # a port with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    addr = f"tcp://127.0.0.1:{port}"
    t0 = time.monotonic()
    rc = main(["curate", str(tmp_path / "raw"), "--out", str(tmp_path / "out"), "--dask", addr])
    took = time.monotonic() - t0
    err = capsys.readouterr().err
    assert rc == 2 and took < 5, f"{took:.1f} s"
    assert addr in err and "cannot reach the scheduler" in err and len(err.strip().splitlines()) == 1
