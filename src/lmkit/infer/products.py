"""The decode step's matrix products: three kernels ("forms") and which one a copy of the weights uses.

What this module owns: how :class:`~lmkit.infer.packed.PackedDecoder` stores each weight matrix
and multiplies by it. A form is chosen once per packed copy (:func:`product_form`), and every
product of that copy goes through it:

* ``"mm"``: MKL's ``addmm`` on the matrix stored transposed, (in, out) contiguous. MKL runs a
  product of one to a few rows on one thread whatever the thread count; of the two libraries it
  is the faster for ONE row on one thread (its matrix-vector kernel), and every build has it;
* ``"onednn"``: oneDNN's matmul on weights reordered once into its blocked layout
  (``torch.ops.mkldnn``, what ``torch.compile``'s CPU freezing packs linear weights with); it uses
  every thread and keeps a handful of rows efficient, at a higher fixed cost per product;
* ``"panels"``: :mod:`lmkit.infer.rowkernel`'s kernel, compiled on this machine, on panels of 16
  output columns: the fastest of the three for 1 to 8 rows on one thread or several (8 rows on one
  thread ~1.5x oneDNN, one row ~1.1-1.7x MKL; see that module); only where it built.

Invariants: the forms agree to float32 rounding, not bit for bit; a product adds its bias and, for
:func:`add_mm`, the residual it is fused with; outputs given are written in place.
"""

from __future__ import annotations

from typing import Any

import torch

from lmkit.infer import rowkernel

BLOCK_ROWS = 8  # the rows oneDNN's blocked layout is tuned for (a server's batch; one row runs well on it too)
_ONEDNN_LINEAR: Any = getattr(getattr(torch.ops.mkldnn, "_linear_pointwise", None), "default", None)
_ONEDNN_OPS = _ONEDNN_LINEAR is not None and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")


def product_forms() -> tuple[str, ...]:
    """The forms this PyTorch build and machine can run ("panels" is built on first use)."""
    return tuple(form for form in ("mm", "onednn", "panels") if runs_here(form))


def runs_here(form: str) -> bool:
    """Can this build and machine multiply in ``form`` (only "panels" builds anything to know)?"""
    return form == "mm" or (form == "onednn" and _ONEDNN_OPS) or (form == "panels" and rowkernel.available())


def _onednn_usable() -> bool:
    return _ONEDNN_OPS and torch.backends.mkldnn.is_available() and bool(torch.backends.mkldnn.enabled)


def product_form(rows: int, weight_bytes: int, threads: int | None = None, cache_bytes: int | None = None) -> str:
    """How a packed copy for ``rows`` sequences of a model streaming ``weight_bytes`` multiplies: the
    compiled panels wherever they built (the fastest at every row and thread count measured).
    Without them: oneDNN for several rows, or for one row on several ``threads`` (default PyTorch's
    now) with weights past the last-level cache (``cache_bytes``, default this machine's: each
    product then streams its matrix from memory, which oneDNN does on every thread); MKL otherwise,
    and wherever this PyTorch lacks oneDNN."""
    from lmkit.plan.measure import last_level_cache_bytes

    if rowkernel.available():
        return "panels"
    if not _onednn_usable():
        return "mm"
    threads = torch.get_num_threads() if threads is None else threads
    cache = last_level_cache_bytes() if cache_bytes is None else cache_bytes
    past_cache = threads > 1 and cache is not None and weight_bytes > cache
    return "onednn" if rows > 1 or past_cache else "mm"


def pack_matrix(wt: torch.Tensor, form: str) -> Any:
    """A weight matrix given as (in, out), stored for ``form``: (in, out) contiguous ("mm"), oneDNN's
    blocked layout ("onednn") or :class:`~lmkit.infer.rowkernel.Panels` ("panels"). A new copy."""
    if form == "onednn":
        return torch.ops.mkldnn._reorder_linear_weight(wt.t().contiguous(), BLOCK_ROWS)
    if form == "panels":
        return rowkernel.pack(wt.t())
    return wt.contiguous()


def mm(form: str, x: torch.Tensor, w: Any, b: torch.Tensor | None, out: torch.Tensor | None = None) -> torch.Tensor:
    """x · w (+ b) for a matrix stored by :func:`pack_matrix`, into ``out`` when given."""
    if form == "panels":
        return rowkernel.panel_mm_trusted(x, w, b, out)
    if form == "onednn":
        y = _ONEDNN_LINEAR(x, w, b, "none", [], "")
        return y if out is None else out.copy_(y)
    if b is None:
        return torch.mm(x, w, out=out) if out is not None else torch.mm(x, w)
    return torch.addmm(b, x, w, out=out) if out is not None else torch.addmm(b, x, w)


def add_mm(form: str, acc: torch.Tensor, x: torch.Tensor, w: Any) -> torch.Tensor:
    """acc += x · w, in place (a residual addition fused into the product where the kernel can)."""
    if form == "panels":
        return rowkernel.panel_mm_trusted(x, w, None, acc, True)
    if form == "onednn":
        return acc.add_(_ONEDNN_LINEAR(x, w, None, "none", [], ""))
    return acc.addmm_(x, w)
