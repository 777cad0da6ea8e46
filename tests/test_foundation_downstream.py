"""Everything downstream of `lmkit import-hf` works on an imported foundation model (issue 27).

Tiny models of real classes (a grouped-query Llama-3.2 with a Llama-3-like byte-level tokenizer that
adds BOS, a TinyLlama with a SentencePiece byte-fallback tokenizer, GPT-2 with its own) are built
offline by transformers, saved with their own tokenizer files, imported through the CLI, and then go
through every command a user runs: generate, evaluate --data, quantize, plan, card, export, hub, icl,
viz; (slow) serve through the openai client, continued pre-training with kill and resume, adapt.
The builders are the ones tests/test_import_foundation.py and tests/test_foreign_tokenizer.py use.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import torch

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import transformers  # noqa: E402

from foundation_models import build_hf  # noqa: E402
from lmkit.cli import main  # noqa: E402
from lmkit.models import count_parameters  # noqa: E402
from lmkit.models.checkpoint import list_checkpoints, load_meta, load_model, load_tokenizer  # noqa: E402
from lmkit.objectives import window_length  # noqa: E402
from lmkit.train.metrics import read_metrics  # noqa: E402
from test_foreign_tokenizer import _make  # noqa: E402
from test_import_foundation import GPT2, LLAMA_32_1B, QWEN25_05B, TINYLLAMA_LINEAR  # noqa: E402

transformers.logging.set_verbosity_error()
pytestmark = pytest.mark.usefixtures("one_thread")

# each imported model: the shrunken real config.json and the kind of tokenizer the real model has
KINDS: dict[str, tuple[dict[str, Any], str]] = {
    "llama3-gqa": (LLAMA_32_1B, "llama3"),  # 4 query heads over 2 key/value heads, rope llama3, tied, adds BOS
    "tinyllama-sp": (TINYLLAMA_LINEAR, "sentencepiece"),  # 4 over 1, linear rope scaling, untied, ▁ and <0xNN>
    "gpt2": (GPT2, "gpt2"),  # learned positions, fused Conv1D, no BOS
    "qwen2.5-padded": (QWEN25_05B, "qwen"),  # q/k/v biases, 7 over 1 heads, more embedding rows than tokens
}
PADDED_ROWS = {"qwen2.5-padded": 24}  # Qwen2.5: 151,936 rows for 151,665 tokens
DECODING = ["gpt2", "llama3-gqa", "tinyllama-sp"]  # (a padded model's transformers generate may emit a padding row)
PROMPT = "The licensee shall"
LICENSE = "apache-2.0"
TOK_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json")


def _greedy(hf: torch.nn.Module, ids: list[int], n: int) -> list[int]:
    """``n`` greedy tokens by full forwards, never stopping (the tokens before any eos swap)."""
    out = list(ids)
    with torch.no_grad():
        for _ in range(n):
            out.append(int(hf(input_ids=torch.tensor([out])).logits[0, -1].argmax()))
    return out[len(ids) :]


def _swap_rows(hf: torch.nn.Module, a: int, b: int) -> None:
    """Relabel token ids ``a`` and ``b`` (embedding and head rows): the same model under other ids."""
    tables = [hf.get_input_embeddings().weight, hf.get_output_embeddings().weight]
    if tables[0].data_ptr() == tables[1].data_ptr():
        tables = tables[:1]
    with torch.no_grad():
        for w in tables:
            w[[a, b]] = w[[b, a]]


def _build(name: str, root: Path) -> dict[str, Any]:
    """A transformers folder with the model's own tokenizer files and card, imported with `lmkit import-hf`.

    The model is made to end its greedy continuation of PROMPT with the tokenizer's (last) eos id a few
    tokens in: the token it would have produced there and the eos id swap rows, so greedy decoding
    must stop on the model's own eos."""
    real, tok_kind = KINDS[name]
    tokdir = _make(tok_kind, root / "tok")
    auto = transformers.AutoTokenizer.from_pretrained(str(tokdir))
    gen_cfg = json.loads((tokdir / "generation_config.json").read_text())
    rows = len(auto) + PADDED_ROWS.get(name, 0)
    real = {**real, "vocab_size": rows, **json.loads((tokdir / "config.json").read_text())}
    hf = build_hf(real)
    eos = gen_cfg["eos_token_id"]
    eos = eos[-1] if isinstance(eos, list) else eos  # Llama-3's second eos (<|eot_id|>): the list is honoured
    prompt = auto(PROMPT)["input_ids"]
    cont = _greedy(hf, prompt, 8)
    k = next(i for i in range(2, 8) if cont[i] not in prompt + cont[:i] and eos not in prompt + cont[: i + 1])
    _swap_rows(hf, cont[k], eos)
    folder = root / "hf"
    hf.save_pretrained(str(folder))
    for f in TOK_FILES:
        if (tokdir / f).is_file():  # transformers 5 writes no special_tokens_map.json
            shutil.copy(tokdir / f, folder / f)
    (folder / "README.md").write_text(f"---\nlicense: {LICENSE}\n---\n# tiny {name}\n", encoding="utf-8")
    assert main(["import-hf", str(folder), "--out", str(root / "ckpt"), "--json"]) == 0
    return {
        "name": name,
        "real": real,
        "root": root,
        "hf_dir": folder,
        "ckpt": root / "ckpt",
        "auto": auto,
        "hf": transformers.AutoModelForCausalLM.from_pretrained(str(folder), attn_implementation="eager").eval(),
        "eos": eos,
        "stop_after": k + 1,
    }


