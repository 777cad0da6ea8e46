"""Curating a scrape: the URL filter, language identification (accuracy on real translated text
from this machine's message catalogues), ALL-CAPS legal prose kept whatever its wrapping, the
warning when one rule empties a source, and a WARC curated end to end with URL, title and
language on every output line."""

from __future__ import annotations

import glob
import io
import json
import random
import re
import struct
import textwrap
from pathlib import Path

import pytest

from lmkit.cli import main
from lmkit.data.curate import CurateConfig, DocPipeline, UrlFilter, UrlFilterConfig, count_sentences, curate, identify
from lmkit.data.document import Document
from lmkit.data.read import iter_documents
from lmkit.errors import LmkitError

# ----------------------------------------------------------------------------- helpers


def varied_prose(n: int, seed: int = 0) -> str:
    """Sentences of made-up words and English stop words, little repeated: what every quality rule keeps."""
    rng = random.Random(seed)
    syllables = ["ka", "lo", "mer", "tin", "sa", "rel", "dor", "pi", "van", "gu", "bel", "os"]
    vocab = sorted({"".join(rng.choice(syllables) for _ in range(rng.randint(2, 3))) for _ in range(400)})
    stops = ["the", "of", "and", "to", "with", "that", "a", "in"]
    out = []
    for _ in range(n):
        words = [rng.choice(stops) if rng.random() < 0.35 else rng.choice(vocab) for _ in range(rng.randint(8, 14))]
        out.append(" ".join(words).capitalize() + ".")
    return " ".join(out)


# ----------------------------------------------------------------------------- URL filter


def test_url_filter_domains_words_subwords_and_soft_words(tmp_path: Path) -> None:
    f = UrlFilter(UrlFilterConfig())
    assert f.verdict("https://www.pornhub.com/view?id=1") == "url_blocked_domain"
    assert f.verdict("https://de.pornhub.com/") == "url_blocked_domain"  # a sub-domain of a listed one
    assert f.verdict("https://example.org/free-porn/videos") == "url_blocked_word"
    assert f.verdict("https://bestfreepornsite.example/") == "url_blocked_subword"
    assert f.verdict("https://example.org/hot-girls") == "url_soft_words"  # two soft words
    assert f.verdict("https://example.org/hot-weather") is None  # one is not enough
    assert f.verdict("https://en.wikipedia.org/wiki/Sussex") is None  # "sex" inside a word is no soft word
    assert f.apply(Document("d", "text", "s")) == Document("d", "text", "s")  # no URL: passes
    own = tmp_path / "urls.txt"
    own.write_text("# mine\ndomain Casino.Example\nword warez\n", encoding="utf-8")
    mine = UrlFilter(UrlFilterConfig(list_file=str(own), extra=["subword pills"]))
    assert mine.verdict("https://www.casino.example/a") == "url_blocked_domain"
    assert mine.verdict("https://x.org/warez/list") == "url_blocked_word"
    assert mine.verdict("https://x.org/cheappills4u") == "url_blocked_subword"
    assert mine.verdict("https://example.org/free-porn/") is None  # the shipped list was replaced
    own.write_text("domain ok.example\nporn\n", encoding="utf-8")
    with pytest.raises(LmkitError, match=r"urls\.txt:2: 'porn' is not '<kind> <value>'"):
        UrlFilter(UrlFilterConfig(list_file=str(own)))


# ----------------------------------------------------------------------------- language identification


def read_mo(path: str) -> list[tuple[str, str]]:
    """(msgid, msgstr) pairs of a GNU gettext .mo catalogue (its header: magic, count, two tables)."""
    data = Path(path).read_bytes()
    if len(data) < 20:
        return []
    order = "<" if struct.unpack("<I", data[:4])[0] == 0x950412DE else ">"
    _, n, ids_at, strs_at = struct.unpack(order + "4I", data[4:20])
    out = []
    for i in range(n):
        id_len, id_off = struct.unpack(order + "2I", data[ids_at + 8 * i : ids_at + 8 * i + 8])
        s_len, s_off = struct.unpack(order + "2I", data[strs_at + 8 * i : strs_at + 8 * i + 8])
        try:
            msgid = data[id_off : id_off + id_len].split(b"\0")[0].decode("utf-8")
            msgstr = data[s_off : s_off + s_len].split(b"\0")[0].decode("utf-8")
        except UnicodeDecodeError:
            continue
        if msgid and msgstr and msgstr != msgid:
            out.append((msgid, msgstr))
    return out


_MARKUP = re.compile(r"%[-#0-9.]*[a-zA-Z]|\\n|[&_{}<>]")
LANGS = ["de", "fr", "es", "it", "pt", "nl", "ru", "pl", "sv", "cs", "fi", "tr"]


