"""``train.optimizer: muon``: Muon for the hidden layers' weight matrices, AdamW for the rest, as one
optimizer the trainer drives like AdamW.

Muon (Jordan et al. 2024, ``torch.optim.Muon``) keeps a Nesterov momentum of each matrix's gradient
and replaces it by the nearest semi-orthogonal matrix (five Newton–Schulz iterations) before the
update: every direction the update moves in moves at the same rate, instead of a few large
singular directions dominating as in SGD or Adam. It applies to 2-D weights inside the blocks
(attention and feed-forward projections); embeddings, the output head, norms and biases keep
AdamW, as its authors recommend. With ``adjust_lr_fn="match_rms_adamw"`` (Moonshot's scaling,
0.2·√max(rows, cols)) the update's RMS matches AdamW's, so one learning rate, one weight decay
and the run's schedule serve both halves: the trainer sets ``lr`` on every group each step.

Checkpoints hold both halves' states (``{"muon": ..., "adamw": ...}``), so a resumed run continues
bit for bit. FSDP shards matrices across processes and Muon needs them whole: refused in config.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

MUON_MOMENTUM = 0.95


def is_muon_param(name: str, p: nn.Parameter) -> bool:
    """A hidden layer's weight matrix (``...blocks.N....weight``, 2-D)."""
    return p.dim() == 2 and "blocks." in name


class MuonWithAdamW(torch.optim.Optimizer):
    """``torch.optim.Muon`` over the hidden matrices and ``torch.optim.AdamW`` over the rest, stepped
    together. ``param_groups`` are the two optimizers' own group dicts (Muon's first), so setting a
    group's ``lr`` sets it where the step reads it."""

    def __init__(self, muon: torch.optim.Optimizer, adamw: torch.optim.Optimizer) -> None:
        self.muon, self.adamw = muon, adamw
        super().__init__([p for g in muon.param_groups + adamw.param_groups for p in g["params"]], {})
        self.param_groups = muon.param_groups + adamw.param_groups

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self.muon.step()
        self.adamw.step()
        return loss

    def state_dict(self) -> dict[str, Any]:
        return {"muon": self.muon.state_dict(), "adamw": self.adamw.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if set(state_dict) != {"muon", "adamw"}:
            raise ValueError("not a Muon + AdamW optimizer state (was the run trained with train.optimizer adamw?)")
        self.muon.load_state_dict(state_dict["muon"])
        self.adamw.load_state_dict(state_dict["adamw"])
        self.param_groups = self.muon.param_groups + self.adamw.param_groups


def make_muon(
    model: nn.Module, lr: float, weight_decay: float, adamw_groups: Callable[[list[nn.Parameter]], Any]
) -> MuonWithAdamW:
    """Muon over the model's hidden matrices; ``adamw_groups(rest)`` builds the AdamW for the others."""
    hidden: list[nn.Parameter] = []
    rest: list[nn.Parameter] = []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (hidden if is_muon_param(name, p) else rest).append(p)
    muon = torch.optim.Muon(
        hidden, lr=lr, weight_decay=weight_decay, momentum=MUON_MOMENTUM, nesterov=True, adjust_lr_fn="match_rms_adamw"
    )
    return MuonWithAdamW(muon, adamw_groups(rest))
