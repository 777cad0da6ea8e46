"""The HTTP edge of ``lmkit serve``: OpenAI's error shape, and what stands between a client and the app.

What this module owns:

* :class:`ApiError` and :func:`error_body`: every error ``lmkit serve`` answers has OpenAI's shape
  ``{"error": {"message", "type", "param", "code"}}``, whichever layer refuses the request.
* :class:`Guard`, a pure ASGI middleware in front of the routes: the body-size limit and the API key.
  The limit counts the body's bytes as they arrive, so a body sent without ``Content-Length``
  (``Transfer-Encoding: chunked``) is refused with 413 as soon as it passes the limit: the server
  never holds more than the limit plus one chunk of any request. (A ``Content-Length`` over the
  limit is refused before a byte is read.)
* :class:`ShapedCORS`: Starlette's CORS middleware whose refused preflight answers in the same
  error shape (with the CORS headers a browser reads).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send


def _keyed(path: str) -> bool:
    """Routes that need the API key (the playground page, /health, /tokenizer_info and the docs stay open)."""
    return path.startswith("/v1/") or path in ("/tokenize", "/detokenize")


class ApiError(Exception):
    """A client's mistake (or a failure it should hear about), answered with OpenAI's error shape."""

    def __init__(
        self,
        status: int,
        message: str,
        param: str | None = None,
        code: str | None = None,
        kind: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = status, message, param, code, kind


def error_body(message: str, kind: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    """OpenAI's error JSON."""
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def error_response(
    status: int,
    message: str,
    kind: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(error_body(message, kind, param, code), status_code=status, headers=headers)


class _BodyTooLarge(Exception):
    """Raised by receive() once a body passed the limit; whatever the app makes of it, the client gets a 413."""


class Guard:
    """Body size (counted as it arrives) and API key, before any route reads the request."""

    def __init__(self, app: ASGIApp, max_body_bytes: int, api_key: str | None = None) -> None:
        self.app, self.limit, self.api_key = app, max_body_bytes, api_key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = Headers(scope=scope)
        size = headers.get("content-length")
        if size is not None and size.isdigit() and (len(size) > 18 or int(size) > self.limit):
            return await self._too_large(scope, receive, send, f"request body of {size} bytes; at most {self.limit}")
        path = scope["path"]
        if self.api_key and scope["method"] != "OPTIONS" and _keyed(path):
            if headers.get("authorization", "") != f"Bearer {self.api_key}":
                return await error_response(
                    401,
                    "invalid API key (send Authorization: Bearer KEY)",
                    "authentication_error",
                    code="invalid_api_key",
                )(scope, receive, send)
        seen, over, started = 0, False, False

        async def counted() -> Message:
            nonlocal seen, over
            if over:
                raise _BodyTooLarge
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:  # stop reading here: the rest of the body is never received
                    over = True
                    raise _BodyTooLarge
            return message

        async def tracked(message: Message) -> None:
            nonlocal started
            if over:  # whatever the app answers to a body cut short, the client gets the 413 below
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, tracked)
        except Exception:
            if not over:
                raise
        if over and not started:
            await self._too_large(
                scope,
                receive,
                send,
                f"request body over the limit of {self.limit} bytes (counted as it arrived; the rest was not read)",
            )

    async def _too_large(self, scope: Scope, receive: Receive, send: Send, message: str) -> None:
        # the connection is closed after this answer: the unread rest of the body is never read
        await error_response(413, message, code="request_too_large", headers={"Connection": "close"})(
            scope, receive, send
        )


class ShapedCORS(CORSMiddleware):
    """CORS whose refused preflight (origin, method or header not allowed) is an OpenAI-shaped 400."""

    def preflight_response(self, request_headers: Headers) -> Response:
        plain = super().preflight_response(request_headers)
        if plain.status_code < 400:
            return plain
        reason = bytes(plain.body).decode("utf-8", "replace")  # "Disallowed CORS origin, headers"
        keep = {k: v for k, v in plain.headers.items() if k.lower() not in ("content-length", "content-type")}
        body = error_body(f"CORS preflight refused: {reason}", "invalid_request_error", code="cors_refused")
        return Response(json.dumps(body), status_code=plain.status_code, headers=keep, media_type="application/json")
