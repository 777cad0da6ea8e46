"""Comparing models on the user's own text (``lmkit compare``): foundation models beside the user's own.

One module per concept: ``rows`` (everything measured about one checkpoint, by lmkit's own
measures), ``speed`` (prompt and generated tokens/s at batch 1), ``cost`` (the compute and hours
to reach a bits per byte from scratch under a scaling law, pure), ``verdict`` (the winners and the
sentences, pure), ``plot`` (``compare.png``) and ``run`` (a whole comparison and its report files).
Nothing is re-exported here: import from the module.
"""
