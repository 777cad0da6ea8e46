"""Curation stages, the streaming run, its report and its refusal to overwrite."""

from __future__ import annotations

import gzip
import json
import os
import re
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from lmkit.cli import main
from lmkit.data.curate import (
    BlockList,
    BlocklistConfig,
    C4Config,
    C4Quality,
    CurateConfig,
    GopherQuality,
    GopherQualityConfig,
    GopherRepetition,
    Normalise,
    NormaliseConfig,
    PiiConfig,
    PiiRedact,
    Removed,
    RepetitionConfig,
    bounded_ordered_map,
    curate,
    default_blocklist,
    load_curate_config,
)
from lmkit.data.read import iter_documents
from lmkit.errors import LmkitError

# ----------------------------------------------------------------------------- helpers

PROSE = "The committee met with the members of the board and agreed that the plan should have a clear budget. "


def prose(n_sentences: int = 8, seed: int = 0) -> str:
    """Clean, varied prose that passes every rule: sentences of 8-14 words with stop words."""
    import random

    rng = random.Random(seed)
    vocab = distinct_words(300, seed=1000 + seed)
    stops = ["the", "of", "and", "to", "with", "that", "a", "in"]
    out = []
    for _ in range(n_sentences):
        words = [rng.choice(stops) if rng.random() < 0.35 else rng.choice(vocab) for _ in range(rng.randint(8, 14))]
        out.append(" ".join(words).capitalize() + ".")
    return " ".join(out)


def gq(**kw: object) -> GopherQuality:
    return GopherQuality(GopherQualityConfig(**kw))  # type: ignore[arg-type]


def reason(out: object) -> str | None:
    return out.reason if isinstance(out, Removed) else None


def kept(out: object) -> bool:
    return isinstance(out, str)


def write_jsonl(path: Path, texts: list[str], ids: list[str] | None = None) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for i, t in enumerate(texts):
            f.write(json.dumps({"id": ids[i] if ids else f"d{i}", "text": t}) + "\n")


def read_out(out: Path) -> list[tuple[str, str]]:
    """The curated folder read back by lmkit's reader (the reports beside the shards are skipped)."""
    return [(d.id, d.text) for d in iter_documents([out])]


# ----------------------------------------------------------------------------- defaults


def test_defaults_are_the_published_thresholds() -> None:
    q = GopherQualityConfig()
    assert (q.min_words, q.max_words, q.min_mean_word_length, q.max_mean_word_length) == (50, 100_000, 3, 10)
    assert (q.max_symbol_word_ratio, q.max_bullet_lines_ratio, q.max_ellipsis_lines_ratio) == (0.1, 0.9, 0.3)
    assert (q.min_alpha_words_ratio, q.min_stop_words) == (0.8, 2)
    assert q.stop_words == ["the", "be", "to", "of", "and", "that", "have", "with"]
    r = RepetitionConfig()
    assert (r.dup_line_frac, r.dup_para_frac, r.dup_line_char_frac, r.dup_para_char_frac) == (0.3, 0.3, 0.2, 0.2)
    assert r.top_ngram_char_frac == {2: 0.20, 3: 0.18, 4: 0.16}
    assert r.dup_ngram_char_frac == {5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10}
    c = C4Config()
    assert (c.min_words_per_line, c.max_word_length, c.min_sentences) == (3, 1000, 5)
    m = CurateConfig().minhash
    assert (m.shingle_size, m.num_perm, m.bands) == (5, 112, 14)


# ----------------------------------------------------------------------------- normalise


def test_normalise_unicode_controls_whitespace_and_mojibake() -> None:
    n = Normalise(NormaliseConfig())
    out = n("  Cafe\u0301 menu\r\nline\ttwo  here\x00\x07 ok\u200b\n\n\n\n\nnext\u00a0para  \n")
    assert out == "Café menu\nline two here ok\n\nnext para"
    assert n("The cafÃ© was open.") == "The café was open."
    assert n("plain text stays") == "plain text stays"
    assert n("ascii\x00 with\x07 controls\r\nand\x0cbreaks\x7f") == "ascii with controls\nand\nbreaks"
    assert reason(n(" \t\n\x00 ")) == "empty"
    keep_spacing = Normalise(NormaliseConfig(collapse_spaces=False, fix_mojibake=False))
    assert keep_spacing("a  b") == "a  b"
    assert keep_spacing("cafÃ©") == "cafÃ©"


# ----------------------------------------------------------------------------- Gopher quality


def stop_doc(n_words: int, filler: str = "apple") -> str:
    """the + and + filler words: n non-symbol words, two stop words."""
    return "the and " + " ".join([filler] * (n_words - 2)) + "."


def test_gopher_word_count_both_sides() -> None:
    assert kept(gq()(stop_doc(50)))
    assert reason(gq()(stop_doc(49))) == "gopher_short_doc"
    assert kept(gq(max_words=100)(stop_doc(100)))
    assert reason(gq(max_words=100)(stop_doc(101))) == "gopher_long_doc"


