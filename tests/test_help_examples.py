"""Every example in every command's ``--help`` runs as written (issue 18).

The examples are read from the parser itself (each command's and sub-command's description: the
lines of an ``example:`` / ``examples:`` block that start with ``lmkit`` or ``torchrun``; text after
two spaces is the example's comment). They run in the order the help lists them, in one temporary
working folder holding the tiny inputs their paths name (corpus/, scraped/, clean/general, runs/enc,
runs/t5, reviews.jsonl ...), so that one example's output is the next one's input as for a reader
following the help (pretrain writes runs/small, quantize reads it; runs/x links to it). The default hub is a
folder under $XDG_CACHE_HOME, pointed into the temporary folder. Skipped, with the reason: those
that need GPUs or start a server.
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import shlex
import shutil
import time
import traceback
from pathlib import Path

import pytest

from lmkit.cli import build_parser, main

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread is fastest on shared cores
ROOT = Path(__file__).resolve().parents[1]
SKIP = {  # (command, why): the only examples that do not run here
    "torchrun": "needs 8 GPUs",
    "serve": "starts a server that runs until stopped",
    "--server": "needs a running OpenAI-compatible server (tests/test_icl.py runs it against lmkit serve)",
    "--hf": "asks the Hugging Face hub (tests/test_hub_search_hf.py runs search and show --hf against a local stand-in)",
}


def _example_lines(text: str) -> list[str]:
    """The example lines of one help text (a trailing backslash joins the next line)."""
    lines: list[str] = []
    for raw in text.splitlines():
        if lines and lines[-1].endswith("\\"):
            lines[-1] = lines[-1][:-1].rstrip() + " " + raw.strip()
        else:
            lines.append(raw.strip())
    out, in_block = [], False
    for s in lines:
        if s.lower().startswith("example"):
            in_block = s.endswith(":")
        elif not s:
            in_block = False
        elif in_block and s.startswith(("lmkit ", "torchrun ")):
            out.append(s.split("  ")[0].strip())  # two spaces start the example's comment
    return out


def help_examples() -> list[tuple[str, str]]:
    """(command path, example line) for every example of every command's help, in help order."""
    out: list[tuple[str, str]] = []

    def walk(parser: argparse.ArgumentParser, path: list[str]) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sp in action.choices.items():
                    text = (sp.description or "") + "\n" + (sp.epilog or "")
                    out.extend((" ".join(path + [name]), line) for line in _example_lines(text))
                    walk(sp, path + [name])

    walk(build_parser(), [])
    return out


def _corpus(path: Path, n: int, seed: int) -> None:
    rng = random.Random(seed)
    subjects = ["the cat", "a dog", "the old man", "my sister", "the farmer", "the bank", "the market"]
    verbs = ["sees", "likes", "finds", "feeds", "calls", "buys", "sells"]
    objects = ["the bird", "a red ball", "the river", "his friend", "the small house", "the bond", "shares"]
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for i in range(n):
            text = " ".join(f"{rng.choice(subjects)} {rng.choice(verbs)} {rng.choice(objects)}." for _ in range(8))
            f.write(json.dumps({"id": f"d{seed}-{i}", "text": text}) + "\n")


WORDS = (
    "the of and to in a is that for it as was with be by on not he this are or his from at which but have an "
    "they you were her she there been one all we their has would when if so no will more can about other into "
    "bank market bond shares price quarter analyst report growth interest rate investor trade fund capital "
    "profit loss revenue earnings company dollar euro inflation central policy credit risk yield debt"
).split()


def _paragraph(rng: random.Random) -> str:
    sentences = []
    for _ in range(rng.randint(4, 9)):
        s = " ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 18)))
        sentences.append(s[0].upper() + s[1:] + ".")
    return " ".join(sentences)


def _tiny_run(recipe: str, data: Path, out: Path) -> None:
    from lmkit.config import load_run_config
    from lmkit.train.loop import train

    cfg = load_run_config(
        ROOT / "configs" / f"{recipe}.yaml",
        {
            "data.paths": [str(data)],
            "out": str(out),
            "train.max_steps": 4,
            "train.eval_every": 0,
            "train.ckpt_every": 0,
            "train.log_every": 2,
            "train.eval_batches": 1,
        },
    )
    train(cfg, show_progress=False)


