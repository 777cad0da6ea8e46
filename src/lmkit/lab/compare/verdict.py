"""The verdict of ``lmkit compare``: which model is best on the user's text, outright, per unit of
memory and per unit of time, and whether training one's own model from scratch could match the
best foundation model within the user's budget.

What this module owns: :func:`memory_score`, :func:`speed_score`, :func:`ranked_objective`, :func:`decide` (the winners and
the sentences) over the rows of :mod:`lmkit.lab.compare.rows` (with ``scratch``, the cost of
:func:`lmkit.lab.compare.cost.scratch_cost`, on each). Pure: no measuring, no printing.

The measures, each "higher is better":

* the gain of a model is the bits per byte it saves against knowing nothing: ``8 - bits_per_byte``
  (a byte is 8 bits when nothing is predicted);
* per unit of memory: gain per GB of inference memory at the checkpoint's own precision;
* per unit of time: gain per millisecond a generated token takes (gain x generated tokens/s / 1000).

A row with an error, or without the figure a measure needs, takes no part in that measure, nor in
the per-unit ones a row that saves nothing (8 bits per byte or more). Ties go to the row listed first.
Bits per byte rank models of one objective: next-token prediction's when any model has it (a
masked LM's or a span corruption's score only hidden tokens, with both sides in view); the best of
each other objective is named apart.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

BITS_PER_BYTE_UNPREDICTED = 8.0
FOUNDATION = ("imported", "continued")
OBJECTIVE_WORDS = {
    "clm": "next-token",
    "mlm": "masked-LM",
    "span": "span-corruption",
    "infill": "text-infilling",
}  # rows descending from a foundation model (a base_model record)


def gain(row: dict[str, Any]) -> float | None:
    bpb = row.get("bits_per_byte")
    return None if row.get("error") or bpb is None else BITS_PER_BYTE_UNPREDICTED - float(bpb)


def memory_score(row: dict[str, Any]) -> float | None:
    """Bits per byte saved per GB of inference memory (at the checkpoint's precision); None for a
    model that saves nothing (a cost per unit of nothing ranks nothing)."""
    g, mem = gain(row), (row.get("memory") or {}).get("inference_bytes")
    return None if g is None or g <= 0 or not mem else g / (mem / 1e9)


def speed_score(row: dict[str, Any]) -> float | None:
    """Bits per byte saved per millisecond per generated token (batch 1, this machine); None for a
    model that saves nothing."""
    g, tps = gain(row), (row.get("speed") or {}).get("generated_tokens_per_s")
    return None if g is None or g <= 0 or not tps else g * tps / 1000.0


def _best(rows: Sequence[dict[str, Any]], score: Callable[[dict[str, Any]], float | None]) -> dict[str, Any] | None:
    scored = [(s, i) for i, r in enumerate(rows) if (s := score(r)) is not None]
    return rows[max(scored, key=lambda t: (t[0], -t[1]))[1]] if scored else None


def _hours(h: float) -> str:
    return f"{h * 60:.1f} minutes" if h < 1 else f"{h:,.1f} hours" if h < 48 else f"{h / 24:,.1f} days"


def ranked_objective(rows: Sequence[dict[str, Any]]) -> str:
    """The objective whose models the verdict ranks: next-token prediction (clm) when any model has
    it, else the first scored model's."""
    scored = [str(r.get("objective") or "clm") for r in rows if gain(r) is not None]
    return "clm" if "clm" in scored or not scored else scored[0]


def decide(rows: Sequence[dict[str, Any]], budget_hours: float | None = None) -> dict[str, Any]:
    """The winners (names, None where no row qualifies) and the verdict's sentences.

    Bits per byte compare across tokenizers but not across objectives: a masked LM's or a span
    corruption's scores only the hidden tokens, with the text on both sides in view. The winners
    are taken among the models of :func:`ranked_objective`; the best of each other objective gets
    a sentence of its own."""
    objective = ranked_objective(rows)
    others: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        if gain(r) is not None and str(r.get("objective") or "clm") != objective:
            others.setdefault(str(r.get("objective")), []).append(r)
    rows = [r for r in rows if str(r.get("objective") or "clm") == objective or gain(r) is None]
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
    if (gain(best) or 0.0) <= 0:
        lines.append(
            f"No model saves anything against knowing nothing ({BITS_PER_BYTE_UNPREDICTED:g} bits per byte): "
            "none is best per unit of memory or of time."
        )
    for obj, group in others.items():
        top = _best(group, gain)
        assert top is not None
        lines.append(
            f"Among the {OBJECTIVE_WORDS.get(obj, obj)} models (bits per byte of the hidden tokens only, read with "
            f"both sides in view: not comparable with next-token prediction's): best {top['name']} "
            f"({top['bits_per_byte']:.4f})."
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


__all__ = [
    "BITS_PER_BYTE_UNPREDICTED",
    "FOUNDATION",
    "OBJECTIVE_WORDS",
    "decide",
    "gain",
    "memory_score",
    "ranked_objective",
    "speed_score",
]
