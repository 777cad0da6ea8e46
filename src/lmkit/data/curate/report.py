"""What a curation run reports: :class:`StageStats` (per-stage counts, reasons and examples, merged
across workers) and :func:`report_markdown` (``report.md`` from the ``report.json`` dict).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass
class StageStats:
    """Counts for one stage: what came in, what went out, why documents were removed."""

    name: str
    docs_in: int = 0
    docs_out: int = 0
    chars_in: int = 0
    chars_out: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    modified: int = 0  # documents kept but changed (normalised, lines dropped, PII redacted)
    seconds: float = 0.0  # time spent in the stage, summed over workers
    reasons: Counter[str] = field(default_factory=Counter)
    examples: dict[str, list[dict[str, str]]] = field(default_factory=dict)  # a few per reason
    extra: Counter[str] = field(default_factory=Counter)  # stage-specific counts (e.g. redactions)

    def add_example(self, reason: str, doc_id: str, source: str, text: str, limit: int, chars: int) -> None:
        lst = self.examples.setdefault(reason, [])
        if len(lst) < limit:
            lst.append({"id": doc_id, "source": source, "reason": reason, "text": text[:chars]})

    def merge(self, other: StageStats, limit: int) -> None:
        for f in ("docs_in", "docs_out", "chars_in", "chars_out", "tokens_in", "tokens_out", "modified", "seconds"):
            setattr(self, f, getattr(self, f) + getattr(other, f))
        self.reasons.update(other.reasons)
        self.extra.update(other.extra)
        for reason, lst in other.examples.items():
            mine = self.examples.setdefault(reason, [])
            mine.extend(lst[: max(0, limit - len(mine))])

    @property
    def removed(self) -> int:
        return self.docs_in - self.docs_out

    def to_dict(self, n_examples: int) -> dict[str, Any]:
        # a few examples, taking one reason after another (most frequent reasons first)
        picked: list[dict[str, str]] = []
        queues = [list(self.examples.get(r, [])) for r, _ in self.reasons.most_common()]
        while len(picked) < n_examples and any(queues):
            for q in queues:
                if q and len(picked) < n_examples:
                    picked.append(q.pop(0))
        return {
            "name": self.name,
            "docs_in": self.docs_in,
            "docs_out": self.docs_out,
            "removed": self.removed,
            "docs_kept_pct": pct(self.docs_out, self.docs_in),
            "chars_in": self.chars_in,
            "chars_out": self.chars_out,
            "tokens_in": self.tokens_in,
            "tokens_out": self.tokens_out,
            "tokens_kept_pct": pct(self.tokens_out, self.tokens_in),
            "modified": self.modified,
            "seconds": round(self.seconds, 3),
            "reasons": dict(self.reasons.most_common()),
            "extra": dict(self.extra),
            "examples": picked,
        }


def pct(a: float, b: float) -> float:
    """``a`` as a percentage of ``b``, rounded to 3 decimals (0 when ``b`` is 0)."""
    return round(100.0 * a / b, 3) if b else 0.0


def _fmt_int(n: int) -> str:
    return f"{n:,}"


def _md_escape(s: str) -> str:
    return s.replace("|", "\\|").replace("\n", " ⏎ ")


def report_markdown(r: dict[str, Any]) -> str:
    """The human-readable report: survival table, reasons, examples, read problems."""
    t = r["totals"]
    lines = ["# Curation report", ""]
    lines.append(f"Inputs: {', '.join(r['inputs'])}  ")
    lines.append(f"Output: {r['out']} ({len(r['output']['shards'])} shards, {r['output']['format']})  ")
    lines.append(
        f"Engine: {r['engine']}; {r['seconds']:.1f} s, {r['mb_per_s']:.2f} M chars/s, {r['docs_per_s']:.0f} docs/s  "
    )
    lines.append(f"Tokens counted with: {r['token_counter']}")
    lines += [
        "",
        "## Overall",
        "",
        "| | documents | characters | tokens |",
        "|---|---:|---:|---:|",
        f"| in | {_fmt_int(t['docs_in'])} | {_fmt_int(t['chars_in'])} | {_fmt_int(t['tokens_in'])} |",
        f"| out | {_fmt_int(t['docs_out'])} | {_fmt_int(t['chars_out'])} | {_fmt_int(t['tokens_out'])} |",
        f"| kept | {t['docs_kept_pct']:.2f}% | {t['chars_kept_pct']:.2f}% | {t['tokens_kept_pct']:.2f}% |",
        "",
        "## Stages (in order)",
        "",
        "| stage | docs in | docs out | removed | modified | chars in | chars out | tokens in | tokens out "
        "| tokens kept | seconds |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in r["stages"]:
        lines.append(
            f"| {s['name']} | {_fmt_int(s['docs_in'])} | {_fmt_int(s['docs_out'])} | {_fmt_int(s['removed'])} "
            f"| {_fmt_int(s['modified'])} | {_fmt_int(s['chars_in'])} | {_fmt_int(s['chars_out'])} "
            f"| {_fmt_int(s['tokens_in'])} | {_fmt_int(s['tokens_out'])} | {s['tokens_kept_pct']:.2f}% "
            f"| {s['seconds']:.1f} |"
        )
    lines += ["", "## Why documents were removed", ""]
    for s in r["stages"]:
        if not s["reasons"] and not s["extra"]:
            continue
        lines.append(f"### {s['name']}")
        lines.append("")
        for reason, n in s["reasons"].items():
            lines.append(f"- {reason}: {_fmt_int(n)}")
        for key, n in s["extra"].items():
            lines.append(f"- {key} replaced: {_fmt_int(n)}")
        if s["examples"]:
            lines += ["", "Examples of removed documents:", ""]
            for ex in s["examples"]:
                snippet = _md_escape(ex["text"][:300])
                lines.append(f"- `{ex['id']}` ({ex['reason']}): {snippet}")
        lines.append("")
    rd = r["read"]
    lines += [
        "## Reading",
        "",
        f"{_fmt_int(rd['files_read'])} files read, {_fmt_int(rd['documents'])} documents; "
        f"{_fmt_int(rd['skipped_file_count'])} files skipped, {_fmt_int(rd['bad_line_count'])} bad lines "
        f"skipped, {len(rd['empty_files'])} empty files, {_fmt_int(rd['empty_records'])} empty records"
        + (
            f", {_fmt_int(rd['surrogate_docs'])} documents with lone surrogates (JSON \\ud800..\\udfff escapes) "
            "replaced by U+FFFD"
            if rd.get("surrogate_docs")
            else ""
        )
        + ".",
        "",
    ]
    for path, reason in rd["skipped_files"]:
        lines.append(f"- skipped file `{path}`: {reason}")
    for path, line, reason in rd["bad_lines"]:
        lines.append(f"- `{path}` line {line}: {reason}")
    for path in rd["empty_files"]:
        lines.append(f"- empty file `{path}`")
    di = r["dedup_index"]
    lines += [
        "",
        "## Dedup index",
        "",
        f"exact: {_fmt_int(di['exact_keys'])} keys, {di['exact_bytes'] / 1e6:.1f} MB; "
        f"MinHash: {_fmt_int(di['minhash_keys'])} keys, {di['minhash_bytes'] / 1e6:.1f} MB",
        "",
    ]
    return "\n".join(lines)
