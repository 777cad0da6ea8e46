"""Fuzzing what users hand lmkit: the readers (lmkit.data.read) and the config loader (lmkit.config).

Whatever the bytes, JSON or YAML, the outcome is a result or an LmkitError (printed by the
command line as one line naming the file), never another exception: a traceback is a bug.
Bounded (few examples, no deadline) so the module runs in seconds.
"""

from __future__ import annotations

import gzip
import io
import json
import math
import tempfile
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
import zstandard
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from lmkit.config import DataConfig, ModelConfig, RunConfig, TrainConfig, load_run_config
from lmkit.data.read import iter_documents
from lmkit.errors import LmkitError

FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)

READER_NAMES = [
    "a.txt",
    "a.md",
    "a.jsonl",
    "a.json",
    "a.ndjson",
    "a.parquet",
    "a.txt.gz",
    "a.jsonl.gz",
    "a.json.gz",
    "a.txt.zst",
    "a.jsonl.zst",
    "a.parquet.gz",
    "a.parquet.zst",
]

# JSON values, nested a little: records, arrays of records, junk.
json_leaf = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20)
)
json_value = st.recursive(
    json_leaf,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.sampled_from(["text", "id", "source", "x", ""]) | st.text(max_size=5), inner, max_size=4),
    ),
    max_leaves=12,
)
records = st.lists(
    st.one_of(
        st.fixed_dictionaries({"text": st.text(max_size=40)}, optional={"id": json_leaf, "source": json_leaf}),
        json_value,
    ),
    max_size=6,
)


def _read(path: Path, lenient: bool) -> None:
    """The property: reading ``path`` gives documents, or an LmkitError naming the file."""
    try:
        docs = list(iter_documents([path], lenient=lenient))
    except LmkitError as e:
        assert str(path) in str(e), str(e)
        assert "\n" not in str(e)
        return
    for d in docs:
        assert isinstance(d.text, str) and isinstance(d.id, str) and isinstance(d.source, str)


def _compress(data: bytes, name: str) -> bytes:
    if name.endswith(".gz"):
        return gzip.compress(data)
    if name.endswith(".zst"):
        return zstandard.ZstdCompressor().compress(data)
    return data


def _parquet_bytes(texts: list[Any]) -> bytes:
    buf = io.BytesIO()
    pq.write_table(pa.table({"text": pa.array(texts, type=pa.string())}), buf)
    return buf.getvalue()


def _write_and_read(name: str, data: bytes, lenient: bool) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / name
        path.write_bytes(data)
        _read(path, lenient)


@FUZZ
@given(name=st.sampled_from(READER_NAMES), data=st.binary(max_size=600), lenient=st.booleans())
def test_random_bytes_read_or_lmkit_error(name: str, data: bytes, lenient: bool) -> None:
    _write_and_read(name, data, lenient)


@FUZZ
@given(
    name=st.sampled_from([n for n in READER_NAMES if n.endswith((".gz", ".zst"))]),
    payload=st.one_of(st.binary(max_size=400), st.text(max_size=400).map(str.encode)),
    cut=st.floats(0, 1),
    flip=st.one_of(st.none(), st.integers(0, 10_000)),
    lenient=st.booleans(),
)
def test_truncated_or_damaged_compressed_streams(
    name: str, payload: bytes, cut: float, flip: int | None, lenient: bool
) -> None:
    if ".parquet" in name:
        payload = _parquet_bytes([payload.decode("utf-8", "replace")])
    data = bytearray(_compress(payload, name))
    data = data[: int(len(data) * cut)] if cut < 1 else data
    if flip is not None and data:
        data[flip % len(data)] ^= 0xFF
    _write_and_read(name, bytes(data), lenient)


@FUZZ
@given(
    name=st.sampled_from(["a.jsonl", "a.json", "a.jsonl.gz", "a.json.zst"]),
    recs=records,
    as_array=st.booleans(),
    lenient=st.booleans(),
    junk=st.one_of(st.none(), st.text(max_size=20)),
)
@example(name="a.jsonl", recs=[{"\n": None}], as_array=False, lenient=False, junk=None)  # found: a 2-line message
def test_random_json_read_or_lmkit_error(
    name: str, recs: list[Any], as_array: bool, lenient: bool, junk: str | None
) -> None:
    if as_array:
        text = json.dumps(recs)
    else:
        text = "\n".join(json.dumps(r) for r in recs)
    if junk is not None:
        text += "\n" + junk
    _write_and_read(name, _compress(text.encode("utf-8"), name), lenient)


@FUZZ
@given(
    texts=st.lists(st.one_of(st.none(), st.text(max_size=30)), max_size=5),
    cut=st.floats(0, 1),
    compressed=st.booleans(),
    lenient=st.booleans(),
)
def test_parquet_read_or_lmkit_error(texts: list[str | None], cut: float, compressed: bool, lenient: bool) -> None:
    data = _parquet_bytes(texts)
    data = data[: int(len(data) * cut)] if cut < 1 else data
    name = "a.parquet.gz" if compressed else "a.parquet"
    _write_and_read(name, _compress(data, name), lenient)


# --------------------------------------------------------------------------- the config loader

