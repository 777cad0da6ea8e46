"""Measuring this machine: its dense matmul peak (cached per process), the peak FLOP/s MFU is
measured against, and its runtime memory baseline (what every training process holds beside its
tensors, measured in a child process and cached per machine and library versions), and the
record of how far past plans were from what runs really used here. Not maths: kept apart so the
rest of ``lmkit.plan`` stays pure.

torch is imported only inside the functions, so ``lmkit plan`` without ``--this-machine`` never
loads it.
"""

from __future__ import annotations

import functools
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from lmkit.errors import LmkitError
from lmkit.plan.compute import ACCELERATORS
from lmkit.plan.memory import RUNTIME_BASELINE_BYTES

BASELINE_FILE = "runtime-baseline.json"
HISTORY_FILE = "memory-history.jsonl"
HISTORY_KEEP = 50


def accelerator_peak(name: str) -> float:
    """Datasheet dense 16-bit peak (FLOP/s) of a named accelerator; "this machine" is measured."""
    key = name.strip().lower()
    if key in ("this machine", "this", "here", "local", "cpu"):
        return measure_matmul_peak()
    for known, peak in ACCELERATORS.items():
        if known.lower() == key:
            return peak
    raise LmkitError(f"unknown accelerator {name!r} (known: {', '.join(ACCELERATORS)}, here)")


def measure_matmul_peak(dtype: Any = None, seconds: float = 0.4, device: Any = "cpu", size: int | None = None) -> float:
    """This machine's dense matmul throughput in FLOP/s: the best of repeated n×n products.

    dtype defaults to fp32 on CPU (16-bit has no fast path on most CPUs) and bf16 on GPUs.
    Results are cached per process (the trainer asks once per run).
    """
    import torch

    dev = torch.device(device)
    if dtype is None:
        dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    n = size or (8192 if dev.type == "cuda" else 1024)
    return _measure_cached(str(dev), str(dtype).removeprefix("torch."), n, float(seconds))


@functools.lru_cache(maxsize=16)
def _measure_cached(device: str, dtype_name: str, n: int, seconds: float) -> float:
    import torch

    dev = torch.device(device)
    dtype = getattr(torch, dtype_name)
    a = torch.randn(n, n, device=dev).to(dtype)
    b = torch.randn(n, n, device=dev).to(dtype)

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    for _ in range(2):  # warm-up: kernel selection, page faults
        torch.mm(a, b)
    sync()
    best = math.inf
    end = time.perf_counter() + seconds
    runs = 0
    while runs < 3 or time.perf_counter() < end:
        t0 = time.perf_counter()
        torch.mm(a, b)
        sync()
        best = min(best, time.perf_counter() - t0)
        runs += 1
    return 2.0 * n ** 3 / best


def device_peak_flops(device: Any = "cpu", precision: str = "fp32") -> float:
    """Peak FLOP/s to measure MFU against: the datasheet figure of a known GPU at 16-bit precision,
    otherwise a measured matmul peak in the training precision (fp32 on CPU)."""
    import torch

    dev = torch.device(device)
    if dev.type == "cuda" and precision in ("bf16", "fp16"):
        name = torch.cuda.get_device_name(dev)
        matches = [k for k in ACCELERATORS if k.lower() in name.lower()]
        if matches:
            return ACCELERATORS[max(matches, key=len)]
    if dev.type == "cuda":
        return measure_matmul_peak({"fp32": torch.float32, "bf16": torch.bfloat16,
                                    "fp16": torch.float16}[precision], device=dev)
    return measure_matmul_peak(torch.float32, device=dev)


# --------------------------------------------------------------------------- memory on this machine


def cache_dir() -> Path:
    """Where lmkit keeps what it measured about this machine: $LMKIT_CACHE, else
    $XDG_CACHE_HOME/lmkit, else ~/.cache/lmkit."""
    if os.environ.get("LMKIT_CACHE"):
        return Path(os.environ["LMKIT_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "lmkit"


def machine_key() -> str:
    """This machine and the library versions a runtime baseline depends on."""
    from importlib.metadata import PackageNotFoundError, version

    def v(pkg: str) -> str:
        try:
            return version(pkg)
        except PackageNotFoundError:
            return "-"

    parts = [platform.node(), platform.machine(), platform.python_version(), v("torch"), v("lmkit"),
             os.environ.get("LMKIT_MALLOC", "predictable")]
    return "|".join(parts)


def runtime_baseline(measure: bool = False) -> tuple[float, str]:
    """Bytes a training process holds beside its tensors, and where the figure comes from.

    ``measure``: run the probe now (a child process training a negligible model end to end) and
    cache the result; otherwise the cached figure for this machine, or lmkit's default."""
    path = cache_dir() / BASELINE_FILE
    key = machine_key()
    if not measure:
        try:
            saved = json.loads(path.read_text())
            if saved.get("key") == key:
                return float(saved["runtime_bytes"]), f"measured on this machine ({saved.get('when', '?')})"
        except (OSError, ValueError, KeyError):
            pass
        return float(RUNTIME_BASELINE_BYTES), "lmkit's default (lmkit plan --this-machine measures this machine's)"
    with tempfile.TemporaryDirectory(prefix="lmkit-probe-") as work:
        # the probe's own run goes in its scratch cache, not in this machine's track record
        env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "LMKIT_CACHE": work}
        done = subprocess.run([sys.executable, "-m", "lmkit.train.rss_probe", work], capture_output=True, text=True,
                              env=env, timeout=300)
    if done.returncode != 0:
        raise LmkitError(f"measuring the runtime baseline failed: {done.stderr.strip().splitlines()[-1:]}")
    value = float(json.loads(done.stdout.strip().splitlines()[-1])["runtime_bytes"])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"key": key, "runtime_bytes": value, "when": time.strftime("%Y-%m-%d")}) + "\n")
    tmp.replace(path)
    return value, "measured on this machine (now)"


def record_memory(predicted: float, measured: float, what: str) -> None:
    """Append a run's predicted and measured peak to this machine's history (kept short)."""
    path = cache_dir() / HISTORY_FILE
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lines = path.read_text().splitlines()[-(HISTORY_KEEP - 1):] if path.exists() else []
        lines.append(json.dumps({"key": machine_key(), "predicted": predicted, "measured": measured, "what": what,
                                 "when": time.strftime("%Y-%m-%dT%H:%M:%S")}))
        tmp = path.with_suffix(".tmp")
        tmp.write_text("\n".join(lines) + "\n")
        tmp.replace(path)
    except OSError:
        pass  # a read-only home: the run itself is unaffected


def memory_track_record() -> list[float]:
    """measured / predicted - 1 of the recent runs on this machine (same libraries), oldest first."""
    path = cache_dir() / HISTORY_FILE
    key = machine_key()
    out = []
    try:
        for line in path.read_text().splitlines():
            rec = json.loads(line)
            if rec.get("key") == key and rec.get("predicted"):
                out.append(float(rec["measured"]) / float(rec["predicted"]) - 1.0)
    except (OSError, ValueError):
        return []
    return out


__all__ = ["accelerator_peak", "cache_dir", "device_peak_flops", "machine_key", "measure_matmul_peak",
           "memory_track_record", "record_memory", "runtime_baseline"]
