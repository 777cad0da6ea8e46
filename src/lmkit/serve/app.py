"""The web app of ``lmkit serve``: OpenAI's completions API over an :class:`~lmkit.serve.batcher.Engine`.

Routes: ``POST /v1/completions`` (text or token-id prompts, ``n``, ``stop``, ``seed``, ``logprobs``,
``echo``, server-sent-event streaming ending in ``data: [DONE]``), ``POST /v1/fill-mask`` (encoder
checkpoints), ``GET /v1/models``, ``GET /health``, ``POST /tokenize``, ``POST /detokenize``, ``GET /tokenizer_info``,
``POST /v1/explain`` (the next-token distribution before and after the settings, for the
playground) and ``GET /`` (the playground page in ``static/``). This module owns the routes, the
error handlers, and how a request's events reach the client: collected into one answer, or
streamed as server-sent events; what a request becomes in the engine (its jobs, every check on it)
and how events become choices is :mod:`lmkit.serve.jobs`.

Every error gets OpenAI's shape ``{"error": {"message", "type", "param", "code"}}``
(:mod:`lmkit.serve.guard`); a client's mistake is a 4xx: 400 bad values (the body's schema is
:mod:`lmkit.serve.schema`; every sampling setting passes
:meth:`~lmkit.infer.sampling.GenerationConfig.validate` before a job is queued, so none can fail
inside the engine), a prompt over the context window or text that is not valid Unicode, 401 wrong
API key, 404 unknown model or route, 405 wrong method (``GET`` routes also answer ``HEAD``), 413
body too large, 429 queue full. 5xx means the server failed: 500 one request's generation failed
(that request only; the engine goes on), 503 the engine has stopped (``/health`` says so too).
Unknown request fields are ignored and named in the log. ``echo`` + ``logprobs`` + ``max_tokens``
0 or 1 returns the prompt tokens' own log-probabilities (the first one ``null``), as
lm-evaluation-harness's ``local-completions`` reads them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import torch
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from lmkit.errors import LmkitError
from lmkit.infer.fillmask import fill_mask as run_fill_mask
from lmkit.infer.sampling import choose_next
from lmkit.models.protocols import MaskedLM
from lmkit.serve.batcher import Engine, EngineStopped, Event, Job, QueueFull
from lmkit.serve.guard import ApiError, Guard, ShapedCORS, error_body, error_response
from lmkit.serve.jobs import (
    ChoiceState,
    apply_event,
    build_jobs,
    choice_json,
    explain_json,
    job_error,
    settings_of,
    usage_json,
)
from lmkit.serve.schema import (
    CompletionRequest,
    DetokenizeRequest,
    ExplainRequest,
    FillMaskRequest,
    ServeOptions,
    TokenizeRequest,
)

LOG = logging.getLogger("lmkit.serve")
STATIC = Path(__file__).with_name("static")


def create_app(engine: Engine, opts: ServeOptions) -> FastAPI:
    """The FastAPI app serving ``engine`` under ``opts``."""
    app = FastAPI(title="lmkit serve", version="1", docs_url="/docs", redoc_url=None)
    app.state.engine = engine
    app.add_middleware(Guard, max_body_bytes=opts.max_body_bytes, api_key=opts.api_key)
    if opts.cors_origins:  # outside the guard: its 401s and 413s carry CORS headers a page can read
        app.add_middleware(
            ShapedCORS,
            allow_origins=opts.cors_origins,
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type"],
        )

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.message, exc.kind, exc.param, exc.code)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = list(exc.errors()) or [{"loc": (), "msg": "invalid request"}]
        # a union field (prompt: text or ids) fails once per member: the value error names the real problem
        first = next((e for e in errors if e.get("type") == "value_error"), errors[0])
        loc = [str(x) for x in first.get("loc", ()) if x != "body"]
        param = loc[0] if loc else None
        msg = (
            str(first["ctx"]["error"])
            if first.get("type") == "value_error" and "ctx" in first
            else str(first.get("msg"))
        )
        return error_response(400, f"{param}: {msg}" if param else msg, param=param)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return error_response(exc.status_code, str(exc.detail), kind, headers=exc.headers)

    @app.exception_handler(Exception)
    async def _failed(_: Request, exc: Exception) -> JSONResponse:  # a bug: still answered in the error shape
        return error_response(500, f"internal error: {type(exc).__name__}", "server_error")

    def check_model(name: str | None) -> None:
        if name and name != opts.model_name:
            raise ApiError(
                404,
                f"model {name!r} does not exist; this server serves {opts.model_name!r}",
                "model",
                "model_not_found",
            )

    @app.api_route("/", methods=["GET", "HEAD"], response_class=HTMLResponse)
    async def playground() -> HTMLResponse:
        return HTMLResponse((STATIC / "index.html").read_text(encoding="utf-8"))

    @app.api_route("/health", methods=["GET", "HEAD"], response_model=None)
    async def health() -> Any:
        state = {"model": opts.model_name, "family": engine.family, **engine.busy()}
        if engine.failure is None:
            return {"status": "ok", **state}
        body = error_body(f"the engine has stopped: {engine.failure}", "server_error", code="engine_stopped")
        return JSONResponse({"status": "engine_stopped", **state, **body}, status_code=503)

    @app.api_route("/v1/models", methods=["GET", "HEAD"])
    async def models() -> dict[str, Any]:
        return {
            "object": "list",
            "data": [
                {
                    "id": opts.model_name,
                    "object": "model",
                    "created": 0,
                    "owned_by": "lmkit",
                    "max_model_len": engine.window,
                    "family": engine.family,
                }
            ],
        }

    @app.api_route("/tokenizer_info", methods=["GET", "HEAD"])
    async def tokenizer_info() -> dict[str, Any]:
        """The special tokens, as evaluation harnesses (lm-eval's remote tokenizer) ask for them."""
        tok = engine.tokenizer
        roles = (("eos_token", tok.eos_id), ("bos_token", tok.bos_id), ("pad_token", tok.pad_id))
        named = {key: tok.token_str(i) if i >= 0 else None for key, i in roles}
        return {**named, "model_max_length": engine.window, "vocab_size": tok.vocab_size}

    @app.post("/tokenize")
    async def tokenize(req: TokenizeRequest) -> dict[str, Any]:
        ids = list(engine.tokenizer.encode(req.prompt, allow_special=True))  # "</s>": lmkit's EOS token
        return {
            "tokens": ids,
            "count": len(ids),
            "max_model_len": engine.window,
            "token_strs": [engine.tokenizer.token_str(i) for i in ids],
        }

    @app.post("/detokenize")
    async def detokenize(req: DetokenizeRequest) -> dict[str, Any]:
        bad = next((i for i in req.tokens if not 0 <= i < engine.tokenizer.vocab_size), None)
        if bad is not None:
            raise ApiError(400, f"token id {bad} is outside the vocabulary", "tokens")
        return {"prompt": engine.tokenizer.decode(req.tokens)}

    @app.post("/v1/explain")
    async def explain(req: ExplainRequest) -> dict[str, Any]:
        if not engine.spec.generates:
            raise ApiError(400, f"an {engine.family} checkpoint has no next-token distribution", "prompt")
        tok = engine.tokenizer
        if not req.prompt and max(tok.bos_id, tok.separator_id) < 0:
            raise ApiError(400, "prompt is empty and the tokenizer has no BOS token to start from", "prompt")
        ids = tok.prompt_ids(req.prompt)[-(engine.window - 1) :]  # BOS first where the model's tokenizer adds it
        logits = await asyncio.to_thread(engine.next_token_logits, ids)
        settings = settings_of(req, 1, 0)
        _, expl = choose_next(
            logits[None],
            settings,
            None if settings.greedy else _fixed_generator(),
            explain=True,
            n_candidates=req.candidates,
        )
        assert expl is not None
        return explain_json(tok, expl[0])

    @app.post("/v1/fill-mask")
    async def fill_mask(req: FillMaskRequest) -> dict[str, Any]:
        if engine.spec.offers is not MaskedLM:
            raise ApiError(
                400, "fill-mask needs an encoder checkpoint; this one completes text (POST /v1/completions)", "model"
            )
        try:
            result = await asyncio.to_thread(run_fill_mask, engine.model, engine.tokenizer, req.text, req.top_k)
        except LmkitError as exc:  # no [MASK] in the text, or the text over the window: the client's to fix
            raise ApiError(400, str(exc), "text") from exc
        return {"model": opts.model_name, **result.to_dict()}

    @app.post("/v1/completions", response_model=None)
    async def completions(req: CompletionRequest, request: Request) -> Any:
        if req.model_extra:
            LOG.warning("ignoring unknown completion fields: %s", ", ".join(sorted(req.model_extra)))
        check_model(req.model)
        jobs, prompts, queue = build_jobs(engine, req, opts)
        try:
            engine.submit(jobs)
        except QueueFull as exc:
            raise ApiError(429, f"server busy: {exc}; retry later", code="queue_full", kind="rate_limit_error") from exc
        except EngineStopped as exc:
            raise ApiError(503, str(exc), code="engine_stopped", kind="server_error") from exc
        cid, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())
        states = [ChoiceState(engine, req.logprobs is not None) for _ in jobs]
        prompt_tokens = sum(len(p) for p in prompts)
        head = {"id": cid, "object": "text_completion", "created": created, "model": opts.model_name}
        if req.stream:
            include_usage = bool((req.stream_options or {}).get("include_usage"))
            return StreamingResponse(
                _stream(engine, jobs, states, queue, head, req, prompt_tokens, include_usage),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache"},
            )
        try:
            await _collect(engine, states, queue, request)
        finally:
            for job in jobs:
                job.cancelled.set()  # finished jobs ignore it; a disconnected client's stop
        choices = [choice_json(i, s, req, s.text) for i, s in enumerate(states)]
        for c, s in zip(choices, states):
            c["logprobs"] = (
                None
                if req.logprobs is None
                else {
                    "tokens": s.tokens,
                    "token_logprobs": s.token_logprobs,
                    "top_logprobs": s.top_logprobs,
                    "text_offset": s.text_offset,
                }
            )
        completion = sum(s.completion_tokens for s in states)
        return {**head, "choices": choices, "usage": usage_json(prompt_tokens, completion)}

    return app


