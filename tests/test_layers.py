"""Shared layers: the chunked linear cross-entropy equals the plain logits path in value and gradient."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lmkit.models.layers import linear_cross_entropy


@pytest.mark.parametrize("chunk", [7, 64, 1024])
@pytest.mark.parametrize("with_bias", [False, True])
def test_linear_cross_entropy_matches_logits_then_cross_entropy(chunk: int, with_bias: bool) -> None:
    torch.manual_seed(0)
    N, C, V = 50, 16, 97
    hidden = torch.randn(N, C, dtype=torch.float64).float().requires_grad_()
    weight = (torch.randn(V, C) * 0.5).requires_grad_()
    bias = torch.randn(V).requires_grad_() if with_bias else None
    targets = torch.randint(0, V, (N,))
    targets[::5] = -100  # unscored positions
    ours = linear_cross_entropy(hidden, weight, targets, bias=bias, chunk=chunk)
    grads = torch.autograd.grad(ours * 3.0, [hidden, weight] + ([bias] if bias is not None else []))
    ref = F.cross_entropy(hidden @ weight.t() + (bias if bias is not None else 0.0), targets, ignore_index=-100)
    ref_grads = torch.autograd.grad(ref * 3.0, [hidden, weight] + ([bias] if bias is not None else []))
    assert torch.allclose(ours, ref, atol=1e-5, rtol=1e-5)
    for g, r in zip(grads, ref_grads):
        assert torch.allclose(g, r, atol=1e-6, rtol=1e-4)


def test_linear_cross_entropy_is_exact_for_confident_wrong_predictions() -> None:
    """A target whose probability underflows fp32 still gets its true (large) loss, not inf."""
    hidden = torch.tensor([[1.0, 0.0], [0.0, 1.0]], requires_grad=True)
    weight = torch.tensor([[200.0, 0.0], [0.0, 200.0], [0.0, 0.0]], requires_grad=True)
    targets = torch.tensor([1, 2])  # row 0 puts all its mass on token 0: p(target) = e^-200
    ours = linear_cross_entropy(hidden, weight, targets)
    ref = F.cross_entropy(hidden @ weight.t(), targets)
    assert torch.isfinite(ours) and torch.allclose(ours, ref, rtol=1e-6)
    ours.backward()
    assert torch.isfinite(hidden.grad).all() and torch.isfinite(weight.grad).all()


def test_linear_cross_entropy_without_scored_positions_is_zero() -> None:
    hidden = torch.randn(4, 8, requires_grad=True)
    weight = torch.randn(10, 8, requires_grad=True)
    loss = linear_cross_entropy(hidden, weight, torch.full((4,), -100))
    loss.backward()
    assert loss.item() == 0.0 and hidden.grad.abs().sum().item() == 0.0 and weight.grad.abs().sum().item() == 0.0
