"""`lmkit icl`: golden prompts and context-window fitting, multiple-choice and free-form metrics
against hand computation, byte-identical samples across runs / batch sizes / --limit, the
built-in tasks, scoring through `lmkit serve` equal to in-process scoring, and fine-tuning reported
beside prompting for an encoder-decoder."""

from __future__ import annotations

import json
import math
import random
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from lmkit.cli import main
from lmkit.config import ModelConfig
from lmkit.errors import LmkitError
from lmkit.lab.icl.models import LocalLM
from lmkit.lab.icl.prompts import build_prompt, draw_exemplars, render_prompt
from lmkit.lab.icl.run import fits_for, run_icl
from lmkit.lab.icl.score import bootstrap_ci, choose, cut_answer, split_at_boundary
from lmkit.lab.icl.tasks import (
    Example,
    PromptFormat,
    Task,
    add2,
    copy_pairs,
    copy_pairs_line,
    last_word,
    load_task,
    next_sentence,
    reverse,
)
from lmkit.models import build_model
from lmkit.models.checkpoint import save_checkpoint
from lmkit.tokenizer import Tokenizer, train_tokenizer
from test_generate import tiny_decoder

pytestmark = pytest.mark.usefixtures("one_thread")

TEXT = (
    "The river runs past the old mill. The miller sells bread to the town. Children play near the water "
    "every day. A heron waits on the bank for fish. In winter the river freezes over. Then the mill is "
    "quiet and the town waits for spring. Spring brings rain and the wheel turns again. "
)


def qa_task(n: int = 5, instruction: str = "Answer the question.") -> Task:
    exs = [Example(f"q{i}?", f"a{i}", where=f"t#{i}") for i in range(n)]
    return Task("qa", "generate", exs, PromptFormat(instruction=instruction))


# --------------------------------------------------------------------------- prompts (pure)


def test_golden_prompts_at_0_1_3_shots() -> None:
    task = qa_task()
    assert draw_exemplars(5, 3, 7, 0, exclude=0) == [1, 4, 2]
    p0, p1, p3 = (build_prompt(task, 0, k, seed=7) for k in (0, 1, 3))
    assert p0.text == "Answer the question.\n\nq0?\nAnswer:"
    assert p1.text == "Answer the question.\n\nq1?\nAnswer: a1\n\nq0?\nAnswer:"
    assert p3.text == ("Answer the question.\n\nq1?\nAnswer: a1\n\nq4?\nAnswer: a4\n\nq2?\nAnswer: a2\n\nq0?\nAnswer:")
    assert (p0.shots, p1.shots, p3.shots) == (0, 1, 3)
    copy = Task(
        "c",
        "multiple_choice",
        [Example("ka", "vb", ("vb", "vc"), 0), Example("kc", "vd", ("vd", "ve"), 0)],
        PromptFormat(template="{input} ->", separator=" ; "),
    )
    assert build_prompt(copy, 0, 1, seed=0).text == "kc -> vd ; ka ->"


def test_exemplars_seeded_per_example_prefix_stable_never_the_query() -> None:
    for index in range(20):
        eight = draw_exemplars(20, 8, seed=3, index=index, exclude=index)
        assert index not in eight and len(set(eight)) == 8
        for k in range(8):
            assert draw_exemplars(20, k, seed=3, index=index, exclude=index) == eight[:k]
    assert draw_exemplars(20, 4, 3, 5, 5) != draw_exemplars(20, 4, 4, 5, 5)  # the seed matters
    assert len(draw_exemplars(4, 8, 0, 0, exclude=0)) == 3  # at most the rest of the file
    task = qa_task(6)
    task.train = [Example(f"t{i}", f"y{i}") for i in range(3)]
    p = build_prompt(task, 2, 2, seed=0)
    assert all(f"t{j}?" not in p.text for j in range(3)) and "t" in p.text.split("q2?")[0]


