"""Resuming a pre-training run: what it takes from its run folder, what may change, and whether
its data is still the data it was trained on.

What this module owns:

* :func:`resume_config`: the configuration of ``lmkit pretrain --out RUN --resume``. It starts
  from the settings saved beside RUN's newest checkpoint (``resolved.yaml``), so neither
  ``--config`` nor ``--data`` nor ``--tokenizer`` has to be given again. Whatever is given again
  (the ``--config`` file's values, flags, ``--section.key`` overrides) must equal the saved value,
  or the run is refused with the key named (``model.d_model``). These may change:
  the stop conditions (:data:`STOP_KEYS`) and how a run is watched, kept and placed
  (:data:`PER_INVOCATION_KEYS`); the data settings (:data:`DATA_KEYS`) only with ``--new-data``.
  In a ``--config`` file, an empty ``data.paths``/``data.tokenizer``/``train.init`` means "not
  given" (they are usually flags), ``model.vocab_size`` is not compared (a run sets it to its
  tokenizer's), nor is the model section of a run started with ``train.init`` (its model came
  from that checkpoint). ``train.precision: auto`` (the default) means the precision the run
  settled on when it started, which resolved.yaml records: a resumed run never flips precision
  because a later probe on this machine says otherwise.
* The data fingerprint a checkpoint's ``meta.json`` records (``"data_fingerprint"``): the
  tokenizer's sha256, the source files (resolved path and size in bytes) and the token count of
  every training and held-out shard. On resume the sources are compared before anything is
  packed, and the tokenizer and the shards after; a difference is refused with what differs,
  unless ``--new-data`` (then the run continues on the new data and ``meta.json``'s
  ``"data_changes"`` records the switch). The tokenizer can never change: the model's
  embeddings are tied to it.
* The batch layout (:func:`check_batch_layout`): a resumed run keeps its global batch
  (``train.batch_size`` = micro-batch × accumulation × processes), so that it trains on the
  windows the uninterrupted run would have; another one is refused naming both unless
  ``--new-batch`` (then meta.json's ``batch_changes`` records the switch). The number of processes
  and the micro-batch may change (the accumulation is recomputed): a run in the ``global`` data
  order (``lmkit.train.batches``) continues exactly on another world size. A run in the older
  ``per-rank`` order resumes only on the world size and micro-batch it was trained with.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from lmkit.config import DataConfig, RunConfig, load_run_config
from lmkit.config_io import ConfigError, apply_overrides, from_dict, load_yaml, to_dict
from lmkit.errors import LmkitError

if TYPE_CHECKING:
    from lmkit.data.shards import TokenShards
    from lmkit.tokenizer import Tokenizer

STOP_KEYS: tuple[str, ...] = (
    "train.max_steps",
    "train.max_tokens",
    "train.max_time",
    "train.max_flops",
    "train.tokens_per_param",
)
# How the run is watched, kept and placed; none changes what the model learns from which batch.
PER_INVOCATION_KEYS: tuple[str, ...] = (
    "train.log_every",
    "train.eval_every",
    "train.eval_batches",
    "train.ckpt_every",
    "train.keep_checkpoints",
    "train.tensorboard",
    "train.device",
    "train.memory",
    "data.workers",
    "out",
)
MAY_CHANGE = frozenset(STOP_KEYS + PER_INVOCATION_KEYS)
DATA_KEYS = frozenset(
    {
        "data.paths",
        "data.text_field",
        "data.lenient",
        "data.tokenizer",
        "data.vocab_size",
        "data.shards",
        "data.val_fraction",
    }
)
EMPTY_MEANS_UNSET = frozenset({"data.paths", "data.tokenizer", "train.init"})
# How a step's global batch is split: checked against the saved run by check_batch_layout, once
# the number of processes is known.
BATCH_KEYS = frozenset({"train.batch_size", "train.micro_batch_size"})
_PATH_KEYS = frozenset({"data.tokenizer", "data.shards", "train.init"})


# --------------------------------------------------------------------------- settings


def newest_checkpoint(out: Path) -> Path:
    """The checkpoint a ``--resume`` of run folder ``out`` continues from."""
    from lmkit.models.checkpoint import list_checkpoints

    if not out.is_dir():
        raise LmkitError(f"{out}: --resume given but there is no such run folder")
    found = list_checkpoints(out)
    if not found:
        raise LmkitError(f"{out}: --resume given but there is no checkpoint to resume from")
    return found[-1]


def saved_run_config(ckpt: Path) -> RunConfig:
    """The settings a checkpoint was trained with (its ``resolved.yaml``, checked against meta.json)."""
    from lmkit.models.checkpoint import verify_file

    path = ckpt / "resolved.yaml"
    if not path.is_file():
        raise LmkitError(f"{ckpt}: no resolved.yaml, so the settings of this run are unknown and it cannot be resumed")
    verify_file(ckpt, "resolved.yaml")
    return load_run_config(path)


def dotted_keys(cfg: RunConfig) -> list[str]:
    """Every setting of a run configuration as ``section.key`` (and ``out``)."""
    keys: list[str] = []
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            keys.extend(f"{f.name}.{g.name}" for g in dataclasses.fields(value))
        else:
            keys.append(f.name)
    return keys


def _get(cfg: RunConfig, key: str) -> Any:
    obj: Any = cfg
    for part in key.split("."):
        obj = getattr(obj, part)
    return obj


def _set(cfg: RunConfig, key: str, value: Any) -> None:
    *parents, last = key.split(".")
    obj: Any = cfg
    for part in parents:
        obj = getattr(obj, part)
    setattr(obj, last, value)


def _flatten(raw: dict[str, Any]) -> dict[str, Any]:
    """``{"train": {"lr": 1}}`` -> ``{"train.lr": 1}`` (sections one level deep, as configs are)."""
    flat: dict[str, Any] = {}
    for key, value in raw.items():
        if isinstance(value, dict):
            flat.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            flat[str(key)] = value
    return flat


def _unset(value: Any) -> bool:
    return value is None or value == "" or value == []


def _same(key: str, saved: Any, given: Any) -> bool:
    """Equal settings; paths are compared as the files they name (``a.txt`` == ``./a.txt``)."""
    if key == "data.paths" and isinstance(saved, list) and isinstance(given, list):
        return [Path(p).expanduser().resolve() for p in saved] == [Path(p).expanduser().resolve() for p in given]
    if key in _PATH_KEYS and saved is not None and given is not None:
        return Path(saved).expanduser().resolve() == Path(given).expanduser().resolve()
    return saved == given


def check_agrees(saved: RunConfig, given: RunConfig, keys: Iterable[str], new_data: bool, source: Path) -> None:
    """Refuse the first of ``keys`` whose value in ``given`` is not the saved one and may not change."""
    for key in keys:
        if key in MAY_CHANGE or key in BATCH_KEYS or (new_data and key in DATA_KEYS):
            continue
        a, b = _get(saved, key), _get(given, key)
        if _same(key, a, b):
            continue
        if key in DATA_KEYS:
            hint = "pass --new-data to continue the run on other data"
        else:
            hint = (
                "only the stop conditions and the per-invocation settings listed in `lmkit pretrain --help` "
                "may change; train a new run (another --out) to change it"
            )
        raise LmkitError(f"{source}: {key} is {a!r} in the run being resumed but {b!r} was given; {hint}")


def resume_config(
    out: Path, config_path: str | Path | None, overrides: dict[str, Any], new_data: bool = False
) -> RunConfig:
    """The configuration that continues run folder ``out``: its saved one, plus what may change.

    ``config_path`` (optional) and ``overrides`` (dotted keys from flags) are what the user gave
    again; see the module docstring for what must agree.
    """
    ckpt = newest_checkpoint(out)
    saved = saved_run_config(ckpt)
    given: dict[str, Any] = {}
    if config_path:
        for key, value in _flatten(load_yaml(config_path)).items():
            if key in EMPTY_MEANS_UNSET and _unset(value):
                continue
            if key == "model.vocab_size" or (saved.train.init and key.startswith("model.")):
                continue  # derived: from the run's tokenizer, or from train.init's checkpoint
            given[key] = value
    given.update(overrides)
    if given.get("train.precision") == "auto":
        del given["train.precision"]  # the precision the run settled on (fill_unset)
    base = yaml.safe_load(yaml.safe_dump(to_dict(saved)))
    try:
        merged = from_dict(RunConfig, apply_overrides(base, given))
    except ConfigError as e:
        raise ConfigError(f"{config_path}: {e}" if config_path else str(e)) from None
    check_agrees(saved, merged, [k for k in given if k in set(dotted_keys(saved))], new_data, ckpt / "resolved.yaml")
    merged.out = str(out)
    merged.validate()
    return merged


def fill_unset(cfg: RunConfig, saved: RunConfig) -> None:
    """Take the saved value of each setting in :data:`EMPTY_MEANS_UNSET` that ``cfg`` leaves empty,
    and the settled precision where ``cfg`` says ``auto``."""
    for key in EMPTY_MEANS_UNSET:
        if _unset(_get(cfg, key)):
            _set(cfg, key, _get(saved, key))
    if cfg.train.precision == "auto":
        cfg.train.precision = saved.train.precision


# --------------------------------------------------------------------------- data fingerprint


def source_files(data_cfg: DataConfig) -> list[dict[str, Any]]:
    """The files ``data.paths`` names (folders walked as the readers walk them): path and size."""
    from lmkit.data.read import list_files

    return [{"path": str(f.resolve()), "bytes": f.stat().st_size} for f in list_files(data_cfg.paths)]


def data_fingerprint(
    data_cfg: DataConfig, tokenizer: Tokenizer, train: TokenShards, val: TokenShards
) -> dict[str, Any]:
    """What a checkpoint records of the data it was trained on (meta.json ``"data_fingerprint"``)."""
    return {
        "tokenizer_sha256": tokenizer.sha256,
        "sources": source_files(data_cfg),
        "train_tokens": int(train.num_tokens),
        "val_tokens": int(val.num_tokens),
        "train_shard_tokens": [int(n) for n in train.shard_sizes],
        "val_shard_tokens": [int(n) for n in val.shard_sizes],
    }


def recorded_fingerprint(meta: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint's data fingerprint; for one saved by older lmkit, the parts its meta.json has."""
    fp = meta.get("data_fingerprint")
    if isinstance(fp, dict):
        return fp
    data = meta["data"] if isinstance(meta.get("data"), dict) else {}
    old = {
        "tokenizer_sha256": meta.get("tokenizer_sha256"),
        "train_tokens": data.get("train_tokens"),
        "val_tokens": data.get("val_tokens"),
    }
    return {k: v for k, v in old.items() if v is not None}


