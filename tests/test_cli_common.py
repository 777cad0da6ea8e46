"""The command line says each thing once and says it truly (issue 26).

A flag several commands share is declared in ``lmkit.cli.common`` only and checked there alike; a
helper name means one thing across the CLI; the help names nothing a user cannot know ("the
course") and no time-relative word; ``lmkit.cli``'s docstring lists every command group. The logic
the runners handed to the library (where output goes, the Dask client, the fit's folder, the
copy-pairs corpus, --model auto) is tested here through its new home.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
from pathlib import Path

import pytest

from lmkit.cli import build_parser, main
from lmkit.errors import LmkitError

ROOT = Path(__file__).resolve().parents[1]
CLI = ROOT / "src" / "lmkit" / "cli"
SHARED = (
    "--json",
    "--out",
    "--overwrite",
    "--quiet",
    "--text-field",
    "--no-verify",
    "--seed",
    "--device",
    "--threads",
    "--yes",
    "--scaling-law",
    "--license",
    "--language",
    "--add-section",
)


def _declared(path: Path) -> list[str]:
    """The first argument of every ``add_argument`` call in ``path``."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "add_argument"
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            out.append(node.args[0].value)
    return out


def _parsers(p: argparse.ArgumentParser, path: str = "lmkit") -> list[tuple[str, argparse.ArgumentParser]]:
    """Every parser under ``p`` (commands and their actions), with its command path."""
    out = [(path, p)]
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out += _parsers(sub, f"{path} {name}")
    return out


# --------------------------------------------------------------------------- one declaration per flag


def test_shared_flags_and_the_checkpoint_argument_are_declared_in_common_only() -> None:
    for path in sorted(CLI.glob("*.py")):
        if path.name == "common.py":
            continue
        again = [f for f in _declared(path) if f in SHARED or f == "checkpoint"]
        assert again == [], f"{path.name} declares {again} itself: use the helpers of lmkit.cli.common"


def test_each_cli_function_name_has_one_home() -> None:
    homes: dict[str, list[str]] = {}
    for path in sorted(CLI.glob("*.py")):
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.FunctionDef):
                homes.setdefault(node.name, []).append(path.name)
    twice = {name: where for name, where in homes.items() if len(where) > 1}
    assert twice == {}, f"one name, several meanings (name each for what it does): {twice}"


def test_every_json_flag_says_what_it_prints_and_every_seed_its_range() -> None:
    seen = 0
    for path, parser in _parsers(build_parser()):
        for action in parser._actions:
            if "--json" in action.option_strings:
                seen += 1
                assert action.help and action.help.startswith("print "), (path, action.help)
            if "--seed" in action.option_strings:
                assert "0 to 2**64-1" in (action.help or ""), (path, action.help)
    assert seen >= 20


