"""lmkit adapt: the held-out split, the tokenizer table and bits per byte against hand computation,
the report's checks, and (slow) the whole experiment on two synthetic domains with distinct
vocabularies, killed and resumed."""

from __future__ import annotations

import json
import math
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from lmkit.errors import LmkitError
from lmkit.lab.adapt.experiment import AdaptSettings, heldout_bpb, open_experiment, plan_arms, run_adapt
from lmkit.lab.adapt.report import checks, monotone
from lmkit.lab.adapt.split import describe, is_held_out, make_split, tail_cut
from lmkit.lab.adapt.tokenizers import tokenizer_table
from lmkit.tokenizer import SPECIAL_TOKENS, train_tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")

DOMAIN_SYLLABLES = ["lex", "jur", "tor", "mens", "rea", "vic", "quo", "stat"]
GENERAL_SYLLABLES = ["ba", "di", "ko", "nu", "pe", "sa", "fi", "mo"]

CONFIG = """model:
  family: decoder
  vocab_size: 512
  d_model: 32
  n_layers: 2
  n_heads: 2
  max_seq_len: 32
train:
  batch_size: 8
  lr: 3.0e-3
  warmup_steps: 5
  max_steps: 40
  eval_every: 0
  eval_batches: 2
  log_every: 10
  ckpt_every: 10
  tensorboard: false
  device: cpu
data:
  val_fraction: 0.05
  workers: 1
"""


def _docs(syllables: list[str], rng: random.Random, n_docs: int) -> list[str]:
    vocab = ["".join(rng.choice(syllables) for _ in range(rng.randint(1, 3))) for _ in range(60)]
    docs = []
    for _ in range(n_docs):
        sents = [
            " ".join(rng.choice(vocab) for _ in range(rng.randint(4, 9))).capitalize() + "."
            for _ in range(rng.randint(3, 6))
        ]
        docs.append(" ".join(sents))
    return docs


def _write(folder: Path, docs: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "docs.jsonl", "w", encoding="utf-8") as f:
        for i, t in enumerate(docs):
            f.write(json.dumps({"id": f"{folder.name}-{i}", "text": t}) + "\n")
    return folder


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("adapt-corpus")
    rng = random.Random(0)
    dom = _write(root / "dom", _docs(DOMAIN_SYLLABLES, rng, 200))
    gen = _write(root / "gen", _docs(GENERAL_SYLLABLES, rng, 200))
    cfg = root / "cfg.yaml"
    cfg.write_text(CONFIG, encoding="utf-8")
    return {"domain": dom, "general": gen, "config": cfg, "root": root}


def _settings(corpus: dict[str, Path], **kw: Any) -> AdaptSettings:
    return AdaptSettings(
        domain=[str(corpus["domain"])], general=[str(corpus["general"])], config=str(corpus["config"]), **kw
    )


# --------------------------------------------------------------------------- fast: pure parts by hand


def test_held_out_split_is_seeded_content_hash() -> None:
    texts = [f"document number {i}" for i in range(2000)]
    held = [is_held_out(t, 0, 0.1) for t in texts]
    assert held == [is_held_out(t, 0, 0.1) for t in texts]  # deterministic
    assert 0.07 < sum(held) / len(held) < 0.13
    assert held != [is_held_out(t, 1, 0.1) for t in texts]  # the seed changes the split
    # the same text lands on the same side whatever its id or position
    assert is_held_out("same words", 3, 0.5) == is_held_out("same words", 3, 0.5)
    assert not any(is_held_out(t, 0, 0.0) for t in texts[:50])


def test_tail_cut_holds_out_whole_closing_paragraphs() -> None:
    paras = [f"paragraph {i} " + "word " * (5 + i % 7) for i in range(40)]
    text = "\n\n".join(paras) + "\n"
    cut = tail_cut(text, 0.1)
    assert cut is not None and 0 < cut < len(text)
    assert text[cut:].startswith("paragraph ") and text[:cut].endswith("\n\n")  # at a paragraph start
    share = (len(text) - cut) / len(text)
    best = min(abs(len(text) - text.index(p) - 0.1 * len(text)) for p in paras[1:])
    assert abs(len(text) - cut - 0.1 * len(text)) == best and 0.05 < share < 0.15
    lines = "\n".join(f"line {i} of a file without blank lines" for i in range(30))
    c = tail_cut(lines, 0.2)
    assert c is not None and lines[c:].startswith("line ") and lines[c - 1] == "\n"  # no paragraphs: lines
    assert tail_cut("one line only, nothing to hold out\n\n  ", 0.5) is None
    assert tail_cut("first\n\nsecond", 0.99) == len("first\n\n")  # the first paragraph always trains


