"""Pre-training: ``train(cfg)`` runs one configured run of any family, from data to checkpoints.

The loop, in small step functions:
    prepare data (tokenizer + packed shards) ─▶ build model + AdamW ─▶ maybe resume
    ─▶ repeat: batch(step) ─▶ forward/backward (×grad accumulation, autocast) ─▶ clip ─▶ update
               ─▶ log (metrics.jsonl, TensorBoard, progress bar) ─▶ evaluate ─▶ checkpoint
    ─▶ final evaluation, checkpoint, loss-curve PNG.

Exact resume: the batch of a step is a pure function of (seed, step, rank) (``TokenShards.batch``
and a generator seeded the same way for the objective's random masks), and a checkpoint carries
the weights, optimizer state, grad scaler and RNG states, so a resumed run (even after SIGKILL)
continues the same loss curve as an uninterrupted one.

Scale-out: under ``torchrun`` the same command runs one process per device; the model is wrapped
in DistributedDataParallel (``train.distributed: ddp``) or sharded with FSDP (``fsdp``: parameters,
gradients and optimizer states split across ranks). Each rank reads different windows.
"""

from __future__ import annotations

import json
import math
import shlex
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from lmkit.config import RunConfig, to_dict
from lmkit.errors import LmkitError
from lmkit.infer.evaluate import evaluate, token_byte_lengths
from lmkit.models import build_model, count_parameters
from lmkit.models.checkpoint import (
    CKPT_PREFIX,
    list_checkpoints,
    load_train_state,
    load_weights_into,
    model_state,
    prune_checkpoints,
    resolve_checkpoint,
    save_checkpoint,
)
from lmkit.objectives import make_batch, window_length
from lmkit.train.distributed import Dist, LossModule, autocast_for, init_distributed, resolve_device  # noqa: F401 - re-exported
from lmkit.train.metrics import Metrics, _metric_records, plot_loss_curve, read_metrics  # noqa: F401 - re-exported
from lmkit.train.runfolder import claim_run_folder, release_run_folder
from lmkit.train.steps import Horizon, batch_generator, lr_at, make_optimizer, plan_horizon  # noqa: F401 - re-exported

# --------------------------------------------------------------------------- the trainer


def curation_summary(paths: list[str]) -> dict[str, Any] | None:
    """The overall figures of ``lmkit curate``'s report.json for curated input folders, if any."""
    totals: dict[str, Any] = {}
    for p in paths:
        report = Path(p) / "report.json"
        if report.is_file():
            try:
                totals[str(p)] = json.loads(report.read_text(encoding="utf-8")).get("totals")
            except (OSError, ValueError):
                continue
    if not totals:
        return None
    return next(iter(totals.values())) if len(totals) == 1 else totals


def hardware_summary(device: torch.device, d: Dist) -> dict[str, Any]:
    info: dict[str, Any] = {"device": str(device), "world_size": d.world, "torch": torch.__version__}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    else:
        import platform

        info["cpu"] = platform.processor() or platform.machine()
        info["threads"] = torch.get_num_threads()
    return info