def mixed_language_set(per_lang: int = 25) -> list[tuple[str, str]]:
    """(language, text) samples of three translated messages each, English from the msgids."""
    rng = random.Random(0)
    samples: list[tuple[str, str]] = []
    english: set[str] = set()
    for lang in LANGS:
        msgs = []
        for path in sorted(glob.glob(f"/usr/share/locale/{lang}/LC_MESSAGES/*.mo")):
            if len(msgs) >= 20 * per_lang:
                break
            for msgid, msgstr in read_mo(path):
                if len(msgstr.split()) >= 6:
                    msgs.append(_MARKUP.sub(" ", msgstr))
                    english.add(_MARKUP.sub(" ", msgid))
        if len(msgs) < 3 * per_lang:
            continue
        rng.shuffle(msgs)
        samples += [(lang, " ".join(msgs[3 * k : 3 * k + 3])) for k in range(per_lang)]
    eng = sorted(english)
    rng.shuffle(eng)
    samples += [("en", " ".join(eng[3 * k : 3 * k + 3])) for k in range(per_lang)]
    return samples


def test_language_identification_is_accurate_on_real_translations() -> None:
    samples = mixed_language_set()
    if len({lang for lang, _ in samples}) < 6:
        pytest.skip("fewer than 5 translated languages in /usr/share/locale on this machine")
    min_score = CurateConfig().language.min_score
    found = [(lang, *identify(text)) for lang, text in samples]
    right = sum(1 for lang, got, _ in found if got == lang)
    kept = sum(1 for lang, got, score in found if got == lang and score >= min_score)
    assert right / len(samples) >= 0.95
    assert kept / len(samples) >= 0.95, f"{kept} of {len(samples)} identified at >= {min_score}"