def test_general_set_of_one_big_file_holds_out_its_closing_paragraphs(corpus: dict[str, Path], tmp_path: Path) -> None:
    """Issue 25.4: a general corpus given as one file (one document) is split by text, not refused."""
    rng = random.Random(5)
    general = tmp_path / "general"
    general.mkdir()
    text = "\n\n".join(" ".join(_docs(GENERAL_SYLLABLES, rng, 1)) for _ in range(300)) + "\n"
    (general / "docstrings.txt").write_text(text, encoding="utf-8")
    out = tmp_path / "exp"
    split = make_split({"domain": [str(corpus["domain"])], "general": [str(general)]}, out, seed=0, fraction=0.1)
    assert split["domain"]["rule"] == "document" and split["domain"]["heldout"] > 0
    g = split["general"]
    assert (g["rule"], g["documents"], g["train"], g["heldout"]) == ("text", 1, 1, 1)
    assert 0.08 < g["heldout_share"] < 0.12
    from lmkit.data.read import iter_documents

    train = [d.text for d in iter_documents([out / "split" / "train" / "general"])]
    held = [d.text for d in iter_documents([out / "split" / "heldout" / "general"])]
    assert train[0] + held[0] == text  # the end held out, the rest trained on: no overlap, nothing lost
    assert not set(held[0].split("\n\n")) & set(train[0].split("\n\n"))
    assert json.loads((out / "split" / "split.json").read_text()) == split
    lines = describe(split)
    assert "whole documents" in lines[0] and lines[1].startswith("general: too few documents (1)")
    assert describe({"domain": {"train": 3, "heldout": 1}}) == [  # a split.json from before the rules
        "domain: whole documents by a seeded hash of their text: 3 trained on, 1 held out"
    ]
    one_line = tmp_path / "one-line"
    one_line.mkdir()
    (one_line / "a.txt").write_text("a single line of general text", encoding="utf-8")
    with pytest.raises(LmkitError, match=r"one-line: its 1 general document is too few .* it has no line break"):
        make_split({"general": [str(one_line)]}, tmp_path / "exp2", seed=0, fraction=0.1)


def test_tokenizer_table_matches_hand_counts(corpus: dict[str, Path]) -> None:
    rng = random.Random(1)
    dom_train, gen_train = _docs(DOMAIN_SYLLABLES, rng, 80), _docs(GENERAL_SYLLABLES, rng, 80)
    dom_held, gen_held = _docs(DOMAIN_SYLLABLES, rng, 10), _docs(GENERAL_SYLLABLES, rng, 10)
    toks = {
        "domain": train_tokenizer(dom_train, 420, show_progress=False),
        "general": train_tokenizer(gen_train, 420, show_progress=False),
        "mix": train_tokenizer(dom_train + gen_train, 420, show_progress=False),
    }
    terms = ["mens rea", "stat quo"]
    table = tokenizer_table(toks, {"domain": dom_held, "general": gen_held}, terms)
    for name, tok in toks.items():
        for set_name, texts in (("domain", dom_held), ("general", gen_held)):
            row = table["fertility"][name][set_name]
            tokens = sum(len(tok.encode(t)) for t in texts)
            words = sum(len(t.split()) for t in texts)
            nbytes = sum(len(t.encode("utf-8")) for t in texts)
            chars = sum(len(t) for t in texts)
            assert row["tokens"] == tokens and row["words"] == words and row["bytes"] == nbytes
            assert abs(row["tokens_per_word"] - tokens / words) < 1e-9
            assert abs(row["tokens_per_byte"] - tokens / nbytes) < 1e-9
            assert abs(row["chars_per_token"] - chars / tokens) < 1e-9
        for row in table["terms"]:
            assert row[name]["tokens"] == len(tok.encode(" " + row["term"]))
            assert "".join(row[name]["pieces"]) == " " + row["term"]
    # overlap by hand from the tokenizer.json vocabularies: a byte-level token string of one
    # character is one byte; the learned tokens are the longer ones
    learned = {
        n: {t for t in json.loads(tok.to_str())["model"]["vocab"] if t not in SPECIAL_TOKENS and len(t) > 1}
        for n, tok in toks.items()
    }
    assert len(table["overlap"]) == 3
    for r in table["overlap"]:
        a, b = learned[r["a"]], learned[r["b"]]
        assert (r["learned_a"], r["learned_b"], r["shared"]) == (len(a), len(b), len(a & b))
        assert abs(r["jaccard"] - len(a & b) / len(a | b)) < 1e-9
    assert table["overlap"][0]["shared"] < table["overlap"][1]["shared"]  # domain/general share least
    # a tokenizer trained on the domain cuts domain text into fewer tokens than the general one
    assert (
        table["fertility"]["domain"]["domain"]["tokens_per_word"]
        < table["fertility"]["general"]["domain"]["tokens_per_word"]
    )


