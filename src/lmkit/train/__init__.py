"""Pre-training and fine-tuning: the training loop, checkpoints of a run, calibration.

``lmkit.train.train(cfg)`` runs one pre-training run; ``Trainer`` is the loop itself.
"""

from lmkit.train.loop import Trainer, train

__all__ = ["Trainer", "train"]