def test_gopher_mean_word_length_both_sides() -> None:
    # (6 + 2*29 + 4*29) / 60 = 3.0 -> kept; (6 + 2*30 + 4*28) / 60 = 2.97 -> removed
    assert kept(gq()("the and " + " ".join(["ab"] * 29 + ["abcd"] * 29)))
    assert reason(gq()("the and " + " ".join(["ab"] * 30 + ["abcd"] * 28))) == "gopher_below_avg_word_length"
    # (6 + 12*30 + 9*46) / 78 = 10.0 -> kept; one more 12-letter word -> 10.03 -> removed
    assert kept(gq()("the and " + " ".join(["abcdefghijkl"] * 30 + ["abcdefghi"] * 46)))
    assert (
        reason(gq()("the and " + " ".join(["abcdefghijkl"] * 31 + ["abcdefghi"] * 46)))
        == "gopher_above_avg_word_length"
    )


def test_gopher_symbol_ratios_both_sides() -> None:
    base = stop_doc(60)
    assert kept(gq()(base + " #" * 6))  # 6 / 66 = 0.09
    assert reason(gq()(base + " #" * 7)) == "gopher_too_many_hashes"  # 7 / 67 = 0.104
    assert kept(gq()(base + " ... x" * 6))
    assert reason(gq()(base + " ... x" * 8)) == "gopher_too_many_ellipsis"


def test_gopher_line_rules_both_sides() -> None:
    line = "the apple and the pear were on the table"
    assert kept(gq()("\n".join(["- " + line] * 9 + [line])))  # 90% bullets: not above 0.9
    assert reason(gq()("\n".join(["- " + line] * 10))) == "gopher_too_many_bullets"
    assert reason(gq()("\n".join(["• " + line] * 10))) == "gopher_too_many_bullets"
    assert kept(gq()("\n".join([line + " ..."] * 3 + [line + "."] * 7)))  # 30%
    assert reason(gq()("\n".join([line + " ..."] * 4 + [line + "."] * 6))) == "gopher_too_many_end_ellipsis"


def test_gopher_alpha_ratio_both_sides() -> None:
    words = ["the", "and"] + ["apple"] * 46
    assert kept(gq()(" ".join(words + ["123"] * 12)))  # 48 / 60 = 0.8
    assert reason(gq()(" ".join(words + ["123"] * 13))) == "gopher_below_alpha_threshold"  # 48 / 61
    # punctuation is not a word (the paper's reading) unless alpha_ratio_of: tokens
    punct = " ".join(["the", "and"] + ["apple ,"] * 48)
    assert kept(gq()(punct))
    assert reason(gq(alpha_ratio_of="tokens")(punct)) == "gopher_below_alpha_threshold"


def test_gopher_stop_words_both_sides() -> None:
    assert kept(gq()("the with " + " ".join(["apple"] * 60)))
    assert reason(gq()("the " + " ".join(["apple"] * 60))) == "gopher_not_enough_stop_words"
    assert reason(gq()("the the the " + " ".join(["apple"] * 60))) == "gopher_not_enough_stop_words"


# ----------------------------------------------------------------------------- C4


def c4(**kw: object) -> C4Quality:
    return C4Quality(C4Config(**kw))  # type: ignore[arg-type]


def test_c4_line_rules() -> None:
    text = "\n".join(
        [
            "This line is a proper sentence.",
            "Menu Home About",  # no terminal punctuation
            "Too short.",  # fewer than 3 words
            "Please enable javascript in your browser.",
            "Read our privacy policy before you start.",
            "A cited claim stands here [1].",
            "It ends in an ellipsis...",
            "x" * 1001 + " is a very long word.",
            "Two more sentences follow here. And here is the last one!",
            "One more line ends the page.",
        ]
    )
    out = c4(paragraph_aware=False)(text)
    assert out == (
        "This line is a proper sentence.\nA cited claim stands here .\n"
        "Two more sentences follow here. And here is the last one!\nOne more line ends the page."
    )


def test_c4_sentences_both_sides_and_page_rules() -> None:
    five = " ".join(f"Sentence number {w} is here." for w in ["one", "two", "three", "four", "five"])
    four = " ".join(f"Sentence number {w} is here." for w in ["one", "two", "three", "four"])
    assert kept(c4()(five))
    assert reason(c4()(four)) == "c4_too_few_sentences"
    assert reason(c4()(five + "\nLorem ipsum dolor sit amet.")) == "c4_lorem_ipsum"
    assert reason(c4()(five + "\nThe code uses {braces} often.")) == "c4_curly_bracket"
    # a page rule only counts on lines that survive the line rules (as in C4)
    assert kept(c4()(five + "\nlorem ipsum"))


FIVE = " ".join(f"Sentence number {w} is here." for w in ["one", "two", "three", "four", "five"])


def c4_lines(line: str, **kw: object) -> list[str]:
    """The lines C4 keeps of a page made of five good sentences and ``line``."""
    out = c4(paragraph_aware=False, **kw)(FIVE + "\n" + line)
    assert isinstance(out, str)
    return out.split("\n")[1:]


