"""The bytes behind tokens: GPT-2's byte alphabet, SentencePiece's ``▁`` and ``<0xNN>``, WordPiece's
``##``, and the tiktoken fast path that is built on them.

What this module owns:

* :func:`token_kind`: how a tokenizer.json spells bytes in its tokens: ``"byte_level"`` (GPT-2,
  Llama-3, Qwen2.5, Pythia, BLOOM: every byte is one printable character of GPT-2's alphabet),
  ``"metaspace"`` (SentencePiece-style: ``▁`` is a space, ``<0xNN>`` one raw byte when the model
  falls back to bytes, as TinyLlama's; also T5's SentencePiece unigram), ``"wordpiece"`` (BERT: a
  word's first token stands for a space and its text, a ``##`` continuation for its text alone) or
  ``"plain"`` (a token's text is its UTF-8).
* :func:`piece_bytes`: the bytes one token stands for, by kind. For WordPiece this is what the token
  stands for in the text the normalizer made: BERT's normalizer lowercases, strips accents and drops
  whitespace, so no table of token bytes can give back every text's own bytes (``Tokenizer.encode_with_bytes``
  gives each token the bytes of the text it covers instead, by offsets).
* :func:`prepends_space`: whether the tokenizer's first token of a text stands for a space that is not
  in the text (SentencePiece's Metaspace ``prepend_scheme`` first/always, or a ``Prepend``
  normalizer; WordPiece, whose word-initial tokens stand for the space before them); such a space is
  no byte of the text.
* :func:`ends_sentence`: whether a token's bytes end a sentence (a full stop, for sentence permutation).
* :func:`build_fast`: the tiktoken ``Encoding`` of a byte-level BPE, only where it is provably the
  same tokenizer (the argument below), and why it is on or off.

Fast encoding, and why it is written by hand: Hugging Face's ``encode_batch`` is the slow part
of packing, and ``tiktoken`` runs the same byte-level BPE several times faster.
A tiktoken ``Encoding`` is built from this tokenizer's vocabulary: a token's rank is its id,
and ``BpeTrainer`` assigns ids in merge order, so "merge the pair whose result has the lowest
id" (tiktoken) follows the same order as "apply the earliest merge" (Hugging Face); the
pre-tokenisation regex is GPT-2's, which is what the ``ByteLevel`` pre-tokenizer uses. That
argument is checked rather than trusted (:func:`build_fast`): the fast path is
switched on only when the tokenizer has exactly this shape (byte-level, GPT-2's regex pre-tokenizer,
no normalizer, ids increasing with merge order, all 256 bytes present) AND a probe text covering
scripts, digits, whitespace runs and contractions encodes to identical ids both ways; tests compare
the two on a generated corpus, and ``Tokenizer.verify_fast`` lets a caller (the packer) compare
them on its own data. Anything else (Llama-3's or Qwen's own regex, a normalizer, SentencePiece, a
mismatch, tiktoken missing, ``LMKIT_FAST_TOKENIZER=0``) uses Hugging Face.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from typing import Any

SPACE_MARK = "\u2581"  # SentencePiece's "▁"

# GPT-2's pre-tokenisation pattern, as used by the ByteLevel pre-tokenizer (for tiktoken).
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""

_PROBE = (
    "The quick brown fox's 2 jumps over 12,345 lazy dogs. They'LL say: \"it's fine\" -- don't!\n"
    "  Indented\tline\twith tabs,\r\nWindows line ends and   runs of    spaces   \n\n\n"
    "Ünïcödé naïve café façade Straße ÆØÅ; Ελληνικά, русский текст, עברית, العربية, हिन्दी,"
    " 日本語のテキスト、中文文本。한국어 텍스트 😀🎉👍🏽 ∑∫√≤≥ ½ ¾ №\u00a0nbsp\u2009thin\u3000ideo\n"
    "code: def f(x): return x**2 + 0x1F; path/to/file.txt <s> </s> [MASK] <extra_id_7> \u200b\ufeff"
    " 3.14159 1e-5 42nd 1,000,000 $99.99 user@example.com https://example.org/a?b=c#d ....!!!???"
)


def byte_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from bytes to printable characters (what ByteLevel stores)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    mapping = {b: chr(b) for b in printable}
    n = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + n)
            n += 1
    return mapping


@lru_cache(maxsize=1)
def unicode_to_byte() -> dict[str, int]:
    return {c: b for b, c in byte_to_unicode().items()}


def token_kind(spec: Mapping[str, Any]) -> str:
    """``"byte_level"``, ``"metaspace"`` or ``"plain"`` for a parsed tokenizer.json (see the module docstring)."""
    dec = spec.get("decoder") or {}
    if spec.get("model", {}).get("type") == "BPE" and dec.get("type") == "ByteLevel":
        return "byte_level"  # the pre-tokenizer may be ByteLevel alone or a Split regex then ByteLevel
    if spec.get("model", {}).get("type") == "WordPiece":
        return "wordpiece"
    if any(
        SPACE_MARK in json.dumps(spec.get(k), ensure_ascii=False) for k in ("normalizer", "pre_tokenizer", "decoder")
    ):
        return "metaspace"
    return "plain"


def prepends_space(spec: Mapping[str, Any]) -> bool:
    """Does the tokenizer's first token of a text stand for a space the text does not have?"""
    if token_kind(spec) == "wordpiece":
        return True

    def parts(node: Any) -> list[dict[str, Any]]:
        if not isinstance(node, dict):
            return []
        inner = node.get("normalizers") or node.get("pretokenizers") or []
        return [node, *(p for n in inner for p in parts(n))]

    for node in parts(spec.get("pre_tokenizer")):
        if node.get("type") == "Metaspace":
            scheme = node.get("prepend_scheme", "always" if node.get("add_prefix_space", True) else "never")
            if scheme in ("first", "always"):
                return True
    return any(n.get("type") == "Prepend" and n.get("prepend") == SPACE_MARK for n in parts(spec.get("normalizer")))


