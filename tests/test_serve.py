"""`lmkit serve`: the OpenAI completions API over a live server on loopback, checked with the
official `openai` client; batching that does not change a request's tokens; streaming that never
leaks a stop string or half a character; scoring equal to the model's own log-probabilities; every
client mistake answered with OpenAI's error shape."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lmkit.config import ModelConfig
from lmkit.models import build_model
from lmkit.serve.batcher import Engine, wait_idle
from lmkit.serve.local import background_server, free_port
from lmkit.serve.stream import TextStream
from lmkit.tokenizer import Tokenizer, train_tokenizer
from test_generate import sentences, tiny_decoder

pytestmark = pytest.mark.usefixtures("one_thread")


# --------------------------------------------------------------------------- streaming text (pure)


@settings(max_examples=60, deadline=None)
@given(st.text(alphabet="ab é日本🙂\n", min_size=1, max_size=30), st.lists(st.integers(1, 4), min_size=1))
def test_stream_releases_whole_characters_only(text: str, cuts: list[int]) -> None:
    data = text.encode("utf-8")
    stream, out, i, k = TextStream(), [], 0, 0
    while i < len(data):  # the bytes arrive in pieces that split characters anywhere
        n = cuts[k % len(cuts)]
        piece = stream.push(data[i : i + n])
        assert "\ufffd" not in piece
        out.append(piece)
        i, k = i + n, k + 1
    out.append(stream.finish())
    assert "".join(out) == text


@settings(max_examples=60, deadline=None)
@given(st.text(alphabet="abc\n", max_size=40), st.text(alphabet="abc\n", min_size=1, max_size=4))
def test_stream_never_emits_any_part_of_a_stop_string(text: str, stop: str) -> None:
    stream, out = TextStream([stop]), []
    for ch in text:  # one character per token: the stop string spans tokens
        out.append(stream.push(ch.encode()))
        assert stop not in "".join(out)
    out.append(stream.finish())
    cut = text.find(stop)
    assert "".join(out) == (text if cut < 0 else text[:cut])
    assert stream.stopped == (cut >= 0)


# --------------------------------------------------------------------------- a live server


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return train_tokenizer(sentences(), vocab_size=400, show_progress=False)


@pytest.fixture(scope="module")
def model(tok: Tokenizer) -> torch.nn.Module:
    return tiny_decoder(vocab=tok.vocab_size, seed=1)  # context window 48


@pytest.fixture(scope="module")
def engine(model: torch.nn.Module, tok: Tokenizer) -> Iterator[Engine]:
    eng = Engine(model, tok, max_batch=16, max_queue=64)
    yield eng
    eng.close()


@pytest.fixture(scope="module")
def url(engine: Engine) -> Iterator[str]:
    with background_server(engine, "tiny") as base:
        yield base


@pytest.fixture(scope="module")
def client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)


def slow_steps(engine: Engine, monkeypatch: pytest.MonkeyPatch, seconds: float = 0.002) -> None:
    """Each decode step of ``engine`` takes ``seconds`` more, as a real model's does: a step of these
    tiny models takes well under a millisecond, less than an HTTP request takes to arrive or a
    client's disconnection to be seen, so a test of what happens while others decode would be a race."""
    step = engine._step_batch
    monkeypatch.setattr(engine, "_step_batch", lambda: (time.sleep(seconds), step())[1])


def _stream_text(client: openai.OpenAI, **kw: object) -> tuple[str, str | None]:
    text, reason = [], None
    for chunk in client.completions.create(model="tiny", stream=True, **kw):  # type: ignore[call-overload]
        for ch in chunk.choices:
            text.append(ch.text)
            reason = ch.finish_reason or reason
    return "".join(text), reason