def test_context_window_drops_exemplars_never_the_query() -> None:
    task = qa_task(6, instruction="")

    def fits(text: str, query: Example) -> bool:
        return len(text) <= 40

    p = build_prompt(task, 0, 4, seed=1, fits=fits)
    full = build_prompt(task, 0, 4, seed=1)
    assert p.shots_asked == 4 and p.shots < 4 and len(p.text) <= 40
    assert p.exemplars == full.exemplars[: p.shots]  # the last-drawn go first
    assert p.text.endswith("q0?\nAnswer:")
    assert render_prompt(task.format, [task.pool[j] for j in p.exemplars], task.examples[0]) == p.text
    with pytest.raises(LmkitError, match="query alone does not fit"):
        build_prompt(task, 0, 2, seed=1, fits=lambda text, q: False)


def test_split_at_boundary_gives_the_straddling_token_to_the_continuation() -> None:
    assert split_at_boundary([3, 6, 9], 6) == 2
    assert split_at_boundary([3, 9], 6) == 1  # "...Ans" + "wer" merged: the merged token is continuation
    assert split_at_boundary([9], 9) == 0  # never an empty continuation
    tok = train_tokenizer(["Question: x\nAnswer: yes\n"] * 200, vocab_size=380, show_progress=False)
    lm = LocalLM(tiny_model(tok.vocab_size), tok)
    ids, n_ctx = lm.split("Question: x\nAns", "wer")
    whole = tok.encode("Question: x\nAnswer")
    assert ids == whole and 0 < n_ctx < len(ids)
    assert tok.decode(ids[n_ctx:]).endswith("wer") and len(tok.decode(ids[n_ctx:])) > len("wer")


# --------------------------------------------------------------------------- a tiny model


def tiny_model(vocab: int, seed: int = 1, window: int = 64) -> torch.nn.Module:
    return tiny_decoder(vocab=vocab, seed=seed, max_seq_len=window)


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    rng = random.Random(0)
    lines = (
        [copy_pairs_line(rng) for _ in range(400)]
        + [TEXT] * 20
        + [f"{a} + {b} = {a + b}" for a in range(10, 99, 3) for b in (12, 47, 83)]
    )
    return train_tokenizer(lines, vocab_size=460, show_progress=False)


@pytest.fixture(scope="module")
def model(tok: Tokenizer) -> torch.nn.Module:
    return tiny_model(tok.vocab_size)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory, model: torch.nn.Module, tok: Tokenizer) -> Path:
    return save_checkpoint(tmp_path_factory.mktemp("icl") / "ckpt", model, model.cfg, tok)


def test_multiple_choice_metrics_against_hand_computation(model: torch.nn.Module, tok: Tokenizer) -> None:
    task = copy_pairs(12, seed=3)
    report, samples = run_icl(LocalLM(model, tok, 4), task, [0, 2], seed=5)
    for rec in samples:
        ex = task.examples[rec["index"]]
        conts = [" " + c for c in ex.choices]
        for c, ll, n in zip(conts, rec["loglik"], rec["tokens"]):  # read from the model directly, unbatched
            ids = tok.encode(rec["prompt"] + c)
            with torch.no_grad():
                logp = model(torch.tensor([ids]))[0].float().log_softmax(-1)
            want = sum(float(logp[t - 1, ids[t]]) for t in range(len(ids) - n, len(ids)))
            assert abs(ll - want) < 1e-4
        ll, llu = rec["loglik"], rec["loglik_calibration"]
        by_hand = {
            "acc": max(range(4), key=lambda j: (ll[j], -j)),
            "acc_norm": max(range(4), key=lambda j: (ll[j] / len(conts[j]), -j)),
            "calibrated": max(range(4), key=lambda j: (ll[j] - llu[j], -j)),
        }
        assert rec["pred"] == by_hand
        assert rec["correct"] == {m: by_hand[m] == ex.label for m in by_hand}
    for row in report["results"]:
        recs = [r for r in samples if r["shots"] == row["shots"]]
        for m in ("acc", "acc_norm", "calibrated"):
            c = np.array([1.0 if r["correct"][m] else 0.0 for r in recs])
            assert abs(row[m]["value"] - c.mean()) < 1e-9
            idx = np.random.default_rng(5).integers(0, len(c), size=(1000, len(c)))
            means = np.sort(c[idx].mean(axis=1))
            lo = means[24] + 0.975 * (means[25] - means[24])  # numpy's linear percentile at 2.5%, by hand
            hi = means[974] + 0.025 * (means[975] - means[974])
            assert abs(row[m]["ci_low"] - lo) < 1e-9 and abs(row[m]["ci_high"] - hi) < 1e-9
    assert report["chance"] == 0.25