def test_c4_line_thresholds_both_sides() -> None:
    assert c4_lines("Three words here.") == ["Three words here."]  # min_words_per_line 3
    assert c4_lines("Two words.") == []
    assert c4_lines("Two words.", min_words_per_line=2) == ["Two words."]
    ok_word = "The word " + "x" * 1000 + " is long."  # max_word_length 1000
    assert c4_lines(ok_word) == [ok_word]
    assert c4_lines("The word " + "x" * 1001 + " is long.") == []
    for end in (".", "?", "!", '"', "'"):  # terminal punctuation
        assert c4_lines(f"He said it was fine{end}") == [f"He said it was fine{end}"]
    assert c4_lines("He said it was fine") == [] and c4_lines("He said it was fine...") == []
    assert c4_lines("He said it was fine", terminal_punct=False) == ["He said it was fine"]
    for phrase in (
        "JavaScript",
        "terms of use",
        "privacy policy",
        "cookie policy",
        "uses cookies",
        "use of cookies",
        "use cookies",
    ):
        assert c4_lines(f"This page mentions {phrase} once.") == [], phrase
    assert c4_lines("This page mentions Java and cookies once.") == ["This page mentions Java and cookies once."]
    assert c4_lines("This page mentions javascript once.", javascript=False) == ["This page mentions javascript once."]
    assert c4_lines("See the privacy policy here.", policy=False) == ["See the privacy policy here."]
    assert kept(c4()(FIVE + "\nThe code uses braces often."))
    assert kept(c4(curly_bracket=False)(FIVE + "\nThe code uses {braces} often."))
    assert kept(c4(lorem_ipsum=False)(FIVE + "\nLorem ipsum dolor sit amet."))


def test_c4_paragraph_aware_keeps_hard_wrapped_prose() -> None:
    para = textwrap.fill(prose(6), width=72)
    assert para.count("\n") >= 4
    assert reason(c4(paragraph_aware=False)(para)) == "c4_too_few_sentences"  # lines end mid-sentence
    out = c4()(para + "\n\nHome\nContact")
    assert out == para  # the wrapped paragraph is kept as written, the menu lines are dropped


# ----------------------------------------------------------------------------- repetition


def only(**kw: object) -> GopherRepetition:
    """A repetition filter with just the given rule(s) on, at their default thresholds."""
    off: dict[str, object] = dict(
        dup_line_frac=None,
        dup_para_frac=None,
        dup_line_char_frac=None,
        dup_para_char_frac=None,
        top_ngram_char_frac={},
        dup_ngram_char_frac={},
    )
    d = RepetitionConfig()
    for k, v in kw.items():
        off[k] = getattr(d, k) if v is True else v
    return GopherRepetition(RepetitionConfig(**off))  # type: ignore[arg-type]


def distinct_words(n: int, seed: int = 0) -> list[str]:
    import random

    rng = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz"
    return ["".join(rng.choice(letters) for _ in range(6)) for _ in range(n)]


def test_repetition_duplicate_lines_and_paragraphs() -> None:
    w = distinct_words(400)
    lines = [" ".join(w[i * 10 : (i + 1) * 10]) for i in range(40)]
    # 10 lines, 3 repeats (30%): kept; 4 repeats: removed
    assert kept(only(dup_line_frac=True)("\n".join(lines[:7] + [lines[0]] * 3)))
    assert reason(only(dup_line_frac=True)("\n".join(lines[:6] + [lines[0]] * 4))) == "dup_line_frac"
    assert kept(only(dup_para_frac=True)("\n\n".join(lines[:7] + [lines[1]] * 3)))
    assert reason(only(dup_para_frac=True)("\n\n".join(lines[:6] + [lines[1]] * 4))) == "dup_para_frac"
    # characters: a repeated short line vs a repeated long line
    long_line = " ".join(w[300:390])
    text_ok = "\n".join(lines[:20] + [lines[0]])  # 1 of 21 similar lines: ~5% of chars
    text_bad = "\n".join(lines[:8] + [long_line, long_line])  # ~45% of chars repeated
    assert kept(only(dup_line_char_frac=True)(text_ok))
    assert reason(only(dup_line_char_frac=True)(text_bad)) == "dup_line_char_frac"
    assert kept(only(dup_para_char_frac=True)(text_ok.replace("\n", "\n\n")))
    assert reason(only(dup_para_char_frac=True)(text_bad.replace("\n", "\n\n"))) == "dup_para_char_frac"


def test_repetition_top_ngram_both_sides() -> None:
    w = distinct_words(300, seed=1)
    gram = "zzzzzz yyyyyy"  # 13 characters
    # the top 2-gram's share of characters: count * 13 / len(text) around 0.20
    body = " ".join(w[:100])  # 699 characters
    for count, ok in ((12, True), (16, False)):
        text = body + (" " + gram) * count
        share = count * len(gram) / len(text)
        assert (share <= 0.20) == ok
        out = only(top_ngram_char_frac={2: 0.20})(text)
        assert kept(out) == ok and (ok or reason(out) == "top_2_gram")


