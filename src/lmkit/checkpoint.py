"""Checkpoint directories: atomic save, safe load, and finding the newest one in a run.

A checkpoint is a folder::

    model.safetensors   weights (safetensors: no code runs on load)
    config.json         {"format", "lmkit_version", "model": ModelConfig fields, ...}
    tokenizer.json      the tokenizer the model was trained with
    meta.json           step, tokens seen, FLOPs, losses, data summary, wall time, hardware
    resolved.yaml       the whole run configuration, after overrides
    train_state/        state.pt: optimizer, grad scaler, RNG states, step (tensors and plain
                        values only, read back with ``torch.load(weights_only=True)``)

It is written to a temporary sibling folder and renamed into place, so a crash (even SIGKILL)
leaves either the old checkpoint set or the new one, never half a checkpoint. Pickles are never
loaded.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from lmkit import __version__
from lmkit.config import ModelConfig, RunConfig, model_config_from_dict, save_yaml, to_dict
from lmkit.errors import LmkitError
from lmkit.files import replace_dir, write_json_atomic  # noqa: F401  (re-exported)

FORMAT = "lmkit-checkpoint/1"
CKPT_PREFIX = "ckpt-"


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
) -> Path:
    """Write a checkpoint folder atomically; returns its path. Refuses to replace a non-checkpoint."""
    final = Path(path)
    if final.exists() and not (final / "config.json").exists():
        raise LmkitError(f"{final}: exists and is not an lmkit checkpoint; refusing to overwrite it")
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.tmp-"))
    try:
        save_file(state if state is not None else model_state(model), str(tmp / "model.safetensors"),
                  metadata={"format": "pt"})
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
        (tmp / "meta.json").write_text(json.dumps(meta or {}, indent=2, default=str) + "\n", encoding="utf-8")
        replace_dir(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def is_checkpoint(path: Path) -> bool:
    return (path / "config.json").is_file() and (path / "meta.json").is_file()


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


def read_config(path: str | Path) -> dict[str, Any]:
    ckpt = resolve_checkpoint(path)
    try:
        cfg = json.loads((ckpt / "config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise LmkitError(f"{ckpt / 'config.json'}: unreadable ({e})") from None
    if cfg.get("format") != FORMAT:
        raise LmkitError(f"{ckpt / 'config.json'}: not an lmkit checkpoint config (format {cfg.get('format')!r})")
    return cfg


def load_model_config(path: str | Path) -> ModelConfig:
    return model_config_from_dict(read_config(path)["model"])


def load_meta(path: str | Path) -> dict[str, Any]:
    ckpt = resolve_checkpoint(path)
    return json.loads((ckpt / "meta.json").read_text(encoding="utf-8"))


def load_state(path: str | Path) -> dict[str, torch.Tensor]:
    ckpt = resolve_checkpoint(path)
    f = ckpt / "model.safetensors"
    if not f.is_file():
        raise LmkitError(f"{ckpt}: model.safetensors is missing")
    try:
        return load_file(str(f))
    except Exception as e:  # safetensors raises its own error types on corrupt files
        raise LmkitError(f"{f}: cannot read weights ({e})") from None


def load_weights_into(model: nn.Module, state: dict[str, torch.Tensor], source: str | Path) -> None:
    """Copy saved tensors into model; tied weights saved once are filled through their alias."""
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = {n for n, _ in model.named_parameters(remove_duplicate=True)}
    real_missing = [m for m in missing if m in tied]
    if real_missing or unexpected:
        raise LmkitError(f"{source}: weights do not match the config "
                         f"(missing {real_missing[:3]}, unexpected {list(unexpected)[:3]})")


def load_model(path: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """A checkpoint's model, on ``device``, in eval mode, ready for inference."""
    from lmkit.models import build_model

    ckpt = resolve_checkpoint(path)
    cfg = read_config(ckpt)
    model_cfg = model_config_from_dict(cfg["model"])
    state = load_state(ckpt)
    quant = cfg.get("quantization")
    if quant:
        from lmkit.quantize import load_quantized

        return load_quantized(model_cfg, state, quant, ckpt).to(device).eval()
    model = build_model(model_cfg)
    load_weights_into(model, state, ckpt)
    return model.to(device).eval()


def load_tokenizer(path: str | Path):  # -> lmkit.tokenizer.Tokenizer
    from lmkit.tokenizer import Tokenizer

    ckpt = resolve_checkpoint(path)
    if not (ckpt / "tokenizer.json").is_file():
        raise LmkitError(f"{ckpt}: tokenizer.json is missing")
    return Tokenizer.load(ckpt / "tokenizer.json")


def load_train_state(path: str | Path) -> dict[str, Any]:
    ckpt = resolve_checkpoint(path)
    f = ckpt / "train_state" / "state.pt"
    if not f.is_file():
        raise LmkitError(f"{ckpt}: no train_state/state.pt, so it cannot be resumed (an exported or quantized checkpoint?)")
    return torch.load(f, map_location="cpu", weights_only=True)


def prune_checkpoints(run_dir: str | Path, keep: int) -> None:
    """Delete all but the newest ``keep`` checkpoints of a run."""
    if keep <= 0:
        return
    for old in list_checkpoints(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
