"""The published quality and repetition rules: :class:`GopherQuality` (word count and length,
symbols, bullets, ellipses, letters, stop words), :class:`C4Quality` (C4's line and document rules,
paragraph-aware for hard-wrapped text) and :class:`GopherRepetition` (duplicate lines, paragraphs
and n-grams, counted on token hashes).
"""

from __future__ import annotations

import re

import numpy as np

from lmkit.data.curate.config import C4Config, GopherQualityConfig, Removed, RepetitionConfig
from lmkit.data.curate.text import (
    C_ALNUM,
    C_LETTER,
    C_SPACE,
    C_SYMBOL,
    NGRAM_MUL,
    Tokens,
    count_sentences,
    tokens_of,
    words_of,
)

# --------------------------------------------------------------------------- Gopher quality


class GopherQuality:
    """Gopher's quality rules (word count and length, symbols, bullets, ellipses, letters, stop words)."""

    name = "gopher_quality"

    def __init__(self, cfg: GopherQualityConfig) -> None:
        self.cfg = cfg
        self.fold = not cfg.stop_words_case_sensitive  # THE counts as the (ALL-CAPS legal text)
        words = [w.lower() for w in cfg.stop_words] if self.fold else list(cfg.stop_words)
        self.stop = frozenset(words)
        plain = [w for w in words if re.fullmatch(r"\w+", w)]
        # stop words are whole \w+ tokens: a regex finds them without building the token list
        self._stop_re = (
            re.compile(
                r"\b(?:" + "|".join(map(re.escape, sorted(set(plain), key=len, reverse=True))) + r")\b",
                re.IGNORECASE if self.fold else 0,
            )
            if plain and len(plain) == len(words)
            else None
        )

    def _stop_words(self, text: str, need: int) -> int:
        """Distinct stop words present (up to case unless case-sensitive), counting only up to ``need``."""
        if self._stop_re is None:
            words = words_of(text)
            return len(self.stop.intersection(w.lower() for w in words) if self.fold else self.stop.intersection(words))
        found: set[str] = set()
        for m in self._stop_re.finditer(text):
            found.add(m.group(0).lower() if self.fold else m.group(0))
            if len(found) >= need:
                break
        return len(found)

    def __call__(self, text: str) -> str | Removed:
        c = self.cfg
        tok = tokens_of(text)
        n_words = len(tok)
        if n_words == 0:
            return Removed("gopher_short_doc")
        word = tok.word
        lens = tok.ends - tok.starts
        # a token is a symbol if all its characters are punctuation: a punctuation run without
        # other symbols (e.g. "©"), or a run of underscores
        symbol = ~word & ~tok.any_of(C_SYMBOL)
        if "_" in text:
            symbol |= word & ~tok.any_of(C_LETTER, C_ALNUM)
        n_non_symbol = n_words - int(np.count_nonzero(symbol))
        if c.min_words is not None and n_non_symbol < c.min_words:
            return Removed("gopher_short_doc")
        if c.max_words is not None and n_non_symbol > c.max_words:
            return Removed("gopher_long_doc")
        if n_non_symbol == 0:
            return Removed("gopher_short_doc")
        mean_len = (int(lens.sum()) - int(lens[symbol].sum())) / n_non_symbol
        if c.min_mean_word_length is not None and mean_len < c.min_mean_word_length:
            return Removed("gopher_below_avg_word_length")
        if c.max_mean_word_length is not None and mean_len > c.max_mean_word_length:
            return Removed("gopher_above_avg_word_length")
        if c.max_symbol_word_ratio is not None:
            if text.count("#") / n_words > c.max_symbol_word_ratio:
                return Removed("gopher_too_many_hashes")
            if (text.count("...") + text.count("…")) / n_words > c.max_symbol_word_ratio:
                return Removed("gopher_too_many_ellipsis")
        if c.max_bullet_lines_ratio is not None or c.max_ellipsis_lines_ratio is not None:
            bullets, ellipses, n_lines = self._line_stats(tok)
            if c.max_bullet_lines_ratio is not None and bullets / n_lines > c.max_bullet_lines_ratio:
                return Removed("gopher_too_many_bullets")
            if c.max_ellipsis_lines_ratio is not None and ellipses / n_lines > c.max_ellipsis_lines_ratio:
                return Removed("gopher_too_many_end_ellipsis")
        if c.min_alpha_words_ratio is not None:
            n_alpha = int(np.count_nonzero(word & tok.any_of(C_LETTER)))
            denominator = n_non_symbol if c.alpha_ratio_of == "words" else n_words
            if n_alpha / denominator < c.min_alpha_words_ratio:
                return Removed("gopher_below_alpha_threshold")
        if c.min_stop_words is not None and self._stop_words(text, c.min_stop_words) < c.min_stop_words:
            return Removed("gopher_not_enough_stop_words")
        return text

    @staticmethod
    def _line_stats(tok: Tokens) -> tuple[int, int, int]:
        """(lines starting with a bullet, lines ending with an ellipsis, lines), over '\\n' lines."""
        cp = tok.cp
        n = cp.shape[0]
        nl = np.flatnonzero(cp == 10)
        line_start = np.concatenate(([0], nl + 1))
        line_end = np.concatenate((nl, [n]))
        if n and cp[-1] == 10:  # a final newline does not open another line (as str.splitlines)
            line_start, line_end = line_start[:-1], line_end[:-1]
        n_lines = max(1, line_start.shape[0])
        solid = np.flatnonzero(tok.cls != C_SPACE)
        if solid.size == 0:
            return 0, 0, n_lines
        first = np.searchsorted(solid, line_start)  # first non-space character of each line
        ok = first < solid.size
        first_pos = solid[np.minimum(first, solid.size - 1)]
        ok &= first_pos < line_end
        lead = cp[first_pos]
        bullets = int(np.count_nonzero(ok & ((lead == 0x2D) | (lead == 0x2022))))  # '-' or '•'
        last = np.searchsorted(solid, line_end) - 1  # last non-space character of each line
        okl = last >= 0
        last_pos = solid[np.maximum(last, 0)]
        okl &= last_pos >= line_start
        dots = (cp[last_pos] == 0x2E) & (last_pos >= line_start + 2)
        dots &= (cp[np.maximum(last_pos - 1, 0)] == 0x2E) & (cp[np.maximum(last_pos - 2, 0)] == 0x2E)
        ellipses = int(np.count_nonzero(okl & (dots | (cp[last_pos] == 0x2026))))
        return bullets, ellipses, n_lines


