"""Serving throughput: `lmkit serve` (dynamic batching) against itself with batching off and against
Hugging Face ``transformers``' ``generate`` behind the same FastAPI app, same weights.

A random lmkit decoder shaped like ``configs/cpu-small.yaml`` (d_model 256, 4 layers, 4 heads,
context 256; vocabulary of a BPE tokenizer trained here on the machine's license texts) is copied
into a ``transformers`` Llama; a random T5-layout encoder-decoder of the same width (4 + 4 layers)
uses the same tokenizer. Five servers run on loopback, each with the same app
(``lmkit.serve.app.create_app``), all started at once and loaded in turn, in rounds that visit them
in rotating order (each point is the median over the rounds, so a change in the machine's load
hits every server alike):

* ``lmkit``: the engine of ``lmkit serve`` (concurrent requests decoded together, through the
  packed decode step of ``lmkit generate``: ``lmkit.serve.rows``);
* ``lmkit-unbatched``: the same engine with ``--max-batch 1`` (one request at a time);
* ``hf-generate``: an engine that runs ``LlamaForCausalLM.generate`` for each request in turn;
* ``encdec``, ``encdec-unbatched``: the engine over the encoder-decoder, batched (its requests
  decoded together: ``lmkit.serve.seq2seq``) and with ``--max-batch 1``.

At concurrency 1, 8 and 32, that many clients each send requests (a 32-token prompt, 64 new
tokens, greedy) for a fixed time; printed per server and concurrency: aggregate completion
tokens/s, p50 and p99 request latency; then the ratios the issue targets: lmkit / hf-generate at
concurrency 1 (≥ 2×) and 8 (≥ 6×), and the encoder-decoder batched / unbatched at 8 (≥ 3×).

    python benchmarks/serve_speed.py [--seconds 8] [--rounds 3] [--threads 1] [--json] [--skip-encdec]

The servers run in this process, the clients in a second one (as real clients would), on this
machine's cores, the same for every server; ``--threads 1`` keeps the figures steady on a shared
2-core machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import statistics
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import torch

from lmkit.config import ModelConfig
from lmkit.models import build_model
from lmkit.models.hf_adapters.llama import config_to_hf as hf_config
from lmkit.models.hf_adapters.llama import llama_like_rules
from lmkit.models.registry import spec_of
from lmkit.serve.batcher import Engine, Event, Job, QueueFull, TokenInfo
from lmkit.serve.local import background_server
from lmkit.serve.stream import TextStream
from lmkit.tokenizer import Tokenizer, train_tokenizer

PROMPT, NEW = 32, 64


def license_texts() -> list[str]:
    texts = [p.read_text(errors="replace") for p in sorted(Path("/usr/share/common-licenses").glob("*")) if p.is_file()]
    return texts or ["the quick brown fox jumps over the lazy dog. " * 200]


def build_encdec(tok: Tokenizer, seed: int = 0) -> torch.nn.Module:
    """A random T5-layout encoder-decoder; its EOS row of the (tied) embedding is zeroed, so a greedy
    request makes all its tokens (a random model would otherwise end some requests early)."""
    torch.manual_seed(seed)
    cfg = ModelConfig(family="encdec", vocab_size=tok.vocab_size, d_model=256, n_layers=4, n_heads=4, max_seq_len=256)
    model = build_model(cfg).eval()
    with torch.no_grad():
        model.tok_emb.weight[tok.eos_id] = 0.0
    return model


def build(tok: Tokenizer, seed: int = 0) -> tuple[torch.nn.Module, torch.nn.Module]:
    """An lmkit decoder and a Hugging Face Llama holding exactly its weights."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = ModelConfig(family="decoder", vocab_size=tok.vocab_size, d_model=256, n_layers=4, n_heads=4, max_seq_len=256)
    model = build_model(cfg).eval()
    hf_cfg = {k: v for k, v in hf_config(cfg).items() if k not in ("architectures", "model_type")}
    hf = LlamaForCausalLM(LlamaConfig(**hf_cfg, attn_implementation="sdpa")).eval()
    ours, theirs = model.state_dict(), hf.state_dict()
    with torch.no_grad():
        for name, hf_name in ((r.ours[0], r.theirs) for r in llama_like_rules(cfg)):
            theirs[hf_name].copy_(ours[name])
    hf.generation_config.eos_token_id = tok.eos_id
    hf.generation_config.pad_token_id = tok.pad_id
    return model, hf


