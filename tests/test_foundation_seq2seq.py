"""Everything downstream of `lmkit import-hf` works on an imported encoder or encoder-decoder (issue 28).

Tiny models of real classes are built offline by transformers from shrunken real config.json files and
saved WITH THEIR OWN TOKENIZERS (a BERT with WordPiece, a RoBERTa with byte-level BPE and ``<mask>``, a
Flan-T5 with a unigram tokenizer and 100 sentinels, a BART with byte-level BPE), imported through the CLI,
and then go through the commands a user runs, in-process through ``lmkit.cli.main``: fill-mask (top-5 equal
to transformers' pipeline), finetune-head (a separable toy task the test writes), generate (greedy equal to
transformers' ``generate``, stopping at the model's eos; served, the same), export back to the same class, and continued
pre-training with each model's own objective (T5 span corruption with its own sentinels, BART infilling)
lowering the held-out loss that ``evaluate --data`` reports.
The builders are tests/foundation_models.py's (shared with tests/test_foundation_encoders.py).
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import pytest
import torch

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import transformers  # noqa: E402

from foundation_models import AUTO, KINDS, LICENSE, PROMPT, Imports, run_json, tol  # noqa: E402
from foundation_models import write_texts as _write_texts  # noqa: E402
from lmkit.cli import main  # noqa: E402
from lmkit.models.checkpoint import load_meta, load_model, load_tokenizer  # noqa: E402
from lmkit.train.finetune.heads import load_finetuned  # noqa: E402
from test_finetune import write_jsonl  # noqa: E402

transformers.logging.set_verbosity_error()
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def imports(foundation_imports: Imports) -> Imports:
    return foundation_imports


_json = run_json


# --------------------------------------------------------------------------- fill-mask, finetune-head

FILLER = ["the", "line", "one", "two", "third", "numbers", "and", "with", "spaces", "after", "term", "that", "keep"]
CUES = {"fast": ["quick", "jumps", "fox"], "slow": ["lazy", "dog", "seven"]}  # whole words of the WordPiece vocab


def _cue_examples(n: int, seed: int) -> list[dict[str, str]]:
    """Sentences of filler words with one cue word that decides the label: separable by one token."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        label = "fast" if i % 2 else "slow"
        words = [rng.choice(FILLER) for _ in range(rng.randint(4, 9))]
        words.insert(rng.randint(0, len(words)), rng.choice(CUES[label]))
        out.append({"text": " ".join(words), "label": label})
    return out


