"""Typed configuration: what a model is (ModelConfig), how it is trained (TrainConfig) and on what
data (DataConfig).

A run's configuration is YAML with three sections (``model``, ``train``, ``data``) read into
these dataclasses; dotted overrides from the command line (``--train.lr 3e-4``) are applied on
top, and the resolved result is saved as ``resolved.yaml`` beside every checkpoint so that a run
can always be reproduced. Unknown keys and badly typed values are errors that name the key.
"""

from __future__ import annotations

import dataclasses
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import yaml

from lmkit.errors import LmkitError

Family = Literal["encoder", "decoder", "encdec"]
PosEncoding = Literal["rotary", "learned", "sinusoidal"]
Precision = Literal["fp32", "bf16", "fp16"]

OBJECTIVE_OF_FAMILY: dict[str, str] = {"encoder": "mlm", "decoder": "clm", "encdec": "span"}


class ConfigError(LmkitError, ValueError):
    """A configuration value or key is wrong; the message names it."""


@dataclass
class ModelConfig:
    """Architecture of one transformer. Sizes follow the usual names (d_model, n_layers, ...)."""

    family: Family = "decoder"
    vocab_size: int = 8192
    d_model: int = 256
    n_layers: int = 4
    n_heads: int = 4
    d_ff: int | None = None  # feed-forward width; None -> family default (see ffn_width)
    max_seq_len: int = 256  # the context window in tokens
    pos_encoding: PosEncoding = "rotary"
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    dropout: float = 0.0
    tie_embeddings: bool = True
    n_decoder_layers: int | None = None  # encdec only; None -> n_layers
    max_target_len: int = 64  # encdec only: longest decoder sequence in training

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def ffn_width(self) -> int:
        """Hidden width of the feed-forward network.

        Decoders use SwiGLU (three matrices), so the default is 8/3·d_model rounded up to a
        multiple of 64, which keeps the parameter count of a classic 4·d_model two-matrix MLP.
        Encoders and encoder-decoders use a two-matrix MLP of width 4·d_model.
        """
        if self.d_ff is not None:
            return self.d_ff
        if self.family == "decoder":
            return ((8 * self.d_model // 3) + 63) // 64 * 64
        return 4 * self.d_model

    @property
    def objective(self) -> str:
        return OBJECTIVE_OF_FAMILY[self.family]

    def validate(self) -> None:
        if self.family not in OBJECTIVE_OF_FAMILY:
            raise ConfigError(f"model.family must be one of encoder|decoder|encdec, got {self.family!r}")
        if self.d_model % self.n_heads:
            raise ConfigError(f"model.d_model ({self.d_model}) must be divisible by model.n_heads ({self.n_heads})")
        if self.pos_encoding == "rotary" and self.head_dim % 2:
            raise ConfigError(f"rotary positions need an even head size, got {self.head_dim}")
        for name in ("vocab_size", "d_model", "n_layers", "n_heads", "max_seq_len"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"model.{name} must be positive, got {getattr(self, name)}")


@dataclass
class TrainConfig:
    """Optimisation, schedule, precision, stopping, logging and checkpointing of one run."""

    batch_size: int = 16  # sequences per optimizer step (micro_batch_size x grad_accum x world)
    micro_batch_size: int | None = None  # sequences per forward pass; None -> batch_size
    lr: float = 3e-4
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio
    warmup_steps: int = 100
    schedule: Literal["cosine", "wsd", "constant"] = "cosine"
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    grad_clip: float = 1.0
    precision: Precision = "fp32"
    compile: bool = False
    activation_checkpointing: bool = False
    # stopping: the first limit reached ends the run; max_steps is also the schedule's horizon
    max_steps: int | None = 1000
    max_tokens: int | None = None
    max_time: float | None = None  # seconds of wall time
    max_flops: float | None = None
    tokens_per_param: float | None = None  # e.g. 20 for Chinchilla-optimal
    # evaluation, logging, checkpoints
    eval_every: int = 100
    eval_batches: int = 10
    log_every: int = 10
    ckpt_every: int = 200
    keep_checkpoints: int = 2
    seed: int = 1337
    init: str | None = None  # start from this checkpoint's weights (continued pre-training, domain adaptation)
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    distributed: Literal["ddp", "fsdp"] = "ddp"  # used under torchrun
    tensorboard: bool = True

    def validate(self) -> None:
        if self.batch_size <= 0:
            raise ConfigError(f"train.batch_size must be positive, got {self.batch_size}")
        mb = self.micro_batch_size or self.batch_size
        if mb <= 0 or self.batch_size % mb:
            raise ConfigError(
                f"train.batch_size ({self.batch_size}) must be a multiple of train.micro_batch_size ({mb})")
        for name in ("max_steps", "max_tokens", "max_time", "max_flops", "tokens_per_param"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ConfigError(f"train.{name} must be positive (or null for no such limit), got {value}")
        if not any(x is not None for x in (self.max_steps, self.max_tokens, self.max_time,
                                           self.max_flops, self.tokens_per_param)):
            raise ConfigError("set at least one stop condition: train.max_steps, max_tokens, max_time, "
                              "max_flops or tokens_per_param")


@dataclass
class DataConfig:
    """Where the training text is and how it becomes token windows."""

    paths: list[str] = field(default_factory=list)  # raw text, curated jsonl.gz, or a shard folder
    text_field: str = "text"
    lenient: bool = False  # skip unreadable files (counted in a report) instead of stopping
    tokenizer: str | None = None  # a tokenizer.json or a folder holding one; None -> train one
    vocab_size: int | None = None  # for a tokenizer trained on the fly; None -> model.vocab_size
    shards: str | None = None  # folder of packed shards; None -> <out>/shards
    val_fraction: float = 0.01  # share of documents held out for evaluation
    workers: int = 0  # tokenising processes; 0 -> all cores


@dataclass
class RunConfig:
    """A whole run: the three sections plus where it writes."""

    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)
    out: str = "runs/run"

    def validate(self) -> None:
        self.model.validate()
        self.train.validate()


# --------------------------------------------------------------------------- YAML <-> dataclasses


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Convert a YAML/CLI value to the annotated type, or raise ConfigError naming ``where``."""
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            if type(None) in get_args(tp):
                return None
        errors = []
        for a in args:
            try:
                return _coerce(value, a, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{where}: bad value {value!r}")
    if origin is Literal:
        choices = get_args(tp)
        if value not in choices:
            raise ConfigError(f"{where} must be one of {'|'.join(map(str, choices))}, got {value!r}")
        return value
    if origin is list:
        (item,) = get_args(tp)
        if isinstance(value, str):
            value = [v for v in value.split(",") if v]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        return [_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "on", "false", "no", "0", "off"):
            return value.lower() in ("true", "yes", "1", "on")
        raise ConfigError(f"{where} must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{where} must be an integer, got {value!r}")
        if isinstance(value, int):
            return value
        try:
            f = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where} must be an integer, got {value!r}") from None
        if f != int(f):
            raise ConfigError(f"{where} must be an integer, got {value!r}")
        return int(f)
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{where} must be a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where} must be a number, got {value!r}") from None
    if tp is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{where} must be a string, got {value!r}")
        return str(value)
    return value


def from_dict(cls: type, data: dict[str, Any] | None, where: str = "") -> Any:
    """Build dataclass ``cls`` from a dict, checking every key and value."""
    data = data or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'} must be a mapping, got {data!r}")
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        path = f"{where}.{key}" if where else key
        if key not in names:
            raise ConfigError(f"unknown config key {path!r} (known: {', '.join(sorted(names))})")
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            kwargs[key] = from_dict(tp, value, path)
        else:
            kwargs[key] = _coerce(value, tp, path)
    return cls(**kwargs)


def to_dict(obj: Any) -> dict[str, Any]:
    return dataclasses.asdict(obj)


def apply_overrides(raw: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Set dotted keys (``train.lr``) in a nested dict; values stay strings for _coerce to type."""
    out = yaml.safe_load(yaml.safe_dump(raw)) or {}
    for dotted, value in overrides.items():
        node = out
        parts = dotted.split(".")
        for p in parts[:-1]:
            nxt = node.setdefault(p, {})
            if not isinstance(nxt, dict):
                raise ConfigError(f"cannot set {dotted!r}: {p!r} is not a section")
            node = nxt
        if isinstance(value, str):
            try:
                value = yaml.safe_load(value)
            except yaml.YAMLError:
                pass
        node[parts[-1]] = value
    return out


def load_yaml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: config file not found")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML ({str(e).splitlines()[0]})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: top level must be a mapping with model/train/data sections")
    return data


def load_run_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> RunConfig:
    """Read a YAML config (or the defaults), apply dotted overrides, validate."""
    raw = load_yaml(path) if path else {}
    raw = apply_overrides(raw, overrides or {})
    try:
        cfg = from_dict(RunConfig, raw)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}" if path else str(e)) from None
    cfg.validate()
    return cfg


def save_yaml(obj: Any, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(obj), sort_keys=False), encoding="utf-8")


def model_config_from_dict(d: dict[str, Any]) -> ModelConfig:
    cfg = from_dict(ModelConfig, d, "model")
    cfg.validate()
    return cfg


__all__ = [
    "ConfigError", "ModelConfig", "TrainConfig", "DataConfig", "RunConfig", "OBJECTIVE_OF_FAMILY",
    "load_run_config", "load_yaml", "apply_overrides", "from_dict", "to_dict", "save_yaml",
    "model_config_from_dict",
]
