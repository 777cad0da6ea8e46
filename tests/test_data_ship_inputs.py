"""Bad input to import, curation, the tokenizer and the hub (issue 25, item 6): one line, never a
traceback, and no memory taken before the input is checked.

The regression table runs each command in-process through ``lmkit.cli.main`` on inputs the test
makes itself and asserts the exit status and the one stderr line: ``lmkit: error: ...`` naming the
file or flag (status 2), or, for what is repaired rather than refused, the note the command prints
(status 0). Tests below the table check what the line cannot show: that the refused model was never
built (peak memory and time stay small although the config asks for terabytes), that the repaired
documents hold U+FFFD and the capped run used one process.
"""

from __future__ import annotations

import gzip
import json
import resource
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from lmkit.cli import main
from lmkit.config import ModelConfig
from lmkit.errors import LmkitError
from lmkit.models import build_model
from lmkit.models.checkpoint import load_model, save_checkpoint
from lmkit.ship.export_hf import to_hf_state
from lmkit.tokenizer import MAX_VOCAB, Tokenizer, train_tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")

VOCAB = 400
TEXTS = ["the cat sat on the mat and the dog sat on the log. " * 4, "hello world, this is lmkit 123!"] * 5


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return train_tokenizer(TEXTS, vocab_size=VOCAB, min_frequency=1, show_progress=False)


def tiny_decoder(vocab: int) -> ModelConfig:
    return ModelConfig(family="decoder", vocab_size=vocab, d_model=32, n_layers=1, n_heads=4, max_seq_len=32)


# --------------------------------------------------------------------------- inputs the cases are made of


def hf_folder(path: Path, tok: Tokenizer, weights: str = "safetensors", **config: object) -> Path:
    """A LlamaForCausalLM folder of a tiny model (32 wide); ``config`` overrides its config.json."""
    cfg = tiny_decoder(tok.vocab_size)
    state = to_hf_state(build_model(cfg), cfg)
    path.mkdir(parents=True)
    if weights == "safetensors":
        save_file(state, str(path / "model.safetensors"), metadata={"format": "pt"})
    else:
        torch.save(state, path / "pytorch_model.bin")
    c = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": tok.vocab_size,
        "hidden_size": 32,
        "intermediate_size": cfg.ffn_width,
        "num_hidden_layers": 1,
        "num_attention_heads": 4,
        "num_key_value_heads": 4,
        "max_position_embeddings": 32,
        "rms_norm_eps": 1e-6,
        "tie_word_embeddings": cfg.tie_embeddings,
    }
    c.update(config)
    (path / "config.json").write_text(json.dumps(c), encoding="utf-8")
    return path


def lmkit_ckpt(path: Path, tok: Tokenizer, **model: object) -> Path:
    """A tiny lmkit checkpoint whose config.json's model section is then edited with ``model`` (and
    whose meta.json keeps no checksums, so --no-verify and older checkpoints are what is tested)."""
    cfg = tiny_decoder(tok.vocab_size)
    save_checkpoint(path, build_model(cfg), cfg, tokenizer=tok, meta={})
    c = json.loads((path / "config.json").read_text(encoding="utf-8"))
    c["model"].update(model)
    (path / "config.json").write_text(json.dumps(c), encoding="utf-8")
    (path / "meta.json").write_text("{}", encoding="utf-8")
    return path


def one_doc(path: Path) -> Path:
    path.write_text(json.dumps({"text": "A document that says one thing. " * 40}) + "\n", encoding="utf-8")
    return path


def surrogate_jsonl(path: Path) -> Path:
    """Two documents, the first spelling a lone surrogate in its text and its id (JSON allows it)."""
    good = "The river runs past the old mill, and the miller's children watch the boats go by. " * 12
    path.write_text(
        '{"id": "doc-\\udc80", "text": "Broken \\ud800 character. '
        + good
        + '"}\n'
        + json.dumps({"id": "doc-2", "text": good.replace("river", "road")})
        + "\n",
        encoding="utf-8",
    )
    return path


def a_file(path: Path, text: str = "x") -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def array_config(folder: Path) -> Path:
    (folder / "config.json").write_text("[1, 2]", encoding="utf-8")
    return folder


# --------------------------------------------------------------------------- the regression table

Case = Callable[[Path, Tokenizer], list[object]]

