"""Measuring this machine: its dense matmul peak (cached per process), the peak FLOP/s MFU is
measured against (in the precision a run uses), the precision probe behind ``train.precision:
auto`` (fp32 against bf16 autocast on a run's representative matmul, cached per CPU), the key its
runtime memory baseline is cached under (``lmkit.plan.baseline``), the memory it has still available (what
``train.memory: auto`` weighs a run's planned peak against), the training rate a run's time is predicted
at (and the refusal of work predicted to outlast ``lmkit.plan.compute.check_run_time``'s bounds),
and the record of how far past plans were from what runs really used on this machine; and
:func:`this_machine`, the peaks and precision ``lmkit plan --this-machine`` reports. Not maths:
kept apart so the rest of ``lmkit.plan`` stays pure.

torch is imported only inside the functions, so ``lmkit plan`` without ``--this-machine`` never
loads it.
"""

from __future__ import annotations

import functools
import json
import math
import os
import platform
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lmkit.errors import LmkitError
from lmkit.plan.compute import ACCELERATORS, DEFAULT_MFU, LONG_RUN_HOURS, MAX_FLOPS, check_run_time, run_seconds

if TYPE_CHECKING:
    from lmkit.config import ModelConfig, TrainConfig

HISTORY_FILE = "memory-history.jsonl"
HISTORY_KEEP = 50
HERE_WORDS = ("here", "this", "this machine", "local", "cpu")  # the accelerator names that mean this machine


def accelerator_peak(name: str) -> float:
    """Datasheet dense 16-bit peak (FLOP/s) of a named accelerator; "this machine" is measured."""
    key = name.strip().lower()
    if key in HERE_WORDS:
        return measure_matmul_peak()
    for known, peak in ACCELERATORS.items():
        if known.lower() == key:
            return peak
    raise LmkitError(f"unknown accelerator {name!r} (known: {', '.join(ACCELERATORS)}, here)")


