"""The ``families`` command: the three model families (objective, context, tasks, well-known
models) and how to choose between them, as a table or one JSON object (``lmkit.families``)."""

from __future__ import annotations

import argparse
import textwrap
from dataclasses import asdict
from typing import Any

from lmkit.cli.common import add_json, print_json
from lmkit.families import FAMILIES, HOW_TO_CHOOSE, table


def add_families(sub: Any) -> None:
    p = sub.add_parser(
        "families",
        help="the three model families: objective, context, tasks, well-known models",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Which transformer family to pre-train (model.family in the config):\n\n"
        + table(96)
        + "\n\n"
        + HOW_TO_CHOOSE,
    )
    add_json(p, "the table as JSON")
    p.set_defaults(func=_run_families)


def _run_families(args: argparse.Namespace) -> int:
    """``lmkit families``: print the table (or JSON)."""
    if args.json:
        print_json([asdict(f) for f in FAMILIES])
        return 0
    print(table())
    print()
    print(textwrap.fill(HOW_TO_CHOOSE, 100))
    return 0