def test_heldout_bits_per_byte_match_hand_computation(tmp_path: Path) -> None:
    from lmkit.config import ModelConfig
    from lmkit.models import build_model

    rng = random.Random(2)
    docs = _docs(DOMAIN_SYLLABLES, rng, 12)
    tok = train_tokenizer(docs, 400, show_progress=False)
    folder = _write(tmp_path / "held", docs)
    cfg = ModelConfig(family="decoder", vocab_size=tok.vocab_size, d_model=32, n_layers=2, n_heads=2, max_seq_len=16)
    torch.manual_seed(0)
    model = build_model(cfg)
    got = heldout_bpb(model, cfg, tok, folder, batch_size=3)
    ids: list[int] = []
    for d in docs:
        ids += tok.encode(d) + [tok.eos_id]
    length = cfg.max_seq_len + 1
    rows = torch.tensor(ids[: len(ids) // length * length]).view(-1, length)
    model.eval()
    with torch.no_grad():
        logits = model(rows[:, :-1]).double()
    nats = float(torch.nn.functional.cross_entropy(logits.flatten(0, 1), rows[:, 1:].flatten(), reduction="sum"))
    nbytes = sum(0 if t in tok.special_ids else len(tok.token_bytes(t)) for t in rows[:, 1:].flatten().tolist())
    assert got["tokens"] == rows[:, 1:].numel()
    assert abs(got["loss"] - nats / rows[:, 1:].numel()) < 1e-5  # the model computes in float32
    assert abs(got["bits_per_byte"] - nats / math.log(2) / nbytes) < 1e-5
    # the bits-per-byte identity itself, exactly: total nats / ln 2 / bytes
    assert abs(got["bits_per_byte"] - got["loss"] * got["tokens"] / math.log(2) / nbytes) < 1e-9


def test_checks_and_monotone() -> None:
    assert monotone([3.0, 2.0, 1.0], True) and not monotone([3.0, 3.0, 1.0], True)
    assert monotone([1.0, 2.0], False) and not monotone([2.0, 1.0], False)

    def arm(share: float, d: float, g: float) -> dict[str, Any]:
        return {"kind": "mix", "domain_share": share, "domain": {"bits_per_byte": d}, "general": {"bits_per_byte": g}}

    fert = {
        "fertility": {"domain": {"domain": {"tokens_per_word": 1.2}}, "general": {"domain": {"tokens_per_word": 2.0}}}
    }
    c = checks([arm(1.0, 1.0, 3.0), arm(0.0, 2.0, 1.0), arm(0.5, 1.5, 2.0)], fert)  # order of arms does not matter
    assert c == {
        "domain_bpb_falls_with_share": True,
        "general_bpb_rises_with_share": True,
        "domain_tokenizer_lower_fertility_on_domain": True,
    }
    c = checks([arm(0.0, 2.0, 1.0), arm(0.5, 2.1, 2.0)], fert)
    assert c["domain_bpb_falls_with_share"] is False


def test_settings_are_checked(corpus: dict[str, Path], tmp_path: Path) -> None:
    for kw, msg in (
        ({"mixes": [0.0, 1.5]}, "between 0 and 1"),
        ({"mixes": [0.5, 0.5]}, "repeat"),
        ({"heldout": 0.0}, "--heldout"),
        ({"mixes": []}, "at least one"),
    ):
        with pytest.raises(LmkitError, match=msg):
            _settings(corpus, **kw).validate()
    with pytest.raises(LmkitError, match="no such file"):
        AdaptSettings(domain=[str(tmp_path / "missing")], general=[str(corpus["general"])], config="tiny").validate()
    assert [a.name for a in plan_arms(_settings(corpus, mixes=[1.0, 0.0], continue_from="x"))] == [
        "share-0.00",
        "share-1.00",
        "base",
        "dapt",
    ]
    out = tmp_path / "exp"
    assert open_experiment(_settings(corpus), out, overwrite=False) is False
    assert open_experiment(_settings(corpus, terms=["a"]), out, overwrite=False) is True  # terms: report only
    with pytest.raises(LmkitError, match="other settings .*mixes"):
        open_experiment(_settings(corpus, mixes=[0.0, 1.0]), out, overwrite=False)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(LmkitError, match="not empty"):
        open_experiment(_settings(corpus), foreign, overwrite=False)
    with pytest.raises(LmkitError, match="not a previous lmkit adapt experiment"):
        open_experiment(_settings(corpus), foreign, overwrite=True)
    assert (foreign / "notes.txt").read_text() == "mine"


def test_cli_refuses_bad_input_in_one_line(corpus: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    from lmkit.cli import main

    rc = main(
        [
            "adapt",
            "--domain",
            str(corpus["domain"]),
            "--general",
            str(corpus["general"]),
            "--config",
            str(corpus["config"]),
            "--mixes",
            "0",
            "2",
            "--out",
            str(corpus["root"] / "bad"),
        ]
    )
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "between 0 and 1" in err[0]


def test_bad_vocab_size_fails_before_anything_is_written(
    corpus: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--vocab-size outside what the tokenizer trainer accepts is refused up front: --out stays absent."""
    from lmkit.cli import main
    from lmkit.tokenizer import MAX_VOCAB, MIN_VOCAB

    out = tmp_path / "exp"
    for size in (MIN_VOCAB - 1, MAX_VOCAB + 1, 0):
        capsys.readouterr()
        assert (
            main(
                [
                    "adapt",
                    "--domain",
                    str(corpus["domain"]),
                    "--general",
                    str(corpus["general"]),
                    "--config",
                    str(corpus["config"]),
                    "--vocab-size",
                    str(size),
                    "--out",
                    str(out),
                    "--quiet",
                ]
            )
            == 2
        )
        err = capsys.readouterr().err.strip()
        assert err.startswith("lmkit: error: --vocab-size is ") and "\n" not in err, err
        assert f"{MIN_VOCAB:,} to {MAX_VOCAB:,}" in err
        assert not out.exists()
    small = tmp_path / "small.yaml"  # without --vocab-size, the base config's model.vocab_size is checked alike
    small.write_text(corpus["config"].read_text().replace("vocab_size: 512", "vocab_size: 300"))
    with pytest.raises(LmkitError, match=r"small.yaml: model.vocab_size is 300: the tokenizers"):
        run_adapt(
            AdaptSettings(domain=[str(corpus["domain"])], general=[str(corpus["general"])], config=str(small)),
            out,
            progress=False,
        )
    assert not out.exists()
    assert _settings(corpus, vocab_size=MIN_VOCAB).tokenizer_vocab() == MIN_VOCAB
    assert _settings(corpus).tokenizer_vocab() == 512


# --------------------------------------------------------------------------- slow: the experiment


def _comparable(report: dict[str, Any]) -> dict[str, Any]:
    """The report without what differs between two runs of the same experiment: folders, timing."""
    r = json.loads(json.dumps(report))
    for a in r["arms"]:
        a.pop("wall_time_s")
        for k in ("run", "checkpoint"):
            a[k] = Path(a[k]).name if a[k] else None
    return r


@pytest.fixture(scope="module")
def experiment(corpus: dict[str, Path]) -> dict[str, Any]:
    out = corpus["root"] / "exp"
    report = run_adapt(_settings(corpus, mixes=[0.0, 0.5, 1.0], terms=["mens rea"]), out, progress=False)
    return {"out": out, "report": report}


@pytest.mark.slow
def test_two_synthetic_domains(experiment: dict[str, Any]) -> None:
    r, out = experiment["report"], experiment["out"]
    arms = {a["name"]: a for a in r["arms"]}
    dom = [arms[n]["domain"]["bits_per_byte"] for n in ("share-0.00", "share-0.50", "share-1.00")]
    gen = [arms[n]["general"]["bits_per_byte"] for n in ("share-0.00", "share-0.50", "share-1.00")]
    assert dom[0] > dom[1] > dom[2], dom  # more domain text: better on the domain
    assert gen[0] < gen[1] < gen[2], gen  # ... and worse on general text
    fert = r["tokenizers"]["fertility"]
    assert fert["domain"]["domain"]["tokens_per_word"] < fert["general"]["domain"]["tokens_per_word"]
    assert fert["general"]["general"]["tokens_per_word"] < fert["domain"]["general"]["tokens_per_word"]
    assert all(r["checks"].values())
    # one budget: every arm trained the same steps, tokens and FLOPs
    assert len({(a["steps"], a["tokens"], a["flops"]) for a in r["arms"]}) == 1
    # each arm is a normal run whose card records its mix
    assert set(arms["share-0.00"]["sources"]) == {"general"} and set(arms["share-1.00"]["sources"]) == {"domain"}
    src = arms["share-0.50"]["sources"]
    assert abs(src["domain"] / (src["domain"] + src["general"]) - 0.5) < 0.1
    card = (out / "arms" / "share-0.50" / "card.md").read_text()
    assert "mix (training tokens per source)" in card and "domain" in card and "general" in card
    # the held-out text was never trained on: no held-out document is in any arm's mix
    from lmkit.data.read import iter_documents

    held = {d.text for n in ("domain", "general") for d in iter_documents([out / "split" / "heldout" / n])}
    trained = {d.text for d in iter_documents([out / "arms" / "share-0.50" / "data"])}
    assert held and not held & trained
    for name in ("report.md", "adapt.json", "tradeoff.png"):
        assert (out / name).stat().st_size > 0
    md = (out / "report.md").read_text()
    assert "| share-0.50 |" in md and "mens rea" in md and "chars/token" in md


@pytest.mark.slow
def test_killed_adapt_resumes_with_the_same_report(
    corpus: dict[str, Path], experiment: dict[str, Any], tmp_path: Path
) -> None:
    out = tmp_path / "killed"
    cmd = [
        sys.executable,
        "-m",
        "lmkit.cli",
        "adapt",
        "--domain",
        str(corpus["domain"]),
        "--general",
        str(corpus["general"]),
        "--config",
        str(corpus["config"]),
        "--mixes",
        "0",
        "0.5",
        "1",
        "--terms",
        "mens rea",
        "--out",
        str(out),
        "--quiet",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    target = out / "arms" / "share-0.50" / "run" / "ckpt-0000010"  # mid-way through the second arm
    deadline = time.time() + 80
    while not target.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "adapt.json").exists() and not (out / "arms" / "share-0.50" / "result.json").exists()
    report = run_adapt(_settings(corpus, mixes=[0.0, 0.5, 1.0], terms=["mens rea"]), out, progress=False)
    assert _comparable(report) == _comparable(experiment["report"])
    again = run_adapt(_settings(corpus, mixes=[0.0, 0.5, 1.0], terms=["mens rea"]), out, progress=False)
    assert _comparable(again) == _comparable(report)  # a finished experiment just rewrites its report


@pytest.mark.slow
def test_continue_from_adds_base_and_dapt_arms(
    corpus: dict[str, Path], experiment: dict[str, Any], tmp_path: Path
) -> None:
    general_run = experiment["out"] / "arms" / "share-0.00" / "run"
    r = run_adapt(_settings(corpus, mixes=[], continue_from=str(general_run)), tmp_path / "dapt", progress=False)
    arms = {a["name"]: a for a in r["arms"]}
    assert list(arms) == ["base", "dapt"]
    general_only = next(a for a in experiment["report"]["arms"] if a["name"] == "share-0.00")
    # base is the general model as it is, on the same held-out split: the same figures
    assert arms["base"]["domain"] == general_only["domain"] and arms["base"]["general"] == general_only["general"]
    # DAPT: the same budget on domain text helps on the domain and costs on general text
    assert arms["dapt"]["steps"] == general_only["steps"] and set(arms["dapt"]["sources"]) == {"domain"}
    assert arms["dapt"]["domain"]["bits_per_byte"] < arms["base"]["domain"]["bits_per_byte"]
    assert arms["dapt"]["general"]["bits_per_byte"] > arms["base"]["general"]["bits_per_byte"]
    assert r["checks"]["domain_bpb_falls_with_share"] is None
    assert "| dapt |" in (tmp_path / "dapt" / "report.md").read_text()