def sources_difference(recorded: dict[str, Any], current: list[dict[str, Any]]) -> str | None:
    """The first source file that is new, gone or of another size, in words; None if all agree."""
    if not isinstance(recorded.get("sources"), list):
        return None
    before = {s["path"]: s["bytes"] for s in recorded["sources"]}
    now = {s["path"]: s["bytes"] for s in current}
    for path in sorted(before.keys() | now.keys()):
        if path not in now:
            return f"{path} ({before[path]:,} bytes) was trained on but is not in the data given now"
        if path not in before:
            return f"{path} ({now[path]:,} bytes) is in the data given now but the run was not trained on it"
        if before[path] != now[path]:
            return f"{path} is {now[path]:,} bytes now but was {before[path]:,} bytes when the run was trained on it"
    return None


def tokens_difference(recorded: dict[str, Any], current: dict[str, Any]) -> str | None:
    """The first shard token count that differs, in words; None if every recorded count agrees."""
    for key, what in (("train_tokens", "training"), ("val_tokens", "held-out")):
        if key in recorded and recorded[key] != current[key]:
            return f"the {what} shards hold {current[key]:,} tokens but held {recorded[key]:,} when the run was trained"
    for key, what in (("train_shard_tokens", "training"), ("val_shard_tokens", "held-out")):
        if key in recorded and recorded[key] != current[key]:
            return (
                f"the {what} shards' token counts {current[key][:4]} differ from the run's {recorded[key][:4]} "
                "(same total, other documents)"
            )
    return None


