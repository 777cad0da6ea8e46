"""What one Hugging Face class adapter is, and the tensor rules every adapter is written in.

- :class:`HFTarget`: the ``transformers`` class, ``model_type``, Auto class and hub task.
- :class:`Rule`: how lmkit tensors become one transformers tensor and back: unchanged, transposed
  (GPT-2's Conv1D stores (in, out)), q/k/v concatenated (GPT-2's ``c_attn``, also transposed),
  interleaved per head as (H, 3, hd) (GPT-NeoX's and BLOOM's ``query_key_value``), or rows permuted
  (RoFormer's rotary pairs), or rows offset (RoBERTa's position table, whose first rows no position
  reaches: written as zeros, skipped on the way back). :func:`to_hf_tensors` and :func:`from_hf_tensors`
  apply a list of rules; from lmkit and back they give the same tensors (only copies and reshapes, no
  arithmetic).
- :class:`HFAdapter`: one class's config.json ⇄ ModelConfig, its rules, and its storage facts (keys
  that hold no weights, tensors tied to the embedding, copies, fixed tables).
- :class:`HFConfigReader`: typed reads of a transformers config.json, each failure one line naming
  the file, the key and its value.

Invariant: an adapter never approximates. ``config_from_hf`` returns the ModelConfig that computes
the same function or refuses the first setting lmkit cannot represent, naming the key and its value.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from lmkit.errors import LmkitError

if TYPE_CHECKING:
    import torch

    from lmkit.config import ModelConfig


@dataclass(frozen=True)
class HFTarget:
    """The transformers class an adapter reads and writes, and what the hub calls its task."""

    family: str
    architecture: str
    model_type: str
    auto_class: str
    pipeline_tag: str


RuleKind = Literal["same", "transposed", "fused", "fused_transposed", "per_head", "rows", "offset"]


@dataclass(frozen=True, eq=False)
class Rule:
    """lmkit tensors ``ours`` (one, or the q, k, v of a fused tensor) ⇄ transformers tensor ``theirs``.

    ``same``: copied; ``transposed``: a matrix stored (in, out); ``fused``: q, k, v concatenated along
    rows; ``fused_transposed``: concatenated, then stored (in, out); ``per_head``: rows ordered
    (head, q|k|v, dim) for ``heads`` heads; ``rows``: row i of theirs is row ``perm[i]`` of ours;
    ``offset``: theirs is ``offset`` rows of zeros, then ours (a position table whose first rows are
    never read, e.g. RoBERTa's, whose positions start after its padding index).
    """

    ours: tuple[str, ...]
    theirs: str
    kind: RuleKind = "same"
    heads: int = 0
    perm: torch.Tensor | None = None
    offset: int = 0


def same(ours: str, theirs: str) -> Rule:
    return Rule((ours,), theirs)


def to_hf_tensors(rules: list[Rule], state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers tensors from lmkit's ``state`` by ``rules`` (new tensors except for ``same``)."""
    import torch

    out: dict[str, torch.Tensor] = {}
    for r in rules:
        ts = [state[n] for n in r.ours]
        if r.kind == "same":
            out[r.theirs] = ts[0]
        elif r.kind == "transposed":
            out[r.theirs] = ts[0].t().contiguous() if ts[0].dim() == 2 else ts[0]
        elif r.kind in ("fused", "fused_transposed"):
            t = torch.cat(ts)  # (3d, ...) = [q; k; v]
            out[r.theirs] = t.t().contiguous() if r.kind == "fused_transposed" and t.dim() == 2 else t
        elif r.kind == "per_head":
            H = r.heads
            parts = [t.reshape(H, t.shape[0] // H, *t.shape[1:]) for t in ts]  # (H, hd, ...) each
            t = torch.stack(parts, dim=1)  # (H, 3, hd, ...)
            out[r.theirs] = t.reshape(-1, *ts[0].shape[1:])
        elif r.kind == "offset":
            t = ts[0]
            out[r.theirs] = torch.cat([t.new_zeros(r.offset, *t.shape[1:]), t])  # (offset + rows, ...)
        else:  # rows
            assert r.perm is not None
            out[r.theirs] = ts[0].index_select(0, r.perm)
    return out


def from_hf_tensors(rules: list[Rule], hf: dict[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """lmkit tensors from transformers tensors ``hf`` by ``rules`` (the inverse of :func:`to_hf_tensors`)."""
    import torch

    out: dict[str, torch.Tensor] = {}
    for r in rules:
        t = hf[r.theirs]
        if r.kind == "same":
            out[r.ours[0]] = t
        elif r.kind == "transposed":
            out[r.ours[0]] = t.t() if t.dim() == 2 else t
        elif r.kind in ("fused", "fused_transposed"):
            rows = t.t() if r.kind == "fused_transposed" and t.dim() == 2 else t
            if rows.shape[0] % 3:
                raise LmkitError(f"{source}: {r.theirs} has {rows.shape[0]} rows, not three equal parts q, k, v")
            for name, part in zip(r.ours, rows.chunk(3)):
                out[name] = part
        elif r.kind == "per_head":
            H = r.heads
            if t.shape[0] % (3 * H):
                raise LmkitError(f"{source}: {r.theirs} has {t.shape[0]} rows, not {H} heads of q, k, v")
            per = t.reshape(H, 3, t.shape[0] // (3 * H), *t.shape[1:])  # (H, 3, hd, ...)
            for j, name in enumerate(r.ours):
                out[name] = per[:, j].reshape(-1, *t.shape[1:])
        elif r.kind == "offset":
            if t.shape[0] <= r.offset:
                raise LmkitError(f"{source}: {r.theirs} has {t.shape[0]} rows, not more than its offset {r.offset}")
            out[r.ours[0]] = t[r.offset :]
        else:
            assert r.perm is not None
            if t.shape[0] != len(r.perm):
                raise LmkitError(f"{source}: {r.theirs} has {t.shape[0]} rows, the config needs {len(r.perm)}")
            out[r.ours[0]] = t.index_select(0, torch.argsort(r.perm))
    return out


def hf_shapes(rules: list[Rule], shapes: dict[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
    """The shape of each transformers tensor the rules make from lmkit tensors of ``shapes`` (no tensors)."""
    out: dict[str, tuple[int, ...]] = {}
    for r in rules:
        if any(n not in shapes for n in r.ours):
            continue
        first = shapes[r.ours[0]]
        if r.kind in ("same", "rows"):
            out[r.theirs] = first
        elif r.kind == "transposed":
            out[r.theirs] = first[::-1] if len(first) == 2 else first
        elif r.kind == "offset":
            out[r.theirs] = (first[0] + r.offset, *first[1:])
        else:  # fused or per head: the parts' rows stacked
            stacked = (sum(shapes[n][0] for n in r.ours), *first[1:])
            out[r.theirs] = stacked[::-1] if r.kind == "fused_transposed" and len(stacked) == 2 else stacked
    return out


ConfigFromHF = Callable[[dict[str, Any], str, "int | None", "int | None"], "ModelConfig"]


@dataclass(frozen=True)
class HFAdapter:
    """One transformers class: its config.json ⇄ ModelConfig, its tensor rules, its storage facts.

    ``layout_problem(cfg)``: None when ``cfg`` is this class's layout (export writes this class),
    else why not. ``config_from_hf(hf, source, max_seq_len, tokenizer_max_len)``: the exact
    ModelConfig, or one line naming the setting lmkit cannot represent. ``ignored``: transformers
    keys (full-match regexes) that hold no weights (causal-mask buffers, rotary ``inv_freq``).
    ``tied``: tensors that are the embedding itself when embeddings are tied (absent from a
    ``save_pretrained`` file, or copies of it). ``copies``: tensors written as copies of another.
    ``prefix``: the base model's name prefix, which files saved from the base model class lack.
    ``aliases``: other architecture names a config.json of these weights may carry (facebook/bart-base's
    names its base class, ``BartModel``). ``zero_if_absent``: buffers transformers starts at zeros when
    a file lacks them (BART's ``final_logits_bias`` in files saved from ``BartModel``); lmkit's do too.
    """

    target: HFTarget
    layout_problem: Callable[[ModelConfig], str | None]
    config_from_hf: ConfigFromHF
    config_to_hf: Callable[[ModelConfig], dict[str, Any]]
    rules: Callable[[ModelConfig], list[Rule]]
    embedding: str
    ignored: tuple[str, ...] = ()
    tied: tuple[str, ...] = ()
    copies: dict[str, str] = field(default_factory=dict)
    prefix: str = ""
    aliases: tuple[str, ...] = ()
    zero_if_absent: tuple[str, ...] = ()


class HFConfigReader:
    """Typed reads of a transformers config.json ``hf`` (from file ``source``); each error one line."""

    def __init__(self, hf: dict[str, Any], source: str) -> None:
        self.hf, self.source = hf, source

    def fail(self, message: str) -> LmkitError:
        return LmkitError(f"{self.source}: {message}"[:400])

    def need(self, ok: bool, message: str) -> None:
        if not ok:
            raise self.fail(message)

    def int(self, key: str, default: int | None = None) -> int:
        v = self.hf.get(key, default)
        if v is None and default is not None:
            v = default
        if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
            raise self.fail(f"{key} must be a positive integer, got {v!r}")
        return v

    def float(self, key: str, default: float) -> float:
        v = self.hf.get(key, default)
        if v is None:
            v = default
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            raise self.fail(f"{key} must be a number, got {v!r}")
        return float(v)

    def equals(self, key: str, allowed: tuple[Any, ...], default: Any, why: str) -> Any:
        """The value of ``key`` (``default`` when absent), refused unless one of ``allowed``."""
        v = self.hf.get(key, default)
        if v not in allowed:
            raise self.fail(f"{key} {v!r} is not supported: {why}")
        return v

    def no_extras(self) -> None:
        """Refuse the settings no lmkit decoder has: mixture of experts and query/key norms."""
        for key in MOE_KEYS + QK_NORM_KEYS:
            v = self.hf.get(key)
            if v not in (None, False, 0, [], {}):
                what = "mixture of experts" if key in MOE_KEYS else "query/key normalisation"
                raise self.fail(f"{key} {v!r}: {what} has no lmkit equivalent")


# config.json keys that switch on mixture-of-experts layers or query/key norms (refused by every decoder)
MOE_KEYS = ("num_experts", "num_local_experts", "n_routed_experts", "moe_intermediate_size", "num_experts_per_tok")
QK_NORM_KEYS = ("qk_norm", "use_qk_norm", "qk_layernorm", "use_qk_layernorm")


def layout_mismatch(cfg: ModelConfig, target: HFTarget, wants: dict[str, tuple[Any, ...]]) -> str | None:
    """The first ``model.<key>`` of ``cfg`` whose value is not among ``wants[key]``, said in one line."""
    if cfg.family != target.family:
        return f"{target.architecture} is a {target.family}, not a {cfg.family}"
    for key, allowed in wants.items():
        value = getattr(cfg, key)
        if value not in allowed:
            shown = "|".join("null" if a is None else str(a) for a in allowed)
            return f"{target.architecture} needs model.{key} {shown}, got {value!r}"
    return None


def validated(cfg: ModelConfig, source: str) -> ModelConfig:
    """``cfg`` after ModelConfig.validate, its error prefixed with ``source``."""
    try:
        cfg.validate()
    except LmkitError as e:
        raise LmkitError(f"{source}: {e}") from None
    return cfg


__all__ = [
    "ConfigFromHF",
    "HFAdapter",
    "HFConfigReader",
    "HFTarget",
    "MOE_KEYS",
    "QK_NORM_KEYS",
    "Rule",
    "RuleKind",
    "from_hf_tensors",
    "hf_shapes",
    "layout_mismatch",
    "same",
    "to_hf_tensors",
    "validated",
]
