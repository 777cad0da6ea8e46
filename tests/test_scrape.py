"""Reading a scrape: WARC records (HTML, non-HTML, truncated), HTML pages and PDFs, each back to the
text the test put in, with URL, title and language; every unreadable record or file named in the
report, never a crash."""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import pytest

from lmkit.data.document import ReadReport
from lmkit.data.extract import ExtractError, html_page
from lmkit.data.read import iter_documents
from lmkit.errors import LmkitError

warcio = pytest.importorskip("warcio")
from warcio.statusandheaders import StatusAndHeaders  # noqa: E402
from warcio.warcwriter import WARCWriter  # noqa: E402

ARTICLE = [
    "The harbour committee met on Tuesday to discuss the repairs to the old stone pier.",
    "Members agreed that the work should begin in the spring, when the weather is calmer.",
    "The plan will be published with a clear budget and a timetable for every stage of the work.",
]


def page(paragraphs: list[str], title: str, lang: str = "en", nav: bool = True) -> str:
    """An HTML page: navigation and footer boilerplate around an article of paragraphs."""
    menu = "".join(f'<li><a href="/{w}">{w.title()}</a></li>' for w in ("home", "news", "about", "contact"))
    body = "".join(f"<p>{p}</p>" for p in paragraphs)
    return (
        f'<!DOCTYPE html><html lang="{lang}"><head><meta charset="utf-8"><title>{title}</title>'
        f'<link rel="canonical" href="https://example.org/{title.lower().replace(" ", "-")}"></head><body>'
        + (f"<nav><ul>{menu}</ul></nav>" if nav else "")
        + f"<main><article><h1>{title}</h1>{body}</article></main>"
        + ("<footer><p>Copyright 2024 Example Org. All rights reserved.</p></footer>" if nav else "")
        + "</body></html>"
    )


def write_warc(path: Path, gz: bool, truncate: int = 0) -> list[str]:
    """A WARC with a warcinfo record, three HTML responses (one in Latin-1, one in German), a
    request, a PNG, a 404 and, last, an HTML response cut ``truncate`` bytes short. Returns the
    URLs of the HTML responses in order."""
    buf = io.BytesIO()
    w = WARCWriter(buf, gzip=gz)
    w.write_record(w.create_warcinfo_record("test.warc", {"software": "lmkit tests"}))

    def response(url: str, body: bytes, ctype: str, status: str = "200 OK") -> None:
        http = StatusAndHeaders(status, [("Content-Type", ctype)], protocol="HTTP/1.1")
        w.write_record(w.create_warc_record(url, "response", payload=io.BytesIO(body), http_headers=http))

    urls = ["https://example.org/harbour", "https://example.org/cafe", "https://example.de/hafen", "https://x.org/last"]
    response(urls[0], page(ARTICLE, "Harbour repairs").encode(), "text/html; charset=utf-8")
    w.write_record(w.create_warc_record(urls[0], "request", payload=io.BytesIO(b"GET /harbour HTTP/1.1\r\n\r\n")))
    cafe = ["Le café du port ouvre à sept heures et ferme à minuit, tous les jours de la semaine."] * 1
    response(urls[1], page(cafe, "Cafe", "fr").encode("latin-1"), "text/html; charset=ISO-8859-1")
    response("https://example.org/logo.png", b"\x89PNG\r\n\x1a\n" + bytes(64), "image/png")
    response("https://example.org/missing", b"<html><body>Not found</body></html>", "text/html", "404 Not Found")
    de = ["Der Ausschuss traf sich am Dienstag, um die Reparaturen am alten Steinpier zu besprechen."]
    response(urls[2], page(de, "Hafen", "de").encode(), "text/html; charset=utf-8")
    response(urls[3], page(ARTICLE, "Last page").encode(), "text/html")
    data = buf.getvalue()
    path.write_bytes(data[: len(data) - truncate] if truncate else data)
    return urls[:3]


def test_warc_html_records_come_back_with_url_title_and_language(tmp_path: Path) -> None:
    path = tmp_path / "crawl.warc.gz"
    urls = write_warc(path, gz=True)
    report = ReadReport()
    docs = list(iter_documents([path], report=report))
    assert [d.url for d in docs] == urls + ["https://x.org/last"]
    first = docs[0]
    assert first.id.startswith("<urn:uuid:") and first.source == str(path)
    assert first.title == "Harbour repairs" and first.language == "en"
    for sentence in ARTICLE:
        assert sentence in first.text
    assert "Contact" not in first.text and "All rights reserved" not in first.text  # boilerplate left out
    assert "Le café du port ouvre à sept heures" in docs[1].text  # the HTTP charset decoded Latin-1
    assert docs[1].language == "fr" and docs[2].language == "de"
    assert report.non_text_records == 2  # the PNG and the 404; the request and warcinfo are not pages
    assert report.bad_record_count == 0 and report.files_read == 1


