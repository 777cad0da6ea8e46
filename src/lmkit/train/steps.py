"""Optimizer (no weight decay on norms, biases, embeddings), LR schedules and the run horizon."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from lmkit.config import TrainConfig


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
