"""Issue 25, item 6: what planning, scaling-law fits and sweeps do with inputs out of any sane range,
and with work that can never finish. Every input of the issue is a row of one table: the command,
and the one-line error (status 2) it must give, with nothing written and no traceback. Beside it:
the shared guard for long runs (``check_run_time``, ``check_predicted_time``) with the rate
injected, so no verdict depends on this machine's speed, and the pure maths at its extremes."""

from __future__ import annotations

import json
import math
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lmkit.cli import main
from lmkit.errors import LmkitError
from lmkit.plan.compute import (
    MAX_FLOPS,
    MAX_MICRO_BATCH,
    MAX_PARAMS,
    MAX_SEQ_LEN,
    MAX_TOKENS,
    check_run_time,
    duration_words,
)
from lmkit.plan.fits_memory import MAX_DEVICES, memory_verdict
from lmkit.plan.make import make_plan
from lmkit.plan.measure import check_predicted_time
from lmkit.plan.memory import training_memory

CHINCHILLA_LAW = {"E": 1.69337, "A": 406.401, "B": 410.723, "alpha": 0.33917, "beta": 0.28491}


def _chinchilla(n: float, d: float) -> float:
    law = CHINCHILLA_LAW
    return law["E"] + law["A"] / n ** law["alpha"] + law["B"] / d ** law["beta"]


def _points(rows: list[tuple[float, ...]], cols: str = "params,tokens,loss") -> str:
    return cols + "\n" + "".join(",".join(repr(v) for v in r) + "\n" for r in rows)


def _argv(command: str, inputs: dict[str, Path]) -> list[str]:
    """``command`` split into arguments, each ``{name}`` replaced by the path of that input file."""
    return [re.sub(r"\{([^}]+)\}", lambda m: str(inputs[m.group(1)]), part) for part in command.split()]


@pytest.fixture
def inputs(tmp_path: Path) -> dict[str, Path]:
    """The files the table's commands read, made here."""
    files: dict[str, str] = {
        "same.csv": _points([(1e6, 2e7, 3.0)] * 6),
        "huge.csv": _points([(1e308, 1e308, 1e308, 1e308)] * 6, "params,tokens,flops,loss"),
        "tiny.csv": _points([(k * 1e-300, 1e-300, 1e-300, 1e-300) for k in range(1, 7)], "params,tokens,flops,loss"),
        "tiny-loss.csv": _points([(1e6 * k, 1e8, 1e-300) for k in range(1, 7)]),
        "derived.csv": _points([(1e15, 1.0, 3.0)] * 2, "params,flops,loss"),
        "one-size.csv": _points([(1e6, d, 3.0 - 0.01 * i) for i, d in enumerate((1e7, 2e7, 4e7, 8e7, 1.6e8, 3.2e8))]),
        "two-by-two.csv": _points(
            [
                (n, c / (6 * n), _chinchilla(n, c / (6 * n)))
                for c, sizes in ((1e15, (1e6, 2e6)), (1e16, (3e6, 6e6)))
                for n in sizes
            ]
        ),
        "null-law.json": json.dumps({"approach3": {"law": dict.fromkeys(CHINCHILLA_LAW)}}),
        "skipped-law.json": json.dumps({"approach3": {"skipped": "the points have 1 model size only"}}),
        "tiny-beta-law.json": json.dumps({"approach3": {"law": {**CHINCHILLA_LAW, "beta": 1e-9}}}),
        "steep-law.json": json.dumps({"approach3": {"law": {**CHINCHILLA_LAW, "alpha": 0.011, "beta": 9.0}}}),
        "text.txt": "the cat sat on the mat. " * 50,
    }
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    big = tmp_path / "big.csv"  # sparse: 5 GiB on paper, nothing on disk
    with big.open("wb") as fh:
        fh.truncate(5 * 2**30)
    (tmp_path / "folder").mkdir()
    return {p.name: p for p in tmp_path.iterdir()}


