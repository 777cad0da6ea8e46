"""What it costs to reach a model's bits per byte by training one's own model from scratch.

What this module owns: :func:`bpb_to_loss` (bits per byte to the loss in nats per token a scaling
law speaks of, through the bytes per token of the user's own tokenizer on the user's text),
:func:`compute_to_reach` (the least compute C whose compute-optimal model, N_opt(C) and D_opt(C)
of :class:`lmkit.plan.chinchilla.ScalingFit`, reaches a loss) and :func:`scratch_cost` (both, and
the hours at a training rate). Pure arithmetic: the law and the rate come from the caller.

Invariants: the loss along the compute-optimal frontier falls as C grows, towards the law's E; a
target at or below E is never reached (``reachable`` False, no FLOPs); the C found is the smallest
(to 0.1%) whose optimal loss is at or below the target.
"""

from __future__ import annotations

import math
from typing import Any

from lmkit.errors import LmkitError
from lmkit.plan.chinchilla import ScalingFit

LOG10_C_RANGE = (0.0, 30.0)  # from 1 FLOP to 1e30 FLOPs: past any run there has been
TOLERANCE_DEX = math.log10(1.001)  # C to 0.1%


def bpb_to_loss(bits_per_byte: float, bytes_per_token: float) -> float:
    """Nats per token of a model whose bits per byte is ``bits_per_byte``, counted with a tokenizer
    that cuts ``bytes_per_token`` bytes into each token: bpb · ln 2 · bytes per token."""
    if not (bits_per_byte > 0 and bytes_per_token > 0):
        raise LmkitError(f"bits per byte {bits_per_byte} and bytes per token {bytes_per_token} must both be above 0")
    return bits_per_byte * math.log(2) * bytes_per_token


def frontier_loss(law: ScalingFit, flops: float) -> float:
    """The law's loss of the compute-optimal model for ``flops``: L(N_opt(C), D_opt(C))."""
    n, d = law.optimal(flops)
    return law.loss(n, d)


def compute_to_reach(law: ScalingFit, loss: float) -> float | None:
    """The least compute (FLOPs, C = 6ND) whose compute-optimal model reaches ``loss`` under ``law``;
    None when ``loss`` is at or below the law's irreducible E, or beyond 1e30 FLOPs."""
    if loss <= law.E:
        return None
    lo, hi = LOG10_C_RANGE
    if frontier_loss(law, 10.0**hi) > loss:
        return None
    if frontier_loss(law, 10.0**lo) <= loss:
        return 10.0**lo
    while hi - lo > TOLERANCE_DEX:  # the frontier's loss falls as C grows: bisect on log10 C
        mid = (lo + hi) / 2
        if frontier_loss(law, 10.0**mid) <= loss:
            hi = mid
        else:
            lo = mid
    return 10.0**hi


def scratch_cost(
    bits_per_byte: float, bytes_per_token: float, law: ScalingFit, flops_per_second: float
) -> dict[str, Any]:
    """The compute and the hours (at ``flops_per_second`` of training) to reach ``bits_per_byte`` on
    the user's text from scratch under ``law``, with the model size and tokens of that run."""
    if not flops_per_second > 0:
        raise LmkitError(f"a training rate of {flops_per_second} FLOP/s cannot do any work")
    target = bpb_to_loss(bits_per_byte, bytes_per_token)
    out: dict[str, Any] = {"target_loss": target, "law": law.name, "law_E": law.E}
    flops = compute_to_reach(law, target)
    if flops is None:
        why = "at or below the law's irreducible loss E" if target <= law.E else "beyond 1e30 FLOPs"
        return {**out, "reachable": False, "why": why, "flops": None, "hours": None, "params": None, "tokens": None}
    n, d = law.optimal(flops)
    return {
        **out,
        "reachable": True,
        "flops": flops,
        "hours": flops / flops_per_second / 3600.0,
        "params": n,
        "tokens": d,
    }


__all__ = ["bpb_to_loss", "compute_to_reach", "frontier_loss", "scratch_cost"]
