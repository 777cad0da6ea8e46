"""Issue 10 item 3: one output-folder check (lmkit.files.check_out_dir / check_out_file) for every
command that writes a folder or a file. An output is never an input, inside one, or around one
(even with --overwrite, symlinks resolved); a non-empty folder is replaced only with --overwrite
and only when it is a previous lmkit output; each refusal is one line naming the folder and input."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest
import torch

from lmkit.cli import main
from lmkit.config import ModelConfig
from lmkit.errors import LmkitError
from lmkit.files import check_out_dir, check_out_file
from lmkit.models import build_model
from lmkit.models.checkpoint import save_checkpoint


def snapshot(path: Path) -> dict[str, str]:
    """Every file under ``path`` (or the file itself) with its sha256: equal snapshots = nothing lost."""
    if path.is_file():
        return {path.name: hashlib.sha256(path.read_bytes()).hexdigest()}
    return {p.relative_to(path).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


def ckpt(path: Path) -> Path:
    cfg = ModelConfig(family="decoder", vocab_size=300, d_model=32, n_layers=1, n_heads=4, max_seq_len=32)
    torch.manual_seed(0)
    return save_checkpoint(path, build_model(cfg), cfg, meta={"step": 7, "tokens": 700})


def refused(capsys: pytest.CaptureFixture[str], argv: list[str], *needles: str | Path) -> str:
    """Run the CLI, expect exit 2 with one ``lmkit: error:`` line holding every needle; return it."""
    capsys.readouterr()
    assert main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lmkit: error: ") and "\n" not in err, err
    assert "Traceback" not in err
    for n in needles:
        assert str(n) in err, (n, err)
    return err


def corpus(folder: Path, n: int = 40) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (folder / f"{i:03d}.txt").write_text(
            f"Document {i} talks about topic {i % 7} with the words river, house and tree number {i}. " * 3,
            encoding="utf-8")
    return folder


# --------------------------------------------------------------------------- the check itself


def test_check_refuses_every_overlap_with_an_input(tmp_path: Path) -> None:
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "a.txt").write_text("x")
    for out, word in [(src, "is the input"), (src / "new", "is inside the input"),
                      (tmp_path, "contains the input"), (src / "sub", "is inside the input")]:
        for overwrite in (False, True):
            with pytest.raises(LmkitError, match=word) as e:
                check_out_dir(out, overwrite, [src], ours=lambda p: True)
            assert str(out) in str(e.value) and str(src) in str(e.value)
    # an input file inside --out, and symlinks in either direction
    with pytest.raises(LmkitError, match="contains the input"):
        check_out_dir(src, True, [src / "sub" / "a.txt"], ours=lambda p: True)
    link = tmp_path / "link"
    link.symlink_to(src, target_is_directory=True)
    with pytest.raises(LmkitError, match="is the input"):
        check_out_dir(link, True, [src], ours=lambda p: True)
    with pytest.raises(LmkitError, match="is inside the input"):
        check_out_dir(tmp_path / "x", True, [link / ".."], ours=lambda p: True)
    assert (src / "sub" / "a.txt").read_text() == "x"


def test_check_rules_for_existing_folders(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(LmkitError, match="exists and is not a folder"):
        check_out_dir(f, True)
    out = tmp_path / "out"
    check_out_dir(out, False)  # new
    out.mkdir()
    check_out_dir(out, False)  # empty
    (out / "part-00000.jsonl.gz").write_bytes(b"old")
    with pytest.raises(LmkitError, match="already exists and is not empty.*--overwrite"):
        check_out_dir(out, False, ours=re.compile(r"part-\d{5}\.jsonl\.gz"))
    check_out_dir(out, True, ours=re.compile(r"part-\d{5}\.jsonl\.gz"))  # a previous output
    (out / "notes.txt").write_text("mine")
    with pytest.raises(LmkitError, match="did not write.*notes.txt"):
        check_out_dir(out, True, ours=re.compile(r"part-\d{5}\.jsonl\.gz"))
    with pytest.raises(LmkitError, match="not a previous lmkit checkpoint"):
        check_out_dir(out, True, ours=lambda p: False, kind="checkpoint")
    with pytest.raises(LmkitError, match="cannot tell"):
        check_out_dir(out, True)  # no way to recognise its own output: never replaced
    # the file variant
    with pytest.raises(LmkitError, match="is the input"):
        check_out_file(f, True, [f])
    with pytest.raises(LmkitError, match="is inside the input"):
        check_out_file(out / "t.json", True, [out])
    check_out_file(out / "t.png", True, [out], inside_inputs=True)
    with pytest.raises(LmkitError, match="already exists"):
        check_out_file(f, False)
    with pytest.raises(LmkitError, match="not a previous lmkit picture"):
        check_out_file(f, True, ours=lambda p: p.suffix == ".png", kind="picture")


# --------------------------------------------------------------------------- export / import-hf


@pytest.fixture
def run(tmp_path: Path) -> Path:
    """A run folder holding one checkpoint."""
    ckpt(tmp_path / "runs" / "x" / "ckpt-7")
    return tmp_path / "runs" / "x"


@pytest.mark.parametrize("case", ["out=run", "out=ckpt", "out inside ckpt", "run inside out"])
def test_export_never_touches_its_input(run: Path, case: str, capsys: pytest.CaptureFixture[str]) -> None:
    ck = run / "ckpt-7"
    src, out, word = {"out=run": (run, run, "is the input"), "out=ckpt": (ck, ck, "is the input"),
                      "out inside ckpt": (ck, ck / "hf", "is inside the input"),
                      "run inside out": (run, run.parent, "contains the input")}[case]
    before = snapshot(run.parent)
    refused(capsys, ["export", src, "--out", out, "--overwrite", "--no-verify"], out, src, word)
    assert snapshot(run.parent) == before


def test_export_overwrite_replaces_only_a_previous_export(run: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "config.json").write_text('{"mine": 1}')
    refused(capsys, ["export", run, "--out", mine, "--overwrite", "--no-verify"], mine, "not a previous lmkit export")
    assert (mine / "config.json").read_text() == '{"mine": 1}'
    hf = tmp_path / "hf"
    assert main(["export", str(run), "--out", str(hf), "--no-verify"]) == 0
    refused(capsys, ["export", run, "--out", hf, "--no-verify"], hf, "--overwrite")
    assert main(["export", str(run), "--out", str(hf), "--overwrite", "--no-verify"]) == 0
    (hf / "notes.md").write_text("mine")  # a file the user added: the export is no longer only lmkit's
    refused(capsys, ["export", run, "--out", hf, "--overwrite", "--no-verify"], hf, "notes.md")
    assert (hf / "notes.md").read_text() == "mine"


@pytest.fixture
def hf(run: Path, tmp_path: Path) -> Path:
    from lmkit.ship.export_hf import export_hf

    export_hf(run, tmp_path / "hf", verify=False)
    return tmp_path / "hf"


@pytest.mark.parametrize("case", ["out=hf", "out inside hf", "hf inside out"])
def test_import_hf_never_touches_its_input(hf: Path, case: str, capsys: pytest.CaptureFixture[str]) -> None:
    out, word = {"out=hf": (hf, "is the input"), "out inside hf": (hf / "back", "is inside the input"),
                 "hf inside out": (hf.parent, "contains the input")}[case]
    before = snapshot(hf)
    refused(capsys, ["import-hf", hf, "--out", out, "--overwrite", "--no-tokenizer"], out, hf, word)
    assert snapshot(hf) == before


def test_import_hf_overwrite_replaces_only_a_checkpoint(hf: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    refused(capsys, ["import-hf", hf, "--out", mine, "--overwrite", "--no-tokenizer"], mine,
            "not a previous lmkit checkpoint")
    assert (mine / "notes.txt").read_text() == "keep"
    back = tmp_path / "back"
    assert main(["import-hf", str(hf), "--out", str(back), "--no-tokenizer"]) == 0
    refused(capsys, ["import-hf", hf, "--out", back, "--no-tokenizer"], back, "--overwrite")
    assert main(["import-hf", str(hf), "--out", str(back), "--overwrite", "--no-tokenizer"]) == 0
    assert (back / "model.safetensors").is_file()


# --------------------------------------------------------------------------- quantize / finetune-head


@pytest.mark.parametrize("case", ["out=ckpt", "out=run", "out inside ckpt", "run inside out"])
def test_quantize_never_touches_its_input(run: Path, case: str, capsys: pytest.CaptureFixture[str]) -> None:
    ck = run / "ckpt-7"
    src, out, word = {"out=ckpt": (ck, ck, "is the input"), "out=run": (run, run, "is the input"),
                      "out inside ckpt": (ck, ck / "q", "is inside the input"),
                      "run inside out": (run, run.parent, "contains the input")}[case]
    before = snapshot(run.parent)
    refused(capsys, ["quantize", src, "--to", "bf16", "--out", out, "--overwrite"], out, src, word)
    assert snapshot(run.parent) == before


def test_finetune_head_out_never_an_input(run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "labels.jsonl"
    data.write_text("".join(json.dumps({"text": f"t {i}", "label": "a" if i % 2 else "b"}) + "\n"
                            for i in range(8)))
    before = snapshot(run)
    refused(capsys, ["finetune-head", run, "--data", data, "--task", "sequence-classification",
                     "--out", run / "ckpt-7", "--overwrite"], run / "ckpt-7", "is the input")
    assert snapshot(run) == before


# --------------------------------------------------------------------------- curate / mix


def test_curate_never_touches_its_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw = corpus(tmp_path / "raw")
    out = tmp_path / "clean"
    assert main(["curate", str(raw), "--out", str(out), "--workers", "1"]) == 0
    shard = out / "part-00000.jsonl.gz"
    before = snapshot(tmp_path)
    # re-curating a previous output into its own folder would delete the shard being read
    refused(capsys, ["curate", shard, "--out", out, "--overwrite", "--workers", "1"], out, shard,
            "contains the input")
    refused(capsys, ["curate", raw, "--out", raw, "--overwrite", "--workers", "1"], raw, "is the input")
    refused(capsys, ["curate", raw, "--out", raw / "c", "--overwrite", "--workers", "1"], raw / "c",
            "is inside the input")
    assert snapshot(tmp_path) == before
    # a previous output is replaced; a folder with other files is not, even with --overwrite
    assert main(["curate", str(raw), "--out", str(out), "--overwrite", "--workers", "1"]) == 0
    (out / "notes.txt").write_text("mine")
    refused(capsys, ["curate", raw, "--out", out, "--overwrite", "--workers", "1"], out, "notes.txt")
    assert (out / "notes.txt").read_text() == "mine"


def test_mix_never_touches_its_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw = corpus(tmp_path / "raw")
    out = tmp_path / "clean"
    assert main(["curate", str(raw), "--out", str(out), "--workers", "1"]) == 0
    shard = out / "part-00000.jsonl.gz"
    before = snapshot(tmp_path)
    refused(capsys, ["mix", f"{shard}=1", "--out", out, "--overwrite"], out, shard, "contains the input")
    refused(capsys, ["mix", f"{out}=1", "--out", out, "--overwrite"], out, "is the input")
    refused(capsys, ["mix", f"{out}=1", "--out", out / "m", "--overwrite"], out / "m", "is inside the input")
    assert snapshot(tmp_path) == before
    m = tmp_path / "mix"
    assert main(["mix", f"{raw}=1", "--out", str(m)]) == 0
    assert main(["mix", f"{raw}=1", "--out", str(m), "--overwrite"]) == 0
    (m / "keep.txt").write_text("mine")
    refused(capsys, ["mix", f"{raw}=1", "--out", m, "--overwrite"], m, "keep.txt")
    assert (m / "keep.txt").read_text() == "mine"


# --------------------------------------------------------------------------- tokenizer train


def test_tokenizer_train_never_overwrites_its_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "corpus.json"  # JSON lines are training data too
    data.write_text("".join(json.dumps({"text": f"words about river {i} and house {i % 5}"}) + "\n"
                            for i in range(200)))
    before = data.read_bytes()
    refused(capsys, ["tokenizer", "train", data, "--vocab-size", "400", "--out", data, "--overwrite"],
            data, "is the input")
    folder = corpus(tmp_path / "raw")
    refused(capsys, ["tokenizer", "train", folder, "--vocab-size", "400", "--out", folder, "--overwrite"],
            folder / "tokenizer.json", "is inside the input")
    tok_in = tmp_path / "tok" / "tokenizer.json"  # a JSON-lines file that happens to sit where the tokenizer goes
    tok_in.parent.mkdir()
    tok_in.write_bytes(before)
    refused(capsys, ["tokenizer", "train", tok_in, "--vocab-size", "400", "--out", tok_in.parent, "--overwrite"],
            tok_in, "is the input")
    assert data.read_bytes() == before and tok_in.read_bytes() == before
    assert not (folder / "tokenizer.json").exists()
    # --overwrite replaces a tokenizer, not some other JSON file
    other = tmp_path / "other.json"
    other.write_text('{"mine": true}')
    refused(capsys, ["tokenizer", "train", folder, "--vocab-size", "400", "--out", other, "--overwrite"],
            other, "not a previous lmkit tokenizer")
    assert other.read_text() == '{"mine": true}'
    out = tmp_path / "t"
    assert main(["tokenizer", "train", str(folder), "--vocab-size", "400", "--out", str(out)]) == 0
    assert main(["tokenizer", "train", str(folder), "--vocab-size", "380", "--out", str(out), "--overwrite"]) == 0


# --------------------------------------------------------------------------- hub pull


def test_hub_pull_never_touches_the_hub(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from lmkit.ship.hub import Hub

    hub_dir = tmp_path / "hub"
    Hub(str(hub_dir)).push(ckpt(tmp_path / "ck"), "tiny")
    before = snapshot(hub_dir)
    for out, word in [(hub_dir, "is the input"), (hub_dir / "pulled", "is inside the input"),
                      (tmp_path, "contains the input")]:
        refused(capsys, ["hub", "pull", "tiny", "--hub", hub_dir, "--out", out, "--overwrite"], out, hub_dir, word)
        assert snapshot(hub_dir) == before
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    refused(capsys, ["hub", "pull", "tiny", "--hub", hub_dir, "--out", mine, "--overwrite"], mine,
            "not a previous lmkit")
    assert (mine / "notes.txt").read_text() == "keep"
    got = tmp_path / "got"
    assert main(["hub", "pull", "tiny", "--hub", str(hub_dir), "--out", str(got)]) == 0
    assert main(["hub", "pull", "tiny", "--hub", str(hub_dir), "--out", str(got), "--overwrite"]) == 0


# --------------------------------------------------------------------------- card / viz (single files)


def test_card_and_viz_never_replace_a_checkpoint_file(run: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    ck = run / "ckpt-7"
    before = snapshot(ck)
    refused(capsys, ["card", ck, "--out", ck / "config.json", "--overwrite"], ck / "config.json", "not a previous")
    section = tmp_path / "ethics.md"
    section.write_text("Be kind.\n")
    refused(capsys, ["card", ck, "--add-section", section, "--out", section, "--overwrite"], section, "is the input")
    assert section.read_text() == "Be kind.\n"
    refused(capsys, ["viz", "attention", ck, "hello", "--out", ck / "model.safetensors", "--overwrite"],
            ck / "model.safetensors", "not a previous lmkit picture")
    refused(capsys, ["viz", "embeddings", ck, "--words", "a", "b", "--out", ck / "meta.json", "--overwrite"],
            ck / "meta.json", "not a previous lmkit picture")
    assert snapshot(ck) == before
    assert main(["card", str(ck)]) == 0
    assert main(["card", str(ck), "--overwrite"]) == 0  # a card replaces a card


def test_demo_out_never_inside_its_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw = corpus(tmp_path / "raw")
    before = snapshot(raw)
    refused(capsys, ["demo", "--data", raw, "--out", raw / "demo", "--quick"], raw / "demo", "is inside the input")
    assert snapshot(raw) == before and not (raw / "demo").exists()
