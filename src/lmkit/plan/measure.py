"""Measuring this machine: its dense matmul peak (cached per process) and the peak FLOP/s MFU is
measured against. Not maths: kept apart so the rest of ``lmkit.plan`` stays pure.

torch is imported only inside the functions, so ``lmkit plan`` without ``--this-machine`` never
loads it.
"""

from __future__ import annotations

import functools
import math
import time
from typing import Any

from lmkit.errors import LmkitError
from lmkit.plan.compute import ACCELERATORS


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


__all__ = ["accelerator_peak", "device_peak_flops", "measure_matmul_peak"]