# (id, argv made in tmp, exit status, a fragment of the one stderr line: "lmkit: error: ..." at status 2)
CASES: list[tuple[str, Case, int, str]] = [
    (
        "import-hf config.json is a JSON array",
        lambda t, k: ["import-hf", array_config(hf_folder(t / "hf", k)), "--out", t / "ck", "--no-tokenizer"],
        2,
        "config.json: holds an array, not a transformers config",
    ),
    (
        "import-hf architectures not a list",
        lambda t, k: [
            "import-hf",
            hf_folder(t / "hf", k, architectures="LlamaForCausalLM"),
            "--out",
            t / "ck",
            "--no-tokenizer",
        ],
        2,
        "architectures must be a list of class names",
    ),
    (
        "import-hf a setting of the wrong type",
        lambda t, k: ["import-hf", hf_folder(t / "hf", k, rms_norm_eps="small"), "--out", t / "ck", "--no-tokenizer"],
        2,
        "rms_norm_eps must be a number, got 'small'",
    ),
    (
        "import-hf hidden size 10**9 beside 32-wide weights",
        lambda t, k: [
            "import-hf",
            hf_folder(t / "hf", k, hidden_size=10**9, num_attention_heads=1, num_key_value_heads=1),
            "--out",
            t / "ck",
            "--no-tokenizer",
        ],
        2,
        "model.safetensors: model.embed_tokens.weight has shape (400, 32), but",
    ),
    (
        "import-hf hidden size 8192 beside 32-wide weights",
        lambda t, k: [
            "import-hf",
            hf_folder(t / "hf", k, hidden_size=8192, num_attention_heads=64, num_key_value_heads=64),
            "--out",
            t / "ck",
            "--no-tokenizer",
        ],
        2,
        "config.json implies (400, 8192): the weights and the config do not belong together",
    ),
    (
        "import-hf pytorch_model.bin of other shapes",
        lambda t, k: [
            "import-hf",
            hf_folder(t / "hf", k, "bin", intermediate_size=4096),
            "--out",
            t / "ck",
            "--no-tokenizer",
        ],
        2,
        "pytorch_model.bin: model.layers.0.mlp.gate_proj.weight has shape (128, 32), but",
    ),
    (
        "generate --no-verify of a checkpoint claiming d_model 8192",
        lambda t, k: ["generate", lmkit_ckpt(t / "ck", k, d_model=8192, n_heads=64), "the cat", "--no-verify"],
        2,
        "config.json does not match model.safetensors: tok_emb.weight has shape (400, 32) in the weights, "
        "the config needs (400, 8192)",
    ),
    (
        "generate of a checkpoint claiming d_model 10**9",
        lambda t, k: ["generate", lmkit_ckpt(t / "ck", k, d_model=10**9, n_heads=1), "the cat"],
        2,
        "the model config.json describes is too large to exist",
    ),
    (
        "curate --workers 10000 on one document",
        lambda t, k: ["curate", one_doc(t / "one.jsonl"), "--out", t / "out", "--workers", "10000"],
        0,
        "lmkit: --workers 10,000 capped at 1 (",
    ),
    (
        "curate --workers -1",
        lambda t, k: ["curate", one_doc(t / "one.jsonl"), "--out", t / "out", "--workers", "-1"],
        2,
        "--workers must be 0 (one process per core) or more, got -1",
    ),
    (
        "curate minhash.num_perm 10**7",
        lambda t, k: [
            "curate",
            one_doc(t / "one.jsonl"),
            "--out",
            t / "out",
            "--workers",
            "1",
            "--config",
            a_file(t / "c.yaml", "minhash: {num_perm: 10000000, bands: 10}\n"),
        ],
        2,
        "c.yaml: curate config: minhash.num_perm (10,000,000) must be at most 1024",
    ),
    (
        "curate minhash.seed negative",
        lambda t, k: [
            "curate",
            one_doc(t / "one.jsonl"),
            "--out",
            t / "out",
            "--config",
            a_file(t / "c.yaml", "minhash: {seed: -1}\n"),
        ],
        2,
        "minhash.seed must be a non-negative integer, got -1",
    ),
    (
        "curate JSONL with lone surrogates",
        lambda t, k: ["curate", surrogate_jsonl(t / "s.jsonl"), "--out", t / "out", "--workers", "1"],
        0,
        "1 documents with lone surrogates replaced by U+FFFD",
    ),
    (
        "tokenizer train --vocab-size 10**9",
        lambda t, k: ["tokenizer", "train", one_doc(t / "one.jsonl"), "--vocab-size", "1000000000", "--out", t / "tok"],
        2,
        f"vocab size 1,000,000,000 is too large: lmkit trains 362 to {MAX_VOCAB:,} (2**20) tokens",
    ),
    (
        "hub push --hub naming a file",
        lambda t, k: ["hub", "push", lmkit_ckpt(t / "ck", k), "me/model", "--hub", a_file(t / "hub.txt")],
        2,
        "hub.txt: is a file, not a hub folder",
    ),
    (
        "hub push --hub below a file",
        lambda t, k: ["hub", "push", lmkit_ckpt(t / "ck", k), "me/model", "--hub", a_file(t / "hub.txt") / "hub"],
        2,
        "hub.txt/hub: cannot push there (",
    ),
    (
        "hub list --hub naming a file",
        lambda t, k: ["hub", "list", "--hub", a_file(t / "hub.txt")],
        2,
        "hub.txt: is a file, not a hub folder",
    ),
]


