"""lmkit against llama.cpp on the same weights: batch-1 greedy generation, and 8 clients at once.

llama.cpp comes from ``llama-cpp-python``'s source distribution, built once on this machine into a
cache (``~/.cache/lmkit-bench/llamacpp-venv``, a virtual environment of its own; ``--cache`` moves
it) with ``CMAKE_ARGS=-DGGML_NATIVE=ON`` (this CPU's instructions; ``-DLLAVA_BUILD=OFF``: no
multimodal library) and ``--build-jobs`` compile jobs (default 1: a shared 2-core machine). It is
never built in CI (``$CI`` set): the benchmark stops, saying so. One lmkit decoder of about 30M
parameters (d_model 512, 8 layers, 8 heads, SwiGLU, untied head; random weights, special tokens'
head rows zeroed so that neither side stops early; a byte-level BPE trained here on the machine's license texts) is saved, quantized to int8
(``lmkit quantize``) and exported with ``lmkit export --format gguf`` twice: F32 from the float
checkpoint, Q8_0 from the int8 one.

* batch 1: a 32-token prompt, then 128 greedy tokens (prompt processing included), timed for
  ``lmkit generate``'s decode loop (``lmkit.infer.generate.generate_ids``, the model loaded as
  ``lmkit generate`` loads it) and for llama.cpp (``llama_cpp.Llama``: evaluate the prompt, then
  one token at a time, the argmax of its logits), F32 against F32 and Q8_0 against lmkit's int8,
  each side on ``--threads`` threads, ``--runs`` times (median), the two sides one after the other
  in alternation. The first greedy tokens of the two are compared (F32 should agree).
* concurrency 8: 8 clients each send requests back to back for ``--seconds`` (the same 32-token
  prompt, 128 tokens, greedy) to ``lmkit serve`` (its own process, ``--threads``); llama.cpp runs
  its server's engine: 8 slots decoded together, one ``llama_decode`` per step with one token of
  every busy slot and a finished slot's next prompt joining the batch (what ``llama-server -np 8``
  does per step), in process, without HTTP. With ``--llama-server PATH`` (a ``llama-server``
  binary from a llama.cpp build; ``--llama-server build`` builds it once into the cache from the
  llama.cpp source inside the same source distribution) that server itself runs instead, over
  HTTP, with ``-np 8``.
  Completion tokens per second, F32, each side ``--rounds`` times in turn (median); lmkit's serve
  engine driven in process by 8 threads (no HTTP) is timed too, the like of llama.cpp's side.

Printed: tokens/s of each side and the ratios lmkit / llama.cpp (target at concurrency 8: >= 1),
then a closing note on what limits lmkit where llama.cpp is faster.

    python benchmarks/llamacpp_speed.py [--threads 1] [--runs 3] [--seconds 20] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import venv
from pathlib import Path
from typing import Any

import httpx
import torch

from lmkit.config import ModelConfig
from lmkit.infer.generate import generate_ids
from lmkit.infer.sampling import GenerationConfig
from lmkit.models import build_model
from lmkit.models.checkpoint import load_model, save_checkpoint
from lmkit.serve.local import free_port
from lmkit.ship.export_gguf import export_gguf
from lmkit.ship.quantize import quantize_checkpoint
from lmkit.tokenizer import Tokenizer, train_tokenizer

PROMPT, NEW, SLOTS = 32, 128, 8
VERSION = "0.3.36"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "lmkit-bench" / "llamacpp-venv"

# run by the cache's Python (llama_cpp is installed there, not beside lmkit)
CHILD = r"""
import ctypes, json, statistics, sys, time
import numpy as np
import llama_cpp as L
a = json.loads(sys.argv[1])
if a["mode"] == "batch1":
    llm = L.Llama(model_path=a["model"], n_ctx=a["ctx"], n_batch=a["prompt_len"], n_threads=a["threads"],
                  n_threads_batch=a["threads"], verbose=False)
    times, first = [], None
    for r in range(a["runs"] + 1):  # the first run warms up
        llm.reset()
        t0 = time.perf_counter()
        llm.eval(a["prompt"])
        out = []
        for _ in range(a["new"]):
            nxt = int(np.ctypeslib.as_array(L.llama_get_logits_ith(llm.ctx, -1), shape=(llm.n_vocab(),)).argmax())
            out.append(nxt)
            llm.eval([nxt])
        if r:
            times.append(time.perf_counter() - t0)
        first = first or out
    print(json.dumps({"s": statistics.median(times), "tokens": first}))
    sys.exit(0)
