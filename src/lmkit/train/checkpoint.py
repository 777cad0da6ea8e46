"""A pre-training run's checkpoints: written, pruned and read back, whole (one process) or sharded (several).

What this module owns:

* **Which format.** A single-process run saves the one-file format of ``lmkit.models.checkpoint``
  (model.safetensors, the optimizer in train_state/state.pt). A multi-process run (``torchrun``,
  DDP or FSDP) saves the sharded format of ``lmkit.models.sharded_checkpoint``: the model and the
  optimizer state go through ``torch.distributed.checkpoint`` (DCP), and each rank writes only
  the slices it holds (under FSDP its shards; under DDP DCP spreads the replicated tensors over
  the ranks). Nothing is gathered onto one rank, so no rank's memory holds the whole state (Muon
  + AdamW, DDP only, is the exception: its optimizer state, which every rank holds whole anyway,
  goes into train_state/state.pt: :func:`replicated_optimizer`). meta.json's ``state_format``
  records which format a checkpoint has.
* **Atomic, checked.** Every rank writes into the same temporary sibling folder (the main rank
  makes it and sends its name); the main rank publishes it (renames it into place) only after
  DCP's save has finished on every rank and each rank has sent the SHA-256 of the files it wrote,
  so meta.json's checksum record covers every shard file and a checkpoint is complete or absent:
  a kill at any moment leaves a ``.ckpt-*.tmp-*`` orphan that the next run removes
  (``lmkit.train.runfolder``). The small rest of the training state (grad scaler, RNG states,
  step, wall time) stays in train_state/state.pt, read with ``torch.load(weights_only=True)``.
* **Resumable on any world size.** A sharded checkpoint is loaded into the model and optimizer
  as this run spreads them (DCP reads, for each rank, the slices of the saved tensors its own
  shards cover), on any number of processes, one included; a one-file checkpoint is loaded on
  any number too (its optimizer state scattered to the shards under FSDP). Before reading, the
  shard files are checked against the checksum record, each rank checking its share of them.
* **Pruning** (:func:`prune_checkpoints`): only the newest ``train.keep_checkpoints`` stay.
* **What the run records for a resume** (:func:`layout_record`): the format, the data order
  (``lmkit.train.batches``) and the batch layout (global batch, micro-batch, accumulation,
  processes), the tokens seen across batch changes, and how much memory the main rank's save took
  (``checkpoint_write``: its resident memory before and at the peak of writing).
"""

from __future__ import annotations

import os
import shutil
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.distributed as dist
from torch import nn

from lmkit.config import RunConfig
from lmkit.errors import LmkitError
from lmkit.files import sha256_file
from lmkit.models.checkpoint import (
    CKPT_PREFIX,
    list_checkpoints,
    load_train_state,
    model_state,
    save_checkpoint,
    verify_file,
)
from lmkit.models.sharded_checkpoint import SHARDED_DIR, STATE_FORMAT_KEY, is_sharded, load_planner, storage_reader
from lmkit.train.batches import BatchOrder
from lmkit.train.distributed import Dist, load_optimizer_state
from lmkit.train.rss import rss_bytes

SHARDED_MARK = "sharded"  # train_state/state.pt's "optimizer" in a sharded checkpoint: it lies in sharded/


class CheckpointedRun(Protocol):
    """What a training run offers its checkpoints (``lmkit.train.loop.Trainer`` is one)."""

    step: int
    elapsed_before: float

    @property
    def cfg(self) -> RunConfig: ...
    @property
    def dist(self) -> Dist: ...
    @property
    def device(self) -> torch.device: ...
    @property
    def out(self) -> Path: ...
    @property
    def model(self) -> nn.Module: ...
    @property
    def wrapped(self) -> nn.Module: ...
    @property
    def optimizer(self) -> torch.optim.Optimizer: ...
    @property
    def scaler(self) -> torch.amp.GradScaler: ...
    @property
    def tokenizer(self) -> Any: ...
    @property
    def prev_meta(self) -> dict[str, Any]: ...
    @property
    def tokens_per_step(self) -> int: ...
    @property
    def flops_per_token(self) -> float: ...
    @property
    def micro_batch(self) -> int: ...
    @property
    def accum(self) -> int: ...
    @property
    def batches(self) -> BatchOrder: ...
    def meta(self, last: dict[str, Any], elapsed: float) -> dict[str, Any]: ...


