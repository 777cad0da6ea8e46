"""The tokenizer half of the domain-adaptation experiment: BloombergGPT's Table 3, on the user's text.

What this module owns: training the three tokenizers of ``lmkit adapt`` (one on the domain's
training text, one on the general training text, one on both together, "the mix") and measuring
them against each other:

* fertility on each held-out set (domain, general): tokens per whitespace word, tokens per UTF-8
  byte and characters per token (``lmkit.tokenizer.fertility`` does the counting);
* how each tokenizer cuts the user's domain terms (``"mens rea"``, ``"res judicata"``), as
  ``lmkit.tokenizer.split_words`` does: as the term appears in running text, after a space;
* vocabulary overlap between every pair: the *learned* tokens (not the special tokens, not the 256
  byte tokens every byte-level BPE has) that both contain, and the Jaccard share
  ``|A ∩ B| / |A ∪ B|``.

The functions here are pure given the tokenizers and texts, so a test can recompute every figure
by hand (tokens counted with ``encode``, words with ``str.split``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from lmkit.fertility import fertility, split_words
from lmkit.tokenizer import SPECIAL_TOKENS, Tokenizer, train_tokenizer

TOKENIZER_NAMES = ("domain", "general", "mix")


def learned_tokens(tok: Tokenizer) -> set[str]:
    """The vocabulary entries a tokenizer learned: all but the special tokens and the byte tokens.

    A token is kept in Hugging Face's byte-level form (``"Ġmens"``), so two tokenizers share a
    token exactly when they hold the same byte string; single-byte tokens (all 256 of them in every
    byte-level BPE) are left out, as they are shared by construction.
    """
    vocab: dict[str, int] = tok.hf.get_vocab(with_added_tokens=True)
    specials = set(SPECIAL_TOKENS) | {tok.hf.id_to_token(i) for i in tok.special_ids}
    out = {t for t, i in vocab.items() if t not in specials and len(tok.token_bytes(i)) > 1}
    return out


def vocab_overlap(toks: Mapping[str, Tokenizer]) -> list[dict[str, Any]]:
    """Every pair of tokenizers: learned tokens of each, shared tokens and the Jaccard share."""
    names = list(toks)
    sets = {n: learned_tokens(toks[n]) for n in names}
    rows = []
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            shared = len(sets[a] & sets[b])
            union = len(sets[a] | sets[b])
            rows.append(
                {
                    "a": a,
                    "b": b,
                    "learned_a": len(sets[a]),
                    "learned_b": len(sets[b]),
                    "shared": shared,
                    "jaccard": shared / union if union else 0.0,
                }
            )
    return rows


def fertility_row(tok: Tokenizer, texts: Sequence[str]) -> dict[str, Any]:
    """``lmkit.tokenizer.fertility`` plus tokens per byte (the inverse of bytes per token)."""
    f = fertility(tok, texts)
    f["tokens_per_byte"] = f["tokens"] / f["bytes"] if f["bytes"] else None
    return f


def term_splits(toks: Mapping[str, Tokenizer], terms: Sequence[str]) -> list[dict[str, Any]]:
    """How each tokenizer cuts each term (in running text): the pieces and their number."""
    rows = []
    for term in terms:
        row: dict[str, Any] = {"term": term}
        for name, tok in toks.items():
            pieces = split_words(tok, [term])[0][1]
            row[name] = {"tokens": len(pieces), "pieces": pieces}
        rows.append(row)
    return rows


def tokenizer_table(
    toks: Mapping[str, Tokenizer], heldout: Mapping[str, Sequence[str]], terms: Sequence[str] = ()
) -> dict[str, Any]:
    """The whole comparison: fertility of every tokenizer on every held-out set, term splits, overlap.

    ``heldout`` maps a set's name (``domain``, ``general``) to its documents' texts. The result's
    ``fertility`` is ``{tokenizer: {set: row}}``; each row as :func:`fertility_row`.
    """
    return {
        "vocab_size": {n: t.vocab_size for n, t in toks.items()},
        "sha256": {n: t.sha256 for n, t in toks.items()},
        "fertility": {n: {s: fertility_row(t, texts) for s, texts in heldout.items()} for n, t in toks.items()},
        "terms": term_splits(toks, terms),
        "overlap": vocab_overlap(toks),
    }


def train_adapt_tokenizers(
    texts: Mapping[str, Iterable[str]], vocab_size: int, out_dir: str | Path, show_progress: bool = False
) -> dict[str, Tokenizer]:
    """Train (or load, when already saved) one tokenizer per entry of ``texts`` into ``out_dir/<name>/``.

    ``texts`` maps a tokenizer's name to an iterable of its training texts; each is saved
    as ``out_dir/<name>/tokenizer.json`` atomically, so a killed experiment keeps the finished ones.
    """
    out: dict[str, Tokenizer] = {}
    root = Path(out_dir)
    for name, docs in texts.items():
        path = root / name / "tokenizer.json"
        if path.is_file():
            out[name] = Tokenizer.load(path)
            continue
        tok = train_tokenizer(docs, vocab_size, show_progress=show_progress)
        tok.save(path)
        out[name] = Tokenizer.load(path)
    return out


def tokenizer_markdown(table: Mapping[str, Any]) -> list[str]:
    """The tokenizer section of report.md: fertility, term splits and overlap tables."""
    names = list(table["fertility"])
    sets = list(next(iter(table["fertility"].values()))) if names else []
    lines = [
        "## Tokenizers",
        "",
        "Each tokenizer is a byte-level BPE trained on the *training* text only (the mix tokenizer on "
        "domain and general training text together); fertility is measured on the held-out text.",
        "",
        "| tokenizer | vocab | "
        + " | ".join(f"{s}: tokens/word | {s}: tokens/byte | {s}: chars/token" for s in sets)
        + " |",
        "|---|---:|" + "---:|---:|---:|" * len(sets),
    ]
    for n in names:
        cells = []
        for s in sets:
            r = table["fertility"][n][s]
            cells += [_f(r["tokens_per_word"], 3), _f(r["tokens_per_byte"], 4), _f(r["chars_per_token"], 3)]
        lines.append(f"| {n} | {table['vocab_size'][n]:,} | " + " | ".join(cells) + " |")
    if table["terms"]:
        lines += [
            "",
            "How each tokenizer cuts the domain terms (tokens: pieces):",
            "",
            "| term | " + " | ".join(names) + " |",
            "|---|" + "---|" * len(names),
        ]
        for row in table["terms"]:
            cells = [f"{row[n]['tokens']}: " + " ".join(f"`{p}`" for p in row[n]["pieces"]) for n in names]
            lines.append(f"| {row['term']} | " + " | ".join(cells) + " |")
    if table["overlap"]:
        lines += [
            "",
            "Vocabulary overlap (learned tokens, not the special or byte tokens):",
            "",
            "| pair | learned | shared | Jaccard |",
            "|---|---:|---:|---:|",
        ]
        for r in table["overlap"]:
            lines.append(
                f"| {r['a']} / {r['b']} | {r['learned_a']:,} / {r['learned_b']:,} | {r['shared']:,} | "
                f"{r['jaccard']:.3f} |"
            )
    return lines + [""]


def _f(x: float | None, digits: int) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


__all__ = [
    "TOKENIZER_NAMES",
    "learned_tokens",
    "vocab_overlap",
    "fertility_row",
    "term_splits",
    "tokenizer_table",
    "train_adapt_tokenizers",
    "tokenizer_markdown",
]