def test_completion_stream_equals_non_stream(client: openai.OpenAI, tok: Tokenizer) -> None:
    for kw in (
        {"temperature": 0},
        {"temperature": 0.9, "top_p": 0.9, "seed": 5},
        {"temperature": 1.2, "seed": 9, "extra_body": {"top_k": 20}},
    ):
        r = client.completions.create(model="tiny", prompt="the cat sees", max_tokens=12, **kw)  # type: ignore[call-overload]
        ch = r.choices[0]
        assert ch.finish_reason in ("stop", "length")
        assert r.usage.prompt_tokens == len(tok.encode("the cat sees"))
        assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
        streamed, reason = _stream_text(client, prompt="the cat sees", max_tokens=12, **kw)
        assert streamed == ch.text and reason == ch.finish_reason
        assert "\ufffd" not in streamed or "\ufffd" in ch.text


def test_greedy_matches_lmkit_generate(client: openai.OpenAI, model: torch.nn.Module, tok: Tokenizer) -> None:
    from lmkit.infer.sampling import GenerationConfig
    from lmkit.infer.text import generate

    ref = generate(model, tok, "a dog likes", GenerationConfig(max_new_tokens=10, stop_at_eos=True))
    r = client.completions.create(model="tiny", prompt="a dog likes", max_tokens=10, temperature=0)
    assert r.choices[0].text == ref.completion


def test_n_and_token_id_prompts(client: openai.OpenAI, tok: Tokenizer) -> None:
    ids = tok.encode("my sister feeds")
    r = client.completions.create(model="tiny", prompt=[ids, ids], max_tokens=6, n=3, temperature=1.0, seed=11)
    assert [c.index for c in r.choices] == list(range(6))
    texts = [c.text for c in r.choices]
    assert texts[:3] == texts[3:]  # the same prompt and seed: the same choices
    assert len(set(texts[:3])) > 1  # each choice its own generator
    again = client.completions.create(model="tiny", prompt=ids, max_tokens=6, n=3, temperature=1.0, seed=11)
    assert [c.text for c in again.choices] == texts[:3]


def test_stop_string_across_tokens(client: openai.OpenAI, engine: Engine) -> None:
    full = client.completions.create(
        model="tiny", prompt="the farmer", max_tokens=20, temperature=0, logprobs=0
    ).choices[0]
    tokens = full.logprobs.tokens
    assert len(tokens) >= 4
    # a stop string made of the end of token 1 and the start of token 3: it spans three tokens
    start = len(tokens[0]) + max(0, len(tokens[1]) - 1)
    stop = full.text[start : start + 1 + len(tokens[2]) + 1]
    assert len(stop) >= 2
    want = full.text[: full.text.find(stop)]
    r = client.completions.create(model="tiny", prompt="the farmer", max_tokens=20, temperature=0, stop=[stop])
    assert r.choices[0].text == want and r.choices[0].finish_reason == "stop"
    streamed, reason = _stream_text(client, prompt="the farmer", max_tokens=20, temperature=0, stop=stop)
    assert streamed == want and reason == "stop"


