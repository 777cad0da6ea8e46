"""Number formats and the quantization maths: fp32, fp16, bf16 and int8, side by side.

What this module owns:
- ``format_info(name)``: the layout (sign / exponent / fraction bits), range, smallest normal and
  subnormal numbers and machine epsilon of each format, read from ``torch.finfo``/``torch.iinfo``
  (the exponent and fraction widths are derived from the bit width and epsilon:
  fraction bits = -log2(eps), exponent bits = bits - 1 - fraction bits).
- ``represent(value, name)``: what a number becomes when stored in a format, its bit pattern and
  the step between neighbouring representable numbers there. The rounding is done by PyTorch's own
  dtype conversion (round to nearest, ties to even), never by hand.
- Symmetric absmax int8 quantization (``absmax_quantize`` / ``absmax_dequantize``), per tensor or
  per channel, used by ``lmkit.models.int8`` (the quantized checkpoint format) and shown by
  ``lmkit numerics``. Textbooks often write the quantization factor as 127 / max|x|
  (q = round(x · 127/max|x|)); we store its reciprocal, ``scale = max|x| / 127``, so that
  x ≈ q · scale as in PyTorch's quantization convention. The rounding is written out
  (``torch.round`` then clamp) because torch's quantized-tensor API (``torch.quantize_per_channel``)
  is deprecated in the PyTorch this project pins.
- ``report(value)``: everything ``lmkit numerics`` shows, as data (the command and its printing
  live in ``lmkit.cli.numerics``).

Imports nothing from lmkit except ``lmkit.errors``.
"""

from __future__ import annotations

import math
import struct
from dataclasses import asdict, dataclass
from typing import Any

import torch

from lmkit.errors import LmkitError

FORMATS: tuple[str, ...] = ("fp32", "fp16", "bf16", "int8")

_DTYPES: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "fp16": torch.float16,
    "bf16": torch.bfloat16,
    "int8": torch.int8,
}
# integer views with the same width, to read a float's bit pattern
_BITS_VIEW: dict[str, torch.dtype] = {"fp32": torch.int32, "fp16": torch.int16, "bf16": torch.int16}
# symmetric int8 uses -127..127 so that +x and -x quantize to +q and -q (-128 stays unused)
INT8_QMAX = 127


def torch_dtype(name: str) -> torch.dtype:
    """The torch dtype of a format name (fp32, fp16, bf16, int8)."""
    try:
        return _DTYPES[name]
    except KeyError:
        raise LmkitError(f"unknown number format {name!r} (known: {', '.join(FORMATS)})") from None


def bytes_per_value(name: str) -> int:
    """Storage size of one number in the format: 4, 2, 2 or 1 bytes."""
    dt = torch_dtype(name)
    return torch.finfo(dt).bits // 8 if dt.is_floating_point else torch.iinfo(dt).bits // 8


@dataclass(frozen=True)
class FormatInfo:
    """Layout and range of one number format."""

    name: str
    kind: str  # "float" or "int"
    bits: int
    sign_bits: int
    exponent_bits: int
    fraction_bits: int  # for int8: the 7 value bits of two's complement
    max: float
    min: float  # most negative value
    smallest_normal: float | None  # floats only
    smallest_subnormal: float | None  # floats only
    epsilon: float  # gap between 1 and the next number (1 for integers)
    decimal_digits: float  # about how many significant decimal digits the format holds


def format_info(name: str) -> FormatInfo:
    """Bits, range and precision of fp32/fp16/bf16/int8, from torch.finfo / torch.iinfo."""
    dt = torch_dtype(name)
    if dt.is_floating_point:
        fi = torch.finfo(dt)
        frac = round(-math.log2(fi.eps))
        return FormatInfo(
            name=name,
            kind="float",
            bits=fi.bits,
            sign_bits=1,
            exponent_bits=fi.bits - 1 - frac,
            fraction_bits=frac,
            max=float(fi.max),
            min=float(fi.min),
            smallest_normal=float(fi.smallest_normal),
            smallest_subnormal=float(fi.smallest_normal) * float(fi.eps),
            epsilon=float(fi.eps),
            decimal_digits=(frac + 1) * math.log10(2),
        )
    ii = torch.iinfo(dt)
    return FormatInfo(
        name=name,
        kind="int",
        bits=ii.bits,
        sign_bits=1,
        exponent_bits=0,
        fraction_bits=ii.bits - 1,
        max=float(ii.max),
        min=float(ii.min),
        smallest_normal=None,
        smallest_subnormal=None,
        epsilon=1.0,
        decimal_digits=(ii.bits - 1) * math.log10(2),
    )


