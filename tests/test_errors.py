"""No traceback for bad input: each case that used to end in one is now a one-line error naming the
file (and the config key with its section), and every subcommand answers ``--help`` and a path that
does not exist without one, so a new command cannot regress this.

Commands run in-process through ``lmkit.cli.main`` (fast); stderr must be exactly one line
``lmkit: error: ...`` and the exit status 2.
"""

from __future__ import annotations

import argparse
import json
import pickle
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lmkit.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "tiny.yaml"

pytestmark = pytest.mark.usefixtures("one_thread")


def one_line_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    """Run ``lmkit ARGV``; assert exit 2 and a single ``lmkit: error:`` line; return that line."""
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2, (rc, out, err)
    assert "Traceback" not in err
    assert len(lines) == 1 and lines[0].startswith("lmkit: error: "), err
    return lines[0]


def corpus(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    words = [
        "the",
        "cat",
        "sat",
        "on",
        "a",
        "mat",
        "and",
        "the",
        "dog",
        "ran",
        "far",
        "away",
        "with",
        "a",
        "bird",
        "in",
        "the",
        "tree",
    ]
    docs = [" ".join(words[(i + j) % len(words)] for j in range(40)) for i in range(120)]
    path = folder / "raw.txt"
    path.write_text("\n\n".join(docs) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny trained run folder (3 steps), shared by the tests that need a checkpoint."""
    base = tmp_path_factory.mktemp("errors")
    data = corpus(base / "data")
    out = base / "run"
    rc = main(
        [
            "pretrain",
            "--config",
            str(TINY),
            "--data",
            str(data),
            "--out",
            str(out),
            "--max-steps",
            "3",
            "--quiet",
            "--train.eval_every",
            "0",
        ]
    )
    assert rc == 0
    return out


def newest_ckpt(run: Path) -> Path:
    return max(p for p in run.glob("ckpt-*") if p.is_dir())


def copy_ckpt(run: Path, dst: Path) -> Path:
    """A copy of the run's checkpoint whose meta.json records no checksums (as an older lmkit
    wrote), so that a file changed below reaches the code under test, not the checksum check."""
    shutil.copytree(newest_ckpt(run), dst)
    meta = json.loads((dst / "meta.json").read_text(encoding="utf-8"))
    meta.pop("sha256", None)
    (dst / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
    return dst


def edit_config(ckpt: Path, edit: Any) -> None:
    cfg = json.loads((ckpt / "config.json").read_text(encoding="utf-8"))
    edit(cfg)
    (ckpt / "config.json").write_text(json.dumps(cfg), encoding="utf-8")


# --------------------------------------------------------------------------- config values


def test_pretrain_n_heads_zero(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    line = one_line_error(
        capsys,
        ["pretrain", "--config", TINY, "--data", corpus(tmp_path), "--out", tmp_path / "r", "--model.n_heads", "0"],
    )
    assert str(TINY) in line and "model.n_heads must be positive, got 0" in line


def test_plan_n_heads_zero(capsys: pytest.CaptureFixture[str]) -> None:
    line = one_line_error(capsys, ["plan", "--config", TINY, "--model.n_heads", "0"])
    assert str(TINY) in line and "model.n_heads" in line


def test_plan_config_not_utf8(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    binary = tmp_path / "ls"
    binary.write_bytes(b"\x7fELF\x02\x01\x01\x00" + bytes(range(128, 256)) * 4)
    line = one_line_error(capsys, ["plan", "--config", binary])
    assert str(binary) in line and "not UTF-8" in line


def test_pretrain_negative_lr_flag(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    line = one_line_error(
        capsys, ["pretrain", "--config", TINY, "--data", corpus(tmp_path), "--out", tmp_path / "r", "--train.lr", "-1"]
    )
    assert "train.lr must be positive" in line and "--train.lr" in line


def test_pretrain_nan_lr_in_yaml(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    cfg = tmp_path / "nan.yaml"
    cfg.write_text("train:\n  lr: .nan\n", encoding="utf-8")
    line = one_line_error(capsys, ["pretrain", "--config", cfg, "--data", corpus(tmp_path), "--out", tmp_path / "r"])
    assert str(cfg) in line and "train.lr must be positive, got nan" in line


def test_pretrain_log_every_zero(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    line = one_line_error(
        capsys,
        ["pretrain", "--config", TINY, "--data", corpus(tmp_path), "--out", tmp_path / "r", "--train.log_every", "0"],
    )
    assert "train.log_every must be positive" in line


def test_pretrain_unknown_device(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    line = one_line_error(
        capsys,
        ["pretrain", "--config", TINY, "--data", corpus(tmp_path), "--out", tmp_path / "r", "--train.device", "tpu"],
    )
    assert "train.device must be one of auto|cpu|cuda|cuda:N|mps, got 'tpu'" in line


def test_validation_names_file_and_section_key(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    cfg = tmp_path / "vf.yaml"
    cfg.write_text("data:\n  val_fraction: 2\n", encoding="utf-8")
    line = one_line_error(capsys, ["pretrain", "--config", cfg, "--data", corpus(tmp_path), "--out", tmp_path / "r"])
    assert f"{cfg}: data.val_fraction must be in [0, 1), got 2.0" in line


def test_pretrain_without_a_held_out_window_says_so_before_training(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """data.val_fraction 0 leaves nothing for the evaluation every run ends with: said at once,
    before any step is spent (it was found only after the last step, with nothing saved)."""
    out = tmp_path / "r"
    line = one_line_error(
        capsys,
        [
            "pretrain",
            "--config",
            TINY,
            "--data",
            corpus(tmp_path),
            "--out",
            out,
            "--data.val_fraction",
            "0",
            "--train.eval_every",
            "0",
            "--quiet",
        ],
    )
    assert "split 'val' has 0 tokens" in line and "val_fraction" in line
    assert not list(out.glob("ckpt-*")) and not (out / "metrics.jsonl").exists()


def test_pretrain_shards_is_a_file(capsys: pytest.CaptureFixture[str], tmp_path: Path, run: Path) -> None:
    data = corpus(tmp_path)
    line = one_line_error(
        capsys,
        [
            "pretrain",
            "--config",
            TINY,
            "--data",
            data,
            "--tokenizer",
            run / "tokenizer.json",
            "--out",
            tmp_path / "r",
            "--data.shards",
            data,
        ],
    )
    assert str(data) in line and "data.shards must be a folder" in line
    assert data.is_file()


# --------------------------------------------------------------------------- checkpoint files


@pytest.mark.parametrize(
    "command",
    [
        ["generate", "{ckpt}", "the cat", "--max-new-tokens", "2"],
        ["evaluate", "{ckpt}", "--data", "{data}"],
        ["quantize", "{ckpt}", "--to", "int8", "--out", "{out}"],
        ["export", "{ckpt}", "--out", "{out}", "--no-verify"],
    ],
    ids=lambda c: c[0],
)
def test_config_json_does_not_match_weights(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, run: Path, command: list[str]
) -> None:
    ckpt = copy_ckpt(run, tmp_path / "ckpt")
    edit_config(ckpt, lambda c: c["model"].update(d_model=128, n_layers=3))
    argv = [a.format(ckpt=ckpt, data=corpus(tmp_path / "d"), out=tmp_path / "out") for a in command]
    line = one_line_error(capsys, argv)
    assert str(ckpt) in line and "config.json does not match model.safetensors" in line


@pytest.mark.parametrize(
    "command", [["generate", "{ckpt}", "the cat"], ["card", "{ckpt}", "--out", "-"]], ids=lambda c: c[0]
)
def test_config_json_without_model(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, run: Path, command: list[str]
) -> None:
    ckpt = copy_ckpt(run, tmp_path / "ckpt")
    edit_config(ckpt, lambda c: c.pop("model"))
    line = one_line_error(capsys, [a.format(ckpt=ckpt) for a in command])
    assert f'{ckpt / "config.json"}: no "model" section' in line


class _Touch:
    """Unpickling this would create a file: proof that a pickle ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (Path.touch, (str(self.marker),))  # type: ignore[return-value]


@pytest.mark.parametrize("damage", ["pickle", "truncated"])
def test_resume_from_bad_train_state(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, run: Path, damage: str
) -> None:
    folder = tmp_path / "run"
    shutil.copytree(run, folder)
    state = newest_ckpt(folder) / "train_state" / "state.pt"
    marker = tmp_path / "pickle-ran"
    if damage == "pickle":
        state.write_bytes(pickle.dumps({"optimizer": _Touch(marker), "step": 3}))
    else:
        state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])
    line = one_line_error(
        capsys, ["pretrain", "--out", folder, "--resume", "--max-steps", "5", "--quiet", "--no-verify"]
    )
    assert str(state) in line and "cannot be resumed" in line
    assert not marker.exists()


