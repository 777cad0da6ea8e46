"""The web app of ``lmkit serve``: OpenAI's completions API over an :class:`~lmkit.serve.batcher.Engine`.

Routes: ``POST /v1/completions`` (text or token-id prompts, ``n``, ``stop``, ``seed``, ``logprobs``,
``echo``, server-sent-event streaming ending in ``data: [DONE]``), ``POST /v1/fill-mask`` (encoder
checkpoints), ``GET /v1/models``, ``GET /health``, ``POST /tokenize``, ``POST /detokenize``, ``GET /tokenizer_info``,
``POST /v1/explain`` (the next-token distribution before and after the settings, for the
playground) and ``GET /`` (the playground page in ``static/``).

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
import dataclasses
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from lmkit.config import ConfigError
from lmkit.errors import LmkitError
from lmkit.infer.fillmask import fill_mask as run_fill_mask
from lmkit.infer.sampling import GenerationConfig, choice_seed, choose_next
from lmkit.models.protocols import MaskedLM
from lmkit.serve.batcher import Engine, EngineStopped, Event, Job, QueueFull
from lmkit.serve.guard import ApiError, Guard, ShapedCORS, error_body, error_response
from lmkit.serve.schema import CompletionRequest, DetokenizeRequest, ExplainRequest, FillMaskRequest, TokenizeRequest

LOG = logging.getLogger("lmkit.serve")
STATIC = Path(__file__).with_name("static")


@dataclass
class ServeOptions:
    """Limits and access settings of one server."""

    model_name: str
    api_key: str | None = None
    cors_origins: list[str] = field(default_factory=list)
    max_n: int = 8
    max_logprobs: int = 20
    max_prompts: int = 64
    max_body_bytes: int = 2 * 1024 * 1024


# --------------------------------------------------------------------------- request -> jobs


# lmkit's setting -> the request field a client sent
_PARAMS = {
    "max_new_tokens": "max_tokens",
    "temperature": "temperature",
    "top_k": "top_k",
    "top_p": "top_p",
    "seed": "seed",
}


def settings_of(req: CompletionRequest | ExplainRequest, max_tokens: int, seed: int | None) -> GenerationConfig:
    """OpenAI's sampling fields as lmkit's settings (temperature 0 is greedy; top_k ≤ 0 is off), checked
    by the same validation as ``lmkit generate``'s flags: a bad value is a 400 naming its field."""
    top_k = req.top_k if req.top_k is not None and req.top_k > 0 else None
    settings = GenerationConfig(
        max_new_tokens=max(1, max_tokens),
        do_sample=req.temperature > 0,
        temperature=req.temperature,
        top_k=top_k,
        top_p=req.top_p if req.top_p < 1.0 else None,
        seed=seed,
    )
    try:
        settings.validate(names=_PARAMS)
    except ConfigError as exc:
        raise ApiError(400, str(exc), _PARAMS.get(exc.key or "", exc.key)) from exc
    return settings


def prompt_ids(engine: Engine, req: CompletionRequest, opts: ServeOptions) -> list[list[int]]:
    """Token ids of each prompt of the request (text is encoded; ids are checked)."""
    tok = engine.tokenizer
    p = req.prompt
    prompts: list[str | list[int]]
    if isinstance(p, str):
        prompts = [p]
    elif p and all(isinstance(x, int) for x in p):
        prompts = [list(p)]  # type: ignore[arg-type]
    else:
        prompts = list(p)  # type: ignore[arg-type]
    if not prompts:
        raise ApiError(400, "prompt must not be an empty list", "prompt")
    if len(prompts) > opts.max_prompts:
        raise ApiError(413, f"{len(prompts)} prompts in one request; at most {opts.max_prompts}", "prompt")
    out = []
    for item in prompts:
        if isinstance(item, str):
            if engine.spec.decodes == "seq2seq":  # the encoder reads it; the output starts afresh
                ids = tok.encoder_ids(item)
            else:
                ids = tok.prompt_ids(item) if item or max(tok.bos_id, tok.separator_id) >= 0 else []  # BOS first
        else:
            bad = next((i for i in item if not 0 <= i < tok.vocab_size), None)
            if bad is not None:
                raise ApiError(400, f"token id {bad} is outside the vocabulary (0..{tok.vocab_size - 1})", "prompt")
            ids = list(item)
        if not ids:
            raise ApiError(400, "prompt is empty and the tokenizer has no BOS token to start from", "prompt")
        out.append(ids)
    return out