def test_choose_and_bootstrap_by_hand() -> None:
    ll, lens, unc = [-3.0, -4.0, -9.0], [2, 8, 40], [-1.0, -4.5, -1.0]
    assert choose(ll, lens, unc) == {"acc": 0, "acc_norm": 2, "calibrated": 1}
    assert choose([-1.0, -1.0], [3, 3], None) == {"acc": 0, "acc_norm": 0}  # ties: the first
    vals = [1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 0.0, 0.0, 1.0, 1.0]
    lo, hi = bootstrap_ci(vals, seed=9)
    idx = np.random.default_rng(9).integers(0, 10, size=(1000, 10))
    means = np.array(vals)[idx].mean(axis=1)
    assert (lo, hi) == tuple(float(x) for x in np.percentile(means, [2.5, 97.5]))
    assert lo < 0.6 < hi


def test_window_counts_every_choice_in_tokens_not_the_longest_in_characters(tok: Tokenizer) -> None:
    """Issue 25.3: a choice short in characters but long in tokens ("著作権": 3 characters, one token
    per byte) must not overflow the window after the fitting check passed."""
    phrases = [
        ("all rights", "reserved"),
        ("free", "software"),
        ("source", "code"),
        ("fair", "use"),
        ("public", "domain"),
        ("patent", "grant"),
    ]
    exs = [Example(f"{q} ...", a, ("著作権", "warranty", a), 2, where=f"lic#{i}") for i, (q, a) in enumerate(phrases)]
    task = Task("lic", "multiple_choice", exs)
    three = build_prompt(task, 0, 3, seed=0).text  # the 3-shot prompt of example 0, window not applied
    by_chars = len(tok.encode(three + " warranty"))  # the longest choice in characters ...
    by_tokens = len(tok.encode(three + " 著作権"))  # ... is not the longest in tokens
    assert by_chars < by_tokens
    lm = LocalLM(tiny_model(tok.vocab_size, window=by_chars), tok)  # 3 shots pass a check by characters
    report, samples = run_icl(lm, task, [0, 1, 3], seed=0)
    assert [r["shots"] for r in report["results"]] == [0, 1, 3]
    for r in samples:
        for c in r["choices"]:
            assert len(tok.encode(r["prompt"] + " " + c)) <= by_chars
    first = next(r for r in samples if r["shots"] == 3 and r["index"] == 0)
    assert first["shots_used"] < 3  # exemplars were dropped to make room for the longest answer in tokens
    query_only = len(tok.encode(build_prompt(task, 0, 0, seed=0).text + " 著作権"))
    small = LocalLM(tiny_model(tok.vocab_size, window=query_only - 1), tok)
    with pytest.raises(LmkitError, match="lic#0: the query alone does not fit"):  # the one-line error stays
        build_prompt(task, 0, 3, seed=0, fits=fits_for(small, task))


def test_free_form_exact_match(model: torch.nn.Module, tok: Tokenizer) -> None:
    assert cut_answer(" 46\n12 + 3 =", "\n", " ") == "46"
    assert cut_answer(" river. And", "\n\n", " ", (" ", ".")) == "river"
    task = add2(6, seed=1)
    report, samples = run_icl(LocalLM(model, tok), task, [0, 1], seed=0)
    for r in samples:
        assert r["prediction"] == cut_answer(r["generation"], "\n", " ")
        assert r["correct"]["exact_match"] == (r["prediction"] == r["target"])
    assert report["metrics"] == ["exact_match"] and report["chance"] == 0.0
    # a model that answers right: exact match counts it
    right = Task("t", "generate", [Example("x", "yes")], PromptFormat())

    class Oracle:
        window, family, name = 100, "decoder", "oracle"

        def count(self, text: str) -> int:
            return len(text)

        def loglikelihood(self, requests: list[tuple[str, str]]) -> list[tuple[float, int]]:
            return []

        def generate(self, prompts: list[str], n: int, sep: str) -> list[str]:
            return [" yes"] * len(prompts)

    rep, _ = run_icl(Oracle(), right, [0])
    assert rep["results"][0]["exact_match"]["value"] == 1.0


# --------------------------------------------------------------------------- the command


