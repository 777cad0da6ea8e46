"""Model cards (``lmkit card``): the hub README of a checkpoint, written from what the checkpoint records.

One module per concept: ``render`` (the facts read from a checkpoint, the front matter, the order of
the sections, the stamped card file), ``describe`` (what the model is, what it suits, its limits, how
to load it), ``training`` (how it was trained and how it scores) and ``figures`` (the figures as
text, ``not recorded`` for what is missing, and the readers of the records). Nothing is re-exported
here: import from the module.
"""