# --------------------------------------------------------------------------- unclear messages


def test_export_without_tokenizer_promises_no_autotokenizer(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, run: Path
) -> None:
    ckpt = copy_ckpt(run, tmp_path / "ckpt")
    (ckpt / "tokenizer.json").unlink()
    assert main(["export", str(ckpt), "--out", str(tmp_path / "hf"), "--no-verify"]) == 0
    out = capsys.readouterr().out
    assert "AutoTokenizer.from_pretrained" not in out and "no tokenizer" in out
    card = (tmp_path / "hf" / "README.md").read_text(encoding="utf-8")
    assert "AutoTokenizer.from_pretrained" not in card and "no tokenizer.json" in card


def test_card_refuses_truncated_weights(capsys: pytest.CaptureFixture[str], tmp_path: Path, run: Path) -> None:
    ckpt = copy_ckpt(run, tmp_path / "ckpt")
    weights = ckpt / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    line = one_line_error(capsys, ["card", ckpt, "--out", tmp_path / "README.md", "--no-verify"])
    assert str(weights) in line and "weights unreadable" in line
    assert not (tmp_path / "README.md").exists()


def test_hub_name_says_ascii_letters(capsys: pytest.CaptureFixture[str], tmp_path: Path, run: Path) -> None:
    line = one_line_error(capsys, ["hub", "--hub", tmp_path / "hub", "push", newest_ckpt(run), "café"])
    assert "ASCII letters" in line and "'é'" in line


