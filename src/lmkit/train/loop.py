"""Pre-training: ``train(cfg)`` runs one configured run of any family, from data to checkpoints.

The run, in small named steps (``Trainer.__init__`` lists the setup ones in order):
    open the run folder ─▶ settle the config (train.init / the saved run) ─▶ build data (tokenizer
    + packed shards) ─▶ build model ─▶ wrap it (DDP / FSDP, compile) ─▶ train.optimizer (AdamW, or
    Muon + AdamW) ─▶ plan the steps and the horizon ─▶ resume state
    ─▶ repeat: batch(step) ─▶ forward/backward (×grad accumulation, autocast) ─▶ clip ─▶ update
               ─▶ log (metrics.jsonl, TensorBoard, progress bar) ─▶ evaluate ─▶ checkpoint
    ─▶ final evaluation, checkpoint, loss-curve PNG.

Exact resume: the windows of a step, and the objective's random masks, are a pure function of
(seed, step, position in the global batch) (``lmkit.train.batches``), and a checkpoint carries the
weights, optimizer state, grad scaler and RNG states (``lmkit.train.checkpoint``), so a resumed run
(even after SIGKILL, even on another number of processes) continues the uninterrupted loss curve.

Scale-out: under ``torchrun`` the same command runs one process per device; the model is wrapped
in DistributedDataParallel (``train.distributed: ddp``) or sharded with FSDP (``fsdp``: parameters,
gradients and optimizer states split across ranks). Each rank reads its own windows of the global
batch, and writes its own shards of each checkpoint.
"""

from __future__ import annotations

import math
import shlex
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import Any, cast

import torch
import torch.distributed as dist
from torch import nn

from lmkit import plan
from lmkit.config import RunConfig
from lmkit.config_io import to_dict
from lmkit.errors import LmkitError
from lmkit.infer.evaluate import evaluate, token_byte_lengths, window_bytes
from lmkit.models import build_model, count_parameters
from lmkit.models.checkpoint import CKPT_PREFIX, list_checkpoints, load_meta, load_weights_into, resolve_checkpoint
from lmkit.models.sharded_checkpoint import is_sharded
from lmkit.objectives import window_length
from lmkit.train.batches import NEW_RUN_ORDER, BatchOrder, recorded_order, step_divisors
from lmkit.train.checkpoint import load_run_checkpoint, save_run_checkpoint
from lmkit.train.continued import adopt_init_checkpoint
from lmkit.train.distributed import (
    LossModule,
    autocast_for,
    init_distributed,
    resolve_device,
    settle_precision,
    wrap_for_processes,
)
from lmkit.train.metrics import Metrics, plot_loss_curve
from lmkit.train.record import run_meta
from lmkit.train.rss import memory_report, settle_memory
from lmkit.train.runfolder import claim_run_folder, release_run_folder
from lmkit.train.steps import lr_at, make_optimizer, plan_horizon
from lmkit.train.stopping import StopSignals, TrainingInterrupted

# --------------------------------------------------------------------------- the trainer


