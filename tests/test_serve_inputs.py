"""What clients send to `lmkit serve` that the server must survive: a table of request bodies and methods
with the status and one-line error each must get (never a 5xx for a client mistake, always OpenAI's
error shape), requests that used to stop the engine for everyone, bodies too large to hold, and the
engine's own failures kept to the request they belong to."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch

import lmkit.serve.batcher as batcher
from lmkit.config import ModelConfig
from lmkit.infer.sampling import GenerationConfig
from lmkit.models import build_model
from lmkit.serve.batcher import Engine, Event, Job, wait_idle
from lmkit.serve.local import background_server, free_port
from lmkit.tokenizer import Tokenizer
from test_serve import engine, model, tok, url  # noqa: F401  (the live decoder server of test_serve)

pytestmark = pytest.mark.usefixtures("one_thread")

ERROR_KEYS = {"message", "type", "param", "code"}
SEED_RANGE = "must be an integer from 0 to 2**64-1 (18446744073709551615)"


def _error(r: httpx.Response) -> dict[str, Any]:
    body = r.json()
    assert set(body["error"]) == ERROR_KEYS, body
    return body["error"]


# --------------------------------------------------------------------------- the table

CASES: list[tuple[str, str, Any, int, str | None, str | None]] = [
    # method, path, JSON body (a dict, or JSON text for what json= cannot send), status, error fragment, param
    (
        "POST",
        "/v1/completions",
        {"prompt": "x", "seed": 2**64},
        400,
        f"seed {SEED_RANGE}, got 18446744073709551616",
        "seed",
    ),
    ("POST", "/v1/completions", {"prompt": "x", "seed": 10**100}, 400, "got an integer of 333 bits", "seed"),
    ("POST", "/v1/completions", {"prompt": "x", "seed": -(2**63) - 5}, 400, "got -9223372036854775813", "seed"),
    ("POST", "/v1/completions", {"prompt": "x", "seed": -1}, 400, SEED_RANGE, "seed"),
    ("POST", "/v1/completions", {"prompt": "x", "seed": 2**64 - 1, "n": 2, "max_tokens": 3}, 200, None, None),
    ("POST", "/v1/completions", {"prompt": "x", "seed": 2**64, "n": 2}, 400, SEED_RANGE, "seed"),
    ("POST", "/v1/completions", {"prompt": "x", "temperature": 1e-40, "max_tokens": 3}, 200, None, None),
    ("POST", "/v1/completions", {"prompt": "x", "temperature": 1e-300, "max_tokens": 3}, 200, None, None),
    ("POST", "/v1/completions", {"prompt": "x", "temperature": 5e-324, "max_tokens": 3}, 200, None, None),
    ("POST", "/v1/completions", {"prompt": "x", "temperature": 1e-300, "top_k": 5, "max_tokens": 3}, 200, None, None),
    ("POST", "/v1/completions", {"prompt": "x", "temperature": 5e-324, "top_p": 0.5, "max_tokens": 3}, 200, None, None),
    (
        "POST",
        "/v1/completions",
        {"prompt": "x", "temperature": 1e-40, "top_k": 3, "top_p": 0.9, "stream": True, "max_tokens": 3},
        200,
        None,
        None,
    ),
    ("POST", "/v1/explain", {"prompt": "the cat", "temperature": 1e-40}, 200, None, None),
    ("POST", "/v1/explain", {"prompt": "the cat", "temperature": 1e-300, "top_k": 5}, 200, None, None),
    ("POST", "/v1/explain", {"prompt": "the cat", "temperature": 5e-324, "top_p": 0.5}, 200, None, None),
    (
        "POST",
        "/v1/completions",
        json.dumps({"prompt": "a\ud800b"}),
        400,
        "lone surrogate U+D800 at character 1",
        "prompt",
    ),
    ("POST", "/v1/completions", json.dumps({"prompt": ["ok", "\udfff"]}), 400, "lone surrogate U+DFFF", "prompt"),
    ("POST", "/v1/completions", json.dumps({"prompt": "x", "stop": "\ud800"}), 400, "lone surrogate", "stop"),
    ("POST", "/v1/explain", json.dumps({"prompt": "\ud800"}), 400, "lone surrogate", "prompt"),
    ("POST", "/tokenize", json.dumps({"prompt": "\ud800"}), 400, "lone surrogate", "prompt"),
    ("POST", "/v1/fill-mask", json.dumps({"text": "the [MASK] \ud800"}), 400, "lone surrogate", "text"),
    ("POST", "/v1/completions", '{"prompt": "x", "seed": 1' + "0" * 5000 + "}", 400, "error parsing the body", None),
    ("GET", "/v1/completions", None, 405, "Method Not Allowed", None),
    ("HEAD", "/v1/completions", None, 405, None, None),
    ("HEAD", "/v1/nothing", None, 404, None, None),
    ("HEAD", "/health", None, 200, None, None),
    ("HEAD", "/v1/models", None, 200, None, None),
    ("HEAD", "/tokenizer_info", None, 200, None, None),
    ("HEAD", "/", None, 200, None, None),
]


@pytest.mark.parametrize(
    "method, path, body, status, fragment, param", CASES, ids=[f"{c[0]} {c[1]} {ascii(c[2])[:50]}" for c in CASES]
)
def test_request_table(
    url: str, method: str, path: str, body: Any, status: int, fragment: str | None, param: str | None
) -> None:
    content = body if isinstance(body, str) else None if body is None else json.dumps(body)
    r = httpx.request(
        method,
        url + path,
        content=content,
        timeout=30,
        headers={"content-type": "application/json"} if content is not None else {},
    )
    assert r.status_code == status, r.text
    if status >= 400:
        assert r.headers["content-type"] == "application/json"
        if method == "HEAD":  # no body on a HEAD answer; its headers are those of the JSON error a GET gets
            get = httpx.get(url + path)
            assert int(r.headers["content-length"]) == len(get.content) and set(get.json()["error"]) == ERROR_KEYS
            if status == 405:
                assert r.headers["allow"] == "POST"
            return
        err = _error(r)
        assert fragment is not None and fragment in err["message"] and "\n" not in err["message"]
        assert err["param"] == param
    elif method != "HEAD" and path == "/v1/completions" and not (body or {}).get("stream"):
        out = r.json()
        assert len(out["choices"]) == (body or {}).get("n", 1)


def test_tiny_temperature_is_its_limit_greedy(url: str) -> None:
    greedy = httpx.post(url + "/v1/completions", json={"prompt": "the cat", "max_tokens": 8, "temperature": 0})
    for t in (1e-40, 1e-300, 5e-324):
        r = httpx.post(
            url + "/v1/completions", json={"prompt": "the cat", "max_tokens": 8, "temperature": t, "seed": 3}
        )
        assert r.json()["choices"][0]["text"] == greedy.json()["choices"][0]["text"]
        e = httpx.post(url + "/v1/explain", json={"prompt": "the cat", "temperature": t}).json()
        assert e["kept"] == 1 and e["chosen_id"] == e["candidates"][0]["id"]


def test_top_seed_with_n_wraps_around(url: str) -> None:
    body = {"prompt": "the cat", "max_tokens": 6, "temperature": 1.0, "n": 2}
    top = httpx.post(url + "/v1/completions", json={**body, "seed": 2**64 - 1}).json()["choices"]
    zero = httpx.post(url + "/v1/completions", json={**body, "n": 1, "seed": 0}).json()["choices"]
    assert top[1]["text"] == zero[0]["text"]  # the second choice of seed 2**64-1 is seed 0's first


# --------------------------------------------------------------------------- one request cannot stop the others


def test_poisoned_request_leaves_the_server_serving(url: str, engine: Engine) -> None:
    before = engine.stats["steps"]
    for seed in (2**64, 10**100, -(2**63) - 5):
        assert httpx.post(url + "/v1/completions", json={"prompt": "x", "seed": seed}, timeout=10).status_code == 400
    r = httpx.post(
        url + "/v1/completions", json={"prompt": "the cat", "max_tokens": 5, "temperature": 0.8, "seed": 7}, timeout=10
    )
    assert r.status_code == 200 and r.json()["choices"][0]["finish_reason"] in ("stop", "length")
    health = httpx.get(url + "/health").json()
    assert health["status"] == "ok" and health["waiting"] == 0 and health["steps"] > before


def _job(tokenizer: Tokenizer, settings: GenerationConfig, events: list[Event], max_tokens: int = 6) -> Job:
    return Job(tokenizer.encode("the cat sees"), max_tokens, settings, events.append)


def _wait_ended(*lists: list[Event], timeout: float = 10) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if all(ev and ev[-1].kind in ("done", "error") for ev in lists):
            return
        time.sleep(0.01)
    raise AssertionError(f"jobs did not end: {[[e.kind for e in ev] for ev in lists]}")


def test_a_job_with_bad_settings_fails_alone(model: torch.nn.Module, tok: Tokenizer) -> None:
    eng = Engine(model, tok)
    try:  # a library caller that skips the web app's checks: the engine checks the job's settings itself
        bad, good = [], []
        eng.submit(
            [
                _job(tok, GenerationConfig(do_sample=True, seed=2**64), bad),
                _job(tok, GenerationConfig(do_sample=True, seed=5), good),
            ]
        )
        _wait_ended(bad, good)
        assert [e.kind for e in bad] == ["error"] and "seed must be an integer from 0 to 2**64-1" in bad[0].text
        assert good[-1].kind == "done" and sum(e.kind == "token" for e in good) >= 1
        assert eng.failure is None and eng.busy()["failed"] == 1
    finally:
        eng.close()


def test_a_step_that_fails_ends_only_its_own_row(
    model: torch.nn.Module, tok: Tokenizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = batcher.choose_next

    def flaky(logits: torch.Tensor, settings: GenerationConfig, *a: Any, **kw: Any) -> Any:
        if settings.temperature == 0.5 and kw.get("step") == 3:  # this job's 4th token, in a batched step
            raise RuntimeError("boom")
        return real(logits, settings, *a, **kw)

    monkeypatch.setattr(batcher, "choose_next", flaky)
    eng = Engine(model, tok)
    try:
        alone: list[Event] = []
        eng.submit([_job(tok, GenerationConfig(), alone, max_tokens=10)])
        _wait_ended(alone)
        doomed, greedy = [], []
        eng.submit(
            [
                _job(tok, GenerationConfig(do_sample=True, temperature=0.5, seed=1), doomed, max_tokens=10),
                _job(tok, GenerationConfig(), greedy, max_tokens=10),
            ]
        )
        _wait_ended(doomed, greedy)
        assert [e.kind for e in doomed] == ["token"] * 3 + ["error"] and "RuntimeError: boom" in doomed[-1].text
        assert [e.text for e in greedy] == [e.text for e in alone]  # its neighbour's failure changed nothing
        assert eng.failure is None
    finally:
        eng.close()


class _DyingEngine(Engine):
    """An engine whose thread dies (as no request can make it) once ``gate`` is set."""

    gate: threading.Event

    def _serve_once(self) -> bool:
        self.gate.wait()
        raise SystemExit("the engine thread was killed")


def test_a_dead_engine_is_reported_and_nobody_waits(model: torch.nn.Module, tok: Tokenizer) -> None:
    _DyingEngine.gate = threading.Event()
    eng = _DyingEngine(model, tok)
    try:
        with background_server(eng, "tiny") as base:
            with httpx.Client(timeout=20) as c:
                waiting: list[httpx.Response] = []
                asker = threading.Thread(
                    target=lambda: waiting.append(
                        c.post(base + "/v1/completions", json={"prompt": "the cat", "max_tokens": 4})
                    )
                )
                asker.start()
                end = time.monotonic() + 10
                while eng.busy()["waiting"] == 0 and time.monotonic() < end:
                    time.sleep(0.01)
                _DyingEngine.gate.set()
                asker.join(timeout=15)
                assert waiting and waiting[0].status_code == 503  # the request waiting on it got an answer
                assert "the engine has stopped: SystemExit" in _error(waiting[0])["message"]
                health = c.get(base + "/health")
                assert health.status_code == 503 and health.json()["status"] == "engine_stopped"
                assert _error(health)["code"] == "engine_stopped"
                later = c.post(base + "/v1/completions", json={"prompt": "the cat", "max_tokens": 4})
                assert later.status_code == 503 and _error(later)["type"] == "server_error"
    finally:
        eng.close()


# --------------------------------------------------------------------------- the body limit, CORS


def test_chunked_body_over_the_limit_is_refused_unread(url: str) -> None:
    sent = 0

    def body() -> Iterator[bytes]:  # 50 MB without Content-Length (Transfer-Encoding: chunked)
        nonlocal sent
        for _ in range(800):
            sent += 65536
            yield b"x" * 65536

    r = httpx.post(url + "/v1/completions", content=body(), headers={"content-type": "application/json"}, timeout=30)
    assert r.request.headers.get("transfer-encoding") == "chunked"
    assert r.status_code == 413, r.text
    err = _error(r)
    assert err["code"] == "request_too_large" and "limit of 2097152 bytes" in err["message"]
    assert sent < 20 * 2**20  # the server stopped reading soon after the 2 MiB limit, not after 50 MB
    assert httpx.get(url + "/health").json()["status"] == "ok"


def test_chunked_body_under_the_limit_is_read(url: str) -> None:
    data = json.dumps({"prompt": "the cat", "max_tokens": 2, "temperature": 0}).encode()
    r = httpx.post(
        url + "/v1/completions", content=iter([data[:10], data[10:]]), headers={"content-type": "application/json"}
    )
    assert r.status_code == 200 and r.json()["choices"][0]["finish_reason"] in ("stop", "length")


def test_refused_cors_preflight_and_401_are_openai_shaped(engine: Engine) -> None:
    with background_server(engine, "tiny", api_key="k", cors_origins=["http://page.example"]) as base:
        pre = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization"}
        bad = httpx.options(base + "/v1/completions", headers={"Origin": "http://evil.example", **pre})
        assert bad.status_code == 400 and bad.headers["content-type"] == "application/json"
        err = _error(bad)
        assert err["code"] == "cors_refused" and "origin" in err["message"]
        ok = httpx.options(base + "/v1/completions", headers={"Origin": "http://page.example", **pre})
        assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == "http://page.example"
        denied = httpx.post(base + "/v1/completions", json={"prompt": "x"}, headers={"Origin": "http://page.example"})
        assert denied.status_code == 401 and _error(denied)["code"] == "invalid_api_key"
        assert denied.headers["access-control-allow-origin"] == "http://page.example"  # a page can read why
        assert httpx.get(base + "/tokenizer_info").status_code == 200  # still open without the key


def test_lone_surrogate_on_an_encoder_fill_mask(tok: Tokenizer) -> None:
    cfg = ModelConfig(family="encoder", vocab_size=tok.vocab_size, d_model=32, n_layers=1, n_heads=4, max_seq_len=48)
    torch.manual_seed(0)
    eng = Engine(build_model(cfg).eval(), tok)
    try:
        with background_server(eng, "enc") as base:
            r = httpx.post(
                base + "/v1/fill-mask",
                content=json.dumps({"text": "the [MASK] sees \ud800."}),
                headers={"content-type": "application/json"},
            )
            assert r.status_code == 400 and "lone surrogate U+D800" in _error(r)["message"]
            ok = httpx.post(base + "/v1/fill-mask", json={"text": "the [MASK] sees the bird."})
            assert ok.status_code == 200 and ok.json()["masks"]
    finally:
        eng.close()


# --------------------------------------------------------------------------- the command line


def test_serve_threads_must_be_positive(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from lmkit.cli import main

    for bad in ("-4", "0"):
        assert main(["serve", str(tmp_path / "missing"), "--threads", bad]) == 2
        err = capsys.readouterr().err
        assert err == f"lmkit: error: --threads must be at least 1, got {bad}\n"


@pytest.mark.slow
def test_sigterm_stops_the_server_after_a_poisoned_request(
    tmp_path: Path, model: torch.nn.Module, tok: Tokenizer
) -> None:
    from lmkit.models.checkpoint import save_checkpoint

    save_checkpoint(tmp_path / "ckpt", model, model.cfg, tokenizer=tok, meta={"step": 1})
    port = free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "lmkit.cli", "serve", str(tmp_path / "ckpt"), "--port", str(port), "--threads", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        end = time.monotonic() + 60
        while time.monotonic() < end:
            try:
                if httpx.get(base + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        assert httpx.post(base + "/v1/completions", json={"prompt": "x", "seed": 2**64}).status_code == 400
        ok = httpx.post(base + "/v1/completions", json={"prompt": "the", "max_tokens": 3}, timeout=10)
        assert ok.status_code == 200
        assert httpx.get(base + "/health").json()["status"] == "ok"
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) in (0, -signal.SIGTERM)  # uvicorn shuts down, then re-raises the signal
        assert time.monotonic() - started < 15
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        out = proc.stdout.read().decode() if proc.stdout else ""
        assert "Traceback" not in out, out


def test_wait_idle_after_the_table(engine: Engine) -> None:
    assert wait_idle(engine, timeout=10)  # nothing the table sent is left running or waiting
