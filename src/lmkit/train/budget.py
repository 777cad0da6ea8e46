"""A time budget that chooses the model: ``lmkit pretrain --train.max_time S --model auto``.

"I have N minutes: what is the best model I can get?" is a compute-optimal question asked in
seconds instead of FLOPs. Three steps:

1. **Measure** (``measure_candidates``): this machine's training throughput for a few shapes grown
   from the run's config by width and depth (``lmkit.plan.shapes.shape_for``), each timed with a
   few real optimizer steps on random windows (``lmkit.train.calibrate.measure``: the trainer's own
   step, precision and accumulation). The shapes are centred on the scaling law's compute-optimal
   size for the FLOPs the base config would do on this machine in the budget, ×¼ … ×4 around it.
2. **Pick** (``pick_for_time``, a pure function): a shape of N parameters running at r tokens/s sees
   D = r · t tokens in the t seconds left; the scaling law predicts L(N, D) = E + A/N^α + B/D^β
   (Chinchilla's by default, the user's own from ``lmkit scale fit``); the lowest predicted loss
   wins. Slow big models see few tokens, fast small ones see many: the law weighs the two.
3. **Train to the deadline** (``train_to_deadline``): the trainer is built (the tokenizer trained
   and the text packed: that time counts too), then whatever is left of the budget becomes the
   run's ``max_time`` with the schedule over wall time, so the learning rate reaches the end of its
   schedule as the deadline arrives. What comes after the last step is kept back: the final
   held-out evaluation (timed while measuring) and the finish, rehearsed on the built trainer
   (``finish_seconds``: the loss plot drawn in a scratch folder and a write of the weights), so the run ends at the
   deadline on a fast machine and a slow one alike.

:func:`pretrain_to_budget` runs the three steps for ``lmkit pretrain --model auto``.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmkit.config import ModelConfig, RunConfig
from lmkit.config_io import to_dict
from lmkit.errors import LmkitError
from lmkit.plan.chinchilla import ScalingFit
from lmkit.plan.compute import check_run_time, count_params, flops_per_token
from lmkit.plan.shapes import shape_for

SPREAD = (0.25, 0.5, 1.0, 2.0, 4.0)  # candidate sizes around the law's optimum
MEASURE_STEPS = 2  # timed optimizer steps per candidate (after one warm-up step)
FINISH_MARGIN_S = 0.05  # on top of the rehearsed finish (final checkpoint, loss plot)


@dataclass(frozen=True)
class Candidate:
    """One shape and this machine's measured training throughput for it."""

    model: ModelConfig
    params: int
    tokens_per_second: float


def pick_for_time(candidates: list[Candidate], seconds: float, law: ScalingFit) -> tuple[int, list[dict[str, Any]]]:
    """The candidate with the lowest predicted loss after ``seconds`` of training, and every row:
    params, tokens/s, tokens = tokens/s × seconds, tokens per parameter, predicted loss."""
    if not candidates:
        raise LmkitError("no candidate shapes to choose from")
    if seconds <= 0:
        raise LmkitError(f"the time left for training must be positive, got {seconds:.3g}s")
    rows = []
    for c in candidates:
        tokens = c.tokens_per_second * seconds
        rows.append(
            {
                "d_model": c.model.d_model,
                "n_layers": c.model.n_layers,
                "n_heads": c.model.n_heads,
                "params": c.params,
                "tokens_per_second": c.tokens_per_second,
                "tokens": tokens,
                "tokens_per_param": tokens / c.params,
                "predicted_loss": law.loss(c.params, tokens),
            }
        )
    best = min(range(len(rows)), key=lambda i: rows[i]["predicted_loss"])
    return best, rows


def candidate_shapes(base: ModelConfig, flops_per_second: float, seconds: float, law: ScalingFit) -> list[ModelConfig]:
    """Shapes grown from ``base`` around the law's optimum for ``flops_per_second`` × ``seconds``."""
    n_opt, _ = law.optimal(flops_per_second * seconds)
    out: list[ModelConfig] = []
    seen: set[tuple[int, int]] = set()
    for f in SPREAD:
        m = shape_for(base, n_opt * f, base.vocab_size)
        if (m.d_model, m.n_layers) not in seen:
            seen.add((m.d_model, m.n_layers))
            out.append(m)
    return out


