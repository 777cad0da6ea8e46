"""The ``lmkit serve`` command: its flags and its runner (load the engine over a checkpoint with
:func:`lmkit.serve.batcher.load_engine`, build the app, start uvicorn)."""

from __future__ import annotations

import argparse
import os
from typing import Any

from lmkit.cli.common import add_checkpoint, add_no_verify, add_threads

SHUTDOWN_S = 10  # seconds requests in flight get to finish once the server is told to stop
# seconds an idle kept-alive connection stays open: longer than uvicorn's 5 s, so a client whose pooled
# connection sat idle while its loop was busy does not reuse one the server is closing (a dropped read)
KEEP_ALIVE_S = 75


def add_serve(sub: Any) -> None:
    p = sub.add_parser(
        "serve",
        help="serve a checkpoint over OpenAI's completions API, with a playground page",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Serve CKPT over HTTP with the API every OpenAI client speaks, and open a playground\n"
        "page at http://HOST:PORT/ that shows what temperature, top-k and top-p do to the\n"
        "next-token distribution.\n\n"
        "Endpoints:\n"
        "  POST /v1/completions   prompt -> completion (stream, n, stop, seed, logprobs, echo)\n"
        "  POST /v1/fill-mask     an encoder checkpoint fills [MASK]s\n"
        "  GET  /v1/models, GET /health, POST /tokenize, POST /detokenize, POST /v1/explain\n\n"
        "Concurrent requests are decoded together (dynamic batching over the KV cache): new\n"
        "requests join between decode steps and finished ones leave, so 8 clients cost about\n"
        "one step each, not eight. With a fixed seed a request gives the same tokens alone or in\n"
        "a crowd. Evaluation harnesses score through it: echo + logprobs returns the prompt's\n"
        "own log-probabilities.\n\n"
        "examples:\n"
        "  lmkit serve runs/x\n"
        "  lmkit serve runs/x --port 8080 --api-key secret --cors-origin http://localhost:3000\n"
        "  curl http://127.0.0.1:8000/v1/completions -H 'Content-Type: application/json' \\\n"
        '       -d \'{"prompt": "Once upon a time", "max_tokens": 20, "temperature": 0}\'',
    )
    add_checkpoint(p, "checkpoint folder (decoder, encoder-decoder or encoder; int8 too)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument(
        "--api-key",
        default=os.environ.get("LMKIT_API_KEY"),
        help="require 'Authorization: Bearer KEY' on the API (default: $LMKIT_API_KEY, else open)",
    )
    p.add_argument(
        "--cors-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="allow browser pages from ORIGIN to call the API (repeatable; '*' for any)",
    )
    p.add_argument(
        "--model-name", default=None, help="the model id clients send (default: the checkpoint folder's name)"
    )
    p.add_argument(
        "--max-batch", type=int, default=16, help="most sequences decoded together (default 16; 1 turns batching off)"
    )
    p.add_argument(
        "--max-queue", type=int, default=64, help="most requests waiting to join the batch; more get 429 (default 64)"
    )
    add_threads(p, None, "the model runs on")
    add_no_verify(p)
    p.set_defaults(func=_run_serve)


def _run_serve(args: argparse.Namespace) -> int:
    import logging

    import torch
    import uvicorn

    from lmkit.errors import LmkitError
    from lmkit.serve.app import create_app
    from lmkit.serve.batcher import load_engine
    from lmkit.serve.schema import ServeOptions

    if not 1 <= args.port <= 65535:
        raise LmkitError(f"--port must be 1..65535, got {args.port}")
    if args.max_batch < 1 or args.max_queue < 1:
        raise LmkitError("--max-batch and --max-queue must be at least 1")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    engine, name = load_engine(args.checkpoint, args.max_batch, args.max_queue, verify=not args.no_verify)
    opts = ServeOptions(model_name=args.model_name or name, api_key=args.api_key, cors_origins=args.cors_origin)
    app = create_app(engine, opts)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    print(
        f"serving {opts.model_name} ({engine.family}, context window {engine.window} tokens) "
        f"on http://{args.host}:{args.port}/  (playground at /, API at /v1)",
        flush=True,
    )
    try:
        # SIGTERM/Ctrl-C: stop taking requests, give those in flight SHUTDOWN_S seconds, then stop anyway
        uvicorn.run(
            app,
            host=args.host,
            port=args.port,
            log_level="info",
            timeout_graceful_shutdown=SHUTDOWN_S,
            timeout_keep_alive=KEEP_ALIVE_S,
        )
    finally:
        engine.close()
    return 0
