"""The figures of a model card as text, and the readers of the records they come from.

What this module owns: :data:`NOT_RECORDED` (what a card says for a figure the checkpoint does not
hold: never a guess), the number formatting every card section uses (and ``lmkit hub``'s table and
``lmkit plan``'s wall time), and the readers of ``meta.json``'s records (a nested key that may be
missing, the training tokens per source in whichever form the data summary recorded them).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, TypeGuard

NOT_RECORDED = "not recorded"


def thousands(x: Any) -> str:
    """1234567 -> '1,234,567'."""
    return f"{int(x):,}"


def si(x: float) -> str:
    """1234567 -> '1.23 M' (decimal prefixes)."""
    x = float(x)
    for div, unit in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= div:
            return f"{x / div:.3g} {unit}"
    return f"{x:.3g}"


def is_number(x: Any) -> TypeGuard[float]:
    """A finite int or float (not a bool): a figure that was recorded."""
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(float(x))


def duration(s: float) -> str:
    """Seconds as text, with minutes or hours beside them when long."""
    if s < 120:
        return f"{s:.1f} s"
    if s < 7200:
        return f"{s:.0f} s ({s / 60:.1f} min)"
    return f"{s:.0f} s ({s / 3600:.2f} h)"


def lookup(d: Any, *keys: str) -> Any:
    """``d[k1][k2]...``, or None where a key or a dict is missing."""
    for k in keys:
        if not isinstance(d, dict):
            return None
        d = d.get(k)
    return d


def source_tokens(meta: dict[str, Any]) -> dict[str, float]:
    """Source name -> training tokens, from whichever form the data summary recorded."""
    data = meta.get("data") or {}
    src = data.get("sources") or data.get("tokens_per_source") or {}
    if isinstance(src, dict):  # raw files are recorded by path: a dataset is named by its file name
        return {(Path(str(k)).name if "/" in str(k) else str(k)): float(v) for k, v in src.items() if is_number(v)}
    if isinstance(src, list):
        return {str(s): float("nan") for s in src}
    return {}