def fit_window(ids: list[int], max_tokens: int, window: int, truncate: bool, causal: bool) -> list[int]:
    """The prompt, checked (or with ``truncate``, cut from the left) to fit the context window
    (``causal``: the output continues the prompt in the same window, as a decoder's does)."""
    need = len(ids) + (max_tokens if causal else 0)
    if need <= window and (not causal or len(ids) < window or max_tokens == 0):
        return ids
    if truncate:
        keep = window - max_tokens if causal else window
        if keep >= 1:
            return ids[len(ids) - keep :]
    raise ApiError(
        400,
        f"this model's context window is {window} tokens, but {need} were requested "
        f"({len(ids)} in the prompt, {max_tokens} to generate); shorten the prompt, lower "
        "max_tokens, or set truncate",
        "prompt",
        "context_length_exceeded",
    )


def build_jobs(
    engine: Engine, req: CompletionRequest, opts: ServeOptions
) -> tuple[list[Job], list[list[int]], asyncio.Queue[tuple[int, Event]]]:
    """One job per (prompt, choice); events of all arrive on one queue tagged with the choice index."""
    if not engine.spec.generates:
        raise ApiError(
            400,
            f"this is an {engine.family} (masked language model) checkpoint: it fills masks "
            "(POST /v1/fill-mask) and does not complete text",
            "model",
            "model_not_generative",
        )
    if req.n > opts.max_n:
        raise ApiError(400, f"n is {req.n}; at most {opts.max_n}", "n")
    if req.logprobs is not None and req.logprobs > opts.max_logprobs:
        raise ApiError(400, f"logprobs is {req.logprobs}; at most {opts.max_logprobs}", "logprobs")
    if engine.spec.decodes == "seq2seq" and req.echo and req.logprobs is not None:
        raise ApiError(400, "an encoder-decoder does not score its input: echo with logprobs needs a decoder", "echo")
    stops = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
    if len(stops) > 4 or any(not s for s in stops):
        raise ApiError(400, "stop takes up to 4 non-empty strings", "stop")
    window = engine.window
    max_tokens = req.max_tokens if req.max_tokens is not None else window
    if max_tokens > window:
        raise ApiError(
            400,
            f"max_tokens is {max_tokens} but the context window is {window} tokens",
            "max_tokens",
            "context_length_exceeded",
        )
    settings = settings_of(req, max_tokens, req.seed)  # checked before anything is encoded or queued
    prompts = [
        fit_window(ids, max_tokens, window, req.truncate, engine.spec.decodes == "causal")
        for ids in prompt_ids(engine, req, opts)
    ]
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[int, Event]] = asyncio.Queue()
    jobs = []
    for p_i, ids in enumerate(prompts):
        for c in range(req.n):
            index = p_i * req.n + c
            # each choice its own generator; the same prompt and seed give the same choices wherever it sits
            seed = None if settings.seed is None else choice_seed(settings.seed, c)

            def emit(ev: Event, i: int = index) -> None:
                loop.call_soon_threadsafe(queue.put_nowait, (i, ev))

            own = dataclasses.replace(settings, seed=seed)
            jobs.append(Job(ids, max_tokens, own, emit, stops, req.logprobs, req.echo, req.explain))
    return jobs, prompts, queue


# --------------------------------------------------------------------------- jobs -> OpenAI shapes