# slots: llama-server's engine, in process: SLOTS sequences decoded together
L.llama_backend_init()
model = L.llama_model_load_from_file(a["model"].encode(), L.llama_model_default_params())
cp = L.llama_context_default_params()
S, P = a["slots"], len(a["prompt"])
cp.n_ctx, cp.n_batch, cp.n_ubatch, cp.n_seq_max = S * a["ctx"], S * P, S * P, S
cp.n_threads = cp.n_threads_batch = a["threads"]
cp.kv_unified = True
ctx = L.llama_init_from_model(model, cp)
mem = L.llama_get_memory(ctx)
n_vocab = L.llama_vocab_n_tokens(L.llama_model_get_vocab(model))
batch = L.llama_batch_init(S * P, 0, S)
pos, made, last = [0] * S, [0] * S, [None] * S  # last None: the slot takes a new request
tokens, t0 = 0, time.perf_counter()
stop = t0 + a["seconds"]
while time.perf_counter() < stop:
    batch.n_tokens, rows = 0, {}
    def add(tok, p, s, want):
        i = batch.n_tokens
        batch.token[i], batch.pos[i], batch.n_seq_id[i], batch.logits[i] = tok, p, 1, want
        batch.seq_id[i][0] = s
        batch.n_tokens = i + 1
        return i
    for s in range(S):
        if last[s] is None:  # a new request: its prompt joins this step
            L.llama_memory_seq_rm(mem, s, -1, -1)
            for j, tok in enumerate(a["prompt"]):
                rows[s] = add(tok, j, s, j == P - 1)
            pos[s], made[s] = P, 0
        else:
            rows[s] = add(last[s], pos[s], s, True)
            pos[s] += 1
    if L.llama_decode(ctx, batch) != 0:
        raise SystemExit("llama_decode failed")
    for s, i in rows.items():
        logits = np.ctypeslib.as_array(L.llama_get_logits_ith(ctx, i), shape=(n_vocab,))
        last[s] = int(logits.argmax())
        made[s] += 1
        tokens += 1
        if made[s] == a["new"]:
            last[s] = None
wall = time.perf_counter() - t0
print(json.dumps({"tokens_per_s": tokens / wall, "tokens": tokens, "s": wall}))
"""


def ensure_llamacpp(cache: Path, jobs: int) -> Path:
    """The cache's Python with ``llama_cpp`` importable, building llama-cpp-python from source once."""
    py = cache / "bin" / "python"
    if py.is_file() and subprocess.run([py, "-c", "import llama_cpp"], capture_output=True).returncode == 0:
        return py
    if os.environ.get("CI"):
        raise SystemExit("llamacpp_speed: llama.cpp is built from source, which CI never does ($CI is set)")
    print(f"building llama-cpp-python {VERSION} from source into {cache} (once; {jobs} compile job(s)) ...")
    venv.EnvBuilder(with_pip=True).create(cache)
    env = {
        **os.environ,
        "CMAKE_ARGS": "-DGGML_NATIVE=ON -DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF",
        "CMAKE_BUILD_PARALLEL_LEVEL": str(jobs),
    }
    pip = [str(py), "-m", "pip", "install", "--no-binary", "llama-cpp-python", f"llama-cpp-python=={VERSION}"]
    subprocess.run(pip, env=env, check=True)
    return py


