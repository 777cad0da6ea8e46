"""Held-out evaluation: loss, perplexity and bits per byte of a model on packed token windows.

- loss: mean cross-entropy in nats of the objective's scored tokens;
- perplexity: exp(loss), the effective number of equally likely choices per token;
- bits per byte: total nats / ln 2 / UTF-8 bytes of the scored tokens — unlike perplexity it does
  not depend on the tokenizer, so models with different vocabularies compare fairly.

A token's bytes are the UTF-8 bytes it stands for (``Tokenizer.token_bytes``); special tokens
count zero bytes.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch
from torch import nn

from lmkit.config import ModelConfig
from lmkit.objectives import IGNORE_INDEX, SpecialIds, make_batch, window_length


def token_byte_lengths(tokenizer: Any) -> torch.Tensor:
    """(vocab,) number of UTF-8 bytes each token id stands for (0 for special tokens)."""
    lengths = torch.zeros(tokenizer.vocab_size, dtype=torch.float64)
    for i in range(tokenizer.vocab_size):
        if i not in tokenizer.special_ids:
            lengths[i] = len(tokenizer.token_bytes(i))
    return lengths


@torch.no_grad()
def evaluate(model: nn.Module, shards: Any, model_cfg: ModelConfig, specials: SpecialIds,
             batch_size: int, max_batches: int, token_bytes: torch.Tensor | None = None,
             device: torch.device | str = "cpu", seed: int = 0,
             autocast: torch.autocast | None = None,
             loss_fn: Callable[[dict[str, torch.Tensor]], torch.Tensor] | None = None) -> dict[str, float]:
    """Loss, perplexity and bits per byte over up to ``max_batches`` held-out windows.

    ``loss_fn`` (default ``model.loss``) lets a distributed wrapper (DDP/FSDP) run the forward pass.
    """
    loss_fn = loss_fn or model.loss
    was_training = model.training
    model.eval()
    total_nats = 0.0
    total_tokens = 0
    total_bytes = 0.0
    length = window_length(model_cfg)
    gen = torch.Generator().manual_seed(seed)
    for windows in shards.sequential_batches(batch_size, length, max_batches):
        batch = make_batch(model_cfg, windows, specials, gen)
        labels = batch["labels"]
        n = int((labels != IGNORE_INDEX).sum())
        if n == 0:
            continue
        batch = {k: v.to(device) for k, v in batch.items()}
        if autocast is not None:
            with autocast:
                loss = loss_fn(batch)
        else:
            loss = loss_fn(batch)
        total_nats += float(loss) * n
        total_tokens += n
        if token_bytes is not None:
            scored = labels[labels != IGNORE_INDEX]
            total_bytes += float(token_bytes[scored.clamp(max=len(token_bytes) - 1)].sum())
    model.train(was_training)
    if total_tokens == 0:
        return {}
    loss = total_nats / total_tokens
    out = {"loss": loss, "perplexity": math.exp(min(loss, 50.0)), "tokens": float(total_tokens)}
    if token_bytes is not None and total_bytes > 0:
        out["bits_per_byte"] = total_nats / math.log(2) / total_bytes
    return out