def _run(ckpt: Path, out: Path, *extra: str) -> str:
    assert (
        main(
            [
                "icl",
                str(ckpt),
                "--task",
                "copy-pairs",
                "--n-examples",
                "10",
                "--shots",
                "0",
                "1",
                "3",
                "--out",
                str(out),
                *extra,
            ]
        )
        == 0
    )
    return (out / "samples.jsonl").read_text(encoding="utf-8")


def test_samples_byte_identical_across_runs_batch_sizes_and_limit(ckpt: Path, tmp_path: Path) -> None:
    a = _run(ckpt, tmp_path / "a", "--batch-size", "8")
    assert a == _run(ckpt, tmp_path / "b", "--batch-size", "8")
    assert a == _run(ckpt, tmp_path / "c", "--batch-size", "1")
    limited = _run(ckpt, tmp_path / "d", "--limit", "5")
    full = {(r["shots"], r["index"]): line for line in a.splitlines() for r in [json.loads(line)]}
    for line in limited.splitlines():
        r = json.loads(line)
        assert full[(r["shots"], r["index"])] == line
    rep = json.loads((tmp_path / "a" / "icl.json").read_text())
    assert [row["shots"] for row in rep["results"]] == [0, 1, 3] and rep["chance"] == 0.25
    assert (tmp_path / "a" / "accuracy_vs_shots.png").read_bytes()[:4] == b"\x89PNG"
    assert (
        main(["icl", str(ckpt), "--task", "copy-pairs", "--out", str(tmp_path / "a")]) == 2
    )  # not without --overwrite


