"""A server in a background thread of this process, on a free loopback port: for notebooks,
benchmarks and tests that want a live OpenAI-compatible endpoint without a second process."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import uvicorn

from lmkit.serve.app import create_app
from lmkit.serve.schema import ServeOptions


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listened on when the call asked the system for one
    (another process may take it before the caller binds it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def background_server(engine: Any, model_name: str = "model", **opts: Any) -> Iterator[str]:
    """Serve ``engine`` for the duration of the block; yields the base URL (``http://127.0.0.1:PORT``).
    ``opts`` are further :class:`~lmkit.serve.schema.ServeOptions` fields (api_key, cors_origins, ...)."""
    port = free_port()
    config = uvicorn.Config(
        create_app(engine, ServeOptions(model_name=model_name, **opts)),
        host="127.0.0.1",
        port=port,
        log_level="warning",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="lmkit-serve", daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.05)
    else:
        server.should_exit = True
        raise RuntimeError(f"the background server on {url} did not start within 30 s")
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=10)
