"""The quantized checkpoint format: int8 modules, how a quantized model is stored and rebuilt.

What this module owns (``lmkit quantize`` measures and reports in ``lmkit.ship.quantize``; the
checkpoint loader, export and the model card read quantized checkpoints through this module):

- ``int8-absmax-per-channel``: symmetric absmax quantization per output channel
  (``lmkit.numerics.absmax_quantize``) of every linear layer and every embedding table of 64 rows
  or more (token and learned position embeddings; the tied output projection is the token
  embedding, whose rows are exactly its output channels). Each matrix is stored as int8
  ``qweight`` plus an fp32 ``scale`` per row (w ≈ qweight · scale). Norm weights, biases and the
  tiny tables (token types, T5's position buckets) stay fp32. The weights stay int8 in memory too:
  :class:`Int8Linear` multiplies by the int8 matrix converted on the fly and scales the output
  channels (y = (x · qweightᵀ) · scale + bias), :class:`Int8Embedding` looks rows up in int8 and
  scales them.
- ``cast`` (fp16 / bf16): every floating tensor cast to the 16-bit format.
- The ``quantization`` record of a checkpoint's ``config.json`` (``method``, ``dtype``,
  ``modules``...): :func:`prepare_quantized` turns a freshly built model into the shape the record
  describes (before its weights are loaded), :func:`dequantized_state` turns the stored tensors
  back into float32 weights, :func:`quant_label` names the format in one line.
- :func:`memory_bytes`: what a model's tensors take in memory, quantized or not.
- :func:`int8_layer_errors`: the error of each int8 scheme on each weight to be quantized.

Imports nothing from lmkit but ``lmkit.errors`` and ``lmkit.numerics``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, TypeVar, cast

import torch
import torch.nn.functional as F
from torch import nn

from lmkit.errors import LmkitError
from lmkit.numerics import absmax_dequantize, absmax_quantize, int8_scheme_errors, torch_dtype

INT8_METHOD = "int8-absmax-per-channel"
CAST_METHOD = "cast"
MIN_EMBEDDING_ROWS = 64  # smaller tables (token types, relative-position buckets) stay fp32
M = TypeVar("M", bound=nn.Module)


# --------------------------------------------------------------------------- int8 modules


class Int8Linear(nn.Module):
    """A linear layer whose weight is int8 with one fp32 scale per output channel."""

    qweight: torch.Tensor  # buffers (registered in __init__)
    scale: torch.Tensor

    def __init__(self, in_features: int, out_features: int, bias: bool) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer("qweight", torch.zeros(out_features, in_features, dtype=torch.int8))  # (out, in)
        self.register_buffer("scale", torch.ones(out_features, 1))  # (out, 1) fp32
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

    @classmethod
    def from_linear(cls, lin: nn.Linear) -> Int8Linear:
        m = cls(lin.in_features, lin.out_features, lin.bias is not None)
        q, s = absmax_quantize(lin.weight, dim=1)
        m.qweight.copy_(q)
        m.scale.copy_(s)
        if lin.bias is not None:
            m.bias = nn.Parameter(lin.bias.detach().float().clone())
        return m

    @property
    def weight(self) -> torch.Tensor:
        """The dequantised weight (out, in), fp32: for code that reads ``.weight``."""
        return absmax_dequantize(self.qweight, self.scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x (..., in) -> (..., out)
        y = F.linear(x, self.qweight.to(x.dtype)) * self.scale.view(-1).to(x.dtype)
        return y + self.bias.to(x.dtype) if self.bias is not None else y

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, int8"


class Int8Embedding(nn.Module):
    """An embedding table stored as int8 rows with one fp32 scale per row."""

    qweight: torch.Tensor  # buffers (registered in __init__)
    scale: torch.Tensor

    def __init__(self, num_embeddings: int, embedding_dim: int) -> None:
        super().__init__()
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.register_buffer("qweight", torch.zeros(num_embeddings, embedding_dim, dtype=torch.int8))  # (V, d)
        self.register_buffer("scale", torch.ones(num_embeddings, 1))  # (V, 1) fp32

    @classmethod
    def from_embedding(cls, emb: nn.Embedding) -> Int8Embedding:
        m = cls(emb.num_embeddings, emb.embedding_dim)
        q, s = absmax_quantize(emb.weight, dim=1)
        m.qweight.copy_(q)
        m.scale.copy_(s)
        return m

    @property
    def weight(self) -> torch.Tensor:
        """The dequantised table (V, d), fp32 (the tied output projection reads it)."""
        return absmax_dequantize(self.qweight, self.scale)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:  # ids (...) -> (..., d)
        return F.embedding(ids, self.qweight).to(torch.float32) * F.embedding(ids, self.scale)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, int8"


# --------------------------------------------------------------------------- quantizing a model


def _int8_targets(model: nn.Module) -> list[str]:
    """Names of the modules int8 quantization replaces."""
    out = []
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear) or (isinstance(m, nn.Embedding) and m.num_embeddings >= MIN_EMBEDDING_ROWS):
            out.append(name)
    return out


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def int8_layer_errors(model: nn.Module) -> list[dict[str, Any]]:
    """What int8 does to each weight that :func:`quantize_int8` would replace, before replacing it.

    One row per module: ``name``, ``kind`` (Linear / Embedding) and
    ``lmkit.numerics.int8_scheme_errors`` of its weight: the integer grid (int8 as plain integers,
    without a scale), one absmax scale for the whole matrix, and one per output channel (what is stored).
    """
    rows = []
    with torch.no_grad():
        for name in _int8_targets(model):
            m = model.get_submodule(name)
            weight = cast(torch.Tensor, m.weight)  # a Linear's or Embedding's (the only targets)
            rows.append({"name": name, "kind": type(m).__name__, **int8_scheme_errors(weight)})
    return rows


def quantize_int8(model: nn.Module) -> list[str]:
    """Replace the model's linear layers and large embeddings by int8 ones in place; their names."""
    names = _int8_targets(model)
    with torch.no_grad():
        for name in names:
            m = model.get_submodule(name)
            new: nn.Module
            if isinstance(m, nn.Linear):
                new = Int8Linear.from_linear(m)
            else:  # the only other target is an Embedding
                new = Int8Embedding.from_embedding(cast(nn.Embedding, m))
            _replace(model, name, new.to(next(m.parameters()).device))
    return names