class ChoiceState:
    """What one choice has produced so far, and its logprobs block in OpenAI's shape."""

    def __init__(self, engine: Engine, with_tokens: bool) -> None:
        self.engine = engine
        self.with_tokens = with_tokens  # build the logprobs block (only when the request asked for it)
        self.text = ""
        self.tokens: list[str] = []
        self.token_logprobs: list[float | None] = []
        self.top_logprobs: list[dict[str, float] | None] = []
        self.text_offset: list[int] = []
        self.explain: list[dict[str, Any]] = []
        self.completion_tokens = 0
        self.finish_reason: str | None = None

    def add(self, ev: Event, offset: int, counted: bool) -> dict[str, Any]:
        """Record an event's tokens; returns the logprobs block of just these tokens."""
        tok = self.engine.tokenizer
        block: dict[str, list[Any]] = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
        for info in ev.tokens:
            if counted:
                self.completion_tokens += 1
            if info.explain is not None:
                self.explain.append(explain_json(tok, info.explain))
            if not self.with_tokens:
                continue
            s = tok.token_str(info.token_id)
            top = None if info.top is None else {tok.token_str(i): lp for i, lp in info.top}
            row = {"tokens": s, "token_logprobs": info.logprob, "top_logprobs": top, "text_offset": offset}
            for key, value in row.items():
                block[key].append(value)
                getattr(self, key).append(value)
            lead = offset == 0 and len(self.tokens) == 2 and tok.space_before_text and s[:1] == " "  # ▁ put first
            offset += 0 if info.token_id in self.engine.plain else len(s) - lead  # BOS adds no text
        return block


def explain_json(tok: Any, expl: Any) -> dict[str, Any]:
    return {
        "chosen": tok.token_str(expl.chosen),
        "chosen_id": expl.chosen,
        "kept": expl.kept,
        "mode": expl.mode,
        "candidates": [
            {"token": tok.token_str(c.token_id), "id": c.token_id, "p_before": c.p_before, "p_after": c.p_after}
            for c in expl.candidates
        ],
    }


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
        choices = [_choice(i, s, req, s.text) for i, s in enumerate(states)]
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
        return {**head, "choices": choices, "usage": _usage(prompt_tokens, completion)}

    return app


def _fixed_generator() -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(0)
    return g


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def _choice(index: int, state: ChoiceState, req: CompletionRequest, text: str) -> dict[str, Any]:
    out: dict[str, Any] = {"index": index, "text": text, "logprobs": None, "finish_reason": state.finish_reason}
    if req.explain:
        out["explain"] = state.explain
    return out


def _apply(state: ChoiceState, ev: Event) -> tuple[str, dict[str, Any]]:
    """Fold one event (not an error) into a choice; the text and logprobs it adds."""
    offset = len(state.text)
    block = state.add(ev, offset, counted=ev.kind == "token")
    state.text += ev.text
    if ev.kind == "done":
        state.finish_reason = ev.finish_reason
    return ev.text, block


def _failed(ev: Event) -> ApiError:
    """The error a client gets for a job the engine could not finish (only that request fails)."""
    if ev.finish_reason == "engine_stopped":
        return ApiError(503, ev.text, code="engine_stopped", kind="server_error")
    return ApiError(500, f"generation failed: {ev.text}", code="generation_failed", kind="server_error")


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
            raise _failed(ev)
        _apply(states[i], ev)
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
                err = _failed(ev)
                yield f"data: {json.dumps(error_body(err.message, err.kind, code=err.code))}\n\n"
                if i < 0:
                    break
                open_ -= 1
                continue
            text, block = _apply(states[i], ev)
            choice = _choice(i, states[i], req, text)
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
            usage = _usage(prompt_tokens, sum(s.completion_tokens for s in states))
            yield f"data: {json.dumps({**head, 'choices': [], 'usage': usage})}\n\n"
        yield "data: [DONE]\n\n"
    finally:
        for job in jobs:
            job.cancelled.set()
