"""Old home of the checkpoint format, kept so ``lmkit.checkpoint.load_model`` keeps working.

The format lives in :mod:`lmkit.models.checkpoint`.
"""

from lmkit.models.checkpoint import load_model, load_tokenizer, save_checkpoint

__all__ = ["load_model", "load_tokenizer", "save_checkpoint"]
