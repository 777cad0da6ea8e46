"""Fine-tuning pre-trained models on labelled tasks (``lmkit finetune-head``).

One module per concept: ``data`` (the run's settings and the labelled JSONL formats, turned into
token ids), ``heads`` (the classification heads and the fine-tuned checkpoint that holds them),
``scores`` (the held-out counting: accuracy, per-label and entity-level F1, word-overlap F1) and
``loop`` (the fine-tuning loops, the held-out report and :func:`~lmkit.train.finetune.loop.run_finetune`).
Nothing is re-exported here: import from the module.
"""
