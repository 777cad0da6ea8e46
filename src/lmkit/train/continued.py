"""Continued pre-training from a checkpoint (``train.init``; ``lmkit pretrain --init CKPT``): what the run
takes from the checkpoint, and what it refuses rather than ignore.

Invariants:

* The model is the checkpoint's. Every field of its ``config.json`` model section that shapes or means
  the weights (sizes, layout, positions, objective, vocabulary rows) is the checkpoint's; a ``--model.*``
  flag that would set one is refused in one line naming the flag (:func:`check_init_flags`), never
  dropped silently. The fields in :data:`RUN_MAY_SET` change no weight (dropout) and are the run's own:
  a flag for one is applied (:func:`adopt_init_model`). A ``--config`` file's model section describes
  a new model and is not read for a continued run (the checkpoint's shape wins).
* The tokenizer is the checkpoint's: by default its ``tokenizer.json``; a ``--tokenizer``
  (``data.tokenizer``) other than that tokenizer (another hash: other tokens, ids or roles) is refused
  (:func:`check_init_tokenizer`), since the checkpoint's embedding rows mean its own tokens. A
  checkpoint saved without a tokenizer takes one no larger than its embedding.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lmkit.config import ModelConfig, RunConfig
from lmkit.errors import LmkitError

RUN_MAY_SET = frozenset({"dropout"})  # model fields a continued run sets itself: no weight depends on them


def check_init_flags(overrides: Mapping[str, Any], init: str | Path) -> None:
    """Refuse, in one line naming the flag, a ``--model.*`` override that ``--init``'s checkpoint would overrule."""
    from lmkit.models.checkpoint import load_model_config, resolve_checkpoint

    keys = [k for k in overrides if k.startswith("model.") and k.split(".", 1)[1].split(".")[0] not in RUN_MAY_SET]
    if not keys:
        return
    ckpt = resolve_checkpoint(str(init))
    saved = load_model_config(ckpt)
    field = keys[0].split(".", 1)[1].split(".")[0]
    has = f" (it has {field} {getattr(saved, field)!r})" if hasattr(saved, field) else ""
    may = ", ".join(f"--model.{k}" for k in sorted(RUN_MAY_SET))
    raise LmkitError(
        f"--{keys[0]}: --init {init} continues that checkpoint's model, whose shape cannot change{has}; "
        f"drop the flag (only {may} may be set), or train a new model without --init"
    )


def adopt_init_checkpoint(cfg: RunConfig, init: str) -> Path:
    """Take ``init``'s model and tokenizer into ``cfg`` (a new run; before anything is packed): the model
    config of :func:`adopt_init_model`; the checkpoint's tokenizer, or the run's own if it is the same one
    (:func:`check_init_tokenizer`). Returns the checkpoint folder."""
    from lmkit.models.checkpoint import resolve_checkpoint
    from lmkit.tokenizer import Tokenizer

    ckpt = resolve_checkpoint(init)
    cfg.model = adopt_init_model(cfg, ckpt)
    if cfg.data.tokenizer is None:
        cfg.data.tokenizer = str(ckpt / "tokenizer.json")
    else:
        check_init_tokenizer(Tokenizer.load(cfg.data.tokenizer), ckpt, cfg.model.vocab_size)
    return ckpt


def adopt_init_model(cfg: RunConfig, ckpt: Path) -> ModelConfig:
    """The continued run's model config: the checkpoint's, with the run's own :data:`RUN_MAY_SET` fields
    where the run's model config already has the checkpoint's shape (as ``lmkit pretrain --init`` sets it
    from the flags: :func:`init_model_config`); a model section written for another shape is not read."""
    from lmkit.models.checkpoint import load_model_config

    saved = load_model_config(ckpt)
    run = cfg.model
    fixed = [f.name for f in dataclasses.fields(saved) if f.name not in RUN_MAY_SET]
    if any(getattr(run, k) != getattr(saved, k) for k in fixed):
        return saved
    return dataclasses.replace(saved, **{k: getattr(run, k) for k in RUN_MAY_SET})


def init_model_config(cfg: RunConfig, overrides: Mapping[str, Any]) -> None:
    """``lmkit pretrain --init``: check the flags (:func:`check_init_flags`), then set ``cfg.model`` to the
    checkpoint's with the run's own fields the flags give (dropout), so that the trainer keeps them."""
    from lmkit.models.checkpoint import load_model_config, resolve_checkpoint

    init = str(cfg.train.init)
    check_init_flags(overrides, init)
    saved = load_model_config(resolve_checkpoint(init))
    own = {k: getattr(cfg.model, k) for k in RUN_MAY_SET if f"model.{k}" in overrides}  # parsed by the loader
    cfg.model = dataclasses.replace(saved, **own)
    cfg.model.validate()


def check_init_tokenizer(tokenizer: Any, ckpt: Path, rows: int) -> None:
    """Refuse a tokenizer that is not ``ckpt``'s own (or, for a checkpoint without one, one larger than its
    ``rows`` embedding rows): the weights were trained on the checkpoint's token ids."""
    from lmkit.models.checkpoint import load_tokenizer

    if not (ckpt / "tokenizer.json").is_file():
        if tokenizer.vocab_size > rows:
            raise LmkitError(
                f"{tokenizer.source}: has {tokenizer.vocab_size} tokens but {ckpt} has {rows} embedding rows; "
                "continue pre-training with the tokenizer the checkpoint was trained with"
            )
        return
    own = load_tokenizer(ckpt)
    if tokenizer.sha256 != own.sha256:
        sizes = f"{tokenizer.vocab_size} tokens, the checkpoint's {own.vocab_size}"
        raise LmkitError(
            f"{tokenizer.source}: is not the tokenizer of --init {ckpt} ({sizes}; its embedding rows mean its "
            "own token ids); drop --tokenizer to continue pre-training with the checkpoint's own"
        )
