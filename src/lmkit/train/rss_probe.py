"""The runtime-baseline probe: ``python -m lmkit.train.rss_probe WORKDIR [FAMILY]`` trains a
negligible model of ``FAMILY`` (decoder when not given) in a fresh process and prints, as JSON, what
every training run holds beside its tensors while it trains (``runtime_bytes``) and what the end of
the run adds on top (``finish_bytes``).
``lmkit plan --this-machine`` runs it for each family (``lmkit.plan.baseline.measure_baselines``)
and caches both figures per family, machine and library versions.

The two are apart because a run's peak is a maximum, not a sum: the steps' transient tensors are
gone when the run ends with its final evaluation, checkpoint and loss-curve plot (matplotlib), so
the plan counts the larger of the two (``lmkit.plan.memory.training_memory``)."""

from __future__ import annotations

from lmkit.train.rss import peak_rss_bytes, release_free_heap, rss_bytes

# --------------------------------------------------------------------------- the runtime baseline probe

PROBE_TEXT = "the quick brown fox jumps over the lazy dog while the cat sleeps by the warm fire. " * 400


def probe_runtime_baseline(work: str, family: str = "decoder") -> dict[str, float]:
    """A whole training run of a negligible ``family`` model (interpreter, torch, lmkit, the tokenizer,
    memory-mapped shards, the steps' kernels, an evaluation, the TensorBoard writer; then the final
    evaluation, a checkpoint and the loss-curve plot), with glibc's allocator as it is (train.memory
    fast; the negligible model's heap is negligible too). Meant to run in a fresh child process.

    ``runtime_bytes``: the resident size right after the last training step, once glibc has handed
    its free pages back (``release_free_heap``). Free pages are left out because a real run's
    tensors reuse them: what the set-up freed (the matmul-peak measurement's buffers, 8-20 MB, more
    or less by timing) would otherwise count twice. ``finish_bytes``: the run's whole peak above
    that, what its end adds."""
    from pathlib import Path
    from typing import cast

    from lmkit.config import DataConfig, Family, ModelConfig, RunConfig, TrainConfig
    from lmkit.train.loop import Trainer

    root = Path(work)
    (root / "text.txt").write_text(PROBE_TEXT)
    cfg = RunConfig(
        model=ModelConfig(
            family=cast(Family, family), vocab_size=512, d_model=8, n_layers=1, n_heads=1, max_seq_len=16
        ),
        train=TrainConfig(
            batch_size=1,
            max_steps=3,
            eval_every=2,
            eval_batches=1,
            log_every=1,
            ckpt_every=3,
            tensorboard=True,
            memory="fast",
        ),
        data=DataConfig(paths=[str(root / "text.txt")], val_fraction=0.2, workers=1),
        out=str(root / "run"),
    )
    held: list[float] = []

    class Probe(Trainer):
        def train_step(self, step: int, lr: float) -> tuple[float, float]:
            out = super().train_step(step, lr)
            if step + 1 == self.cfg.train.max_steps:
                release_free_heap()
                held.append(rss_bytes() or peak_rss_bytes())  # no /proc (not Linux): the peak so far
            return out

    Probe(cfg, show_progress=False).run()
    return {"runtime_bytes": held[0], "finish_bytes": max(0.0, peak_rss_bytes() - held[0])}


if __name__ == "__main__":
    import json
    import sys

    print(json.dumps(probe_runtime_baseline(sys.argv[1], *sys.argv[2:3])))