class RssWatch:
    """Samples this process's resident memory every ``interval`` seconds while entered:
    ``before`` (at entry) and ``peak`` (the largest sample, entry and exit included)."""

    def __init__(self, interval: float = 0.002) -> None:
        self.interval = interval
        self.before = self.peak = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, rss_bytes())

    def __enter__(self) -> RssWatch:
        self.before = self.peak = rss_bytes()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.peak = max(self.peak, rss_bytes())


# --------------------------------------------------------------------------- state dicts for DCP


def replicated_optimizer(optimizer: torch.optim.Optimizer) -> bool:
    """Whether ``optimizer`` is saved whole in train_state/state.pt rather than in the shards: Muon +
    AdamW (``lmkit.train.muon``, two optimizers, one with an empty group, which DCP's optimizer state
    cannot carry). It only runs under DDP, where every rank holds the whole state anyway."""
    return isinstance(getattr(optimizer, "muon", None), torch.optim.Optimizer)


def run_state_dicts(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """{"model": ..., "optim": ...} as this process holds them (DTensor shards under FSDP), keyed by
    the model's own parameter names: what DCP saves and loads in place (no "optim" for an optimizer
    saved whole: :func:`replicated_optimizer`)."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict

    states: dict[str, Any] = {"model": get_model_state_dict(model)}
    if not replicated_optimizer(optimizer):
        states["optim"] = get_optimizer_state_dict(model, optimizer)
    return states


def _object_device(device: torch.device) -> torch.device | None:
    """The device object collectives go through: the process's GPU under NCCL, else the CPU."""
    if device.type == "cuda":
        torch.cuda.set_device(device)
        return device
    return None


def _write_shards(
    tmp: Path | None, states: dict[str, Any], d: Dist, device: torch.device, record: dict[str, Any] | None
) -> dict[str, str]:
    """Every rank: write its slices of ``states`` into ``tmp/sharded`` (``tmp`` is the main rank's
    temporary checkpoint folder, sent to the others). Returns, on the main rank, the SHA-256 of
    every file all ranks wrote, and fills ``record`` (its meta.json) with what writing cost."""
    import torch.distributed.checkpoint as dcp

    box: list[Any] = [str(tmp) if tmp is not None else None]
    dist.broadcast_object_list(box, src=0, device=_object_device(device))
    folder = Path(box[0]) / SHARDED_DIR
    started = time.perf_counter()
    with RssWatch() as watch:
        writer = dcp.FileSystemWriter(str(folder), single_file_per_rank=True, sync_files=True, thread_count=1)
        dcp.save(states, storage_writer=writer)
    mine = {f"{SHARDED_DIR}/{f.name}": sha256_file(f) for f in sorted(folder.glob(f"__{d.rank}_*.distcp"))}
    if d.main:
        mine[f"{SHARDED_DIR}/.metadata"] = sha256_file(folder / ".metadata")
    sizes = sum((folder / Path(n).name).stat().st_size for n in mine)
    report = (mine, {"rss_before_bytes": watch.before, "rss_peak_bytes": watch.peak, "bytes_written": sizes})
    gathered: list[Any] | None = [None] * d.world if d.main else None
    dist.gather_object(report, gathered, dst=0)
    if not d.main or gathered is None:
        return {}
    sums: dict[str, str] = {}
    for digests, _ in gathered:
        sums.update(digests)
    if record is not None:
        record["checkpoint_write"] = {
            "format": "dcp",
            "seconds": time.perf_counter() - started,
            "processes": d.world,
            "main_rss_before_bytes": gathered[0][1]["rss_before_bytes"],
            "main_rss_peak_bytes": gathered[0][1]["rss_peak_bytes"],
            "bytes_per_rank": [g[1]["bytes_written"] for g in gathered],
        }
    return sums


# --------------------------------------------------------------------------- saving a run


def layout_record(t: CheckpointedRun, state_format: str) -> dict[str, Any]:
    """What a checkpoint's meta.json records of how the run was laid out (see the module docstring)."""
    prev = t.prev_meta
    prev_step = int(prev.get("step", 0) or 0)
    prev_tokens = int(prev.get("tokens", prev_step * t.tokens_per_step) or 0)
    tokens = prev_tokens + (t.step - prev_step) * t.tokens_per_step
    batch = {
        "global": t.cfg.train.batch_size,
        "micro": t.micro_batch,
        "accumulation": t.accum,
        "processes": t.dist.world,
    }
    changes = list(prev.get("batch_changes") or [])
    before = prev.get("batch", {}).get("global") if isinstance(prev.get("batch"), dict) else None
    if before is not None and before != batch["global"]:
        changes.append({"step": prev_step, "from": before, "to": batch["global"]})
    return {
        STATE_FORMAT_KEY: state_format,
        "data_order": t.batches.kind,
        "batch": batch,
        "batch_changes": changes,
        "tokens": tokens,
        "flops": tokens * t.flops_per_token,
    }


def save_run_checkpoint(t: CheckpointedRun, last_metrics: dict[str, Any], elapsed: float) -> Path | None:
    """Save trainer ``t``'s state at its step as ``ckpt-NNNNNNN`` in its run folder; returns the path
    on the main rank (None on the others). Called by every rank of a multi-process run."""
    st: dict[str, Any] = {
        "scaler": t.scaler.state_dict() if t.scaler.is_enabled() else {},
        "rng_cpu": torch.get_rng_state(),
        "rng_cuda": torch.cuda.get_rng_state() if torch.cuda.is_available() else None,
        "step": t.step,
        "elapsed": elapsed,
    }
    final = t.out / f"{CKPT_PREFIX}{t.step:07d}"
    common: dict[str, Any] = {"tokenizer": t.tokenizer, "run_cfg": t.cfg, "train_state": st}
    if t.dist.world == 1:
        st["optimizer"] = t.optimizer.state_dict()
        meta = {**t.meta(last_metrics, elapsed), **layout_record(t, "safetensors")}
        path = save_checkpoint(final, t.model, t.cfg.model, meta=meta, state=model_state(t.model), **common)
        prune_checkpoints(t.out, t.cfg.train.keep_checkpoints)
        return path
    st["optimizer"] = t.optimizer.state_dict() if replicated_optimizer(t.optimizer) else SHARDED_MARK
    states = run_state_dicts(t.model, t.optimizer)
    outcome: list[Any] = [None]
    if t.dist.main:
        meta = {**t.meta(last_metrics, elapsed), **layout_record(t, "dcp")}
        try:
            outcome[0] = save_checkpoint(
                final,
                t.model,
                t.cfg.model,
                meta=meta,
                write_weights=lambda tmp: _write_shards(tmp, states, t.dist, t.device, meta),
                **common,
            )
            prune_checkpoints(t.out, t.cfg.train.keep_checkpoints)
        except LmkitError as e:
            outcome[0] = e
    else:
        _write_shards(None, states, t.dist, t.device, None)
    dist.broadcast_object_list(outcome, src=0, device=_object_device(t.device))  # published, or why not
    if isinstance(outcome[0], LmkitError):
        raise outcome[0] if t.dist.main else LmkitError(f"rank 0 could not save {final.name}: {outcome[0]}")
    return Path(outcome[0]) if t.dist.main else None


def prune_checkpoints(run_dir: str | Path, keep: int) -> None:
    """Delete all but the newest ``keep`` checkpoints of a run.

    Each is first renamed to a hidden ``.NAME.del-PID`` (one atomic step), so a kill during the
    deletion leaves no half-deleted ``ckpt-*`` that looks like a checkpoint; the next run in the
    folder removes the leftover (``lmkit.train.runfolder.clean_orphans``).
    """
    if keep <= 0:
        return
    for old in list_checkpoints(run_dir)[:-keep]:
        doomed = old.with_name(f".{old.name}.del-{os.getpid()}")
        os.replace(old, doomed)
        shutil.rmtree(doomed, ignore_errors=True)


# --------------------------------------------------------------------------- resuming a run


def verify_shards(ckpt: Path, d: Dist, device: torch.device) -> None:
    """Check the files under ``ckpt/sharded`` against meta.json's checksums before any is read:
    each rank checks every ``world``-th file, and a failure on any rank stops all of them."""
    import json

    from lmkit.models.checkpoint import CHECKSUMS_KEY

    sums = json.loads((ckpt / "meta.json").read_text(encoding="utf-8")).get(CHECKSUMS_KEY)
    problem: str | None = None
    if isinstance(sums, dict):
        recorded = sorted(n for n in sums if n.startswith(f"{SHARDED_DIR}/"))
        present = sorted(f"{SHARDED_DIR}/{f.name}" for f in (ckpt / SHARDED_DIR).iterdir() if f.is_file())
        missing = sorted(set(recorded) - set(present))
        if missing or not recorded:
            problem = (
                f"{ckpt / (missing[0] if missing else SHARDED_DIR)}: missing; this sharded checkpoint is incomplete"
            )
        else:
            try:
                for name in present[d.rank :: d.world]:
                    verify_file(ckpt, name)
            except LmkitError as e:
                problem = str(e)
    if d.world > 1:
        problems: list[Any] = [None] * d.world
        dist.all_gather_object(problems, problem)
        problem = next((p for p in problems if p), None)
    if problem:
        raise LmkitError(problem)


def load_sharded(ckpt: Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Fill ``model`` and ``optimizer`` (spread as this run spreads them, on any number of
    processes, or none) from ``ckpt``'s shards."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_optimizer_state_dict

    states = run_state_dicts(model, optimizer)
    try:
        with warnings.catch_warnings():  # on one process DCP warns that it runs without a process group
            warnings.simplefilter("ignore")
            dcp.load(states, storage_reader=storage_reader(ckpt / SHARDED_DIR), planner=load_planner())
    except LmkitError:
        raise
    except Exception as e:  # DCP's own error types for a missing key or an unreadable shard
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise LmkitError(f"{ckpt / SHARDED_DIR}: cannot be loaded into this run ({first[:300]})") from None
    set_model_state_dict(model, states["model"])
    if "optim" in states:
        set_optimizer_state_dict(model, optimizer, states["optim"])


def _by_name(model: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> dict[str, Any]:
    """A one-process optimizer state (parameters numbered in the optimizer's order) keyed by the
    model's parameter names instead, as ``set_optimizer_state_dict`` reads a whole state."""
    names = {id(p): n for n, p in model.named_parameters()}
    order = [names[id(p)] for g in optimizer.param_groups for p in g["params"]]
    groups = [{**g, "params": [order[i] for i in g["params"]]} for g in state["param_groups"]]
    return {"state": {order[int(i)]: s for i, s in state["state"].items()}, "param_groups": groups}


def load_run_checkpoint(t: CheckpointedRun, ckpt: Path) -> None:
    """Resume trainer ``t`` from ``ckpt`` (either format, saved on any number of processes): the
    optimizer state, grad scaler, RNG state, step and wall time. The model's weights come with it
    from a sharded checkpoint (a one-file checkpoint's were loaded when the model was built)."""
    st = load_train_state(ckpt)
    fsdp = t.dist.world > 1 and t.cfg.train.distributed == "fsdp"
    numbered = isinstance(st["optimizer"], dict) and all(isinstance(k, int) for k in st["optimizer"].get("state", {}))
    if is_sharded(ckpt):
        verify_shards(ckpt, t.dist, t.device)
        load_sharded(ckpt, t.model, t.optimizer)
        if replicated_optimizer(t.optimizer):  # saved whole beside the shards
            t.optimizer.load_state_dict(st["optimizer"])
    elif fsdp and numbered:  # a one-process run's state, scattered to this run's shards
        load_optimizer_state(t.model, t.optimizer, _by_name(t.model, t.optimizer, st["optimizer"]), True)
    else:  # one process, DDP, or a whole state an older lmkit gathered under FSDP
        load_optimizer_state(t.wrapped, t.optimizer, st["optimizer"], fsdp)
    if st.get("scaler"):
        t.scaler.load_state_dict(st["scaler"])
    torch.set_rng_state(st["rng_cpu"])
    if torch.cuda.is_available() and st.get("rng_cuda") is not None:
        torch.cuda.set_rng_state(st["rng_cuda"])
    t.step = int(st["step"])
    t.elapsed_before = float(st.get("elapsed", 0.0))


__all__ = [
    "CheckpointedRun",
    "RssWatch",
    "SHARDED_MARK",
    "layout_record",
    "load_run_checkpoint",
    "load_sharded",
    "prune_checkpoints",
    "replicated_optimizer",
    "run_state_dicts",
    "save_run_checkpoint",
    "verify_shards",
]
