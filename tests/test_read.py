"""Readers: every format yields the right documents; every bad input gives a one-line LmkitError
naming the file (and line), or is skipped and counted in lenient mode."""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from lmkit.data import formats
from lmkit.data.document import Document, ReadReport
from lmkit.data.read import iter_documents, list_files
from lmkit.errors import LmkitError


def _docs(paths, **kw) -> list[Document]:
    return list(iter_documents(paths, **kw))


def _jsonl(records: list[dict]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def test_plain_text_one_document_per_file(tmp_path: Path) -> None:
    text = "Première ligne.\n\nSecond paragraph, ünïcode ✓.\n"
    (tmp_path / "a.txt").write_text(text, encoding="utf-8")
    (tmp_path / "b.md").write_text("no extension rules\n", encoding="utf-8")
    docs = _docs([tmp_path])
    assert [(d.id, d.text) for d in docs] == [
        (str(tmp_path / "a.txt"), text),
        (str(tmp_path / "b.md"), "no extension rules\n"),
    ]
    assert docs[0].source == str(tmp_path / "a.txt")


def test_utf8_bom_is_dropped(tmp_path: Path) -> None:
    (tmp_path / "bom.txt").write_bytes("\ufeffhello".encode("utf-8"))
    assert _docs([tmp_path / "bom.txt"])[0].text == "hello"


def test_large_text_file_is_cut_at_paragraphs_and_kept_exactly(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(formats, "TEXT_DOC_SOFT_CHARS", 100)
    monkeypatch.setattr(formats, "TEXT_DOC_HARD_CHARS", 400)
    paras = [f"paragraph {i} " + "word " * 15 + "\n" for i in range(12)]
    text = "\n".join(paras) + "\n\n"
    f = tmp_path / "big.txt"
    f.write_text(text, encoding="utf-8")
    docs = _docs([f])
    assert len(docs) > 3
    assert "".join(d.text for d in docs) == text  # nothing lost or added
    assert [d.id for d in docs] == [f"{f}#{k}" for k in range(len(docs))]
    assert all(d.text.startswith("paragraph") for d in docs)  # cuts fall on paragraph breaks
    # no blank lines at all: hard cap at line ends
    lines = "".join(f"line {i} " + "x" * 50 + "\n" for i in range(40))
    g = tmp_path / "noblank.txt"
    g.write_text(lines, encoding="utf-8")
    docs = _docs([g])
    assert len(docs) > 2 and "".join(d.text for d in docs) == lines
    assert all(len(d.text) <= 400 + 60 and d.text.endswith("\n") for d in docs)


def test_jsonl_ids_text_field_and_compression(tmp_path: Path) -> None:
    recs = [{"id": "doc-a", "text": "alpha"}, {"text": "beta", "meta": 1}, {"id": 7, "text": "gamma"}]
    (tmp_path / "p.jsonl").write_text(_jsonl(recs), encoding="utf-8")
    with gzip.open(tmp_path / "q.jsonl.gz", "wt", encoding="utf-8") as f:
        f.write(_jsonl(recs))
    (tmp_path / "r.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(_jsonl(recs).encode()))
    for name in ("p.jsonl", "q.jsonl.gz", "r.jsonl.zst"):
        path = tmp_path / name
        docs = _docs([path])
        assert [d.text for d in docs] == ["alpha", "beta", "gamma"]
        assert [d.id for d in docs] == ["doc-a", f"{path}:2", "7"]
        assert {d.source for d in docs} == {str(path)}
    body = _jsonl([{"content": "x"}, {"content": "y"}])
    (tmp_path / "c.ndjson").write_text(body + "\n\n", encoding="utf-8")  # blank lines are ignored
    assert [d.text for d in _docs([tmp_path / "c.ndjson"], text_field="content")] == ["x", "y"]


def test_json_array_file(tmp_path: Path) -> None:
    (tmp_path / "arr.json").write_text(json.dumps([{"text": "one"}, {"text": "two", "id": "z"}]))
    docs = _docs([tmp_path / "arr.json"])
    assert [(d.id, d.text) for d in docs] == [(f"{tmp_path / 'arr.json'}:1", "one"), ("z", "two")]


def test_text_gz_and_zst(tmp_path: Path) -> None:
    with gzip.open(tmp_path / "a.txt.gz", "wt", encoding="utf-8") as f:
        f.write("gzipped text ☃\n")
    (tmp_path / "b.txt.zst").write_bytes(zstandard.ZstdCompressor().compress(b"zstd text\n"))
    assert [d.text for d in _docs([tmp_path])] == ["gzipped text ☃\n", "zstd text\n"]


def test_parquet_streamed_with_ids_and_compressed(tmp_path: Path) -> None:
    n = 2500  # several record batches
    table = pa.table({"id": [f"r{i}" for i in range(n)], "text": [f"row {i}" for i in range(n)]})
    pq.write_table(table, tmp_path / "t.parquet", row_group_size=700)
    docs = _docs([tmp_path / "t.parquet"])
    assert len(docs) == n and docs[0].id == "r0" and docs[-1].text == f"row {n - 1}"
    raw = (tmp_path / "t.parquet").read_bytes()
    with gzip.open(tmp_path / "u.parquet.gz", "wb") as f:
        f.write(raw)
    assert [d.text for d in _docs([tmp_path / "u.parquet.gz"])] == [d.text for d in docs]
    pq.write_table(pa.table({"body": ["a", "b"]}), tmp_path / "v.parquet")
    docs = _docs([tmp_path / "v.parquet"], text_field="body")
    assert [(d.id, d.text) for d in docs] == [
        (f"{tmp_path / 'v.parquet'}:1", "a"),
        (f"{tmp_path / 'v.parquet'}:2", "b"),
    ]


def test_folders_recursive_sorted_hidden_skipped(tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "z.txt").write_text("z")
    (tmp_path / "a.txt").write_text("a")
    (tmp_path / "b" / "c").mkdir()
    (tmp_path / "b" / "c" / "y.txt").write_text("y")
    (tmp_path / ".hidden.txt").write_text("h")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "x.txt").write_text("x")
    files = list_files([tmp_path])
    assert files == [tmp_path / "a.txt", tmp_path / "b" / "c" / "y.txt", tmp_path / "b" / "z.txt"]
    assert list_files([tmp_path / "a.txt", tmp_path]) == files  # de-duplicated, order kept
    assert list_files([tmp_path / ".hidden.txt"]) == [tmp_path / ".hidden.txt"]  # named explicitly


def test_missing_path_and_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(LmkitError, match="nope.txt: no such file or folder"):
        list_files([tmp_path / "nope.txt"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(LmkitError, match="empty: folder holds no"):
        _docs([tmp_path / "empty"])


def test_empty_files_yield_nothing_and_are_counted(tmp_path: Path) -> None:
    (tmp_path / "e.txt").write_text("")
    (tmp_path / "w.txt").write_text("  \n\n ")
    (tmp_path / "e.jsonl").write_text("\n")
    (tmp_path / "ok.txt").write_text("ok")
    report = ReadReport()
    docs = _docs([tmp_path], report=report)
    assert [d.text for d in docs] == ["ok"]
    assert sorted(Path(p).name for p in report.empty_files) == ["e.jsonl", "e.txt", "w.txt"]
    assert report.files_read == 4 and report.documents == 1


# ---- bad inputs: strict mode names the file (and line); lenient mode skips and counts


def _bad_inputs(tmp_path: Path) -> dict[str, tuple[str, str]]:
    """name -> (file name written, expected message fragment)."""
    (tmp_path / "bin.txt").write_bytes(b"\x00\x01\x02binary\x00" * 50)
    (tmp_path / "latin1.txt").write_bytes("ok line\ncaf\xe9\n".encode("latin-1"))
    (tmp_path / "fake.txt.gz").write_text("not gzip at all")
    good = gzip.compress(("line\n" * 5000).encode())
    (tmp_path / "trunc.txt.gz").write_bytes(good[: len(good) // 2])
    (tmp_path / "fake.txt.zst").write_text("not zstd")
    (tmp_path / "badjson.jsonl").write_text('{"text": "fine"}\n{"text": broken\n')
    (tmp_path / "nofield.jsonl").write_text('{"text": "fine"}\n{"body": "x"}\n')
    (tmp_path / "notobj.jsonl").write_text('{"text": "fine"}\n[1, 2]\n')
    (tmp_path / "nonstr.jsonl").write_text('{"text": 5}\n')
    (tmp_path / "badutf.jsonl").write_bytes(b'{"text": "fine"}\n{"text": "caf\xe9"}\n')
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 this is not really parquet")
    (tmp_path / "png.txt").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
    return {
        "bin": ("bin.txt", "bin.txt: looks binary"),
        "latin1": ("latin1.txt", "latin1.txt: line 2: not valid UTF-8"),
        "fake_gz": ("fake.txt.gz", "fake.txt.gz: broken gzip data"),
        "trunc_gz": ("trunc.txt.gz", "trunc.txt.gz: line 1: broken gzip data"),
        "fake_zst": ("fake.txt.zst", "fake.txt.zst: broken zstd data"),
        "badjson": ("badjson.jsonl", "badjson.jsonl:2: not valid JSON"),
        "nofield": ("nofield.jsonl", "nofield.jsonl:2: no 'text' field"),
        "notobj": ("notobj.jsonl", "notobj.jsonl:2: not a JSON object"),
        "nonstr": ("nonstr.jsonl", "nonstr.jsonl:1: field 'text' is int"),
        "badutf": ("badutf.jsonl", "badutf.jsonl:2: not valid UTF-8"),
        "broken_parquet": ("broken.parquet", "broken.parquet: not a readable Parquet file"),
        "png": ("png.txt", "png.txt: looks binary (png data)"),
    }


def test_every_bad_input_is_a_one_line_error_naming_the_file(tmp_path: Path) -> None:
    for name, (fname, fragment) in _bad_inputs(tmp_path).items():
        with pytest.raises(LmkitError) as info:
            _docs([tmp_path / fname])
        msg = str(info.value)
        assert fragment in msg, (name, msg)
        assert "\n" not in msg and str(tmp_path / fname) in msg


def test_lenient_mode_skips_and_counts(tmp_path: Path) -> None:
    cases = _bad_inputs(tmp_path)
    (tmp_path / "zgood.txt").write_text("good text")
    report = ReadReport()
    docs = _docs([tmp_path], lenient=True, report=report)
    texts = [d.text for d in docs]
    assert "good text" in texts
    # the good lines of files with bad lines are kept
    assert texts.count("fine") == 4
    bad_line_files = {Path(f).name for f, _, _ in report.bad_lines}
    assert bad_line_files == {"badjson.jsonl", "nofield.jsonl", "notobj.jsonl", "nonstr.jsonl", "badutf.jsonl"}
    assert all(line in (1, 2) for _, line, _ in report.bad_lines)
    skipped = {Path(f).name for f, _ in report.skipped_files}
    assert skipped == {
        "bin.txt",
        "latin1.txt",
        "fake.txt.gz",
        "trunc.txt.gz",
        "fake.txt.zst",
        "broken.parquet",
        "png.txt",
    }
    assert report.skipped_file_count == 7 and report.bad_line_count == 5
    assert len(cases) == 12
    d = report.to_dict()
    json.dumps(d)  # serialisable
    assert d["documents"] == len(docs)
    assert "7 files skipped" in report.summary() and "5 bad lines" in report.summary()


def test_parquet_bad_column(tmp_path: Path) -> None:
    pq.write_table(pa.table({"n": [1, 2]}), tmp_path / "n.parquet")
    with pytest.raises(LmkitError, match=r"n.parquet: no 'text' column \(columns: n\)"):
        _docs([tmp_path / "n.parquet"])
    pq.write_table(pa.table({"text": [1, 2]}), tmp_path / "i.parquet")
    with pytest.raises(LmkitError, match="i.parquet: column 'text' is int64, not a string"):
        _docs([tmp_path / "i.parquet"])
    pq.write_table(pa.table({"text": ["a", None, "c"]}), tmp_path / "null.parquet")
    with pytest.raises(LmkitError, match="null.parquet: row 2: 'text' is null"):
        _docs([tmp_path / "null.parquet"])
    report = ReadReport()
    assert [d.text for d in _docs([tmp_path / "null.parquet"], lenient=True, report=report)] == ["a", "c"]
    assert report.bad_line_count == 1


def test_lenient_file_failing_midway_keeps_earlier_documents(tmp_path: Path) -> None:
    rng = random.Random(0)
    body = _jsonl([{"text": f"doc {i} {rng.getrandbits(256):x}"} for i in range(3000)]).encode()
    comp = gzip.compress(body)
    (tmp_path / "half.jsonl.gz").write_bytes(comp[: len(comp) * 3 // 4])
    report = ReadReport()
    docs = _docs([tmp_path / "half.jsonl.gz"], lenient=True, report=report)
    assert 0 < len(docs) < 3000
    assert report.skipped_file_count == 1
    # the reason names the line where the compressed data broke: the one after the last document
    assert report.skipped_files[0][1].startswith(f"line {len(docs) + 1}: broken gzip data")
    assert report.skipped_files[0][1].endswith(f"the {len(docs):,} documents before it kept")
    with pytest.raises(LmkitError, match=rf"half.jsonl.gz: line {len(docs) + 1}: broken gzip data"):
        _docs([tmp_path / "half.jsonl.gz"])


def test_truncated_zstd_is_an_error(tmp_path: Path) -> None:
    rng = random.Random(1)
    body = "".join(f"line {rng.getrandbits(128):x}\n" for _ in range(20000)).encode()
    comp = zstandard.ZstdCompressor().compress(body)
    (tmp_path / "cut.txt.zst").write_bytes(comp[: len(comp) // 2])
    with pytest.raises(LmkitError, match=r"cut.txt.zst: line \d+: broken zstd data"):
        _docs([tmp_path / "cut.txt.zst"])
    # several frames concatenated are one valid stream
    two = zstandard.ZstdCompressor().compress(b"one\n") + zstandard.ZstdCompressor().compress(b"two\n")
    (tmp_path / "two.txt.zst").write_bytes(two)
    assert _docs([tmp_path / "two.txt.zst"])[0].text == "one\ntwo\n"


def test_record_source_field_is_kept(tmp_path: Path) -> None:
    (tmp_path / "c.jsonl").write_text(_jsonl([{"id": "x", "text": "t", "source": "books/a.txt"}, {"text": "u"}]))
    docs = _docs([tmp_path / "c.jsonl"])
    assert [d.source for d in docs] == ["books/a.txt", str(tmp_path / "c.jsonl")]
    pq.write_table(pa.table({"text": ["a", "b"], "source": ["web", None]}), tmp_path / "s.parquet")
    assert [d.source for d in _docs([tmp_path / "s.parquet"])] == ["web", str(tmp_path / "s.parquet")]


def test_text_doc_chars_sets_the_cut_and_bytes_read_follows_the_input(tmp_path: Path) -> None:
    paras = [f"paragraph {i} " + "word " * 15 + "\n" for i in range(12)]
    text = "\n".join(paras)
    (tmp_path / "a.txt").write_text(text, encoding="utf-8")
    (tmp_path / "b.txt.gz").write_bytes(gzip.compress(text.encode()))
    report = ReadReport()
    seen = []
    for d in iter_documents([tmp_path], report=report, text_doc_chars=200):
        seen.append(report.bytes_read())
        assert d.text.startswith("paragraph")
    assert len(seen) > 4 and seen == sorted(seen)  # pieces of about 200 characters; progress never goes back
    size = sum(f.stat().st_size for f in tmp_path.iterdir())
    assert report.bytes_read() == size  # every file finished: its on-disk (compressed) size counted
    assert "".join(d.text for d in iter_documents([tmp_path / "a.txt"], text_doc_chars=200)) == text
    assert len(list(iter_documents([tmp_path / "a.txt"]))) == 1  # the default cut is far larger