@pytest.mark.parametrize("gz", [False, True])
def test_a_truncated_record_is_named_and_the_others_kept(tmp_path: Path, gz: bool) -> None:
    path = tmp_path / ("cut.warc.gz" if gz else "cut.warc")
    urls = write_warc(path, gz=gz, truncate=120)
    report = ReadReport()
    docs = list(iter_documents([path], report=report, lenient=True))
    assert [d.url for d in docs] == urls  # everything before the cut record
    assert report.bad_record_count == 1
    file, record, why = report.bad_records[0]
    assert file == str(path) and record == 8  # warcinfo, HTML, request, HTML, PNG, 404, HTML, then the cut one
    assert "truncated" in why and "https://x.org/last" in why
    assert "record 8" in report.summary()
    with pytest.raises(LmkitError, match=r"record 8: https://x\.org/last: truncated \(\d+ of \d+ bytes missing\)$"):
        list(iter_documents([path]))  # a strict read stops there, in one line


def test_a_file_that_is_not_a_warc_is_one_line_naming_it(tmp_path: Path) -> None:
    bad = tmp_path / "junk.warc"
    bad.write_bytes(b"this is not a web archive\n" * 20)
    report = ReadReport()
    assert list(iter_documents([bad], report=report, lenient=True)) == []
    assert report.skipped_files == [(str(bad), "not a WARC file (starts with 'this is not a web ar', not 'WARC/')")]
    with pytest.raises(LmkitError, match=r"junk\.warc: not a WARC file"):
        list(iter_documents([bad]))


def test_html_files_extract_the_article_with_either_extractor(tmp_path: Path) -> None:
    (tmp_path / "a.html").write_text(page(ARTICLE, "Harbour repairs"), encoding="utf-8")
    with gzip.open(tmp_path / "b.htm.gz", "wt", encoding="utf-8") as f:
        f.write(page(ARTICLE[:2], "Second", "en-GB"))
    docs = list(iter_documents([tmp_path]))
    assert [Path(d.id).name for d in docs] == ["a.html", "b.htm.gz"]
    assert docs[0].title == "Harbour repairs" and docs[0].url == "https://example.org/harbour-repairs"
    assert docs[1].language == "en"  # en-GB's primary subtag
    assert all(s in docs[0].text for s in ARTICLE) and "Home" not in docs[0].text
    raw = page(ARTICLE, "Harbour repairs").encode()
    traf = html_page(raw, "trafilatura")
    assert all(s in " ".join(traf.text.split()) for s in ARTICLE) and traf.title == "Harbour repairs"
    with pytest.raises(LmkitError, match="unknown HTML extractor 'lxml'"):
        html_page(raw, "lxml")
    big = page(ARTICLE * 400, "Long page").encode()  # trafilatura needs far more than a millisecond for it
    with pytest.raises(ExtractError, match=r"^trafilatura took longer than 0\.001 s \(extract\.timeout_s\)$"):
        html_page(big, "trafilatura", timeout_s=0.001)
    assert html_page(big, "trafilatura", timeout_s=60).text.count(ARTICLE[0]) >= 1  # the limit is lifted after


def make_pdf(path: Path, pages: list[list[str]], title: str) -> None:
    """A PDF with these lines on its pages, made with matplotlib's PDF backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.backends.backend_pdf import PdfPages

    with PdfPages(path, metadata={"Title": title}) as pdf:
        for lines in pages:
            fig = plt.figure(figsize=(8.5, 11))
            for k, line in enumerate(lines):
                fig.text(0.05, 0.95 - 0.03 * k, line, fontsize=9)
            pdf.savefig(fig)
            plt.close(fig)


def test_pdf_text_page_by_page_cut_at_page_breaks(tmp_path: Path) -> None:
    pages = [[f"Page {i + 1}: {s}" for s in ARTICLE] for i in range(3)]
    make_pdf(tmp_path / "report.pdf", pages, "Harbour Report")
    one = list(iter_documents([tmp_path / "report.pdf"]))
    assert len(one) == 1 and one[0].id == str(tmp_path / "report.pdf") and one[0].title == "Harbour Report"
    assert [line for line in one[0].text.splitlines() if line.strip()] == [x for p in pages for x in p]
    cut = list(iter_documents([tmp_path / "report.pdf"], text_doc_chars=200))  # each page is ~270 characters
    assert [d.id.rsplit("#", 1)[1] for d in cut] == ["p1-1", "p2-2", "p3-3"]
    assert "\n\n".join(d.text for d in cut) == one[0].text


def test_a_broken_pdf_is_skipped_and_named_or_one_line_error(tmp_path: Path) -> None:
    bad = tmp_path / "broken.pdf"
    bad.write_bytes(b"%PDF-1.4\n" + b"\x00garbage" * 50)
    report = ReadReport()
    assert list(iter_documents([bad], report=report, lenient=True)) == []
    assert report.skipped_file_count == 1 and "not a readable PDF" in report.skipped_files[0][1]
    with pytest.raises(LmkitError, match=r"broken\.pdf: not a readable PDF") as e:
        list(iter_documents([bad]))
    assert "\n" not in str(e.value)