def _throughput(cfg: RunConfig, model: ModelConfig) -> tuple[float, float]:
    """(tokens/s, seconds of one held-out batch) of ``model`` trained with ``cfg``'s settings on this machine."""
    from lmkit.train.calibrate import measure

    trial = copy.deepcopy(cfg)
    trial.model = model
    trial.train.max_steps, trial.train.max_time = 1, None
    rep = measure(trial, steps=MEASURE_STEPS, show_progress=False)
    return float(rep["tokens_per_second"]), float(rep["eval_batch_seconds"])


def choose_model(
    cfg: RunConfig, budget_s: float, law: ScalingFit, start: float, show_progress: bool = True, yes: bool = False
) -> dict[str, Any]:
    """Measure candidates and pick one for what is left of ``budget_s`` (counted from ``start``,
    a ``time.perf_counter()`` value). Returns the choice: the chosen ModelConfig under "model",
    every candidate's row, the law, and the seconds measuring took. A budget longer than
    ``lmkit.plan.compute.LONG_RUN_HOURS`` is refused unless ``yes``, and one past ``NEVER_DAYS``
    always, before anything is measured."""
    check_run_time(budget_s, yes, f"the time budget --train.max_time {budget_s:g}")
    measured: dict[tuple[int, int], tuple[float, float]] = {}
    measured[(cfg.model.d_model, cfg.model.n_layers)] = _throughput(cfg, cfg.model)
    fps = measured[(cfg.model.d_model, cfg.model.n_layers)][0] * flops_per_token(cfg.model, cfg.model.max_seq_len)
    left = budget_s - (time.perf_counter() - start)
    shapes = candidate_shapes(cfg.model, fps, max(left, 1e-3), law)
    bar = None
    if show_progress:
        from lmkit.progress import progress

        bar = progress(total=len(shapes), unit="shape", desc="measuring shapes")
    cands = []
    for m in shapes:
        key = (m.d_model, m.n_layers)
        if key not in measured:
            measured[key] = _throughput(cfg, m)
        cands.append(Candidate(m, count_params(m).total, measured[key][0]))
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    left = budget_s - (time.perf_counter() - start)
    if left <= 0:
        raise LmkitError(
            f"the time budget ({budget_s:g}s) was spent measuring this machine; give a longer train.max_time"
        )
    best, rows = pick_for_time(cands, left, law)
    chosen = cands[best].model
    return {
        "model": chosen,
        "best": best,
        "rows": rows,
        "law": dataclasses.asdict(law),
        "budget_seconds": budget_s,
        "measure_seconds": time.perf_counter() - start,
        "flops_per_second_base": fps,
        "final_eval_seconds": measured[(chosen.d_model, chosen.n_layers)][1] * cfg.train.eval_batches,
    }


def budget_run_config(cfg: RunConfig, choice: dict[str, Any]) -> RunConfig:
    """The run config with the chosen shape and wall time as its only stop condition."""
    out = copy.deepcopy(cfg)
    out.model = choice["model"]
    t = out.train
    t.max_steps = t.max_tokens = t.max_flops = t.tokens_per_param = None
    t.max_time = float(choice["budget_seconds"])
    return out


def format_choice(choice: dict[str, Any]) -> str:
    """The table ``lmkit pretrain --model auto`` prints: what it measured, predicted and picked."""
    law = choice["law"]
    lines = [
        f"time budget {choice['budget_seconds']:g}s; measuring this machine took {choice['measure_seconds']:.1f}s; "
        f"predicted loss L(N, D) = {law['E']:.3g} + {law['A']:.4g}/N^{law['alpha']:.3g} + "
        f"{law['B']:.4g}/D^{law['beta']:.3g} ({law['name']}), D = tokens/s x time left",
        f"  {'shape':>12} {'params':>11} {'tokens/s':>10} {'tokens':>11} {'tok/param':>9} {'pred. loss':>10}",
    ]
    for i, r in enumerate(choice["rows"]):
        mark = "  <- chosen" if i == choice["best"] else ""
        lines.append(
            f"  {r['n_layers']:>3} x {r['d_model']:<6} {r['params']:>11,} {r['tokens_per_second']:>10,.0f} "
            f"{r['tokens']:>11,.0f} {r['tokens_per_param']:>9.1f} {r['predicted_loss']:>10.4f}{mark}"
        )
    r = choice["rows"][choice["best"]]
    lines.append(
        f"chosen: {r['n_layers']} layers x {r['d_model']} ({r['params']:,} parameters): the lowest predicted "
        f"loss for the time left; the schedule ends at the deadline"
    )
    return "\n".join(lines)