class HFEngine:
    """The engine interface of :class:`lmkit.serve.batcher.Engine` over ``transformers.generate``,
    one request after another (what putting ``generate`` behind a web app gives)."""

    def __init__(self, hf: torch.nn.Module, tokenizer: Tokenizer, window: int, max_queue: int = 64) -> None:
        self.model, self.tokenizer, self.window, self.family = hf, tokenizer, window, "decoder"
        self.spec = spec_of(self.family)  # what the app asks of the family, as an Engine's
        self.max_queue = max_queue
        self.plain = set(tokenizer.special_ids)
        self._jobs: list[Job] = []
        self._cv = threading.Condition()
        self._closed = False
        self.failure: str | None = None  # read by the app's /health, as an Engine's
        self.stats = {"steps": 0, "batched_rows": 0, "finished": 0, "cancelled": 0}
        threading.Thread(target=self._run, daemon=True).start()

    def submit(self, jobs: list[Job]) -> None:
        with self._cv:
            if len(self._jobs) + len(jobs) > self.max_queue:
                raise QueueFull("queue full")
            self._jobs.extend(jobs)
            self._cv.notify()

    def busy(self) -> dict[str, int]:
        return {"running": 0, "waiting": len(self._jobs), **self.stats}

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify()

    def _run(self) -> None:
        torch.set_grad_enabled(False)
        while True:
            with self._cv:
                while not self._jobs and not self._closed:
                    self._cv.wait()
                if self._closed:
                    return
                job = self._jobs.pop(0)
            s = job.settings
            kw: dict[str, Any] = {"do_sample": not s.greedy}
            if not s.greedy:
                torch.manual_seed(s.seed or 0)
                kw.update(temperature=s.temperature, top_k=s.top_k or 0, top_p=s.top_p or 1.0)
            ids = torch.tensor([job.prompt_ids])
            out = self.model.generate(ids, max_new_tokens=job.max_tokens, **kw)[0, ids.shape[1] :].tolist()
            stream = TextStream(job.stop)
            for tok in out:
                if tok == self.tokenizer.eos_id:
                    break
                piece = stream.push(b"" if tok in self.plain else self.tokenizer.token_bytes(tok))
                job.emit(Event("token", [TokenInfo(tok, None)], text=piece))
            self.stats["finished"] += 1
            job.emit(Event("done", text=stream.finish(), finish_reason="length"))


async def load(base: str, concurrency: int, seconds: float, prompt: list[int]) -> dict[str, float]:
    """``concurrency`` clients sending requests back to back for ``seconds``."""
    latencies: list[float] = []
    tokens = 0
    stop_at = time.perf_counter() + seconds

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal tokens
        while time.perf_counter() < stop_at:
            t0 = time.perf_counter()
            r = await http.post(base + "/v1/completions", json={"prompt": prompt, "max_tokens": NEW, "temperature": 0})
            r.raise_for_status()
            latencies.append(time.perf_counter() - t0)
            tokens += r.json()["usage"]["completion_tokens"]

    t0 = time.perf_counter()
    async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=concurrency + 4)) as http:
        await asyncio.gather(*(client(http) for _ in range(concurrency)))
    wall = time.perf_counter() - t0
    lat = sorted(latencies)
    return {
        "tokens_per_s": tokens / wall,
        "p50_s": statistics.median(lat),
        "p99_s": lat[min(len(lat) - 1, int(len(lat) * 0.99))],
        "requests": len(lat),
    }


