"""The documentation's shape: README.md is a front door (at most MAX_README_LINES lines, no "now",
"here" or "today" in its prose) whose links, like every docs page's, resolve; and no figure is dated by a time-relative word ("now",
"here", "today", ...) in README.md, docs/*.md or benchmarks/README.md, where a figure belongs with
the date and machine it was measured on. The same check runs over lmkit's docstrings (module,
class and function), with DOCSTRINGS_CHECKED on.

The rule is deliberately simple: a sentence of prose (code blocks, inline code and link targets
removed) that holds a number standing on its own (not the 16 of ``fp16`` or a path's digits) must
not hold a time-relative word anywhere.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md")), ROOT / "benchmarks" / "README.md"]
MAX_README_LINES = 250
DOCSTRINGS_CHECKED = True  # every docstring under src/lmkit is checked

TIME_WORDS = re.compile(r"\b(now|here|today|currently|at present|these days|nowadays)\b", re.IGNORECASE)
FIGURE = re.compile(r"(?<![\w.\-/])\d")  # a digit that starts a number of its own
_FENCE = re.compile(r"^\s*(```|~~~).*?^\s*(```|~~~)\s*$", re.MULTILINE | re.DOTALL)
_INLINE_CODE = re.compile(r"`+[^`]*`+")
_LINK_TARGET = re.compile(r"\]\([^)]*\)")
_UNIT_START = re.compile(r"^\s*(\||[-*+] |#|\d+\. )")
_SENTENCE_END = re.compile(r"(?<=[.!?;])\s+")
_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def prose_sentences(text: str) -> list[str]:
    """The sentences of ``text`` as prose: fenced and indented code, inline code and link targets
    removed; a table row, list item or heading starts a new unit before sentences are split."""
    text = _LINK_TARGET.sub("]", _INLINE_CODE.sub(" ", _FENCE.sub("\n", text)))
    out: list[str] = []
    for para in re.split(r"\n\s*\n", text):
        lines = [line for line in para.splitlines() if line.strip()]
        if not lines or all(line.startswith("    ") for line in lines):
            continue  # an indented code block
        units: list[list[str]] = []
        for line in lines:
            if not units or _UNIT_START.match(line):
                units.append([])
            units[-1].append(line.strip())
        for unit in units:
            out += [s for s in _SENTENCE_END.split(" ".join(unit)) if s.strip()]
    return out


def time_relative_figures(text: str) -> list[str]:
    """The sentences of ``text`` that hold both a figure and a time-relative word."""
    return [s for s in prose_sentences(text) if FIGURE.search(s) and TIME_WORDS.search(s)]


def docstring_hits(src: Path = ROOT / "src" / "lmkit") -> list[str]:
    """``path:line: sentence`` for every module, class and function docstring sentence under
    ``src`` that holds both a figure and a time-relative word."""
    hits: list[str] = []
    for path in sorted(src.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                line = getattr(node, "lineno", 1)
                for sentence in time_relative_figures(doc or ""):
                    hits.append(f"{path.relative_to(ROOT)}:{line}: {sentence}")
    return hits


def _slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    text = _INLINE_CODE.sub(lambda m: m.group(0).strip("`"), heading.strip().lstrip("#").strip()).lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    text = _FENCE.sub("\n", page.read_text(encoding="utf-8"))
    return {_slug(line) for line in text.splitlines() if line.startswith("#")}


# --------------------------------------------------------------------------- the checker itself


def test_the_checker_flags_a_dated_figure_and_spares_code_and_plain_words() -> None:
    assert time_relative_figures("The fit takes 3.2 s now. It is exact.") == ["The fit takes 3.2 s now."]
    assert time_relative_figures("On this machine here, bf16 ran 1.44× faster.") != []
    assert time_relative_figures("| all three (today's cpu-small) | 2.114 |") != []
    assert time_relative_figures("Today it is fast. It took 14 s on 2026-12-03.") == []
    assert time_relative_figures("See the page here. Ratios are in `bf16 3.32× fp32 here`.") == []
    assert time_relative_figures("```\nratio 0.144 now\n```\nNo figure in this sentence, here.") == []
    assert time_relative_figures("Runs in fp16 here, hereby granted.") == []
    assert time_relative_figures("    lmkit plan --flops 1e20   # here\n") == []


# --------------------------------------------------------------------------- the pages


def test_readme_is_a_front_door() -> None:
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= MAX_README_LINES, f"README.md has {len(text.splitlines())} lines"
    assert "make demo" in text and "make test" in text  # the two set-up commands
    dated = [s for s in prose_sentences(text) if TIME_WORDS.search(s)]
    assert dated == [], (
        f"README.md says 'now', 'here' or 'today' (a figure's date and machine go to benchmarks/): {dated}"
    )
    linked = set(_LINK.findall(text))
    for page in sorted((ROOT / "docs").glob("*.md")):
        assert f"docs/{page.name}" in linked, f"README.md does not link docs/{page.name}"
    assert "benchmarks/README.md" in linked


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_figure_is_dated_by_a_time_relative_word(page: Path) -> None:
    assert page.is_file()
    hits = time_relative_figures(page.read_text(encoding="utf-8"))
    assert hits == [], f"{page.relative_to(ROOT)}: a figure beside a time-relative word: {hits}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_and_images_resolve(page: Path) -> None:
    text = _FENCE.sub("\n", page.read_text(encoding="utf-8"))
    for target in _LINK.findall(text):
        if re.match(r"[a-z]+:", target):
            continue  # http(s), mailto
        file, _, anchor = target.partition("#")
        dest = (page.parent / file).resolve() if file else page
        assert dest.exists(), f"{page.relative_to(ROOT)}: link to {target}: no such file"
        if anchor and dest.suffix == ".md":
            assert anchor in _anchors(dest), f"{page.relative_to(ROOT)}: link to {target}: no such heading"


def test_docstrings_date_no_figure_by_a_time_relative_word() -> None:
    hits = docstring_hits()
    if not DOCSTRINGS_CHECKED:
        pytest.skip(
            f"{len(hits)} docstring sentence(s) hold a figure and a time-relative word "
            "(not asserted until DOCSTRINGS_CHECKED is switched on)"
        )
    assert hits == [], "\n".join(hits)