def measure_matmul_peak(dtype: Any = None, seconds: float = 0.4, device: Any = "cpu", size: int | None = None) -> float:
    """This machine's dense matmul throughput in FLOP/s: the best of repeated n×n products.

    dtype defaults to fp32 on CPU (16-bit has no fast path on most CPUs) and bf16 on GPUs.
    Results are cached per process (the trainer asks once per run). A product slower than
    ``seconds`` (bf16 on a CPU without 16-bit hardware) is timed once.
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
    gen = torch.Generator(device=dev).manual_seed(0)  # the run's own random stream stays untouched
    a = torch.randn(n, n, device=dev, generator=gen).to(dtype)
    b = torch.randn(n, n, device=dev, generator=gen).to(dtype)

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    t0 = time.perf_counter()
    torch.mm(a, b)  # warm-up: kernel selection, page faults
    sync()
    best = time.perf_counter() - t0
    if best < seconds:
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
    return 2.0 * n**3 / best


DTYPE_OF = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def device_peak_flops(device: Any = "cpu", precision: str = "fp32") -> float:
    """Peak FLOP/s to measure MFU against: the datasheet figure of a known GPU at 16-bit precision,
    otherwise a measured matmul peak in the training precision (on a CPU training in bf16: its
    measured bf16 peak, AMX's where it has it)."""
    import torch

    dev = torch.device(device)
    if dev.type == "cuda" and precision in ("bf16", "fp16"):
        name = torch.cuda.get_device_name(dev)
        matches = [k for k in ACCELERATORS if k.lower() in name.lower()]
        if matches:
            return ACCELERATORS[max(matches, key=len)]
    return measure_matmul_peak(getattr(torch, DTYPE_OF.get(precision, "float32")), device=dev)


# --------------------------------------------------------------------------- how long a run takes here

SLOWEST_RATE = 1e9  # FLOP/s of training no machine lmkit runs on falls under: work below this needs no measuring


def training_rate(device: str = "cpu", precision: str = "fp32") -> tuple[float, str]:
    """FLOP/s a training run on ``device`` in ``precision`` achieves as lmkit predicts it, and where
    the figure comes from: the peak MFU is measured against (``device_peak_flops``: a known GPU's
    datasheet, else this machine's measured matmul peak, cached) at ``DEFAULT_MFU``. ``device``
    "auto" is a GPU where there is one, else the CPU; ``precision`` "auto" is bf16 on a GPU and fp32
    on a CPU (its measured fp32 peak: never a longer prediction than bf16 autocast would give)."""
    import torch

    dev = device if device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    gpu = dev.startswith("cuda") and torch.cuda.is_available()
    prec = precision if precision != "auto" else ("bf16" if gpu else "fp32")
    peak = device_peak_flops(dev if gpu else "cpu", prec)
    name = torch.cuda.get_device_name(torch.device(dev)) if gpu else "this machine"
    return peak * DEFAULT_MFU, f"{DEFAULT_MFU:.0%} of {name}'s {prec} peak, {peak / 1e9:,.0f} GFLOP/s"


def check_predicted_time(
    flops: float,
    yes: bool,
    what: str,
    device: str = "cpu",
    precision: str = "fp32",
    rate: tuple[float, str] | None = None,
) -> None:
    """``check_run_time`` for work of ``flops``: its time predicted at ``training_rate`` (measured
    only when the work could take longer than ``LONG_RUN_HOURS`` at ``SLOWEST_RATE``), or at
    ``rate`` (FLOP/s, where it comes from) when given."""
    if not flops <= MAX_FLOPS:  # inf and NaN included: out of any range, whatever the machine
        raise LmkitError(f"{what} is more than {MAX_FLOPS:g} FLOPs, the most lmkit plans")
    if flops <= SLOWEST_RATE * LONG_RUN_HOURS * 3600 and rate is None:
        return
    per_second, source = rate if rate is not None else training_rate(device, precision)
    check_run_time(
        run_seconds(flops, per_second, 1.0),
        yes,
        what,
        f"{flops:.3g} FLOPs at {per_second / 1e9:,.1f} GFLOP/s: {source}",
    )


# --------------------------------------------------------------------------- precision on this machine

PRECISION_FILE = "precision-probe.json"
BF16_MIN_SPEEDUP = 1.3  # "measurably faster": bf16 autocast at least this multiple of fp32 in the probe
PROBE_SECONDS = 0.25  # the probe's timed loop, both precisions interleaved (warm-ups come on top)
PROBE_MAX_FLOPS = 1.1e9  # one forward product of the probe at most (its token count is lowered to fit)
PROBE_KEEP = 8  # machines (CPU, torch, threads) whose probes the cache keeps
SIXTEEN_BIT_FLAGS = ("amx_bf16", "amx_fp16", "amx_tile", "avx512_bf16", "avx512_fp16", "avx512f", "avx2", "f16c")


def probe_shape(tokens: int, d_model: int) -> tuple[int, int, int]:
    """The probe's matmul (m, k, n): a run's representative one, tokens per micro-batch × d_model ×
    4·d_model (its MLP's input projection), each rounded to a power of two so that nearby runs share
    a cached probe; k at least 16, m from 64 to 4,096 and halved until one forward product costs at
    most ``PROBE_MAX_FLOPS`` (past a few hundred rows a matmul's FLOP rate hardly depends on m).

    The shape matters: bf16 autocast pays a cast of every input and weight per product, so a tiny
    model (d_model 32) can run slower in bf16 even where large bf16 matmuls are 6-9× faster."""

    def pow2(x: int) -> int:
        return 1 << max(0, round(math.log2(max(1, int(x)))))

    k = max(16, pow2(d_model))
    n = 4 * k
    m = min(4096, max(64, pow2(tokens)))
    while m > 64 and 2.0 * m * k * n > PROBE_MAX_FLOPS:
        m //= 2
    return m, k, n


@functools.cache
def last_level_cache_bytes() -> int | None:
    """The largest CPU cache of this machine in bytes (Linux: the highest-level cache sysfs lists
    for CPU 0), or None where the machine does not say."""
    caches = []  # (level, bytes)
    for index in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*"):
        try:
            level, size = int((index / "level").read_text()), (index / "size").read_text().strip()
            caches.append((level, int(size.rstrip("KMG")) << {"K": 10, "M": 20, "G": 30}.get(size[-1:], 0)))
        except (OSError, ValueError):
            continue
    return max(caches)[1] if caches else None


def cpu_key() -> str:
    """What a precision probe depends on: the CPU's model and 16-bit flags and torch's version (the
    probe runs on one thread whatever the run's thread count: see ``_probe_rates``)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        torch_version = version("torch")
    except PackageNotFoundError:
        torch_version = "-"

    model, flags = "", list[str]()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            name, _, value = (part.strip() for part in line.partition(":"))
            if name == "model name" and not model:
                model = value
            elif name in ("flags", "Features") and not flags:
                flags = sorted(set(value.split()) & set(SIXTEEN_BIT_FLAGS))
    except OSError:
        pass
    model = model or platform.processor() or platform.machine()
    return "|".join([model, ",".join(flags) or "-", platform.machine(), torch_version])


def _probe_rates(m: int, k: int, n: int, seconds: float) -> tuple[float, float]:
    """FLOP/s of a linear layer's forward and backward (y = x·Wᵀ, then both gradients) on (m, k) ×
    (k, n), in fp32 and under ``torch.autocast("cpu", torch.bfloat16)`` as training runs it (casts
    included): the best of timed rounds, the two interleaved (in alternating order) so that other
    work on the machine slows both alike.

    On one thread: the question is what the CPU's cores do with bf16 (AMX / AVX-512-BF16 or
    nothing), and one thread answers it steadily where other processes share the cores, while
    timings of several threads there measure the scheduler (benchmarks/README.md, "Precision on a
    CPU", has the figures)."""
    import torch

    gen = torch.Generator().manual_seed(0)  # the run's own random stream stays untouched
    x = torch.randn(m, k, generator=gen, requires_grad=True)
    w = torch.randn(n, k, generator=gen, requires_grad=True)
    grad = {False: torch.randn(m, n, generator=gen)}
    grad[True] = grad[False].to(torch.bfloat16)
    flops = 6.0 * m * k * n
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _interleaved(x, w, grad, flops, m, seconds)
    finally:
        torch.set_num_threads(threads)


def _interleaved(x: Any, w: Any, grad: dict[bool, Any], flops: float, m: int, seconds: float) -> tuple[float, float]:
    """The timing loop of ``_probe_rates``: fp32 and bf16 rounds alternated, the best of each."""
    import torch
    import torch.nn.functional as F

    def step(bf16: bool, rows: int = m) -> float:
        t0 = time.perf_counter()
        with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
            y = F.linear(x[:rows], w)
        torch.autograd.grad(y, (x, w), grad[bf16][:rows])
        return time.perf_counter() - t0

    times: dict[bool, list[float]] = {False: [], True: []}
    for bf16 in (False, True):
        small = max(16, m // 16)  # a bf16 product without 16-bit hardware can take seconds: look first
        step(bf16, small)
        guess = step(bf16, small) * m / small
        if guess > seconds:
            times[bf16] = [guess]
    timed = [b for b in (False, True) if not times[b]]
    for bf16 in timed:
        step(bf16)  # warm-up at the full shape
    end = time.perf_counter() + seconds
    rounds = 0
    while timed and (rounds < 3 or time.perf_counter() < end):
        for bf16 in timed if rounds % 2 else timed[::-1]:
            times[bf16].append(step(bf16))
        rounds += 1
    return flops / min(times[False]), flops / min(times[True])


def precision_probe(tokens: int, d_model: int, measure: bool = False) -> dict[str, Any]:
    """fp32 and bf16-autocast throughput of a run's representative matmul on this CPU
    (``probe_shape``, on one thread), measured once per CPU and torch version (``cpu_key``) and
    shape, then read from the cache (``cache_dir()/precision-probe.json``); ``measure`` measures again.

    Returns ``shape`` [m, k, n], ``fp32_flops``, ``bf16_flops``, ``bf16_over_fp32``, ``when`` and
    ``cached`` (whether the figures came from the cache)."""
    m, k, n = probe_shape(tokens, d_model)
    name = f"{m}x{k}x{n}"
    path = cache_dir() / PRECISION_FILE
    key = cpu_key()
    machines: dict[str, Any] = {}
    try:
        saved = json.loads(path.read_text()).get("machines")
        machines = saved if isinstance(saved, dict) else {}
        here = machines.get(key)
        if (
            not measure
            and isinstance(here, dict)
            and isinstance(here.get(name), dict)
            and here[name].get("bf16_over_fp32")
        ):
            return {**here[name], "cached": True}
    except (OSError, ValueError, AttributeError):
        pass
    fp32, bf16 = _probe_rates(m, k, n, PROBE_SECONDS)
    rec = {
        "shape": [m, k, n],
        "threads": 1,
        "fp32_flops": fp32,
        "bf16_flops": bf16,
        "bf16_over_fp32": bf16 / fp32,
        "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    here = machines.pop(key, None)
    machines[key] = {**(here if isinstance(here, dict) else {}), name: rec}  # the newest machine last
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"machines": dict(list(machines.items())[-PROBE_KEEP:])}, indent=1) + "\n")
        tmp.replace(path)
    except OSError:
        pass  # a read-only home: measured again next time
    return {**rec, "cached": False}


