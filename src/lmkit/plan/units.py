"""Reading counts people write: ``1.5B``, ``125M``, ``300e9``, ``8k`` -> a number. Pure; the one
count parser of lmkit (``lmkit plan``'s sizes and budgets, ``lmkit mix --tokens``, hub sizes).
"""

from __future__ import annotations

import math

from lmkit.errors import LmkitError


def parse_count(text: str | float, what: str = "value") -> float:
    """1.5B, 70b, 125M, 300e9, 1.4T, 8k -> a float."""
    if isinstance(text, (int, float)):
        return float(text)
    t = str(text).strip().replace("_", "").replace(",", "")
    mult = {"k": 1e3, "m": 1e6, "b": 1e9, "g": 1e9, "t": 1e12, "p": 1e15}
    try:
        if t and t[-1].lower() in mult:
            v = float(t[:-1]) * mult[t[-1].lower()]
        else:
            v = float(t)
    except ValueError:
        raise LmkitError(f"{what} must be a number like 7e9, 1.5B, 125M or 1.4T, got {text!r}") from None
    if not math.isfinite(v):
        raise LmkitError(f"{what} must be a finite number, got {text!r}")
    if v <= 0:
        raise LmkitError(f"{what} must be positive, got {text!r}")
    return v


__all__ = ["parse_count"]