@pytest.mark.parametrize(
    "command", [["serve", "missing-ckpt"], ["scale", "fit", "missing.csv"]], ids=["serve", "scale fit"]
)
def test_threads_is_checked_alike_by_every_command(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    cores = os.cpu_count() or 1
    for bad, said in (
        ("0", "--threads must be at least 1, got 0"),
        (str(cores + 1), f"--threads must be 1 to {cores} (this machine's CPUs), got {cores + 1}"),
    ):
        assert main([*command, "--threads", bad]) == 2
        assert capsys.readouterr().err == f"lmkit: error: {said}\n"


def test_device_from_names_the_flag() -> None:
    from lmkit.cli.common import device_from

    with pytest.raises(LmkitError, match=r"^--device 'gpu' is not a device"):
        device_from(argparse.Namespace(device="gpu"))
    with pytest.raises(LmkitError, match=r"^--device mps: this runs on cuda or cpu only"):
        device_from(argparse.Namespace(device="mps"), kinds=("cuda", "cpu"))
    assert str(device_from(argparse.Namespace(device="cpu"))) == "cpu"


def test_json_is_printed_alike(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["numerics", "--value", "0.1", "--json"]) == 0
    out = capsys.readouterr().out
    assert json.loads(out)["value"] == 0.1
    assert "\\u" not in out and out.startswith("{\n  ")  # indented, non-ASCII text as it is


# --------------------------------------------------------------------------- prose that is true


def test_help_names_nothing_a_user_cannot_know_and_no_time_relative_word() -> None:
    for path, parser in _parsers(build_parser()):
        texts = [parser.description or ""] + [a.help or "" for a in parser._actions]
        for text in texts:
            assert "the course" not in text.lower(), f"{path}: {text[:120]}"
            assert not re.search(r"\b(now|today|currently|nowadays)\b", text, re.IGNORECASE), f"{path}: {text[:120]}"


def test_the_cli_docstring_lists_every_command_group_and_command() -> None:
    import lmkit.cli

    doc = lmkit.cli.__doc__ or ""
    groups = sorted(p.stem for p in CLI.glob("*.py") if p.stem not in ("__init__", "__main__", "common"))
    assert len(groups) == 13
    for group in groups:
        assert f"``{group}``" in doc, f"lmkit.cli's docstring does not list the {group} group"
    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices
    for command in commands:
        assert re.search(rf"(?<![\w-]){re.escape(command)}(?![\w-])", doc), f"docstring does not name {command}"


# --------------------------------------------------------------------------- logic now in the library


def test_tokenizer_output_is_checked_before_training_and_stamped(tmp_path: Path) -> None:
    from lmkit.tokenizer import check_tokenizer_out, save_stamped, train_tokenizer

    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(LmkitError, match="notes.txt: exists and is not a folder"):
        check_tokenizer_out(tmp_path / "notes.txt", True)
    assert check_tokenizer_out(tmp_path / "tok", False) == tmp_path / "tok" / "tokenizer.json"
    assert check_tokenizer_out(tmp_path / "t.json", False) == tmp_path / "t.json"
    tok = train_tokenizer(["the cat sat on the mat"] * 20, vocab_size=400, show_progress=False)
    (tmp_path / "theirs").mkdir()
    tok.save(tmp_path / "theirs")  # a tokenizer.json lmkit did not stamp: never replaced
    with pytest.raises(LmkitError):
        check_tokenizer_out(tmp_path / "theirs", True)
    path = save_stamped(tok, tmp_path / "ours")
    with pytest.raises(LmkitError):
        check_tokenizer_out(tmp_path / "ours", False)  # exists: only with --overwrite
    assert check_tokenizer_out(tmp_path / "ours", True) == path


def test_no_dask_address_is_no_client() -> None:
    from lmkit.data.curate.cluster import dask_client

    with dask_client(None, 0) as client:
        assert client is None


def test_fit_into_folder_writes_the_fit_and_never_a_foreign_file(tmp_path: Path) -> None:
    import shutil

    from lmkit.lab.scale.fit_folder import default_out, fit_into_folder

    points = tmp_path / "points.csv"
    shutil.copy(ROOT / "tests" / "data" / "chinchilla_isoflop_points.csv", points)
    with pytest.raises(LmkitError, match="--bootstrap must be 0 to 10,000 resamples, got -1"):
        fit_into_folder(points, None, n_bootstrap=-1)
    assert not default_out(points).exists()  # refused before anything was written
    fit = fit_into_folder(points, None, approaches=(1, 2), plots=False)
    assert fit["files"] == {"fit": str(tmp_path / "fit" / "fit.json"), "plots": []}
    assert json.loads((tmp_path / "fit" / "fit.json").read_text())["n_points"] == fit["n_points"] == 245
    (tmp_path / "fit" / "mine.txt").write_text("mine")
    with pytest.raises(LmkitError, match="mine.txt"):
        fit_into_folder(points, None, overwrite=True, approaches=(1,), plots=False)
    assert (tmp_path / "fit" / "mine.txt").read_text() == "mine"


def test_finetuning_is_set_beside_the_best_prompting() -> None:
    from lmkit.lab.icl.finetune import against_prompting

    report = {
        "metrics": ["acc"],
        "results": [
            {"shots": 0, "acc": {"value": 0.3, "ci_low": 0.2, "ci_high": 0.4}},
            {"shots": 4, "acc": {"value": 0.6, "ci_low": 0.5, "ci_high": 0.7}},
        ],
    }
    ft = against_prompting({"accuracy": 0.65}, report)
    assert ft["best_prompting"]["shots"] == 4 and ft["beats_prompting"] is False
    assert against_prompting({"accuracy": 0.8}, report)["beats_prompting"] is True
    assert against_prompting({"accuracy": 0.8}, {"metrics": ["acc"], "results": []}) == {"accuracy": 0.8}


def test_copy_pairs_corpus_replaces_only_its_own_file(tmp_path: Path) -> None:
    from lmkit.lab.icl.tasks import copy_pairs_text, write_copy_pairs_text

    out = tmp_path / "copy.txt"
    assert write_copy_pairs_text(out, 5, 0) == len(copy_pairs_text(5, 0)) == len(out.read_text())
    with pytest.raises(LmkitError):
        write_copy_pairs_text(out, 5, 1)  # exists: only with --overwrite
    write_copy_pairs_text(out, 5, 1, overwrite=True)
    assert out.read_text() == copy_pairs_text(5, 1)
    mine = tmp_path / "mine.txt"
    mine.write_text("my notes")
    with pytest.raises(LmkitError):
        write_copy_pairs_text(mine, 5, 0, overwrite=True)
    assert mine.read_text() == "my notes"
    with pytest.raises(LmkitError, match="--lines must be at least 1, got 0"):
        write_copy_pairs_text(tmp_path / "x.txt", 0, 0)


def test_model_auto_needs_a_time_budget() -> None:
    from lmkit.config import load_run_config
    from lmkit.plan.chinchilla import get_fit
    from lmkit.train.budget import pretrain_to_budget

    cfg = load_run_config("tiny")
    cfg.train.max_time = None
    with pytest.raises(LmkitError, match="--model auto needs a time budget: --train.max_time SECONDS"):
        pretrain_to_budget(cfg, get_fit("chinchilla"), show_progress=False)


def test_adapt_budget_time_is_checked_by_the_experiment(tmp_path: Path) -> None:
    from lmkit.lab.adapt.experiment import AdaptSettings, check_budget_time, run_adapt

    for name in ("d.txt", "g.txt"):
        (tmp_path / name).write_text("some text\n")
    s = AdaptSettings(
        domain=[str(tmp_path / "d.txt")],
        general=[str(tmp_path / "g.txt")],
        config="tiny",
        mixes=[0.0, 1.0],
        budget=1e35,
    )
    with pytest.raises(LmkitError, match="--budget 1e\\+35 for each of 2 arms"):
        check_budget_time(s, yes=True)
    with pytest.raises(LmkitError, match="--budget 1e\\+35 for each of 2 arms"):
        run_adapt(s, tmp_path / "out", progress=False, yes=True)
    assert not (tmp_path / "out").exists()  # refused before anything was written
    s.budget = None
    check_budget_time(s, yes=False)