def run_load(base: str, concurrency: int, seconds: float, prompt: list[int]) -> dict[str, float]:
    """``load`` in the clients' process. A failure comes back as a RuntimeError naming it: httpx's
    own errors do not survive the trip back (unpickling one kills the pool's result thread: a hang)."""
    try:
        return asyncio.run(load(base, concurrency, seconds, prompt))
    except Exception as e:
        detail = e.response.text[:300] if isinstance(e, httpx.HTTPStatusError) else ""
        raise RuntimeError(f"{base}: {type(e).__name__}: {e} {detail}") from None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=8.0, help="load time per server and concurrency")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=3, help="rounds over all servers (each point: their median)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--skip-encdec", action="store_true", help="leave out the encoder-decoder servers")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    tok = train_tokenizer(license_texts(), vocab_size=4096, show_progress=False)
    model, hf = build(tok)
    prompt = tok.encode(" ".join(license_texts())[:2000])[:PROMPT]
    engines: dict[str, Any] = {
        "lmkit": lambda: Engine(model, tok, max_batch=32, max_queue=64),
        "lmkit-unbatched": lambda: Engine(model, tok, max_batch=1, max_queue=64),
        "hf-generate": lambda: HFEngine(hf, tok, window=256),
    }
    if not args.skip_encdec:
        encdec = build_encdec(tok)
        engines["encdec"] = lambda: Engine(encdec, tok, max_batch=32, max_queue=64)
        engines["encdec-unbatched"] = lambda: Engine(encdec, tok, max_batch=1, max_queue=64)
    results: dict[str, dict[int, dict[str, float]]] = {}
    # the clients run in a process of their own, as real clients do: their work does not compete
    # with the server for this process's interpreter lock. Every server is up at once (an idle one
    # waits without using the CPU) and the rounds visit them in rotating order, so a change in the
    # machine's load hits all of them alike; each point is the median over the rounds.
    runs: dict[str, dict[int, list[dict[str, float]]]] = {name: {c: [] for c in args.concurrency} for name in engines}
    with multiprocessing.get_context("spawn").Pool(1) as clients, contextlib.ExitStack() as stack:
        bases = {}
        for name, make in engines.items():
            engine = make()
            stack.callback(engine.close)  # after its server has stopped (callbacks run last first)
            bases[name] = stack.enter_context(background_server(engine, model_name="bench"))
            clients.apply(run_load, (bases[name], 2, 1.0, prompt))  # warm-up
        names = list(engines)
        for r in range(args.rounds):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                for c in args.concurrency:
                    runs[name][c].append(clients.apply(run_load, (bases[name], c, args.seconds, prompt)))
    for name, by_c in runs.items():
        results[name] = {
            c: {
                **{k: statistics.median(x[k] for x in xs) for k in ("tokens_per_s", "p50_s", "p99_s")},
                "requests": sum(x["requests"] for x in xs),
            }
            for c, xs in by_c.items()
        }
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(
        f"\nmodel: vocab {tok.vocab_size}, d_model 256, 4 layers; prompt {PROMPT} tokens, {NEW} new, greedy; "
        f"{args.threads} torch thread(s), median of {args.rounds} round(s) of {args.seconds:g} s per point"
    )
    print(f"{'server':<17}{'clients':>8}{'tokens/s':>11}{'p50 ms':>9}{'p99 ms':>9}{'requests':>10}")
    for name, by_c in results.items():
        for c, r in by_c.items():
            print(
                f"{name:<17}{c:>8}{r['tokens_per_s']:>11.0f}{r['p50_s'] * 1000:>9.0f}{r['p99_s'] * 1000:>9.0f}"
                f"{r['requests']:>10.0f}"
            )

    def ratio(a: str, b: str, c: int) -> float:
        return results[a][c]["tokens_per_s"] / results[b][c]["tokens_per_s"]

    print()
    for c, target in ((1, 2), (8, 6)):
        if c in args.concurrency:
            print(
                f"at {c} client(s): lmkit / hf-generate = {ratio('lmkit', 'hf-generate', c):.2f}x (target >= {target}), "
                f"lmkit / unbatched = {ratio('lmkit', 'lmkit-unbatched', c):.2f}x"
            )
    if 8 in args.concurrency and "encdec" in results:
        print(f"at 8 clients: encdec / encdec-unbatched = {ratio('encdec', 'encdec-unbatched', 8):.2f}x (target >= 3)")


if __name__ == "__main__":
    main()
