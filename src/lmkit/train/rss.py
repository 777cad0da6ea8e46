"""Whole-process memory of a training run: the peak a user sees, the allocator setting
(``train.memory``) and the plan's prediction for a run to set beside it (meta.json, metrics.jsonl).

On Linux, glibc's malloc raises its threshold for mapping big blocks as soon as one is freed, after
which activations of up to 32 MiB come from the heap, whose pages stay resident when freed: a CPU
run's peak RSS then sits above the bytes its tensors need at once, by about
``GLIBC_HEAP_FACTOR`` x one micro-batch's activations (``lmkit.plan.memory.heap_bytes``).
``train.memory`` says what to do about it, settled once per run by :func:`settle_memory`:

* ``fast``: glibc's allocator as it is, the quickest (the plan counts the heap it keeps);
* ``lean``: :func:`lean_malloc` fixes the threshold at 128 KiB (``mallopt(M_MMAP_THRESHOLD)``, what
  ``MALLOC_MMAP_THRESHOLD_=131072`` does), so every large tensor is mapped and unmapped on its own
  and the resident size follows the live tensors. The price is page faults: every step maps fresh
  pages for its activations; 0.5-0.6x the tokens/s of ``fast`` for cpu-small on the demo corpus on
  a 2-core Zen 4 (6,468-6,664 against 11,027-11,429 tokens/s), for 10-20% less peak memory;
* ``auto`` (the default): ``fast``, unless the plan says the run would then not fit in the memory
  this machine has available (``lmkit.plan.memory.choose_heap``), then ``lean``; the run's first
  line says so.

The settled value is what resolved.yaml records and meta.json's ``memory.memory_choice``
explains. It changes no number the run computes, so a resumed run may settle it anew (--train.memory).

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
_lean: list[bool] = []


def lean_malloc() -> bool:
    """Make large allocations mmap'd (released on free) for the rest of this process; True when
    glibc took the setting (False elsewhere: macOS, musl keep their allocator as it is)."""
    if not _lean:
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            _lean.append(bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)))
        except (OSError, AttributeError):
            _lean.append(False)
    return _lean[0]


def release_free_heap() -> None:
    """Hand the free pages of glibc's heap back to the system now (``malloc_trim(0)``), so that the
    resident size counts what is in use; nothing happens where the C library has no such call."""
    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def rss_bytes() -> float:
    """Resident memory of this process at the call, in bytes (0 where /proc is not there)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return float(int(line.split()[1]) * 1024)
    except OSError:
        pass
    return 0.0


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


def predict_run_memory(
    cfg: Any, n_params: float, micro_batch: int, seq_len: int, world: int, device: Any, heap: str | None = None
) -> dict[str, Any]:
    """``lmkit plan``'s precise training estimate for a run's settings: the whole process on a CPU
    (tensors + this machine's runtime baseline and what a run's end adds, measured or lmkit's
    defaults, + the heap the allocator ``heap`` keeps, by default the run's settled train.memory),
    tensors on a GPU."""
    from lmkit.plan import training_memory
    from lmkit.plan.baseline import finish_baseline, runtime_baseline

    on_gpu = getattr(device, "type", str(device)) == "cuda"
    runtime, source = (0.0, "not counted on a GPU") if on_gpu else runtime_baseline(cfg.model.family)
    sharding = cfg.train.distributed if world > 1 else "ddp"
    out = training_memory(
        cfg.model,
        n_params,
        micro_batch,
        seq_len,
        cfg.train.precision,
        sharding,
        world,
        cfg.train.activation_checkpointing,
        runtime_bytes=runtime,
        finish_bytes=0.0 if on_gpu else finish_baseline(cfg.model.family),
        optimizer=cfg.train.optimizer,
        heap=None if on_gpu else (heap or cfg.train.memory),
    )
    return {**out, "runtime_source": source}


def settle_memory(
    cfg: Any,
    n_params: float,
    micro_batch: int,
    seq_len: int,
    d: Any,
    device: Any,
    recorded: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Settle ``train.memory`` for this run, once, and return the run's planned peak with it
    (:func:`predict_run_memory`) and ``"memory_choice"``: what the run records and says.

    ``cfg.train.memory`` becomes "fast" or "lean" (``lmkit.plan.memory.choose_heap``; on a GPU auto
    is fast: the tensors are not on the heap), and lean is put in force (:func:`lean_malloc`). The
    main process decides, against the memory this machine has available for each of its processes
    on it (this process's own resident memory included: the plan counts it), and the others follow.
    The choice reads "lean (auto: ...)" when auto settled it, the resumed run's record (``recorded``:
    its meta.json "memory") when the setting is the one it recorded, or else the setting."""
    from lmkit.plan.memory import choose_heap

    def predict(heap: str | None = None) -> dict[str, Any]:
        return predict_run_memory(cfg, n_params, micro_batch, seq_len, d.world, device, heap)

    t = cfg.train
    choice = [t.memory, "given"]
    if t.memory == "auto" and getattr(device, "type", str(device)) != "cpu":
        choice = ["fast", f"auto: tensors on {device}"]
    elif t.memory == "auto" and d.main:
        from lmkit.plan.measure import available_memory_bytes

        free = available_memory_bytes()
        local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
        per_process = None if free is None else free / local + rss_bytes()
        choice = list(choose_heap(t.memory, predict("fast")["total"], predict("lean")["total"], per_process))
    if t.memory == "auto" and d.world > 1:
        import torch.distributed as dist

        dist.broadcast_object_list(choice, src=0, device=device if device.type == "cuda" else None)
    t.memory = choice[0]
    if t.memory == "lean":
        lean_malloc()
    said = recorded.get("memory_choice") if isinstance(recorded, dict) else None
    if choice[1] != "given":
        said = f"{choice[0]} ({choice[1]})"
    elif not (isinstance(said, str) and said.split(" ", 1)[0] == t.memory):
        said = t.memory
    return {**predict(), "memory_choice": said}


def memory_report(device: Any, predicted: dict[str, Any]) -> dict[str, Any]:
    """The peak so far (peak RSS of the process; on a GPU the largest CUDA allocation) beside the
    prediction, with the relative error."""
    if getattr(device, "type", str(device)) == "cuda":
        import torch

        measured, kind = float(torch.cuda.max_memory_allocated(device)), "torch.cuda.max_memory_allocated"
    else:
        measured, kind = peak_rss_bytes(), "peak RSS of the process"
    total = float(predicted["total"])
    return {
        "measured_bytes": measured,
        "measured_kind": kind,
        "predicted_bytes": total,
        "error": measured / total - 1.0 if total else None,
        "runtime_source": predicted.get("runtime_source"),
        "memory_choice": predicted.get("memory_choice"),
    }