# --------------------------------------------------------------------------- one value in a format


@dataclass(frozen=True)
class Representation:
    """A number as stored in one format."""

    format: str
    value: float  # the number asked for
    stored: float  # what the format holds (for int8: the dequantised value q · scale)
    error: float  # stored - value
    relative_error: float | None  # |error| / |value|; None for value 0
    step: float  # distance to the next representable number away from zero, near the value
    bits: str  # the bit pattern, fields separated by spaces (sign exponent fraction)
    overflow: bool  # the value is outside the format's finite range
    int8_q: int | None = None  # int8 only: the stored integer
    int8_absmax: float | None = None  # int8 only: the range mapped onto -127..127
    int8_scale: float | None = None  # int8 only: absmax / 127 (value ≈ q · scale)
    int8_factor: float | None = None  # int8 only: 127 / absmax, the "scale factor" some texts multiply by
    underflow: bool = False  # a non-zero value that the format stores as zero


def _float_bits(x: torch.Tensor, name: str, info: FormatInfo) -> str:
    raw = int(x.view(_BITS_VIEW[name]).item()) & ((1 << info.bits) - 1)
    s = format(raw, f"0{info.bits}b")
    e = info.exponent_bits
    return f"{s[0]} {s[1 : 1 + e]} {s[1 + e :]}"


def represent(value: float, name: str, absmax: float | None = None) -> Representation:
    """What ``value`` becomes in format ``name``.

    Floats: PyTorch's conversion from float64 (round to nearest even; overflow gives ±inf).
    int8: symmetric absmax quantization with range ``absmax`` (default |value|): the scale is kept
    in fp32, as a quantized checkpoint stores it.
    """
    info = format_info(name)
    if info.kind == "float":
        dt = torch_dtype(name)
        x = torch.tensor(value, dtype=torch.float64).to(dt)  # the rounding: torch's own conversion
        stored = float(x.item())
        overflow = math.isinf(stored) and not math.isinf(value)
        if math.isfinite(stored):
            away = torch.tensor(math.copysign(math.inf, value if value != 0 else 1.0), dtype=dt)
            step = abs(float(torch.nextafter(x, away).item()) - stored)
        else:
            step = math.inf
        err = stored - value if math.isfinite(stored) else math.inf
        return Representation(
            format=name,
            value=value,
            stored=stored,
            error=err,
            relative_error=(abs(err) / abs(value) if value != 0 else None),
            step=step,
            bits=_float_bits(x, name, info),
            overflow=overflow,
            underflow=stored == 0 and value != 0,
        )
    if not math.isfinite(value):
        raise LmkitError(
            f"--value {value}: not a finite number; numerics shows finite values only (int8 "
            "absmax quantization has no code for nan or inf)"
        )
    a = abs(value) if absmax is None else float(absmax)
    if not (a >= 0 and math.isfinite(a)):
        raise LmkitError(f"--absmax must be a finite non-negative number, got {absmax!r}")
    q_t, scale_t = absmax_quantize(torch.tensor([value], dtype=torch.float32), dim=None, absmax=a)
    q = int(q_t.item())
    scale = float(scale_t.item())
    stored = float(absmax_dequantize(q_t, scale_t).item())
    overflow = abs(value) > a * (1 + 1e-7)
    return Representation(
        format=name,
        value=value,
        stored=stored,
        error=stored - value,
        relative_error=(abs(stored - value) / abs(value) if value != 0 else None),
        step=scale,
        bits=f"{format(q & 0xFF, '08b')[0]} {format(q & 0xFF, '08b')[1:]}",
        overflow=overflow,
        int8_q=q,
        int8_absmax=a,
        int8_scale=scale,
        int8_factor=(1.0 / scale if scale else math.inf),
        underflow=q == 0 and value != 0,
    )


def float32_bits(value: float) -> str:
    """IEEE-754 single precision bit pattern of value, via the struct module (for checking)."""
    (raw,) = struct.unpack(">I", struct.pack(">f", value))
    s = format(raw, "032b")
    return f"{s[0]} {s[1:9]} {s[9:]}"


# --------------------------------------------------------------------------- int8 absmax quantization


