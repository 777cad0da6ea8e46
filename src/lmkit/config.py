"""Typed configuration: what a model is (ModelConfig), how it is trained (TrainConfig), on what data (DataConfig).

A run's configuration is YAML with three sections (``model``, ``train``, ``data``) read into
these dataclasses; dotted overrides from the command line (``--train.lr 3e-4``) are applied on
top, and the resolved result is saved as ``resolved.yaml`` beside every checkpoint so that a run
can always be reproduced. Unknown keys and badly typed values are errors that name the key.

This module owns the sections' fields, defaults and rules (each ``validate`` names the first wrong
key), ``load_run_config`` / ``save_yaml`` / ``model_config_from_dict``, and what a seed and a
device name may be. The generic machinery (``ConfigError``, reading YAML and the recipes, dotted
overrides, dict <-> dataclass coercion) lives in ``lmkit.config_io``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from lmkit.config_io import ConfigError, apply_overrides, from_dict, load_yaml, to_dict
from lmkit.model_variants import Activation, Bias, Mlp, Norm, Residual, RopeScaling, settle_defaults, variant_problem

Family = Literal["encoder", "decoder", "encdec"]
PosEncoding = Literal["rotary", "learned", "sinusoidal", "alibi"]
Precision = Literal["auto", "fp32", "bf16", "fp16"]  # auto: settled per run and machine (train/distributed.py)

OBJECTIVES: dict[str, tuple[str, ...]] = {"encoder": ("mlm",), "decoder": ("clm",), "encdec": ("span", "infill")}


def _require(ok: bool, key: str, rule: str, value: Any) -> None:
    """Raise ConfigError ``<key> must be <rule>, got <value>`` unless ``ok``.

    Conditions are written so that NaN fails them (``value > 0``, never ``not value <= 0``).
    """
    if not ok:
        raise ConfigError(f"{key} must be {rule}, got {value!r}", key)


def _finite(value: Any) -> bool:
    """A number that is not NaN or infinite (any int is; ``math.isfinite`` overflows on huge ones)."""
    return isinstance(value, int) or math.isfinite(value)


def _positive(obj: Any, section: str, names: tuple[str, ...], optional: bool = False) -> None:
    """Each named field is a finite number > 0 (or None when ``optional``)."""
    for name in names:
        value = getattr(obj, name)
        if optional and value is None:
            continue
        _require(
            value is not None and value > 0 and _finite(value),
            f"{section}.{name}",
            "positive" + (" (or null for none)" if optional else ""),
            value,
        )


def _at_least_zero(obj: Any, section: str, names: tuple[str, ...], zero_means: str = "") -> None:
    """Each named field is a finite number >= 0."""
    for name in names:
        value = getattr(obj, name)
        _require(
            value >= 0 and _finite(value),
            f"{section}.{name}",
            "zero or positive" + (f" (0 {zero_means})" if zero_means else ""),
            value,
        )


def _fraction(obj: Any, section: str, name: str, closed_right: bool = False) -> None:
    """The named field is in [0, 1) (or [0, 1] when ``closed_right``)."""
    value = getattr(obj, name)
    ok = 0 <= value <= 1 if closed_right else 0 <= value < 1
    _require(ok, f"{section}.{name}", f"in [0, 1{']' if closed_right else ')'}", value)


SEED_MAX = 2**64 - 1  # a torch.Generator's seed is an unsigned 64-bit integer


def validate_seed(seed: Any, what: str = "seed") -> int:
    """``seed`` if a random generator takes it (an integer 0 to 2**64-1), else ConfigError naming ``what``."""
    if isinstance(seed, int) and not isinstance(seed, bool) and 0 <= seed <= SEED_MAX:
        return seed
    shown = (
        f"an integer of {seed.bit_length()} bits" if isinstance(seed, int) and seed.bit_length() > 128 else repr(seed)
    )
    raise ConfigError(f"{what} must be an integer from 0 to 2**64-1 ({SEED_MAX}), got {shown}", what)


# train.device and every --device: the names lmkit.train.distributed.resolve_device understands.
DEVICE_NAME = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


@dataclass
class ModelConfig:
    """Architecture of one transformer: sizes, then each family's variants (``lmkit.model_variants``)."""

    family: Family = "decoder"
    vocab_size: int = 8192  # embedding rows (may exceed the tokenizer's size)
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
    n_kv_heads: int | None = None  # key/value heads (grouped-query attention); None -> n_heads
    head_size: int | None = None  # width of each head; None -> d_model / n_heads
    norm: Norm = "rms"
    bias: Bias = "none"
    mlp: Mlp = "gated"
    activation: Activation = "silu"
    residual: Residual = "pre"
    rotary_fraction: float = 1.0  # share of each head's dimensions rotary positions rotate
    rope_scaling: RopeScaling = field(default_factory=RopeScaling)
    embed_norm: bool = False  # a norm right after the token embedding (BLOOM)
    objective: Literal["auto", "mlm", "clm", "span", "infill"] = "auto"  # auto: the first of OBJECTIVES[family]
    type_vocab_size: int = 2  # encoder token types (segments): BERT 2, RoBERTa 1

    def __post_init__(self) -> None:  # objective auto, an encdec's MLP: the family's own (lmkit.model_variants)
        settle_defaults(self, OBJECTIVES)

    @property
    def head_dim(self) -> int:
        return self.head_size or self.d_model // self.n_heads

    @property
    def kv_heads(self) -> int:
        return self.n_kv_heads or self.n_heads

    @property
    def ffn_width(self) -> int:
        """``d_ff``, else 4·d_model (a gated decoder MLP: 8/3·d_model rounded up to 64, the same parameters)."""
        if self.d_ff is not None:
            return self.d_ff
        if self.family == "decoder" and self.mlp == "gated":
            return ((8 * self.d_model // 3) + 63) // 64 * 64
        return 4 * self.d_model

    def validate(self) -> None:  # one line naming the first wrong key
        _require(self.family in OBJECTIVES, "model.family", "one of encoder|decoder|encdec", self.family)
        _positive(  # sizes first: the divisibility checks divide by them
            self,
            "model",
            ("vocab_size", "d_model", "n_layers", "n_heads", "max_seq_len", "max_target_len", "rope_theta", "norm_eps"),
        )
        _positive(self, "model", ("d_ff", "n_decoder_layers"), optional=True)
        _fraction(self, "model", "dropout")
        ok = OBJECTIVES[self.family]
        _require(self.objective in ok, "model.objective", f"{'|'.join(ok)} for a {self.family}", self.objective)
        if (problem := variant_problem(self)) is not None:
            raise ConfigError(*problem)


@dataclass
class TrainConfig:
    """Optimisation, schedule, precision, stopping, logging and checkpointing of one run."""

    batch_size: int = 16  # sequences per optimizer step (micro_batch_size x grad_accum x world)
    micro_batch_size: int | None = None  # sequences per forward pass; None -> batch_size
    lr: float = 3e-4
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio
    warmup_steps: int = 100
    schedule: Literal["cosine", "wsd", "constant"] = "cosine"
    optimizer: Literal["adamw", "muon"] = "adamw"  # muon: Muon on the blocks' matrices, AdamW on the rest
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    grad_clip: float = 1.0
    precision: Precision = "auto"  # bf16 where this machine runs it measurably faster, else fp32 (CUDA: bf16|fp16)
    compile: bool = False
    activation_checkpointing: bool = False
    memory: Literal["auto", "fast", "lean"] = "auto"  # CPU allocator: glibc's | less memory, slower | see train/rss.py
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
        _positive(self, "train", ("batch_size", "lr", "eps", "log_every", "eval_batches"))
        _positive(self, "train", ("micro_batch_size",), optional=True)
        mb = self.micro_batch_size or self.batch_size
        if self.batch_size % mb:
            raise ConfigError(
                f"train.batch_size ({self.batch_size}) must be a multiple of train.micro_batch_size ({mb})",
                "train.micro_batch_size",
            )
        _fraction(self, "train", "min_lr_ratio", closed_right=True)
        _fraction(self, "train", "beta1")
        _fraction(self, "train", "beta2")
        _at_least_zero(self, "train", ("warmup_steps", "weight_decay"))
        _at_least_zero(self, "train", ("grad_clip",), "turns clipping off")
        _at_least_zero(self, "train", ("eval_every", "ckpt_every"), "turns it off")
        _at_least_zero(self, "train", ("keep_checkpoints",), "keeps them all")
        if self.optimizer == "muon" and self.distributed == "fsdp":
            raise ConfigError(
                "train.optimizer muon orthogonalises whole matrices, which train.distributed fsdp "
                "shards across processes; use train.distributed ddp",
                "train.optimizer",
            )
        _require(
            isinstance(self.device, str) and bool(DEVICE_NAME.fullmatch(self.device)),
            "train.device",
            "one of auto|cpu|cuda|cuda:N|mps",
            self.device,
        )
        for name in ("max_steps", "max_tokens", "max_time", "max_flops", "tokens_per_param"):
            value = getattr(self, name)
            if value is not None and not (value > 0 and _finite(value)):
                raise ConfigError(
                    f"train.{name} must be positive (or null for no such limit), got {value}", f"train.{name}"
                )
        if not any(
            x is not None
            for x in (self.max_steps, self.max_tokens, self.max_time, self.max_flops, self.tokens_per_param)
        ):
            raise ConfigError(
                "set at least one stop condition: train.max_steps, max_tokens, max_time, max_flops or tokens_per_param"
            )


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

    def validate(self) -> None:
        _fraction(self, "data", "val_fraction")
        _at_least_zero(self, "data", ("workers",), "uses all cores")
        _positive(self, "data", ("vocab_size",), optional=True)
        _require(bool(self.text_field), "data.text_field", "a field name", self.text_field)


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
        self.data.validate()


# --------------------------------------------------------------------------- a run's YAML (lmkit.config_io reads it)


def load_run_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> RunConfig:
    """Read a YAML config (or the defaults), apply dotted overrides, validate."""
    raw = load_yaml(path) if path else {}
    raw = apply_overrides(raw, overrides or {})
    try:
        cfg = from_dict(RunConfig, raw)
        cfg.validate()
    except ConfigError as e:
        msg = str(e)
        if e.key is not None and e.key in (overrides or {}):
            msg += f" (from --{e.key})"
        raise ConfigError(f"{path}: {msg}" if path else msg, e.key) from None
    return cfg


def save_yaml(obj: Any, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(obj), sort_keys=False), encoding="utf-8")


def model_config_from_dict(d: dict[str, Any]) -> ModelConfig:
    cfg = from_dict(ModelConfig, d, "model")
    cfg.validate()
    return cfg


__all__ = [
    "OBJECTIVES",
    "DataConfig",
    "ModelConfig",
    "RunConfig",
    "TrainConfig",
    "load_run_config",
    "model_config_from_dict",
    "save_yaml",
]