@pytest.mark.parametrize("n", [2, 3, 4])
def test_repetition_top_ngram_default_thresholds_both_sides(n: int) -> None:
    frac = RepetitionConfig().top_ngram_char_frac[n]
    rule = only(top_ngram_char_frac={n: frac})
    body = " ".join(distinct_words(100, seed=10 + n))
    gram = " ".join(["zzzzzz", "yyyyyy", "xxxxxx", "wwwwww"][:n])
    sides = set()
    for count in range(2, 40):
        text = body + (" " + gram) * count
        share = count * len(gram) / len(text)  # the n-gram with its inner spaces, as datatrove measures
        out = rule(text)
        assert kept(out) == (share <= frac) and (kept(out) or reason(out) == f"top_{n}_gram"), (count, share)
        sides.add(share <= frac)
    assert sides == {True, False}


@pytest.mark.parametrize("n", [5, 6, 7, 8, 9, 10])
def test_repetition_duplicated_ngram_default_thresholds_both_sides(n: int) -> None:
    frac = RepetitionConfig().dup_ngram_char_frac[n]
    rule = only(dup_ngram_char_frac={n: frac})
    w = distinct_words(200 + n, seed=20 + n)
    sides = set()
    for count in range(1, 12):
        words = w[:200] + w[200 : 200 + n] * count  # a phrase of n words repeated
        text = " ".join(words)
        share = _greedy_dup_chars(words, n) / len(text)
        out = rule(text)
        assert kept(out) == (share <= frac) and (kept(out) or reason(out) == f"duplicated_{n}_n_grams"), count
        sides.add(share <= frac)
    assert sides == {True, False}


def test_repetition_duplicated_ngrams_both_sides() -> None:
    w = distinct_words(400, seed=2)
    body = w[:150]
    phrase = w[200:205]  # a 5-gram that repeats
    ok_text = " ".join(body + phrase + body[:2] + phrase)  # one repeat: ~30 chars of ~1100
    assert kept(only(dup_ngram_char_frac={5: 0.15})(ok_text))
    rep = " ".join(body[:60] + phrase * 12)  # 11 repeats of 5 words: far above 15%
    assert reason(only(dup_ngram_char_frac={5: 0.15})(rep)) == "duplicated_5_n_grams"
    # defaults on natural prose keep it
    assert kept(GopherRepetition(RepetitionConfig())(prose(12)))
    assert kept(GopherQuality(GopherQualityConfig())(prose(12)))


# ----------------------------------------------------------------------------- block-list


def test_blocklist_threshold_and_user_lists(tmp_path: Path) -> None:
    assert "porn" in default_blocklist()
    words = distinct_words(2000, seed=3)
    base = " ".join(words[:999])
    bl = BlockList(BlocklistConfig())
    assert kept(bl(base + " porn"))  # 1 of 1000 words: not above 0.001
    assert reason(bl(base + " porn PORN")) == "blocklisted_words"  # 2 of 1001, case-insensitive
    assert kept(bl(base + " pornographers"))  # whole words only
    ext = BlockList(BlocklistConfig(extra=["casino bonus"], max_fraction=0.0))
    assert reason(ext(base + " casino   bonus")) == "blocklisted_words"
    mine = tmp_path / "list.txt"
    mine.write_text("# my list\nzebra\n", encoding="utf-8")
    repl = BlockList(BlocklistConfig(words_file=str(mine), max_fraction=0.0))
    assert kept(repl(base + " porn"))  # the default list was replaced
    assert reason(repl(base + " Zebra")) == "blocklisted_words"


# ----------------------------------------------------------------------------- PII


def test_pii_every_planted_address_is_replaced() -> None:
    emails = ["john.doe@example.com", "a_b+tag@mail.co.uk", "X99@sub.domain.org"]
    phones = [
        "+1 (555) 123-4567",
        "555-123-4567",
        "(555) 123-4567",
        "555.123.4567",
        "+44 20 7946 0958",
        "+33 1 23 45 67 89",
        "020 7946 0958",
        "+49-30-1234567",
    ]
    ipv4 = ["93.184.216.34", "8.8.8.8", "151.101.1.69"]
    ipv6 = [
        "2606:4700:4700::1111",
        "2a00:1450:4001:81b::200e",
        "2606:4700:0000:0000:0000:0000:0000:1001",
        "::ffff:93.184.216.34",
    ]
    private = ["127.0.0.1", "192.168.1.20", "10.0.0.1", "::1", "fe80::1ff:fe23:4567:890a", "2001:db8::1"]
    keep = [
        "version 3.11.2 was released",
        "on 2021-03-04 at 12:30:45",
        "in 1999-2005",
        "page 12 of 300",
        "MAC 00:1a:2b:3c:4d:5e",
        "std::vector",
        "ratio 1.5.6",
        "DFARS 252.227-7013 applies",
        "ISBN 978-3-16-148410-0 here",
    ] + private
    parts = []
    for i, x in enumerate(emails + phones + ipv4 + ipv6):
        parts.append(f"Item {i} is {x} here.")
    text = " ".join(parts + keep)
    out = PiiRedact(PiiConfig())(text)
    assert isinstance(out, str)
    for x in emails + phones + ipv4 + ipv6:
        assert x not in out, x
    assert out.count("<EMAIL>") == len(emails)
    assert out.count("<PHONE>") == len(phones)
    assert out.count("<IP_ADDRESS>") == len(ipv4) + len(ipv6)
    for x in keep:
        assert x in out, x
    every = PiiRedact(PiiConfig(public_ips_only=False))(" ".join(f"at {x} now" for x in private))
    assert isinstance(every, str) and every.count("<IP_ADDRESS>") == len(private)


