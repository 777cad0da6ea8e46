"""Processes and devices: the Dist view of torchrun, device choice (:func:`resolve_device`, the one
for ``train.device`` and every command's ``--device``), the training precision
(``train.precision: auto`` settled once per run) and its autocast, the loss wrapper, and spreading
a model over the processes (DDP or FSDP); the process group's timeout, and a collective that failed
(a process hung or died) said in one line naming this rank (:func:`collective_failure`). Checkpoints
of a multi-process run are sharded, each rank writing its own state: ``lmkit.train.checkpoint``."""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from lmkit.config import DEVICE_NAME, RunConfig
from lmkit.errors import LmkitError
from lmkit.models import LanguageModel


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


DEFAULT_TIMEOUT_S = 600.0  # how long a collective waits for the other processes before failing


def init_distributed(timeout_s: float | None = None) -> Dist:
    """Join the torchrun process group when launched by torchrun (WORLD_SIZE > 1). A collective that
    waits longer than ``timeout_s`` (default :data:`DEFAULT_TIMEOUT_S`) for the other processes
    fails instead of hanging; the first call sets it (the group is joined once per process)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    if not dist.is_initialized():
        timeout = timedelta(seconds=timeout_s if timeout_s is not None else DEFAULT_TIMEOUT_S)
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        restart = os.environ.get("TORCHELASTIC_RESTART_COUNT")
        if restart is not None and os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True":
            # torchrun's store outlives a restart of the workers and keeps the dead ones' addresses:
            # each attempt joins under its own prefix, or a restarted rank could dial a dead one
            store = dist.TCPStore(
                os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world, is_master=False, timeout=timeout
            )
            rank = int(os.environ["RANK"])
            prefixed = dist.PrefixStore(f"lmkit/attempt_{restart}/", store)
            dist.init_process_group(backend, store=prefixed, rank=rank, world_size=world, timeout=timeout)
        else:
            dist.init_process_group(backend, timeout=timeout)
        if backend == "nccl":  # this process's GPU, which object collectives (DCP's plans) go through
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


_TIMED_OUT = ("timed out", "timeout", "watchdog")
_LOST = ("connection closed", "connection reset", "broken pipe", "socket closed", "read error", "peer")


def collective_failure(error: BaseException, timeout_s: float | None = None) -> LmkitError | None:
    """``error`` in one line naming this rank, when it is a collective that failed because another
    process hung (timed out) or died (its connection lost); None for any other error."""
    if not dist.is_available() or not dist.is_initialized() or not isinstance(error, RuntimeError):
        return None
    text = " ".join(str(error).split()).lower()
    rank, world = dist.get_rank(), dist.get_world_size()
    waited = f"{timeout_s if timeout_s is not None else DEFAULT_TIMEOUT_S:g} s"
    if any(k in text for k in _TIMED_OUT):
        return LmkitError(
            f"rank {rank} of {world}: a collective waited {waited} for the other processes and timed out "
            "(one of them hung or stopped); its newest complete checkpoint resumes the run (--resume auto)"
        )
    if any(k in text for k in _LOST):
        return LmkitError(
            f"rank {rank} of {world}: lost the connection to another process during a collective (it died "
            "or was killed); its newest complete checkpoint resumes the run (--resume auto)"
        )
    return None


def mps_available() -> bool:
    """Whether Apple's MPS backend can run on this machine."""
    return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()


def resolve_device(
    name: str, d: Dist | None = None, what: str = "train.device", kinds: tuple[str, ...] = ("cuda", "mps", "cpu")
) -> torch.device:
    """The one place a device name becomes a device: ``train.device`` and every command's ``--device``.

    ``auto`` is the first of cuda, mps, cpu that this machine has (among ``kinds``, the device types
    the caller can run on); under torchrun a CUDA device is the process's ``cuda:LOCAL_RANK``. A name
    that is not auto|cpu|cuda|cuda:N|mps, a type outside ``kinds``, or one this machine lacks (no
    CUDA, cuda:N past its last GPU, no MPS) is one :class:`LmkitError` naming ``what``."""
    d = d or Dist()
    if not isinstance(name, str) or not DEVICE_NAME.fullmatch(name):
        raise LmkitError(f"{what} {name!r} is not a device: use auto, cpu, cuda, cuda:N or mps")
    has = {"cuda": torch.cuda.is_available(), "mps": mps_available(), "cpu": True}
    if name == "auto":
        kind = next(k for k in ("cuda", "mps", "cpu") if (k in kinds or k == "cpu") and has[k])
        return torch.device("cuda", d.local_rank) if kind == "cuda" else torch.device(kind)
    dev = torch.device(name)
    if dev.type not in kinds and dev.type != "cpu":
        raise LmkitError(f"{what} {name}: this runs on {' or '.join(kinds)} only (use auto or cpu)")
    if dev.type == "cuda":
        if not has["cuda"]:
            raise LmkitError(f"{what} {name}: no CUDA device is available on this machine (use cpu or auto)")
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise LmkitError(
                f"{what} {name}: this machine has {count} CUDA device{'s' if count > 1 else ''} "
                f"(cuda:0{f'..cuda:{count - 1}' if count > 1 else ''})"
            )
        if d.world > 1:
            dev = torch.device("cuda", d.local_rank)
    if dev.type == "mps" and not has["mps"]:
        raise LmkitError(f"{what} mps: Apple's MPS is not available on this machine (use cpu or auto)")
    return dev


