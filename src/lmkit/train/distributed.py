"""Processes and devices: the Dist view of torchrun, device choice, autocast and the loss wrapper."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from lmkit.errors import LmkitError


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
