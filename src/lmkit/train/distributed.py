"""Processes and devices: the Dist view of torchrun, device choice, autocast, the loss wrapper, and
spreading a model over the processes (DDP or FSDP) with its whole state gathered back for checkpoints."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

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


def wrap_for_processes(module: nn.Module, model: nn.Module, device: torch.device, d: Dist, mode: str) -> nn.Module:
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


def load_optimizer_state(wrapped: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any],
                         sharded: bool) -> None:
    """Load a whole (unsharded) optimizer state, scattering it to the shards when ``sharded`` (FSDP)."""
    if sharded:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        set_optimizer_state_dict(wrapped, optimizer, state, options=StateDictOptions(full_state_dict=True))
    else:
        optimizer.load_state_dict(state)


def full_states(wrapped: nn.Module, model: nn.Module, optimizer: torch.optim.Optimizer,
                sharded: bool) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Model weights and optimizer state as whole tensors (gathered from the shards when ``sharded``)."""
    from lmkit.models.checkpoint import model_state

    if sharded:
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_model_state_dict,
            get_optimizer_state_dict,
        )

        opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
        weights = get_model_state_dict(wrapped, options=opts)
        unique = {n for n, _ in model.named_parameters()}  # aliases of tied weights dropped
        aliases = {n for n, _ in model.named_parameters(remove_duplicate=False)} - unique
        weights = {k.removeprefix("model."): v for k, v in weights.items() if k.removeprefix("model.") not in aliases}
        return weights, get_optimizer_state_dict(wrapped, optimizer, options=opts)
    return model_state(model), optimizer.state_dict()