def test_numerics_nan_is_explained(capsys: pytest.CaptureFixture[str]) -> None:
    line = one_line_error(capsys, ["numerics", "--value", "nan"])
    assert "--value nan" in line and "None" not in line


@pytest.mark.parametrize("flag", ["--seq-len", "--micro-batch"])
def test_plan_refuses_zero_counts(capsys: pytest.CaptureFixture[str], flag: str) -> None:
    line = one_line_error(capsys, ["plan", "--params", "1M", flag, "0"])
    assert f"{flag} must be 1 to 16,777,216, got 0" in line  # the range lmkit plans (lmkit.plan.compute)


def test_tokenizer_stats_max_docs_zero(capsys: pytest.CaptureFixture[str], tmp_path: Path, run: Path) -> None:
    line = one_line_error(
        capsys, ["tokenizer", "stats", run / "tokenizer.json", "--data", corpus(tmp_path), "--max-docs", "0"]
    )
    assert "--max-docs must be positive, got 0" in line


# --------------------------------------------------------------------------- every subcommand


def leaf_commands() -> Iterator[tuple[list[str], argparse.ArgumentParser]]:
    """(command path, parser) of every command that runs something, nested ones included."""

    def walk(p: argparse.ArgumentParser, path: list[str]) -> Iterator[tuple[list[str], argparse.ArgumentParser]]:
        subs = [a for a in p._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs:
            yield path, p
            return
        for name, child in subs[0].choices.items():
            yield from walk(child, [*path, name])

    yield from walk(build_parser(), [])


def all_commands() -> list[list[str]]:
    """Every command path, with the groups (``tokenizer``, ``hub``, ``viz``) themselves."""
    paths = [path for path, _ in leaf_commands()]
    groups = {tuple(p[:i]) for p in paths for i in range(1, len(p))}
    return sorted(paths + [list(g) for g in groups])


# Flags that name an input file or folder, tried on a command that has no path argument.
INPUT_FLAGS = ("--config", "--data", "--measure")


def missing_input_argv(path: list[str], parser: argparse.ArgumentParser, tmp: Path) -> list[str] | None:
    """``lmkit PATH ...`` with every positional argument a path that does not exist and required
    options filled in (outputs new, choices their first); None for a command reading no path."""
    nope = str(tmp / "no-such-input")
    argv = list(path)
    positional = [a for a in parser._actions if not a.option_strings]
    # positional arguments that are not paths get a well-formed value, so that the path is what fails
    not_paths = {
        "name": "no-such-model",
        "spec": "no-such-model",
        "query": "decoder",
        "prompt": "hello",
        "text": "hello [MASK]",
        "sources": f"{nope}=1",
    }
    for a in positional:
        argv.append(not_paths.get(a.dest, nope))
    for a in parser._actions:
        if not a.option_strings or not a.required:
            continue
        flag = a.option_strings[-1]
        if a.choices:
            argv += [flag, str(next(iter(a.choices)))]
        elif a.dest == "out":
            argv += [flag, str(tmp / "new-out")]
        elif a.nargs == "+" and a.dest == "words":
            argv += [flag, "cat", "dog"]
        else:
            argv += [flag, nope]
    if not positional:
        flags = [f for a in parser._actions for f in a.option_strings if f in INPUT_FLAGS]
        if not flags:
            return None
        argv += [flags[0], nope]
    if "hub" in path:
        argv[1:1] = ["--hub", str(tmp / "no-such-hub")]
    return argv


def test_every_command_is_walked() -> None:
    """The walk sees the nested commands (a regression here would silently skip them)."""
    paths = {" ".join(p) for p, _ in leaf_commands()}
    assert {
        "tokenizer train",
        "tokenizer stats",
        "hub pull",
        "hub push",
        "viz attention",
        "viz embeddings",
        "pretrain",
        "generate",
        "export",
        "card",
    } <= paths


@pytest.mark.parametrize("path", all_commands(), ids=" ".join)
def test_help_of_every_command(capsys: pytest.CaptureFixture[str], path: list[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main([*path, "--help"])
    out, err = capsys.readouterr()
    assert e.value.code == 0 and "Traceback" not in out + err
    assert out.startswith(f"usage: lmkit {' '.join(path)}")


@pytest.mark.parametrize("path", [p for p, _ in leaf_commands()], ids=" ".join)
def test_missing_input_path_of_every_command(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, path: list[str]
) -> None:
    parser = {tuple(p): q for p, q in leaf_commands()}[tuple(path)]
    argv = missing_input_argv(path, parser, tmp_path)
    if argv is None:
        pytest.skip(f"lmkit {' '.join(path)} reads no file or folder")
    if path == ["hub", "search"]:  # a hub not created yet is an empty hub: nothing found
        rc = main(argv)
        assert rc in (0, 2) and "Traceback" not in capsys.readouterr().err
        return
    one_line_error(capsys, argv)
    assert not (tmp_path / "no-such-input").exists()