def _make_inputs(tmp: Path) -> None:
    """The files and folders the examples' paths name, tiny."""
    from lmkit.data.curate import curate

    rng = random.Random(0)
    _corpus(tmp / "corpus" / "train.jsonl", 300, 0)
    _corpus(tmp / "corpus" / "val.jsonl", 40, 1)
    (tmp / "scraped").mkdir()  # prose that passes curation's quality rules (varied, with stop words)
    for i in range(3):
        (tmp / "scraped" / f"page{i}.txt").write_text("\n\n".join(_paragraph(rng) for _ in range(15)))
    with gzip.open(tmp / "books.jsonl.gz", "wt", encoding="utf-8") as f:
        for _ in range(30):
            f.write(json.dumps({"text": _paragraph(rng) + "\n\n" + _paragraph(rng)}) + "\n")
    (tmp / "general").mkdir()
    (tmp / "general" / "g.jsonl").write_text("".join(json.dumps({"text": _paragraph(rng)}) + "\n" for _ in range(40)))
    curate([tmp / "general"], tmp / "clean" / "general", workers=1, progress=False)
    (tmp / "runs").mkdir()
    (tmp / "runs" / "x").symlink_to("small")  # "a run": the one pretrain's example trains, before generate's
    _tiny_run("tiny-encoder", tmp / "corpus", tmp / "runs" / "enc")
    _tiny_run("tiny-encdec", tmp / "corpus", tmp / "runs" / "t5")
    rng = random.Random(3)
    with (tmp / "reviews.jsonl").open("w") as f:
        for i in range(40):
            good = i % 2 == 0
            f.write(
                json.dumps(
                    {
                        "text": f"{'a fine' if good else 'a dull'} film about the {rng.choice(['cat', 'dog'])}",
                        "label": "positive" if good else "negative",
                    }
                )
                + "\n"
            )
    with (tmp / "ner.jsonl").open("w") as f:
        for _ in range(30):
            f.write(json.dumps({"tokens": ["the", "farmer", "sees", "Ada"], "labels": ["O", "O", "O", "B-PER"]}) + "\n")
    with (tmp / "pairs.jsonl").open("w") as f:
        for i in range(30):
            f.write(
                json.dumps(
                    {"input": f"question: who sees the bird {i}? context: the cat sees the bird.", "target": "the cat"}
                )
                + "\n"
            )
    with (tmp / "qa.jsonl").open("w") as f:  # a multiple-choice task for `lmkit icl`
        for i in range(24):
            animal = ["cat", "dog", "bird"][i % 3]
            f.write(
                json.dumps(
                    {
                        "input": f"the {animal} sees the river. who sees the river?",
                        "choices": ["the cat", "the dog", "the bird"],
                        "label": i % 3,
                    }
                )
                + "\n"
            )
    subjects, verbs = ["The cat", "A dog", "The farmer", "My sister", "A bird"], ["sat", "ran", "slept", "sang", "ate"]
    (tmp / "book.txt").write_text(
        " ".join(
            f"{rng.choice(subjects)} {rng.choice(verbs)} {rng.choice(['here', 'there', 'again'])}." for _ in range(80)
        )
    )  # short sentences: a query fits a tiny context
    # lmkit scale fit: Chinchilla's points (the suite's copy) and a points file from a known law
    shutil.copy(Path(__file__).parent / "data" / "chinchilla_isoflop_points.csv", tmp)
    rows = ["params,tokens,flops,loss"]
    for c in (1e18, 1e19, 1e20):
        for f in (0.25, 0.5, 1.0, 2.0, 4.0):
            n = f * (c / 120) ** 0.5
            d = c / (6 * n)
            rows.append(f"{n:.6g},{d:.6g},{c:.6g},{1.69 + 406.4 / n**0.34 + 410.7 / d**0.28:.6f}")
    (tmp / "points.csv").write_text("\n".join(rows) + "\n")
    # lmkit adapt: a "legal" domain and general web text
    for name, words in (
        ("legal", ["licensee", "hereby", "warranty", "indemnify", "clause", "herein", "party"]),
        ("web", ["cat", "river", "garden", "music", "travel", "recipe", "friend"]),
    ):
        (tmp / name).mkdir()
        with (tmp / name / "docs.jsonl").open("w") as f:
            for i in range(60):
                text = " ".join(
                    f"the {rng.choice(words)} {rng.choice(['and', 'of', 'to', 'with'])} {rng.choice(words)}."
                    for _ in range(25)
                )
                f.write(json.dumps({"id": f"{name}{i}", "text": text}) + "\n")
    (tmp / "ethics.md").write_text("## Ethics\n\nA toy model trained on a toy grammar.\n")
    (tmp / "notes.txt").write_text("the licensee hereby accepts the warranty of the party.\n" * 40)
    # lmkit import-hf HuggingFaceTB/SmolLM2-135M: a tiny model under that name in a huggingface_hub cache
    from test_hf_source import COMMIT, _snapshot

    _snapshot(tmp / "hf-cache", "HuggingFaceTB/SmolLM2-135M", COMMIT)


