"""Searching a hub: the query language of ``lmkit hub search`` and how matches are ranked.

A query is words and terms, all of which must hold: ``family:decoder``, ``task:fill-mask``,
``name:word``, size comparisons such as ``size<10M`` / ``params>=1M`` (counts as
:func:`lmkit.plan.units.parse_count` reads them), and any other word, which must appear in the model's
name (anywhere: ``legal`` finds ``alice/legal-gpt``, 3 points), in its family, task, architecture,
objective or push message (from the start of a word, 2 points), or in its model card (from the
start of a word, 1 point: ``mit`` finds an MIT licence but not every card's "limitations"). The
best scores come first, then names in order. A card is read through :meth:`Hub.read_file`, so
one that fails its checksum is never searched (a warning says so). The storage itself (names,
revisions, push and pull) is :mod:`lmkit.ship.hub`.
"""

from __future__ import annotations

import re
import sys
from typing import Any

from lmkit.errors import LmkitError
from lmkit.plan.units import parse_count
from lmkit.ship.hub import CARD_FILE, Hub


def search(
    hub: Hub,
    query: str = "",
    family: str | None = None,
    task: str | None = None,
    min_params: float | None = None,
    max_params: float | None = None,
) -> list[dict[str, Any]]:
    """The models of ``hub`` matching every term of ``query`` and the filters, best matches first.

    Terms: ``family:decoder``, ``task:fill-mask``, ``name:word``, size comparisons such as
    ``size<10M`` / ``params>=1M``; any other word must appear in the name, family, task,
    architecture, objective or model card (case-insensitive; outside the name, from the start of a
    word).
    """
    words: list[str] = []
    for term in query.split():
        low = term.lower()
        cmp = re.fullmatch(r"(size|params)(<=|>=|<|>|=)(.+)", low)
        if cmp:
            n = parse_count(cmp.group(3), "size")
            op = cmp.group(2)
            if op in ("<", "<="):
                max_params = min(max_params, n) if max_params is not None else n
                if op == "<":
                    max_params = n - 1
            if op in (">", ">="):
                min_params = max(min_params, n) if min_params is not None else n
                if op == ">":
                    min_params = n + 1
            if op == "=":
                min_params = max_params = n
        elif low.startswith("family:"):
            family = low.split(":", 1)[1]
        elif low.startswith("task:"):
            task = low.split(":", 1)[1]
        else:
            words.append(low.removeprefix("name:"))
    results = []
    for m in hub.entries():
        info = m.get("info") or {}
        if family and info.get("family") != family:
            continue
        if task and info.get("task") != task:
            continue
        p = info.get("params")
        if min_params is not None and not (isinstance(p, (int, float)) and p >= min_params):
            continue
        if max_params is not None and not (isinstance(p, (int, float)) and p <= max_params):
            continue
        fields = " ".join(str(info.get(k) or "") for k in ("family", "task", "architecture", "objective"))
        head = f"{m['name']} {fields} {m.get('message', '')}".lower()
        score = 0
        card_text: str | None = None
        ok = True
        for w in words:
            # names match anywhere ("legal" in "alice/legal-gpt"); other text from a word's
            # start, so "mit" finds a MIT licence but not every card's "limitations"
            starts_word = re.compile(r"(?<![a-z0-9])" + re.escape(w))
            if w in m["name"].lower():
                score += 3
            elif starts_word.search(head):
                score += 2
            else:
                if card_text is None:
                    try:
                        card_text = hub.read_file(m["name"], m["revision"], CARD_FILE).decode("utf-8").lower()
                    except (LmkitError, UnicodeDecodeError) as e:
                        # an unverified card is not searched; say so rather than fail the whole search
                        print(f"lmkit: warning: card not searched: {e}", file=sys.stderr)
                        card_text = ""
                if starts_word.search(card_text):
                    score += 1
                else:
                    ok = False
                    break
        if ok:
            m["score"] = score
            results.append(m)
    return sorted(results, key=lambda r: (-r["score"], r["name"]))


__all__ = ["search"]