def _fixed_generator() -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(0)
    return g


async def _next_event(engine: Engine, queue: asyncio.Queue[tuple[int, Event]]) -> tuple[int, Event] | None:
    """The next event of a request, or None after 0.25 s without one. An engine that has stopped
    reports every job it held; this is the second line: a request never waits on a stopped engine."""
    try:
        return await asyncio.wait_for(queue.get(), timeout=0.25)
    except asyncio.TimeoutError:
        if engine.failure is not None and queue.empty():
            return -1, Event("error", text=f"the engine has stopped: {engine.failure}", finish_reason="engine_stopped")
        return None


async def _collect(
    engine: Engine, states: list[ChoiceState], queue: asyncio.Queue[tuple[int, Event]], request: Request
) -> None:
    open_ = len(states)
    while open_:
        got = await _next_event(engine, queue)
        if got is None:
            if await request.is_disconnected():
                return
            continue
        i, ev = got
        if ev.kind == "error":
            raise job_error(ev)
        apply_event(states[i], ev)
        if ev.kind == "done":
            open_ -= 1


async def _stream(
    engine: Engine,
    jobs: list[Job],
    states: list[ChoiceState],
    queue: asyncio.Queue[tuple[int, Event]],
    head: dict[str, Any],
    req: CompletionRequest,
    prompt_tokens: int,
    include_usage: bool,
) -> AsyncIterator[str]:
    """Server-sent events: one chunk per token (its released text and logprobs), a last chunk per
    choice with its finish_reason, optionally usage, then ``data: [DONE]``. A client that goes away
    cancels its jobs (the engine drops them before the next step)."""
    open_ = len(jobs)
    try:
        while open_:
            got = await _next_event(engine, queue)
            if got is None:
                continue
            i, ev = got
            if ev.kind == "error":  # the status line is sent: the error travels as an event
                err = job_error(ev)
                yield f"data: {json.dumps(error_body(err.message, err.kind, code=err.code))}\n\n"
                if i < 0:
                    break
                open_ -= 1
                continue
            text, block = apply_event(states[i], ev)
            choice = choice_json(i, states[i], req, text)
            choice["finish_reason"] = ev.finish_reason if ev.kind == "done" else None
            if req.logprobs is not None and block["tokens"]:
                choice["logprobs"] = block
            if req.explain and ev.tokens and ev.tokens[0].explain is not None:
                choice["explain"] = states[i].explain[-1:]
            else:
                choice.pop("explain", None)
            if text or ev.kind == "done" or choice["logprobs"] is not None or "explain" in choice:
                yield f"data: {json.dumps({**head, 'choices': [choice]})}\n\n"
            if ev.kind == "done":
                open_ -= 1
        if include_usage:
            usage = usage_json(prompt_tokens, sum(s.completion_tokens for s in states))
            yield f"data: {json.dumps({**head, 'choices': [], 'usage': usage})}\n\n"
        yield "data: [DONE]\n\n"
    finally:
        for job in jobs:
            job.cancelled.set()