def choose_cpu_precision(bf16_over_fp32: float) -> str:
    """bf16 where the probe measured it at least ``BF16_MIN_SPEEDUP`` × fp32, else fp32."""
    return "bf16" if bf16_over_fp32 >= BF16_MIN_SPEEDUP else "fp32"


def auto_precision(
    device: Any, tokens: int, d_model: int, measure: bool = False
) -> tuple[str, str, dict[str, Any] | None]:
    """What ``train.precision: auto`` becomes on ``device`` for a run of ``tokens`` per micro-batch
    at ``d_model``: (precision, why in words, the CPU probe or None). CUDA: bf16 where the GPU
    supports it, else fp16 (with the grad scaler); Apple's mps: fp32; a CPU: the precision probe
    (cached; ``measure`` measures it again)."""
    import torch

    dev = torch.device(device)
    if dev.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return "bf16", "auto: this GPU supports bf16", None
        return "fp16", "auto: this GPU has no bf16, fp16 with loss scaling", None
    if dev.type != "cpu":
        return "fp32", f"auto: fp32 on {dev.type}", None
    probe = precision_probe(tokens, d_model, measure)
    ratio = float(probe["bf16_over_fp32"])
    chosen = choose_cpu_precision(ratio)
    why = f"auto: bf16 {ratio:.2f}× fp32 here" + ("" if chosen == "bf16" else f", under {BF16_MIN_SPEEDUP:g}×")
    return chosen, why, probe