def piece_bytes(token: str, kind: str, byte_fallback: bool, continuation: str = "##") -> bytes:
    """The bytes one (non-special) token's text stands for, by :func:`token_kind` (``continuation``:
    WordPiece's prefix of a token inside a word)."""
    if kind == "wordpiece":
        if continuation and token.startswith(continuation) and len(token) > len(continuation):
            return token[len(continuation) :].encode("utf-8")
        return b" " + token.encode("utf-8")
    if kind == "byte_level":
        u2b = unicode_to_byte()
        return bytes(u2b[c] for c in token)
    if kind == "metaspace":
        if byte_fallback and len(token) == 6 and token.startswith("<0x") and token.endswith(">"):
            try:
                return bytes([int(token[3:5], 16)])
            except ValueError:
                pass
        return token.replace(SPACE_MARK, " ").encode("utf-8")
    return token.encode("utf-8")


def ends_sentence(piece: bytes) -> bool:
    """Does a token of these bytes end a sentence: ``.``, ``?`` or ``!`` (or a run of them), alone or
    with whitespace around (BART's sentence permutation splits a text after such tokens)?"""
    core = piece.strip()
    return bool(core) and all(c in b".?!" for c in core)


def _disabled_by_env() -> bool:
    return os.environ.get("LMKIT_FAST_TOKENIZER", "1").strip().lower() in ("0", "false", "no", "off")


def build_fast(
    spec: Mapping[str, Any], specials: Mapping[str, int], name: str, reference: Callable[[list[str]], list[list[int]]]
) -> tuple[Any, str]:
    """(tiktoken ``Encoding`` or None, why) for a parsed tokenizer.json with added tokens ``specials``.

    On only for a byte-level BPE with GPT-2's pre-tokenisation, no normalizer, ids in merge order and
    every byte a token, and only when the probe text encodes to ``reference``'s ids exactly."""
    if _disabled_by_env():
        return None, "off: LMKIT_FAST_TOKENIZER=0"
    try:
        import tiktoken
    except ImportError:
        return None, "off: tiktoken not installed"
    model = spec["model"]
    pre = spec.get("pre_tokenizer") or {}
    if token_kind(spec) != "byte_level" or pre.get("type") != "ByteLevel" or not pre.get("use_regex", True):
        return None, "off: not a byte-level BPE with GPT-2 pre-tokenisation"
    if pre.get("add_prefix_space", False):
        return None, "off: not a byte-level BPE with GPT-2 pre-tokenisation"
    if spec.get("normalizer") is not None or model.get("dropout") or model.get("ignore_merges"):
        return None, "off: tokenizer has a normalizer, dropout or ignore_merges"
    u2b = unicode_to_byte()
    ranks: dict[bytes, int] = {}
    special_ids = set(specials.values())
    for tok, i in model["vocab"].items():
        if i in special_ids:
            continue
        try:
            b = bytes(u2b[c] for c in tok)
        except KeyError:
            return None, f"off: token {tok!r} is not byte-level"
        if b in ranks:
            return None, "off: two tokens with the same bytes"
        ranks[b] = int(i)
    if any(bytes([b]) not in ranks for b in range(256)):
        return None, "off: not every byte is a token"
    vocab = model["vocab"]
    last = -1
    for m in model["merges"]:
        a, b = m if isinstance(m, list) else m.split(" ", 1)
        rid = vocab.get(a + b)
        if rid is None or rid <= last:
            return None, "off: token ids do not follow merge order"
        last = rid
    try:
        enc = tiktoken.Encoding(name, pat_str=GPT2_PATTERN, mergeable_ranks=ranks, special_tokens=dict(specials))
    except Exception as e:  # tiktoken rejects the vocabulary: stay on the reference path
        return None, f"off: tiktoken refused the vocabulary ({e})"
    if not same_ids(enc, reference, [_PROBE, _PROBE.lower(), _PROBE.upper()]):
        return None, "off: tiktoken ids differ from Hugging Face on the probe text"
    return enc, "on: tiktoken (ids checked identical to Hugging Face)"


def same_ids(enc: Any, reference: Callable[[list[str]], list[list[int]]], texts: Sequence[str]) -> bool:
    """Do tiktoken ``enc`` and ``reference`` give identical ids on ``texts``?"""
    return bool(enc.encode_ordinary_batch(list(texts), num_threads=1) == reference(list(texts)))


__all__ = [
    "SPACE_MARK",
    "GPT2_PATTERN",
    "byte_to_unicode",
    "unicode_to_byte",
    "token_kind",
    "prepends_space",
    "piece_bytes",
    "ends_sentence",
    "build_fast",
    "same_ids",
]