def settle_precision(cfg: RunConfig, device: torch.device, d: Dist, recorded: str | None = None) -> str:
    """Settle ``train.precision: auto`` for this run, once: ``cfg.train.precision`` becomes fp32,
    bf16 or fp16 as ``lmkit.plan.measure.auto_precision`` chooses for ``device`` (on a CPU, the
    cached precision probe at this run's representative matmul: micro-batch tokens × d_model).
    The main process decides and the others follow it. The settled value is what the checkpoint's
    resolved.yaml records, so a resumed run keeps it (``lmkit.train.resume``) whatever a probe
    would say later. Returns what the run records and prints: the precision with
    the probe's reason ("bf16 (auto: bf16 R× fp32 here)", R the measured ratio), ``recorded`` (a resumed run's record) when the precision was already settled, or the precision."""
    t = cfg.train
    if t.precision != "auto":
        return recorded if recorded and recorded.split(" ", 1)[0] == t.precision else t.precision
    from lmkit.plan.measure import auto_precision

    choice = [t.precision, ""]
    if d.main:
        micro = t.micro_batch_size or max(1, t.batch_size // d.world)
        choice = list(auto_precision(device, micro * cfg.model.max_seq_len, cfg.model.d_model)[:2])
    if d.world > 1:
        dist.broadcast_object_list(choice, src=0, device=device if device.type == "cuda" else None)
    t.precision = choice[0]  # type: ignore[assignment]
    return f"{choice[0]} ({choice[1]})"


def autocast_for(precision: str, device: torch.device) -> torch.autocast | None:
    """The autocast context of a settled precision (None for fp32)."""
    if precision == "fp32":
        return None
    if precision not in ("bf16", "fp16"):
        raise LmkitError(
            f"train.precision {precision!r} must be settled (fp32|bf16|fp16) before training; "
            "lmkit.train.distributed.settle_precision settles auto"
        )
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


class LossModule(nn.Module):
    """Wraps a model so that ``forward(batch)`` is its loss: what DDP/FSDP need to hook into."""

    def __init__(self, model: LanguageModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.model.loss(batch)


def wrap_for_processes(module: nn.Module, model: LanguageModel, device: torch.device, d: Dist, mode: str) -> nn.Module:
    """``module`` (the loss wrapper of ``model``) as the processes share it: itself on one process,
    sharded block by block under FSDP (``mode`` "fsdp"), otherwise in DistributedDataParallel."""
    if d.world == 1:
        return module
    if mode == "fsdp":
        from torch.distributed.fsdp import fully_shard

        for block in model.layers_for_sharding():
            fully_shard(block)
        fully_shard(module)
        return module
    from torch.nn.parallel import DistributedDataParallel as DDP

    return DDP(module, device_ids=[device.index] if device.type == "cuda" else None)


def load_optimizer_state(
    wrapped: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any], sharded: bool
) -> None:
    """Load a whole (unsharded) optimizer state, scattering it to the shards when ``sharded`` (FSDP)."""
    if sharded:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        set_optimizer_state_dict(wrapped, optimizer, state, options=StateDictOptions(full_state_dict=True))
    else:
        optimizer.load_state_dict(state)


def hardware_summary(device: torch.device, d: Dist) -> dict[str, Any]:
    """Where a run trained, for its meta.json and card: device, world size, torch, and the GPU or CPU."""
    info: dict[str, Any] = {"device": str(device), "world_size": d.world, "torch": torch.__version__}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    else:
        info["cpu"] = platform.processor() or platform.machine()
        info["threads"] = torch.get_num_threads()
    return info
