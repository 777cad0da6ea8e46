"""The held-out split of ``lmkit adapt``: which text of each set is trained on and which is held out.

What this module owns: :func:`make_split`, which writes ``split/{train,heldout}/{domain,general}/``
(curated-format shards) and ``split/split.json`` (per set: the rule used, documents and characters on
each side), and the two rules it chooses between, set by set:

* ``document`` (tried first): every document goes wholly to one side by a seeded hash of its text
  (:func:`is_held_out`), so identical documents land on the same side.
* ``text``, for a set with too few documents for that, i.e. one whose documents all hash to the same
  side (a general corpus given as one big file is one document): each document is cut once, at the
  paragraph break (blank line) that leaves the share of its characters after it closest to
  ``--heldout``; the part after the cut is held out, the part before it is trained on
  (:func:`tail_cut`). A document without a paragraph break is cut at a line break instead; one of a
  single line stays whole on the training side.

Invariants: the two sides of a set are disjoint pieces of its text (a document's two parts join back
into it; nothing is copied to both sides), so no tokenizer or model ever sees held-out text; both
sides of every set hold text, or the split stops with one :class:`LmkitError` naming the set; the
split is a pure function of the input text, ``--heldout`` and ``--seed``. ``split.json`` without a
``rule`` (written before there were two) means ``document``.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from lmkit.errors import LmkitError
from lmkit.files import replace_dir

PARTS = ("train", "heldout")
# A paragraph starts after a blank line (spaces or tabs on it allowed); a line after a newline.
_PARAGRAPH_START = re.compile(r"\n[ \t]*\n\s*")
_LINE_START = re.compile(r"\n")


def is_held_out(text: str, seed: int, fraction: float) -> bool:
    """Whether a document is held out: its text's seeded SHA-256, read as a number in [0, 1), < fraction."""
    h = hashlib.sha256(f"{seed}\x00{text}".encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(h[:8], "big") / 2.0**64 < fraction


def tail_cut(text: str, fraction: float) -> int | None:
    """Where the held-out end of ``text`` starts under the ``text`` rule: the start of the paragraph
    (else of the line) that leaves the share of characters from it to the end closest to ``fraction``
    (on a tie, the smaller share); never 0, so the training side keeps the first paragraph or line.
    None when ``text`` has no paragraph or line break with text after it."""
    stripped = len(text.rstrip())
    for pattern in (_PARAGRAPH_START, _LINE_START):
        starts = [m.end() for m in pattern.finditer(text) if m.end() < stripped]
        if starts:
            target = fraction * len(text)
            return min(reversed(starts), key=lambda c: abs(len(text) - c - target))
    return None


def split_dir(out: Path, part: str, name: str) -> Path:
    """Where one side of one set lies: ``split/train/domain``, ``split/heldout/general``..."""
    return out / "split" / part / name


def _write_set(tmp: Path, name: str, pieces: Iterable[tuple[str, str, str]]) -> dict[str, int]:
    """Write ``(part, id, text)`` pieces into ``tmp/{train,heldout}/name``; documents and characters per part."""
    from lmkit.data.curate.engine import ShardWriter

    writers = {}
    for part in PARTS:
        folder = tmp / part / name
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        writers[part] = ShardWriter(folder, 100_000, 256_000_000, 5)
    n = {**{p: 0 for p in PARTS}, **{f"{p}_chars": 0 for p in PARTS}}
    for part, doc_id, text in pieces:
        writers[part].write([doc_id], [text], [name])
        n[part] += 1
        n[f"{part}_chars"] += len(text)
    for w in writers.values():
        w.close()
    return n


def _by_document(docs: Iterable[Any], seed: int, fraction: float) -> Iterator[tuple[str, str, str]]:
    for d in docs:
        yield ("heldout" if is_held_out(d.text, seed, fraction) else "train"), d.id, d.text


def _by_text(docs: Iterable[Any], fraction: float) -> Iterator[tuple[str, str, str]]:
    for d in docs:
        cut = tail_cut(d.text, fraction)
        if cut is None:
            yield "train", d.id, d.text
            continue
        yield "train", d.id, d.text[:cut]
        yield "heldout", f"{d.id}#heldout", d.text[cut:]


def split_set(
    name: str, paths: list[str], tmp: Path, seed: int, fraction: float, text_field: str = "text"
) -> dict[str, Any]:
    """Split one set into ``tmp/{train,heldout}/name`` by the ``document`` rule, else the ``text`` rule."""
    from lmkit.data.read import iter_documents

    def docs() -> Iterator[Any]:
        return (d for d in iter_documents(paths, text_field=text_field) if d.text.strip())

    n = _write_set(tmp, name, _by_document(docs(), seed, fraction))
    documents = n["train"] + n["heldout"]
    where = ", ".join(paths)
    if documents == 0:
        raise LmkitError(f"{where}: holds no {name} text (every document is empty)")
    rule = "document"
    if n["train"] == 0 or n["heldout"] == 0:
        rule = "text"
        n = _write_set(tmp, name, _by_text(docs(), fraction))
        if n["heldout"] == 0:
            raise LmkitError(
                f"{where}: its {documents} {name} document{'s are' if documents > 1 else ' is'} too "
                f"few to hold out whole ones (--heldout {fraction:g}), and "
                f"{'none has a' if documents > 1 else 'it has no'} line break to hold out an end at; "
                "give more documents or text of several lines"
            )
    chars = n["train_chars"] + n["heldout_chars"]
    return {
        "rule": rule,
        "documents": documents,
        "train": n["train"],
        "heldout": n["heldout"],
        "train_chars": n["train_chars"],
        "heldout_chars": n["heldout_chars"],
        "heldout_share": n["heldout_chars"] / chars,
    }


def make_split(
    sets: dict[str, list[str]], out: Path, seed: int, fraction: float, text_field: str = "text"
) -> dict[str, Any]:
    """Write ``out/split/`` for every set (name -> paths), once; return what ``split.json`` holds."""
    done = out / "split" / "split.json"
    if done.is_file():
        return dict(json.loads(done.read_text(encoding="utf-8")))
    tmp = out / ".split.partial"
    if tmp.exists():
        shutil.rmtree(tmp)
    counts = {name: split_set(name, paths, tmp, seed, fraction, text_field) for name, paths in sets.items()}
    (tmp / "split.json").write_text(json.dumps(counts, indent=2) + "\n", encoding="utf-8")
    replace_dir(tmp, out / "split")
    return counts


def describe(counts: dict[str, Any]) -> list[str]:
    """One line per set: the rule used and what went to each side (old ``split.json``: the document rule)."""
    lines = []
    for name, c in counts.items():
        share = f" ({100 * c['heldout_share']:.1f}% of its characters)" if "heldout_share" in c else ""
        if c.get("rule", "document") == "document":
            lines.append(
                f"{name}: whole documents by a seeded hash of their text: {c['train']:,} trained on, "
                f"{c['heldout']:,} held out{share}"
            )
        else:
            lines.append(
                f"{name}: too few documents ({c['documents']:,}) to hold out whole ones: the closing "
                f"paragraphs of {c['heldout']:,} of them held out{share}, the rest trained on"
            )
    return lines


__all__ = ["PARTS", "is_held_out", "tail_cut", "split_dir", "split_set", "make_split", "describe"]
