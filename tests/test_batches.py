"""The data order (lmkit.train.batches): in the global order a step's windows and masks are the same
whatever the number of processes and the accumulation; the per-rank order of older runs is what
lmkit drew before it (and depends on the rank)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lmkit.config import load_run_config
from lmkit.objectives import SpecialIds, make_batch, window_length
from lmkit.train.batches import BatchOrder, recorded_order, window_generator
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
