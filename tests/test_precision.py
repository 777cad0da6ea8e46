"""train.precision auto: the precision probe (cached per machine), the choice it makes on machines
with and without fast bf16 (the probe monkeypatched to say so), a resumed run keeping the precision
it settled on, MFU against the peak of the precision in use, and `lmkit plan --this-machine`
naming both measured peaks."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
import torch

import lmkit.plan.measure as measure
from lmkit.cli import main
from lmkit.config import TrainConfig, load_run_config
from lmkit.models.checkpoint import list_checkpoints, load_meta
from lmkit.train.distributed import Dist, autocast_for, settle_precision
from lmkit.train.loop import train
from lmkit.train.resume import resume_config, saved_run_config

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "tiny.yaml"
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A machine cache of the test's own: nothing measured before."""
    monkeypatch.setenv("LMKIT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def fake_probe(monkeypatch: pytest.MonkeyPatch, bf16_over_fp32: float) -> list[tuple[int, int, int]]:
    """Make the probe measure bf16 at ``bf16_over_fp32`` × fp32; returns the shapes it was asked for."""
    calls: list[tuple[int, int, int]] = []

    def rates(m: int, k: int, n: int, seconds: float) -> tuple[float, float]:
        calls.append((m, k, n))
        return 100e9, 100e9 * bf16_over_fp32

    monkeypatch.setattr(measure, "_probe_rates", rates)
    return calls


def corpus(folder: Path, n_docs: int = 120) -> Path:
    rng = random.Random(0)
    words = ["the cat", "a dog", "sees", "likes", "the bird", "a red ball", "the river", "calls"]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "corpus.jsonl"
    path.write_text(
        "".join(
            json.dumps({"text": " ".join(rng.choice(words) for _ in range(40)) + "."}) + "\n" for _ in range(n_docs)
        ),
        encoding="utf-8",
    )
    return path


# --------------------------------------------------------------------------- choosing


def test_auto_is_the_default_and_must_be_settled_before_autocast() -> None:
    assert TrainConfig().precision == "auto"
    assert autocast_for("fp32", torch.device("cpu")) is None
    assert autocast_for("bf16", torch.device("cpu")).fast_dtype == torch.bfloat16
    with pytest.raises(Exception, match="must be settled"):
        autocast_for("auto", torch.device("cpu"))


@pytest.mark.parametrize("ratio,chosen", [(3.0, "bf16"), (0.2, "fp32"), (1.29, "fp32"), (1.3, "bf16")])
def test_auto_picks_bf16_only_where_the_probe_measures_it_faster(
    cache: Path, monkeypatch: pytest.MonkeyPatch, ratio: float, chosen: str
) -> None:
    """A machine with AMX (bf16 3× fp32) trains in bf16; one without 16-bit hardware (0.2×) in fp32."""
    calls = fake_probe(monkeypatch, ratio)
    cfg = load_run_config(TINY)
    assert cfg.train.precision == "auto"
    words = settle_precision(cfg, torch.device("cpu"), Dist())
    assert cfg.train.precision == chosen
    assert words.startswith(f"{chosen} (auto: bf16 {ratio:.2f}× fp32 here")
    # probed at the run's representative matmul: micro-batch tokens (8 x 64) x d_model 64 x 4 d_model
    assert calls == [measure.probe_shape(8 * 64, 64)] == [(512, 64, 256)]
    # a precision that is given is kept, unmeasured
    given = load_run_config(TINY, {"train.precision": "fp32"})
    assert settle_precision(given, torch.device("cpu"), Dist()) == "fp32" and len(calls) == 1


@pytest.mark.parametrize("supported,chosen", [(True, "bf16"), (False, "fp16")])
def test_auto_on_cuda_is_bf16_where_supported_else_fp16(
    monkeypatch: pytest.MonkeyPatch, supported: bool, chosen: str
) -> None:
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: supported)
    monkeypatch.setattr(measure, "_probe_rates", lambda *a: pytest.fail("no CPU probe for a GPU"))
    assert measure.auto_precision("cuda", 4096, 256)[0] == chosen


def test_probe_shape_rounds_to_powers_of_two_and_stays_short() -> None:
    assert measure.probe_shape(512, 64) == (512, 64, 256)
    assert measure.probe_shape(100, 48) == (128, 64, 256)
    assert measure.probe_shape(1, 8) == (64, 16, 64)
    m, k, n = measure.probe_shape(16 * 1024, 768)  # large: fewer rows, one product stays ~1 GFLOP
    assert (k, n) == (1024, 4096) and 2 * m * k * n <= measure.PROBE_MAX_FLOPS and m >= 64


# --------------------------------------------------------------------------- the cache