def finish_seconds(tr: Any) -> float:
    """Seconds the end of ``tr``'s run will take after its last step, rehearsed in a scratch
    folder of the run: the loss plot drawn by ``plot_loss_curve`` itself (this also pays
    matplotlib's import and font loading before the clock), and the weights written with
    safetensors, three times over for the checkpoint's weights and optimizer moments."""
    import json
    import tempfile

    from safetensors.torch import save_file

    from lmkit.train.metrics import plot_loss_curve

    with tempfile.TemporaryDirectory(dir=tr.out) as tmp:
        scratch = Path(tmp)
        (scratch / "metrics.jsonl").write_text(
            "".join(json.dumps({"step": i, "tokens": i, "loss": 3.0 - i, "val_loss": 3.0 - i}) + "\n" for i in range(3))
        )
        t0 = time.perf_counter()
        plot_loss_curve(scratch)
        t1 = time.perf_counter()
        save_file(
            {k: v.detach().contiguous() for k, v in tr.model.state_dict().items()},
            str(scratch / "rehearsal.safetensors"),
        )
        t2 = time.perf_counter()
    return (t1 - t0) + 3 * (t2 - t1) + FINISH_MARGIN_S


def train_to_deadline(
    cfg: RunConfig,
    deadline: float,
    reserve_s: float = 0.0,
    show_progress: bool = True,
    choice: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Build the trainer (tokenizer, packing), then train for what is left until ``deadline`` (a
    ``time.perf_counter()`` value) less ``reserve_s`` for the final evaluation and checkpoint, the
    learning rate scheduled over that wall time."""
    from lmkit.files import write_json_atomic
    from lmkit.train.loop import Trainer
    from lmkit.train.runfolder import release_run_folder
    from lmkit.train.steps import Horizon

    try:
        tr = Trainer(cfg, show_progress=show_progress)
        finish = finish_seconds(tr)
        left = deadline - time.perf_counter() - reserve_s - finish
        if left <= 0:
            raise LmkitError(
                f"{cfg.out}: the time budget was spent before training could start (measuring and "
                "packing the data); give a longer train.max_time"
            )
        tr.cfg.train.max_time = left
        tr.horizon = Horizon(None, f"time budget ({left:.1f}s left for training)", left)
        if choice is not None and tr.dist.main:
            record = {k: v for k, v in choice.items() if k != "model"}
            record["model"] = to_dict(choice["model"])
            record["train_seconds"] = left
            write_json_atomic(tr.out / "budget.json", record)
        return tr.run()
    finally:
        release_run_folder(cfg.out)


def pretrain_to_budget(
    cfg: RunConfig, law: ScalingFit, show_progress: bool = True, yes: bool = False
) -> dict[str, Any]:
    """``lmkit pretrain --model auto``: measure shapes, pick one for the time budget
    ``cfg.train.max_time`` (counted from this call) by ``law``, train it to the deadline. Returns
    the run's summary with a "budget" entry: the seconds given, spent measuring and in all, and the
    chosen row of the table (:func:`format_choice` prints the table to stderr unless not
    ``show_progress``). Refused in one line without a time budget; ``yes`` as :func:`choose_model`."""
    import sys

    start = time.perf_counter()
    if cfg.train.max_time is None:
        raise LmkitError("--model auto needs a time budget: --train.max_time SECONDS")
    budget = float(cfg.train.max_time)
    choice = choose_model(cfg, budget, law, start, show_progress=show_progress, yes=yes)
    if show_progress:
        print(format_choice(choice), file=sys.stderr)
    summary = train_to_deadline(
        budget_run_config(cfg, choice),
        start + budget,
        choice["final_eval_seconds"],
        show_progress=show_progress,
        choice=choice,
    )
    summary["budget"] = {
        "seconds": budget,
        "measure_seconds": choice["measure_seconds"],
        "wall_seconds": time.perf_counter() - start,
        "chosen": choice["rows"][choice["best"]],
    }
    return summary
