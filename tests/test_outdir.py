"""Issue 10 item 3: one output-folder check (lmkit.files.check_out_dir / check_out_file) for every
command that writes a folder or a file. An output is never an input, inside one, or around one
(even with --overwrite, symlinks resolved); a non-empty folder is replaced only with --overwrite
and only when it is a previous lmkit output; each refusal is one line naming the folder and input.

Issue 25 item 5: --overwrite replaces only what the command itself wrote. For every command that
writes a folder: make an output, add mine.txt and mydir/ to it, rerun with --overwrite: refused in
one line naming the folder and those entries, everything left as it was; the untouched output is
still replaced. A card is replaced only when lmkit wrote it and nobody has edited it since."""

from __future__ import annotations

import hashlib
import json
import re
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path

import pytest
import torch

from lmkit.cli import main
from lmkit.config import ModelConfig
from lmkit.errors import LmkitError
from lmkit.files import Manifest, check_out_dir, check_out_file
from lmkit.models import build_model
from lmkit.models.checkpoint import save_checkpoint


def snapshot(path: Path) -> dict[str, str]:
    """Every file under ``path`` (or the file itself) with its sha256: equal snapshots = nothing lost."""
    if path.is_file():
        return {path.name: hashlib.sha256(path.read_bytes()).hexdigest()}
    return {
        p.relative_to(path).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(path.rglob("*"))
        if p.is_file()
    }


def ckpt(path: Path) -> Path:
    cfg = ModelConfig(family="decoder", vocab_size=300, d_model=32, n_layers=1, n_heads=4, max_seq_len=32)
    torch.manual_seed(0)
    return save_checkpoint(path, build_model(cfg), cfg, meta={"step": 7, "tokens": 700})


def refused(capsys: pytest.CaptureFixture[str], argv: Sequence[str | Path], *needles: str | Path) -> str:
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
            encoding="utf-8",
        )
    return folder


# --------------------------------------------------------------------------- the check itself


def test_check_refuses_every_overlap_with_an_input(tmp_path: Path) -> None:
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "a.txt").write_text("x")
    for out, word in [
        (src, "is the input"),
        (src / "new", "is inside the input"),
        (tmp_path, "contains the input"),
        (src / "sub", "is inside the input"),
    ]:
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
    with pytest.raises(LmkitError, match="'notes.txt', which lmkit did not write"):
        check_out_dir(out, True, ours=re.compile(r"part-\d{5}\.jsonl\.gz"))
    with pytest.raises(LmkitError, match="not a previous lmkit checkpoint"):
        check_out_dir(out, True, ours=Manifest(lambda p: None), kind="checkpoint")
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
    src, out, word = {
        "out=run": (run, run, "is the input"),
        "out=ckpt": (ck, ck, "is the input"),
        "out inside ckpt": (ck, ck / "hf", "is inside the input"),
        "run inside out": (run, run.parent, "contains the input"),
    }[case]
    before = snapshot(run.parent)
    refused(capsys, ["export", src, "--out", out, "--overwrite", "--no-verify"], out, src, word)
    assert snapshot(run.parent) == before