def test_fill_mask_on_an_imported_roberta_equals_transformers_pipeline(
    imports: dict[str, dict[str, Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    rob = imports["roberta"]
    tok = load_tokenizer(rob["ckpt"])
    assert tok.mask_text == "<mask>" and tok.mask_id == len(rob["auto"]) - 1
    text = "The quick brown <mask> jumps over the lazy dog."
    theirs = transformers.pipeline("fill-mask", model=rob["hf"], tokenizer=rob["auto"], top_k=5)(text)
    got = _json(capsys, ["fill-mask", str(rob["ckpt"]), text, "--json"])  # the model's own mask, found alone
    assert len(got["masks"]) == 1
    special = sorted(tok.special_ids)
    assert not any(d["token"] in special for d in theirs)  # (lmkit never offers a special token)
    ours = got["masks"][0]["candidates"]
    assert [c["token_id"] for c in ours] == [d["token"] for d in theirs]
    with torch.no_grad():  # the probabilities too, once the pipeline's are renormalised over ordinary tokens
        enc = rob["auto"](text, return_tensors="pt")
        logits = rob["hf"](**enc).logits[0, enc["input_ids"][0].tolist().index(tok.mask_id)]
    ordinary = 1 - float(logits.softmax(-1)[special].sum())
    assert [c["probability"] for c in ours] == pytest.approx([d["score"] / ordinary for d in theirs], rel=1e-4)


@pytest.mark.parametrize("name,text", [("bert", "the quick brown [MASK] jumps."), ("roberta", "The quick <mask> fox.")])
def test_served_fill_mask_on_an_import_equals_the_command(
    imports: dict[str, dict[str, Any]], name: str, text: str, capsys: pytest.CaptureFixture[str]
) -> None:
    import httpx

    from lmkit.serve.batcher import Engine
    from lmkit.serve.local import background_server

    ck = str(imports[name]["ckpt"])
    got = _json(capsys, ["fill-mask", ck, text, "--top-k", "5", "--json"])
    eng = Engine(load_model(ck).eval(), load_tokenizer(ck))
    try:
        with background_server(eng, name) as base:  # the model's own mask token ([MASK] or <mask>), over HTTP
            served = httpx.post(base + "/v1/fill-mask", json={"text": text, "top_k": 5}).json()
    finally:
        eng.close()
    ours = [[c["token_id"] for c in m["candidates"]] for m in got["masks"]]
    assert len(ours) == 1 and [[c["token_id"] for c in m["candidates"]] for m in served["masks"]] == ours
    theirs = [c["probability"] for c in served["masks"][0]["candidates"]]
    assert theirs == pytest.approx([c["probability"] for c in got["masks"][0]["candidates"]], rel=1e-5)


def test_finetune_head_on_an_imported_bert_learns_a_separable_task(
    imports: dict[str, dict[str, Any]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bert = imports["bert"]
    cues = [w for ws in CUES.values() for w in ws]
    assert [bert["auto"].tokenize(w) for w in cues] == [[w] for w in cues]
    data = write_jsonl(tmp_path / "train.jsonl", _cue_examples(160, seed=1))
    held_rows = _cue_examples(40, seed=2)
    held = write_jsonl(tmp_path / "held.jsonl", held_rows)
    argv = ["finetune-head", str(bert["ckpt"]), "--task", "sequence-classification", "--data", str(data)]
    argv += ["--eval", str(held), "--epochs", "8", "--lr", "5e-3", "--head-lr", "2e-2", "--out", str(tmp_path / "ft")]
    rep = _json(capsys, [*argv, "--json"])
    assert rep["train_examples"] == 160 and rep["val_examples"] == 40 and rep["accuracy"] >= 0.9, rep
    ft = load_finetuned(tmp_path / "ft")
    pred = ft.predict([r["text"] for r in held_rows])
    assert sum(p == r["label"] for p, r in zip(pred, held_rows)) / 40 == pytest.approx(rep["accuracy"])
    assert load_tokenizer(tmp_path / "ft").sha256 == load_tokenizer(bert["ckpt"]).sha256  # its own WordPiece


# --------------------------------------------------------------------------- generate


@pytest.mark.parametrize("name", ["flan-t5", "bart"])
def test_generate_greedy_equals_transformers_generate_on_the_same_folder(
    imports: dict[str, dict[str, Any]], name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    imp = imports[name]
    hf, auto, real = imp["hf"], imp["auto"], imp["real"]
    got = _json(capsys, ["generate", str(imp["ckpt"]), PROMPT, "--max-new-tokens", "12", "--json"])
    prompt = auto(PROMPT)["input_ids"]  # T5: text </s>; BART: <s> text </s>
    with torch.no_grad():  # plain greedy from the config's decoder start, stopping at the model's eos
        seq = hf.generate(
            torch.tensor([prompt]),
            max_new_tokens=12,
            do_sample=False,
            num_beams=1,
            no_repeat_ngram_size=0,
            forced_bos_token_id=None,
            forced_eos_token_id=None,
            eos_token_id=real["eos_token_id"],
            decoder_start_token_id=real["decoder_start_token_id"],
        )[0].tolist()
    assert seq[0] == real["decoder_start_token_id"]
    assert got["prompt_tokens"] == len(prompt)
    assert got["tokens"] == seq[1:], (got, seq)
    if imp["stop_after"] is not None:  # BART was made to end its answer with eos: generation stops on it
        assert got["stop_reason"] == "eos" and len(got["tokens"]) == imp["stop_after"]
        assert got["tokens"][-1] == real["eos_token_id"]
    else:
        assert got["stop_reason"] == ("eos" if seq[-1] == real["eos_token_id"] else "max_new_tokens")


# --------------------------------------------------------------------------- export


@pytest.mark.parametrize("name", list(KINDS))
def test_export_back_is_the_same_class_with_the_same_logits_and_tokenizer(
    imports: dict[str, dict[str, Any]], name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    imp = imports[name]
    real, hf, auto = imp["real"], imp["hf"], imp["auto"]
    out = tmp_path / "hf"
    rep = _json(capsys, ["export", str(imp["ckpt"]), "--format", "hf", "--out", str(out), "--json"])
    assert rep["architecture"] == real["architectures"][0] and rep["parity"]["ok"]
    back = AUTO[real["architectures"][0]].from_pretrained(str(out), attn_implementation="eager").eval()
    assert type(back) is type(hf)
    x = torch.randint(3, len(auto), (2, 16), generator=torch.Generator().manual_seed(3))
    y = torch.randint(3, len(auto), (2, 6), generator=torch.Generator().manual_seed(4))
    kw = {"decoder_input_ids": y} if "decoder_start_token_id" in real else {}
    with torch.no_grad():
        want, got = hf(input_ids=x, **kw).logits, back(input_ids=x, **kw).logits
    assert float((want - got).abs().max()) <= tol(want)
    back_tok = transformers.AutoTokenizer.from_pretrained(str(out))
    for text in (PROMPT, "café naïve  spaces"):
        assert back_tok(text)["input_ids"] == auto(text)["input_ids"]
    assert (back_tok.mask_token, back_tok.eos_token, back_tok.pad_token) == (
        auto.mask_token,
        auto.eos_token,
        auto.pad_token,
    )


# --------------------------------------------------------------------------- continued pre-training, evaluate


@pytest.mark.parametrize(
    "name,objective",
    [pytest.param("flan-t5", "span", marks=pytest.mark.slow), ("bart", "infill")],  # T5's 316-token windows: ~16 s
)
def test_continued_pretraining_with_the_models_own_objective_lowers_held_out_loss(
    imports: dict[str, dict[str, Any]], name: str, objective: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    imp = imports[name]
    ck = imp["ckpt"]
    assert load_model(ck).cfg.objective == objective
    text = _write_texts(tmp_path / "text" / "docs.jsonl", 0, 400).parent
    held = _write_texts(tmp_path / "held" / "docs.jsonl", 99, 60)
    argv = ["pretrain", "--init", str(ck), "--data", str(text), "--quiet", "--max-steps", "30"]
    argv += ["--train.batch_size", "4", "--train.lr", "3e-3", "--train.warmup_steps", "2", "--train.eval_every", "0"]
    argv += ["--train.ckpt_every", "0", "--train.log_every", "1", "--train.tensorboard", "false"]
    argv += ["--data.val_fraction", "0.1"]
    assert main([*argv, "--out", str(tmp_path / "run")]) == 0
    ev = ["--data", str(held), "--batches", "2", "--batch-size", "2", "--json"]
    before = _json(capsys, ["evaluate", str(ck), *ev])
    again = _json(capsys, ["evaluate", str(ck), *ev])
    after = _json(capsys, ["evaluate", str(tmp_path / "run"), *ev])
    assert before["loss"] == again["loss"]  # the same held-out batches each time
    assert after["loss"] < 0.8 * before["loss"], (before, after)
    final = tmp_path / "run"
    assert load_tokenizer(final).sha256 == load_tokenizer(ck).sha256  # its own tokenizer, sentinels and all
    assert load_meta(final)["base_model"]["license"] == LICENSE


def test_served_bart_reads_the_prompt_as_transformers_and_stops_on_its_eos(
    imports: dict[str, dict[str, Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    import httpx

    from lmkit.serve.batcher import Engine
    from lmkit.serve.local import background_server

    imp = imports["bart"]
    ck = str(imp["ckpt"])
    got = _json(capsys, ["generate", ck, PROMPT, "--max-new-tokens", "12", "--json"])
    eng = Engine(load_model(ck).eval(), load_tokenizer(ck))
    try:
        with background_server(eng, "bart") as base:
            body = {"model": "bart", "prompt": PROMPT, "max_tokens": 12, "temperature": 0}
            r = httpx.post(base + "/v1/completions", json=body).json()
    finally:
        eng.close()
    assert r["usage"]["prompt_tokens"] == len(imp["auto"](PROMPT)["input_ids"])  # <s> text </s>, as BART reads it
    assert r["usage"]["completion_tokens"] == imp["stop_after"] and r["choices"][0]["finish_reason"] == "stop"
    assert r["choices"][0]["text"] == got["completion"]