def refuse_data_change(out: Path, ckpt: Path, what: str) -> LmkitError:
    return LmkitError(
        f"{out}: --resume: the training data differs from the data {ckpt.name} was trained on: "
        f"{what}; pass --new-data to continue the run on the new data"
    )


# --------------------------------------------------------------------------- the checks a resumed run makes


def _procs(n: int) -> str:
    return f"{n} process{'es' if n != 1 else ''}"


def check_batch_layout(
    ckpt: Path, meta: dict[str, Any], saved: RunConfig, cfg: RunConfig, world: int, new_batch: bool
) -> None:
    """Refuse to resume ``ckpt`` (``meta``: its meta.json, ``saved``: its settings) as ``cfg`` says
    on ``world`` processes when that would train on other batches: another global batch (unless
    ``new_batch``), or, for a run in the ``per-rank`` data order, another world size or micro-batch."""
    from lmkit.train.batches import recorded_order

    before, now = saved.train.batch_size, cfg.train.batch_size
    if before != now and not new_batch:
        raise LmkitError(
            f"{ckpt}: train.batch_size (the global batch: micro-batch x accumulation x processes) is {before} "
            f"in the run being resumed but {now} was given; a resumed run keeps its global batch so that it "
            "trains on the batches the run would have (pass --new-batch to change it)"
        )
    if recorded_order(meta) == "global":
        return
    hardware = meta.get("hardware")
    was = hardware.get("world_size") if isinstance(hardware, dict) else None
    if isinstance(was, int) and was != world:
        how = "without torchrun" if was == 1 else f"under torchrun --nproc_per_node {was}"
        raise LmkitError(
            f"{ckpt}: was trained on {_procs(was)} but this resume runs on {_procs(world)}; its checkpoint "
            f"predates lmkit's process-independent data order, so resume it on {_procs(was)} ({how}): "
            "on another number it would train on other batches"
        )
    if saved.train.micro_batch_size != cfg.train.micro_batch_size or before != now:
        raise LmkitError(
            f"{ckpt}: predates lmkit's process-independent data order, so its train.batch_size and "
            f"train.micro_batch_size must stay {before} and {saved.train.micro_batch_size}"
        )


