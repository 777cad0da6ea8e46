"""The ``lmkit serve`` command: its flags and its runner (load a checkpoint, start uvicorn)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from lmkit.cli.common import add_no_verify


def add_serve(sub: Any) -> None:
    p = sub.add_parser(
        "serve", help="serve a checkpoint over OpenAI's completions API, with a playground page",
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
                    "       -d '{\"prompt\": \"Once upon a time\", \"max_tokens\": 20, \"temperature\": 0}'")
    p.add_argument("checkpoint", help="checkpoint folder (decoder, encoder-decoder or encoder; int8 too), or a run folder")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--api-key", default=os.environ.get("LMKIT_API_KEY"),
                   help="require 'Authorization: Bearer KEY' on the API (default: $LMKIT_API_KEY, else open)")
    p.add_argument("--cors-origin", action="append", default=[], metavar="ORIGIN",
                   help="allow browser pages from ORIGIN to call the API (repeatable; '*' for any)")
    p.add_argument("--model-name", default=None, help="the model id clients send (default: the checkpoint folder's name)")
    p.add_argument("--max-batch", type=int, default=16,
                   help="most sequences decoded together (default 16; 1 turns batching off)")
    p.add_argument("--max-queue", type=int, default=64,
                   help="most requests waiting to join the batch; more get 429 (default 64)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    add_no_verify(p)
    p.set_defaults(func=_run_serve)


def load_engine(checkpoint: str, max_batch: int = 16, max_queue: int = 64, verify: bool = True) -> tuple[Any, str]:
    """The engine over a checkpoint, and the model name it is served under by default."""
    from lmkit.models.checkpoint import load_model, load_tokenizer, resolve_checkpoint
    from lmkit.serve.batcher import Engine

    ckpt = resolve_checkpoint(checkpoint)
    model = load_model(ckpt, verify=verify)
    tokenizer = load_tokenizer(ckpt, verify=verify)
    name = Path(ckpt).name if not Path(ckpt).name.startswith("ckpt-") else Path(ckpt).parent.name
    return Engine(model, tokenizer, max_batch=max_batch, max_queue=max_queue), name


def _run_serve(args: argparse.Namespace) -> int:
    import logging

    import torch
    import uvicorn

    from lmkit.errors import LmkitError
    from lmkit.serve.app import ServeOptions, create_app

    if not 1 <= args.port <= 65535:
        raise LmkitError(f"--port must be 1..65535, got {args.port}")
    if args.max_batch < 1 or args.max_queue < 1:
        raise LmkitError("--max-batch and --max-queue must be at least 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    engine, name = load_engine(args.checkpoint, args.max_batch, args.max_queue, verify=not args.no_verify)
    opts = ServeOptions(model_name=args.model_name or name, api_key=args.api_key, cors_origins=args.cors_origin)
    app = create_app(engine, opts)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    print(f"serving {opts.model_name} ({engine.family}, context window {engine.window} tokens) "
          f"on http://{args.host}:{args.port}/  (playground at /, API at /v1)", flush=True)
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    finally:
        engine.close()
    return 0
