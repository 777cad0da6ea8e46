"""Calibrate the plan on this machine: ``lmkit plan --measure CONFIG``.

Runs a few real optimizer steps of a run config on this machine — lmkit's own model, the
optimizer ``train.optimizer`` names (AdamW, or Muon with AdamW), autocast, gradient accumulation
and clipping, through ``lmkit.train.Trainer.train_step`` — on random token
windows (a step's speed and memory do not depend on what the tokens say, so no data has to be
prepared), in the precision the run would settle on (``train.precision: auto``: the cached
precision probe), then predicts the full run's wall time from the measured step time and compares the
measured peak memory with ``lmkit.plan``'s precise estimate.

This lives apart from ``lmkit.plan`` because it trains: ``plan`` stays pure maths that the trainer
itself imports.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Iterator
from typing import Any

import torch

from lmkit import plan
from lmkit.config import RunConfig
from lmkit.errors import LmkitError
from lmkit.objectives import SpecialIds, make_batch
from lmkit.tokenizer import BOS, EOS, MASK, PAD, SENTINELS, SPECIAL_TOKENS
from lmkit.train.distributed import Dist, resolve_device, settle_precision
from lmkit.train.loop import Trainer
from lmkit.train.rss import peak_rss_bytes
from lmkit.train.steps import batch_generator

N_SPECIAL = len(SPECIAL_TOKENS)  # lmkit tokenizers: <pad> <s> </s> <unk> [MASK] and 100 sentinels


def synthetic_specials(vocab_size: int) -> SpecialIds:
    """The special ids of an lmkit tokenizer of ``vocab_size`` tokens (their layout is fixed)."""
    if vocab_size <= N_SPECIAL + 1:
        raise LmkitError(f"model.vocab_size ({vocab_size}) is too small for lmkit's {N_SPECIAL} special tokens")
    ids = {t: i for i, t in enumerate(SPECIAL_TOKENS)}
    return SpecialIds(
        pad=ids[PAD],
        bos=ids[BOS],
        eos=ids[EOS],
        mask=ids[MASK],
        sentinels=tuple(ids[t] for t in SENTINELS),
        vocab_size=vocab_size,
        n_special=N_SPECIAL,
    )


class _SyntheticTrainer(Trainer):
    """The trainer's step on random windows: same model, optimizer, precision and accumulation."""

    def __init__(self, cfg: RunConfig) -> None:  # noqa: D107 - no data, no checkpoints, no logging
        cfg.validate()
        self.cfg = cfg
        self.dist = Dist()
        self.device = resolve_device(cfg.train.device, self.dist)
        self.precision_choice = settle_precision(cfg, self.device, self.dist)  # as the run would here
        torch.manual_seed(cfg.train.seed)
        self.specials = synthetic_specials(cfg.model.vocab_size)
        self.resume_from = self.init_from = None  # a fresh model
        self._build_model()  # the trainer's own setup steps from here on
        self._wrap_model()
        self._build_optimizer()
        self._plan_steps()
        self.prev_meta: dict[str, Any] = {}
        self._predict_memory()  # train.memory settled as the run would settle it here, and the plan for it

    def micro_batches(self, step: int) -> Iterator[dict[str, torch.Tensor]]:
        for micro in range(self.accum):
            gen = batch_generator(self.cfg.train.seed, step, micro, 0)
            windows = torch.randint(
                N_SPECIAL, self.cfg.model.vocab_size, (self.micro_batch, self.window), generator=gen
            )
            yield {k: v.to(self.device) for k, v in make_batch(self.cfg.model, windows, self.specials, gen).items()}

    def seed_dropout(self, step: int, micro: int) -> None:
        """Random windows, no data order: dropout draws from the one running stream."""

    @torch.no_grad()
    def eval_batch_seconds(self) -> float:
        """Time of one held-out batch (a forward pass of a micro-batch)."""
        self.model.eval()
        batch = next(iter(self.micro_batches(10**6)))
        times = []
        for _ in range(2):
            t0 = time.perf_counter()
            if self.autocast is not None:
                with self.autocast:
                    self.model.loss(batch)
            else:
                self.model.loss(batch)
            self._sync()
            times.append(time.perf_counter() - t0)
        self.model.train()
        return min(times)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def _peak_memory(device: torch.device) -> tuple[float, str]:
    """Peak memory so far: CUDA tensors on a GPU; on a CPU the process's peak RSS."""
    if device.type == "cuda":
        return float(torch.cuda.max_memory_allocated(device)), "peak CUDA memory allocated by tensors"
    return peak_rss_bytes(), "peak RSS of this process"


def measure(cfg: RunConfig, steps: int = 6, show_progress: bool = True) -> dict[str, Any]:
    """Time ``steps`` optimizer steps (after one warm-up step) and predict the whole run."""
    if steps < 1:
        raise LmkitError(f"--measure-steps must be at least 1, got {steps}")
    tr = _SyntheticTrainer(cfg)
    if tr.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(tr.device)
    times: list[float] = []
    bar = None
    if show_progress:
        from lmkit.progress import progress

        bar = progress(total=steps + 1, unit="step", desc="measuring")
    for step in range(steps + 1):
        t0 = time.perf_counter()
        loss, _ = tr.train_step(step, cfg.train.lr)
        tr._sync()
        if step > 0:  # the first step pays for allocation and kernel selection
            times.append(time.perf_counter() - t0)
        if not math.isfinite(loss):
            raise LmkitError(f"loss became {loss} while measuring; check train.lr / precision")
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    peak_mem, mem_kind = _peak_memory(tr.device)
    step_s = statistics.median(times)
    eval_s = tr.eval_batch_seconds()
    tokens_per_s = tr.tokens_per_step / step_s
    horizon = tr.horizon
    if horizon.steps is not None:
        run_steps = horizon.steps
        if horizon.max_time is not None:
            run_steps = min(run_steps, int(horizon.max_time / step_s))
    else:
        run_steps = int((horizon.max_time or 0) / step_s)
    n_evals = (run_steps // cfg.train.eval_every if cfg.train.eval_every else 0) + 1
    eval_total = n_evals * cfg.train.eval_batches * eval_s
    train_total = run_steps * step_s
    predicted = tr.memory_plan
    peak_flops = plan.device_peak_flops(tr.device, cfg.train.precision)
    return {
        "config": None,
        "device": str(tr.device),
        "precision": cfg.train.precision,
        "precision_choice": tr.precision_choice,
        "memory_choice": tr.memory_plan["memory_choice"],
        "params": tr.n_params,
        "steps_measured": steps,
        "step_seconds_median": step_s,
        "step_seconds": times,
        "tokens_per_step": tr.tokens_per_step,
        "tokens_per_second": tokens_per_s,
        "eval_batch_seconds": eval_s,
        "flops_per_token": tr.flops_per_token,
        "mfu": plan.mfu(tokens_per_s, tr.flops_per_token, peak_flops),
        "peak_flops": peak_flops,
        "run": {
            "steps": run_steps,
            "stop": horizon.reason,
            "tokens": run_steps * tr.tokens_per_step,
            "flops": run_steps * tr.tokens_per_step * tr.flops_per_token,
            "train_seconds": train_total,
            "eval_seconds": eval_total,
            "wall_seconds": train_total + eval_total,
        },
        "memory": {
            "measured_bytes": peak_mem,
            "measured_kind": mem_kind,
            "predicted_bytes": predicted["total"],
            "predicted_breakdown": predicted,
            "measured_over_predicted": peak_mem / predicted["total"],
        },
    }


__all__ = ["measure"]