# ----------------------------------------------------------------------------- whole runs


def make_corpus(root: Path) -> list[str]:
    """A small corpus with good documents and one example of each kind of junk."""
    root.mkdir()
    good = [prose(10 + i % 4, seed=i) for i in range(12)]
    w = good[0].split(" ")
    near = " ".join(w[:20] + ["changed"] + w[21:])
    docs = good + [
        good[1],  # exact copy
        good[2].upper().lower().replace(" ", "  "),  # exact up to case/whitespace
        near,  # near-duplicate
        "too short",  # gopher
        prose(10, seed=50) + " Contact me at jane@example.org or +1 (555) 123-4567.",  # PII redacted, kept
        " ".join(["porn"] * 60 + ["the", "and"]) + ".",  # block-list (or quality)
        "\n".join([prose(2, seed=51)] * 6),  # repetition
        "",  # empty text: counted by the reader
    ]
    write_jsonl(root / "a.jsonl", docs)
    (root / "b.txt").write_text(prose(10, seed=52), encoding="utf-8")
    return docs


def test_curate_report_adds_up_and_output_reads_back(tmp_path: Path) -> None:
    make_corpus(tmp_path / "raw")
    out = tmp_path / "out"
    rep = curate([tmp_path / "raw"], out, workers=1, progress=False)
    t = rep["totals"]
    stages = rep["stages"]
    assert [s["name"] for s in stages] == [
        "url_filter",
        "extract",
        "normalise",
        "language",
        "gopher_quality",
        "c4",
        "gopher_repetition",
        "blocklist",
        "pii",
        "exact_dedup",
        "minhash",
    ]
    assert t["docs_in"] == t["docs_out"] + sum(s["removed"] for s in stages)
    assert stages[0]["docs_in"] == t["docs_in"] and stages[-1]["docs_out"] == t["docs_out"]
    for a, b in zip(stages, stages[1:]):
        assert a["docs_out"] == b["docs_in"] and a["chars_out"] == b["chars_in"] and a["tokens_out"] == b["tokens_in"]
    for s in stages:
        assert s["docs_in"] == s["docs_out"] + s["removed"] and sum(s["reasons"].values()) == s["removed"]
        assert len(s["examples"]) == min(3, s["removed"])
    byname = {s["name"]: s for s in stages}
    assert byname["exact_dedup"]["removed"] == 2
    assert byname["minhash"]["removed"] == 1
    assert byname["gopher_quality"]["reasons"]["gopher_short_doc"] >= 1
    assert byname["pii"]["extra"] == {"emails": 1, "phone_numbers": 1}
    assert rep["read"]["empty_records"] == 1
    docs = read_out(out)
    assert len(docs) == t["docs_out"]
    assert sum(len(x[1]) for x in docs) == t["chars_out"]
    assert any("<EMAIL>" in x[1] and "<PHONE>" in x[1] for x in docs)
    assert "d12" not in {x[0] for x in docs}  # the exact copy of d1 went, d1 stayed
    assert {"d0", "d1", "d2"} <= {x[0] for x in docs}
    md = (out / "report.md").read_text()
    assert "exact_duplicate" in md and "near_duplicate" in md
    assert json.loads((out / "report.json").read_text())["totals"] == t
    assert sorted(os.listdir(tmp_path)) == ["out", "raw"]  # no temporary folder left behind


def test_bad_inputs_are_counted_per_file_and_the_rest_processed(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "empty.txt").write_text("")
    (raw / "binary.txt").write_bytes(b"\x7fELF\x00\x01\x02" * 50)
    (raw / "broken.jsonl.gz").write_bytes(gzip.compress(b'{"text": "hello"}\n' * 50)[:-30])
    with open(raw / "mixed.jsonl", "w") as f:
        f.write(json.dumps({"id": "ok1", "text": prose(10, seed=1)}) + "\n")
        f.write("{not json\n")
        f.write(json.dumps({"id": "ok2", "text": prose(10, seed=2)}) + "\n")
    (raw / "good.txt").write_text(prose(10, seed=3))
    rep = curate([raw], tmp_path / "out", workers=1, progress=False)
    rd = rep["read"]
    skipped = {Path(p).name: why for p, why in rd["skipped_files"]}
    assert set(skipped) == {"binary.txt", "broken.jsonl.gz"}
    assert "binary" in skipped["binary.txt"] and "gzip" in skipped["broken.jsonl.gz"]
    assert re.match(r"line \d+: broken gzip data", skipped["broken.jsonl.gz"])
    assert [(Path(p).name, line) for p, line, _ in rd["bad_lines"]] == [("mixed.jsonl", 2)]
    assert [Path(p).name for p in rd["empty_files"]] == ["empty.txt"]
    ids = {i for i, _ in read_out(tmp_path / "out")}
    assert {"ok1", "ok2"} <= ids and any(i.endswith("good.txt") for i in ids)
    md = (tmp_path / "out" / "report.md").read_text()
    assert "mixed.jsonl` line 2" in md and "broken.jsonl.gz" in md


