"""Safety stages: :class:`BlockList` (harmful words/phrases above a threshold, from the shipped
list, a file or the config) and :class:`PiiRedact` (e-mail addresses, phone numbers and IP
addresses replaced by placeholders; the patterns run only in windows located with numpy).
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter
from collections.abc import Callable
from importlib import resources
from pathlib import Path

import numpy as np

from lmkit.data.curate.config import BlocklistConfig, PiiConfig, Removed
from lmkit.data.curate.text import WORD_RE, codepoints, tokens_of
from lmkit.errors import LmkitError

# --------------------------------------------------------------------------- block-list


def default_blocklist() -> list[str]:
    """The small default block-list shipped with lmkit (``lmkit/resources/blocklist.txt``)."""
    text = resources.files("lmkit").joinpath("resources/blocklist.txt").read_text(encoding="utf-8")
    return _parse_terms(text)


def blocklist_terms(cfg: BlocklistConfig) -> list[str]:
    """The block-list a config asks for: ``words_file`` (or the default list) plus ``extra``."""
    if cfg.words_file:
        p = Path(cfg.words_file).expanduser()
        try:
            terms = _parse_terms(p.read_text(encoding="utf-8"))
        except OSError as e:
            raise LmkitError(f"{p}: cannot read block-list ({e.strerror or e})") from None
        except UnicodeDecodeError:
            raise LmkitError(f"{p}: block-list is not UTF-8 text") from None
    else:
        terms = default_blocklist()
    return terms + [" ".join(t.lower().split()) for t in cfg.extra if t.strip()]


def _parse_terms(text: str) -> list[str]:
    out = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip().lower()
        if line:
            out.append(" ".join(line.split()))
    return out


class BlockList:
    """Remove a document when block-listed words/phrases make up more than ``max_fraction`` of its words."""

    name = "blocklist"

    def __init__(self, cfg: BlocklistConfig, terms: list[str] | None = None) -> None:
        self.cfg = cfg
        self.terms = blocklist_terms(cfg) if terms is None else terms
        terms = self.terms
        self.words = frozenset(t for t in terms if " " not in t and WORD_RE.fullmatch(t))
        # single words are matched by the lower-case hash of each token (no strings built)
        self._word_hashes = np.unique(
            np.array([int(tokens_of(w).hashes(lower=True)[0]) for w in self.words], dtype=np.uint64)
        )
        self.phrases = [
            (t, re.compile(r"(?<!\w)" + re.escape(t).replace(r"\ ", r"\s+") + r"(?!\w)"))
            for t in sorted(set(terms) - self.words)
        ]

    def __call__(self, text: str) -> str | Removed:
        tok = tokens_of(text)
        if not len(tok):
            return text
        hits = 0
        if self._word_hashes.size:
            h = tok.hashes(lower=True)
            at = np.minimum(np.searchsorted(self._word_hashes, h), self._word_hashes.size - 1)
            hits = int(np.count_nonzero(self._word_hashes[at] == h))
        if self.phrases:
            low = text.lower()
            for first, pat in self.phrases:
                if first.split(" ", 1)[0] in low:
                    hits += len(pat.findall(low))
        if hits and hits / len(tok) > self.cfg.max_fraction:
            return Removed("blocklisted_words")
        return text


# --------------------------------------------------------------------------- PII

_EMAIL_RE = re.compile(
    r"(?<![\w.%+-])[A-Za-z0-9][A-Za-z0-9._%+-]*@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}(?![\w-])"
)
_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_IPV4_RE = re.compile(rf"(?<![\d.])(?:{_OCTET}\.){{3}}{_OCTET}(?!\d|\.\d)")
_IPV6_RE = re.compile(r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:[0-9A-Fa-f]{1,4}|(?:\d{1,3}\.){3}\d{1,3})?(?![\w:])")
_PHONE_RE = re.compile(
    r"(?<![\w+])(?:"
    r"\+\d{1,3}(?:[ .-]?(?:\(\d{1,4}\)|\d{1,5})){1,6}"  # international: +CC then groups
    r"|(?:1[ .-]?)?(?:\(\d{3}\)[ .-]?\d{3}[ .-]|\d{3}(?P<sep>[ .-])\d{3}(?P=sep))\d{4}"  # North American 3-3-4
    r"|0\d{1,4}(?:[ .-]\d{2,4}){2,4}"  # national trunk prefix 0 then groups (UK, FR, DE, ...)
    r")(?![\w])"
)


class PiiRedact:
    """Replace e-mail addresses, phone numbers and IPv4/IPv6 addresses with placeholders."""

    name = "pii"

    def __init__(self, cfg: PiiConfig) -> None:
        self.cfg = cfg
        self.counts: Counter[str] = Counter()

    def _ip(self, m: re.Match[str]) -> str:
        s = m.group(0)
        try:
            ip = ipaddress.ip_address(s)
        except ValueError:
            return s
        if self.cfg.public_ips_only and not ip.is_global:
            return s
        self.counts["ip_addresses"] += 1
        return self.cfg.ip_placeholder

    def _phone(self, m: re.Match[str]) -> str:
        s = m.group(0)
        digits = sum(ch.isdigit() for ch in s)
        if not (8 if s.startswith("+") else 10) <= digits <= 15:
            return s
        self.counts["phone_numbers"] += 1
        return self.cfg.phone_placeholder

    def _email(self, m: re.Match[str]) -> str:
        self.counts["emails"] += 1
        return self.cfg.email_placeholder

    def __call__(self, text: str) -> str | Removed:
        c = self.cfg
        # where to look is decided on the code points with numpy; the full patterns then run only
        # in those windows (tried at every position of a long text, they are slow)
        if c.emails and "@" in text:
            cp = codepoints(text)
            text = _sub_windows(_EMAIL_RE, text, _windows(np.flatnonzero(cp == 64), 80, 260, cp.size), self._email)
        if c.ips and "." in text:
            cp = codepoints(text)
            digit = (cp - np.uint32(48)) <= 9
            dots = np.flatnonzero(digit[:-2] & (cp[1:-1] == 46) & digit[2:]) + 1  # digit.digit
            if dots.size >= 3:
                text = _sub_windows(_IPV4_RE, text, _windows(dots, 5, 6, cp.size), self._ip)
        if c.ips and ":" in text:
            cp = codepoints(text)
            colons = np.flatnonzero(cp == 58)
            close = colons[:-1][np.diff(colons) <= 5]  # two colons near each other
            if close.size:
                text = _sub_windows(_IPV6_RE, text, _windows(close, 45, 50, cp.size), self._ip)
        if c.phones:
            cp = codepoints(text)
            text = _sub_windows(_PHONE_RE, text, _phone_windows(cp), self._phone)
        return text


def _windows(pos: np.ndarray, before: int, after: int, size: int) -> list[tuple[int, int]]:
    """Merged ``[p - before, p + after)`` windows around sorted positions."""
    if pos.size == 0:
        return []
    lo = np.maximum(pos - before, 0)
    hi = np.maximum.accumulate(np.minimum(pos + after, size))
    new = np.empty(pos.size, dtype=bool)
    new[0] = True
    new[1:] = lo[1:] > hi[:-1]
    last = np.empty(pos.size, dtype=bool)
    last[:-1] = new[1:]
    last[-1] = True
    return list(zip(lo[new].tolist(), hi[last].tolist()))


_PHONE_CHARS = np.array([32, 40, 41, 43, 45, 46], dtype=np.uint32)  # space ( ) + - .


def _phone_windows(cp: np.ndarray) -> list[tuple[int, int]]:
    """Runs of phone characters (digits, space, ( ) + - .) holding at least 8 digits."""
    digit = (cp - np.uint32(48)) <= 9
    if np.count_nonzero(digit) < 8:
        return []
    ok = digit | np.isin(cp, _PHONE_CHARS)
    edge = np.empty(ok.size + 1, dtype=bool)
    edge[0], edge[-1] = ok[0], ok[-1]
    np.not_equal(ok[1:], ok[:-1], out=edge[1:-1])
    b = np.flatnonzero(edge)
    starts, ends = b[0::2], b[1::2]
    count = np.zeros(cp.size + 1, dtype=np.int64)
    np.cumsum(digit, out=count[1:])
    keep = (count[ends] - count[starts]) >= 8
    return list(zip(np.maximum(starts[keep] - 1, 0).tolist(), np.minimum(ends[keep] + 1, cp.size).tolist()))


def _sub_windows(
    pattern: re.Pattern[str], text: str, windows: list[tuple[int, int]], repl: Callable[[re.Match[str]], str]
) -> str:
    """``pattern.sub(repl, text)`` for matches inside the windows (``repl`` may return the match
    unchanged to keep it). Lookbehinds see the text before a window; a window ends a character
    after the last one a match can use, so lookaheads see it."""
    pieces: list[str] = []
    last = 0
    for lo, hi in windows:
        if hi <= last:
            continue
        for m in pattern.finditer(text, max(lo, last), hi):
            new = repl(m)
            if new == m.group(0):
                continue
            pieces.append(text[last : m.start()])
            pieces.append(new)
            last = m.end()
    if not pieces:
        return text
    pieces.append(text[last:])
    return "".join(pieces)
