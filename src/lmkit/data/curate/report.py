"""What a curation run reports: :class:`StageStats` (per-stage counts, reasons and examples, merged
across workers), the survival per language (:func:`language_table`), the warnings when one rule
removes most of one source (:func:`source_warnings`: the rule, the source, and the setting that
keeps it) and :func:`report_markdown` (``report.md`` from the ``report.json`` dict).
"""

from __future__ import annotations

import re
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


def language_table(
    docs_in: Counter[str],
    chars_in: Counter[str],
    docs_out: Counter[str],
    chars_out: Counter[str],
    tokens_out: Counter[str],
) -> dict[str, dict[str, Any]]:
    """Per language (most documents first): what the language stage saw and what the output kept."""
    langs = sorted(set(docs_in) | set(docs_out), key=lambda x: (-docs_in[x], -docs_out[x], x))
    return {
        x: {
            "docs_in": docs_in[x],
            "chars_in": chars_in[x],
            "docs_out": docs_out[x],
            "chars_out": chars_out[x],
            "tokens_out": tokens_out[x],
            "docs_kept_pct": pct(docs_out[x], docs_in[x]) if docs_in[x] else None,  # None: not identified here
        }
        for x in langs
    }


# reason -> (what it usually means, the setting that keeps such documents)
_WHY: dict[str, tuple[str, str]] = {
    "url_blocked_domain": ("its URLs' domains are block-listed", "--url_filter.enabled false"),
    "url_blocked_word": ("its URLs hold block-listed words", "--url_filter.enabled false"),
    "url_blocked_subword": ("its URLs hold block-listed words", "--url_filter.enabled false"),
    "url_soft_words": ("its URLs hold several soft block-listed words", "--url_filter.soft_word_hits 3"),
    "extract_no_main_text": ("the extractor found no main text", "--extract.html trafilatura"),
    "extract_failed": ("the extractor failed on its pages", "--extract.html trafilatura"),
    "language_not_wanted": ("it is in another language", "--languages with its language"),
    "language_low_score": ("its language is identified with low confidence", "--language.min_score 0.3"),
    "gopher_short_doc": ("its documents are short", "--gopher_quality.min_words 10"),
    "gopher_long_doc": ("its documents are long", "--gopher_quality.max_words null"),
    "gopher_below_avg_word_length": ("its words are short", "--gopher_quality.min_mean_word_length null"),
    "gopher_above_avg_word_length": ("its words are long", "--gopher_quality.max_mean_word_length null"),
    "gopher_too_many_hashes": ("it holds many '#'", "--gopher_quality.max_symbol_word_ratio null"),
    "gopher_too_many_ellipsis": ("it holds many ellipses", "--gopher_quality.max_symbol_word_ratio null"),
    "gopher_too_many_bullets": ("it is mostly bullet lists", "--gopher_quality.max_bullet_lines_ratio null"),
    "gopher_too_many_end_ellipsis": ("its lines end in ellipses", "--gopher_quality.max_ellipsis_lines_ratio null"),
    "gopher_below_alpha_threshold": ("many words hold no letter", "--gopher_quality.min_alpha_words_ratio null"),
    "gopher_not_enough_stop_words": ("it has few English stop words", "--gopher_quality.min_stop_words null"),
    "c4_curly_bracket": ("the text holds code", "--c4.curly_bracket false"),
    "c4_lorem_ipsum": ("it holds placeholder text", "--c4.lorem_ipsum false"),
    "c4_too_few_sentences": ("few lines end a sentence", "--c4.terminal_punct false"),
    "dup_para_frac": ("paragraphs repeat", "--gopher_repetition.dup_para_frac null"),
    "dup_para_char_frac": ("paragraphs repeat", "--gopher_repetition.dup_para_char_frac null"),
    "dup_line_frac": ("lines repeat", "--gopher_repetition.dup_line_frac null"),
    "dup_line_char_frac": ("lines repeat", "--gopher_repetition.dup_line_char_frac null"),
    "blocklisted_words": ("it holds block-listed words", "--blocklist.max_fraction 0.01"),
}


def _why(reason: str) -> tuple[str, str]:
    if reason in _WHY:
        return _WHY[reason]
    m = re.fullmatch(r"top_(\d+)_gram|duplicated_(\d+)_n_grams", reason)
    if m:
        key = "top_ngram_char_frac" if m.group(1) else "dup_ngram_char_frac"
        return ("phrases repeat", f'--gopher_repetition.{key} "{{{m.group(1) or m.group(2)}: 1.0}}"')
    return ("", "")


def source_warnings(
    source_docs: Counter[str], removed: Counter[tuple[str, str, str]], share: float | None, limit: int = 1000
) -> list[dict[str, Any]]:
    """One warning per rule that removed at least ``share`` of one source's documents, listing the
    sources (most removed first, at most ``limit``), the reason and the setting that keeps them."""
    if share is None:
        return []
    hits: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for (src, stage, reason), n in removed.items():
        total = source_docs.get(src, 0)
        if reason == "empty" or not total or n / total < share:
            continue
        hits.setdefault((stage, reason), []).append({"source": src, "removed": n, "docs": total})
    out = []
    for (stage, reason), rows in sorted(hits.items(), key=lambda kv: -sum(r["removed"] for r in kv[1])):
        rows.sort(key=lambda r: (-r["removed"] / r["docs"], -r["removed"], r["source"]))
        what, setting = _why(reason)
        first = rows[0]
        msg = (
            f"{reason} removed {pct(first['removed'], first['docs']):.0f}% of source {first['source']} "
            f"({first['removed']:,} of {first['docs']:,} documents)"
        )
        if len(rows) > 1:
            msg += f" and most of {len(rows) - 1:,} other source{'s' if len(rows) > 2 else ''}"
        msg += (f": {what}" if what else "") + (f"; {setting} keeps it" if setting else "")
        out.append({"stage": stage, "reason": reason, "setting": setting, "message": msg, "sources": rows[:limit]})
    return out


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
    if r.get("warnings"):
        lines += ["", "## Warnings: one rule removed most of a source", ""]
        for w in r["warnings"]:
            lines.append(f"- {_md_escape(w['message'])}")
    if r.get("languages"):
        lines += [
            "",
            "## Languages (as identified)",
            "",
            "| language | docs in | docs out | kept | chars in | chars out | tokens out |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for lang, x in r["languages"].items():
            lines.append(
                f"| {lang} | {_fmt_int(x['docs_in'])} | {_fmt_int(x['docs_out'])} "
                + (f"| {x['docs_kept_pct']:.2f}% " if x["docs_kept_pct"] is not None else "| - ")
                + f"| {_fmt_int(x['chars_in'])} | {_fmt_int(x['chars_out'])} | {_fmt_int(x['tokens_out'])} |"
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
        f"skipped, {_fmt_int(rd.get('bad_record_count', 0))} unreadable records or pages, "
        f"{_fmt_int(rd.get('non_text_records', 0))} WARC records not HTML, "
        f"{len(rd['empty_files'])} empty files, {_fmt_int(rd['empty_records'])} empty records"
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
    for path, record, reason in rd.get("bad_records", []):
        lines.append(f"- `{path}`" + (f" record {record}" if record else "") + f": {_md_escape(reason)}")
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