# The commands this test gives inputs to, in help order. A command added later must be added here
# (with any inputs its examples name in _make_inputs), or listed in NOT_YET_COVERED with the reason.
COVERED = [
    "curate",
    "mix",
    "pretrain",
    "generate",
    "plan",
    "numerics",
    "quantize",
    "export",
    "import-hf",  # before evaluate: its example imports the models/smollm2 that evaluate's scores
    "evaluate",
    "card",
    "hub",
    "fill-mask",
    "finetune-head",
    "viz attention",
    "viz embeddings",
    "serve",
    "icl",
    "scale sweep",
    "scale fit",
    "adapt",
    "compare",  # after import-hf and pretrain: it compares their models/smollm2 and runs/small
]
NOT_YET_COVERED: dict[str, str] = {}


def test_every_command_with_examples_is_covered() -> None:
    ex = help_examples()
    commands = list(dict.fromkeys(c for c, _ in ex))
    assert set(COVERED) <= set(commands), f"no examples found for {set(COVERED) - set(commands)}"
    missing = [c for c in commands if c not in COVERED and c.split()[0] not in NOT_YET_COVERED]
    assert not missing, f"commands whose help examples this test does not run yet: {missing}"
    assert all(line.startswith(("lmkit ", "torchrun ")) and "  " not in line for _, line in ex)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("help-examples")
    _make_inputs(tmp)
    return tmp


_RAN: set[str] = set()  # example lines already run in this session's working folder


def _run_example(line: str) -> tuple[int, str]:
    try:
        rc = main(shlex.split(line)[1:])
    except SystemExit as e:  # argparse rejected it
        rc = e.code if isinstance(e.code, int) else 2
    except Exception:  # noqa: BLE001 - report every failing example of the command at once
        return -1, traceback.format_exc()
    return rc, ""


@pytest.mark.slow
@pytest.mark.parametrize("command", COVERED)
def test_help_examples_run_as_written(
    command: str, workdir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each example of ``command``'s help, as written, in the shared working folder (in help order:
    pretrain's example writes the runs/small that quantize's reads)."""
    monkeypatch.chdir(workdir)
    monkeypatch.setenv("XDG_CACHE_HOME", str(workdir / "cache"))  # the default hub lives here
    monkeypatch.delenv("LMKIT_HUB", raising=False)
    import huggingface_hub.constants as hub_constants  # import-hf by hub name: the cache above, offline

    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(workdir / "hf-cache"))
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    failures = []
    for cmd, line in help_examples():
        if cmd != command:
            continue
        why = (
            SKIP.get(line.split()[0])
            or SKIP.get(command)
            or next((w for flag, w in SKIP.items() if flag.startswith("--") and flag in line.split()), None)
        )
        if why:
            print(f"skipped: {line}  ({why})")
            continue
        if line in _RAN:  # the same line in two commands' help (scale sweep's ends with scale fit's)
            continue
        _RAN.add(line)
        t0 = time.perf_counter()
        rc, tb = _run_example(line)
        out = capsys.readouterr()
        with capsys.disabled():
            print(f"\n  {time.perf_counter() - t0:5.1f} s  rc {rc}  {line}", end="")
        if rc != 0:
            failures.append(f"{line}\n    exit {rc}: {(tb or out.err or out.out).strip()[-800:]}")
    assert not failures, "\n".join(failures)