SECTIONS = {"model": ModelConfig, "train": TrainConfig, "data": DataConfig}
FIELDS = {s: list(cls.__dataclass_fields__) for s, cls in SECTIONS.items()}
cfg_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 300),
    st.integers(min_value=10**18, max_value=10**400),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["auto", "cpu", "cuda:1", "tpu", "none", "1e400", "rotary", "decoder", "nan", "", "fp16"]),
    st.text(max_size=8),
)
cfg_value = st.recursive(
    cfg_leaf,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=4), inner, max_size=3)),
    max_leaves=6,
)


@st.composite
def run_configs(draw: Any) -> Any:
    """A YAML document that is mostly a plausible run config: known sections and keys, wild values."""
    doc: dict[Any, Any] = {}
    for section, names in FIELDS.items():
        if draw(st.booleans()):
            keys = draw(st.lists(st.sampled_from(names) | st.text(max_size=6), max_size=4))
            doc[section] = {k: draw(cfg_value) for k in keys} if draw(st.integers(0, 9)) else draw(cfg_value)
    if draw(st.booleans()):
        doc[draw(st.sampled_from(["out", "extra", "model"]))] = draw(cfg_value)
    return doc if draw(st.integers(0, 9)) else draw(cfg_value)


def _load(path: Path | None, overrides: dict[str, Any] | None = None) -> None:
    try:
        cfg = load_run_config(path, overrides)
    except LmkitError as e:
        assert "\n" not in str(e)
        if path is not None:
            assert str(path) in str(e), str(e)
        return
    assert isinstance(cfg, RunConfig)
    for x in (cfg.train.lr, cfg.model.rope_theta, cfg.data.val_fraction):
        assert math.isfinite(x)


@FUZZ
@given(data=st.binary(max_size=300))
def test_config_random_bytes(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "run.yaml"
        path.write_bytes(data)
        _load(path)


@FUZZ
@given(doc=run_configs())
def test_config_random_yaml(doc: Any) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "run.yaml"
        path.write_text(yaml.safe_dump(doc), encoding="utf-8")
        _load(path)


@FUZZ
@given(text=st.text(max_size=200))
def test_config_random_yaml_text(text: str) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "run.yaml"
        path.write_text(text, encoding="utf-8")
        _load(path)


@FUZZ
@given(
    overrides=st.dictionaries(
        st.builds(
            lambda s, k: f"{s}.{k}",
            st.sampled_from(list(FIELDS) + ["out", "x"]),
            st.sampled_from([k for names in FIELDS.values() for k in names]) | st.text(max_size=5),
        ),
        st.text(max_size=10) | st.sampled_from(["0", "-1", ".nan", ".inf", "1e400", "[1, 2]", "{a: 1}", "null"]),
        max_size=4,
    )
)
def test_config_random_overrides(overrides: dict[str, str]) -> None:
    _load(None, overrides)


# Inputs the fuzzer found (or that are its kind, too rare for it to draw): each ended in a
# traceback before; each must stay an LmkitError naming the file.
CONFIG_FOUND = {
    "nan": "train: {lr: .nan}",
    "inf_int": "model: {d_model: .inf}",
    "inf_float_for_int": "model: {n_heads: 1e400}",
    "nan_limit": "train: {max_time: .nan}",
    "huge_int": f"model: {{vocab_size: {10**400}}}",
    "huge_hex": "model: {d_model: 0x" + "f" * 5000 + "}",
    "too_many_digits": "model: {d_model: " + "1" * 5000 + "}",
    "bad_date": "out: 2001-02-30",
    "bad_timestamp": "out: 2001-13-45 10:00:00",
    "deep": "model: " + "[" * 5000,
    "deep_closed": "model: " + "[" * 900 + "]" * 900,
}


@pytest.mark.parametrize("case", sorted(CONFIG_FOUND))
def test_config_found_cases_are_lmkit_errors(tmp_path: Path, case: str) -> None:
    path = tmp_path / "run.yaml"
    path.write_text(CONFIG_FOUND[case], encoding="utf-8")
    with pytest.raises(LmkitError, match=str(path)) as e:
        load_run_config(path)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("value", ["2001-02-30", "[" * 5000, "0x" + "f" * 5000, ".nan"])
def test_config_found_override_values_are_lmkit_errors(value: str) -> None:
    with pytest.raises(LmkitError, match="model.d_model"):
        load_run_config(None, {"model.d_model": value})


READER_FOUND = {
    "deep.json": "[" * 100_000,
    "deep.jsonl": "[" * 100_000 + "\n",
    "deep_object.jsonl": '{"a":' * 100_000 + "\n",
    "digits.json": "[" + "1" * 5000 + "]",
    "digits.jsonl": '{"text": "a", "id": ' + "1" * 5000 + "}\n",
    "newline_key.jsonl": json.dumps({"\n": 1}) + "\n",
}


@pytest.mark.parametrize("name", sorted(READER_FOUND))
@pytest.mark.parametrize("lenient", [False, True])
def test_reader_found_cases(tmp_path: Path, name: str, lenient: bool) -> None:
    path = tmp_path / name
    path.write_text(READER_FOUND[name], encoding="utf-8")
    if lenient:  # skipped and counted, not raised
        assert list(iter_documents([path], lenient=True)) == []
        return
    with pytest.raises(LmkitError, match=str(path)) as e:
        list(iter_documents([path]))
    assert "\n" not in str(e.value)