BOUNDED = "more than 365 days, so lmkit does not start it"
# (command with {file} placeholders, the fragment its one-line error must hold)
TABLE: list[tuple[str, str]] = [
    # scale fit: points that identify nothing, values out of range, files that are not points files
    ("scale fit {same.csv} --grid small --bootstrap 2", "same.csv: nothing to fit: 6 runs at 1 budget"),
    ("scale fit {huge.csv} --grid small", "row 2: params 1e+308 is out of range (params must be 1 to 1e+15)"),
    ("scale fit {tiny.csv} --grid small", "row 2: params 1e-300 is out of range"),
    ("scale fit {tiny-loss.csv} --grid small", "row 2: loss 1e-300 is out of range (loss must be 1e-06 to 1000)"),
    ("scale fit {derived.csv}", "row 2: tokens (flops / 6·params) 1.67e-16 is out of range"),
    (
        "scale fit {one-size.csv} --grid small",
        "one-size.csv: nothing to fit: 6 runs at 6 budgets; every run has "
        "1e+06 parameters: no exponent without runs of several sizes per budget; no budget has runs of 3 or more model "
        "sizes: Approach 2 needs IsoFLOP profiles; the points have 1 model size only",
    ),
    (
        "scale fit {two-by-two.csv} --approach 3",
        "nothing to fit: 4 runs at 2 budgets; Approach 3 fits 5 parameters: it needs at least 5 points, got 4",
    ),
    ("scale fit /dev/zero", "/dev/zero: not a regular file"),
    ("scale fit {folder}", "folder: not a regular file"),
    ("scale fit {big.csv}", "5,120.0 MiB is more than a points file holds (at most 4 MiB, 10,000 runs)"),
    ("scale fit {same.csv} --bootstrap 1000000000", "--bootstrap must be 0 to 10,000 resamples, got 1,000,000,000"),
    ("scale fit {same.csv} --bootstrap -1", "--bootstrap must be 0 to 10,000 resamples, got -1"),
    ("scale fit {same.csv} --drop-highest 6", "--drop-highest must be 0 to 5 (the points have 6 runs), got 6"),
    ("scale fit {same.csv} --threads 100000", "--threads must be 1 to"),
    # scale sweep: refused before the data is read (nothing is written into --out)
    ("scale sweep --config tiny --data {text.txt} --budgets 1e10 --spread 1e308", "--spread must be between 1 and 100"),
    (
        "scale sweep --config tiny --data {text.txt} --budgets 1e10 --per-budget 1000000000",
        "--per-budget must be 1 to 64 model sizes per budget, got 1000000000",
    ),
    ("scale sweep --config tiny --data {text.txt} --budgets 1e10 1e308", "--budgets must be 1 to 1e+33 FLOPs each"),
    ("scale sweep --config tiny --data {text.txt} --budgets 1e30", "this sweep of up to 5 runs is predicted to take ~"),
    ("scale sweep --config tiny --data {text.txt} --budgets 1e30 --yes", BOUNDED),
    # adapt --budget: every arm's FLOPs
    (
        "adapt --domain {text.txt} --general {text.txt} --config tiny --budget 1e30",
        "--budget 1e+30 for each of 4 arms is predicted to take ~",
    ),
    (
        "adapt --domain {text.txt} --general {text.txt} --config tiny --budget 1e308 --yes",
        "--budget 1e+308 for each of 4 arms is more than 1e+33 FLOPs, the most lmkit plans",
    ),
    # pretrain --model auto: the time budget itself is bounded
    (
        "pretrain --config tiny --data {text.txt} --model auto --train.max_time 1e12",
        "the time budget --train.max_time 1e+12 is 3.17e+04 years: " + BOUNDED,
    ),
    (
        "pretrain --config tiny --data {text.txt} --model auto --train.max_time 100000",
        "the time budget --train.max_time 100000 is 27.8 h: more than 24 hours; pass --yes to start it anyway",
    ),
    # plan: pure maths, out-of-range inputs say their range
    ("plan --params 1e308", "--params must be 1 to 1e+15, got 1e+308"),
    ("plan --params 1e-5", "--params must be 1 to 1e+15, got 1e-05"),
    ("plan --tokens 1e308", "--tokens must be 1 to 1e+17"),
    ("plan --flops 1e308", "--flops must be 1 to 1e+33, got 1e+308"),
    ("plan --flops 1e400", "--flops must be a finite number, got '1e400'"),
    ("plan --pf-days 1e300", "--pf-days must be 1.16e-20 to 1.16e+13 (1 to 1e+33 FLOPs), got 1e+300"),
    ("plan --gpu-hours 1e308", "--gpu-hours must be 2.23e-18 to 2.23e+15 (A100-hours at 40% utilisation"),
    (
        "plan --params 1B --micro-batch 1000000000000000",
        "--micro-batch must be 1 to 16,777,216, got 1,000,000,000,000,000",
    ),
    ("plan --params 1B --seq-len 1000000000000000", "--seq-len must be 1 to 16,777,216"),
    ("plan --params 1B --gpus 1000000000000", "--gpus must be 1 to 1,048,576 devices"),
    ("plan --gpu-hours 10 --utilisation 1e-300", "--utilisation must be between 0.0001 and 1"),
    (
        "plan --params 1B --scaling-law {null-law.json}",
        "its Approach-3 law has no value for E, A, B, alpha, beta (null)",
    ),
    ("plan --params 1B --scaling-law {skipped-law.json}", "has no Approach-3 law: the fit skipped it"),
    ("plan --params 1B --scaling-law {tiny-beta-law.json}", "its law's beta 1e-09 is outside 0.01 to 10"),
    (
        "plan --tokens 1e17 --scaling-law {steep-law.json}",
        "puts the compute-optimal size for 1e+17 tokens at e^3.142e+04, beyond any float",
    ),
]


