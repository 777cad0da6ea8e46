"""``lmkit demo``: the whole pipeline on a built-in default corpus, in minutes on a laptop CPU.

The default corpus is real English text found on the machine at run time (nothing is copied
into the repository): the license texts of ``/usr/share/common-licenses``, the per-package
``/usr/share/doc/*/copyright`` files of a Debian-like system (legal text with heavy natural
duplication, which curation then shows), the docstrings of Python's standard library (read with
``ast``, nothing is imported), and, when installed, Debian text packages such as ``fortunes``.
Whatever is missing is skipped; the demo stops with a clear message only when less than
``MIN_CORPUS_BYTES`` of text is found at all.

Steps: gather → curate → train a tokenizer → pack → plan → pre-train a small decoder → evaluate →
generate → quantize → model card → publish to a local hub. Every artefact's path is printed.
"""

from __future__ import annotations

import argparse
import ast
import glob
import gzip
import json
import os
import sys
import sysconfig
import time
from pathlib import Path
from typing import Any, Iterator

from lmkit.errors import LmkitError

MIN_CORPUS_BYTES = 200_000


def _license_docs() -> Iterator[tuple[str, str, str]]:
    for path in sorted(glob.glob("/usr/share/common-licenses/*")):
        if os.path.isfile(path) and not os.path.islink(path):
            yield from _file_doc(path, "common-licenses")


def _copyright_docs() -> Iterator[tuple[str, str, str]]:
    for path in sorted(glob.glob("/usr/share/doc/*/copyright")):
        yield from _file_doc(path, "debian-copyright")


def _file_doc(path: str, source: str) -> Iterator[tuple[str, str, str]]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return
    if text.strip():
        yield path, text, source


def _fortune_docs() -> Iterator[tuple[str, str, str]]:
    for path in sorted(glob.glob("/usr/share/games/fortunes/*")):
        if path.endswith(".dat") or not os.path.isfile(path):
            continue
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        for i, piece in enumerate(text.split("\n%\n")):
            if piece.strip():
                yield f"{path}:{i}", piece.strip(), "fortunes"


def _docstring_docs(limit_files: int = 4000) -> Iterator[tuple[str, str, str]]:
    """Module, class and function docstrings of the standard library, one document per module."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in stdlib.rglob("*.py") if "test" not in p.parts and "site-packages" not in p.parts)
    for path in files[:limit_files]:
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, SyntaxError, ValueError):
            continue
        parts = []
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if doc and len(doc) > 40:
                    parts.append(doc)
        if parts:
            yield str(path), "\n\n".join(parts), "python-docstrings"


SOURCES = {
    "common-licenses": _license_docs,
    "debian-copyright": _copyright_docs,
    "python-docstrings": _docstring_docs,
    "fortunes": _fortune_docs,
}


def gather_default_corpus(out_dir: str | Path, max_bytes: int = 24_000_000) -> dict[str, Any]:
    """Write the default corpus as ``out_dir/<source>.jsonl.gz`` files; return what was found."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    found: dict[str, Any] = {}
    total = 0
    for name, gen in SOURCES.items():
        n_docs = n_bytes = 0
        path = out / f"{name}.jsonl.gz"
        tmp = path.with_suffix(".tmp")
        with gzip.open(tmp, "wt", encoding="utf-8") as f:
            for doc_id, text, source in gen():
                if total + n_bytes >= max_bytes:
                    break
                f.write(json.dumps({"id": doc_id, "text": text, "source": source}) + "\n")
                n_docs += 1
                n_bytes += len(text.encode("utf-8"))
        if n_docs:
            os.replace(tmp, path)
            found[name] = {"documents": n_docs, "bytes": n_bytes, "file": str(path)}
            total += n_bytes
        else:
            tmp.unlink()
    if total < MIN_CORPUS_BYTES:
        raise LmkitError(f"found only {total:,} bytes of text for the default corpus (need {MIN_CORPUS_BYTES:,}); "
                         "pass your own text: lmkit demo --data PATH")
    return found