def test_export_overwrite_replaces_only_a_previous_export(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
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
    out, word = {
        "out=hf": (hf, "is the input"),
        "out inside hf": (hf / "back", "is inside the input"),
        "hf inside out": (hf.parent, "contains the input"),
    }[case]
    before = snapshot(hf)
    refused(capsys, ["import-hf", hf, "--out", out, "--overwrite", "--no-tokenizer"], out, hf, word)
    assert snapshot(hf) == before


def test_import_hf_overwrite_replaces_only_a_checkpoint(
    hf: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    refused(
        capsys,
        ["import-hf", hf, "--out", mine, "--overwrite", "--no-tokenizer"],
        mine,
        "not a previous lmkit checkpoint",
    )
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
    src, out, word = {
        "out=ckpt": (ck, ck, "is the input"),
        "out=run": (run, run, "is the input"),
        "out inside ckpt": (ck, ck / "q", "is inside the input"),
        "run inside out": (run, run.parent, "contains the input"),
    }[case]
    before = snapshot(run.parent)
    refused(capsys, ["quantize", src, "--to", "bf16", "--out", out, "--overwrite"], out, src, word)
    assert snapshot(run.parent) == before


def test_finetune_head_out_never_an_input(run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "labels.jsonl"
    data.write_text("".join(json.dumps({"text": f"t {i}", "label": "a" if i % 2 else "b"}) + "\n" for i in range(8)))
    before = snapshot(run)
    refused(
        capsys,
        [
            "finetune-head",
            run,
            "--data",
            data,
            "--task",
            "sequence-classification",
            "--out",
            run / "ckpt-7",
            "--overwrite",
        ],
        run / "ckpt-7",
        "is the input",
    )
    assert snapshot(run) == before


# --------------------------------------------------------------------------- curate / mix


def test_curate_never_touches_its_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw = corpus(tmp_path / "raw")
    out = tmp_path / "clean"
    assert main(["curate", str(raw), "--out", str(out), "--workers", "1"]) == 0
    shard = out / "part-00000.jsonl.gz"
    before = snapshot(tmp_path)
    # re-curating a previous output into its own folder would delete the shard being read
    refused(capsys, ["curate", shard, "--out", out, "--overwrite", "--workers", "1"], out, shard, "contains the input")
    refused(capsys, ["curate", raw, "--out", raw, "--overwrite", "--workers", "1"], raw, "is the input")
    refused(
        capsys, ["curate", raw, "--out", raw / "c", "--overwrite", "--workers", "1"], raw / "c", "is inside the input"
    )
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
    data.write_text(
        "".join(json.dumps({"text": f"words about river {i} and house {i % 5}"}) + "\n" for i in range(200))
    )
    before = data.read_bytes()
    refused(
        capsys, ["tokenizer", "train", data, "--vocab-size", "400", "--out", data, "--overwrite"], data, "is the input"
    )
    folder = corpus(tmp_path / "raw")
    refused(
        capsys,
        ["tokenizer", "train", folder, "--vocab-size", "400", "--out", folder, "--overwrite"],
        folder / "tokenizer.json",
        "is inside the input",
    )
    tok_in = tmp_path / "tok" / "tokenizer.json"  # a JSON-lines file that happens to sit where the tokenizer goes
    tok_in.parent.mkdir()
    tok_in.write_bytes(before)
    refused(
        capsys,
        ["tokenizer", "train", tok_in, "--vocab-size", "400", "--out", tok_in.parent, "--overwrite"],
        tok_in,
        "is the input",
    )
    assert data.read_bytes() == before and tok_in.read_bytes() == before
    assert not (folder / "tokenizer.json").exists()
    # --overwrite replaces a tokenizer, not some other JSON file
    other = tmp_path / "other.json"
    other.write_text('{"mine": true}')
    refused(
        capsys,
        ["tokenizer", "train", folder, "--vocab-size", "400", "--out", other, "--overwrite"],
        other,
        "not a previous lmkit tokenizer",
    )
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
    for out, word in [
        (hub_dir, "is the input"),
        (hub_dir / "pulled", "is inside the input"),
        (tmp_path, "contains the input"),
    ]:
        refused(capsys, ["hub", "pull", "tiny", "--hub", hub_dir, "--out", out, "--overwrite"], out, hub_dir, word)
        assert snapshot(hub_dir) == before
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    refused(
        capsys, ["hub", "pull", "tiny", "--hub", hub_dir, "--out", mine, "--overwrite"], mine, "not a previous lmkit"
    )
    assert (mine / "notes.txt").read_text() == "keep"
    got = tmp_path / "got"
    assert main(["hub", "pull", "tiny", "--hub", str(hub_dir), "--out", str(got)]) == 0
    assert main(["hub", "pull", "tiny", "--hub", str(hub_dir), "--out", str(got), "--overwrite"]) == 0


# --------------------------------------------------------------------------- card / viz (single files)


def test_card_and_viz_never_replace_a_checkpoint_file(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ck = run / "ckpt-7"
    before = snapshot(ck)
    refused(capsys, ["card", ck, "--out", ck / "config.json", "--overwrite"], ck / "config.json", "not a previous")
    section = tmp_path / "ethics.md"
    section.write_text("Be kind.\n")
    refused(capsys, ["card", ck, "--add-section", section, "--out", section, "--overwrite"], section, "is the input")
    assert section.read_text() == "Be kind.\n"
    refused(
        capsys,
        ["viz", "attention", ck, "hello", "--out", ck / "model.safetensors", "--overwrite"],
        ck / "model.safetensors",
        "not a previous lmkit picture",
    )
    refused(
        capsys,
        ["viz", "embeddings", ck, "--words", "a", "b", "--out", ck / "meta.json", "--overwrite"],
        ck / "meta.json",
        "not a previous lmkit picture",
    )
    refused(capsys, ["viz", "attention", ck, "hello", "--out", tmp_path / "maps.svg"], "maps.svg", "ending in .png")
    assert snapshot(ck) == before and not (tmp_path / "maps.svg").exists()
    assert main(["card", str(ck)]) == 0
    assert main(["card", str(ck), "--overwrite"]) == 0  # a card replaces a card


def test_demo_out_never_inside_its_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw = corpus(tmp_path / "raw")
    before = snapshot(raw)
    refused(capsys, ["demo", "--data", raw, "--out", raw / "demo", "--quick"], raw / "demo", "is inside the input")
    assert snapshot(raw) == before and not (raw / "demo").exists()


# --------------------------------------------------------------------------- issue 25 item 5: what the user gave stays
# --overwrite replaces only what the command itself wrote: every entry of the folder, at every depth,
# must be the command's own (by its pattern of paths or its own record of the files it wrote).


def test_check_judges_every_entry_at_every_depth(tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / "train").mkdir(parents=True)
    (out / "train" / "000000.bin").write_bytes(b"x")
    shards = re.compile(r"pack\.json|train(/\d{6}\.bin)?")
    check_out_dir(out, True, ours=shards)
    (out / "train" / "mine.txt").write_text("mine")
    with pytest.raises(LmkitError, match=r"holds 'train/mine.txt', which lmkit did not write"):
        check_out_dir(out, True, ours=shards)
    (out / "train" / "mine.txt").unlink()
    (out / "mydir" / "deep").mkdir(parents=True)  # a folder of the user's is named once, as a folder
    with pytest.raises(LmkitError, match=r"holds 'mydir/', which") as e:
        check_out_dir(out, True, ours=shards)
    assert str(out) in str(e.value) and "deep" not in str(e.value)
    (out / "mydir" / "deep").rmdir()
    # a manifest: the previous output's own record of the files it wrote
    listed = Manifest(lambda p: ["train/000000.bin", "record.json"])
    check_out_dir(out / "train", True, ours=Manifest(lambda p: ["000000.bin"]))
    with pytest.raises(LmkitError, match=r"'mydir/', which"):
        check_out_dir(out, True, ours=listed)
    (out / "mydir").rmdir()
    check_out_dir(out, True, ours=listed)
    (out / "record.json").mkdir()  # a folder where the record names a file is not what was written
    (out / "record.json" / "x").write_text("mine")
    with pytest.raises(LmkitError, match=r"'record.json/x', which"):
        check_out_dir(out, True, ours=listed)
    # a test of the folder as a whole can never be the only recogniser: it cannot tell the user's files
    with pytest.raises(TypeError, match="pattern or a Manifest"):
        check_out_dir(out, True, ours=lambda p: True)
    with pytest.raises(LmkitError, match="not a previous lmkit sweep"):  # in order: the first that fails speaks
        check_out_dir(out, True, ours=[lambda p: False, shards], kind="sweep")
    with pytest.raises(LmkitError, match="'record.json/', which"):
        check_out_dir(out, True, ours=[shards, lambda p: False], kind="sweep")


def test_stamp_tells_lmkit_text_unedited_from_anything_else(tmp_path: Path) -> None:
    from lmkit.files import is_stamped, stamp

    text = "---\nlicense: mit\n---\n\n# A card\n\nBody.\n"
    card = tmp_path / "card.md"
    card.write_text(f"---\n# {stamp(text)}\n" + text[4:])
    assert is_stamped(card)
    card.write_text(card.read_text().replace("Body.", "Body, edited by hand."))
    assert not is_stamped(card)
    (tmp_path / "notes.md").write_text(text)
    assert not is_stamped(tmp_path / "notes.md") and not is_stamped(tmp_path / "missing.md")
    (tmp_path / "bin.md").write_bytes(b"\xff\xfe" + stamp(text).encode())
    assert not is_stamped(tmp_path / "bin.md")


def png_with_comment(png: bytes) -> bytes:
    """``png`` with one more text chunk before its end: what an image editor's "add a comment" does."""
    body = b"Comment\0edited by hand"
    chunk = struct.pack(">I", len(body)) + b"tEXt" + body + struct.pack(">I", zlib.crc32(b"tEXt" + body))
    return png[:-12] + chunk + png[-12:]  # IEND is the last 12 bytes


def users_png(path: Path) -> Path:
    """A picture the user drew with matplotlib, as any PNG of theirs would be."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(2, 2), dpi=50)
    fig.add_subplot().plot([0, 1], [1, 0])
    fig.savefig(path, format="png")
    plt.close(fig)
    return path


def test_png_and_sidecar_stamps_tell_lmkit_files_unchanged_from_anything_else(tmp_path: Path) -> None:
    import matplotlib.image

    from lmkit.files import has_sidecar_stamp, is_stamped_png, sidecar, stamp_png, write_sidecar_stamp

    own = users_png(tmp_path / "own.png")
    assert not is_stamped_png(own)
    drawn = tmp_path / "drawn.png"
    drawn.write_bytes(stamp_png(own.read_bytes(), "lmkit viz"))
    assert is_stamped_png(drawn)
    assert (matplotlib.image.imread(drawn) == matplotlib.image.imread(own)).all()  # readers skip the chunk
    for changed in (
        png_with_comment(drawn.read_bytes()),
        drawn.read_bytes()[:-1],
        stamp_png(drawn.read_bytes(), "lmkit viz"),
    ):  # edited, cut short, stamped twice
        (tmp_path / "x.png").write_bytes(changed)
        assert not is_stamped_png(tmp_path / "x.png")
    pixels = bytearray(drawn.read_bytes())
    at = pixels.index(b"IDAT") + 8  # a pixel byte changed (and the chunk's CRC left as it was)
    pixels[at] ^= 1
    (tmp_path / "x.png").write_bytes(bytes(pixels))
    assert not is_stamped_png(tmp_path / "x.png") and not is_stamped_png(tmp_path / "missing.png")
    # a sidecar: the file's digest beside it
    tok = tmp_path / "tokenizer.json"
    tok.write_text('{"model": {}}')
    assert not has_sidecar_stamp(tok)
    side = write_sidecar_stamp(tok, "lmkit tokenizer train")
    assert side == sidecar(tok) == tmp_path / ".tokenizer.json.lmkit-sha256"
    assert has_sidecar_stamp(tok)
    tok.write_text('{"model": {"edited": 1}}')
    assert not has_sidecar_stamp(tok)
    copied = tmp_path / "copy" / "tokenizer.json"  # a copy without its sidecar is not recognised
    copied.parent.mkdir()
    copied.write_text('{"model": {}}')
    assert not has_sidecar_stamp(copied)


def add_mine(out: Path) -> None:
    """The issue's own case: ``echo mine > D/mine.txt; mkdir D/mydir``."""
    (out / "mine.txt").write_text("mine\n")
    (out / "mydir").mkdir()


def mine_intact(out: Path) -> bool:
    return (
        (out / "mine.txt").read_text() == "mine\n" and (out / "mydir").is_dir() and not any((out / "mydir").iterdir())
    )


@pytest.fixture(scope="module")
def tok_ckpts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A decoder and an encoder checkpoint with a tokenizer (icl, finetune-head and viz read text)."""
    from lmkit.tokenizer import train_tokenizer

    root = tmp_path_factory.mktemp("tok-ckpts")
    lines = [f"the river {i} runs past the mill and the town {i % 7} buys bread" for i in range(300)]
    tok = train_tokenizer(lines, vocab_size=400, show_progress=False)
    out = {}
    for family in ("decoder", "encoder"):
        cfg = ModelConfig(family=family, vocab_size=tok.vocab_size, d_model=32, n_layers=1, n_heads=4, max_seq_len=64)
        torch.manual_seed(0)
        out[family] = save_checkpoint(root / family, build_model(cfg), cfg, tok, meta={"step": 1, "tokens": 10})
    return out


def points_csv(path: Path) -> Path:
    """IsoFLOP points of a known law: three budgets, five sizes each."""
    rows = []
    for c in (1e16, 1e17, 1e18):
        n_opt = 0.1 * c**0.5
        for f in (0.25, 0.5, 1.0, 2.0, 4.0):
            n = n_opt * f
            d = c / (6 * n)
            rows.append(f"{n},{d},{c},{1.9 + 350 / n**0.32 + 900 / d**0.30},{c}\n")
    path.write_text("params,tokens,flops,loss,budget\n" + "".join(rows))
    return path


def writer_argv(command: str, tmp_path: Path, tok_ckpts: dict[str, Path]) -> list[str | Path]:
    """Everything of ``command``'s line but ``--out OUT`` and ``--overwrite``: tiny inputs made here."""
    if command in ("export", "import-hf", "quantize", "hub pull"):
        ck = ckpt(tmp_path / "run" / "ckpt-7")
        if command == "export":
            return ["export", ck, "--no-verify"]
        if command == "quantize":
            return ["quantize", ck, "--to", "bf16"]
        if command == "import-hf":
            from lmkit.ship.export_hf import export_hf

            export_hf(ck, tmp_path / "hf", verify=False)
            return ["import-hf", tmp_path / "hf", "--no-tokenizer"]
        from lmkit.ship.hub import Hub

        Hub(str(tmp_path / "hubdir")).push(ck, "alice/tiny")
        return ["hub", "pull", "alice/tiny@1", "--hub", tmp_path / "hubdir"]
    if command in ("curate", "mix"):
        raw = corpus(tmp_path / "raw")
        return ["curate", raw, "--workers", "1"] if command == "curate" else ["mix", f"{raw}=1"]
    if command == "scale fit":
        return ["scale", "fit", points_csv(tmp_path / "points.csv"), "--approach", "2", "--no-plots"]
    if command == "icl":
        return ["icl", tok_ckpts["decoder"], "--task", "copy-pairs", "--n-examples", "4", "--shots", "0", "1"]
    if command == "finetune-head":
        data = tmp_path / "labels.jsonl"
        data.write_text(
            "".join(json.dumps({"text": f"the river {i}", "label": "a" if i % 2 else "b"}) + "\n" for i in range(12))
        )
        return [
            "finetune-head",
            tok_ckpts["encoder"],
            "--data",
            data,
            "--task",
            "sequence-classification",
            "--epochs",
            "1",
            "--quiet",
        ]
    raise AssertionError(command)


FOLDER_WRITERS = ["export", "import-hf", "quantize", "hub pull", "curate", "mix", "scale fit", "icl", "finetune-head"]


@pytest.mark.parametrize("command", FOLDER_WRITERS)
def test_overwrite_never_deletes_what_the_user_added(
    command: str, tmp_path: Path, tok_ckpts: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """lmkit CMD --out D; echo mine > D/mine.txt; mkdir D/mydir; lmkit CMD --out D --overwrite: refused in
    one line naming D and mine.txt, with D (the user's files and lmkit's) exactly as it was."""
    argv = writer_argv(command, tmp_path, tok_ckpts)
    out = tmp_path / "D"
    assert main([str(a) for a in [*argv, "--out", out]]) == 0
    # a plain re-run with --overwrite replaces the command's own untouched output
    assert main([str(a) for a in [*argv, "--out", out, "--overwrite"]]) == 0
    add_mine(out)
    before = snapshot(out)
    err = refused(capsys, [*argv, "--out", out, "--overwrite"], out, "'mine.txt', 'mydir/', which lmkit did not write")
    assert "--overwrite replaces only a previous" in err
    assert mine_intact(out) and snapshot(out) == before
    # the user's file deep inside is as safe as one at the top
    (out / "mine.txt").unlink()
    (out / "mydir").rmdir()
    (out / "mydir" / "sub").mkdir(parents=True)
    refused(capsys, [*argv, "--out", out, "--overwrite"], out, "'mydir/'")
    assert (out / "mydir" / "sub").is_dir()


def test_hub_pull_overwrite_keeps_the_users_files_exactly_as_the_issue_tried(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from lmkit.ship.hub import PULL_RECORD, Hub

    hub = tmp_path / "hubdir"
    Hub(str(hub)).push(ckpt(tmp_path / "ck"), "alice/tiny")
    d = tmp_path / "D"
    pull = ["hub", "pull", "alice/tiny@1", "--out", str(d), "--hub", str(hub)]
    assert main(pull) == 0
    assert json.loads((d / PULL_RECORD).read_text())["revision"] == 1
    add_mine(d)
    refused(capsys, [*pull, "--overwrite"], d, "mine.txt")
    assert mine_intact(d) and (d / "model.safetensors").is_file()
    # a pushed folder leaves the pull's record out; a pull with a card of the user's own replaces cleanly
    (d / "mine.txt").unlink()
    (d / "mydir").rmdir()
    card = tmp_path / "own-card.md"
    card.write_text("---\nlicense: mit\n---\n\n# my own card\n")
    m = Hub(str(hub)).push(d, "alice/tiny", card=card)
    assert PULL_RECORD not in m["files"] and "README.md" in m["files"]
    assert main([*pull[:2], "alice/tiny@2", *pull[3:], "--overwrite"]) == 0
    assert (d / "README.md").read_text() == card.read_text()
    # a folder pulled with no record (or with one that names fewer files) is not replaced
    (d / PULL_RECORD).unlink()
    refused(capsys, [*pull, "--overwrite"], d, "not a previous lmkit pulled checkpoint")
    assert (d / "README.md").read_text() == card.read_text()


def test_quantize_overwrite_keeps_a_checkpoint_the_user_added_to(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A folder that is an lmkit checkpoint as a whole is still refused when the user added to it; an
    unedited card `lmkit card` wrote into it is lmkit's and goes with the replace."""
    ck = ckpt(tmp_path / "ck")
    q = tmp_path / "q"
    argv: list[str | Path] = ["quantize", ck, "--to", "bf16", "--out", q]
    assert main([str(a) for a in argv]) == 0
    assert main(["card", str(q)]) == 0
    assert main([str(a) for a in [*argv, "--overwrite"]]) == 0  # its card went with it
    assert not (q / "README.md").exists()
    assert main(["card", str(q)]) == 0
    (q / "README.md").write_text((q / "README.md").read_text() + "\nMy own notes.\n")  # edited: the user's now
    refused(capsys, [*argv, "--overwrite"], q, "'README.md', which lmkit did not write")
    assert (q / "README.md").read_text().endswith("My own notes.\n")


def test_export_overwrite_keeps_a_card_the_user_edited(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hf = tmp_path / "hf"
    argv: list[str | Path] = ["export", run, "--out", hf, "--no-verify"]
    assert main([str(a) for a in argv]) == 0
    (hf / "README.md").write_text((hf / "README.md").read_text() + "\nMy own notes.\n")
    refused(capsys, [*argv, "--overwrite"], hf, "'README.md', which lmkit did not write")
    assert (hf / "README.md").read_text().endswith("My own notes.\n")


def test_adapt_overwrite_never_deletes_what_the_user_added(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from lmkit.lab.adapt.experiment import SETTINGS_FILE, AdaptSettings, open_experiment

    dom, gen = corpus(tmp_path / "domain", 6), corpus(tmp_path / "general", 6)
    settings = AdaptSettings(domain=[str(dom)], general=[str(gen)], config="tiny")
    out = tmp_path / "D"
    assert open_experiment(settings, out, overwrite=False) is False  # the experiment started: a previous output
    for rel in (
        "split/split.json",
        "arms/share-0.00/run/ckpt-10/meta.json",
        "tokenizers/mix/tokenizer.json",
        "report.md",
        "adapt.json",
        "tradeoff.png",
    ):
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_text("{}")
    assert open_experiment(settings, out, overwrite=True) is False  # an untouched experiment starts again
    assert [p.name for p in out.iterdir()] == [SETTINGS_FILE]
    add_mine(out)
    before = snapshot(out)
    refused(
        capsys,
        ["adapt", "--domain", dom, "--general", gen, "--config", "tiny", "--out", out, "--overwrite", "--quiet"],
        out,
        "'mine.txt', 'mydir/', which lmkit did not write",
    )
    assert mine_intact(out) and snapshot(out) == before


def test_pack_overwrite_never_deletes_what_the_user_added(tmp_path: Path) -> None:
    """The shards folder (a run's shards/, replaced when its inputs change) follows the same rule."""
    from lmkit.data.document import Document
    from lmkit.data.pack import pack
    from lmkit.tokenizer import train_tokenizer

    texts = [f"the river {i} runs past the mill" for i in range(40)]
    tok = train_tokenizer(texts, vocab_size=380, show_progress=False)

    def docs() -> list[Document]:
        return [Document(str(i), t, "s") for i, t in enumerate(texts)]

    out = tmp_path / "shards"
    pack(docs(), tok, out, val_fraction=0.1, workers=1, show_progress=False)
    pack(docs(), tok, out, val_fraction=0.1, workers=1, show_progress=False, overwrite=True)
    add_mine(out)
    (out / "train" / "notes.txt").write_text("mine\n")
    before = snapshot(out)
    with pytest.raises(LmkitError, match=r"'mine.txt', 'mydir/', 'train/notes.txt', which lmkit did not write") as e:
        pack(docs(), tok, out, val_fraction=0.1, workers=1, show_progress=False, overwrite=True)
    assert str(out) in str(e.value)
    assert mine_intact(out) and snapshot(out) == before


# --------------------------------------------------------------------------- single files: card, tokenizer, viz


def test_card_overwrite_replaces_only_a_card_lmkit_wrote(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`lmkit card run --out notes.md --overwrite` never replaces the user's own Markdown (any .md), nor a
    card lmkit wrote that the user has edited since; it replaces a card lmkit wrote, unedited."""
    ck = ckpt(tmp_path / "run" / "ckpt-7")
    notes = tmp_path / "notes.md"
    notes.write_text("---\ntitle: my notes\n---\n\n# Notes\n\nmine\n")
    readme = tmp_path / "README.md"
    readme.write_text("# My project\n")
    for own in (notes, readme):
        before = own.read_bytes()
        refused(capsys, ["card", tmp_path / "run", "--out", own, "--overwrite"], own, "not a previous lmkit card")
        assert own.read_bytes() == before
    card = tmp_path / "card.md"
    assert main(["card", str(ck), "--out", str(card)]) == 0
    assert main(["card", str(ck), "--out", str(card), "--overwrite", "--license", "mit"]) == 0
    from lmkit.ship.card.render import parse_front_matter

    assert parse_front_matter(card.read_text())[0]["license"] == "mit"
    card.write_text(card.read_text().replace("## ", "## Edited: ", 1))
    edited = card.read_bytes()
    refused(capsys, ["card", ck, "--out", card, "--overwrite"], card, "nobody edited since")
    assert card.read_bytes() == edited


@pytest.mark.parametrize("command", ["tokenizer train", "viz attention", "card", "icl --write-pretraining-text"])
def test_single_file_writers_leave_the_rest_of_the_folder_alone(
    command: str, tmp_path: Path, tok_ckpts: dict[str, Path]
) -> None:
    """A command that writes one file replaces only that file: what else the folder holds stays."""
    d = tmp_path / "D"
    d.mkdir()
    if command == "tokenizer train":
        argv = ["tokenizer", "train", str(corpus(tmp_path / "raw")), "--vocab-size", "400", "--out", str(d)]
    elif command == "viz attention":
        argv = ["viz", "attention", str(tok_ckpts["decoder"]), "the river", "--out", str(d / "att.png")]
    elif command == "card":
        argv = ["card", str(tok_ckpts["decoder"]), "--out", str(d / "card.md")]
    else:
        argv = ["icl", "--task", "copy-pairs", "--write-pretraining-text", str(d / "pairs.txt"), "--lines", "5"]
    add_mine(d)
    assert main(argv) == 0
    assert main([*argv, "--overwrite"]) == 0
    assert mine_intact(d)


SINGLE_FILE_WRITERS = ["tokenizer train", "viz attention", "viz embeddings", "icl --write-pretraining-text"]


def single_file_case(command: str, tmp_path: Path, tok_ckpts: dict[str, Path]) -> tuple[list[str], Path, list[bytes]]:
    """``command``'s line (with ``--out``), the file it writes, and files of the user's own that could sit there."""
    d = tmp_path / "D"
    d.mkdir()
    if command == "tokenizer train":
        from tokenizers import Tokenizer as HFTokenizer
        from tokenizers import models

        hf = HFTokenizer(models.WordLevel({"[UNK]": 0, "river": 1}, unk_token="[UNK]")).to_str()  # a Hugging Face one
        copied = (tok_ckpts["decoder"] / "tokenizer.json").read_bytes()  # lmkit's, copied from a checkpoint
        return (
            ["tokenizer", "train", str(corpus(tmp_path / "raw")), "--vocab-size", "400", "--out", str(d)],
            d / "tokenizer.json",
            [hf.encode(), copied],
        )
    if command.startswith("viz"):
        out = d / "pic.png"
        own = users_png(tmp_path / "own.png").read_bytes()
        if command == "viz attention":
            return ["viz", "attention", str(tok_ckpts["decoder"]), "the river", "--out", str(out)], out, [own]
        words = ["--words", "river", "town"]
        return ["viz", "embeddings", str(tok_ckpts["decoder"]), *words, "--out", str(out)], out, [own]
    from lmkit.lab.icl.tasks import copy_pairs_text

    out = d / "pairs.txt"
    return (
        ["icl", "--task", "copy-pairs", "--write-pretraining-text", str(out), "--lines", "5"],
        out,
        [b"my notes\n", copy_pairs_text(5, 0).encode()],
    )  # the second: the same text, not written here


def edited(path: Path) -> bytes:
    """The file lmkit wrote, as the user changed it."""
    data = path.read_bytes()
    if path.suffix == ".png":
        return png_with_comment(data)
    if path.suffix == ".json":
        spec = json.loads(data)
        spec["added_tokens"].append(
            {**spec["added_tokens"][-1], "id": len(spec["model"]["vocab"]) + 999, "content": "<my_token>"}
        )
        return json.dumps(spec).encode()
    return data + b"\nmy own line\n"


@pytest.mark.parametrize("command", SINGLE_FILE_WRITERS)
def test_overwrite_never_replaces_the_users_own_file(
    command: str, tmp_path: Path, tok_ckpts: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 25 item 5 for the commands that write one file: with --overwrite, a file of the same kind that
    is the user's own (their PNG, a Hugging Face tokenizer.json, one copied from a checkpoint) is refused
    in one line and left byte-identical; the command's own previous output is replaced; once the user
    has changed it, it is theirs and refused too."""
    argv, out, own_files = single_file_case(command, tmp_path, tok_ckpts)
    for own in own_files:
        out.write_bytes(own)
        refused(capsys, [*argv, "--overwrite"], out, "is not a previous lmkit", "--overwrite only replaces")
        assert out.read_bytes() == own
    out.unlink()
    assert main(argv) == 0
    first = out.read_bytes()
    assert main([*argv, "--overwrite"]) == 0  # its own, unchanged output: replaced
    assert out.read_bytes() == first  # (the same inputs draw the same file)
    out.write_bytes(edited(out))
    changed = out.read_bytes()
    refused(capsys, [*argv, "--overwrite"], out, "nobody changed since")
    assert out.read_bytes() == changed
