"""Checkpoint directories: atomic save, safe load, and finding the newest one in a run.

A checkpoint is a folder::

    model.safetensors   weights (safetensors: no code runs on load)
    config.json         {"format", "lmkit_version", "model": ModelConfig fields, ...}
    tokenizer.json      the tokenizer the model was trained with (tokenizer_roles.json: its roles, if not lmkit's)
    meta.json           step, tokens seen, FLOPs, losses, data summary, wall time, hardware
    resolved.yaml       the whole run configuration, after overrides
    train_state/        state.pt: optimizer, grad scaler, RNG states, step (tensors and plain
                        values only, read back with ``torch.load(weights_only=True)``)

A multi-process run's checkpoint holds ``sharded/`` (model and optimizer, each rank's slices) in place of
model.safetensors and of the optimizer in state.pt: ``lmkit.models.sharded_checkpoint``; loaded here consolidated.

It is written to a temporary sibling folder and renamed into place, so a crash (even SIGKILL)
leaves either the old checkpoint set or the new one, never half a checkpoint. Pickles are never
loaded. meta.json records the SHA-256 of every other file (``"sha256"``: {path: digest}); the
loaders check the file they read against it and refuse one that changed since it was saved
(``verify=False``, the commands' ``--no-verify``, skips the check; checkpoints from older lmkit
have no checksums and load unchecked). Checked or not, weights are never read nor a model built
before the shapes in model.safetensors' header are found to be the ones config.json implies
(:func:`check_weights`: a model built on PyTorch's meta device gives them without taking memory), so
a config that does not describe its weights is one line naming the first tensor that disagrees. The same record says which files a save wrote: a command's
``--overwrite`` replaces a checkpoint folder only when it holds nothing else (:func:`checkpoint_files`;
an unedited ``README.md`` card from ``lmkit card`` counts as lmkit's). A quantized checkpoint (a
``quantization`` record in config.json) is rebuilt in the format ``lmkit.models.int8`` defines.
:func:`load_model_and_train` reads the model (and train section) a run YAML or a checkpoint folder
describes, without weights, for commands that plan rather than load.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import pickle
import re
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from lmkit import __version__
from lmkit.config import ModelConfig, RunConfig, TrainConfig, load_run_config, model_config_from_dict, save_yaml
from lmkit.config_io import apply_overrides, to_dict
from lmkit.errors import LmkitError
from lmkit.files import is_stamped, replace_dir, sha256_file, write_json_atomic
from lmkit.models import LanguageModel
from lmkit.models.sharded_checkpoint import STATE_FORMAT_KEY, consolidated_state, is_sharded, sharded_shapes

FORMAT = "lmkit-checkpoint/1"
CKPT_PREFIX = "ckpt-"
# meta.json key: {relative file path: hex SHA-256} of every other file of the checkpoint, taken at
# save and checked by the loaders (``verify=False`` / ``--no-verify`` skips it). Checkpoints from
# older lmkit lack it and load unchecked.
CHECKSUMS_KEY = "sha256"
# Off inside ``checksums_unverified()`` (what the commands' --no-verify sets for the whole command).
_VERIFY: contextvars.ContextVar[bool] = contextvars.ContextVar("lmkit_verify_checksums", default=True)


def model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """State dict without duplicates of tied tensors (safetensors refuses shared storage)."""
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for name, t in model.state_dict().items():
        key = t.data_ptr() if t.numel() else id(t)
        if key in seen:
            continue
        seen.add(key)
        out[name] = t.detach().contiguous().cpu()
    return out


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    model_cfg: ModelConfig,
    tokenizer: Any | None = None,
    meta: dict[str, Any] | None = None,
    run_cfg: RunConfig | None = None,
    train_state: dict[str, Any] | None = None,
    extra_config: dict[str, Any] | None = None,
    state: dict[str, torch.Tensor] | None = None,
    write_weights: Callable[[Path], dict[str, str]] | None = None,
) -> Path:
    """Write a checkpoint folder atomically; returns its path. Refuses to replace a non-checkpoint.
    ``write_weights(tmp)`` (the sharded format) writes the weights instead, returning their files' SHA-256."""
    final = Path(path)
    if final.exists() and not (final / "config.json").exists():
        raise LmkitError(f"{final}: exists and is not an lmkit checkpoint; refusing to overwrite it")
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.tmp-"))
    try:
        known = write_weights(tmp) if write_weights is not None else {}  # the sharded format's files
        if write_weights is None:
            weights = state if state is not None else model_state(model)
            save_file(weights, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        config = {"format": FORMAT, "lmkit_version": __version__, "model": to_dict(model_cfg)}
        config.update(extra_config or {})
        (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        if tokenizer is not None:
            tokenizer.save(tmp / "tokenizer.json")
        if run_cfg is not None:
            save_yaml(run_cfg, tmp / "resolved.yaml")
        if train_state is not None:
            (tmp / "train_state").mkdir()
            torch.save(train_state, tmp / "train_state" / "state.pt")
        meta = {**(meta or {}), STATE_FORMAT_KEY: "dcp" if write_weights else "safetensors"}  # not a copied one's
        meta[CHECKSUMS_KEY] = file_checksums(tmp, known)  # every file but meta.json itself
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2, default=str) + "\n", encoding="utf-8")
        replace_dir(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def is_checkpoint(path: Path) -> bool:
    return (path / "config.json").is_file() and (path / "meta.json").is_file()


def checkpoint_files(folder: Path) -> list[str] | None:
    """What a save wrote into checkpoint ``folder`` (for ``lmkit.files.Manifest``, what ``--overwrite``
    may replace): meta.json and every file its checksums name, plus a ``README.md`` model card lmkit
    wrote there and nobody has edited since (``lmkit.files.is_stamped``). None for a folder that is
    not a checkpoint, or one saved by an older lmkit without checksums (lmkit cannot tell its files)."""
    if not is_checkpoint(folder):
        return None
    try:
        sums = _recorded_checksums(folder, "its files")
    except LmkitError:
        return None
    if sums is None:
        return None
    files = ["meta.json", *sums]
    if is_stamped(folder / "README.md"):
        files.append("README.md")
    return files


def file_checksums(folder: Path, known: Mapping[str, str] | None = None) -> dict[str, str]:
    """SHA-256 of every file under ``folder`` except its meta.json, by '/'-separated relative path
    (``known``: the digests of files whose writers already took them, e.g. each rank of its shards)."""
    return {
        f.relative_to(folder).as_posix(): (known or {}).get(f.relative_to(folder).as_posix()) or sha256_file(f)
        for f in sorted(folder.rglob("*"))
        if f.is_file() and f.relative_to(folder).as_posix() != "meta.json"
    }


def record_checksums(folder: str | Path) -> dict[str, str]:
    """Record the checksums of a checkpoint's files in its meta.json again (after adding a file to it)."""
    ckpt = Path(folder)
    meta = json.loads((ckpt / "meta.json").read_text(encoding="utf-8"))
    meta[CHECKSUMS_KEY] = file_checksums(ckpt)
    write_json_atomic(ckpt / "meta.json", meta)
    return meta[CHECKSUMS_KEY]


@contextlib.contextmanager
def checksums_unverified(skip: bool = True) -> Iterator[None]:
    """Within this block (with ``skip``) the loaders do not check files against meta.json."""
    token = _VERIFY.set(not skip and _VERIFY.get())
    try:
        yield
    finally:
        _VERIFY.reset(token)


def _recorded_checksums(ckpt: Path, name: str) -> dict[str, Any] | None:
    """meta.json's {file: sha256}, or None for a checkpoint saved without checksums (older lmkit)."""
    meta_path = ckpt / "meta.json"
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise LmkitError(
            f"{meta_path}: unreadable, so {name} cannot be checked against it ({e}); --no-verify loads it unchecked"
        ) from None
    sums = meta.get(CHECKSUMS_KEY) if isinstance(meta, dict) else None
    return sums if isinstance(sums, dict) else None


def _mismatch(ckpt: Path, name: str, actual: str, expected: Any) -> LmkitError:
    return LmkitError(
        f"{ckpt / name}: checksum mismatch (sha256 {actual[:12]}..., meta.json recorded "
        f"{str(expected)[:12]}...): the file changed since it was saved; restore it, or pass "
        "--no-verify to load it anyway"
    )


def verify_file(ckpt: Path, name: str) -> None:
    """Refuse ``ckpt/name`` unless its SHA-256 is the one meta.json recorded at save.

    A checkpoint written by an older lmkit (no checksums in meta.json) is not checked, nor is
    anything inside ``checksums_unverified()``.
    """
    if not _VERIFY.get():
        return
    sums = _recorded_checksums(ckpt, name)
    if sums is None:
        return
    expected = sums.get(name)
    if expected is None:
        raise LmkitError(
            f"{ckpt / name}: not among the files meta.json recorded when the checkpoint was saved "
            "(added since?); --no-verify loads it unchecked"
        )
    actual = sha256_file(ckpt / name)
    if actual != expected:
        raise _mismatch(ckpt, name, actual, expected)


def verify_digests(ckpt: Path, digests: dict[str, str]) -> None:
    """Check SHA-256 digests already computed for files of ``ckpt`` (e.g. by ``hub push``) against
    meta.json. Files it did not record (a README.md card written later) are not refused here."""
    if not _VERIFY.get():
        return
    sums = _recorded_checksums(ckpt, "the checkpoint's files")
    for name, actual in sorted(digests.items()):
        if sums is not None and name in sums and sums[name] != actual:
            raise _mismatch(ckpt, name, actual, sums[name])


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete checkpoints of a run folder, oldest first (by step number in the name)."""
    run = Path(run_dir)
    found = [p for p in run.glob(f"{CKPT_PREFIX}*") if p.is_dir() and is_checkpoint(p)]
    return sorted(found, key=lambda p: int(re.sub(r"\D", "", p.name) or 0))


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint folder itself, or the newest checkpoint of a run folder."""
    p = Path(path)
    if not p.exists():
        raise LmkitError(f"{p}: no such checkpoint or run folder")
    if is_checkpoint(p):
        return p
    ckpts = list_checkpoints(p)
    if not ckpts:
        raise LmkitError(f"{p}: not a checkpoint (no config.json + meta.json) and holds no {CKPT_PREFIX}* checkpoints")
    return ckpts[-1]


def read_config(path: str | Path, verify: bool = True) -> dict[str, Any]:
    ckpt = resolve_checkpoint(path)
    if verify and (ckpt / "config.json").is_file():
        verify_file(ckpt, "config.json")
    try:
        cfg = json.loads((ckpt / "config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise LmkitError(f"{ckpt / 'config.json'}: unreadable ({e})") from None
    if not isinstance(cfg, dict) or cfg.get("format") != FORMAT:
        fmt = cfg.get("format") if isinstance(cfg, dict) else None
        raise LmkitError(f"{ckpt / 'config.json'}: not an lmkit checkpoint config (format {fmt!r})")
    if not isinstance(cfg.get("model"), dict):
        raise LmkitError(
            f'{ckpt / "config.json"}: no "model" section (the architecture: family, sizes); '
            "the checkpoint is incomplete or was edited"
        )
    try:
        model_config_from_dict(cfg["model"])
    except LmkitError as e:
        raise LmkitError(f"{ckpt / 'config.json'}: {e}") from None
    return cfg


def load_model_config(path: str | Path, verify: bool = True) -> ModelConfig:
    return model_config_from_dict(read_config(path, verify=verify)["model"])


def load_meta(path: str | Path) -> dict[str, Any]:
    ckpt = resolve_checkpoint(path)
    return json.loads((ckpt / "meta.json").read_text(encoding="utf-8"))


def load_state(path: str | Path, verify: bool = True) -> dict[str, torch.Tensor]:
    ckpt = resolve_checkpoint(path)
    if is_sharded(ckpt):  # a multi-process run's checkpoint: its shards consolidated in this process
        check_weights(ckpt, verify=verify)
        return consolidated_state(ckpt, verify_file if verify else None)
    f = ckpt / "model.safetensors"
    if not f.is_file():
        raise LmkitError(f"{ckpt}: model.safetensors is missing")
    if verify:
        verify_file(ckpt, "model.safetensors")
    check_weights(ckpt, verify=verify)  # before a single tensor is read
    try:
        return load_file(str(f))
    except Exception as e:  # safetensors raises its own error types on corrupt files
        raise LmkitError(f"{f}: cannot read weights ({e})") from None


Shapes = dict[str, tuple[int, ...]]


def weight_shapes(path: str | Path) -> Shapes:
    """Every tensor's shape in safetensors file ``path``, from its header alone: no tensor is read."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except Exception as e:  # safetensors raises its own error types on corrupt files
        raise LmkitError(f"{path}: cannot read weights ({e})") from None


def _state_shapes(model: nn.Module) -> tuple[Shapes, set[str]]:
    """(shape of every tensor in the model's state dict, the names a weights file must provide:
    parameters, each tied one under its first name; buffers are recomputed when absent)."""
    return (
        {n: tuple(t.shape) for n, t in model.state_dict().items()},
        {n for n, _ in model.named_parameters(remove_duplicate=True)},
    )


def model_shapes(
    model_cfg: ModelConfig, quant: dict[str, Any] | None = None, names: Iterable[str] = (), source: str | Path = ""
) -> tuple[Shapes, set[str]]:
    """What weights the model of ``model_cfg`` takes (as :func:`_state_shapes`), from the model built on
    PyTorch's meta device: no memory is taken, however large the config says the model is. ``quant``
    (a checkpoint's ``quantization`` record) gives its quantized layout, which needs the file's tensor
    ``names``."""
    from lmkit.models import build_model
    from lmkit.models.int8 import prepare_quantized

    try:
        with torch.device("meta"):
            model = build_model(model_cfg)
            if quant:
                model = prepare_quantized(model, cast(dict[str, torch.Tensor], dict.fromkeys(names)), quant, source)
    except RuntimeError as e:  # a tensor of more than 2**63 bytes: even its size cannot be computed
        raise LmkitError(
            f"{source}: the model config.json describes is too large to exist "
            f"({str(e).splitlines()[0][:200]}); check its sizes (d_model, d_ff, vocab_size)"
        ) from None
    return _state_shapes(model)


def check_shapes(expected: Shapes, required: set[str], found: Mapping[str, Sequence[int]], source: str | Path) -> None:
    """Refuse weights (``found``: name -> shape) that do not fit a model (``expected``, ``required``:
    see :func:`_state_shapes`): an LmkitError naming the first tensor (in the model's order) of another
    shape, else the tensors missing or without a place."""
    for name, need in expected.items():
        shape = found.get(name)
        if shape is not None and tuple(shape) != need:
            raise LmkitError(
                f"{source}: config.json does not match model.safetensors: {name} has shape "
                f"{tuple(shape)} in the weights, the config needs {need}"
            )
    missing = [n for n in expected if n in required and n not in found]
    unexpected = [n for n in found if n not in expected]
    if missing or unexpected:
        raise LmkitError(
            f"{source}: weights do not match the config (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )


def check_weights(path: str | Path, verify: bool = True) -> None:
    """Refuse a checkpoint whose model.safetensors does not fit its config.json, before any tensor is
    read or any model built: the shapes come from the file's header and a meta-device model."""
    ckpt = resolve_checkpoint(path)
    cfg = read_config(ckpt, verify=verify)
    shapes = sharded_shapes(ckpt) if is_sharded(ckpt) else weight_shapes(ckpt / "model.safetensors")
    expected, required = model_shapes(model_config_from_dict(cfg["model"]), cfg.get("quantization"), shapes, ckpt)
    check_shapes(expected, required, shapes, ckpt)


def load_weights_into(model: nn.Module, state: dict[str, torch.Tensor], source: str | Path) -> None:
    """Copy saved tensors into model; tied weights saved once are filled through their alias.

    Weights of another shape than the model's (a config.json that does not describe them) are
    an LmkitError naming the first such tensor (:func:`check_shapes`).
    """
    check_shapes(*_state_shapes(model), {n: tuple(t.shape) for n, t in state.items()}, source)
    model.load_state_dict(state, strict=False)


def load_model(path: str | Path, device: str | torch.device = "cpu", verify: bool = True) -> LanguageModel:
    """A checkpoint's model, on ``device``, in eval mode, ready for inference.

    ``verify`` checks config.json and model.safetensors against the SHA-256 in meta.json first.
    """
    from lmkit.models import build_model

    ckpt = resolve_checkpoint(path)
    cfg = read_config(ckpt, verify=verify)
    model_cfg = model_config_from_dict(cfg["model"])
    state = load_state(ckpt, verify=verify)
    quant = cfg.get("quantization")
    if quant:
        return load_quantized(model_cfg, state, quant, ckpt).to(device).eval()
    model = build_model(model_cfg)
    load_weights_into(model, state, ckpt)
    return model.to(device).eval()


def load_quantized(
    model_cfg: ModelConfig, state: dict[str, torch.Tensor], quant: dict[str, Any], source: str | Path
) -> LanguageModel:
    """Build the model a quantized checkpoint describes (``lmkit.models.int8``) and fill it with its weights."""
    from lmkit.models import build_model
    from lmkit.models.int8 import prepare_quantized

    model = prepare_quantized(build_model(model_cfg), state, quant, source)
    load_weights_into(model, state, source)
    return model


def load_tokenizer(path: str | Path, verify: bool = True):  # -> lmkit.tokenizer.Tokenizer
    from lmkit.tokenizer import Tokenizer

    ckpt = resolve_checkpoint(path)
    if not (ckpt / "tokenizer.json").is_file():
        raise LmkitError(f"{ckpt}: tokenizer.json is missing")
    for name in [n for n in ("tokenizer.json", "tokenizer_roles.json") if verify and (ckpt / n).is_file()]:
        verify_file(ckpt, name)  # and the roles beside it (lmkit.token_roles), when there are any
    return Tokenizer.load(ckpt / "tokenizer.json")


def load_train_state(path: str | Path, verify: bool = True) -> dict[str, Any]:
    ckpt = resolve_checkpoint(path)
    f = ckpt / "train_state" / "state.pt"
    if not f.is_file():
        raise LmkitError(
            f"{ckpt}: no train_state/state.pt, so it cannot be resumed (an exported or quantized checkpoint?)"
        )
    if verify:
        verify_file(ckpt, "train_state/state.pt")
    try:
        with warnings.catch_warnings():  # torch warns about unusual pickle protocols before refusing them
            warnings.simplefilter("ignore")
            state = torch.load(f, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise LmkitError(
            f"{f}: holds Python objects other than tensors and plain values (refused unread: "
            "lmkit never runs a pickle); this checkpoint cannot be resumed"
        ) from None
    except Exception:  # a truncated zip archive, random bytes, ...: torch's own error types
        raise LmkitError(
            f"{f}: unreadable (truncated, or not a training state lmkit wrote); this checkpoint cannot be resumed"
        ) from None
    missing = [k for k in ("optimizer", "rng_cpu", "step") if not isinstance(state, dict) or k not in state]
    if missing:
        raise LmkitError(
            f"{f}: not a training state lmkit wrote (no {', '.join(missing)}); this checkpoint cannot be resumed"
        )
    return state


def load_model_and_train(
    path: str | Path, overrides: dict[str, Any] | None = None
) -> tuple[ModelConfig, TrainConfig | None]:
    """The model (and train section, when there is one) of a run YAML (model/train/data sections),
    a checkpoint folder or its config.json; a folder's resolved.yaml wins over its bare config.json."""
    p = Path(path)
    overrides = dict(overrides or {})
    if p.is_dir() or p.suffix == ".json":
        cfg_file = p / "config.json" if p.is_dir() else p
        if not cfg_file.is_file():
            raise LmkitError(f"{p}: no config.json (give a run YAML, a checkpoint folder or its config.json)")
        try:
            raw = json.loads(cfg_file.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise LmkitError(f"{cfg_file}: not readable JSON ({e})") from None
        model_raw = raw.get("model", raw) if isinstance(raw, dict) else None
        if not isinstance(model_raw, dict):
            raise LmkitError(f"{cfg_file}: expected a JSON object with a model section")
        resolved = cfg_file.parent / "resolved.yaml"
        if resolved.is_file():
            run = load_run_config(resolved, overrides)
            return run.model, run.train
        model_over = {k.removeprefix("model."): v for k, v in overrides.items() if k.startswith("model.")}
        if len(model_over) != len(overrides):
            raise LmkitError(f"{cfg_file}: only model.* overrides apply to a bare config.json")
        try:
            merged = apply_overrides({"model": model_raw}, {f"model.{k}": v for k, v in model_over.items()})
            return model_config_from_dict(merged["model"]), None
        except LmkitError as e:
            raise LmkitError(f"{cfg_file}: {e}") from None
    run = load_run_config(p, overrides)
    return run.model, run.train
