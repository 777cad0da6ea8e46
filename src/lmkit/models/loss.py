"""The output layer and its loss, shared by the three families: ``linear_cross_entropy``.

The output projection and the softmax cross-entropy over the vocabulary in one step, chunked over
tokens. Written by hand because it is where time and memory go at small sizes: the usual path
materialises logits (tokens × vocab), their log-softmax and their gradient as three full tensors;
this computes the gradient of each chunk while its logits are still hot in cache and never holds
more than one chunk (see benchmarks/train_throughput.py). Under autocast the chunk's three
matmuls run in the autocast dtype and its softmax in fp32; the gradients it returns are fp32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

_WORKSPACE: dict[tuple[torch.device, torch.dtype], torch.Tensor] = {}


def _workspace(numel: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A flat scratch tensor of ``numel`` elements, kept from one call to the next.

    The chunked loss needs one (rows × vocab) fp32 block per step (chunk × vocab × 4 bytes, which
    stays allocated). A fresh one on CPU is tens of MB that the kernel maps in page by page: 11k
    page faults per step of the encoder-decoder benchmark before, 1k after, about 1% of its step
    time. GPU allocators already reuse memory.
    """
    if torch.compiler.is_compiling():  # a compiled graph plans its own buffers
        return torch.empty(numel, dtype=dtype, device=device)
    buf = _WORKSPACE.get((device, dtype))
    if buf is None or buf.numel() < numel:
        buf = _WORKSPACE[(device, dtype)] = torch.empty(numel, dtype=dtype, device=device)
    return buf[:numel]


class _LinearCrossEntropy(torch.autograd.Function):
    """mean cross-entropy of softmax(hidden · weightᵀ + bias) against targets, chunked.

    The forward pass also computes the gradients (dL/dlogits = softmax − onehot), so backward
    only scales them; logits never exist for more than ``chunk`` rows at a time. Per chunk, in
    one scratch block kept between calls: one matmul for the logits, a read for their row maxima
    and the target logits, PyTorch's row-wise softmax kernel in place, a read for the largest
    probability (which gives the log-sum-exp), then two matmuls. Each row's 1/n_valid share of
    the mean is applied on the small (rows × d_model) side, and subtracting the one-hot touches
    one element per row. Under autocast a second block in the compute dtype holds the chunk's
    logits as the matmul writes them, then its gradient for the two matmuls after the softmax, so
    all three run at that dtype's speed (the weight's gradient is summed over chunks in fp32); on
    a CPU whose fp32 matmul is a quarter of its bf16 one, the fp32 weight gradient this replaced
    was a fifth of a decoder's bf16 step.
    """

    @staticmethod
    def forward(
        ctx,
        hidden: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,  # type: ignore[override]
        targets: torch.Tensor,
        ignore_index: int,
        chunk: int,
        compute_dtype: torch.dtype,
    ) -> torch.Tensor:
        N, V = hidden.shape[0], weight.shape[0]
        valid_all = targets != ignore_index
        share_all = valid_all.to(torch.float32) / valid_all.sum().clamp(min=1).to(torch.float32)  # (N,)
        w = weight.to(compute_dtype)  # (V, C)
        grad_hidden = torch.empty_like(hidden)  # (N, C)
        grad_weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device)  # (V, C)
        grad_bias = torch.zeros(bias.shape, dtype=torch.float32, device=bias.device) if bias is not None else None
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        block = _workspace(min(chunk, N) * V, torch.float32, hidden.device)  # reused by every chunk
        # under autocast: the chunk's logits in the compute dtype, then its gradient in that dtype again
        low = None if compute_dtype == torch.float32 else _workspace(min(chunk, N) * V, compute_dtype, hidden.device)
        for s in range(0, N, chunk):
            h = hidden[s : s + chunk].to(compute_dtype)  # (n, C)
            n = h.shape[0]
            tgt = targets[s : s + chunk].clamp(min=0)  # (n,)
            share = share_all[s : s + chunk]  # (n,): 1/n_valid, or 0 where nothing is scored
            rows = torch.arange(n, device=h.device)
            logits = block[: n * V].view(n, V)
            product = logits if low is None else low[: n * V].view(n, V)  # (n, V) in the compute dtype
            torch.mm(h, w.t(), out=product)
            if product is not logits:
                logits.copy_(product)
            if bias is not None:
                logits += bias.float()
            top = logits.amax(dim=-1)  # (n,)
            target_logit = logits[rows, tgt]  # (n,)
            probs = torch.softmax(logits, dim=-1, out=logits)  # in place: rows are independent
            # log-sum-exp from the most likely token, whose probability (>= 1/V) cannot underflow:
            # its probability is exp(top - lse)
            lse = top - probs.amax(dim=-1).log()
            total += ((lse - target_logit) * share).sum()
            probs[rows, tgt] -= 1.0  # softmax − onehot: the gradient of each row's loss
            g = probs if product is logits else product.copy_(probs)  # (n, V) in the compute dtype
            shared = share[:, None].to(compute_dtype)  # (n, 1)
            grad_hidden[s : s + n] = (g @ w) * shared
            # the weight's gradient at the compute dtype's matmul speed (the chunk's share is rounded to
            # it once, as autocast's own backward rounds the whole product), summed over chunks in fp32
            if g.dtype == torch.float32:
                grad_weight.addmm_(g.t(), h * shared)
            else:
                grad_weight += g.t() @ (h * shared)
            if grad_bias is not None:
                grad_bias += share @ probs
        ctx.save_for_backward(
            grad_hidden,
            grad_weight.to(weight.dtype),
            grad_bias.to(bias.dtype) if grad_bias is not None and bias is not None else None,
        )
        return total

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):  # type: ignore[override]
        gh, gw, gb = ctx.saved_tensors
        return gh * grad_out, gw * grad_out, (gb * grad_out if gb is not None else None), None, None, None, None


def linear_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    bias: torch.Tensor | None = None,
    ignore_index: int = -100,
    chunk: int = 1024,
) -> torch.Tensor:
    """Mean cross-entropy of the next-token (or masked-token) softmax, without full logits.

    hidden (N, C), weight (V, C) (the output projection, often the tied embedding), targets (N,)
    with ``ignore_index`` where no prediction is scored. Matches
    ``F.cross_entropy(hidden @ weight.T + bias, targets)`` in value and gradients.
    """
    dtype = hidden.dtype
    if torch.is_autocast_enabled(hidden.device.type):
        dtype = torch.get_autocast_dtype(hidden.device.type)
    needs_grad = torch.is_grad_enabled() and (
        hidden.requires_grad or weight.requires_grad or (bias is not None and bias.requires_grad)
    )
    if not needs_grad:
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        w = weight.to(dtype)
        for s in range(0, hidden.shape[0], chunk):
            logits = (hidden[s : s + chunk].to(dtype) @ w.t()).float()
            if bias is not None:
                logits += bias.float()
            total += F.cross_entropy(logits, targets[s : s + chunk], ignore_index=ignore_index, reduction="sum")
        return total / (targets != ignore_index).sum().clamp(min=1)
    return _LinearCrossEntropy.apply(hidden, weight, bias, targets, ignore_index, chunk, dtype)
