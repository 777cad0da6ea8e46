"""The data order (lmkit.train.batches): in the global order a step's windows and masks are the same
whatever the number of processes and the accumulation; the per-rank order of older runs is what
lmkit drew before it (and depends on the rank). A step's loss and gradient (micro-batches weighted
by their scored tokens) and its dropout masks do not depend on how the global batch is split."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from lmkit.config import ModelConfig, load_run_config
from lmkit.models import build_model
from lmkit.objectives import SpecialIds, make_batch, window_length
from lmkit.train.batches import BatchOrder, recorded_order, token_divisors, window_generator
from lmkit.train.steps import batch_generator

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SPECIALS = SpecialIds(pad=0, bos=1, eos=2, mask=4, sentinels=tuple(range(5, 105)), vocab_size=512, n_special=105)


class Shards:
    """Stands in for TokenShards: windows a pure function of (step, seed, rank), as its batch() is."""

    def batch(self, step: int, batch_size: int, length: int, seed: int, rank: int = 0) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed * 7919 + step * 104729 + rank)
        return torch.randint(105, 512, (batch_size, length), generator=g)


def _global_batch(cfg_name: str, world: int, micro: int, kind: str = "global") -> dict[str, torch.Tensor]:
    """The whole global batch of 8 windows at step 3, as ``world`` processes split it."""
    model = load_run_config(CONFIGS / cfg_name).model
    accum = 8 // (micro * world)
    parts = []
    for rank in range(world):
        order = BatchOrder(Shards(), model, SPECIALS, 5, window_length(model), micro, accum, rank, kind)
        parts += [order.micro_batch(3, i) for i in range(accum)]
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


@pytest.mark.parametrize("cfg_name", ["tiny.yaml", "tiny-encoder.yaml", "tiny-encdec.yaml"])
def test_the_global_order_gives_the_same_step_on_any_number_of_processes(cfg_name: str) -> None:
    reference = _global_batch(cfg_name, world=4, micro=2)
    assert reference["labels"].shape[0] == 8
    for world, micro in ((2, 2), (2, 4), (1, 8), (1, 1)):
        split = _global_batch(cfg_name, world, micro)
        assert split.keys() == reference.keys()
        for k in reference:  # windows and masks alike, bit for bit
            assert torch.equal(split[k], reference[k]), (cfg_name, world, micro, k)


def test_a_window_and_its_masks_depend_on_its_position_alone() -> None:
    model = load_run_config(CONFIGS / "tiny-encoder.yaml").model
    order = BatchOrder(Shards(), model, SPECIALS, 5, window_length(model), 2, 1, 1, "global")
    batch = order.micro_batch(3, 0)  # rank 1: windows 2 and 3 of step 3
    alone = make_batch(model, Shards().batch(3, 1, window_length(model), 5, 3), SPECIALS, window_generator(5, 3, 3))
    assert all(torch.equal(batch[k][1:], alone[k]) for k in alone)
    masks = [window_generator(5, s, j).initial_seed() for s in range(50) for j in range(50)]
    assert len(set(masks)) == len(masks)  # no two (step, window) share a mask stream


def test_the_per_rank_order_is_what_lmkit_drew_before_the_global_one() -> None:
    model = load_run_config(CONFIGS / "tiny-encoder.yaml").model
    length = window_length(model)
    order = BatchOrder(Shards(), model, SPECIALS, 5, length, 4, 2, 1, "per-rank")
    got = order.micro_batch(3, 1)
    windows = Shards().batch(3 * 2 + 1, 4, length, 5, 1)
    before = make_batch(model, windows, SPECIALS, batch_generator(5, 3, 1, 1))
    assert all(torch.equal(got[k], before[k]) for k in before)
    assert recorded_order({}) == "per-rank" and recorded_order({"data_order": "global"}) == "global"


def test_a_step_weighs_each_micro_batch_by_its_share_of_the_scored_tokens() -> None:
    assert token_divisors([128, 128], 512, 2) == [2.0, 2.0]  # equal counts (causal LM): the accumulation
    assert token_divisors([3, 0, 5], 16, 2) == [16 / 6, math.inf, 16 / 10]  # none scored: weight 0


def _step_gradient(
    model: torch.nn.Module, cfg: ModelConfig, world: int, micro: int, weigh: bool = True
) -> tuple[float, torch.Tensor]:
    """The loss and gradient the processes average: each micro-batch's mean loss / its divisor
    (``weigh``), or / the accumulation (how lmkit weighed them before)."""
    accum = 8 // (micro * world)
    orders = [
        BatchOrder(Shards(), cfg, SPECIALS, 5, window_length(cfg), micro, accum, r, "global") for r in range(world)
    ]
    batches = [[o.micro_batch(3, i) for i in range(accum)] for o in orders]
    total = sum(int((b["labels"] != -100).sum()) for bs in batches for b in bs)
    model.zero_grad()
    loss = 0.0
    for bs in batches:  # a rank's gradient, averaged over the ranks as DDP / FSDP do
        counts = [int((b["labels"] != -100).sum()) for b in bs]
        divisors = token_divisors(counts, total, world) if weigh else [float(accum)] * accum
        for b, d in zip(bs, divisors, strict=True):
            part = model.loss(b) / d / world
            part.backward()
            loss += float(part.detach()) * world
    grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    return loss / world, grads


@pytest.mark.parametrize(
    ("cfg_name", "objective"), [("tiny-encoder.yaml", "mlm"), ("tiny-encdec.yaml", "span"), ("tiny.yaml", "clm")]
)
def test_the_step_loss_and_gradient_are_the_same_however_the_batch_is_split(cfg_name: str, objective: str) -> None:
    cfg = load_run_config(CONFIGS / cfg_name).model
    cfg.objective = objective  # type: ignore[assignment]  # a name the config's Literal holds
    torch.manual_seed(0)
    model = build_model(cfg)
    whole_loss, whole = _step_gradient(model, cfg, 1, 8)  # one micro-batch of the 8 windows
    for world, micro in ((4, 2), (1, 2)):
        loss, grads = _step_gradient(model, cfg, world, micro)
        assert loss == pytest.approx(whole_loss, rel=1e-6), (world, micro)  # fp32: summation order alone
        assert (grads - whole).abs().max() < 1e-5 * whole.abs().max(), (world, micro)
    if objective == "mlm":  # windows score unequal numbers of tokens (span, infill, clm: a fixed number)
        _, grads = _step_gradient(model, cfg, 4, 2, weigh=False)  # a mean of micro-batch means
        assert (grads - whole).abs().max() > 1e-3 * whole.abs().max()


def test_dropout_masks_follow_a_micro_batch_not_the_process_that_draws_it() -> None:
    cfg = load_run_config(CONFIGS / "tiny-encoder.yaml").model
    cfg.dropout = 0.3
    torch.manual_seed(0)
    model = build_model(cfg).train()
    length = window_length(cfg)
    on4 = BatchOrder(Shards(), cfg, SPECIALS, 5, length, 2, 1, 1, "global")  # rank 1 of 4: windows 2-3
    on2 = BatchOrder(Shards(), cfg, SPECIALS, 5, length, 2, 2, 0, "global")  # rank 0 of 2, micro-batch 1
    losses = []
    for order, micro in ((on4, 0), (on2, 1), (on4, 0)):
        torch.manual_seed(123 + len(losses))  # whatever the stream was before
        order.seed_dropout(3, micro)
        losses.append(model.loss(order.micro_batch(3, micro)))
    assert torch.equal(losses[0], losses[1]) and torch.equal(losses[0], losses[2])
    on2.seed_dropout(4, 1)  # another step: other masks
    assert not torch.equal(model.loss(on2.micro_batch(3, 1)), losses[0])