# --------------------------------------------------------------------------- loading a quantized checkpoint


def _empty_int8(model: nn.Module, names: list[str], source: str | Path) -> None:
    """Swap the listed modules for empty int8 ones (to be filled by load_state_dict)."""
    for name in names:
        try:
            m = model.get_submodule(name)
        except AttributeError:
            raise LmkitError(f"{source}: quantized module {name!r} does not exist in this model") from None
        if isinstance(m, nn.Linear):
            _replace(model, name, Int8Linear(m.in_features, m.out_features, m.bias is not None))
        elif isinstance(m, nn.Embedding):
            _replace(model, name, Int8Embedding(m.num_embeddings, m.embedding_dim))
        else:
            raise LmkitError(f"{source}: quantized module {name!r} is a {type(m).__name__}, not Linear/Embedding")


def prepare_quantized(model: M, state: dict[str, torch.Tensor], quant: dict[str, Any], source: str | Path) -> M:
    """Give a freshly built ``model`` the storage that the ``quantization`` record ``quant`` describes
    (16-bit cast, or empty int8 modules), ready for ``state`` to be loaded into it; returns it."""
    method = quant.get("method")
    if method == CAST_METHOD:
        model.to(torch_dtype(str(quant.get("dtype"))))
    elif method == INT8_METHOD:
        names = list(quant.get("modules", []))
        missing = [f"{n}.{b}" for n in names for b in ("qweight", "scale") if f"{n}.{b}" not in state]
        if missing:
            raise LmkitError(f"{source}: model.safetensors lacks quantized tensors {missing[:3]}")
        _empty_int8(model, names, source)
    else:
        raise LmkitError(f"{source}: unknown quantization method {method!r} in config.json")
    return model


def dequantized_state(state: dict[str, torch.Tensor], quant: dict[str, Any], source: str) -> dict[str, torch.Tensor]:
    """Float32 weights holding exactly the values of a quantized checkpoint.

    ``cast`` (fp16/bf16): every tensor widened to float32 (exact). ``int8-absmax-per-channel``: each
    listed module's ``qweight`` · ``scale`` becomes its ``weight``; the rest were kept in float.
    """
    method = quant.get("method") if isinstance(quant, dict) else None
    out = dict(state)
    if method == INT8_METHOD:
        for name in quant.get("modules") or []:
            q, s = out.pop(f"{name}.qweight", None), out.pop(f"{name}.scale", None)
            if q is None or s is None:
                raise LmkitError(f"{source}: quantized module {name!r} lacks its qweight/scale tensors")
            out[f"{name}.weight"] = absmax_dequantize(q, s)
    elif method != CAST_METHOD:
        raise LmkitError(f"{source}: unknown quantization method {method!r}; cannot dequantize")
    return {k: v.to(torch.float32) if v.is_floating_point() else v for k, v in out.items()}


def quant_label(q: Any) -> str:
    """``int8 (int8-absmax-per-channel, per output channel (row))`` from a config's quantization record."""
    if isinstance(q, dict):
        what = q.get("dtype") or q.get("to")
        how = [str(x) for x in (q.get("method"), q.get("granularity")) if x and x != what]
        return f"{what}" + (f" ({', '.join(how)})" if how else "") if what else json.dumps(q)[:200]
    return str(q)


def memory_bytes(model: nn.Module) -> int:
    """Bytes of the model's tensors (parameters and buffers, each storage once)."""
    seen: set[int] = set()
    total = 0
    for t in [*model.parameters(), *model.buffers()]:
        if t.data_ptr() in seen:
            continue
        seen.add(t.data_ptr())
        total += t.numel() * t.element_size()
    return total


__all__ = [
    "CAST_METHOD",
    "INT8_METHOD",
    "MIN_EMBEDDING_ROWS",
    "Int8Embedding",
    "Int8Linear",
    "dequantized_state",
    "int8_layer_errors",
    "memory_bytes",
    "prepare_quantized",
    "quant_label",
    "quantize_int8",
]
