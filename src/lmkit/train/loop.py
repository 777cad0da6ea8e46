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
import os
import shlex
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.distributed as dist
from torch import nn

from lmkit.models.checkpoint import (CKPT_PREFIX, list_checkpoints, load_train_state, load_weights_into,
                              model_state, prune_checkpoints, resolve_checkpoint, save_checkpoint)
from lmkit.config import RunConfig, TrainConfig, load_run_config, to_dict
from lmkit.errors import LmkitError
from lmkit.infer.evaluate import evaluate, token_byte_lengths
from lmkit.models import build_model, count_parameters
from lmkit.objectives import SpecialIds, make_batch, window_length
from lmkit.train.runfolder import claim_run_folder, release_run_folder

# --------------------------------------------------------------------------- pure pieces


def make_optimizer(model: nn.Module, lr: float, weight_decay: float, betas: tuple[float, float] = (0.9, 0.95),
                   eps: float = 1e-8) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only: norms, biases and embeddings are not decayed.

    Uses the fused single-kernel AdamW where this torch build offers it for the device.
    """
    embedding_params = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    decay, no_decay = [], []
    for p in model.parameters():
        if not p.requires_grad:
            continue
        (decay if p.dim() >= 2 and id(p) not in embedding_params else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    device = next(model.parameters()).device
    try:
        return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, fused=device.type in ("cpu", "cuda"))
    except (RuntimeError, TypeError):
        return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps)


def lr_at(step: int, cfg: TrainConfig, horizon: int | None, progress: float | None = None) -> float:
    """Learning rate at ``step``: linear warmup, then cosine / warmup-stable-decay / constant.

    ``progress`` in [0, 1] overrides step/horizon (used when only a wall-time limit is set).
    """
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if progress is None:
        if not horizon or horizon <= cfg.warmup_steps:
            return cfg.lr
        progress = (step - cfg.warmup_steps) / max(1, horizon - cfg.warmup_steps)
    progress = min(max(progress, 0.0), 1.0)
    floor = cfg.lr * cfg.min_lr_ratio
    if cfg.schedule == "constant":
        return cfg.lr
    if cfg.schedule == "wsd":  # stable at the peak, then a linear decay over the last 20%
        return cfg.lr if progress < 0.8 else floor + (cfg.lr - floor) * (1 - progress) / 0.2
    return floor + 0.5 * (cfg.lr - floor) * (1 + math.cos(math.pi * progress))


@dataclass
class Horizon:
    """How long the run lasts: a step count from the first step/token/FLOP/ratio limit, and time."""

    steps: int | None
    reason: str
    max_time: float | None


def plan_horizon(cfg: TrainConfig, tokens_per_step: int, flops_per_step: float, n_params: int) -> Horizon:
    """The earliest of the configured stop conditions, in optimizer steps (time is checked live)."""
    limits: list[tuple[int, str]] = []
    if cfg.max_steps is not None:
        limits.append((cfg.max_steps, f"max_steps={cfg.max_steps}"))
    if cfg.max_tokens is not None:
        limits.append((math.ceil(cfg.max_tokens / tokens_per_step), f"max_tokens={cfg.max_tokens:.3g}"))
    if cfg.max_flops is not None:
        limits.append((math.ceil(cfg.max_flops / flops_per_step), f"max_flops={cfg.max_flops:.3g}"))
    if cfg.tokens_per_param is not None:
        tokens = cfg.tokens_per_param * n_params
        limits.append((math.ceil(tokens / tokens_per_step),
                       f"tokens_per_param={cfg.tokens_per_param:g} ({tokens:.3g} tokens)"))
    if not limits:
        return Horizon(None, f"max_time={cfg.max_time}s", cfg.max_time)
    steps, reason = min(limits)
    return Horizon(max(1, steps), reason, cfg.max_time)


def batch_generator(seed: int, step: int, micro: int, rank: int) -> torch.Generator:
    """The RNG an objective uses for the masks of one micro-batch: a function of its position."""
    return torch.Generator().manual_seed((seed * 1_000_003 + step * 1009 + micro * 31 + rank) % (2**63))


# --------------------------------------------------------------------------- devices and processes


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed() -> Dist:
    """Join the torchrun process group when launched by torchrun (WORLD_SIZE > 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def resolve_device(name: str, d: Dist) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", d.local_rank)
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise LmkitError(f"train.device={name} but no CUDA device is available (use cpu or auto)")
    if dev.type == "cuda" and d.world > 1:
        dev = torch.device("cuda", d.local_rank)
    return dev


def autocast_for(precision: str, device: torch.device) -> torch.autocast | None:
    if precision == "fp32":
        return None
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


class LossModule(nn.Module):
    """Wraps a model so that ``forward(batch)`` is its loss: what DDP/FSDP need to hook into."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.model.loss(batch)


# --------------------------------------------------------------------------- metrics


def _metric_records(text: str) -> list[tuple[str, dict[str, Any]]]:
    """(line, record) for each whole JSON object line; a line torn by a kill mid-write is dropped."""
    out = []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            out.append((line, record))
    return out


class Metrics:
    """metrics.jsonl (appended, truncated back to the checkpoint on resume) and TensorBoard."""

    def __init__(self, out: Path, tensorboard: bool, resume_step: int | None) -> None:
        self.path = out / "metrics.jsonl"
        if resume_step is not None and self.path.exists():
            text = self.path.read_text(encoding="utf-8", errors="replace")
            kept = [line for line, rec in _metric_records(text)
                    if isinstance(rec.get("step", 0), int) and rec.get("step", 0) <= resume_step]
            tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}")
            tmp.write_text("".join(k + "\n" for k in kept), encoding="utf-8")
            os.replace(tmp, self.path)
        elif resume_step is None and self.path.exists():
            self.path.unlink()
        self.file = self.path.open("a", encoding="utf-8")
        self.tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(out / "tensorboard"))
            except ImportError:
                self.tb = None

    def log(self, record: dict[str, Any]) -> None:
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        if self.tb is not None:
            step = record["step"]
            for k, v in record.items():
                if k != "step" and isinstance(v, (int, float)):
                    self.tb.add_scalar(k, v, step)

    def close(self) -> None:
        self.file.close()
        if self.tb is not None:
            self.tb.close()


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    return [rec for _, rec in _metric_records(path.read_text(encoding="utf-8", errors="replace"))]


def plot_loss_curve(run_dir: str | Path, out_png: str | Path | None = None) -> Path | None:
    """Training loss (and held-out loss) against tokens seen, as a PNG beside the metrics."""
    records = read_metrics(run_dir)
    train = [(r["tokens"], r["loss"]) for r in records if "loss" in r]
    val = [(r["tokens"], r["val_loss"]) for r in records if "val_loss" in r]
    if not train:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    ax.plot(*zip(*train), label="training loss", lw=1.2)
    if val:
        ax.plot(*zip(*val), "o-", label="held-out loss", lw=1.5, ms=4)
    ax.set_xlabel("tokens seen")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.set_title(f"Loss curve: {Path(run_dir).name}")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    out = Path(out_png) if out_png else Path(run_dir) / "loss_curve.png"
    fig.savefig(out)
    plt.close(fig)
    return out


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
        self.specials = SpecialIds(pad=tok.pad_id, bos=tok.bos_id, eos=tok.eos_id, mask=tok.mask_id,
                                   sentinels=tuple(tok.sentinel_ids), vocab_size=tok.vocab_size,
                                   n_special=len(tok.special_ids))
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
        from lmkit.train import resume as rs
        from lmkit.models.checkpoint import load_meta, load_tokenizer

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
            from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                                 get_optimizer_state_dict)

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


def cli_pretrain(args: Any) -> int:
    overrides = dict(args.overrides)
    if args.data:
        overrides["data.paths"] = list(args.data)
    if args.tokenizer:
        overrides["data.tokenizer"] = args.tokenizer
    if args.out:
        overrides["out"] = args.out
    if args.max_steps is not None:
        overrides["train.max_steps"] = args.max_steps
    if getattr(args, "init", None):
        overrides["train.init"] = args.init
    new_data = bool(getattr(args, "new_data", False))
    if args.resume:  # the run folder's saved settings, data and tokenizer; what is given again must agree
        from lmkit.config import load_yaml
        from lmkit.train.resume import resume_config

        out = args.out or (load_yaml(args.config).get("out") if args.config else None) or RunConfig().out
        cfg = resume_config(Path(str(out)), args.config, overrides, new_data=new_data)
    elif new_data:
        raise LmkitError("--new-data only applies with --resume (a new run trains on the data it is given)")
    else:
        cfg = load_run_config(args.config, overrides)
    try:
        summary = train(cfg, resume=args.resume, show_progress=not args.quiet, new_data=new_data)
    except TrainingInterrupted as e:
        if int(os.environ.get("RANK", "0")) == 0:
            print(f"lmkit: {e}", file=sys.stderr)
        if dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()
        return 130
    if int(os.environ.get("RANK", "0")) == 0:
        if args.json:
            print(json.dumps(summary, indent=2, default=str))
        else:
            ev = summary["eval"] or {}
            print(f"trained {summary['steps']} steps ({summary['tokens']:,} tokens) in {summary['wall_time_s']:.0f}s; "
                  f"stopped at {summary['stop_reason']}")
            if ev:
                print(f"held-out loss {ev['loss']:.3f}, perplexity {ev['perplexity']:.1f}"
                      + (f", bits/byte {ev['bits_per_byte']:.3f}" if "bits_per_byte" in ev else ""))
            print(f"checkpoint: {summary['checkpoint']}")
            print(f"metrics:    {summary['metrics']}" + (f"\nloss curve: {summary['loss_curve']}" if summary["loss_curve"] else ""))
    if dist.is_initialized():
        # leave together: a rank tearing its process group down while another still works (rank 0
        # writes the summary) can abort in gloo's background threads
        dist.barrier()
        dist.destroy_process_group()
    return 0
