"""The runtime-baseline probe: ``python -m lmkit.train.rss_probe WORKDIR`` trains a negligible
model in a fresh process and prints its peak RSS as JSON. ``lmkit plan --this-machine`` runs it
(lmkit.plan.measure.runtime_baseline) and caches the figure per machine and library versions."""

from __future__ import annotations

from lmkit.train.rss import peak_rss_bytes

# --------------------------------------------------------------------------- the runtime baseline probe

PROBE_TEXT = "the quick brown fox jumps over the lazy dog while the cat sleeps by the warm fire. " * 400


def probe_runtime_baseline(work: str) -> float:
    """Peak RSS of a whole training run of a negligible model (interpreter, torch, lmkit, the
    tokenizer, memory-mapped shards, the first step's kernels, evaluation, a checkpoint, the
    TensorBoard writer and the loss-curve plot): what every run costs beside its tensors, with
    glibc's allocator as it is (train.memory fast; the negligible model's heap is negligible too).
    Meant to run in a fresh child process (``python -m lmkit.train.rss_probe WORKDIR``)."""
    from pathlib import Path

    from lmkit.config import DataConfig, ModelConfig, RunConfig, TrainConfig
    from lmkit.train.loop import Trainer

    root = Path(work)
    (root / "text.txt").write_text(PROBE_TEXT)
    cfg = RunConfig(
        model=ModelConfig(family="decoder", vocab_size=512, d_model=8, n_layers=1, n_heads=1, max_seq_len=16),
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
    Trainer(cfg, show_progress=False).run()
    return peak_rss_bytes()


if __name__ == "__main__":
    import json
    import sys

    print(json.dumps({"runtime_bytes": probe_runtime_baseline(sys.argv[1])}))
