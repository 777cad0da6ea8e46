"""Text helpers every curation rule shares: regex word tokens, the proxy token count, sentence
counting, the vectorised token view (:class:`Tokens`: character classes from a code-point table,
boundaries from array comparisons, token and n-gram hashes from prefix sums) and the
:class:`Normalise` stage (NFC, control characters, whitespace, optional mojibake repair).
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any

import numpy as np

from lmkit.data.curate.config import NormaliseConfig, Removed
from lmkit.data.dedup import span_hashes
from lmkit.errors import LmkitError

WORD_RE = re.compile(r"\w+|[^\w\s]+")
_LAST_WORDS: list[Any] = [None, None]


def words_of(text: str) -> list[str]:
    """Regex word tokens (``\\w+`` and ``[^\\w\\s]+`` runs); the last result is memoised by identity."""
    if _LAST_WORDS[0] is text:
        return _LAST_WORDS[1]  # type: ignore[no-any-return]
    words = WORD_RE.findall(text)
    _LAST_WORDS[0], _LAST_WORDS[1] = text, words
    return words


# ASCII byte -> 0 whitespace, 1 word character, 2 other (punctuation): \s, \w and the rest in `re`
_ASCII_CLASS = bytes(0 if chr(i).isspace() else 1 if (chr(i).isalnum() or i == 95) else 2 for i in range(128)) + bytes(
    128
)


def proxy_tokens(text: str) -> int:
    """The report's default token count: the number of regex word tokens (``len(words_of(text))``).

    Pure-ASCII text is counted without building the token list: classify every byte as space,
    word or punctuation with ``bytes.translate`` and count where a non-space run starts.
    """
    if _LAST_WORDS[0] is text:
        return len(_LAST_WORDS[1])
    if not text.isascii() or (_LAST_TOKENS[0] is not None and _LAST_TOKENS[0].text is text):
        return len(tokens_of(text))
    a = np.frombuffer(text.encode("ascii").translate(_ASCII_CLASS), dtype=np.uint8)
    if a.size == 0:
        return 0
    return int(np.count_nonzero((a[1:] != a[:-1]) & (a[1:] != 0))) + int(a[0] != 0)


_SENT_END_RE = re.compile(r"[.!?…]+[\"'”’)\]]*(?=\s|$)")


def count_sentences(line: str) -> int:
    """Sentences in a line: runs of . ! ? … followed by space or the end (at least 1)."""
    return max(1, len(_SENT_END_RE.findall(line)))


# --------------------------------------------------------------------------- vectorised tokens
#
# The rules need counts over the regex tokens (\w+ and [^\w\s]+ runs) of every document, and
# building those tokens as Python strings is the slowest thing a curation run could do. Instead
# each character gets a class from a lookup table indexed by its code point (numpy over the
# UTF-32 code units), runs of word/symbol characters are found with array comparisons, and
# everything the rules ask (token counts and lengths, letters, symbols, token hashes for n-grams)
# comes from a few reductions over those arrays.

# classes: space (\s), letter (isalpha), other \w (digits, numerals), '_', punctuation (a token made
# only of these is a "symbol", not a word, for the Gopher rules), other symbols (e.g. ©, €, emoji)
C_SPACE, C_LETTER, C_ALNUM, C_UNDERSCORE, C_PUNCT, C_SYMBOL = range(6)
_GROUP = np.array([0, 1, 1, 1, 2, 2], dtype=np.uint8)  # 0 space, 1 word (\w), 2 symbol ([^\w\s])
_CLASS_TABLE: list[np.ndarray] = []


def _char_class(ch: str) -> int:
    if ch.isspace():
        return C_SPACE
    if ch.isalpha():
        return C_LETTER
    if ch.isalnum():
        return C_ALNUM
    if ch == "_":
        return C_UNDERSCORE
    cat = unicodedata.category(ch)
    # punctuation: Unicode P* and control characters, and every ASCII non-word character
    return C_PUNCT if cat[0] == "P" or cat == "Cc" or ch.isascii() else C_SYMBOL


def _class_table() -> np.ndarray:
    """Class of every code point of the Basic Multilingual Plane (built once, ~65k lookups)."""
    if not _CLASS_TABLE:
        _CLASS_TABLE.append(np.fromiter((_char_class(chr(i)) for i in range(0x10000)), dtype=np.uint8, count=0x10000))
    return _CLASS_TABLE[0]


NGRAM_MUL = np.uint64(0x9E3779B97F4A7C15)  # n-gram keys of token hashes: key * NGRAM_MUL + next


class Tokens:
    r"""The regex tokens of a text as arrays: ``starts``/``ends`` (character offsets), ``word``
    (True for \w+ runs, False for punctuation runs) and per-token flags; see :func:`tokens_of`."""

    __slots__ = ("_hashes", "_lower_hashes", "cls", "cp", "ends", "starts", "text", "word")

    def __init__(self, text: str) -> None:
        self.text = text
        cp = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
        cls = _class_table().take(cp, mode="clip")
        if cp.size and int(cp.max()) > 0xFFFF:  # emoji, rare scripts: classify each distinct one directly
            astral = cp > 0xFFFF
            for c in np.unique(cp[astral]).tolist():
                cls[cp == c] = _char_class(chr(c))
        self.cp, self.cls = cp, cls
        grp = _GROUP.take(cls)
        n = grp.shape[0]
        if n == 0:
            self.starts = self.ends = np.zeros(0, dtype=np.int64)
            self.word = np.zeros(0, dtype=bool)
        else:
            # runs of equal group (space / word / symbol); tokens are the runs that are not space
            change = np.flatnonzero(grp[1:] != grp[:-1]) + 1
            bounds = np.concatenate(([0], change, [n]))
            kind = grp.take(bounds[:-1])
            solid = kind != 0
            self.starts = bounds[:-1][solid]
            self.ends = bounds[1:][solid]
            self.word = kind[solid] == 1
        self._hashes: np.ndarray | None = None
        self._lower_hashes: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.starts.shape[0])

    def any_of(self, lo: int, hi: int | None = None) -> np.ndarray:
        """Per token: does it contain a character of class ``lo`` (or of classes ``lo..hi``)?"""
        if not len(self):
            return np.zeros(0, dtype=bool)
        if hi is None:
            mask = self.cls == lo
        else:  # lo <= cls <= hi, in one comparison thanks to uint8 wrap-around
            mask = (self.cls - np.uint8(lo)) <= np.uint8(hi - lo)
        return np.maximum.reduceat(mask.view(np.uint8), self.starts) > 0  # spaces after a token add zeros

    def hashes(self, lower: bool = False) -> np.ndarray:
        """A 64-bit hash per token, equal for equal token strings (``dedup.span_hashes`` of its code
        points). ``lower``: of the lower-cased tokens."""
        cached = self._lower_hashes if lower else self._hashes
        if cached is not None:
            return cached
        n = self.cp.shape[0]
        if n == 0:
            return np.zeros(0, dtype=np.uint64)
        cp = self.cp
        if lower:
            cp = _lower_table().take(cp, mode="clip")
            astral = self.cp > 0xFFFF
            if astral.any():
                cp[astral] = self.cp[astral]
        h = span_hashes(cp, self.starts, self.ends)
        if lower:
            self._lower_hashes = h
        else:
            self._hashes = h
        return h


_LOWER_TABLE: list[np.ndarray] = []


def _lower_table() -> np.ndarray:
    """Lower-case code point of every BMP code point (itself when lower() is not one character)."""
    if not _LOWER_TABLE:
        low = np.arange(0x10000, dtype=np.uint32)
        for i in range(0x10000):
            x = chr(i).lower()
            if len(x) == 1 and x != chr(i):
                low[i] = ord(x)
        _LOWER_TABLE.append(low)
    return _LOWER_TABLE[0]


_LAST_TOKENS: list[Any] = [None]


def tokens_of(text: str) -> Tokens:
    """:class:`Tokens` of ``text``; the last one is memoised by identity (stages share it)."""
    t = _LAST_TOKENS[0]
    if t is not None and t.text is text:
        return t  # type: ignore[no-any-return]
    t = Tokens(text)
    _LAST_TOKENS[0] = t
    return t


# --------------------------------------------------------------------------- normalisation

_BREAKS_RE = re.compile("[\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")  # -> \n (after \r\n -> \n)
_CTRL_RE = re.compile("[\x00-\x08\x0e-\x1b\x1f\x7f-\x84\x86-\x9f\u200b\u200c\u200d\u2060\ufeff\ufffe\uffff]")
_ASCII_BREAKS = ("\r", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e")
_ASCII_CTRL = bytes([*range(9), *range(0x0E, 0x1C), 0x1F, 0x7F])
_USPACE_RE = re.compile("[\u00a0\u1680\u2000-\u200a\u202f\u205f\u3000]")
# a Latin-1/cp1252 reading of UTF-8 leaves a lead character U+00C2..U+00F4 followed by one of these
_MOJIBAKE_HINT_RE = re.compile(
    "[\u00c2-\u00f4][\u0080-\u00bf\u0152\u0153\u0160\u0161\u0178\u017d\u017e\u0192"
    "\u02c6\u02dc\u2013\u2014\u2018-\u201e\u2020-\u2022\u2026\u2030\u2039\u203a"
    "\u20ac\u2122]"
)


class Normalise:
    """NFC, mojibake repair, line breaks and control characters, whitespace; empty -> removed."""

    name = "normalise"

    def __init__(self, cfg: NormaliseConfig) -> None:
        self.cfg = cfg
        self._blank_re = re.compile("\n" * (cfg.max_blank_lines + 1) + "\n+")  # literal prefix: fast
        self._blank_to = "\n" * (cfg.max_blank_lines + 1)
        self._ftfy: Any = None
        if cfg.fix_mojibake:
            try:
                import ftfy
                import ftfy.badness
            except ImportError:
                raise LmkitError(
                    "normalise.fix_mojibake needs the ftfy package (pip install ftfy), or set "
                    "normalise.fix_mojibake: false"
                ) from None
            self._ftfy = ftfy

    def _fix_mojibake(self, text: str) -> str:
        """ftfy's repair, only on the lines that look broken (ftfy is slow on long text)."""
        spans: dict[int, int] = {}
        for m in _MOJIBAKE_HINT_RE.finditer(text):
            a = text.rfind("\n", 0, m.start()) + 1
            if a not in spans:
                b = text.find("\n", m.end())
                spans[a] = len(text) if b < 0 else b
        pieces: list[str] = []
        last = 0
        for a, b in spans.items():  # in text order
            line = text[a:b]
            if self._ftfy.badness.is_bad(line):
                fixed = self._ftfy.fix_encoding(line)
                if fixed != line:
                    pieces += [text[last:a], unicodedata.normalize("NFC", fixed)]
                    last = b
        if not pieces:
            return text
        pieces.append(text[last:])
        return "".join(pieces)

    def __call__(self, text: str) -> str | Removed:
        cfg = self.cfg
        ascii_ = text.isascii()
        if not ascii_:
            if cfg.nfc and not unicodedata.is_normalized("NFC", text):
                # line by line: only the lines that change pay for normalize()
                nfc = unicodedata.is_normalized
                text = "\n".join([x if nfc("NFC", x) else unicodedata.normalize("NFC", x) for x in text.split("\n")])
            if self._ftfy is not None and _MOJIBAKE_HINT_RE.search(text):  # cheap test first
                text = self._fix_mojibake(text)
        if cfg.remove_control:
            if ascii_:  # substring tests and bytes.translate run at memory speed
                if any(ch in text for ch in _ASCII_BREAKS):
                    text = _BREAKS_RE.sub("\n", text.replace("\r\n", "\n"))
                raw = text.encode("ascii")
                cleaned = raw.translate(None, _ASCII_CTRL)
                if len(cleaned) != len(raw):
                    text = cleaned.decode("ascii")
            else:
                if _BREAKS_RE.search(text):
                    text = _BREAKS_RE.sub("\n", text.replace("\r\n", "\n"))
                if _CTRL_RE.search(text):
                    text = _CTRL_RE.sub("", text)
        if cfg.collapse_spaces and (
            "\t" in text or "  " in text or " \n" in text or "\n " in text or (not ascii_ and _USPACE_RE.search(text))
        ):
            # every run of whitespace inside a line becomes one space, none at the line ends
            text = "\n".join([" ".join(x.split()) for x in text.split("\n")])
        if self._blank_to + "\n" in text:
            text = self._blank_re.sub(self._blank_to, text)
        stripped = text.strip()
        if not stripped:
            return Removed("empty")
        return stripped if len(stripped) != len(text) else text


def codepoints(text: str) -> np.ndarray:
    """The UTF-32 code points of ``text`` (shared with the memoised :class:`Tokens` when it is the same text)."""
    t = _LAST_TOKENS[0]
    if t is not None and t.text is text:
        return t.cp  # type: ignore[no-any-return]
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