def agree_with_saved_run(
    cfg: RunConfig, ckpt: Path, out: Path, new_data: bool, main: bool = True, world: int = 1, new_batch: bool = False
) -> tuple[dict[str, Any], str | None]:
    """On resume, before anything is packed: settings left empty in ``cfg`` come from ``ckpt``'s
    resolved.yaml, the others must agree with it, the batch must be laid out as the saved run's on
    ``world`` processes allows (:func:`check_batch_layout`; ``new_batch``: the global batch may
    change), and the source files must be the ones trained on unless ``new_data``;
    with ``new_data`` the run's own tokenizer is pinned (the ``main`` process writes it to ``out``),
    so none is trained anew. Returns (``ckpt``'s meta, how the sources differ)."""
    from lmkit.models.checkpoint import load_meta, load_tokenizer

    saved = saved_run_config(ckpt)
    fill_unset(cfg, saved)
    keys = [k for k in dotted_keys(cfg) if k != "model.vocab_size"]  # checked with the model
    check_agrees(saved, cfg, keys, new_data, ckpt / "resolved.yaml")
    prev_meta = load_meta(ckpt)
    check_batch_layout(ckpt, prev_meta, saved, cfg, world, new_batch)
    change = sources_difference(recorded_fingerprint(prev_meta), source_files(cfg.data))
    if change and not new_data:
        raise refuse_data_change(out, ckpt, change)
    if new_data and cfg.data.tokenizer is None:
        run_tok = load_tokenizer(ckpt)
        path = out / "tokenizer.json"
        if main and (not path.is_file() or path.read_text(encoding="utf-8") != run_tok.to_str()):
            run_tok.save(out)
        cfg.data.tokenizer = str(path)
    return prev_meta, change


def check_resumed_data(
    out: Path,
    ckpt: Path,
    prev_meta: dict[str, Any],
    source_change: str | None,
    tokenizer: Tokenizer,
    fingerprint: dict[str, Any],
    new_data: bool,
) -> list[dict[str, Any]]:
    """On resume, after packing: the tokenizer is the run's, and the shards hold what it was trained
    on (unless ``new_data``). Returns the run's record of data switches (meta.json's
    ``data_changes``), with this one added when the data changed."""
    recorded = recorded_fingerprint(prev_meta)
    want = recorded.get("tokenizer_sha256")
    if want and want != tokenizer.sha256:
        raise LmkitError(
            f"{tokenizer.source}: tokenizer (sha256 {tokenizer.sha256[:12]}) is not the one "
            f"{ckpt} was trained with (sha256 {str(want)[:12]}); a resumed run keeps its tokenizer"
        )
    what = source_change or tokens_difference(recorded, fingerprint)
    if what and not new_data:
        raise refuse_data_change(out, ckpt, what)
    changes = list(prev_meta.get("data_changes") or [])
    if what:
        changes.append(
            {"step": prev_meta.get("step"), "from_checkpoint": ckpt.name, "change": what, "previous": recorded}
        )
    return changes


__all__ = [
    "BATCH_KEYS",
    "DATA_KEYS",
    "MAY_CHANGE",
    "PER_INVOCATION_KEYS",
    "STOP_KEYS",
    "agree_with_saved_run",
    "check_agrees",
    "check_resumed_data",
    "check_batch_layout",
    "data_fingerprint",
    "dotted_keys",
    "fill_unset",
    "newest_checkpoint",
    "recorded_fingerprint",
    "refuse_data_change",
    "resume_config",
    "saved_run_config",
    "source_files",
    "sources_difference",
    "tokens_difference",
]
