"""The time budget that chooses the model (issue 17): the picker's choice against the analytic
optimum, and a ``--model auto`` run that ends at its deadline with the schedule at its end."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from lmkit.cli import main
from lmkit.config import ModelConfig
from lmkit.plan.chinchilla import FITS, ScalingFit
from lmkit.train.budget import Candidate, candidate_shapes, pick_for_time

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize(
    "law", [FITS["chinchilla"], FITS["epoch"], ScalingFit("made up", 2.0, 300.0, 900.0, 0.3, 0.4, "")]
)
def test_picker_returns_the_analytic_optimum(law: ScalingFit) -> None:
    """A machine doing F FLOP/s trains N parameters at F/(6N) tokens/s: in t seconds D = F·t/(6N)
    tokens, C = F·t, and the law's compute-optimal N_opt(C) is the size that must be picked."""
    flops_per_s, seconds = 2e11, 600.0
    n_opt, d_opt = law.optimal(flops_per_s * seconds)
    sizes = [n_opt * f for f in (0.3, 0.6, 0.85, 1.0, 1.2, 1.7, 3.0)]
    m = ModelConfig()
    cands = [Candidate(m, round(n), flops_per_s / (6 * round(n))) for n in sizes]
    best, rows = pick_for_time(cands, seconds, law)
    assert rows[best]["params"] == round(n_opt)
    assert rows[best]["tokens"] == pytest.approx(d_opt, rel=1e-6)
    losses = [r["predicted_loss"] for r in rows]  # convex in log N around the optimum
    assert losses.index(min(losses)) == 3 and losses[0] > losses[2] and losses[-1] > losses[4]


def test_candidates_span_the_optimum() -> None:
    base = ModelConfig(vocab_size=512, d_model=64, n_layers=2, n_heads=4, max_seq_len=64)
    law = FITS["chinchilla"]
    shapes = candidate_shapes(base, 1e10, 60.0, law)
    from lmkit.plan.compute import count_params

    n_opt = law.optimal(1e10 * 60.0)[0]
    params = [count_params(s).total for s in shapes]
    assert min(params) < n_opt < max(params)
    assert all(s.head_dim == base.head_dim and s.vocab_size == 512 for s in shapes)


def test_time_budget_run_ends_at_its_deadline_with_the_schedule_at_its_end(
    word_corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = word_corpus
    out = tmp_path / "run"
    budget = 12.0
    t0 = time.perf_counter()
    code = main(
        [
            "pretrain",
            "--config",
            "tiny",
            "--data",
            str(data),
            "--out",
            str(out),
            "--model",
            "auto",
            "--train.max_time",
            str(budget),
            "--train.eval_every",
            "0",
            "--json",
            "--quiet",
        ]
    )
    wall = time.perf_counter() - t0
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert abs(wall - budget) / budget <= 0.05, f"took {wall:.2f}s for a {budget}s budget"
    record = json.loads((out / "budget.json").read_text())
    chosen = record["rows"][record["best"]]
    assert summary["budget"]["chosen"] == chosen
    saved = json.loads((Path(summary["checkpoint"]) / "config.json").read_text())["model"]  # the pick is trained
    assert (saved["d_model"], saved["n_layers"]) == (chosen["d_model"], chosen["n_layers"])
    assert chosen["predicted_loss"] == min(r["predicted_loss"] for r in record["rows"])
    lrs = [r["lr"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if "lr" in r]
    floor = 3e-3 * 0.1  # tiny's lr x min_lr_ratio: where the cosine ends
    assert summary["steps"] > 20 and lrs[-1] == pytest.approx(floor, rel=0.03)
    assert max(lrs) == pytest.approx(3e-3, rel=1e-6)


def test_time_budget_errors(word_corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = word_corpus
    assert (
        main(["pretrain", "--config", "tiny", "--data", str(data), "--out", str(tmp_path / "a"), "--model", "auto"])
        == 2
    )
    assert "--train.max_time" in capsys.readouterr().err
    assert (
        main(
            [
                "pretrain",
                "--config",
                "tiny",
                "--data",
                str(data),
                "--out",
                str(tmp_path / "b"),
                "--scaling-law",
                str(tmp_path / "fit.json"),
            ]
        )
        == 2
    )
    assert "--model auto" in capsys.readouterr().err