@pytest.fixture(scope="module", params=DECODING)
def foundation(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return _build(request.param, tmp_path_factory.mktemp(request.param.replace("-", "_")))


def _json(capsys: pytest.CaptureFixture[str], argv: list[str]) -> Any:
    capsys.readouterr()
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def tol(x: torch.Tensor) -> float:
    return 1e-5 * max(1.0, float(x.abs().max()))


def _write_texts(path: Path, seed: int, n: int) -> Path:
    """``n`` documents of a small legal grammar (two lines each; "café" brings a two-byte character)."""
    rng = random.Random(seed)
    subj = ["the licensee", "the licensor", "the tenant", "the landlord"]
    verb = ["shall keep", "shall pay", "may assign", "must return"]
    obj = ["the records", "the rent", "the notice", "the deposit", "the café keys"]
    docs = []
    for _ in range(n):
        sents = [f"{rng.choice(subj).capitalize()} {rng.choice(verb)} {rng.choice(obj)}." for _ in range(5)]
        docs.append(" ".join(sents[:3]) + "\n" + " ".join(sents[3:]))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs), encoding="utf-8")
    return path


# --------------------------------------------------------------------------- generate


def test_generate_greedy_equals_transformers_and_stops_on_the_models_eos(
    foundation: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    ck, hf, auto = str(foundation["ckpt"]), foundation["hf"], foundation["auto"]
    prompt = auto(PROMPT)["input_ids"]  # BOS first where the model's post-processor adds it
    got = _json(capsys, ["generate", ck, PROMPT, "--max-new-tokens", "12", "--json"])
    with torch.no_grad():  # transformers stops on generation_config.json's eos ids, as lmkit must
        want = hf.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt)), max_new_tokens=12)
    assert got["prompt_tokens"] == len(prompt)
    assert got["tokens"] == want[0, len(prompt) :].tolist()
    assert got["stop_reason"] == "eos" and len(got["tokens"]) == foundation["stop_after"]
    assert got["tokens"][-1] == foundation["eos"]
    # seeded sampling: the same seed, the same tokens; the draws are transformers' own
    argv = ["generate", ck, PROMPT, "--max-new-tokens", "10", "--sample", "--seed", "7", "--json"]
    a, b = _json(capsys, argv), _json(capsys, argv)
    assert a["tokens"] == b["tokens"] and a["settings"]["seed"] == 7
    torch.manual_seed(7)
    with torch.no_grad():
        sampled = hf.generate(
            torch.tensor([prompt]),
            attention_mask=torch.ones(1, len(prompt)),
            max_new_tokens=10,
            do_sample=True,
            top_k=0,
            top_p=1.0,
            temperature=1.0,
        )
    assert a["tokens"] == sampled[0, len(prompt) :].tolist()


