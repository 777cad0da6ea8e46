"""An OpenAI completions request as jobs of the serving engine, and the engine's events as its choices.

What this module owns: the translation both ways, with no web framework in it (the routes are
:mod:`lmkit.serve.app`). Request -> jobs: :func:`settings_of` turns OpenAI's sampling fields into a
:class:`~lmkit.infer.sampling.GenerationConfig` and checks it with the same validation as ``lmkit
generate``'s flags (a bad value is a 400 naming the request's field); :func:`prompt_ids` encodes or
checks each prompt; :func:`fit_window` holds it to the context window (or, with ``truncate``, cuts it
from the left); :func:`build_jobs` checks the request against the model and the server's limits
(:class:`~lmkit.serve.schema.ServeOptions`) and makes one :class:`~lmkit.serve.batcher.Job` per
(prompt, choice), every check done before anything is queued. Events -> choices:
:class:`ChoiceState` folds one choice's events (:func:`apply_event`) into its text, token count,
finish reason and logprobs block; :func:`choice_json`, :func:`usage_json` and :func:`explain_json`
are OpenAI's shapes (and the playground's explanation); :func:`job_error` is the error a client gets
for a job the engine could not finish.

Invariants: choice ``p * n + c`` is prompt ``p``'s choice ``c``, with the seed
``choice_seed(seed, c)``: the same prompt and seed give the same choices wherever the prompt sits in
the request; a choice's ``text_offset`` counts characters of its text (a BOS adds none).
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

from lmkit.config_io import ConfigError
from lmkit.infer.sampling import GenerationConfig, choice_seed
from lmkit.serve.batcher import Engine, Event, Job
from lmkit.serve.guard import ApiError
from lmkit.serve.schema import CompletionRequest, ExplainRequest, ServeOptions

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
    """One step's explanation (the chosen token, its candidates' probabilities before and after the
    settings) as the playground reads it, tokens as text."""
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


def usage_json(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    """OpenAI's ``usage`` block."""
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def choice_json(index: int, state: ChoiceState, req: CompletionRequest, text: str) -> dict[str, Any]:
    """One entry of OpenAI's ``choices`` carrying ``text`` (its logprobs left to the caller)."""
    out: dict[str, Any] = {"index": index, "text": text, "logprobs": None, "finish_reason": state.finish_reason}
    if req.explain:
        out["explain"] = state.explain
    return out


def apply_event(state: ChoiceState, ev: Event) -> tuple[str, dict[str, Any]]:
    """Fold one event (not an error) into a choice; the text and logprobs it adds."""
    offset = len(state.text)
    block = state.add(ev, offset, counted=ev.kind == "token")
    state.text += ev.text
    if ev.kind == "done":
        state.finish_reason = ev.finish_reason
    return ev.text, block


def job_error(ev: Event) -> ApiError:
    """The error a client gets for a job the engine could not finish (only that request fails)."""
    if ev.finish_reason == "engine_stopped":
        return ApiError(503, ev.text, code="engine_stopped", kind="server_error")
    return ApiError(500, f"generation failed: {ev.text}", code="generation_failed", kind="server_error")