@pytest.mark.parametrize(("command", "expected"), TABLE, ids=[c[:70] for c, _ in TABLE])
def test_each_input_is_one_line_and_writes_nothing(
    command: str, expected: str, inputs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    argv = _argv(command, inputs)
    if argv[0] in ("scale", "adapt", "pretrain"):
        argv += ["--out", str(out)]
    t0 = time.perf_counter()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert expected in err and err.count("\n") == 1 and err.startswith("lmkit: error: ")
    assert "Traceback" not in err and "nan" not in err.lower()
    assert not out.exists()  # refused before anything was written
    assert time.perf_counter() - t0 < 60  # refused, not run


def test_a_method_the_points_cannot_identify_is_skipped_with_its_reason(
    inputs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two sizes at each of two budgets: Approach 1 and Kaplan's L(C) are fitted; Approach 2 (3
    sizes per profile) and Approach 3 (5 points) are skipped, each saying why in fit.json and in
    the printout, and the plots are drawn without them."""
    out = tmp_path / "fit"
    assert main(["scale", "fit", str(inputs["two-by-two.csv"]), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "approach 1  N_opt ∝ C^" in text
    assert "approach 2  no budget has runs of 3 or more model sizes" in text
    assert "approach 3  skipped: Approach 3 fits 5 parameters: it needs at least 5 points, got 4" in text
    fit = json.loads((out / "fit.json").read_text())
    assert "skipped" in fit["approach3"] and fit["approach2"]["budgets"] == [] and fit["kaplan"]["gamma"] > 0
    assert sorted(p.name for p in out.iterdir()) == ["fit.json", "isoflops.png", "loss_vs_compute.png", "optimal.png"]


def test_check_run_time_bounds() -> None:
    check_run_time(3600, False, "a run")  # an hour: starts
    check_run_time(2 * 86400, True, "a run")  # two days, confirmed
    with pytest.raises(LmkitError, match=r"a run is 2\.0 days: more than 24 hours; pass --yes to start it anyway"):
        check_run_time(2 * 86400, False, "a run")
    for seconds in (400 * 86400, math.inf, math.nan):
        with pytest.raises(LmkitError, match="more than 365 days, so lmkit does not start it"):
            check_run_time(seconds, True, "a run")
    assert [duration_words(s) for s in (45, 600, 5 * 3600, 3 * 86400, 1e12)] == [
        "45 s",
        "10 min",
        "5.0 h",
        "3.0 days",
        "3.17e+04 years",
    ]


def test_predicted_time_at_an_injected_rate() -> None:
    """The verdict of ``check_predicted_time`` at a given rate: clear whatever this machine is."""
    rate = (1e9, "a test rate")
    check_predicted_time(1e13, False, "work", rate=rate)  # 2.8 h
    with pytest.raises(
        LmkitError,
        match=r"work is predicted to take ~27\.8 h \(1e\+14 FLOPs at 1\.0 GFLOP/s: a test "
        r"rate\): more than 24 hours; pass --yes",
    ):
        check_predicted_time(1e14, False, "work", rate=rate)
    check_predicted_time(1e14, True, "work", rate=rate)
    with pytest.raises(LmkitError, match="more than 365 days"):
        check_predicted_time(1e17, True, "work", rate=rate)
    check_predicted_time(1e10, False, "tiny work")  # under a day at any rate: not even measured


class Started(Exception):
    """Raised where the work would begin: the guard let it through."""


def _start(*_: Any, **__: Any) -> None:
    raise Started


@pytest.mark.parametrize(
    "command",
    [
        "scale sweep --config tiny --data {text.txt} --budgets 2e13 --per-budget 5",
        "adapt --domain {text.txt} --general {text.txt} --config tiny --mixes 0 0.5 1 0.25 0.75 --budget 2e13",
    ],
)
def test_yes_starts_what_is_predicted_to_take_over_a_day(
    command: str,
    inputs: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """1e14 FLOPs at an injected 1 GFLOP/s: 27.8 hours. Without --yes: one line; with it, the work
    starts (stopped here where it would pack the data or build the arms)."""
    import lmkit.data.prepare
    import lmkit.lab.adapt.experiment
    import lmkit.plan.measure

    monkeypatch.setattr(lmkit.plan.measure, "training_rate", lambda *a: (1e9, "an injected rate"))
    monkeypatch.setattr(lmkit.data.prepare, "prepare", _start)
    monkeypatch.setattr(lmkit.lab.adapt.experiment, "open_experiment", _start)
    argv = [*_argv(command, inputs), "--out", str(tmp_path / "o")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "predicted to take ~27.8 h (1e+14 FLOPs at 1.0 GFLOP/s: an injected rate)" in err and "--yes" in err
    with pytest.raises(Started):
        main([*argv, "--yes"])


def test_model_auto_with_yes_measures_a_day_long_budget(
    inputs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import lmkit.train.budget

    monkeypatch.setattr(lmkit.train.budget, "_throughput", _start)
    with pytest.raises(Started):
        main(
            [
                "pretrain",
                "--config",
                "tiny",
                "--data",
                str(inputs["text.txt"]),
                "--model",
                "auto",
                "--train.max_time",
                "100000",
                "--yes",
                "--out",
                str(tmp_path / "o"),
            ]
        )


# --------------------------------------------------------------------------- the pure maths at its edges


@pytest.mark.parametrize(
    "kwargs",
    [
        {
            "params": MAX_PARAMS,
            "tokens": MAX_TOKENS,
            "seq_len": MAX_SEQ_LEN,
            "micro_batch": MAX_MICRO_BATCH,
            "n_gpus": MAX_DEVICES,
        },
        {"params": 1.0, "tokens": 1.0, "seq_len": 1, "micro_batch": 1},
        {"flops": 1.0},
        {"flops": MAX_FLOPS, "gpu": "H200", "sharding": "fsdp", "n_gpus": MAX_DEVICES},
        {"budget_pf_days": MAX_FLOPS / 8.64e19 * (1 - 1e-12)},
        {"params": 1e9, "micro_batch": MAX_MICRO_BATCH, "utilisation": 1e-4},
    ],
)
def test_plans_at_the_edges_of_the_ranges_are_finite(kwargs: dict[str, Any]) -> None:
    plan = make_plan(**kwargs)
    floats: list[float] = []

    def walk(o: Any) -> None:
        if isinstance(o, float):
            floats.append(o)
        elif isinstance(o, dict):
            for v in o.values():
                walk(v)
        elif isinstance(o, list):
            for v in o:
                walk(v)

    walk(plan)
    assert floats and all(math.isfinite(x) for x in floats)


def test_the_fitting_micro_batch_is_found_by_bisection() -> None:
    """The largest micro-batch that fits, found in a few dozen evaluations (the loop it replaced
    tried every micro-batch down from 10**15), equal to the exhaustive search's."""
    from lmkit.plan.chinchilla import shape_for_params
    from lmkit.plan.fits_memory import device_memory_bytes

    shape = shape_for_params(1e9)
    cap = device_memory_bytes("A100")
    assert cap is not None

    def suggested(mb: int) -> str:
        f = memory_verdict(
            shape,
            1e9,
            "A100",
            micro_batch=mb,
            seq_len=2048,
            precision="bf16",
            sharding="ddp",
            n_gpus=1,
            checkpointing=False,
        )
        assert f is not None
        return next(s["change"] for s in f["suggestions"] if s["change"].startswith("micro-batch"))

    exhaustive = max(
        m for m in range(1, 200) if training_memory(shape, 1e9, m, 2048, "bf16", "ddp", 1, False)["total"] <= cap
    )
    assert suggested(200) == f"micro-batch {exhaustive}"
    t0 = time.perf_counter()
    assert suggested(MAX_MICRO_BATCH) == f"micro-batch {exhaustive}"
    assert time.perf_counter() - t0 < 5


def test_bootstrap_in_batches_equals_one_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    """Resamples run in batches of BATCH_CELLS (rows x points) give the intervals one batch gives:
    memory is bounded by the batch, not by --bootstrap."""
    import lmkit.lab.scale.approach3 as a3

    rng = np.random.default_rng(0)
    n = np.repeat([1e6, 2e6, 4e6, 8e6], 3)
    d = np.tile([1e8, 3e8, 1e9], 4)
    loss = 1.7 + 400 / n**0.34 + 400 / d**0.28 + rng.normal(0, 0.01, len(n))
    starts = a3.start_grid()[:8]
    fit = a3.fit_approach3(n, d, loss, starts=starts)
    one = a3.bootstrap(fit, n, d, loss, n=9, seed=3)
    assert len(a3.row_batches(9, len(n))) == 1
    monkeypatch.setattr(a3, "BATCH_CELLS", 4 * len(n))  # 4 resamples a batch: 3 batches
    assert [s.stop - s.start for s in a3.row_batches(9, len(n))] == [4, 4, 1]
    batched = a3.bootstrap(fit, n, d, loss, n=9, seed=3)
    for k, v in one.items():
        assert batched[k] == pytest.approx(v, rel=1e-9), k