class Trainer:
    """One training run. ``run()`` trains to the horizon and returns a summary dict."""

    def __init__(
        self,
        cfg: RunConfig,
        resume: bool = False,
        show_progress: bool = True,
        new_data: bool = False,
        new_batch: bool = False,
    ) -> None:
        cfg.validate()
        self.cfg, self.new_batch = cfg, new_batch  # new_batch: a resumed run's global batch may change
        self.dist = init_distributed()
        self.device = resolve_device(cfg.train.device, self.dist)
        self.show_progress = show_progress and self.dist.main
        self.new_data = new_data
        self._open_run_folder(resume)
        torch.manual_seed(cfg.train.seed)
        self._settle_config(resume)
        self._build_data()
        self._build_model()
        self._wrap_model()
        self._build_optimizer()
        self._plan_steps()
        self._predict_memory()
        self._measure_peak()
        self._resume_state()

    # ------------------------------------------------------------------ setup steps (in order)

    def _open_run_folder(self, resume: bool) -> None:
        """Claim ``out`` (this run's alone until run() ends: the main rank locks it; see runfolder);
        a new run needs it free of checkpoints, a resumed one needs one there."""
        self.out = Path(self.cfg.out)
        cleaned = claim_run_folder(self.out, lock=self.dist.main, create=not resume)
        if cleaned and self.show_progress:
            print(f"lmkit: removed what an interrupted run left in {self.out}: {', '.join(cleaned)}", file=sys.stderr)
        existing = list_checkpoints(self.out) if self.out.exists() else []
        if existing and not resume:
            raise LmkitError(
                f"{self.out}: already holds checkpoints ({existing[-1].name}); pass --resume to "
                "continue that run, or choose another --out"
            )
        if resume and not existing:
            raise LmkitError(f"{self.out}: --resume given but there is no checkpoint to resume from")
        self.resume_from = resolve_checkpoint(self.out) if resume else None
        self.out.mkdir(parents=True, exist_ok=True)

    def _settle_config(self, resume: bool) -> None:
        """What this run's config leaves open, filled: from ``train.init``'s checkpoint (model shape,
        tokenizer) or, on resume, from the saved run, checked before anything is packed."""
        cfg = self.cfg
        self.init_from = adopt_init_checkpoint(cfg, cfg.train.init) if cfg.train.init and not resume else None
        self.data_change: str | None = None  # how the resumed run's source files differ from the saved ones
        self.data_changes: list[dict[str, Any]] = []  # meta.json's record of each --resume --new-data switch
        self.prev_meta: dict[str, Any] = {}
        if self.resume_from is not None:
            from lmkit.train.resume import agree_with_saved_run

            self.prev_meta, self.data_change = agree_with_saved_run(
                cfg, self.resume_from, self.out, self.new_data, self.dist.main, self.dist.world, self.new_batch
            )
        self.precision_choice = settle_precision(cfg, self.device, self.dist, self.prev_meta.get("precision_choice"))
        self.base_model = (load_meta(self.init_from) if self.init_from else self.prev_meta).get("base_model")

    def _build_data(self) -> None:
        """Tokenizer and packed shards (packed by the main rank, opened by the others), the model's
        vocabulary set to the tokenizer's, and the data's fingerprint (checked on resume)."""
        from lmkit.data.prepare import prepare
        from lmkit.train.resume import check_resumed_data, data_fingerprint

        cfg = self.cfg
        if self.dist.main or self.dist.world == 1:
            self.tokenizer, self.train_shards, self.val_shards = prepare(
                cfg.data, self.out, cfg.model.vocab_size, show_progress=self.show_progress
            )
        if self.dist.world > 1:
            dist.barrier()
            if not self.dist.main:  # the main rank packed; the others open what it wrote
                self.tokenizer, self.train_shards, self.val_shards = prepare(
                    cfg.data, self.out, cfg.model.vocab_size, show_progress=False
                )
        if cfg.model.vocab_size != self.tokenizer.vocab_size and self.init_from is None:
            if self.show_progress:
                print(
                    f"model.vocab_size set to the tokenizer's {self.tokenizer.vocab_size} "
                    f"(config said {cfg.model.vocab_size})",
                    file=sys.stderr,
                )
            cfg.model.vocab_size = self.tokenizer.vocab_size
        self.data_fingerprint = data_fingerprint(cfg.data, self.tokenizer, self.train_shards, self.val_shards)
        self.val_shards.windows_per_shard(window_length(cfg.model))  # too small: say so now, not after training
        if self.resume_from is not None:
            self.data_changes = check_resumed_data(
                self.out,
                self.resume_from,
                self.prev_meta,
                self.data_change,
                self.tokenizer,
                self.data_fingerprint,
                self.new_data,
            )
        self.specials = self.tokenizer.special_ids_for_objectives()
        self.token_bytes = token_byte_lengths(self.tokenizer)

    def _build_model(self) -> None:
        """The model, with the resumed run's or ``train.init``'s weights, on the device."""
        from lmkit.models.checkpoint import load_model_config, load_state

        cfg = self.cfg
        self.model = build_model(cfg.model)
        if self.resume_from is not None:
            saved_model, this_model = to_dict(load_model_config(self.resume_from)), to_dict(cfg.model)
            for key in saved_model:
                if saved_model[key] != this_model.get(key):
                    raise LmkitError(
                        f"{self.resume_from}: model.{key} is {saved_model[key]!r} in the run being "
                        f"resumed but {this_model.get(key)!r} in this one; resume with the same model"
                    )
            if not is_sharded(self.resume_from):  # a sharded one's weights come with its optimizer state
                load_weights_into(self.model, load_state(self.resume_from), self.resume_from)
        elif self.init_from is not None:
            load_weights_into(self.model, load_state(self.init_from), self.init_from)
        self.model.to(self.device)
        self.model.activation_checkpointing = cfg.train.activation_checkpointing
        self.n_params = count_parameters(self.model)

    def _wrap_model(self) -> None:
        """``wrapped``: the loss module the steps call, spread over the processes (DDP / FSDP), compiled if asked."""
        self.wrapped: nn.Module = wrap_for_processes(
            LossModule(self.model), self.model, self.device, self.dist, self.cfg.train.distributed
        )
        if self.cfg.train.compile:
            self.wrapped = cast(nn.Module, torch.compile(self.wrapped))  # an OptimizedModule (stubs: a callable)

    def _build_optimizer(self) -> None:
        """``train.optimizer`` (AdamW, or Muon + AdamW: ``lmkit.train.steps``), autocast, the fp16 grad scaler."""
        t = self.cfg.train
        self.optimizer = make_optimizer(self.model, t.lr, t.weight_decay, (t.beta1, t.beta2), t.eps, t.optimizer)
        self.autocast = autocast_for(t.precision, self.device)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=t.precision == "fp16")

    def _plan_steps(self) -> None:
        """A step's shape (micro-batches x accumulation x processes, window), its tokens and FLOPs,
        and the horizon: how many steps the run lasts."""
        cfg = self.cfg
        mb = cfg.train.micro_batch_size or max(1, cfg.train.batch_size // self.dist.world)
        if cfg.train.batch_size % (mb * self.dist.world):
            raise LmkitError(
                f"train.batch_size ({cfg.train.batch_size}) must be a multiple of micro_batch_size "
                f"({mb}) x processes ({self.dist.world})"
            )
        self.micro_batch = mb
        self.accum = cfg.train.batch_size // (mb * self.dist.world)
        self.seq_len = cfg.model.max_seq_len
        self.window = window_length(cfg.model)
        self.tokens_per_step = cfg.train.batch_size * self.seq_len
        self.flops_per_token = float(plan.flops_per_token(cfg.model, self.seq_len))
        self.horizon = plan_horizon(
            cfg.train, self.tokens_per_step, self.flops_per_token * self.tokens_per_step, self.n_params
        )

    def _predict_memory(self) -> None:
        """``train.memory`` settled, and this run's peak memory as ``lmkit plan`` predicts it (train/rss.py)."""
        self.memory_plan = settle_memory(
            self.cfg,
            self.n_params,
            self.micro_batch,
            self.seq_len,
            self.dist,
            self.device,
            self.prev_meta.get("memory"),
        )

    def memory_report(self) -> dict[str, Any]:
        """Measured peak so far beside the plan's prediction (and the relative error)."""
        return memory_report(self.device, self.memory_plan)

    def _measure_peak(self) -> None:
        """The device's peak FLOP/s that MFU is reported against (the main rank logs it)."""
        self.peak_flops = plan.device_peak_flops(self.device, self.cfg.train.precision) if self.dist.main else 0.0

    def _resume_state(self) -> None:
        """The data order (a new run's, or the resumed run's: ``lmkit.train.batches``); step, time,
        history: zero for a new run; the checkpoint's optimizer, scaler, RNG, step on resume."""
        order = recorded_order(self.prev_meta) if self.resume_from is not None else NEW_RUN_ORDER
        shape = (self.window, self.micro_batch, self.accum, self.dist.rank)  # tokens, windows, micro-batches
        self.batches = BatchOrder(self.train_shards, self.cfg.model, self.specials, self.cfg.train.seed, *shape, order)
        self.step = 0
        self.elapsed_before = 0.0
        self.history: dict[str, Any] = {}
        if self.resume_from is not None:
            load_run_checkpoint(self, self.resume_from)  # either format, from any number of processes

    # ------------------------------------------------------------------ one step

    def micro_batches(self, step: int) -> Iterator[dict[str, torch.Tensor]]:
        for micro in range(self.accum):  # the run's data order: lmkit.train.batches
            yield {k: v.to(self.device, non_blocking=True) for k, v in self.batches.micro_batch(step, micro).items()}

    def seed_dropout(self, step: int, micro: int) -> None:
        self.batches.seed_dropout(step, micro)  # the same masks on any number of processes

    def train_step(self, step: int, lr: float) -> tuple[float, float]:
        """One optimizer step: (mean loss over the global batch's scored tokens, gradient norm before
        clipping), the same however the batch is split (weights, dropout: ``lmkit.train.batches``)."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        batches = list(self.micro_batches(step))
        divisors = step_divisors(batches, self.dist.world, self.device)  # one all-reduce of a count
        total = torch.zeros((), device=self.device)
        for i, (batch, divisor) in enumerate(zip(batches, divisors, strict=True)):
            ctx = self.wrapped.no_sync() if (i < self.accum - 1 and hasattr(self.wrapped, "no_sync")) else nullcontext()  # type: ignore[operator]  # DDP/FSDP method
            with ctx:
                self.seed_dropout(step, i)
                with self.autocast if self.autocast is not None else nullcontext():
                    loss = self.wrapped(batch) / divisor
                self.scaler.scale(loss).backward()
            total += loss.detach()
        self.scaler.unscale_(self.optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(
            self.model.parameters(), self.cfg.train.grad_clip if self.cfg.train.grad_clip > 0 else float("inf")
        )
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        if self.dist.world > 1:
            dist.all_reduce(total)
            total /= self.dist.world
        return float(total), float(grad_norm)

    def run_eval(self) -> dict[str, float]:
        return evaluate(
            self.model,
            self.val_shards,
            self.cfg.model,
            self.specials,
            batch_size=self.micro_batch,
            max_batches=self.cfg.train.eval_batches,
            token_bytes=self.token_bytes,
            placed_bytes=window_bytes(self.tokenizer, self.token_bytes),  # a SentencePiece text's leading space
            device=self.device,
            autocast=self.autocast,
            loss_fn=self.wrapped,
        )

    def save(self, last_metrics: dict[str, Any], elapsed: float) -> Path | None:
        """Checkpoint this step (every rank calls it; sharded under torchrun): ``lmkit.train.checkpoint``."""
        return save_run_checkpoint(self, last_metrics, elapsed)

    def meta(self, last: dict[str, Any], elapsed: float) -> dict[str, Any]:
        """meta.json's record of the run so far (``lmkit.train.record``)."""
        return run_meta(self, last, elapsed)

    # ------------------------------------------------------------------ the loop

    def run(self) -> dict[str, Any]:
        """Train to the horizon. SIGINT/SIGTERM stop it after the current step with a checkpoint
        (``TrainingInterrupted``); the run folder's lock is let go however it ends."""
        try:
            with StopSignals() as stop:
                return self._train_loop(stop)
        finally:
            release_run_folder(self.out)

    def _stop_requested(self, stop: StopSignals) -> bool:
        """Whether a stop signal came, on any rank (so that all ranks stop at the same step)."""
        flag = stop.signum is not None
        if self.dist.world > 1:
            t = torch.tensor([1.0 if flag else 0.0], device=self.device)
            dist.all_reduce(t, op=dist.ReduceOp.MAX)
            flag = bool(t.item())
        return flag

    def _train_loop(self, stop: StopSignals) -> dict[str, Any]:
        cfg = self.cfg.train
        resume_step = self.step if self.resume_from is not None else None
        metrics = Metrics(self.out, cfg.tensorboard, resume_step) if self.dist.main else None
        start = time.perf_counter()
        horizon = self.horizon
        bar = None
        if self.show_progress:
            from lmkit.progress import progress

            print(
                f"lmkit pretrain: {self.cfg.model.family} ({self.cfg.model.objective}), {self.n_params:,} parameters, "
                f"{self.train_shards.num_tokens:,} training tokens, stop at {horizon.reason}"
                + (f" or {horizon.max_time:g}s" if horizon.max_time and horizon.steps else "")
                + f", device {self.device}, precision {self.precision_choice}"
                + (f", memory {self.memory_plan['memory_choice']}" if self.cfg.train.memory == "lean" else ""),
                file=sys.stderr,
            )
            bar = progress(total=horizon.steps, initial=self.step, unit="step", desc="train")
        last: dict[str, Any] = {}
        window_losses: list[float] = []
        window_start, window_step = time.perf_counter(), self.step
        stop_reason = horizon.reason
        saved_at: int | None = None
        while True:
            elapsed = self.elapsed_before + time.perf_counter() - start
            if horizon.steps is not None and self.step >= horizon.steps:
                break
            if horizon.max_time is not None and elapsed >= horizon.max_time:
                stop_reason = f"max_time={horizon.max_time:g}s"
                break
            fraction = None  # of max_time, when time alone sets the horizon
            if horizon.steps is None and horizon.max_time:
                fraction = elapsed / horizon.max_time
            lr = lr_at(self.step, cfg, horizon.steps, fraction)
            loss, gnorm = self.train_step(self.step, lr)
            if not math.isfinite(loss):
                raise LmkitError(f"loss became {loss} at step {self.step}; lower train.lr or use fp32/bf16")
            self.step += 1
            window_losses.append(loss)
            if bar is not None:
                bar.update(1)
            if self.step % cfg.log_every == 0 or self.step == horizon.steps:
                now = time.perf_counter()
                tps = (self.step - window_step) * self.tokens_per_step / max(now - window_start, 1e-9)
                last = {
                    "step": self.step,
                    "tokens": self.step * self.tokens_per_step,
                    "loss": sum(window_losses) / len(window_losses),
                    "lr": lr,
                    "grad_norm": gnorm,
                    "tokens_per_s": tps,
                    "mfu": tps * self.flops_per_token / self.peak_flops if self.peak_flops else 0.0,
                    "elapsed_s": self.elapsed_before + now - start,
                }
                window_losses, window_start, window_step = [], now, self.step
                if metrics is not None:
                    metrics.log(last)
                if bar is not None:
                    bar.set_postfix(loss=f"{last['loss']:.3f}", tok_s=f"{tps:,.0f}", mfu=f"{100 * last['mfu']:.0f}%")
            if cfg.eval_every and self.step % cfg.eval_every == 0 and self.step != horizon.steps:
                self._eval_and_log(metrics)
            if cfg.ckpt_every and self.step % cfg.ckpt_every == 0 and self.step != horizon.steps:
                self.save(last, self.elapsed_before + time.perf_counter() - start)
                saved_at = self.step
            if self._stop_requested(stop) and self.step != horizon.steps:
                path = (
                    self.out / f"{CKPT_PREFIX}{self.step:07d}"
                    if saved_at == self.step
                    else self.save(last, self.elapsed_before + time.perf_counter() - start)
                )
                if bar is not None:
                    bar.close()
                if metrics is not None:
                    metrics.close()
                what = signal.Signals(stop.signum).name if stop.signum is not None else "a signal to another rank"
                raise TrainingInterrupted(
                    f"interrupted by {what} after step {self.step}; saved checkpoint {path}; continue with: "
                    f"lmkit pretrain --out {shlex.quote(str(self.out))} --resume",
                    path,
                )
        final_eval = self._eval_and_log(metrics)
        elapsed = self.elapsed_before + time.perf_counter() - start
        path = self.save(last, elapsed)
        if bar is not None:
            bar.close()
        png = None
        memory = self.memory_report()
        if metrics is not None:
            metrics.log(
                {
                    "step": self.step,
                    "peak_memory_bytes": memory["measured_bytes"],
                    "predicted_memory_bytes": memory["predicted_bytes"],
                    "memory_error": memory["error"],
                }
            )
            metrics.close()
            png = plot_loss_curve(self.out)
            memory = self.memory_report()  # the plot is part of the run
            from lmkit.plan.measure import record_memory

            record_memory(
                memory["predicted_bytes"],
                memory["measured_bytes"],
                f"{self.cfg.model.family} micro-batch {self.micro_batch} x {self.seq_len}",
            )
        return {
            "checkpoint": str(path) if path else None,
            "steps": self.step,
            "memory": memory,
            "tokens": self.step * self.tokens_per_step,
            "params": self.n_params,
            "precision": self.precision_choice,
            "train_loss": last.get("loss"),
            "eval": final_eval,
            "stop_reason": stop_reason,
            "wall_time_s": elapsed,
            "loss_curve": str(png) if png else None,
            "metrics": str(self.out / "metrics.jsonl"),
        }

    def _eval_and_log(self, metrics: Metrics | None) -> dict[str, float]:
        ev = self.run_eval()
        self.history["eval"] = ev
        if metrics is not None and ev:
            rec = {
                "step": self.step,
                "tokens": self.step * self.tokens_per_step,
                "val_loss": ev["loss"],
                "val_perplexity": ev["perplexity"],
            }
            if "bits_per_byte" in ev:
                rec["val_bits_per_byte"] = ev["bits_per_byte"]
            metrics.log(rec)
        return ev


def train(
    cfg: RunConfig, resume: bool = False, show_progress: bool = True, new_data: bool = False, new_batch: bool = False
) -> dict[str, Any]:
    """Run one training run to its horizon; returns a summary (checkpoint path, losses, time).

    With ``resume``: ``new_data`` lets the run continue on data other than it was trained on,
    ``new_batch`` with another global batch (train.batch_size) than it was trained with.
    """
    try:
        return Trainer(cfg, resume=resume, show_progress=show_progress, new_data=new_data, new_batch=new_batch).run()
    finally:
        release_run_folder(cfg.out)  # also when the trainer's setup failed after claiming the folder