@pytest.mark.parametrize("make,status,fragment", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_gives_one_line(
    make: Case, status: int, fragment: str, tmp_path: Path, tok: Tokenizer, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [str(a) for a in make(tmp_path, tok)]
    capsys.readouterr()
    rc = main(argv)
    out, err = capsys.readouterr()
    assert rc == status, (rc, out, err)
    assert "Traceback" not in err
    if status == 2:
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("lmkit: error: "), err
        assert fragment in lines[0], lines[0]
        assert not (tmp_path / "out").exists() and not (tmp_path / "tok").exists()
    else:
        assert fragment in out + err, out + err


def test_hub_push_to_a_place_that_cannot_be_written(
    tmp_path: Path, tok: Tokenizer, capsys: pytest.CaptureFixture[str]
) -> None:
    """A hub under /proc (no folder can be made there, even by root) is one line naming the hub."""
    if not Path("/proc/self").is_dir():
        pytest.skip("needs Linux's /proc")
    hub = "/proc/lmkit-test-hub"
    rc = main(["hub", "push", str(lmkit_ckpt(tmp_path / "ck", tok)), "me/model", "--hub", hub])
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"lmkit: error: hub {hub}: cannot push there (")


# --------------------------------------------------------------------------- no memory before validation


def _peak_rss_mb() -> float:
    scale = 1 / 2**20 if sys.platform == "darwin" else 1 / 2**10  # bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


@pytest.mark.parametrize("hidden,heads", [(10**9, 1), (8192, 64)])
def test_import_refuses_before_building_the_model(tmp_path: Path, tok: Tokenizer, hidden: int, heads: int) -> None:
    """Without the header check, 10**9 asks for terabytes and 8192 builds a model of several GB
    (24 s): the error must come at once, with the peak memory where it was."""
    from lmkit.ship.import_hf import import_hf

    good = hf_folder(tmp_path / "good", tok)
    import_hf(good, tmp_path / "ok", no_tokenizer=True)  # the same folder, with its own config, imports
    bad = tmp_path / "bad"
    shutil.copytree(good, bad)
    c = json.loads((bad / "config.json").read_text(encoding="utf-8"))
    c.update(hidden_size=hidden, num_attention_heads=heads, num_key_value_heads=heads)
    (bad / "config.json").write_text(json.dumps(c), encoding="utf-8")
    before, t0 = _peak_rss_mb(), time.perf_counter()
    with pytest.raises(LmkitError, match=r"model\.safetensors: model\.embed_tokens\.weight has shape"):
        import_hf(bad, tmp_path / "ck", no_tokenizer=True)
    assert time.perf_counter() - t0 < 10
    assert _peak_rss_mb() - before < 200
    assert not (tmp_path / "ck").exists()


def test_checkpoint_load_checks_shapes_before_building(tmp_path: Path, tok: Tokenizer) -> None:
    """load_model (what generate, serve and evaluate use), verified or not, refuses a config.json that
    does not describe model.safetensors before it builds anything; a good checkpoint still loads."""
    good = lmkit_ckpt(tmp_path / "good", tok)
    assert load_model(good, verify=False)(torch.tensor([[1, 2, 3]])).shape == (1, 3, tok.vocab_size)
    bad = lmkit_ckpt(tmp_path / "bad", tok, d_model=8192, n_heads=64)
    before, t0 = _peak_rss_mb(), time.perf_counter()
    for verify in (False, True):
        with pytest.raises(LmkitError, match=r"config\.json does not match model\.safetensors: tok_emb\.weight"):
            load_model(bad, verify=verify)
    assert time.perf_counter() - t0 < 10
    assert _peak_rss_mb() - before < 200


# --------------------------------------------------------------------------- repaired, capped, bounded


def test_lone_surrogates_become_replacement_characters_and_are_counted(tmp_path: Path) -> None:
    from lmkit.data.curate import CurateConfig, curate
    from lmkit.data.document import ReadReport
    from lmkit.data.read import iter_documents

    src = surrogate_jsonl(tmp_path / "s.jsonl")
    report = ReadReport()
    docs = list(iter_documents([src], report=report))
    assert [d.id for d in docs] == ["doc-\ufffd", "doc-2"]
    assert docs[0].text.startswith("Broken \ufffd character.") and report.surrogate_docs == 1
    assert "1 documents with lone surrogates replaced by U+FFFD" in report.summary()
    rep = curate([src], tmp_path / "out", CurateConfig(order=["normalise"]), workers=1, progress=False)
    assert rep["read"]["surrogate_docs"] == 1 and rep["totals"]["docs_out"] == 2
    written = [
        json.loads(line)
        for f in sorted((tmp_path / "out").glob("part-*.jsonl.gz"))
        for line in gzip.open(f, "rb").read().decode("utf-8", errors="strict").splitlines()
    ]
    assert written[0]["id"] == "doc-\ufffd" and written[0]["text"].startswith("Broken \ufffd character.")
    assert "replaced by U+FFFD" in (tmp_path / "out" / "report.md").read_text(encoding="utf-8")
    # the same bytes as one JSON array of records
    arr = tmp_path / "a.json"
    arr.write_text("[" + ",".join(src.read_text(encoding="utf-8").splitlines()) + "]", encoding="utf-8")
    report = ReadReport()
    assert [d.id for d in iter_documents([arr], report=report)][0] == "doc-\ufffd" and report.surrogate_docs == 1


def test_workers_are_capped_by_cores_and_by_the_work(capsys: pytest.CaptureFixture[str]) -> None:
    from lmkit.data.curate import cap_workers, default_workers

    cores = default_workers()
    assert cap_workers(0) == cores and capsys.readouterr().err == ""  # the default is not a request
    assert cap_workers(10_000) == cores
    assert (
        capsys.readouterr().err.strip() == f"lmkit: --workers 10,000 capped at {cores} "
        f"(this machine has {cores} core{'s' if cores != 1 else ''})"
    )
    assert cap_workers(10_000, work=1) == 1 and "capped at 1 (" in capsys.readouterr().err
    if cores > 2:
        assert cap_workers(cores, work=2) == 2
        assert capsys.readouterr().err.strip().endswith("capped at 2 (the input is 2 chunks of work)")
    assert cap_workers(1, work=0) == 1 and capsys.readouterr().err == ""


def test_curate_with_many_workers_on_one_document_runs_in_process(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from lmkit.data.curate import curate

    rep = curate([one_doc(tmp_path / "one.jsonl")], tmp_path / "out", workers=10_000, progress=False)
    assert rep["engine"] == "in-process" and rep["totals"]["docs_in"] == 1
    assert "capped at 1" in capsys.readouterr().err


def test_settings_whose_memory_is_known_are_bounded(tmp_path: Path) -> None:
    """Checked in the one place every path goes through: MinHasher for curate's minhash stage,
    train_tokenizer for ``tokenizer train`` and ``adapt --vocab-size`` alike."""
    from lmkit.data.dedup import MAX_NUM_PERM, MinHasher
    from lmkit.lab.adapt.tokenizers import train_adapt_tokenizers

    t0 = time.perf_counter()
    with pytest.raises(LmkitError, match=r"minhash\.num_perm \(10,000,000\) must be at most 1024"):
        MinHasher(num_perm=10_000_000, bands=10)
    assert MinHasher(num_perm=MAX_NUM_PERM, bands=8).num_perm == MAX_NUM_PERM
    with pytest.raises(LmkitError, match="vocab size 1,000,000,000 is too large"):
        train_adapt_tokenizers({"mix": iter(TEXTS)}, 10**9, tmp_path / "toks", show_progress=False)
    with pytest.raises(LmkitError, match=f"vocab size {MAX_VOCAB + 1:,} is too large"):
        train_tokenizer(TEXTS, vocab_size=MAX_VOCAB + 1, show_progress=False)
    assert time.perf_counter() - t0 < 5
    assert train_tokenizer(TEXTS, vocab_size=MAX_VOCAB, min_frequency=1, show_progress=False).vocab_size < MAX_VOCAB