def ensure_llama_server(cache: Path, jobs: int) -> Path:
    """A ``llama-server`` binary built once from the llama.cpp source that llama-cpp-python's source
    distribution carries (``vendor/llama.cpp``, the same llama.cpp as the bindings), into the cache."""
    binary = cache / "server-build" / "bin" / "llama-server"
    if binary.is_file():
        return binary
    if os.environ.get("CI"):
        raise SystemExit("llamacpp_speed: llama-server is built from source, which CI never does ($CI is set)")
    py = ensure_llamacpp(cache, jobs)
    sdist = cache / "sdist"
    get = [str(py), "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "-d", str(sdist)]
    subprocess.run([*get, f"llama-cpp-python=={VERSION}"], check=True)
    tarball = next(sdist.glob(f"llama_cpp_python-{VERSION}.tar.gz"))
    shutil.unpack_archive(tarball, sdist)
    source = sdist / f"llama_cpp_python-{VERSION}" / "vendor" / "llama.cpp"
    build = cache / "server-build"
    print(f"building llama-server from {source} into {build} (once; {jobs} compile job(s)) ...")
    flags = ["-DGGML_NATIVE=ON", "-DLLAMA_BUILD_SERVER=ON", "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF"]
    flags += ["-DLLAMA_CURL=OFF", "-DCMAKE_BUILD_TYPE=Release"]
    subprocess.run(["cmake", "-S", str(source), "-B", str(build), *flags], check=True)
    subprocess.run(["cmake", "--build", str(build), "--target", "llama-server", "-j", str(jobs)], check=True)
    return binary


def license_texts() -> list[str]:
    texts = [p.read_text(errors="replace") for p in sorted(Path("/usr/share/common-licenses").glob("*")) if p.is_file()]
    return texts or ["the quick brown fox jumps over the lazy dog. " * 200]


def make_checkpoints(root: Path) -> tuple[Tokenizer, Path, Path, int]:
    """A ~30M-parameter decoder (float and int8 checkpoints) and its tokenizer; returns the parameter count."""
    tok = train_tokenizer(license_texts(), vocab_size=8192, show_progress=False)
    cfg = ModelConfig(
        family="decoder",
        vocab_size=tok.vocab_size,
        d_model=512,
        n_layers=8,
        n_heads=8,
        max_seq_len=256,
        tie_embeddings=False,
    )
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    with torch.no_grad():  # no special token ever wins: both sides make all 128 tokens
        head = model.get_parameter("lm_head.weight")
        head[sorted(tok.special_ids)] = 0.0
    n = sum(p.numel() for p in model.parameters())
    f32 = save_checkpoint(root / "f32", model, cfg, tokenizer=tok, meta={"step": 0})
    quantize_checkpoint(f32, root / "int8", to="int8", show_progress=False)
    return tok, f32, root / "int8", n


def time_lmkit(ckpt: Path, prompt: list[int], runs: int) -> tuple[float, list[int]]:
    """Median seconds of 128 greedy tokens after the prompt (prompt included) with lmkit's decode loop."""
    model = load_model(ckpt)
    gen = GenerationConfig(max_new_tokens=NEW, stop_at_eos=False)
    ids = torch.tensor([prompt])
    out = generate_ids(model, ids, gen)  # warm-up
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        generate_ids(model, ids, gen)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out[0, len(prompt) :].tolist()


def child(py: Path, **a: Any) -> dict[str, Any]:
    res = subprocess.run([str(py), "-c", CHILD, json.dumps(a)], capture_output=True, text=True)
    if res.returncode:
        raise SystemExit(f"llama.cpp run failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


async def _load(base: str, clients: int, seconds: float, body: dict[str, Any]) -> dict[str, float]:
    tokens, lat = 0, []
    stop = time.perf_counter() + seconds

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal tokens
        while time.perf_counter() < stop:
            t0 = time.perf_counter()
            r = await http.post(base + "/v1/completions", json=body)
            r.raise_for_status()
            lat.append(time.perf_counter() - t0)
            tokens += r.json()["usage"]["completion_tokens"]

    t0 = time.perf_counter()
    async with httpx.AsyncClient(timeout=600) as http:
        await asyncio.gather(*(client(http) for _ in range(clients)))
    wall = time.perf_counter() - t0
    return {"tokens_per_s": tokens / wall, "tokens": tokens, "p50_s": statistics.median(lat), "requests": len(lat)}


def engine_load(ckpt: Path, tok: Tokenizer, prompt: list[int], seconds: float) -> dict[str, float]:
    """SLOTS clients (threads) sending requests back to back to the engine of ``lmkit serve``
    (``lmkit.serve.batcher.Engine``) in this process, without HTTP: what llama.cpp's side measures."""
    from lmkit.serve.batcher import Engine, Event, Job

    engine = Engine(load_model(ckpt), tok, max_batch=16)
    tokens, lock = 0, threading.Lock()
    stop = time.perf_counter() + seconds

    def client() -> None:
        nonlocal tokens
        while time.perf_counter() < stop:
            done = threading.Event()

            def emit(e: Event, done: threading.Event = done) -> None:
                if e.kind in ("done", "error"):  # a job's last event
                    done.set()

            job = Job(prompt, NEW, GenerationConfig(max_new_tokens=NEW), emit)
            engine.submit([job])
            done.wait()
            with lock:
                tokens += len(job.generated)

    try:
        t0 = time.perf_counter()
        threads = [threading.Thread(target=client) for _ in range(SLOTS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
    finally:
        engine.close()
    return {"tokens_per_s": tokens / wall, "tokens": tokens, "s": wall}


def serve_load(cmd: list[str], base: str, seconds: float, body: dict[str, Any]) -> dict[str, float]:
    """Start a server (``cmd``), wait for /health, warm it, load it with SLOTS clients, stop it."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 300
        while True:
            try:
                if httpx.get(base + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                err = proc.stderr.read().decode()[-2000:] if proc.stderr else ""
                raise SystemExit(f"server did not start: {cmd[0]}\n{err}")
            time.sleep(0.5)
        asyncio.run(_load(base, 2, 2.0, {**body, "max_tokens": 8}))  # warm-up
        return asyncio.run(_load(base, SLOTS, seconds, body))
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:  # llama-server may linger over its slots after SIGTERM
            proc.kill()
            proc.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1, help="threads of each side (default 1)")
    ap.add_argument("--runs", type=int, default=3, help="timed runs per side at batch 1 (median)")
    ap.add_argument("--seconds", type=float, default=20.0, help="load time per server at concurrency 8")
    ap.add_argument("--rounds", type=int, default=2, help="rounds of the three concurrency-8 runs (median)")
    ap.add_argument("--cache", type=Path, default=CACHE, help="where llama-cpp-python is built and kept")
    ap.add_argument("--build-jobs", type=int, default=1, help="compile jobs of the one-time build (default 1)")
    ap.add_argument(
        "--llama-server",
        default=None,
        help="a llama-server binary to race over HTTP instead, or 'build': build it once into the cache from "
        "the llama.cpp source of llama-cpp-python's source distribution",
    )
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    py = ensure_llamacpp(args.cache, args.build_jobs)
    if args.llama_server == "build":
        args.llama_server = str(ensure_llama_server(args.cache, args.build_jobs))
    torch.set_num_threads(args.threads)
    res: dict[str, Any] = {"threads": args.threads}
    with tempfile.TemporaryDirectory(prefix="lmkit-llamacpp-") as tmp:
        root = Path(tmp)
        tok, f32, int8, n_params = make_checkpoints(root)
        res["params"] = n_params
        export_gguf(f32, root / "f32.gguf")
        export_gguf(int8, root / "q8_0.gguf")
        prompt = tok.encode(" ".join(license_texts())[:4000])[:PROMPT]
        common = {"prompt": prompt, "new": NEW, "ctx": 256, "threads": args.threads, "prompt_len": PROMPT}
        for name, ckpt, gguf_file in (("f32", f32, root / "f32.gguf"), ("int8-q8_0", int8, root / "q8_0.gguf")):
            ours_s, theirs_s, same = [], [], 0
            for _ in range(2):  # alternate the sides, so machine noise hits both
                s, ours = time_lmkit(ckpt, prompt, args.runs)
                ours_s.append(s)
                r = child(py, mode="batch1", model=str(gguf_file), runs=args.runs, **common)
                theirs_s.append(r["s"])
                same = next((i for i, (x, y) in enumerate(zip(ours, r["tokens"])) if x != y), NEW)
            res[name] = {
                "lmkit_tokens_per_s": NEW / statistics.median(ours_s),
                "llamacpp_tokens_per_s": NEW / statistics.median(theirs_s),
                "greedy_tokens_equal_before_first_difference": same,
            }
        body = {"prompt": prompt, "max_tokens": NEW, "temperature": 0}
        runs8: dict[str, list[dict[str, float]]] = {"lmkit_serve": [], "lmkit_engine": [], "llamacpp": []}
        how = "llama-server -np 8 over HTTP" if args.llama_server else "llama.cpp's 8-slot engine in process, no HTTP"
        for _ in range(args.rounds):  # the sides in turn, so load that comes and goes hits all of them
            port = free_port()
            lmkit_cmd = [str(Path(sys.executable).with_name("lmkit")), "serve", str(f32), "--port", str(port)]
            lmkit_cmd += ["--threads", str(args.threads)]
            runs8["lmkit_serve"].append(serve_load(lmkit_cmd, f"http://127.0.0.1:{port}", args.seconds, body))
            runs8["lmkit_engine"].append(engine_load(f32, tok, prompt, args.seconds))
            if args.llama_server:
                port = free_port()
                cmd = [args.llama_server, "-m", str(root / "f32.gguf"), "--port", str(port), "-np", str(SLOTS)]
                cmd += ["-c", str(SLOTS * 256), "-t", str(args.threads), "-tb", str(args.threads)]
                runs8["llamacpp"].append(
                    serve_load(cmd, f"http://127.0.0.1:{port}", args.seconds, {**body, "ignore_eos": True})
                )
            else:
                f = str(root / "f32.gguf")
                runs8["llamacpp"].append(child(py, mode="slots", model=f, slots=SLOTS, seconds=args.seconds, **common))
        ours8, engine8, theirs8 = (
            {"tokens_per_s": statistics.median(r["tokens_per_s"] for r in runs8[k]), "rounds": runs8[k]}
            for k in ("lmkit_serve", "lmkit_engine", "llamacpp")
        )
        res["concurrency8"] = {"lmkit_serve": ours8, "lmkit_engine": engine8, "llamacpp": theirs8, "llamacpp_how": how}
        res["gguf_bytes"] = {"f32": (root / "f32.gguf").stat().st_size, "q8_0": (root / "q8_0.gguf").stat().st_size}
    if args.json:
        print(json.dumps(res, indent=2))
        return
    print(
        f"\nmodel: {n_params / 1e6:.1f}M parameters (d_model 512, 8 layers, vocab {tok.vocab_size}); prompt {PROMPT} "
        f"tokens, {NEW} new, greedy; {args.threads} thread(s) per side"
    )
    print(f"{'batch 1':<12}{'lmkit tok/s':>13}{'llama.cpp tok/s':>17}{'lmkit / llama.cpp':>19}  greedy tokens equal")
    for name in ("f32", "int8-q8_0"):
        r = res[name]
        ratio = r["lmkit_tokens_per_s"] / r["llamacpp_tokens_per_s"]
        print(
            f"{name:<12}{r['lmkit_tokens_per_s']:>13.1f}{r['llamacpp_tokens_per_s']:>17.1f}{ratio:>18.2f}x  "
            f"first {r['greedy_tokens_equal_before_first_difference']} of {NEW}"
        )
    c = res["concurrency8"]
    theirs8 = c["llamacpp"]["tokens_per_s"]
    print(
        f"concurrency 8 ({how}): llama.cpp {theirs8:.1f} tok/s; lmkit serve (HTTP) "
        f"{c['lmkit_serve']['tokens_per_s']:.1f} tok/s = {c['lmkit_serve']['tokens_per_s'] / theirs8:.2f}x (target >= 1); "
        f"lmkit's serve engine in process {c['lmkit_engine']['tokens_per_s']:.1f} tok/s = "
        f"{c['lmkit_engine']['tokens_per_s'] / theirs8:.2f}x"
    )
    for line in closing_note(res):
        print(line)


def closing_note(res: dict[str, Any]) -> list[str]:
    """What limits lmkit where llama.cpp is faster, from the measured figures: a batch-1 step reads
    every weight once, so tokens/s x the weights' bytes is the memory traffic each side sustains."""
    out = ["", "where llama.cpp wins, what limits lmkit:"]
    mb = {k: v / 1e6 for k, v in res["gguf_bytes"].items()}
    f, q = res["f32"], res["int8-q8_0"]
    if f["lmkit_tokens_per_s"] < f["llamacpp_tokens_per_s"]:
        out.append(
            f"- F32, batch 1: each token reads all {mb['f32']:.0f} MB of weights once: lmkit sustains "
            f"{mb['f32'] * f['lmkit_tokens_per_s'] / 1e3:.2f} GB/s, llama.cpp {mb['f32'] * f['llamacpp_tokens_per_s'] / 1e3:.2f} "
            "GB/s. With the same bytes to read, the difference is the step itself: lmkit's is Python calling its "
            "products (the compiled panel kernel where it built, else MKL) and PyTorch operators for the rest, one "
            "call each, llama.cpp's one compiled ggml graph."
        )
    if q["lmkit_tokens_per_s"] < q["llamacpp_tokens_per_s"]:
        vs = "slower than" if q["lmkit_tokens_per_s"] < f["lmkit_tokens_per_s"] else "hardly faster than"
        out.append(
            f"- int8 against Q8_0, batch 1: llama.cpp reads {mb['q8_0']:.0f} MB per token (int8 blocks, multiplied "
            "by int8-quantized activations); lmkit's int8 layers convert each int8 matrix to a float copy on every "
            "call (y = x·float(q)ᵀ·scale) and int8 models take no packed decode path, so lmkit's int8 is "
            f"{vs} its F32 ({q['lmkit_tokens_per_s']:.1f} against {f['lmkit_tokens_per_s']:.1f} tok/s): an int8 "
            "matrix-vector kernel is what it lacks."
        )
    c = res["concurrency8"]
    if c["lmkit_serve"]["tokens_per_s"] < c["llamacpp"]["tokens_per_s"]:
        serve, engine = c["lmkit_serve"]["tokens_per_s"], c["lmkit_engine"]["tokens_per_s"]
        gain = engine / f["lmkit_tokens_per_s"]
        gain_l = c["llamacpp"]["tokens_per_s"] / f["llamacpp_tokens_per_s"]
        http = (
            f"lmkit serve's HTTP, JSON and text streaming cost it {1 - serve / engine:.0%} of its engine's speed"
            if serve < engine
            else f"HTTP is not what holds lmkit serve back (it gave {serve:.1f} tok/s, its engine alone {engine:.1f})"
        )
        out.append(
            f"- concurrency 8: batching lifts lmkit's engine {gain:.1f}x over its batch-1 speed and llama.cpp's "
            f"{gain_l:.1f}x; {http}. Engine against engine the ratio is {engine / c['llamacpp']['tokens_per_s']:.2f}x, "
            f"at batch 1 {f['lmkit_tokens_per_s'] / f['llamacpp_tokens_per_s']:.2f}x: a per-step gap like batch 1's, "
            "paid once per batched step."
        )
    return out if len(out) > 2 else []


if __name__ == "__main__":
    main()