def test_the_probe_is_cached_per_machine_and_shape(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = fake_probe(monkeypatch, 3.0)
    first = measure.precision_probe(512, 64)
    assert not first["cached"] and first["bf16_over_fp32"] == pytest.approx(3.0)
    saved = json.loads((cache / measure.PRECISION_FILE).read_text())
    assert list(saved["machines"]) == [measure.cpu_key()] and "512x64x256" in saved["machines"][measure.cpu_key()]
    again = measure.precision_probe(500, 60)  # rounds to the same shape: read back, not measured
    assert again["cached"] and again["bf16_over_fp32"] == first["bf16_over_fp32"] and len(calls) == 1
    measure.precision_probe(4096, 256)  # another shape: measured once, kept beside the first
    assert (
        len(calls) == 2
        and len(json.loads((cache / measure.PRECISION_FILE).read_text())["machines"][measure.cpu_key()]) == 2
    )
    measure.precision_probe(512, 64, measure=True)
    assert len(calls) == 3
    # another CPU, torch or thread count: measured anew, and kept beside this one's
    assert torch.__version__ in measure.cpu_key()
    here = measure.cpu_key()
    monkeypatch.setattr(measure, "cpu_key", lambda: "another cpu")
    assert not measure.precision_probe(512, 64)["cached"] and len(calls) == 4
    monkeypatch.setattr(measure, "cpu_key", lambda: here)
    assert measure.precision_probe(512, 64)["cached"] and len(calls) == 4


def test_the_real_probe_is_short_and_leaves_the_random_stream_alone(cache: Path) -> None:
    """On whatever CPU runs the tests (with or without 16-bit hardware)."""
    import time

    torch.manual_seed(0)
    state = torch.get_rng_state()
    t0 = time.perf_counter()
    probe = measure.precision_probe(512, 64)
    assert time.perf_counter() - t0 < 10
    assert torch.equal(torch.get_rng_state(), state)  # a run's weights do not depend on the probe
    assert probe["fp32_flops"] > 1e6 and probe["bf16_flops"] > 1e6 and probe["shape"] == [512, 64, 256]
    assert probe["bf16_over_fp32"] == pytest.approx(probe["bf16_flops"] / probe["fp32_flops"])


# --------------------------------------------------------------------------- a run


def test_a_resumed_run_keeps_the_precision_it_settled_on(
    tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """bf16 when the run starts; the probe later says bf16 is slow; the resumed run stays bf16 (and MFU
    is against the bf16 peak)."""
    import lmkit.plan

    peaks: list[str] = []
    monkeypatch.setattr(lmkit.plan, "device_peak_flops", lambda device, precision: peaks.append(precision) or 1e12)
    fake_probe(monkeypatch, 3.0)
    out = tmp_path / "run"
    over = {
        "data.paths": [
            str(corpus(tmp_path / "data", n_docs=360))
        ],  # a held-out split of several windows wherever the hash split puts them
        "out": str(out),
        "train.max_steps": 2,
        "train.eval_every": 0,
        "train.ckpt_every": 0,
        "data.vocab_size": 400,
        "model.vocab_size": 400,
    }
    first = train(load_run_config(TINY, over), show_progress=False)
    assert first["precision"] == "bf16 (auto: bf16 3.00× fp32 here)" and peaks == ["bf16"]
    ckpt = list_checkpoints(out)[-1]
    assert saved_run_config(ckpt).train.precision == "bf16"  # resolved.yaml holds the settled value
    assert load_meta(ckpt)["precision"] == "bf16" and "3.00×" in load_meta(ckpt)["precision_choice"]

    calls = fake_probe(monkeypatch, 0.2)  # the machine now measures bf16 as 5x slower
    resumed = resume_config(out, None, {"train.max_steps": 3, "train.precision": "auto"})
    assert resumed.train.precision == "bf16"
    assert train(resumed, resume=True, show_progress=False)["precision"].startswith("bf16 (auto: bf16 3.00×")
    again = load_run_config(TINY, {**over, "train.max_steps": 4})  # the library way: auto, resume=True
    assert train(again, resume=True, show_progress=False)["precision"].startswith("bf16")
    assert calls == [] and peaks == ["bf16"] * 3
    with pytest.raises(Exception, match="train.precision is 'bf16' in the run being resumed but 'fp32'"):
        resume_config(out, None, {"train.max_steps": 5, "train.precision": "fp32"})


# --------------------------------------------------------------------------- lmkit plan


def test_plan_this_machine_names_the_fp32_and_the_bf16_peak(
    cache: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import lmkit.cli.plan as cli_plan

    monkeypatch.setattr(
        measure, "measure_matmul_peak", lambda dtype=None, *a, **k: {torch.float32: 100e9, torch.bfloat16: 500e9}[dtype]
    )
    monkeypatch.setattr(cli_plan, "runtime_baseline", lambda family, measure=False: (4e8, "a test's figure"))
    assert main(["plan", "--params", "10M", "--this-machine"]) == 0
    text = capsys.readouterr().out
    assert "fp32 100 GFLOP/s, bf16 500 GFLOP/s (5.0×); a run here trains in bf16" in text
    assert main(["plan", "--params", "10M", "--this-machine", "--json"]) == 0
    c = json.loads(capsys.readouterr().out)["compute"]
    assert c["this_machine"]["fp32_flops"] == 100e9 and c["this_machine"]["bf16_flops"] == 500e9
    assert c["peak_flops"]["this machine"] == 500e9  # the peak of the precision a run here uses
    # a config's auto on this machine: settled by the probe at its shape, as the trainer settles it
    fake_probe(monkeypatch, 0.2)
    assert main(["plan", "--config", str(TINY), "--gpu", "here", "--json"]) == 0
    p = json.loads(capsys.readouterr().out)
    assert p["memory"]["training_settings"]["precision"] == "fp32"
    assert p["compute"]["this_machine"]["precision"] == "fp32" and p["compute"]["peak_flops"]["this machine"] == 100e9
    # on a GPU target, auto plans in bf16 and says so
    assert main(["plan", "--config", str(TINY), "--json"]) == 0
    p = json.loads(capsys.readouterr().out)
    assert p["memory"]["training_settings"]["precision"] == "bf16"
    assert any("train.precision auto" in n for n in p["notes"])


def test_mfu_is_measured_against_the_peak_of_the_precision_in_use(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[Any] = []
    monkeypatch.setattr(measure, "measure_matmul_peak", lambda dtype=None, *a, **k: asked.append(dtype) or 1.0)
    measure.device_peak_flops("cpu", "bf16")
    measure.device_peak_flops("cpu", "fp32")
    assert asked == [torch.bfloat16, torch.float32]