def absmax_quantize(
    x: torch.Tensor, dim: int | None = 1, absmax: float | torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 quantization: q = round(x / scale), scale = max|x| / 127.

    ``dim``: the axis along which each channel is reduced (for a Linear weight (out, in), dim=1
    gives one scale per output row, shape (out, 1)); ``None`` quantizes the whole tensor with one
    scale (shape ()). ``absmax`` overrides the measured range (values beyond it are clipped).
    Returns (q int8 of x's shape, scale fp32 broadcastable to x). A channel of zeros gets scale 1.
    """
    xf = x.detach().to(torch.float32)
    if absmax is not None:
        am = torch.as_tensor(absmax, dtype=torch.float32)
    elif dim is None:
        am = xf.abs().amax() if xf.numel() else torch.tensor(0.0)
    else:
        am = xf.abs().amax(dim=dim, keepdim=True)
    scale = torch.where(am > 0, am / INT8_QMAX, torch.ones_like(am))
    q = torch.round(xf / scale).clamp_(-INT8_QMAX, INT8_QMAX).to(torch.int8)
    return q, scale


def absmax_dequantize(q: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """x ≈ q · scale, in ``dtype``."""
    return (q.to(torch.float32) * scale.to(torch.float32)).to(dtype)


def quantization_error(x: torch.Tensor, dim: int | None = 1) -> dict[str, float]:
    """Round-trip error of absmax int8 on x: max and mean absolute error, and relative RMS error."""
    q, s = absmax_quantize(x, dim)
    err = absmax_dequantize(q, s) - x.detach().float()
    rms = float(x.detach().float().pow(2).mean().sqrt())
    return {
        "max_abs": float(err.abs().max()),
        "mean_abs": float(err.abs().mean()),
        "relative_rms": float(err.pow(2).mean().sqrt()) / rms if rms else 0.0,
    }


# --------------------------------------------------------------------------- the lesson and the practice

INT8_MIN, INT8_MAX = -128, 127
# absmax values of a realistic tensor for ``int8_value_table``: a weight or activation tensor whose
# largest |x| is a few units (trained weight matrices with outliers, LayerNorm outputs)
TENSOR_ABSMAXES: tuple[float, ...] = (4.0, 8.0)


def integer_grid(x: torch.Tensor) -> torch.Tensor:
    """int8 as the plain integer grid: round to the nearest integer in -128..127, no scale (π -> 3)."""
    return torch.round(x.detach().to(torch.float32)).clamp_(INT8_MIN, INT8_MAX)


def int8_value_table(
    value: float, absmax: float | None = None, tensor_absmaxes: tuple[float, ...] = TENSOR_ABSMAXES
) -> list[dict[str, Any]]:
    """What ``value`` becomes in int8, scheme by scheme, as rows of one table.

    First the integer grid (int8 without a scale, step 1: π -> 3, error -0.14), the usual first
    picture of int8. Then practice, symmetric absmax quantization with the value inside a tensor whose max
    |x| is each of ``tensor_absmaxes`` (step absmax/127; the error is at most half a step), the
    ``absmax`` asked for, and last the value as its own range (q = ±127: exact but for fp32
    rounding, which only the largest entry of a tensor gets). Each row: ``scheme``, ``absmax``
    (None for the grid), ``q``, ``stored``, ``error``, ``step``, ``overflow`` (clipped).
    """
    if not math.isfinite(value):
        raise LmkitError(f"--value {value}: not a finite number; int8 has no code for nan or inf")
    grid = float(integer_grid(torch.tensor([value])).item())
    rows: list[dict[str, Any]] = [
        {
            "scheme": "integer grid (int8 as plain integers: no scale)",
            "absmax": None,
            "q": int(grid),
            "stored": grid,
            "error": grid - value,
            "step": 1.0,
            "overflow": not INT8_MIN - 0.5 <= value <= INT8_MAX + 0.5,
        }
    ]
    ranges = [(a, f"absmax {a:g} (the value inside a tensor whose max |x| is {a:g})") for a in tensor_absmaxes]
    if absmax is not None and all(absmax != a for a, _ in ranges):
        ranges.append((float(absmax), f"absmax {absmax:g} (--absmax)"))
    if abs(value) > 0 and all(abs(value) != a for a, _ in ranges):
        ranges.append((abs(value), "absmax = |value| (the value is its tensor's largest entry)"))
    for a, label in ranges:
        r = represent(value, "int8", a)
        rows.append(
            {
                "scheme": label,
                "absmax": a,
                "q": r.int8_q,
                "stored": r.stored,
                "error": r.error,
                "step": r.step,
                "overflow": r.overflow,
            }
        )
    return rows


def int8_scheme_errors(w: torch.Tensor) -> dict[str, Any]:
    """What each int8 scheme does to a 2-D tensor ``w`` (rows = output channels): the error of the
    integer grid, of one absmax scale for the whole tensor, and of one per row (what lmkit stores).

    Returns ``shape``, ``absmax`` (whole tensor), ``row_absmax_min`` / ``row_absmax_max`` and, per
    scheme (``integer_grid``, ``per_tensor``, ``per_channel``), ``max_abs``, ``mean_abs``,
    ``p99_abs`` (99th percentile of |error|) and ``relative_rms`` (RMS error / RMS of w).
    """
    x = w.detach().to(torch.float32)
    x2 = x.reshape(x.shape[0], -1) if x.dim() >= 2 else x.reshape(1, -1)
    rms = float(x2.pow(2).mean().sqrt()) if x2.numel() else 0.0

    def stats(back: torch.Tensor) -> dict[str, float]:
        err = (back - x2).abs().flatten()
        if not err.numel():
            return {"max_abs": 0.0, "mean_abs": 0.0, "p99_abs": 0.0, "relative_rms": 0.0}
        k = max(1, math.ceil(0.99 * err.numel()))
        return {
            "max_abs": float(err.max()),
            "mean_abs": float(err.mean()),
            "p99_abs": float(err.kthvalue(k).values),
            "relative_rms": float(err.pow(2).mean().sqrt()) / rms if rms else 0.0,
        }

    row_max = x2.abs().amax(dim=1) if x2.numel() else torch.zeros(1)
    return {
        "shape": list(x.shape),
        "absmax": float(row_max.max()),
        "row_absmax_min": float(row_max.min()),
        "row_absmax_max": float(row_max.max()),
        "integer_grid": stats(integer_grid(x2)),
        "per_tensor": stats(absmax_dequantize(*absmax_quantize(x2, dim=None))),
        "per_channel": stats(absmax_dequantize(*absmax_quantize(x2, dim=1))),
    }


def example_tensor(rows: int = 16, cols: int = 1024, seed: int = 0) -> torch.Tensor:
    """A weight-like example for ``lmkit numerics``: Gaussian rows whose absmax runs evenly from 1
    to 8 (rows of a trained matrix differ in range, which is what per-channel scales are for)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, cols, generator=g)
    return x / x.abs().amax(dim=1, keepdim=True) * torch.linspace(1.0, 8.0, rows)[:, None]


# --------------------------------------------------------------------------- command line


def parse_value(text: str | float) -> float:
    """A number, or one of the names pi, e, tau (optionally negative: -pi)."""
    if isinstance(text, (int, float)):
        return float(text)
    t = text.strip().lower()
    sign = -1.0 if t.startswith("-") else 1.0
    named = {"pi": math.pi, "π": math.pi, "e": math.e, "tau": math.tau}
    if t.lstrip("+-") in named:
        return sign * named[t.lstrip("+-")]
    try:
        return float(t)
    except ValueError:
        raise LmkitError(f"--value must be a number or pi/e/tau, got {text!r}") from None


def report(value: float, absmax: float | None = None) -> dict[str, object]:
    """Everything ``lmkit numerics`` shows, as plain data: the formats, ``int8_value`` (the rows of
    ``int8_value_table``) and ``int8_tensor`` (``int8_scheme_errors`` of ``example_tensor()``)."""
    return {
        "value": value,
        "formats": {
            name: {"info": asdict(format_info(name)), "representation": asdict(represent(value, name, absmax))}
            for name in FORMATS
        },
        "int8_value": int8_value_table(value, absmax),
        "int8_tensor": {
            "about": "16 x 1024 Gaussian rows, row absmax from 1 to 8 (seed 0)",
            **int8_scheme_errors(example_tensor()),
        },
    }


__all__ = [
    "FORMATS",
    "INT8_MAX",
    "INT8_MIN",
    "INT8_QMAX",
    "TENSOR_ABSMAXES",
    "FormatInfo",
    "Representation",
    "absmax_dequantize",
    "absmax_quantize",
    "bytes_per_value",
    "example_tensor",
    "float32_bits",
    "format_info",
    "int8_scheme_errors",
    "int8_value_table",
    "integer_grid",
    "parse_value",
    "quantization_error",
    "report",
    "represent",
    "torch_dtype",
]