def test_refuses_non_empty_out_without_overwrite(tmp_path: Path) -> None:
    make_corpus(tmp_path / "raw")
    out = tmp_path / "out"
    out.mkdir()
    (out / "part-00000.jsonl.gz").write_bytes(b"old")
    with pytest.raises(LmkitError, match="not empty"):
        curate([tmp_path / "raw"], out, workers=1, progress=False)
    assert (out / "part-00000.jsonl.gz").read_bytes() == b"old"
    curate([tmp_path / "raw"], out, workers=1, overwrite=True, progress=False)
    assert read_out(out)
    (out / "notes.txt").write_text("mine")
    with pytest.raises(LmkitError, match="did not write"):
        curate([tmp_path / "raw"], out, workers=1, overwrite=True, progress=False)
    with pytest.raises(LmkitError, match="inside the input"):
        curate([tmp_path / "raw"], tmp_path / "raw" / "out", workers=1, progress=False)


def test_processes_give_the_same_result_as_one_process(tmp_path: Path) -> None:
    make_corpus(tmp_path / "raw")
    cfg = CurateConfig(chunk_docs=3)
    a = curate([tmp_path / "raw"], tmp_path / "a", cfg, workers=1, progress=False)
    b = curate([tmp_path / "raw"], tmp_path / "b", cfg, workers=2, progress=False)
    assert read_out(tmp_path / "a") == read_out(tmp_path / "b")
    strip = [{k: v for k, v in st.items() if k != "seconds"} for st in a["stages"]]
    assert strip == [{k: v for k, v in st.items() if k != "seconds"} for st in b["stages"]]


def test_dask_local_cluster_keeps_the_same_documents(tmp_path: Path) -> None:
    distributed = pytest.importorskip("dask.distributed")
    make_corpus(tmp_path / "raw")
    cfg = CurateConfig(chunk_docs=4)
    curate([tmp_path / "raw"], tmp_path / "local", cfg, workers=1, progress=False)
    with (
        distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None) as cluster,
        distributed.Client(cluster) as client,
    ):
        rep = curate([tmp_path / "raw"], tmp_path / "dask", cfg, client=client, progress=False)
    assert rep["engine"].startswith("dask")
    assert read_out(tmp_path / "dask") == read_out(tmp_path / "local")