# --------------------------------------------------------------------------- C4

_CITATION_RE = re.compile(r"\[\d*]|\[edit]|\[citation needed]")
_END_PUNCT = (".", "?", "!", '"', "'")
_POLICY = ("terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies", "use cookies")
_BLOCK_SPLIT_RE = re.compile(r"\n[^\S\n]*\n\s*")


def _is_wrapped(lines: list[str]) -> bool:
    """A block of hard-wrapped prose: long lines of similar length, mostly not ending a sentence."""
    if len(lines) < 2:
        return False
    body = lines[:-1]
    longest = max(len(x) for x in lines)
    if longest < 40:
        return False
    long_ = sum(1 for x in body if len(x) >= 0.6 * longest)
    ends = sum(1 for x in body if x.endswith(_END_PUNCT))
    return long_ >= 0.7 * len(body) and ends <= 0.5 * len(body)


class C4Quality:
    """C4's rules: lines without terminal punctuation, short lines, javascript/policy lines are
    dropped; pages with lorem ipsum, '{' or fewer than ``min_sentences`` sentences are removed."""

    name = "c4"

    def __init__(self, cfg: C4Config) -> None:
        self.cfg = cfg

    def _keep_unit(self, unit: str, words: list[str]) -> str | Removed | None:
        """The unit's kept text, None to drop the unit, or Removed for the whole page."""
        c = self.cfg
        if c.max_word_length >= 0 and words and max(map(len, words)) > c.max_word_length:
            return None
        if c.remove_citations and "[" in unit:
            unit = _CITATION_RE.sub("", unit)
        if c.terminal_punct and (not unit.endswith(_END_PUNCT) or unit.endswith("...")):
            return None
        if len(words) < c.min_words_per_line:
            return None
        low = unit.lower()
        if c.lorem_ipsum and "lorem ipsum" in low:
            return Removed("c4_lorem_ipsum")
        if c.javascript and "javascript" in low:
            return None
        if c.curly_bracket and "{" in unit:
            return Removed("c4_curly_bracket")
        if c.policy and any(p in low for p in _POLICY):
            return None
        return unit

    def __call__(self, text: str) -> str | Removed:
        c = self.cfg
        sentences = 0
        if not c.paragraph_aware:
            kept: list[str] = []
            for line in text.splitlines():
                line = line.strip()
                r = self._keep_unit(line, line.split())
                if r is None:
                    continue
                if type(r) is Removed:
                    return r
                sentences += count_sentences(r)  # type: ignore[arg-type]
                kept.append(r)  # type: ignore[arg-type]
            if sentences < c.min_sentences:
                return Removed("c4_too_few_sentences")
            out = "\n".join(kept).strip()
        else:
            blocks_out: list[str] = []
            for block in _BLOCK_SPLIT_RE.split(text):
                lines = [x.strip() for x in block.split("\n")]
                if _is_wrapped(lines):
                    joined = " ".join(x for x in lines if x)
                    r = self._keep_unit(joined, joined.split())
                    if r is None:
                        continue
                    if type(r) is Removed:
                        return r
                    sentences += count_sentences(r)  # type: ignore[arg-type]
                    if c.remove_citations and "[" in block:
                        lines = [_CITATION_RE.sub("", x) for x in lines]
                    blocks_out.append("\n".join(x for x in lines if x))
                    continue
                kept = []
                for line in lines:
                    r = self._keep_unit(line, line.split())
                    if r is None:
                        continue
                    if type(r) is Removed:
                        return r
                    sentences += count_sentences(r)  # type: ignore[arg-type]
                    kept.append(r)  # type: ignore[arg-type]
                if kept:
                    blocks_out.append("\n".join(kept))
            if sentences < c.min_sentences:
                return Removed("c4_too_few_sentences")
            out = "\n\n".join(blocks_out).strip()
        return text if out == text else out


