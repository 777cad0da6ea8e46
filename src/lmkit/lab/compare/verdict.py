"""The verdict of ``lmkit compare``: which model is best on the user's text, outright, per unit of
memory and per unit of time, and whether training one's own model from scratch could match the
best foundation model within the user's budget.

What this module owns: :func:`memory_score`, :func:`speed_score`, :func:`decide` (the winners and
the sentences) over the rows of :mod:`lmkit.lab.compare.rows` (with ``scratch``, the cost of
:func:`lmkit.lab.compare.cost.scratch_cost`, on each). Pure: no measuring, no printing.

The measures, each "higher is better":

* the gain of a model is the bits per byte it saves against knowing nothing: ``8 - bits_per_byte``
  (a byte is 8 bits when nothing is predicted);
* per unit of memory: gain per GB of inference memory at the checkpoint's own precision;
* per unit of time: gain per millisecond a generated token takes (gain x generated tokens/s / 1000).

A row with an error, or without the figure a measure needs, takes no part in that measure. Ties
go to the row listed first.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

BITS_PER_BYTE_UNPREDICTED = 8.0
FOUNDATION = ("imported", "continued")  # rows descending from a foundation model (a base_model record)


def gain(row: dict[str, Any]) -> float | None:
    bpb = row.get("bits_per_byte")
    return None if row.get("error") or bpb is None else BITS_PER_BYTE_UNPREDICTED - float(bpb)


def memory_score(row: dict[str, Any]) -> float | None:
    """Bits per byte saved per GB of inference memory (at the checkpoint's precision)."""
    g, mem = gain(row), (row.get("memory") or {}).get("inference_bytes")
    return None if g is None or not mem else g / (mem / 1e9)


def speed_score(row: dict[str, Any]) -> float | None:
    """Bits per byte saved per millisecond per generated token (batch 1, this machine)."""
    g, tps = gain(row), (row.get("speed") or {}).get("generated_tokens_per_s")
    return None if g is None or not tps else g * tps / 1000.0


def _best(rows: Sequence[dict[str, Any]], score: Callable[[dict[str, Any]], float | None]) -> dict[str, Any] | None:
    scored = [(s, i) for i, r in enumerate(rows) if (s := score(r)) is not None]
    return rows[max(scored, key=lambda t: (t[0], -t[1]))[1]] if scored else None


def _hours(h: float) -> str:
    return f"{h * 60:.1f} minutes" if h < 1 else f"{h:,.1f} hours" if h < 48 else f"{h / 24:,.1f} days"


def decide(rows: Sequence[dict[str, Any]], budget_hours: float | None = None) -> dict[str, Any]:
    """The winners (names, None where no row qualifies) and the verdict's sentences."""
    best = _best(rows, gain)
    by_mem = _best(rows, memory_score)
    by_speed = _best(rows, speed_score)
    found = _best([r for r in rows if r.get("origin") in FOUNDATION], gain)
    lines: list[str] = []
    if best is None:
        lines.append("No model could be scored on your text: see each row's error.")
        return {"best": None, "best_per_memory": None, "best_per_speed": None, "best_foundation": None,
                "scratch_within_budget": None, "lines": lines}  # fmt: skip
    lines.append(f"Best on your text: {best['name']} ({best['bits_per_byte']:.4f} bits per byte).")
    if by_mem is not None:
        lines.append(
            f"Best per unit of memory: {by_mem['name']} ({memory_score(by_mem):.3g} bits per byte saved per GB "
            "of inference memory)."
        )
    if by_speed is not None:
        lines.append(
            f"Best per unit of time: {by_speed['name']} ({speed_score(by_speed):.3g} bits per byte saved per "
            "millisecond per generated token)."
        )
    within: bool | None = None
    if found is None:
        lines.append("No foundation model (imported, or continued from one) was among the models compared.")
    else:
        sc = found.get("scratch") or {}
        head = f"Matching the best foundation model, {found['name']} ({found['bits_per_byte']:.4f} bits per byte)"
        if not sc.get("reachable"):
            lines.append(f"{head}, from scratch: out of reach under {sc.get('law', 'the law')} ({sc.get('why')}).")
            within = False if sc else None
        else:
            cost = (
                f"{head}, from scratch takes about {sc['flops']:.3g} FLOPs ({sc['params']:.3g} parameters on "
                f"{sc['tokens']:.3g} tokens under {sc['law']}): {_hours(sc['hours'])} on this machine"
            )
            if budget_hours is None:
                lines.append(cost + " (give --budget-hours to weigh it against your budget).")
            else:
                within = sc["hours"] <= budget_hours
                lines.append(
                    cost
                    + (
                        f", within your budget of {_hours(budget_hours)}."
                        if within
                        else f", beyond your budget of {_hours(budget_hours)}: start from the foundation model."
                    )
                )
    return {
        "best": best["name"],
        "best_per_memory": by_mem["name"] if by_mem else None,
        "best_per_speed": by_speed["name"] if by_speed else None,
        "best_foundation": found["name"] if found else None,
        "scratch_within_budget": within,
        "lines": lines,
    }


__all__ = ["BITS_PER_BYTE_UNPREDICTED", "FOUNDATION", "decide", "gain", "memory_score", "speed_score"]
