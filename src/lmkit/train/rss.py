"""Whole-process memory of a training run: the peak a user sees, an allocator that keeps it where
the plan says, and the plan's prediction for a run to set beside it (meta.json, metrics.jsonl).

On Linux, glibc's malloc grows its threshold for returning big blocks to the system as soon as
one is freed, after which activations of tens of MB come from the heap and their pages stay
resident when freed: a CPU run's peak RSS then sits 150-200 MB above the bytes its tensors need
at once, by an amount no formula predicts. :func:`predictable_malloc` fixes the threshold at
128 KiB (``mallopt(M_MMAP_THRESHOLD)``, what ``MALLOC_MMAP_THRESHOLD_=131072`` does), so every
large tensor is mapped and unmapped on its own and the resident size follows the live tensors
(``lmkit plan``'s estimate). The price is page faults: every step maps fresh pages for its
activations. Measured on a 2-core x86-64 machine (cpu-small, micro-batch 8, median tokens/s of two
alternating 10-step runs each): 3,399 and 4,440 tokens/s lean against 4,855 and 6,600 with glibc's
default, whose peak RSS was 917-930 MB against 705-706 MB lean (plan: 722 MB). A run that is
far from filling memory can take the speed: ``LMKIT_MALLOC=glibc`` leaves the allocator alone
(the plan is then ~20-25% low on a CPU; ``CPU_RSS_FACTOR``).

:func:`peak_rss_bytes` reads the process's peak resident size (``VmHWM``; Linux carries
getrusage's ``ru_maxrss`` over exec from the parent that forked the process, so it is the
fallback only).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import resource
from typing import Any

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number
MMAP_THRESHOLD_BYTES = 128 * 1024
_applied: list[bool] = []


def predictable_malloc() -> bool:
    """Make large allocations mmap'd (released on free); True when glibc took the setting."""
    if _applied:
        return _applied[0]
    ok = False
    if os.environ.get("LMKIT_MALLOC", "").lower() != "glibc" and "MALLOC_MMAP_THRESHOLD_" not in os.environ:
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            ok = bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))
        except (OSError, AttributeError):  # not glibc (macOS, musl): its allocator is left as it is
            ok = False
    else:
        ok = "MALLOC_MMAP_THRESHOLD_" in os.environ
    _applied.append(ok)
    return ok


def peak_rss_bytes() -> float:
    """Peak resident memory of this process so far, in bytes."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return float(int(line.split()[1]) * 1024)
    except OSError:
        pass
    return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)



def predict_run_memory(cfg: Any, n_params: float, micro_batch: int, seq_len: int, world: int,
                       device: Any) -> dict[str, Any]:
    """``lmkit plan``'s precise training estimate for a run's settings: the whole process on a CPU
    (tensors + this machine's runtime baseline, measured or lmkit's default), tensors on a GPU."""
    from lmkit.plan import training_memory
    from lmkit.plan.measure import runtime_baseline

    on_gpu = getattr(device, "type", str(device)) == "cuda"
    runtime, source = (0.0, "not counted on a GPU") if on_gpu else runtime_baseline()
    sharding = cfg.train.distributed if world > 1 else "ddp"
    out = training_memory(cfg.model, n_params, micro_batch, seq_len, cfg.train.precision, sharding, world,
                          cfg.train.activation_checkpointing, runtime_bytes=runtime)
    return {**out, "runtime_source": source}


def memory_report(device: Any, predicted: dict[str, Any]) -> dict[str, Any]:
    """The peak so far (peak RSS of the process; on a GPU the largest CUDA allocation) beside the
    prediction, with the relative error."""
    if getattr(device, "type", str(device)) == "cuda":
        import torch

        measured, kind = float(torch.cuda.max_memory_allocated(device)), "torch.cuda.max_memory_allocated"
    else:
        measured, kind = peak_rss_bytes(), "peak RSS of the process"
    total = float(predicted["total"])
    return {"measured_bytes": measured, "measured_kind": kind, "predicted_bytes": total,
            "error": measured / total - 1.0 if total else None, "runtime_source": predicted.get("runtime_source")}