def test_seed_gives_same_tokens_alone_and_among_8(
    client: openai.OpenAI, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    def ask(prompt: str, seed: int, n_tok: int = 16) -> str:
        r = client.completions.create(model="tiny", prompt=prompt, max_tokens=n_tok, temperature=1.0, seed=seed)
        return r.choices[0].text

    slow_steps(engine, monkeypatch)  # so that the 8 requests overlap
    alone = ask("the old man calls", 42)
    before = dict(engine.stats)
    prompts = [("the old man calls", 42)] + [
        (" ".join(s.split()[:4]), 100 + i) for i, s in enumerate(sentences(7, seed=3))
    ]
    with ThreadPoolExecutor(8) as pool:
        crowd = list(pool.map(lambda a: ask(*a, n_tok=16 + 2 * (a[1] % 5)), prompts))
    assert crowd[0] == alone
    steps = engine.stats["steps"] - before["steps"]
    rows = engine.stats["batched_rows"] - before["batched_rows"]
    assert rows / steps > 2, f"requests were not decoded together ({rows} rows in {steps} steps)"


def test_echo_logprobs_equal_the_models_own(client: openai.OpenAI, model: torch.nn.Module, tok: Tokenizer) -> None:
    text = "the cat finds the river."
    ids = tok.encode(text)
    with torch.no_grad():
        logp = model(torch.tensor([ids]))[0].log_softmax(-1)  # (T, V)
    want = [float(logp[t - 1, ids[t]]) for t in range(1, len(ids))]
    for max_tokens in (0, 1):
        r = client.completions.create(
            model="tiny", prompt=text, max_tokens=max_tokens, echo=True, logprobs=1, temperature=0
        )
        lp = r.choices[0].logprobs
        assert lp.token_logprobs[0] is None
        assert lp.tokens[: len(ids)] == [tok.token_str(i) for i in ids]
        assert len(lp.token_logprobs) == len(ids) + max_tokens
        assert max(abs(a - b) for a, b in zip(lp.token_logprobs[1 : len(ids)], want)) < 1e-5
        assert r.choices[0].text.startswith(text)
        if max_tokens == 1:  # the generated token's log-probability under the same distribution
            assert abs(lp.token_logprobs[-1] - float(logp[-1].max())) < 1e-5


def test_models_health_tokenize(url: str, tok: Tokenizer) -> None:
    models = httpx.get(url + "/v1/models").json()
    assert models["data"][0]["id"] == "tiny" and models["data"][0]["max_model_len"] == 48
    t = httpx.post(url + "/tokenize", json={"prompt": "a bird sees"}).json()
    assert t["tokens"] == tok.encode("a bird sees")
    assert httpx.post(url + "/detokenize", json={"tokens": t["tokens"]}).json()["prompt"] == "a bird sees"
    assert httpx.get(url + "/health").json()["status"] == "ok"


def test_explain_shows_before_and_after(url: str) -> None:
    e = httpx.post(url + "/v1/explain", json={"prompt": "the cat", "temperature": 0.7, "top_k": 3}).json()
    assert e["kept"] == 3
    after = [c["p_after"] for c in e["candidates"]]
    assert sum(p > 0 for p in after) == 3 and abs(sum(after) - 1) < 1e-4
    before = [c["p_before"] for c in e["candidates"]]
    assert before == sorted(before, reverse=True)
    greedy = httpx.post(url + "/v1/explain", json={"prompt": "the cat", "temperature": 0}).json()
    assert greedy["kept"] == 1 and greedy["chosen_id"] == greedy["candidates"][0]["id"]


# --------------------------------------------------------------------------- client mistakes


@pytest.mark.parametrize(
    "body, status, param",
    [
        ({"prompt": "x", "temperature": "hot"}, 400, "temperature"),
        ({"prompt": "x", "temperature": -1}, 400, "temperature"),
        ({"prompt": "x", "top_p": 0}, 400, "top_p"),
        ({"prompt": "x", "max_tokens": "many"}, 400, "max_tokens"),
        ({"prompt": "x", "n": 99}, 400, "n"),
        ({"prompt": "x", "logprobs": 99}, 400, "logprobs"),
        ({"prompt": "x", "max_tokens": 49}, 400, "max_tokens"),
        ({"prompt": "the cat " * 40, "max_tokens": 4}, 400, "prompt"),
        ({"prompt": [[1, 2, 99999]]}, 400, "prompt"),
        ({"prompt": "x", "stop": ["a", "b", "c", "d", "e"]}, 400, "stop"),
        ({"prompt": "x", "model": "gpt-9"}, 404, "model"),
    ],
)
def test_bad_requests_get_openai_errors(url: str, body: dict[str, object], status: int, param: str) -> None:
    r = httpx.post(url + "/v1/completions", json=body)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["param"] == param and err["message"]


def test_truncate_keeps_the_end_and_unknown_fields_are_ignored(url: str, caplog: pytest.LogCaptureFixture) -> None:
    r = httpx.post(
        url + "/v1/completions",
        json={"prompt": "the cat " * 40, "max_tokens": 4, "truncate": True, "frequency_penalty": 0.5, "temperature": 0},
    )
    assert r.status_code == 200 and r.json()["usage"]["prompt_tokens"] == 44
    assert "frequency_penalty" in caplog.text  # named in the server's log, not an error


def test_other_errors(url: str) -> None:
    r = httpx.get(url + "/v1/nothing")
    assert r.status_code == 404 and "error" in r.json()
    r = httpx.post(url + "/v1/completions", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    r = httpx.post(
        url + "/v1/completions", content=b"x" * (3 * 1024 * 1024), headers={"content-type": "application/json"}
    )
    assert r.status_code == 413 and "error" in r.json()


def test_api_key_and_cors_preflight(engine: Engine) -> None:
    with background_server(engine, "tiny", api_key="sekret", cors_origins=["http://page.example"]) as base:
        assert httpx.post(base + "/v1/completions", json={"prompt": "x"}).status_code == 401
        bad = openai.OpenAI(base_url=base + "/v1", api_key="wrong", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            bad.completions.create(model="tiny", prompt="x", max_tokens=2)
        good = openai.OpenAI(base_url=base + "/v1", api_key="sekret", max_retries=0)
        assert good.completions.create(model="tiny", prompt="x", max_tokens=2).choices
        pre = httpx.options(
            base + "/v1/completions",
            headers={
                "Origin": "http://page.example",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization,content-type",
            },
        )
        assert pre.status_code == 200
        assert pre.headers["access-control-allow-origin"] == "http://page.example"
        assert httpx.get(base + "/health").status_code == 200  # the page and health stay open


def test_full_queue_answers_429(model: torch.nn.Module, tok: Tokenizer) -> None:
    eng = Engine(model, tok, max_batch=1, max_queue=1)
    try:
        with background_server(eng, "tiny") as base:
            body = {"prompt": "the cat", "max_tokens": 40, "temperature": 0}
            with ThreadPoolExecutor(6) as pool:
                codes = list(pool.map(lambda _: httpx.post(base + "/v1/completions", json=body, timeout=60), range(6)))
            statuses = sorted(r.status_code for r in codes)
            assert 429 in statuses and 200 in statuses and set(statuses) <= {200, 429}
            busy = next(r for r in codes if r.status_code == 429).json()["error"]
            assert busy["type"] == "rate_limit_error"
    finally:
        eng.close()


def test_disconnected_client_stops_its_generation(url: str, engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    slow_steps(engine, monkeypatch, 0.005)  # so that the 45 tokens outlast the client
    assert wait_idle(engine)
    before = engine.stats["cancelled"]
    body = {"prompt": "a", "max_tokens": 45, "temperature": 0.8, "seed": 1, "stream": True}
    with httpx.stream("POST", url + "/v1/completions", json=body) as r:
        lines = r.iter_lines()
        got = [next(lines) for _ in range(3)]
        assert got[0].startswith("data: ")
    assert wait_idle(engine, timeout=5)
    steps = engine.stats["steps"]
    time.sleep(0.3)
    assert engine.stats["steps"] == steps  # nothing is decoding for the client that left
    assert engine.stats["cancelled"] == before + 1


# --------------------------------------------------------------------------- other families


def test_encoder_checkpoint_fills_masks_and_refuses_completions(tok: Tokenizer) -> None:
    cfg = ModelConfig(family="encoder", vocab_size=tok.vocab_size, d_model=32, n_layers=2, n_heads=4, max_seq_len=48)
    torch.manual_seed(0)
    eng = Engine(build_model(cfg).eval(), tok)
    try:
        with background_server(eng, "tiny") as base:
            r = httpx.post(base + "/v1/completions", json={"prompt": "the cat"})
            assert r.status_code == 400 and "fill-mask" in r.json()["error"]["message"]
            fm = httpx.post(base + "/v1/fill-mask", json={"text": "the [MASK] sees the bird.", "top_k": 3}).json()
            assert len(fm["masks"]) == 1 and len(fm["masks"][0]["candidates"]) == 3
            r = httpx.post(base + "/v1/fill-mask", json={"text": "no mask here"})
            assert r.status_code == 400 and "error" in r.json()
    finally:
        eng.close()


def test_encoder_decoder_checkpoint_completes(tok: Tokenizer) -> None:
    from lmkit.infer.sampling import GenerationConfig
    from lmkit.infer.text import generate

    cfg = ModelConfig(family="encdec", vocab_size=tok.vocab_size, d_model=32, n_layers=2, n_heads=4, max_seq_len=48)
    torch.manual_seed(0)
    m = build_model(cfg).eval()
    eng = Engine(m, tok)
    try:
        with background_server(eng, "tiny") as base:
            c = openai.OpenAI(base_url=base + "/v1", api_key="x", max_retries=0)
            r = c.completions.create(model="tiny", prompt="the cat <extra_id_0> bird.", max_tokens=6, temperature=0)
            ref = generate(m, tok, "the cat <extra_id_0> bird.", GenerationConfig(max_new_tokens=6))
            assert r.choices[0].text == ref.completion
            streamed, _ = _stream_text(c, prompt="the cat <extra_id_0> bird.", max_tokens=6, temperature=0)
            assert streamed == r.choices[0].text
    finally:
        eng.close()


def test_int8_checkpoint_serves(tmp_path: Path, model: torch.nn.Module, tok: Tokenizer) -> None:
    from lmkit.cli import main
    from lmkit.models.checkpoint import save_checkpoint
    from lmkit.serve.batcher import load_engine

    save_checkpoint(tmp_path / "fp32", model, model.cfg, tokenizer=tok, meta={"step": 1})
    assert main(["quantize", str(tmp_path / "fp32"), "--to", "int8", "--out", str(tmp_path / "int8")]) == 0
    eng, name = load_engine(str(tmp_path / "int8"))
    try:
        assert name == "int8"
        with background_server(eng, model_name=name) as base:
            c = openai.OpenAI(base_url=base + "/v1", api_key="x", max_retries=0)
            r = c.completions.create(model="int8", prompt="the cat", max_tokens=5, temperature=0, logprobs=1)
            assert r.choices[0].logprobs.token_logprobs[0] < 0
    finally:
        eng.close()


def test_serve_help_and_bad_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from lmkit.cli import main

    assert main(["serve", str(tmp_path / "missing")]) == 2
    assert "no such checkpoint" in capsys.readouterr().err
    assert main(["serve", str(tmp_path), "--port", "0"]) == 2


def test_stream_chunks_are_openai_shaped(url: str) -> None:
    body = {
        "prompt": "the cat",
        "max_tokens": 5,
        "temperature": 0,
        "stream": True,
        "logprobs": 2,
        "stream_options": {"include_usage": True},
    }
    with httpx.stream("POST", url + "/v1/completions", json=body) as r:
        events = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "text_completion" for c in chunks)
    assert chunks[-1]["usage"]["completion_tokens"] == 5
    finals = [c["choices"][0]["finish_reason"] for c in chunks[:-1] if c["choices"][0]["finish_reason"]]
    assert finals == ["length"]
    assert all(len(c["choices"][0]["logprobs"]["top_logprobs"][0]) == 2 for c in chunks[:-2])


# --------------------------------------------------------------------------- an evaluation harness


@pytest.mark.slow
def test_lm_eval_local_completions_scores_like_the_model(
    tmp_path: Path, url: str, model: torch.nn.Module, tok: Tokenizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """lm-evaluation-harness's `local-completions` model scores a multiple-choice task through the
    server; each choice's log-likelihood equals the one computed in-process (not 0, not chance)."""
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import lm_eval
    from lm_eval.tasks import TaskManager

    docs = [
        {"question": f"{s} Then", "choices": ["the cat", "a dog", "the river"], "label": i % 3}
        for i, s in enumerate(["the cat sees", "a dog likes the", "my sister feeds", "the farmer calls"])
    ]
    data = tmp_path / "mc.jsonl"
    data.write_text("".join(json.dumps(d) + "\n" for d in docs))
    (tmp_path / "lmkit_mc.yaml").write_text(
        "task: lmkit_mc\ndataset_path: json\ndataset_kwargs:\n  data_files:\n"
        f"    test: {data}\ntest_split: test\noutput_type: multiple_choice\n"
        "doc_to_text: '{{question}}'\ndoc_to_choice: '{{choices}}'\ndoc_to_target: '{{label}}'\n"
        "metric_list:\n  - metric: acc\n"
    )
    out = lm_eval.simple_evaluate(
        model="local-completions",
        model_args=f"base_url={url}/v1/completions,model=tiny,num_concurrent=1,max_retries=1,tokenized_requests=True",
        tasks=["lmkit_mc"],
        task_manager=TaskManager(include_path=str(tmp_path)),
        log_samples=True,
    )
    samples = out["samples"]["lmkit_mc"]
    assert len(samples) == len(docs)
    for sample in samples:
        args = sample["arguments"]
        pairs = [tuple(a.values()) for a in args.values()] if isinstance(args, dict) else [tuple(a) for a in args]
        assert len(pairs) == 3
        for (ctx, cont), resp in zip(pairs, sample["resps"]):
            got = resp[0][0]
            n = len(ctx) - len(ctx.rstrip())  # lm-eval moves the context's trailing spaces to the continuation
            if n:
                ctx, cont = ctx[:-n], ctx[-n:] + cont
            ctx_ids = tok.encode(ctx, allow_special=True)
            whole = tok.encode(ctx + cont, allow_special=True)
            with torch.no_grad():
                logp = model(torch.tensor([whole]))[0].log_softmax(-1)
            want = sum(float(logp[t - 1, whole[t]]) for t in range(len(ctx_ids), len(whole)))
            assert got != 0 and abs(got - want) < 1e-4, (ctx, cont, got, want)


# --------------------------------------------------------------------------- the playground in a browser


CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.mark.slow
@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed (.ci/run installs it with apt)")
def test_playground_in_a_real_browser(url: str, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 390, "height": 844})  # a phone's width
            page.goto(url + "/")
            page.fill("#prompt", "the cat sees")
            for sel, value in (("#temperature", "0.7"), ("#top_k", "5"), ("#max_tokens", "12")):
                page.eval_on_selector(sel, "(e, v) => { e.value = v; e.dispatchEvent(new Event('input')); }", value)
            assert page.text_content("#temperature_v") == "0.70"
            # moving a slider re-explains the next token with the new settings, without generating
            page.wait_for_function("document.querySelector('#explain').textContent.includes('top-k 5')")
            page.get_by_role("button", name="Generate").click()
            page.wait_for_function("document.querySelector('#status').textContent.startsWith('done')", timeout=20000)
            toks = page.locator("#output .tok")
            assert toks.count() >= 1
            toks.nth(0).focus()
            page.keyboard.press("Enter")  # keyboard works: the token is a button
            page.wait_for_selector("#explain tr.chosen")
            rows = page.locator("#explain tbody tr")
            assert rows.count() >= 5
            after = [float(t) for t in page.locator("#explain tbody tr td:nth-child(4)").all_text_contents()]
            assert sum(1 for p in after if p > 0) <= 5  # top-k 5: at most five can be chosen after the settings
            assert page.get_by_label("Text to complete").is_visible()
            page.screenshot(path=str(tmp_path / "playground.png"), full_page=True)
            assert (tmp_path / "playground.png").stat().st_size > 10_000
        finally:
            browser.close()


# --------------------------------------------------------------------------- a bounded load test


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


@pytest.mark.slow
def test_load_50_clients_500_requests(tmp_path: Path, model: torch.nn.Module, tok: Tokenizer) -> None:
    """`lmkit serve` as a user starts it, 50 concurrent clients, 500 requests, a third streamed:
    no 5xx, latency percentiles printed, and the server's memory flat over the second half."""
    import asyncio
    import os
    import subprocess
    import sys

    from lmkit.models.checkpoint import save_checkpoint

    save_checkpoint(tmp_path / "ckpt", model, model.cfg, tokenizer=tok, meta={"step": 1})
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "lmkit.cli", "serve", str(tmp_path / "ckpt"), "--port", str(port), "--threads", "1"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                if httpx.get(base + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        latencies: list[float] = []
        statuses: list[int] = []
        rss: list[float] = []

        async def client(i: int, http: httpx.AsyncClient) -> None:
            for j in range(10):
                body = {
                    "prompt": sentences(1, seed=i * 10 + j)[0][:30],
                    "max_tokens": 8 + (i + j) % 8,
                    "temperature": 0.8,
                    "seed": j,
                    "stream": (i + j) % 3 == 0,
                }
                t0 = time.perf_counter()
                if body["stream"]:
                    async with http.stream("POST", base + "/v1/completions", json=body) as r:
                        lines = [line async for line in r.aiter_lines()]
                        assert r.status_code != 200 or lines[-1] == "data: [DONE]" or lines[-2] == "data: [DONE]"
                        statuses.append(r.status_code)
                else:
                    r = await http.post(base + "/v1/completions", json=body)
                    statuses.append(r.status_code)
                latencies.append(time.perf_counter() - t0)
                if len(statuses) % 50 == 0:
                    rss.append(_rss_mb(proc.pid))

        async def main() -> None:
            limits = httpx.Limits(max_connections=60)
            async with httpx.AsyncClient(timeout=120, limits=limits) as http:
                await asyncio.gather(*(client(i, http) for i in range(50)))

        t0 = time.perf_counter()
        asyncio.run(main())
        wall = time.perf_counter() - t0
        lat = sorted(latencies)
        p50, p99 = lat[len(lat) // 2], lat[int(len(lat) * 0.99) - 1]
        print(
            f"\n500 requests from 50 clients in {wall:.1f} s: p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, "
            f"statuses {sorted(set(statuses))}, server RSS (MB) every 50 requests: {[round(x) for x in rss]}"
        )
        assert len(statuses) == 500 and not [s for s in statuses if s >= 500]
        assert statuses.count(200) >= 450  # a few 429s are allowed when the queue is full
        half = rss[len(rss) // 2 :]
        assert max(half) <= half[0] * 1.05 + 20, f"server memory grew over the second half: {rss}"
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_slot_pool_rows_match_each_request_alone(model: torch.nn.Module) -> None:
    """Rows of different lengths decoded together, joining and leaving, give each row the logits
    that row gets alone (1e-5): the ragged KV cache is how a request ignores its neighbours."""
    from lmkit.models.layers import KVCache

    torch.manual_seed(0)
    prompts = [torch.randint(0, 300, (1, n)) for n in (3, 9, 5, 7)]
    with torch.no_grad():
        rows = []
        for p in prompts[:3]:
            c = model.new_cache(1, 48)
            model(p, c)
            rows.append(c)
        pool = KVCache.slots(rows[0], capacity=4)
        for c in rows:
            pool.add_row(c)
        seqs = [p.clone() for p in prompts[:3]]
        for step in range(4):
            if step == 2:  # the second request leaves, a fourth joins
                assert pool.remove_rows([1]) == [(2, 1)]
                seqs = [seqs[0], seqs[2]]
                c = model.new_cache(1, 48)
                model(prompts[3], c)
                pool.add_row(c)
                seqs.append(prompts[3].clone())
            nxt = torch.tensor([[10 + step + i] for i in range(len(seqs))])
            out = model(nxt, pool)[:, -1]  # (B, V)
            for i, s in enumerate(seqs):
                seqs[i] = torch.cat([s, nxt[i : i + 1]], dim=1)
                alone = model(seqs[i])[0, -1]
                assert (out[i] - alone).abs().max() < 1e-5
