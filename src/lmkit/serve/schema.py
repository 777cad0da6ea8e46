"""The request bodies ``lmkit serve`` accepts, as pydantic models: which fields, their types and ranges.

A body that does not fit is answered with 400 in OpenAI's error shape naming the field (the app's
validation handler) before any route runs. Text fields must be valid Unicode (:data:`Text`): JSON can
carry a lone UTF-16 surrogate (``"\\ud800"``) that no tokenizer can encode and no answer can echo.
Settings whose range depends on the model or on each other (the context window, the seed, ``n``)
are checked where the request becomes jobs (:func:`lmkit.serve.jobs.build_jobs`).

:class:`ServeOptions` is the other side: what one server holds every request to (its model's name,
the API key, the CORS origins, and the limits on ``n``, ``logprobs``, prompts per request and body
size).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from lmkit.tokenizer import lone_surrogate


def _unicode(text: str) -> str:
    """Text a tokenizer can encode and a JSON answer can carry (``"\\ud800"`` is valid JSON, not text)."""
    bad = lone_surrogate(text)
    if bad:
        raise ValueError(f"not valid Unicode text: {bad}")
    return text


Text = Annotated[str, AfterValidator(_unicode)]


class CompletionRequest(BaseModel):
    """The fields of OpenAI's completions request that lmkit reads (others are ignored)."""

    model_config = ConfigDict(extra="allow")
    model: str | None = None
    prompt: Text | list[Text] | list[int] | list[list[int]] = ""
    max_tokens: int | None = Field(16, ge=0)
    temperature: float = Field(1.0, ge=0.0, le=100.0, allow_inf_nan=False)
    top_p: float = Field(1.0, gt=0.0, le=1.0, allow_inf_nan=False)
    top_k: int | None = Field(None, ge=-1)
    n: int = Field(1, ge=1)
    stop: Text | list[Text] | None = None
    seed: int | None = None
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    logprobs: int | None = Field(None, ge=0)
    echo: bool = False
    user: str | None = None
    explain: bool = False  # lmkit: per-token candidates before/after the settings (the playground)
    truncate: bool = False  # lmkit: keep the end of a prompt too long for the context window


class ExplainRequest(BaseModel):
    prompt: Text = ""
    temperature: float = Field(1.0, ge=0.0, le=100.0, allow_inf_nan=False)
    top_p: float = Field(1.0, gt=0.0, le=1.0, allow_inf_nan=False)
    top_k: int | None = Field(None, ge=-1)
    candidates: int = Field(10, ge=1, le=50)


class TokenizeRequest(BaseModel):
    prompt: Text


class DetokenizeRequest(BaseModel):
    tokens: list[int]


class FillMaskRequest(BaseModel):
    text: Text
    top_k: int = Field(5, ge=1, le=50)


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