def test_languages_flag_keeps_only_those_and_counts_per_language(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    texts = {
        "en": "The committee met on Tuesday with the members of the board to discuss the repairs to the pier.",
        "de": "Der Ausschuss traf sich am Dienstag mit den Mitgliedern des Vorstands, um die Reparaturen "
        "zu besprechen.",
        "fr": "Le comité s'est réuni mardi avec les membres du conseil pour discuter des réparations de la jetée.",
    }
    raw = tmp_path / "raw.jsonl"
    with open(raw, "w", encoding="utf-8") as f:
        for lang, text in texts.items():
            f.write(json.dumps({"id": lang, "text": text}) + "\n")
    cfg = CurateConfig(order=["language"])
    rep = curate([raw], tmp_path / "all", cfg, workers=1, progress=False)
    assert {k: v["docs_out"] for k, v in rep["languages"].items()} == {"en": 1, "de": 1, "fr": 1}
    args = ["curate", str(raw), "--out", str(tmp_path / "ende"), "--workers", "1", "--languages", "en", "de", "--json"]
    assert main([*args, "--config", str(_yaml(tmp_path, "order: [language]"))]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["languages"]["fr"] == {**rep["languages"]["fr"], "docs_in": 1, "docs_out": 0}
    out = {d.id: d for d in iter_documents([tmp_path / "ende"])}
    assert set(out) == {"en", "de"} and out["de"].language == "de" and out["de"].language_score is not None
    assert main([*args[:-1], "--language.min_score", "2"]) != 0  # one line naming the key
    assert "language.min_score must be in [0, 1]" in capsys.readouterr().err


def _yaml(folder: Path, text: str) -> Path:
    p = folder / "c.yaml"
    p.write_text(text + "\n", encoding="utf-8")
    return p


# ----------------------------------------------------------------------------- capitals and wrapping


def _decisions(texts: list[str], cfg: CurateConfig | None = None) -> list[str | None]:
    """Per text, the reason the per-document stages (English only) remove it (None: kept)."""
    cfg = cfg or CurateConfig()
    cfg.order = [n for n in cfg.order if n not in ("exact_dedup", "minhash")]
    cfg.language.languages = ["en"]
    pipe = DocPipeline(cfg)
    out: list[str | None] = []
    for i, t in enumerate(texts):
        res = pipe.run([Document(f"p{i}", t, "licenses")])
        out.append(None if res.ids else next(r for s in res.stats.values() for r in s.reasons))
    return out


DISCLAIMER = (
    "BECAUSE THE PROGRAM IS LICENSED FREE OF CHARGE, THERE IS NO WARRANTY FOR THE PROGRAM, TO THE EXTENT "
    "PERMITTED BY APPLICABLE LAW. EXCEPT WHEN OTHERWISE STATED IN WRITING THE COPYRIGHT HOLDERS AND/OR OTHER "
    "PARTIES PROVIDE THE PROGRAM AS IS WITHOUT WARRANTY OF ANY KIND, EITHER EXPRESSED OR IMPLIED. THE ENTIRE "
    "RISK AS TO THE QUALITY AND PERFORMANCE OF THE PROGRAM IS WITH YOU. SHOULD THE PROGRAM PROVE DEFECTIVE, "
    "YOU ASSUME THE COST OF ALL NECESSARY SERVICING, REPAIR OR CORRECTION. NO ONE MAY CHANGE THAT."
)


def test_all_caps_prose_counts_its_stop_words_unless_asked_not_to() -> None:
    assert _decisions([DISCLAIMER, DISCLAIMER.lower()]) == [None, None]
    published = CurateConfig()
    published.gopher_quality.stop_words_case_sensitive = True
    assert _decisions([DISCLAIMER, DISCLAIMER.lower()], published) == ["gopher_not_enough_stop_words", None]


def license_paragraphs() -> list[str]:
    """Paragraphs of five or more sentences from this machine's licence texts, each on one line."""
    out: list[str] = []
    for path in sorted(glob.glob("/usr/share/common-licenses/*")):
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        for block in re.split(r"\n\s*\n", text):
            para = " ".join(block.split())
            if count_sentences(para) >= 5 and para not in out:
                out.append(para)
    return out


def test_real_license_paragraphs_same_decisions_wrapped_unwrapped_and_in_capitals() -> None:
    paras = license_paragraphs()
    if len(paras) < 10:
        pytest.skip("/usr/share/common-licenses is not on this machine")
    caps = [p for p in paras if sum(c.isupper() for c in p) > 0.8 * sum(c.isalpha() for c in p)]
    assert caps, "no ALL-CAPS disclaimer among the licence paragraphs"
    one_line = _decisions(paras)
    assert [one_line[paras.index(p)] for p in caps] == [None] * len(caps)  # every disclaimer kept
    for width in (60, 72, 80):
        assert _decisions([textwrap.fill(p, width) for p in paras]) == one_line, f"wrapped at {width}"
    published = CurateConfig()
    published.gopher_quality.stop_words_case_sensitive = True  # the published reading removes the disclaimers
    assert {_decisions(caps, published)[i] for i in range(len(caps))} == {"gopher_not_enough_stop_words"}
    # every rule sees ALL-CAPS text as it sees the same text in lower case
    assert _decisions([p.upper() for p in paras]) == _decisions([p.lower() for p in paras])


# ----------------------------------------------------------------------------- the warning


def test_a_rule_that_empties_a_source_is_warned_about_with_its_setting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    code_doc = (
        "Return the mapping of names to values, for example {'a': 1, 'b': 2}. The keys are strings. "
        "Each value is the count of the name in the text. A missing name has no entry. "
        "The result is a new dictionary. It can be changed without changing the input."
    )
    with open(raw / "docstrings.jsonl", "w", encoding="utf-8") as f:
        for i in range(6):
            f.write(json.dumps({"id": f"c{i}", "text": f"Function {i}. " + code_doc}) + "\n")
    prose = varied_prose(8)
    (raw / "prose.txt").write_text(prose, encoding="utf-8")
    cfg = ["--gopher_quality.min_words", "10", "--workers", "1"]
    assert main(["curate", str(raw), "--out", str(tmp_path / "out"), *cfg]) == 0
    err = capsys.readouterr().err
    source = str(raw / "docstrings.jsonl")
    line = (
        f"lmkit: warning: c4_curly_bracket removed 100% of source {source} (6 of 6 documents): "
        "the text holds code; --c4.curly_bracket false keeps it"
    )
    assert line in err.splitlines()
    rep = json.loads((tmp_path / "out" / "report.json").read_text())
    assert [w["reason"] for w in rep["warnings"]] == ["c4_curly_bracket"]
    assert rep["warnings"][0]["sources"] == [{"source": source, "removed": 6, "docs": 6}]
    assert "c4_curly_bracket removed 100% of source" in (tmp_path / "out" / "report.md").read_text()
    # the setting named keeps the source, and then there is nothing to warn about
    assert main(["curate", str(raw), "--out", str(tmp_path / "out2"), *cfg, "--c4.curly_bracket", "false"]) == 0
    assert "warning" not in capsys.readouterr().err
    assert {d.source for d in iter_documents([tmp_path / "out2"])} == {source, str(raw / "prose.txt")}


# ----------------------------------------------------------------------------- a WARC end to end

HARBOUR = (
    "The harbour committee met on Tuesday evening to discuss the repairs to the old stone pier. Most of the "
    "members agreed that the work should begin in the spring, when the sea is calmer and the days are longer. "
    "A local engineer explained that the foundations had been weakened by the storms of the last two winters. "
    "She showed photographs of the cracks and described how the water had worked its way into the stone. "
    "The chairman asked whether the fishermen would be able to use the pier while the work was going on. "
    "After a long discussion it was decided that one side would stay open for boats at all times. "
    "The treasurer then presented a budget, which will be published with a timetable for every stage. "
    "Several residents wrote to the committee to say that the pier is the heart of the village. "
    "They hope that the repairs will keep it safe for their children and grandchildren to enjoy. "
    "The next meeting will be held in the school hall at the beginning of March."
)


def test_curating_a_warc_keeps_url_title_and_language_and_names_bad_records(tmp_path: Path) -> None:
    pytest.importorskip("warcio")
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    article = HARBOUR
    buf = io.BytesIO()
    w = WARCWriter(buf, gzip=True)
    pages = []
    for url, body in [
        ("https://example.org/harbour", article),
        ("https://bestfreepornsite.example/harbour", article.replace("harbour", "port")),
        ("https://example.org/empty", ""),
        ("https://example.org/last", article.replace("harbour", "river")),
    ]:
        html = f"<html lang='en'><head><title>{url}</title></head><body><main><p>{body}</p></main></body></html>"
        pages.append(html)
        http = StatusAndHeaders("200 OK", [("Content-Type", "text/html")], protocol="HTTP/1.1")
        w.write_record(w.create_warc_record(url, "response", payload=io.BytesIO(html.encode()), http_headers=http))
    data = buf.getvalue()
    (tmp_path / "crawl.warc.gz").write_bytes(data[:-60])  # the last record cut short
    rep = curate([tmp_path / "crawl.warc.gz"], tmp_path / "out", workers=1, progress=False)
    stages = {s["name"]: s for s in rep["stages"]}
    assert stages["url_filter"]["reasons"] == {"url_blocked_subword": 1}
    assert stages["extract"]["reasons"] == {"extract_no_main_text": 1}
    lines = [json.loads(x) for x in _gunzip_lines(tmp_path / "out")]
    assert len(lines) == 1
    doc = lines[0]
    assert doc["url"] == doc["title"] == "https://example.org/harbour" and doc["language"] == "en"
    assert doc["text"] == article and doc["language_score"] > 0.9
    assert (
        rep["read"]["bad_record_count"] == 1
        and "https://example.org/last: truncated" in rep["read"]["bad_records"][0][2]
    )
    assert "https://example.org/last: truncated" in (tmp_path / "out" / "report.md").read_text()
    assert rep["totals"]["chars_in"] == sum(map(len, pages[:3]))  # counted from the pages' HTML


def _gunzip_lines(folder: Path) -> list[str]:
    import gzip

    return [
        x for p in sorted(folder.glob("part-*.jsonl.gz")) for x in gzip.open(p, "rt", encoding="utf-8") if x.strip()
    ]


def test_html_is_extracted_on_worker_processes_with_the_same_result(tmp_path: Path) -> None:
    pytest.importorskip("warcio")
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    sentences = [x.rstrip(".") for x in HARBOUR.split(". ")]
    with open(tmp_path / "crawl.warc", "wb") as f:
        w = WARCWriter(f, gzip=False)
        for i in range(6):  # six different pages: the sentences rotated
            body = ". ".join(sentences[i:] + sentences[:i]) + "."
            html = f"<html><head><title>Page {i}</title></head><body><article><p>{body}</p></article></body></html>"
            http = StatusAndHeaders("200 OK", [("Content-Type", "text/html")], protocol="HTTP/1.1")
            url = f"https://example.org/{i}"
            w.write_record(w.create_warc_record(url, "response", payload=io.BytesIO(html.encode()), http_headers=http))
    cfg = CurateConfig(chunk_docs=2)
    cfg.order = [n for n in cfg.order if n != "minhash"]  # rotations of one text are near-duplicates
    one = curate([tmp_path / "crawl.warc"], tmp_path / "one", cfg, workers=1, progress=False)
    two = curate([tmp_path / "crawl.warc"], tmp_path / "two", cfg, workers=2, progress=False)
    assert two["engine"] == "2 processes" and one["totals"] == two["totals"] and one["totals"]["docs_out"] == 6
    assert _gunzip_lines(tmp_path / "one") == _gunzip_lines(tmp_path / "two")


def test_a_pdf_is_curated_with_its_title(tmp_path: Path) -> None:
    from test_scrape import make_pdf

    lines = textwrap.wrap(HARBOUR, 90)
    make_pdf(tmp_path / "minutes.pdf", [lines[: len(lines) // 2], lines[len(lines) // 2 :]], "Harbour minutes")
    rep = curate([tmp_path / "minutes.pdf"], tmp_path / "out", workers=1, progress=False)
    doc = json.loads(_gunzip_lines(tmp_path / "out")[0])
    assert rep["totals"]["docs_out"] == 1 and doc["title"] == "Harbour minutes" and doc["language"] == "en"
    # a sentence that runs on over the page break joins its paragraph, and C4 keeps the hard-wrapped lines
    assert " ".join(doc["text"].split()) == HARBOUR