def test_config_yaml_switches_and_errors(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text(
        "order: [normalise, gopher_quality, exact_dedup]\ngopher_quality: {min_words: 3}\n"
        "gopher_repetition: {top_ngram_char_frac: {2: 0.5}}\nminhash: {enabled: false}\n"
    )
    cfg = load_curate_config(p)
    assert cfg.enabled_stages() == ["normalise", "gopher_quality", "exact_dedup"]
    assert cfg.gopher_quality.min_words == 3 and cfg.gopher_repetition.top_ngram_char_frac == {2: 0.5}
    p.write_text("gopher_quality: {min_wrods: 3}\n")
    with pytest.raises(LmkitError, match="min_wrods"):
        load_curate_config(p)
    p.write_text("order: [exact_dedup, normalise]\n")
    with pytest.raises(LmkitError, match="must be last"):
        load_curate_config(p)


def test_cli_curate_and_exit_code(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from lmkit.cli import main

    make_corpus(tmp_path / "raw")
    assert main(["curate", str(tmp_path / "raw"), "--out", str(tmp_path / "out"), "--workers", "1"]) == 0
    assert "kept" in capsys.readouterr().out
    assert main(["curate", str(tmp_path / "raw"), "--out", str(tmp_path / "out"), "--workers", "1"]) == 2
    assert "lmkit: error:" in capsys.readouterr().err


def test_bounded_ordered_map_keeps_order_and_window() -> None:
    in_flight = []
    pulled = []

    def items():
        for i in range(20):
            pulled.append(i)
            yield i

    def submit(x: int):
        in_flight.append(len(pulled) - sum(1 for _ in done))
        return lambda: done.append(x) or x * x

    done: list[int] = []
    assert list(bounded_ordered_map(submit, items(), window=3)) == [i * i for i in range(20)]
    assert max(in_flight) <= 3


MEMORY_SCRIPT = r"""
import json, sys
from pathlib import Path
from lmkit.data.curate import CurateConfig, curate

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) / 1024

raw, small, out = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
raw.mkdir(); small.mkdir()
para = " ".join(f"word{i} the of and" for i in range(400))
with open(raw / "big.jsonl", "w") as f:  # about 65 MB of documents, most of them copies
    for i in range(4200):
        f.write(json.dumps({"id": str(i), "text": f"Document {i % 500}. " + para * 2}) + "\n")
(small / "a.txt").write_text(para)
cfg = CurateConfig(order=["normalise", "exact_dedup"], chunk_docs=64)
curate([small], out.with_name("warm"), cfg, workers=1, progress=False)  # imports and first buffers
with open("/proc/self/clear_refs", "w") as f:  # reset the peak (VmHWM) to the current RSS
    f.write("5")
base = status("VmRSS")
rep = curate([raw], out, cfg, workers=1, progress=False)
print(json.dumps({"base": base, "peak": status("VmHWM"), "chars": rep["totals"]["chars_in"],
                  "kept": rep["totals"]["docs_out"]}))
"""


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc")
def test_corpus_larger_than_a_memory_cap_streams_within_it(tmp_path: Path) -> None:
    cap_mb = 30
    r = subprocess.run(
        [sys.executable, "-c", MEMORY_SCRIPT, str(tmp_path / "raw"), str(tmp_path / "small"), str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    m = json.loads(r.stdout.strip().splitlines()[-1])
    assert m["chars"] / 1e6 > 2 * cap_mb  # the corpus is well over the cap ...
    assert m["kept"] == 500
    assert m["peak"] - m["base"] < cap_mb  # ... and the run's memory growth stays under it


def test_vectorised_tokens_match_the_regex_tokens() -> None:
    import random
    import re

    from lmkit.data.curate import proxy_tokens, tokens_of

    rng = random.Random(0)
    alphabet = "ab Z9_ \n\t.,;!?-'\"()#…—“”éßΩ中😀½²©§\u00a0\u2028\x00\x1f"
    for _ in range(500):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
        ref = [(m.start(), m.end()) for m in re.finditer(r"\w+|[^\w\s]+", text)]
        tok = tokens_of(text)
        assert list(zip(tok.starts.tolist(), tok.ends.tolist())) == ref, repr(text)
        assert tok.word.tolist() == [bool(re.match(r"\w", text[a])) for a, _ in ref]
        assert proxy_tokens(text) == len(ref)
        words = [text[a:b] for a, b in ref]
        h = tok.hashes().tolist()
        for i in range(len(words)):
            for j in range(len(words)):
                assert (h[i] == h[j]) == (words[i] == words[j])


def _greedy_dup_chars(words: list[str], n: int) -> int:
    """The Gopher duplicated-n-gram walk, written plainly (the reference for the fast version)."""
    seen: set[tuple[str, ...]] = set()
    total, i = 0, 0
    while i < len(words) - n + 1:
        gram = tuple(words[i : i + n])
        if gram in seen:
            total += sum(map(len, gram))
            i += n
        else:
            seen.add(gram)
            i += 1
    return total


def test_duplicated_ngram_share_matches_the_plain_walk() -> None:
    import random

    rng = random.Random(7)
    vocab = ["ab", "cd", "ef", "gh", "ij"]
    for _ in range(300):
        words = [rng.choice(vocab[: rng.randint(2, 5)]) for _ in range(rng.randint(10, 60))]
        text = " ".join(words)
        n = rng.randint(2, 6)
        share = _greedy_dup_chars(words, n) / len(text)
        for frac, expect_removed in ((share - 1e-9, share > 0), (share + 1e-9, False)):
            out = only(dup_ngram_char_frac={n: frac})(text)
            assert (reason(out) == f"duplicated_{n}_n_grams") == expect_removed, (words, n)


def test_tokens_counted_with_a_given_tokenizer(tmp_path: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers

    hf = Tokenizer(models.WordLevel(vocab={"[UNK]": 0, "the": 1}, unk_token="[UNK]"))
    hf.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    hf.save(str(tmp_path / "tok.json"))
    raw = tmp_path / "raw"
    raw.mkdir()
    texts = [prose(10, seed=i) for i in range(3)]
    write_jsonl(raw / "a.jsonl", texts)
    cfg = CurateConfig(order=["gopher_quality"])
    rep = curate([raw], tmp_path / "out", cfg, workers=1, tokenizer=str(tmp_path / "tok.json"), progress=False)
    assert rep["token_counter"].startswith("tokenizer ")
    assert rep["totals"]["tokens_in"] == sum(len(t.split()) for t in texts)  # one token per word here
    rep2 = curate([raw], tmp_path / "out2", cfg, workers=1, progress=False)
    assert rep2["token_counter"].startswith("proxy")
    assert rep2["totals"]["tokens_in"] == sum(len(re.findall(r"\w+|[^\w\s]+", t)) for t in texts)


# ----------------------------------------------------------------------------- output used downstream


def test_curated_output_feeds_tokenizer_train_and_packing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from lmkit.cli import main
    from lmkit.config import DataConfig
    from lmkit.data.prepare import prepare
    from lmkit.tokenizer import Tokenizer

    make_corpus(tmp_path / "raw")
    out = tmp_path / "clean"
    rep = curate([tmp_path / "raw"], out, workers=1, progress=False)
    assert main(["tokenizer", "train", str(out), "--out", str(tmp_path / "tok"), "--vocab-size", "400"]) == 0
    assert "read: " + f"{rep['totals']['docs_out']} documents" in capsys.readouterr().out
    tok = Tokenizer.load(tmp_path / "tok")
    cfg = DataConfig(
        paths=[str(out)], tokenizer=str(tmp_path / "tok"), shards=str(tmp_path / "shards"), val_fraction=0.0, workers=1
    )
    _, train, _ = prepare(cfg, tmp_path / "run", vocab_size=400, show_progress=False)
    docs = read_out(out)
    assert train.meta["documents"] == rep["totals"]["docs_out"] == len(docs)
    # every kept document packed once, each followed by EOS (the reports beside the shards are not data)
    assert train.num_tokens == sum(len(tok.encode(t)) + 1 for _, t in docs)
    assert set(train.meta["tokens_per_source"]) == {str(tmp_path / "raw" / "a.jsonl"), str(tmp_path / "raw" / "b.txt")}


def test_a_run_that_keeps_nothing_still_writes_a_shard(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    write_jsonl(raw / "a.jsonl", ["too short", "also short"])
    rep = curate([raw], tmp_path / "out", workers=1, progress=False)
    assert rep["totals"]["docs_out"] == 0 and rep["output"]["shards"] == ["part-00000.jsonl.gz"]
    # the folder reads as curated data with no documents, not as its report files
    assert read_out(tmp_path / "out") == []


def test_large_text_file_is_curated_in_pieces_not_removed_as_too_long(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    paras = [textwrap.fill(prose(8, seed=i), 72) for i in range(40)]
    book = "\n\n".join(paras[i % 40] for i in range(1200))  # ~620k characters, ~130k words
    (raw / "book.txt").write_text(book, encoding="utf-8")
    assert len(re.findall(r"\w+", book)) > GopherQualityConfig().max_words
    cfg = CurateConfig(order=["normalise", "gopher_quality", "c4"])
    rep = curate([raw], tmp_path / "out", cfg, workers=1, progress=False)
    assert rep["totals"]["docs_in"] >= len(book) // 120_000  # cut at paragraph breaks after text_doc_chars
    assert rep["stages"][1]["reasons"] == {}  # no piece is over Gopher's 100,000 words
    assert rep["totals"]["docs_out"] == rep["totals"]["docs_in"]
    assert all(i.startswith(f"{raw / 'book.txt'}#") for i, _ in read_out(tmp_path / "out"))


def test_progress_bar_goes_over_the_input_bytes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_corpus(tmp_path / "raw")
    size = sum(f.stat().st_size for f in (tmp_path / "raw").iterdir())
    curate([tmp_path / "raw"], tmp_path / "out", CurateConfig(chunk_docs=2), workers=1, progress=True)
    err = capsys.readouterr().err
    last = err.replace("\r", "\n").strip().splitlines()[-1]
    from tqdm import tqdm

    total = tqdm.format_sizeof(size, divisor=1024)
    assert last.startswith("curate: 100%") and f"{total}/{total} [" in last, last
    assert "docs=20" in last and "kept=" in last  # 20 documents read (the empty record is not one)


def test_config_errors_name_the_file_and_line(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text("c4:\n  enabled: true\n  min_sentences: 3: 4\n")
    with pytest.raises(LmkitError, match=r"c\.yaml:3: not valid YAML"):
        load_curate_config(p)
    p.write_text("minhash: {bands: 5}\n")
    with pytest.raises(LmkitError, match=r"c\.yaml: curate config: minhash\.num_perm \(112\) must be a multiple"):
        load_curate_config(p)
    p.write_text("blocklist: {words_file: /nonexistent/list.txt}\n")
    with pytest.raises(LmkitError, match=r"^/nonexistent/list\.txt: cannot read block-list \(No such file"):
        curate([p], tmp_path / "out", load_curate_config(p), workers=1, progress=False)


def test_cli_dask_local_cluster_of_processes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("dask.distributed")
    from lmkit.cli import main

    make_corpus(tmp_path / "raw")
    curate([tmp_path / "raw"], tmp_path / "local", workers=1, progress=False)
    # a local Dask cluster of worker processes: the chunks and the config travel between processes
    assert (
        main(
            [
                "curate",
                str(tmp_path / "raw"),
                "--out",
                str(tmp_path / "dask"),
                "--dask",
                "local",
                "--workers",
                "1",
                "--json",
            ]
        )
        == 0
    )
    rep = json.loads(capsys.readouterr().out)
    assert rep["engine"].startswith("dask (tcp://") and rep["engine"].endswith(", 1 thread)")
    assert read_out(tmp_path / "dask") == read_out(tmp_path / "local")


# --------------------------------------------------------------------------- Dask


def test_unreachable_dask_scheduler_fails_fast_naming_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("dask.distributed")
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "a.txt").write_text("hello world, some text. " * 20)
    with socket.socket() as s:  # a port with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    addr = f"tcp://127.0.0.1:{port}"
    t0 = time.monotonic()
    rc = main(["curate", str(tmp_path / "raw"), "--out", str(tmp_path / "out"), "--dask", addr])
    took = time.monotonic() - t0
    err = capsys.readouterr().err
    assert rc == 2 and took < 5, f"{took:.1f} s"
    assert addr in err and "cannot reach the scheduler" in err and len(err.strip().splitlines()) == 1