# --------------------------------------------------------------------------- evaluate and quantize


def _placed_bytes(auto: Any, ids: list[int], adds_bos: bool) -> list[int]:
    """Bytes of text each token of a packed stream stands for, read from transformers' tokenizer: a
    special token none; byte-level BPE one byte per character of the token; SentencePiece ``<0xNN>``
    one byte, ``▁`` a space, except the ``▁`` it puts before the first word of a text."""
    byte_level = json.loads(auto.backend_tokenizer.to_str())["decoder"]["type"] == "ByteLevel"
    specials = set(auto.all_special_ids)
    out, first = [], True
    for i in ids:
        piece = auto.convert_ids_to_tokens(i)
        if i in specials:
            out.append(0)
            first = i == auto.bos_token_id if adds_bos else True
            continue
        if byte_level:
            n = len(piece)  # GPT-2's alphabet: one printable character per byte
        elif piece.startswith("<0x") and piece.endswith(">") and len(piece) == 6:
            n = 1
        else:
            n = len(piece.replace("▁", " ").encode("utf-8")) - (1 if first and piece.startswith("▁") else 0)
        out.append(n)
        first = False
    return out


@pytest.mark.parametrize("foundation", [*DECODING, "qwen2.5-padded"], indirect=True)
def test_evaluate_data_gives_hand_computed_bits_per_byte_and_int8_stays_close(
    foundation: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ck, hf, auto = foundation["ckpt"], foundation["hf"], foundation["auto"]
    files = [_write_texts(tmp_path / "held" / f"part{i}.jsonl", 10 + i, 6) for i in range(2)]
    tok = load_tokenizer(ck)
    argv = ["--data", *map(str, files), "--batches", "2", "--batch-size", "2", "--json"]
    got = _json(capsys, ["evaluate", str(ck), *argv])
    # by hand: the user's text packed with transformers' tokenizer, scored by transformers' model
    stream: list[int] = []
    for f in files:
        for line in f.read_text(encoding="utf-8").splitlines():
            stream += auto(json.loads(line)["text"])["input_ids"] + [tok.separator_id]
    length = window_length(load_model(ck).cfg)
    windows = torch.tensor(stream[: 4 * length]).view(4, length)
    with torch.no_grad():
        logits = hf(input_ids=windows[:, :-1]).logits.double()
    nats = float(torch.nn.functional.cross_entropy(logits.flatten(0, 1), windows[:, 1:].flatten(), reduction="sum"))
    placed = torch.tensor(_placed_bytes(auto, stream[: 4 * length], tok.adds_bos)).view(4, length)
    want = nats / math.log(2) / float(placed[:, 1:].sum())
    assert got["bits_per_byte"] == pytest.approx(want, rel=1e-5)
    # int8: a quarter of the memory, the same text scored within a few percent
    qargs = ["--data", *map(str, files), "--eval-batches", "2", "--batch-size", "2", "--json"]
    q = _json(capsys, ["quantize", str(ck), "--to", "int8", "--out", str(tmp_path / "int8"), *qargs])
    assert q["memory_bytes"]["after"] < 0.4 * q["memory_bytes"]["before"]
    got8 = _json(capsys, ["evaluate", str(tmp_path / "int8"), *argv])
    assert got8["format"] == "int8" and got8["bits_per_byte"] == pytest.approx(want, rel=0.03)
    assert got8["bits_per_byte"] != got["bits_per_byte"]


# --------------------------------------------------------------------------- plan, card


@pytest.mark.parametrize("foundation", [*DECODING, "qwen2.5-padded"], indirect=True)
def test_plan_config_plans_the_checkpoints_real_architecture(
    foundation: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    ck, hf = foundation["ckpt"], foundation["hf"]
    model = load_model(ck)
    plan = _json(capsys, ["plan", "--config", str(ck), "--json"])
    assert plan["params_breakdown"]["total"] == count_parameters(model) == sum(p.numel() for p in hf.parameters())
    ctx = plan["memory"]["inference_settings"]["context"]
    cache = model.new_cache(1, ctx)  # grouped-query attention caches the key/value heads only
    assert plan["memory"]["inference_breakdown"]["kv_cache"] == sum(t.numel() * 4 for t in cache.k + cache.v)


def test_card_names_the_base_model_its_architecture_and_license(
    foundation: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    assert main(["card", str(foundation["ckpt"]), "--out", "-"]) == 0
    card = capsys.readouterr().out
    assert f"license: {LICENSE}" in card and "lmkit recorded no evaluation" in card
    assert foundation["real"]["architectures"][0] in card and str(foundation["hf_dir"]) in card
    rows = [line.strip("| ").split(" | ") for line in card.splitlines() if line.startswith("| ")]
    table = {r[0]: r[1] for r in rows if len(r) == 2}
    if foundation["name"] == "gpt2":  # the card describes the imported layout, not lmkit's default one
        assert table["feed-forward"].startswith("GELU (tanh") and table["normalisation"].startswith("LayerNorm")
        assert table["positions"] == "learned absolute" and table["vocabulary"].endswith("(byte-level BPE)")
    else:
        heads, kv = foundation["real"]["num_attention_heads"], foundation["real"]["num_key_value_heads"]
        assert table["attention heads"].startswith(f"{heads} query heads sharing {kv} key/value head")
        assert table["feed-forward"].startswith("SwiGLU") and table["normalisation"].startswith("RMSNorm")
        assert "scaling" in table["positions"]  # llama3 / linear rope scaling
    if foundation["name"] == "tinyllama-sp":
        assert table["vocabulary"].endswith("(SentencePiece-style BPE with byte fallback)")


# --------------------------------------------------------------------------- export, hub


def test_export_back_is_the_same_class_with_the_same_logits_and_tokenizer(
    foundation: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rep = _json(capsys, ["export", str(foundation["ckpt"]), "--format", "hf", "--out", str(tmp_path / "hf"), "--json"])
    real, hf, auto = foundation["real"], foundation["hf"], foundation["auto"]
    assert rep["architecture"] == real["architectures"][0] and rep["parity"]["ok"]
    back = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "hf"), attn_implementation="eager").eval()
    assert type(back) is type(hf)
    assert getattr(back.config, "num_key_value_heads", None) == real.get("num_key_value_heads")
    x = torch.randint(0, real["vocab_size"], (2, 20), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        want, got = hf(input_ids=x).logits, back(input_ids=x).logits
    assert float((want - got).abs().max()) <= tol(want)
    back_tok = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "hf"))
    for text in (PROMPT, "café\nnaïve  spaces"):
        assert back_tok(text)["input_ids"] == auto(text)["input_ids"]
    assert back_tok.eos_token == auto.eos_token and back_tok.bos_token == auto.bos_token


@pytest.mark.parametrize("foundation", ["llama3-gqa"], indirect=True)
def test_hub_push_and_pull_give_back_the_same_model_and_tokenizer(
    foundation: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hub, ck = str(tmp_path / "hub"), foundation["ckpt"]
    assert main(["hub", "--hub", hub, "push", str(ck), "me/imported", "-m", "imported"]) == 0
    assert main(["hub", "--hub", hub, "pull", "me/imported@1", "--out", str(tmp_path / "got")]) == 0
    capsys.readouterr()
    a, b = load_model(ck), load_model(tmp_path / "got")
    assert a.state_dict().keys() == b.state_dict().keys()
    assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())
    assert load_tokenizer(tmp_path / "got").roles == load_tokenizer(ck).roles
    assert load_meta(tmp_path / "got")["base_model"]["license"] == LICENSE
    one = _json(capsys, ["generate", str(tmp_path / "got"), PROMPT, "--json"])
    assert one["stop_reason"] == "eos" and one["tokens"][-1] == foundation["eos"]


# --------------------------------------------------------------------------- icl, viz


def test_icl_runs_a_task_the_test_writes_with_every_prompt_fitting(
    foundation: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [
        {"input": f"{w}?", "choices": ["tenant", "landlord"], "label": i % 2}
        for i, w in enumerate(["rent", "keys", "lease", "roof"] * 2)
    ]
    task = tmp_path / "who.jsonl"
    task.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    rep = _json(capsys, ["icl", str(foundation["ckpt"]), "--task", str(task), "--shots", "0", "2", "--json"])
    assert [r["shots"] for r in rep["results"]] == [0, 2]
    for r in rep["results"]:
        assert r["acc"]["n"] == len(rows) and r["shots_used_min"] == r["shots"] and r["examples_with_fewer_shots"] == 0
        assert 0.0 <= r["acc"]["value"] <= 1.0


@pytest.mark.parametrize("foundation", ["llama3-gqa", "gpt2"], indirect=True)
def test_viz_attention_draws_the_models_own_attention(
    foundation: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    png = tmp_path / "att.png"
    rep = _json(capsys, ["viz", "attention", str(foundation["ckpt"]), PROMPT, "--out", str(png), "--json", "--weights"])
    auto, hf = foundation["auto"], foundation["hf"]
    ids = auto(PROMPT)["input_ids"]  # what the model reads: BOS first only where its tokenizer adds one (not GPT-2's)
    assert rep["tokens"] == [load_tokenizer(foundation["ckpt"]).token_str(i) for i in ids] and png.stat().st_size > 1000
    adds_bos = foundation["name"] == "llama3-gqa"
    assert (ids[0] == auto.bos_token_id) == adds_bos and load_tokenizer(foundation["ckpt"]).adds_bos == adds_bos
    with torch.no_grad():
        theirs = torch.stack([w[0] for w in hf(input_ids=torch.tensor([ids]), output_attentions=True).attentions])
    ours = torch.tensor(rep["weights"])  # (L, H, T, T)
    assert ours.shape == theirs.shape and float((ours - theirs).abs().max()) <= 1e-5


# --------------------------------------------------------------------------- served


@pytest.mark.parametrize("foundation", ["tinyllama-sp"], indirect=True)
def test_served_echo_of_a_sentencepiece_model_indexes_the_text(foundation: dict[str, Any]) -> None:
    """Echo log-probabilities equal the model's own, and each token's text_offset points at its text: the
    ``▁`` SentencePiece puts before the first word is no character of the prompt."""
    import httpx

    from lmkit.serve.batcher import Engine
    from lmkit.serve.local import background_server

    model, tok = load_model(foundation["ckpt"]).eval(), load_tokenizer(foundation["ckpt"])
    text = "The tenant shall pay.\nCafé keys"
    ids = tok.prompt_ids(text)
    assert ids == foundation["auto"](text)["input_ids"]
    with torch.no_grad():
        logp = model(torch.tensor([ids]))[0].log_softmax(-1)  # (T, V)
    eng = Engine(model, tok)
    try:
        with background_server(eng, "sp") as base:
            body = {"model": "sp", "prompt": text, "max_tokens": 0, "echo": True, "logprobs": 0}
            lp = httpx.post(base + "/v1/completions", json=body).json()["choices"][0]["logprobs"]
    finally:
        eng.close()
    assert lp["tokens"][0] == "<s>" and len(lp["tokens"]) == len(ids)
    assert max(abs(lp["token_logprobs"][t] - float(logp[t - 1, ids[t]])) for t in range(1, len(ids))) < 1e-5
    for i, (piece, at) in enumerate(zip(lp["tokens"][1:], lp["text_offset"][1:])):
        assert text[at:].startswith(piece.removeprefix(" ") if i == 0 else piece), (i, piece, at)


# --------------------------------------------------------------------------- slow: served through `lmkit serve`


@pytest.mark.slow
@pytest.mark.parametrize("foundation", ["llama3-gqa"], indirect=True)
def test_served_echo_logprobs_and_concurrent_seeded_requests(foundation: dict[str, Any]) -> None:
    import httpx
    import openai

    from lmkit.serve.local import free_port

    ck = foundation["ckpt"]
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "lmkit.cli", "serve", str(ck), "--port", str(port), "--threads", "1"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            try:
                if httpx.get(base + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        client = openai.OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0)
        model, tok = load_model(ck).eval(), load_tokenizer(ck)
        text = "The tenant shall pay the rent.\nCafé keys"
        ids = tok.prompt_ids(text)
        assert ids == foundation["auto"](text)["input_ids"]
        with torch.no_grad():
            logp = model(torch.tensor([ids]))[0].log_softmax(-1)  # (T, V)
        r = client.completions.create(model="ckpt", prompt=text, max_tokens=0, echo=True, logprobs=0)
        lp = r.choices[0].logprobs
        assert lp is not None and lp.token_logprobs is not None and lp.tokens is not None
        assert lp.tokens[0] == "<|begin_of_text|>" and lp.token_logprobs[0] is None and len(lp.tokens) == len(ids)
        assert max(abs(lp.token_logprobs[t] - float(logp[t - 1, ids[t]])) for t in range(1, len(ids))) < 1e-5

        def ask(prompt: str, seed: int) -> str:
            out = client.completions.create(
                model="ckpt", prompt=prompt, max_tokens=8 + seed % 5, temperature=1.0, seed=seed
            )
            return out.choices[0].text

        asks = [(f"The {w} shall", 100 + i) for i, w in enumerate(["tenant", "landlord", "licensee", "licensor"] * 2)]
        alone = [ask(p, s) for p, s in asks]
        with ThreadPoolExecutor(8) as pool:
            together = list(pool.map(lambda a: ask(*a), asks))
        assert together == alone and len(set(alone)) > 1
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


# --------------------------------------------------------------------------- slow: continued pre-training, adapt


@pytest.mark.slow
@pytest.mark.parametrize("foundation", ["llama3-gqa", "tinyllama-sp"], indirect=True)
def test_continued_pretraining_lowers_held_out_loss_resumes_exactly_and_exports_back(
    foundation: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ck = foundation["ckpt"]
    text = _write_texts(tmp_path / "text" / "legal.jsonl", 0, 150).parent
    held = _write_texts(tmp_path / "held" / "legal.jsonl", 99, 12)
    common = [
        "pretrain",
        "--init",
        str(ck),
        "--data",
        str(text),
        "--quiet",
        "--max-steps",
        "30",
        "--train.batch_size",
        "4",
        "--train.lr",
        "3e-3",
        "--train.warmup_steps",
        "3",
        "--train.eval_every",
        "0",
        "--train.ckpt_every",
        "10",
        "--train.log_every",
        "1",
        "--train.keep_checkpoints",
        "5",
        "--train.tensorboard",
        "false",
        "--data.val_fraction",
        "0.1",  # a held-out split of several windows, whatever the tokenizer trained by the test compresses to
    ]
    assert main([*common, "--out", str(tmp_path / "ref")]) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, "-m", "lmkit.cli", *common, "--out", str(run)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 300
    while time.time() < deadline and not list_checkpoints(run) and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = list_checkpoints(run)
    assert done and done[-1].name != "ckpt-0000030", "the run finished before it could be killed"
    assert main([*common, "--out", str(run), "--resume"]) == 0
    a = [(r["step"], r["loss"]) for r in read_metrics(tmp_path / "ref") if "loss" in r]
    b = [(r["step"], r["loss"]) for r in read_metrics(run) if "loss" in r]
    assert [s for s, _ in a] == list(range(1, 31)) == [s for s, _ in b] and a == b
    final = list_checkpoints(run)[-1]
    ref_state, run_state = load_model(tmp_path / "ref").state_dict(), load_model(final).state_dict()
    assert all(torch.equal(ref_state[k], run_state[k]) for k in ref_state)
    # the held-out loss on text of the same kind, never trained on, falls
    ev = ["--data", str(held), "--batches", "2", "--batch-size", "2", "--json"]
    before, after = _json(capsys, ["evaluate", str(ck), *ev]), _json(capsys, ["evaluate", str(final), *ev])
    assert after["loss"] < 0.8 * before["loss"], (before, after)
    meta = load_meta(final)
    assert meta["base_model"]["license"] == LICENSE and load_tokenizer(final).sha256 == load_tokenizer(ck).sha256
    capsys.readouterr()
    assert main(["card", str(final), "--out", "-"]) == 0
    card = capsys.readouterr().out  # the derived model names its foundation model and keeps its license
    assert (
        f"license: {LICENSE}" in card
        and f"continued pre-training of the foundation model `{foundation['hf_dir']}`" in card
    )
    # back to the foundation model's own class, loaded by transformers with the same logits as lmkit's
    rep = _json(capsys, ["export", str(final), "--format", "hf", "--out", str(tmp_path / "hf"), "--json"])
    real = foundation["real"]
    assert rep["architecture"] == real["architectures"][0] and rep["parity"]["ok"]
    back = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "hf"), attn_implementation="eager").eval()
    assert type(back) is type(foundation["hf"]) and back.config.num_key_value_heads == real["num_key_value_heads"]
    x = torch.randint(0, foundation["real"]["vocab_size"], (2, 24), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        want, got = load_model(final).eval()(x), back(input_ids=x).logits
    assert float((want - got).abs().max()) <= tol(want)


ADAPT_CONFIG = """model:
  family: decoder
  vocab_size: 512
  d_model: 32
  n_layers: 2
  n_heads: 2
  max_seq_len: 32
train:
  batch_size: 4
  lr: 3.0e-3
  warmup_steps: 2
  max_steps: 8
  eval_every: 0
  eval_batches: 2
  log_every: 10
  ckpt_every: 0
  tensorboard: false
  device: cpu
data:
  val_fraction: 0.05
  workers: 1
"""


@pytest.mark.slow
@pytest.mark.parametrize("foundation", ["llama3-gqa", "tinyllama-sp"], indirect=True)
def test_adapt_continue_from_an_imported_model(
    foundation: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    domain = _write_texts(tmp_path / "domain" / "legal.jsonl", 1, 120).parent
    rng = random.Random(2)
    general = tmp_path / "general"
    general.mkdir()
    words = ["the cat", "a dog", "my sister", "sees", "likes", "the bird", "a ball", "the river"]
    docs = [" ".join(rng.choice(words) for _ in range(30)) + "." for _ in range(120)]
    (general / "web.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in docs), encoding="utf-8")
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(ADAPT_CONFIG, encoding="utf-8")
    argv = ["adapt", "--domain", str(domain), "--general", str(general), "--config", str(cfg), "--mixes"]
    rep = _json(capsys, [*argv, "--continue-from", str(foundation["ckpt"]), "--out", str(tmp_path / "a"), "--json"])
    arms = {a["name"]: a for a in rep["arms"]}
    assert list(arms) == ["base", "dapt"] and arms["dapt"]["tokenizer"] == "checkpoint" and arms["dapt"]["steps"] == 8
    assert arms["dapt"]["domain"]["bits_per_byte"] < arms["base"]["domain"]["bits_per_byte"]