class Trainer:
    """One training run. ``run()`` trains to the horizon and returns a summary dict."""

    def __init__(self, cfg: RunConfig, resume: bool = False, show_progress: bool = True,
                 new_data: bool = False) -> None:
        cfg.validate()
        self.cfg = cfg
        self.dist = init_distributed()
        self.device = resolve_device(cfg.train.device, self.dist)
        self.out = Path(cfg.out)
        self.show_progress = show_progress and self.dist.main
        # the run folder is this run's alone until run() ends (the main rank locks it); see runfolder
        cleaned = claim_run_folder(self.out, lock=self.dist.main, create=not resume)
        if cleaned and self.show_progress:
            print(f"lmkit: removed what an interrupted run left in {self.out}: {', '.join(cleaned)}", file=sys.stderr)
        existing = list_checkpoints(self.out) if self.out.exists() else []
        if existing and not resume:
            raise LmkitError(f"{self.out}: already holds checkpoints ({existing[-1].name}); pass --resume to "
                             "continue that run, or choose another --out")
        if resume and not existing:
            raise LmkitError(f"{self.out}: --resume given but there is no checkpoint to resume from")
        self.resume_from = resolve_checkpoint(self.out) if resume else None
        self.out.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(cfg.train.seed)
        self.init_from = self._adopt_init_checkpoint(cfg) if cfg.train.init and not resume else None
        self.new_data, self.data_change, self.data_changes = new_data, None, []
        self.prev_meta: dict[str, Any] = {}
        if self.resume_from is not None:  # the saved settings and data, checked before anything is packed
            self._agree_with_saved_run(cfg)

        from lmkit.data.pack import prepare

        self.tokenizer, self.train_shards, self.val_shards = prepare(
            cfg.data, self.out, cfg.model.vocab_size, show_progress=self.show_progress) \
            if self.dist.main or self.dist.world == 1 else (None, None, None)
        if self.dist.world > 1:
            dist.barrier()
            if not self.dist.main:  # the main rank packed; the others open what it wrote
                self.tokenizer, self.train_shards, self.val_shards = prepare(
                    cfg.data, self.out, cfg.model.vocab_size, show_progress=False)
        if self.init_from is not None and cfg.model.vocab_size != self.tokenizer.vocab_size:
            raise LmkitError(f"{self.tokenizer.source}: has {self.tokenizer.vocab_size} tokens but {self.init_from} was "
                             f"trained with {cfg.model.vocab_size}; continue pre-training with the checkpoint's tokenizer")
        if cfg.model.vocab_size != self.tokenizer.vocab_size:
            if self.show_progress:
                print(f"model.vocab_size set to the tokenizer's {self.tokenizer.vocab_size} "
                      f"(config said {cfg.model.vocab_size})", file=sys.stderr)
            cfg.model.vocab_size = self.tokenizer.vocab_size
        from lmkit.train.resume import data_fingerprint

        self.data_fingerprint = data_fingerprint(cfg.data, self.tokenizer, self.train_shards, self.val_shards)
        if self.resume_from is not None:
            self._check_resumed_data()
        tok = self.tokenizer
        self.specials = tok.special_ids_for_objectives()
        self.token_bytes = token_byte_lengths(tok)

        self.model = build_model(cfg.model)
        from lmkit.models.checkpoint import load_model_config, load_state

        if self.resume_from is not None:
            saved_model, this_model = to_dict(load_model_config(self.resume_from)), to_dict(cfg.model)
            for key in saved_model:
                if saved_model[key] != this_model.get(key):
                    raise LmkitError(f"{self.resume_from}: model.{key} is {saved_model[key]!r} in the run being "
                                     f"resumed but {this_model.get(key)!r} in this one; resume with the same model")
            load_weights_into(self.model, load_state(self.resume_from), self.resume_from)
        elif self.init_from is not None:
            load_weights_into(self.model, load_state(self.init_from), self.init_from)
        self.model.to(self.device)
        self.model.activation_checkpointing = cfg.train.activation_checkpointing
        self.n_params = count_parameters(self.model)
        self.wrapped: nn.Module = self._wrap(LossModule(self.model))
        if cfg.train.compile:
            self.wrapped = torch.compile(self.wrapped)
        self.optimizer = make_optimizer(self.model, cfg.train.lr, cfg.train.weight_decay,
                                        (cfg.train.beta1, cfg.train.beta2), cfg.train.eps)
        self.autocast = autocast_for(cfg.train.precision, self.device)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=cfg.train.precision == "fp16")

        mb = cfg.train.micro_batch_size or max(1, cfg.train.batch_size // self.dist.world)
        if cfg.train.batch_size % (mb * self.dist.world):
            raise LmkitError(f"train.batch_size ({cfg.train.batch_size}) must be a multiple of micro_batch_size "
                             f"({mb}) x processes ({self.dist.world})")
        self.micro_batch = mb
        self.accum = cfg.train.batch_size // (mb * self.dist.world)
        self.seq_len = cfg.model.max_seq_len
        self.window = window_length(cfg.model)
        self.tokens_per_step = cfg.train.batch_size * self.seq_len
        from lmkit.plan import flops_per_token

        self.flops_per_token = float(flops_per_token(cfg.model, self.seq_len))
        self.horizon = plan_horizon(cfg.train, self.tokens_per_step, self.flops_per_token * self.tokens_per_step,
                                    self.n_params)
        from lmkit.plan import device_peak_flops

        self.peak_flops = device_peak_flops(self.device, cfg.train.precision) if self.dist.main else 0.0
        self.step = 0
        self.elapsed_before = 0.0
        self.history: dict[str, Any] = {}
        if self.resume_from is not None:
            self._load_train_state()

    # ------------------------------------------------------------------ setup helpers

    @staticmethod
    def _adopt_init_checkpoint(cfg: RunConfig) -> Path:
        """Continued pre-training: take the model shape and tokenizer of ``train.init``."""
        from lmkit.models.checkpoint import load_model_config

        ckpt = resolve_checkpoint(cfg.train.init)
        if cfg.data.tokenizer is None:
            cfg.data.tokenizer = str(ckpt / "tokenizer.json")
        cfg.model = load_model_config(ckpt)
        return ckpt

    def _agree_with_saved_run(self, cfg: RunConfig) -> None:
        """On resume: settings left empty come from the checkpoint's resolved.yaml, the others must
        agree with it (``lmkit.train.resume``), and the source files must be the ones trained on unless
        ``new_data``; with ``new_data`` the run's own tokenizer is pinned, so none is trained anew."""
        from lmkit.models.checkpoint import load_meta, load_tokenizer
        from lmkit.train import resume as rs

        assert self.resume_from is not None
        saved = rs.saved_run_config(self.resume_from)
        rs.fill_unset(cfg, saved)
        keys = [k for k in rs.dotted_keys(cfg) if k != "model.vocab_size"]  # checked with the model, below
        rs.check_agrees(saved, cfg, keys, self.new_data, self.resume_from / "resolved.yaml")
        self.prev_meta = load_meta(self.resume_from)
        self.data_change = rs.sources_difference(rs.recorded_fingerprint(self.prev_meta), rs.source_files(cfg.data))
        if self.data_change and not self.new_data:
            raise rs.refuse_data_change(self.out, self.resume_from, self.data_change)
        if self.new_data and cfg.data.tokenizer is None:
            run_tok = load_tokenizer(self.resume_from)
            path = self.out / "tokenizer.json"
            if self.dist.main and (not path.is_file() or path.read_text(encoding="utf-8") != run_tok.to_str()):
                run_tok.save(self.out)
            cfg.data.tokenizer = str(path)

    def _check_resumed_data(self) -> None:
        """On resume, after packing: the tokenizer is the run's, and the shards hold what it was
        trained on (unless ``new_data``: then the change is recorded in the checkpoints' meta)."""
        from lmkit.train import resume as rs

        assert self.resume_from is not None
        recorded = rs.recorded_fingerprint(self.prev_meta)
        want = recorded.get("tokenizer_sha256")
        if want and want != self.tokenizer.sha256:
            raise LmkitError(f"{self.tokenizer.source}: tokenizer (sha256 {self.tokenizer.sha256[:12]}) is not the one "
                             f"{self.resume_from} was trained with (sha256 {str(want)[:12]}); a resumed run keeps "
                             "its tokenizer")
        what = self.data_change or rs.tokens_difference(recorded, self.data_fingerprint)
        if what and not self.new_data:
            raise rs.refuse_data_change(self.out, self.resume_from, what)
        self.data_changes = list(self.prev_meta.get("data_changes") or [])
        if what:
            self.data_changes.append({"step": self.prev_meta.get("step"), "from_checkpoint": self.resume_from.name,
                                      "change": what, "previous": recorded})

    def _wrap(self, module: nn.Module) -> nn.Module:
        if self.dist.world == 1:
            return module
        if self.cfg.train.distributed == "fsdp":
            from torch.distributed.fsdp import fully_shard

            for block in self.model.layers_for_sharding():
                fully_shard(block)
            fully_shard(module)
            return module
        from torch.nn.parallel import DistributedDataParallel as DDP

        return DDP(module, device_ids=[self.device.index] if self.device.type == "cuda" else None)

    def _load_train_state(self) -> None:
        st = load_train_state(self.resume_from)
        self._set_optimizer_state(st["optimizer"])
        if "scaler" in st and st["scaler"]:
            self.scaler.load_state_dict(st["scaler"])
        torch.set_rng_state(st["rng_cpu"])
        if torch.cuda.is_available() and st.get("rng_cuda") is not None:
            torch.cuda.set_rng_state(st["rng_cuda"])
        self.step = int(st["step"])
        self.elapsed_before = float(st.get("elapsed", 0.0))

    def _set_optimizer_state(self, state: dict[str, Any]) -> None:
        if self.dist.world > 1 and self.cfg.train.distributed == "fsdp":
            from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

            set_optimizer_state_dict(self.wrapped, self.optimizer, state,
                                     options=StateDictOptions(full_state_dict=True))
        else:
            self.optimizer.load_state_dict(state)

    def _full_states(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Model weights and optimizer state as whole tensors (gathered from shards under FSDP)."""
        if self.dist.world > 1 and self.cfg.train.distributed == "fsdp":
            from torch.distributed.checkpoint.state_dict import (
                StateDictOptions,
                get_model_state_dict,
                get_optimizer_state_dict,
            )

            opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
            weights = get_model_state_dict(self.wrapped, options=opts)
            unique = {n for n, _ in self.model.named_parameters()}  # aliases of tied weights dropped
            aliases = {n for n, _ in self.model.named_parameters(remove_duplicate=False)} - unique
            weights = {k.removeprefix("model."): v for k, v in weights.items() if k.removeprefix("model.") not in aliases}
            return weights, get_optimizer_state_dict(self.wrapped, self.optimizer, options=opts)
        return model_state(self.model), self.optimizer.state_dict()

    # ------------------------------------------------------------------ one step

    def micro_batches(self, step: int) -> Iterator[dict[str, torch.Tensor]]:
        for micro in range(self.accum):
            index = step * self.accum + micro
            windows = self.train_shards.batch(index, self.micro_batch, self.window, self.cfg.train.seed, self.dist.rank)
            gen = batch_generator(self.cfg.train.seed, step, micro, self.dist.rank)
            batch = make_batch(self.cfg.model, windows, self.specials, gen)
            yield {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}

    def train_step(self, step: int, lr: float) -> tuple[float, float]:
        """One optimizer step; returns (mean loss, gradient norm before clipping)."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        total = torch.zeros((), device=self.device)
        for i, batch in enumerate(self.micro_batches(step)):
            sync = i == self.accum - 1
            ctx = self.wrapped.no_sync() if (not sync and hasattr(self.wrapped, "no_sync")) else _null()
            with ctx:
                if self.autocast is not None:
                    with self.autocast:
                        loss = self.wrapped(batch) / self.accum
                else:
                    loss = self.wrapped(batch) / self.accum
                self.scaler.scale(loss).backward()
            total += loss.detach()
        self.scaler.unscale_(self.optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.train.grad_clip
                                                   if self.cfg.train.grad_clip > 0 else float("inf"))
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        if self.dist.world > 1:
            dist.all_reduce(total)
            total /= self.dist.world
        return float(total), float(grad_norm)

    def run_eval(self) -> dict[str, float]:
        return evaluate(self.model, self.val_shards, self.cfg.model, self.specials,
                        batch_size=self.micro_batch, max_batches=self.cfg.train.eval_batches,
                        token_bytes=self.token_bytes, device=self.device, autocast=self.autocast,
                        loss_fn=self.wrapped)

    def save(self, last_metrics: dict[str, Any], elapsed: float) -> Path | None:
        weights, optim = self._full_states()
        if not self.dist.main:
            return None
        st = {"optimizer": optim, "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else {},
              "rng_cpu": torch.get_rng_state(),
              "rng_cuda": torch.cuda.get_rng_state() if torch.cuda.is_available() else None,
              "step": self.step, "elapsed": elapsed}
        path = save_checkpoint(self.out / f"{CKPT_PREFIX}{self.step:07d}", self.model, self.cfg.model,
                               tokenizer=self.tokenizer, meta=self.meta(last_metrics, elapsed),
                               run_cfg=self.cfg, train_state=st, state=weights)
        prune_checkpoints(self.out, self.cfg.train.keep_checkpoints)
        return path

    def meta(self, last: dict[str, Any], elapsed: float) -> dict[str, Any]:
        tokens = self.step * self.tokens_per_step
        return {
            "step": self.step, "tokens": tokens, "flops": tokens * self.flops_per_token,
            "flops_per_token": self.flops_per_token, "params": self.n_params,
            "family": self.cfg.model.family, "objective": self.cfg.model.objective,
            "wall_time_s": elapsed, "precision": self.cfg.train.precision,
            "hardware": hardware_summary(self.device, self.dist),
            "horizon": {"steps": self.horizon.steps, "reason": self.horizon.reason},
            "train_loss": last.get("loss"), "eval": self.history.get("eval", {}),
            "data": {"paths": self.cfg.data.paths, "train_tokens": self.train_shards.num_tokens,
                     "val_tokens": self.val_shards.num_tokens,
                     "sources": self.train_shards.meta.get("tokens_per_source", {}),
                     "bytes_per_token": self.train_shards.bytes_per_token,
                     "curation": curation_summary(self.cfg.data.paths)},
            "tokenizer_sha256": self.tokenizer.sha256,
            "init_from": str(self.init_from) if self.init_from else None,
            "data_fingerprint": self.data_fingerprint,  # checked by --resume (lmkit.train.resume)
            "data_changes": self.data_changes,  # each --resume --new-data that switched the data
        }

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
            from tqdm import tqdm

            print(f"lmkit pretrain: {self.cfg.model.family} ({self.cfg.model.objective}), {self.n_params:,} parameters, "
                  f"{self.train_shards.num_tokens:,} training tokens, stop at {horizon.reason}"
                  + (f" or {horizon.max_time:g}s" if horizon.max_time and horizon.steps else "")
                  + f", device {self.device}", file=sys.stderr)
            bar = tqdm(total=horizon.steps, initial=self.step, unit="step", dynamic_ncols=True, file=sys.stderr)
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
            progress = None
            if horizon.steps is None and horizon.max_time:
                progress = elapsed / horizon.max_time
            lr = lr_at(self.step, cfg, horizon.steps, progress)
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
                last = {"step": self.step, "tokens": self.step * self.tokens_per_step,
                        "loss": sum(window_losses) / len(window_losses), "lr": lr, "grad_norm": gnorm,
                        "tokens_per_s": tps, "mfu": tps * self.flops_per_token / self.peak_flops if self.peak_flops else 0.0,
                        "elapsed_s": self.elapsed_before + now - start}
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
                path = self.out / f"{CKPT_PREFIX}{self.step:07d}" if saved_at == self.step else \
                    self.save(last, self.elapsed_before + time.perf_counter() - start)
                if bar is not None:
                    bar.close()
                if metrics is not None:
                    metrics.close()
                what = signal.Signals(stop.signum).name if stop.signum is not None else "a signal to another rank"
                raise TrainingInterrupted(
                    f"interrupted by {what} after step {self.step}; saved checkpoint {path}; continue with: "
                    f"lmkit pretrain --out {shlex.quote(str(self.out))} --resume", path)
        final_eval = self._eval_and_log(metrics)
        elapsed = self.elapsed_before + time.perf_counter() - start
        path = self.save(last, elapsed)
        if bar is not None:
            bar.close()
        png = None
        if metrics is not None:
            metrics.close()
            png = plot_loss_curve(self.out)
        return {"checkpoint": str(path) if path else None, "steps": self.step,
                "tokens": self.step * self.tokens_per_step, "params": self.n_params,
                "train_loss": last.get("loss"), "eval": final_eval, "stop_reason": stop_reason,
                "wall_time_s": elapsed, "loss_curve": str(png) if png else None,
                "metrics": str(self.out / "metrics.jsonl")}

    def _eval_and_log(self, metrics: Metrics | None) -> dict[str, float]:
        ev = self.run_eval()
        self.history["eval"] = ev
        if metrics is not None and ev:
            rec = {"step": self.step, "tokens": self.step * self.tokens_per_step, "val_loss": ev["loss"],
                   "val_perplexity": ev["perplexity"]}
            if "bits_per_byte" in ev:
                rec["val_bits_per_byte"] = ev["bits_per_byte"]
            metrics.log(rec)
        return ev


class TrainingInterrupted(KeyboardInterrupt):
    """SIGINT/SIGTERM stopped a run after a step; ``checkpoint`` is where it was saved."""

    def __init__(self, message: str, checkpoint: Path | None) -> None:
        super().__init__(message)
        self.checkpoint = checkpoint


class StopSignals:
    """While entered (in the main thread), SIGINT and SIGTERM only record that a stop was asked
    for, in ``signum``; the loop stops after its current step. A second one of the same signal
    acts as it would have before (Ctrl-C twice interrupts at once)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: object) -> None:
        self.signum = signum
        signal.signal(signum, self._restore(signum))

    def _restore(self, signum: int) -> Any:
        prev = self._previous.get(signum)
        return prev if prev is not None else signal.SIG_DFL

    def __exit__(self, *exc: object) -> None:
        for sig in self._previous:
            signal.signal(sig, self._restore(sig))


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def train(cfg: RunConfig, resume: bool = False, show_progress: bool = True, new_data: bool = False) -> dict[str, Any]:
    """Run one training run to its horizon; returns a summary (checkpoint path, losses, time).

    ``new_data`` (with ``resume``) lets the resumed run continue on data other than it was trained on.
    """
    try:
        return Trainer(cfg, resume=resume, show_progress=show_progress, new_data=new_data).run()
    finally:
        release_run_folder(cfg.out)  # also when the trainer's setup failed after claiming the folder

