"""Optimizer (no weight decay on norms, biases, embeddings), LR schedules and the run horizon:
shared by pre-training (``lmkit.train.loop``) and fine-tuning (``lmkit.train.finetune``)."""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from lmkit.config import TrainConfig


def param_groups(
    params: Iterable[nn.Parameter], weight_decay: float, no_decay: Collection[int] = (), lr: float | None = None
) -> list[dict[str, Any]]:
    """The trainable ``params`` in two AdamW groups: matrices decayed; vectors (norms, biases) and the
    parameters whose ids are in ``no_decay`` not. With ``lr`` each group carries its own ``lr`` and a
    ``base_lr`` that a schedule scales (fine-tuning's encoder and head learn at different rates)."""
    skip = set(no_decay)
    decay: list[nn.Parameter] = []
    rest: list[nn.Parameter] = []
    for p in params:
        if not p.requires_grad:
            continue
        (decay if p.dim() >= 2 and id(p) not in skip else rest).append(p)
    groups: list[dict[str, Any]] = [
        {"params": decay, "weight_decay": weight_decay},
        {"params": rest, "weight_decay": 0.0},
    ]
    if lr is not None:
        for g in groups:
            g.update(lr=lr, base_lr=lr)
    return groups


def adamw(
    groups: list[dict[str, Any]],
    lr: float,
    betas: tuple[float, float] = (0.9, 0.95),
    eps: float = 1e-8,
    fused: bool | None = None,
) -> torch.optim.AdamW:
    """AdamW over ``groups``; ``fused`` asks for the single-kernel version, falling back where this
    torch build lacks it (None: torch's default)."""
    if fused is None:
        return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps)
    try:
        return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, fused=fused)
    except (RuntimeError, TypeError):
        return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps)


def make_optimizer(
    model: nn.Module,
    lr: float,
    weight_decay: float,
    betas: tuple[float, float] = (0.9, 0.95),
    eps: float = 1e-8,
    kind: str = "adamw",
) -> torch.optim.Optimizer:
    """Pre-training's AdamW: weight decay on matrices only (norms, biases and embeddings are not decayed).
    ``kind="muon"``: Muon on the blocks' matrices and this AdamW on the rest (``lmkit.train.muon``).

    Uses the fused single-kernel AdamW where this torch build offers it for the device.
    """
    embedding_params = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    device = next(model.parameters()).device

    def build(params: Iterable[nn.Parameter]) -> torch.optim.AdamW:
        groups = param_groups(params, weight_decay, no_decay=embedding_params)
        return adamw(groups, lr, betas, eps, fused=device.type in ("cpu", "cuda"))

    if kind == "muon":
        from lmkit.train.muon import make_muon

        return make_muon(model, lr, weight_decay, build)
    return build(model.parameters())


def lr_at(step: int, cfg: TrainConfig, horizon: int | None, progress: float | None = None) -> float:
    """Pre-training's learning rate at ``step``: ``scheduled_lr`` with the run config's settings."""
    return scheduled_lr(step, cfg.lr, cfg.warmup_steps, horizon, cfg.schedule, cfg.min_lr_ratio, progress)


def scheduled_lr(
    step: int,
    peak: float,
    warmup: int,
    horizon: int | None,
    schedule: str = "cosine",
    min_lr_ratio: float = 0.0,
    progress: float | None = None,
) -> float:
    """Learning rate at ``step``: linear warmup to ``peak`` over ``warmup`` steps, then down to
    ``peak * min_lr_ratio`` at ``horizon``: cosine, warmup-stable-decay (wsd), linear, or constant.

    ``progress`` in [0, 1] overrides step/horizon (used when only a wall-time limit is set).
    With ``peak`` 1 it is the multiplier of each parameter group's own rate (fine-tuning).
    """
    if step < warmup:
        return peak * (step + 1) / warmup
    floor = peak * min_lr_ratio
    if progress is None:
        if not horizon or horizon <= warmup:
            return peak
        if schedule == "linear":  # the steps left over the decay's length
            return floor + (peak - floor) * max(0.0, (horizon - step) / max(1, horizon - warmup))
        progress = (step - warmup) / max(1, horizon - warmup)
    progress = min(max(progress, 0.0), 1.0)
    if schedule == "constant":
        return peak
    if schedule == "wsd":  # stable at the peak, then a linear decay over the last 20%
        return peak if progress < 0.8 else floor + (peak - floor) * (1 - progress) / 0.2
    if schedule == "linear":
        return floor + (peak - floor) * (1 - progress)
    return floor + 0.5 * (peak - floor) * (1 + math.cos(math.pi * progress))


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
        limits.append(
            (math.ceil(tokens / tokens_per_step), f"tokens_per_param={cfg.tokens_per_param:g} ({tokens:.3g} tokens)")
        )
    if not limits:
        return Horizon(None, f"max_time={cfg.max_time}s", cfg.max_time)
    steps, reason = min(limits)
    return Horizon(max(1, steps), reason, cfg.max_time)


def batch_generator(seed: int, step: int, micro: int, rank: int) -> torch.Generator:
    """The RNG an objective uses for the masks of one micro-batch: a function of its position."""
    return torch.Generator().manual_seed((seed * 1_000_003 + step * 1009 + micro * 31 + rank) % (2**63))