def this_machine(
    precision: str | None,
    cfg: ModelConfig | None = None,
    train: TrainConfig | None = None,
    micro_batch: int | None = None,
    seq_len: int | None = None,
    fresh: bool = False,
) -> dict[str, Any]:
    """This machine's measured fp32 and bf16 matmul peaks, the precision a run on it would use and
    that precision's peak. The precision is ``precision`` when given, else the run config's; its
    auto is settled as the trainer settles it: the precision probe at the run's shape (``micro_batch``
    and ``seq_len`` override the config's; ``fresh`` measures the probe anew), or without a run
    config the two peaks' ratio."""
    import torch

    peaks = {"fp32": measure_matmul_peak(torch.float32), "bf16": measure_matmul_peak(torch.bfloat16)}
    ratio = peaks["bf16"] / peaks["fp32"]
    chosen = precision or (train.precision if train is not None else "auto")
    if chosen != "auto":
        why = "given"
    elif cfg is not None and train is not None:
        mb = micro_batch or train.micro_batch_size or train.batch_size
        chosen, why, _ = auto_precision("cpu", mb * (seq_len or cfg.max_seq_len), cfg.d_model, measure=fresh)
    else:
        chosen = choose_cpu_precision(ratio)
        why = f"auto: bf16 peak {ratio:.2f}× fp32's" + ("" if chosen == "bf16" else f", under {BF16_MIN_SPEEDUP:g}×")
    if chosen not in peaks:
        peaks[chosen] = measure_matmul_peak(torch.float16)
    return {
        "fp32_flops": peaks["fp32"],
        "bf16_flops": peaks["bf16"],
        "bf16_over_fp32": ratio,
        "precision": chosen,
        "precision_choice": why,
        "peak_flops": peaks[chosen],
    }


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

    parts = [platform.node(), platform.machine(), platform.python_version(), v("torch"), v("lmkit")]
    return "|".join(parts)


def available_memory_bytes() -> float | None:
    """Memory this machine can still give a process without swapping: the kernel's MemAvailable,
    or less where this process's control group (cgroup v2 or v1) sets a lower limit; None where
    neither can be read (not Linux)."""
    found: list[float] = []
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    found.append(float(int(line.split()[1]) * 1024))
    except (OSError, ValueError):
        pass
    for limit, usage in (
        ("memory.max", "memory.current"),
        ("memory/memory.limit_in_bytes", "memory/memory.usage_in_bytes"),
    ):
        try:
            cap = (Path("/sys/fs/cgroup") / limit).read_text().strip()
            if cap.isdigit() and int(cap) < 2**60:  # "max" or v1's huge number: no limit
                found.append(float(int(cap) - int((Path("/sys/fs/cgroup") / usage).read_text().strip())))
        except (OSError, ValueError):
            continue
    return max(0.0, min(found)) if found else None


def record_memory(predicted: float, measured: float, what: str) -> None:
    """Append a run's predicted and measured peak to this machine's history (kept short)."""
    path = cache_dir() / HISTORY_FILE
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lines = path.read_text().splitlines()[-(HISTORY_KEEP - 1) :] if path.exists() else []
        when = time.strftime("%Y-%m-%dT%H:%M:%S")
        rec = {"key": machine_key(), "predicted": predicted, "measured": measured, "what": what, "when": when}
        lines.append(json.dumps(rec))
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


__all__ = [
    "BF16_MIN_SPEEDUP",
    "SLOWEST_RATE",
    "accelerator_peak",
    "auto_precision",
    "available_memory_bytes",
    "cache_dir",
    "check_predicted_time",
    "choose_cpu_precision",
    "cpu_key",
    "last_level_cache_bytes",
    "device_peak_flops",
    "machine_key",
    "measure_matmul_peak",
    "memory_track_record",
    "precision_probe",
    "probe_shape",
    "record_memory",
    "training_rate",
]