def test_show_prompt_json_and_errors(ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["icl", str(ckpt), "--task", "copy-pairs", "--shots", "0", "2", "--show-prompt", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert "0-shot prompt of example 0" in out and "2-shot prompt" in out
    assert re.search(r"\nk[a-z] v[a-z] k[a-z] v[a-z] k[a-z]\n", out)  # two exemplars, then the queried key
    data = tmp_path / "qa.jsonl"
    data.write_text(
        "\n".join(
            json.dumps({"input": f"is {w} a word", "choices": ["yes", "no"], "label": 0})
            for w in ("river", "mill", "bread", "town")
        )
        + "\n"
    )
    (tmp_path / "qa.yaml").write_text('instruction: Say yes or no.\nseparator: "\\n"\n')
    assert main(["icl", str(ckpt), "--task", str(data), "--shots", "0", "1", "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["format"]["instruction"] == "Say yes or no." and rep["format"]["separator"] == "\n"
    assert load_task(data).kind == "multiple_choice"
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"input": "x", "target": "y"}\n{"input": "x", "choices": ["a"], "label": 0}\n')
    assert main(["icl", str(ckpt), "--task", str(bad)]) == 2
    assert "bad.jsonl:2" in capsys.readouterr().err
    # the out folder holds something lmkit did not write: refused before any work
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "mine.txt").write_text("x")
    assert main(["icl", str(ckpt), "--task", "copy-pairs", "--out", str(tmp_path / "taken"), "--overwrite"]) == 2
    enc_cfg = ModelConfig(
        family="encoder", vocab_size=ckpt_vocab(ckpt), d_model=32, n_layers=1, n_heads=4, max_seq_len=32
    )
    enc = save_checkpoint(tmp_path / "enc", build_model(enc_cfg), enc_cfg, Tokenizer.load(ckpt / "tokenizer.json"))
    assert main(["icl", str(enc), "--task", "copy-pairs"]) == 2
    err = capsys.readouterr().err
    assert "fill-mask" in err and "finetune-head" in err


def ckpt_vocab(ckpt: Path) -> int:
    return int(json.loads((ckpt / "config.json").read_text())["model"]["vocab_size"])


def test_builtin_tasks() -> None:
    t = copy_pairs(50, seed=2)
    assert t.kind == "multiple_choice" and all(
        len(e.choices or ()) == 4 and e.choices[e.label] == e.target for e in t.examples
    )
    groups = {e.group for e in t.examples}
    assert len(groups) == 5  # 50 queries, 10 per mapping, the mappings taken in turn
    assert [e.group for e in t.examples[:5]] == [f"mapping{g}" for g in range(5)]
    for g in groups:  # each group one fixed mapping of 6 keys; the choices are values of that mapping
        members = [e for e in t.examples if e.group == g]
        mapping = {e.input: e.target for e in members}
        assert all(mapping[e.input] == e.target for e in members) and len(mapping) <= 6
        assert all(len(set(e.choices or ())) == 4 for e in members)
        assert len({c for e in members for c in (e.choices or ())}) <= 6  # every choice a value of the mapping
    for k in (1, 4, 8):  # a query's exemplars are other queries of its own mapping
        for i in range(len(t.examples)):
            p = build_prompt(t, i, k, seed=3)
            assert i not in p.exemplars and len(p.exemplars) == k
            assert all(t.examples[j].group == t.examples[i].group for j in p.exemplars)
    assert all(int(e.target) == sum(int(x) for x in e.input.split(" + ")) for e in add2(30).examples)
    assert all(e.target == e.input[::-1] for e in reverse(30).examples)
    ns = next_sentence([TEXT], n=5)
    assert all(e.choices and len(e.choices) == 4 and e.target in TEXT for e in ns.examples)
    sents = [s.strip() + "." for s in TEXT.split(".") if s.strip()]
    assert all(sents[sents.index(e.input) + 1] == e.target for e in ns.examples)
    lw = last_word([TEXT], n=5)
    assert all((e.input + " " + e.target) in TEXT for e in lw.examples)
    assert copy_pairs(20, seed=2).examples == copy_pairs(20, seed=2).examples


def test_a_jsonl_group_limits_exemplars_to_its_members(tmp_path: Path) -> None:
    """A user's file can say which examples belong together (``"group"``), as copy-pairs does."""
    recs = [
        {"input": f"{lang} word {i}", "target": f"{lang}{i}", "group": lang} for lang in ("fr", "de") for i in range(6)
    ] + [{"input": "alone", "target": "x"}]
    data = tmp_path / "words.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in recs) + "\n")
    t = load_task(data)
    assert [e.group for e in t.examples] == ["fr"] * 6 + ["de"] * 6 + [None]
    for i in range(12):
        p = build_prompt(t, i, 4, seed=0)
        assert len(p.exemplars) == 4 and i not in p.exemplars
        assert {t.examples[j].group for j in p.exemplars} == {t.examples[i].group}
    assert len(build_prompt(t, 12, 4, seed=0).exemplars) == 4  # no group: drawn from the whole file
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"input": "x", "target": "y", "group": 3}\n')
    with pytest.raises(LmkitError, match=r"bad.jsonl:1: \"group\" must be a string"):
        load_task(bad)


# --------------------------------------------------------------------------- through lmkit serve


def test_server_scores_equal_in_process(model: torch.nn.Module, tok: Tokenizer) -> None:
    from lmkit.lab.icl.models import ServerLM
    from lmkit.serve.batcher import Engine
    from lmkit.serve.local import background_server

    task = copy_pairs(8, seed=4)
    gen = add2(4, seed=4)
    local = LocalLM(model, tok, 8)
    want, want_s = run_icl(local, task, [0, 2], seed=1)
    want_g, want_gs = run_icl(local, gen, [1], seed=1)
    eng = Engine(model, tok)
    try:
        with background_server(eng, "tiny") as url:
            remote = ServerLM(url, batch_size=8)
            assert remote.window == model.cfg.max_seq_len and remote.name == "tiny"
            got, got_s = run_icl(remote, task, [0, 2], seed=1)
            got_g, got_gs = run_icl(remote, gen, [1], seed=1)
    finally:
        eng.close()
    for a, b in zip(want_s, got_s):
        assert a["prompt"] == b["prompt"] and a["pred"] == b["pred"] and a["tokens"] == b["tokens"]
        assert all(math.isclose(x, y, abs_tol=1e-4) for x, y in zip(a["loglik"], b["loglik"]))
    assert [r["generation"] for r in want_gs] == [r["generation"] for r in got_gs]
    assert [row["acc"] for row in want["results"]] == [row["acc"] for row in got["results"]]


@pytest.mark.slow
def test_finetune_beside_prompting_on_an_encoder_decoder(
    tok: Tokenizer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = ModelConfig(family="encdec", vocab_size=tok.vocab_size, d_model=32, n_layers=1, n_heads=4, max_seq_len=64)
    torch.manual_seed(0)
    ed = save_checkpoint(tmp_path / "ed", build_model(cfg), cfg, tok)
    assert (
        main(
            ["icl", str(ed), "--task", "copy-pairs", "--n-examples", "15", "--shots", "0", "1", "--finetune", "--json"]
        )
        == 0
    )
    rep = json.loads(capsys.readouterr().out)
    assert [r["shots"] for r in rep["results"]] == [0, 1] and rep["family"] == "encdec"
    ft = rep["finetune"]
    assert ft["task"] == "seq2seq" and ft["train_examples"] + ft["val_examples"] == 15
    assert 0.0 <= ft["accuracy"] <= 1.0 and isinstance(ft["beats_prompting"], bool)
    dec = tmp_path / "dec"
    dcfg = ModelConfig(family="decoder", vocab_size=tok.vocab_size, d_model=32, n_layers=1, n_heads=4, max_seq_len=64)
    save_checkpoint(dec, build_model(dcfg), dcfg, tok)
    assert main(["icl", str(dec), "--task", "copy-pairs", "--finetune"]) == 2
    assert "encoder" in capsys.readouterr().err


# --------------------------------------------------------------------------- shots help a small model


def test_write_pretraining_text_is_seeded_and_keeps_a_users_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    assert main(["icl", "--task", "copy-pairs", "--write-pretraining-text", str(a), "--lines", "50"]) == 0
    assert main(["icl", "--task", "copy-pairs", "--write-pretraining-text", str(b), "--lines", "50"]) == 0
    assert a.read_text() == b.read_text()
    docs = a.read_text().strip().split("\n\n")
    assert len(docs) == 50
    for doc in docs:  # a fresh mapping, then repeats of its pairs: every key keeps its value
        words = doc.split(" ")
        pairs = list(zip(words[::2], words[1::2]))
        assert len(words) % 2 == 0 and all(k[0] == "k" and v[0] == "v" for k, v in pairs)
        assert all(dict(pairs)[k] == v for k, v in pairs) and len(pairs) > len(dict(pairs))
    mine = tmp_path / "notes.txt"
    mine.write_text("my own notes\n")
    assert main(["icl", "--task", "copy-pairs", "--write-pretraining-text", str(mine), "--overwrite"]) == 2
    assert "not a previous lmkit copy-pairs corpus" in capsys.readouterr().err and mine.read_text() == "my own notes\n"
    assert main(["icl", "--task", "copy-pairs", "--write-pretraining-text", str(a), "--lines", "5"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["icl", "--task", "copy-pairs", "--write-pretraining-text", str(a), "--lines", "5", "--overwrite"]) == 0
    assert len(a.read_text().strip().split("\n\n")) == 5
    assert main(["icl", "--task", "add2", "--write-pretraining-text", str(tmp_path / "c.txt")]) == 2
    assert "copy-pairs" in capsys.readouterr().err


@pytest.mark.slow
def test_shots_help_a_small_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The README's example, end to end through the commands: a tiny decoder pre-trained for 500
    steps on the copy-pairs world (about 40 s) is at chance zero-shot and copies from exemplars."""
    corpus = tmp_path / "copy-pairs.txt"
    assert main(["icl", "--task", "copy-pairs", "--write-pretraining-text", str(corpus)]) == 0
    assert (
        main(
            [
                "pretrain",
                "--config",
                "tiny-copy",
                "--data",
                str(corpus),
                "--out",
                str(tmp_path / "run"),
                "--quiet",
                "--json",
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert (
        main(
            [
                "icl",
                str(tmp_path / "run"),
                "--task",
                "copy-pairs",
                "--shots",
                "0",
                "1",
                "2",
                "4",
                "8",
                "--out",
                str(tmp_path / "icl"),
                "--json",
            ]
        )
        == 0
    )
    acc = {r["shots"]: r["acc"] for r in json.loads(capsys.readouterr().out)["results"]}
    assert acc[0]["value"] < 0.4  # nothing to copy from: about chance (0.25)
    assert acc[4]["ci_low"] > acc[0]["ci_high"], acc  # four exemplars help, outside the intervals
    assert acc[8]["ci_low"] > acc[4]["ci_high"], acc  # and eight help more
    assert (tmp_path / "icl" / "accuracy_vs_shots.png").stat().st_size > 0
