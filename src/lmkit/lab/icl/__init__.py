"""In-context learning (``lmkit icl``): prompts, tasks, scoring, the models asked, runs, fine-tuning beside.

One module per concept: ``prompts`` (zero-/one-/few-shot prompts, pure), ``tasks`` (labelled
examples and their format, the built-in tasks), ``score`` (multiple-choice and free-form scoring,
pure), ``models`` (a local checkpoint or an OpenAI-compatible server, behind the same three
questions), ``run`` (a task at several shot counts and its report files) and ``finetune`` (the same
examples through ``lmkit finetune-head``). Nothing is re-exported here: import from the module.
"""
