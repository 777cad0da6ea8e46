"""Model shapes grown from a base config: the shape nearest a parameter count by width and depth
(used by ``lmkit scale sweep`` for its IsoFLOP grids and by the time-budget picker for its
candidates). Pure arithmetic over ``lmkit.plan.compute.count_params``, which counts every
architecture variant (grouped-query attention, biases, plain MLPs, padded vocabulary rows).
"""

from __future__ import annotations

import dataclasses
import math

from lmkit.config import ModelConfig
from lmkit.plan.compute import count_params


def shape_for(base: ModelConfig, target: float, vocab_size: int) -> ModelConfig:
    """The shape nearest ``target`` parameters grown from ``base`` by width and depth: d_model a
    multiple of the head size, layers 1..4×base; ties broken by the base's width/depth ratio. The
    head size is the base's, or half or a quarter of it (never under 16) when a narrower model is
    needed: small budgets want models below one base-width layer (a small penalty keeps the base's
    head size wherever it fits as well). The base's other variants (norm, biases, MLP, positions) are
    kept, and so is its grouping of query heads per key/value head wherever the head count allows."""
    hd = base.head_dim
    group = base.n_heads // base.kv_heads  # query heads per key/value head, kept where it divides
    ratio = base.d_model / base.n_layers
    head_dims = [h for h in (hd, hd // 2, hd // 4) if h >= min(16, hd)]
    best: tuple[float, ModelConfig] | None = None
    for k, h in enumerate(head_dims):
        for heads in range(1, 65):
            d = heads * h
            if k and d >= base.d_model:  # narrower heads only for models narrower than the base
                continue
            for layers in range(1, 4 * base.n_layers + 1):
                cfg = dataclasses.replace(
                    base,
                    d_model=d,
                    n_heads=heads,
                    n_layers=layers,
                    vocab_size=vocab_size,
                    d_ff=None,
                    head_size=None,  # d = heads · h: the head size is h
                    n_kv_heads=heads // group if group > 1 and heads % group == 0 else None,
                )
                n = count_params(cfg).total
                cost = abs(math.log(n / target)) + 0.05 * abs(math.log((d / layers) / ratio)) + 0.02 * k
                if best is None or cost < best[0]:
                    best = (cost, cfg)
    assert best is not None
    return best[1]