# --------------------------------------------------------------------------- Gopher repetition

_PARA_RE = re.compile(r"\n\n+")  # (a literal prefix lets `re` scan fast)


def _split_lines(text: str) -> list[str]:
    """``re.split(r"\\n+", text)`` without the regex: empty lines dropped except at the two ends."""
    parts = text.split("\n")
    if "\n\n" in text:
        last = len(parts) - 1
        parts = [x for i, x in enumerate(parts) if x or i == 0 or i == last]
    return parts


def _dup_stats(items: list[str]) -> tuple[int, int]:
    """(elements that repeat an earlier one, their characters)."""
    uniq = set(items)
    return len(items) - len(uniq), sum(map(len, items)) - sum(map(len, uniq))


class GopherRepetition:
    """Gopher's repetition rules: duplicate lines/paragraphs (count and characters), the most
    common 2-4-gram's share of characters, and the share of characters in duplicated 5-10-grams.

    N-grams are over the regex tokens, identified by their 64-bit token hashes combined
    polynomially (no strings are built). The duplicated n-gram share follows the Gopher/datatrove
    walk: left to right, an n-gram seen before counts its characters (without spaces) and the
    walk jumps past it; the walk only stops at n-grams that occurred earlier, so its cost is in
    the number of repeats, not of words.
    """

    name = "gopher_repetition"

    def __init__(self, cfg: RepetitionConfig) -> None:
        self.cfg = cfg
        self.top = sorted((int(n), float(f)) for n, f in cfg.top_ngram_char_frac.items())
        self.dup = sorted((int(n), float(f)) for n, f in cfg.dup_ngram_char_frac.items())

    def __call__(self, text: str) -> str | Removed:
        c = self.cfg
        if not text:
            return Removed("empty")
        n_chars = len(text)
        paras = _PARA_RE.split(text.strip())
        dup_n, dup_c = _dup_stats(paras)
        if c.dup_para_frac is not None and dup_n / len(paras) > c.dup_para_frac:
            return Removed("dup_para_frac")
        if c.dup_para_char_frac is not None and dup_c / n_chars > c.dup_para_char_frac:
            return Removed("dup_para_char_frac")
        lines = _split_lines(text)
        dup_n, dup_c = _dup_stats(lines)
        if c.dup_line_frac is not None and dup_n / len(lines) > c.dup_line_frac:
            return Removed("dup_line_frac")
        if c.dup_line_char_frac is not None and dup_c / n_chars > c.dup_line_char_frac:
            return Removed("dup_line_char_frac")
        if not self.top and not self.dup:
            return text
        tok = tokens_of(text)
        L = len(tok)
        if L < 2:
            return text
        h = tok.hashes()
        cs = np.zeros(L + 1, dtype=np.int64)
        np.cumsum(tok.ends - tok.starts, out=cs[1:])  # characters of tokens before each position
        keys: dict[int, np.ndarray] = {1: h}
        max_n = min(max([n for n, _ in self.top] + [n for n, _ in self.dup]), L)
        for n in range(2, max_n + 1):  # n-gram keys from the (n-1)-gram keys
            keys[n] = keys[n - 1][: L - n + 1] * NGRAM_MUL + h[n - 1 :]
        for n, frac in self.top:
            k = keys.get(n)
            if k is None:
                continue
            srt = np.sort(k)
            new_run = np.empty(srt.shape[0], dtype=bool)
            new_run[0] = True
            np.not_equal(srt[1:], srt[:-1], out=new_run[1:])
            run_start = np.flatnonzero(new_run)
            run_len = np.empty(run_start.shape[0], dtype=np.int64)
            run_len[:-1] = run_start[1:] - run_start[:-1]
            run_len[-1] = srt.shape[0] - run_start[-1]
            best = int(run_len.max())
            if best < 2:
                continue
            tops = srt[run_start[run_len == best]]
            # ties: the most common n-gram that appears first
            if tops.shape[0] <= 4:
                i = min(int(np.argmax(k == t)) for t in tops)
            else:
                i = int(np.argmax(np.isin(k, tops)))
            gram_chars = int(cs[i + n] - cs[i]) + n - 1
            if gram_chars * best / n_chars > frac:
                return Removed(f"top_{n}_gram")
        rep: np.ndarray | None = None  # positions whose (prev_n)-gram occurs more than once
        prev_n = 0
        for n, frac in self.dup:
            k = keys.get(n)
            if k is None:
                break
            m = k.shape[0]
            if rep is None:
                cand = np.arange(m)
            else:  # an n-gram can only repeat if every shorter n-gram inside it repeats
                ok = rep[:m].copy()
                for j in range(1, n - prev_n + 1):
                    ok &= rep[j : j + m]
                cand = np.flatnonzero(ok)
            if cand.size < 2:
                break  # no repeated n-gram: none of any larger n either
            order = np.argsort(k[cand], kind="stable")
            sk = k[cand][order]
            same = sk[1:] == sk[:-1]
            if not same.any():
                break
            order = cand[order]  # positions, sorted by n-gram, in position order within a group
            if self._dup_chars(order, same, cs, n, frac * n_chars):
                return Removed(f"duplicated_{n}_n_grams")
            in_group = np.zeros(order.shape[0], dtype=bool)
            in_group[:-1] |= same
            in_group[1:] |= same
            rep = np.zeros(m, dtype=bool)
            rep[order[in_group]] = True
            prev_n = n
        return text

    @staticmethod
    def _dup_chars(order: np.ndarray, same: np.ndarray, cs: np.ndarray, n: int, limit: float) -> bool:
        """Whether the greedy walk's duplicated characters exceed ``limit``.

        ``order`` sorts the positions by n-gram (stably); ``same[j]`` says order[j + 1] has the
        same n-gram as order[j]. A position whose n-gram occurred earlier is a candidate; it
        counts if one of those earlier occurrences was visited (not jumped over).
        """
        m = int(order.max()) + 1
        in_rep = np.zeros(order.shape[0], dtype=bool)  # sorted entries of an n-gram occurring more than once
        in_rep[:-1] |= same
        in_rep[1:] |= same
        sel = np.flatnonzero(in_rep)
        pos = order[sel]
        later = pos[1:][same[sel[1:] - 1] & (sel[1:] - 1 == sel[:-1])]  # every occurrence after the first
        if int((cs[later + n] - cs[later]).sum()) <= limit:
            return False  # even counting every repeat the share stays under the limit: no walk needed
        first = np.empty(sel.shape[0], dtype=bool)  # a new n-gram starts here
        first[0] = True
        first[1:] = ~same[sel[1:] - 1] | (sel[1:] - 1 != sel[:-1])
        group_start = np.maximum.accumulate(np.where(first, np.arange(sel.shape[0]), 0))
        cand = np.flatnonzero(~first)
        by_pos = np.argsort(pos[cand], kind="stable")
        cand_l = cand[by_pos].tolist()
        pos_l = pos.tolist()
        gs = group_start.tolist()
        skipped = bytearray(m)
        idx = 0
        total = 0
        for j in cand_l:
            p = pos_l[j]
            if p < idx:
                continue  # jumped over: not visited
            # visited; its n-gram was seen if an earlier occurrence was visited
            seen = False
            for e in range(j - 1, gs[j] - 1, -1):
                if not skipped[pos_l[e]]:
                    seen = True
                    break
            if seen:
                total += int(cs[p + n] - cs[p])
                if total > limit:
                    return True
                idx = p + n
                stop = min(p + n, m)
                skipped[p + 1 : stop] = bytes([1]) * (stop - p - 1)
            else:
                idx = p + 1
        return False
