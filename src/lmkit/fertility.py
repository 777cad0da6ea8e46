"""How a tokenizer cuts text: :func:`fertility` (tokens per word, bytes and characters per token),
:func:`split_words` (the pieces of each word) and :func:`tokenizer_stats`, both for one tokenizer
(the ``lmkit tokenizer train|stats`` commands that print them are in :mod:`lmkit.cli.data`; ``lmkit
adapt`` compares tokenizers with them)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from lmkit.tokenizer import Tokenizer


def fertility(tok: Tokenizer, texts: Iterable[str], batch: int = 256) -> dict[str, Any]:
    """Tokens per (whitespace-separated) word, bytes and characters per token, over ``texts``."""
    docs = words = tokens = nbytes = chars = 0
    buf: list[str] = []

    def flush() -> None:
        nonlocal tokens
        tokens += sum(len(ids) for ids in tok.encode_batch(buf))
        buf.clear()

    for t in texts:
        docs += 1
        words += len(t.split())
        nbytes += len(t.encode("utf-8"))
        chars += len(t)
        buf.append(t)
        if len(buf) >= batch:
            flush()
    if buf:
        flush()
    return {
        "documents": docs,
        "words": words,
        "tokens": tokens,
        "bytes": nbytes,
        "chars": chars,
        "tokens_per_word": tokens / words if words else None,
        "bytes_per_token": nbytes / tokens if tokens else None,
        "chars_per_token": chars / tokens if tokens else None,
    }


def split_words(tok: Tokenizer, words: Iterable[str], in_text: bool = True) -> list[tuple[str, list[str]]]:
    """How each word or phrase is cut into tokens (readable token strings).

    With ``in_text`` (default) a word is split as it appears inside running text, i.e. after a
    space (``" mens"``), which is how a byte-level BPE sees most words; otherwise as typed.
    """
    out = []
    for w in words:
        ids = tok.encode(" " + w if in_text and not w.startswith(" ") else w)
        out.append((w, [tok.token_str(i) for i in ids]))
    return out


def tokenizer_stats(tok: Tokenizer, path: str, texts: list[str], words: list[str]) -> dict[str, Any]:
    """One tokenizer's figures for ``lmkit tokenizer stats``: ``path`` (as given), vocabulary size,
    sha256, :func:`fertility` on ``texts`` (when any) and the :func:`split_words` of ``words``."""
    d: dict[str, Any] = {"path": path, "vocab_size": tok.vocab_size, "sha256": tok.sha256}
    if texts:
        d["fertility"] = fertility(tok, texts)
    if words:
        d["words"] = [{"word": w, "tokens": pieces, "n_tokens": len(pieces)} for w, pieces in split_words(tok, words)]
    return d


__all__ = ["fertility", "split_words", "tokenizer_stats"]
