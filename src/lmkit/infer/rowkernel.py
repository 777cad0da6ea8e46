"""A hand-written matrix product for a few rows: the decode step's products, compiled on this machine.

Why by hand (measured on a 2-core Zen 3 with AVX2, no 16-bit hardware): a
decode step multiplies 1 to 8 rows by each weight matrix, so its speed is how fast the weights
stream from memory. MKL runs such a product on one thread and, from a few rows on, reaches only
7-9 GB/s of weights (21-27 GFLOP/s at 8 rows); oneDNN's blocked kernel 28-35 GFLOP/s. This kernel
keeps one register accumulator per row and per 8 output columns, so every weight it loads feeds up
to 8 rows while the next ones are prefetched (~45-50 GFLOP/s at 8 rows on one thread); for one or two
rows it reads 4 or 2 panels at once, memory streams in flight together (one row: 19-23 GB/s on one
thread, where MKL's matrix-vector product reaches 12-17); and it splits the panels over every thread
(OpenMP, the runtime PyTorch itself uses). A prompt's many rows go in blocks of 6 (no register
spills): 170 GFLOP/s on two threads in cache, where MKL's GEMM reaches 133-157.

What this module owns:
- the C source and its build: compiled once per machine with the system C compiler (``$CC`` or
  ``cc``, ``-O3 -march=native -fopenmp``) into the user's cache (``$XDG_CACHE_HOME`` or
  ``~/.cache``, ``lmkit/kernels``), keyed by the source, the flags and this CPU's model and feature
  flags, written atomically (older builds removed); loaded with ``ctypes`` (the call releases the
  GIL, as PyTorch's operators do); a build that does not load is rebuilt, a failed build is
  remembered in a ``.failed`` file with its reason until the user deletes it;
- :func:`available`: x86-64 Linux with AVX2 and FMA, built and loaded, and ``LMKIT_ROW_KERNEL`` not
  ``0``; :func:`unavailable_reason` says why not (and stderr says it once per process);
- :class:`Panels`, a (out, in) weight matrix laid out as panels of 16 output columns, each (in, 16)
  contiguous, the last zero-padded; :func:`pack` makes one; :func:`panel_mm` computes
  ``x · Wᵀ (+ bias)`` into a new or given output, or adds it to one (``accumulate``), after
  checking every tensor it hands to C (float32, CPU, shapes, strides, no output sharing x's
  memory); :func:`panel_mm_trusted` is the same call without the checks, for the packed decode
  step, whose weights and buffers meet them by construction.
Every output column is the sum over the input dimension in order, in float32, with fused
multiply-adds: results agree with PyTorch's products to float32 rounding, not bit for bit.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shlex
import subprocess
import sys
import tempfile
from functools import cache
from pathlib import Path
from typing import NamedTuple, cast

import torch

COLUMNS = 16  # output columns per panel: two 8-float AVX vectors per row

_SOURCE = r"""
#include <immintrin.h>
#include <stddef.h>

#define P 16

/* rb rows of x (row stride ldx) times G consecutive panels (each K x 16, contiguous, starting at w)
   into y (row stride ldy): the first nc columns of the group are written, or added to y with
   accumulate; bias (nc,) optional. G panels at once are G memory streams: one row alone needs
   several in flight to stream weights at the bus's speed. rb * G <= 8. */
static inline __attribute__((always_inline)) void group_rows(
    const int rb, const int G, const float *x, long ldx, const float *w, int K,
    float *y, long ldy, int nc, int accumulate, const float *bias)
{
    __m256 a[8][4], b[8][4];
    #pragma GCC unroll 8
    for (int r = 0; r < rb; r++) {
        #pragma GCC unroll 4
        for (int g = 0; g < G; g++) { a[r][g] = _mm256_setzero_ps(); b[r][g] = _mm256_setzero_ps(); }
    }
    for (int k = 0; k < K; k++) {
        __m256 w0[4], w1[4];
        #pragma GCC unroll 4
        for (int g = 0; g < G; g++) {
            const float *wg = w + (size_t)g * K * P + P * k;
            if (G == 1) _mm_prefetch((const char *)(wg + 256), _MM_HINT_T0);
            w0[g] = _mm256_loadu_ps(wg);
            w1[g] = _mm256_loadu_ps(wg + 8);
        }
        #pragma GCC unroll 8
        for (int r = 0; r < rb; r++) {
            __m256 xb = _mm256_broadcast_ss(x + r * ldx + k);
            #pragma GCC unroll 4
            for (int g = 0; g < G; g++) {
                a[r][g] = _mm256_fmadd_ps(xb, w0[g], a[r][g]);
                b[r][g] = _mm256_fmadd_ps(xb, w1[g], b[r][g]);
            }
        }
    }
    float t[8][4 * P];
    #pragma GCC unroll 8
    for (int r = 0; r < rb; r++) {
        #pragma GCC unroll 4
        for (int g = 0; g < G; g++) {
            _mm256_storeu_ps(t[r] + g * P, a[r][g]);
            _mm256_storeu_ps(t[r] + g * P + 8, b[r][g]);
        }
    }
    for (int r = 0; r < rb; r++) {
        float *o = y + r * ldy;
        for (int j = 0; j < nc; j++) {
            float v = bias ? t[r][j] + bias[j] : t[r][j];
            o[j] = accumulate ? o[j] + v : v;
        }
    }
}

void panel_mm(const float *x, long ldx, int R, const float *wp, int K, int N,
              float *y, long ldy, int accumulate, const float *bias, int threads)
{
    int np = (N + P - 1) / P;
    int G = R == 1 ? 4 : (R == 2 ? 2 : 1); /* panels per group: streams in flight for few rows */
    int ng = (np + G - 1) / G;
    /* groups split across threads, each streaming a contiguous range; a panel stays in cache
       while every block of 8 rows passes over it */
    #pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1 && ng > 1)
    for (int q = 0; q < ng; q++) {
        int p0 = q * G, cols = N - p0 * P;
        const float *w = wp + (size_t)p0 * K * P;
        const float *bq = bias ? bias + (size_t)p0 * P : NULL;
        if (G == 4 && p0 + 4 <= np) {
            group_rows(1, 4, x, ldx, w, K, y + (size_t)p0 * P, ldy, cols < 4 * P ? cols : 4 * P, accumulate, bq);
            continue;
        }
        if (G == 2 && p0 + 2 <= np) {
            group_rows(2, 2, x, ldx, w, K, y + (size_t)p0 * P, ldy, cols < 2 * P ? cols : 2 * P, accumulate, bq);
            continue;
        }
        for (int p = p0; p < p0 + G && p < np; p++) {
            const float *wpn = wp + (size_t)p * K * P;
            int nc = N - p * P < P ? N - p * P : P;
            const float *bp = bias ? bias + (size_t)p * P : NULL;
            /* up to 8 rows: one pass over the panel; more (a prompt): blocks of 6 rows, whose 12
               accumulators, 2 weight vectors and a broadcast fit AVX2's 16 registers */
            int rbk = R > 8 ? 6 : 8;
            for (int r0 = 0; r0 < R; r0 += rbk) {
                const float *xr = x + r0 * ldx;
                float *yr = y + r0 * ldy + (size_t)p * P;
                switch (R - r0 < rbk ? R - r0 : rbk) {
                case 1: group_rows(1, 1, xr, ldx, wpn, K, yr, ldy, nc, accumulate, bp); break;
                case 2: group_rows(2, 1, xr, ldx, wpn, K, yr, ldy, nc, accumulate, bp); break;
                case 3: group_rows(3, 1, xr, ldx, wpn, K, yr, ldy, nc, accumulate, bp); break;
                case 4: group_rows(4, 1, xr, ldx, wpn, K, yr, ldy, nc, accumulate, bp); break;
                case 5: group_rows(5, 1, xr, ldx, wpn, K, yr, ldy, nc, accumulate, bp); break;
                case 6: group_rows(6, 1, xr, ldx, wpn, K, yr, ldy, nc, accumulate, bp); break;
                case 7: group_rows(7, 1, xr, ldx, wpn, K, yr, ldy, nc, accumulate, bp); break;
                default: group_rows(8, 1, xr, ldx, wpn, K, yr, ldy, nc, accumulate, bp); break;
                }
            }
        }
    }
}
"""
_FLAGS = ["-O3", "-march=native", "-fopenmp", "-shared", "-fPIC"]


class Panels(NamedTuple):
    """A (out, in) matrix as panels (ceil(out/16), in, 16), the last one zero-padded; ``n`` = out."""

    data: torch.Tensor
    n: int


def _cpu_identity() -> str:
    """This CPU's model name and feature flags (what ``-march=native`` compiles for)."""
    try:
        info = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor()
    wanted = [line for line in info if line.startswith(("model name", "flags"))]
    return "\n".join(dict.fromkeys(wanted))  # the first core's lines (all cores say the same)


def _cache_dir() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "lmkit" / "kernels"


def _compile(lib: Path, cc: list[str]) -> str | None:
    """Compile the source into ``lib`` (atomically: another process never loads half a file), or
    say why it failed."""
    print(f"lmkit: compiling the decode kernel for this CPU into {lib.parent} (a few seconds)", file=sys.stderr)
    with tempfile.TemporaryDirectory(dir=lib.parent) as tmp:
        src, out = Path(tmp) / "panel_mm.c", Path(tmp) / "panel_mm.so"
        src.write_text(_SOURCE)
        try:
            done = subprocess.run([*cc, *_FLAGS, str(src), "-o", str(out)], capture_output=True, text=True, timeout=300)
        except (OSError, subprocess.SubprocessError) as e:
            return f"the C compiler {' '.join(cc)!r} did not run ({e})"
        if done.returncode != 0:
            lines = done.stderr.strip().splitlines() or [f"exit status {done.returncode}"]
            return f"the C compiler {' '.join(cc)!r} failed: " + next((x for x in lines if "error" in x), lines[-1])
        os.replace(out, lib)
    for old in lib.parent.glob("panel_mm-*.so"):  # builds for an older source, flags or compiler
        if old != lib:
            old.unlink(missing_ok=True)
    return None


@cache
def _build() -> tuple[ctypes.CDLL | None, str | None]:
    """The compiled library, or None and why not, looked up once per process (and why not said on
    stderr then, unless the user turned it off)."""
    dll, why = _load()
    if dll is None and why != "LMKIT_ROW_KERNEL=0":
        print(f"lmkit: decoding without the compiled kernel: {why}", file=sys.stderr)
    return dll, why


def _load() -> tuple[ctypes.CDLL | None, str | None]:
    """The compiled library, or None and why not (built once per machine; a build that no longer
    loads, e.g. made by another toolchain in a shared home, is rebuilt; a failed build is remembered
    beside it, with its reason, until that file is deleted)."""
    if os.environ.get("LMKIT_ROW_KERNEL", "1") == "0":
        return None, "LMKIT_ROW_KERNEL=0"
    if platform.machine() not in ("x86_64", "AMD64") or not Path("/proc/cpuinfo").exists():
        return None, f"the kernel is built for x86-64 Linux only (this is {platform.system()} on {platform.machine()})"
    cpu = _cpu_identity()
    if not ({"avx2", "fma"} <= set(cpu.split())):
        return None, "this CPU lacks AVX2 or FMA"
    key = hashlib.sha256("\0".join([_SOURCE, *_FLAGS, cpu]).encode()).hexdigest()[:16]
    lib = _cache_dir() / f"panel_mm-{key}.so"
    failed = lib.with_suffix(".failed")
    dll = None
    try:
        if failed.exists():
            return None, f"{failed.read_text().strip()} (delete {failed} to try again)"
        if lib.exists():
            try:
                dll = ctypes.CDLL(str(lib))
            except OSError:
                pass  # built by another toolchain: build it again
        if dll is None:
            lib.parent.mkdir(parents=True, exist_ok=True)
            why = _compile(lib, shlex.split(os.environ.get("CC", "cc")))
            if why is not None:
                failed.write_text(why + "\n")
                return None, why
            dll = ctypes.CDLL(str(lib))
    except OSError as e:
        return None, f"the kernel cache {lib.parent} is not usable ({e})"
    dll.panel_mm.argtypes = [
        ctypes.c_void_p, ctypes.c_long, ctypes.c_int, ctypes.c_void_p, ctypes.c_int, ctypes.c_int,
        ctypes.c_void_p, ctypes.c_long, ctypes.c_int, ctypes.c_void_p, ctypes.c_int,
    ]  # fmt: skip
    dll.panel_mm.restype = None
    return dll, None


def available() -> bool:
    """Can this process multiply with the kernel (built, or buildable now)?"""
    return _build()[0] is not None


def unavailable_reason() -> str | None:
    """Why the kernel is not available here (None when it is)."""
    return _build()[1]


def pack(w: torch.Tensor) -> Panels:
    """A float32 CPU (out, in) matrix as :class:`Panels` (a new copy; ``w`` is left as it is)."""
    if w.dtype != torch.float32 or w.device.type != "cpu" or w.dim() != 2:
        raise ValueError(f"panels hold a float32 CPU matrix, got {w.dtype} {tuple(w.shape)} on {w.device}")
    out_f, in_f = w.shape
    np_ = -(-out_f // COLUMNS)
    padded = w.new_zeros(np_ * COLUMNS, in_f)
    padded[:out_f] = w
    return Panels(padded.view(np_, COLUMNS, in_f).transpose(1, 2).contiguous(), out_f)  # (np, in, 16)


def _rows_ok(t: torch.Tensor, rows: int, cols: int) -> bool:
    """float32 CPU rows of ``cols`` with unit column stride and rows that do not overlap."""
    return (
        t.dtype == torch.float32
        and t.device.type == "cpu"
        and tuple(t.shape) == (rows, cols)
        and (cols <= 1 or t.stride(1) == 1)
        and (rows <= 1 or t.stride(0) >= cols)
    )


def panel_mm(
    x: torch.Tensor,
    w: Panels,
    bias: torch.Tensor | None = None,
    out: torch.Tensor | None = None,
    accumulate: bool = False,
) -> torch.Tensor:
    """x (R, in) · Wᵀ (+ bias): a new (R, out) tensor, or written into ``out``, or added to ``out``
    with ``accumulate``. x: float32 CPU rows (copied if its columns are strided); ``out``: float32
    CPU rows with unit column stride, not sharing memory with x; anything else is a ValueError. Runs
    on PyTorch's thread count (passed explicitly: OpenMP's own setting is per calling thread)."""
    if not available():
        raise RuntimeError(f"the compiled kernel is not available: {unavailable_reason()}")
    R, K = x.shape
    if x.stride(1) != 1 or (R > 1 and x.stride(0) < K):
        x = x.contiguous()
    d = w.data
    if not (d.dtype == torch.float32 and d.is_contiguous() and tuple(d.shape) == (-(-w.n // COLUMNS), K, COLUMNS)):
        raise ValueError(f"weights {tuple(d.shape)} {d.dtype} are not panels of a ({w.n}, {K}) float32 matrix")
    if out is None:
        if accumulate:
            raise ValueError("accumulate needs an output to add to")
        out = x.new_empty(R, w.n)
    if not (_rows_ok(x, R, K) and _rows_ok(out, R, w.n)):
        raise ValueError(f"x {x.dtype} {tuple(x.shape)} and out {out.dtype} {tuple(out.shape)}: float32 CPU rows")
    if out.untyped_storage().data_ptr() == x.untyped_storage().data_ptr():
        raise ValueError("out shares memory with x")
    if bias is not None and not (bias.dtype == torch.float32 and bias.is_contiguous() and bias.numel() == w.n):
        raise ValueError(f"bias {bias.dtype} {tuple(bias.shape)} is not ({w.n},) float32")
    return panel_mm_trusted(x, w, bias, out, accumulate)


def panel_mm_trusted(
    x: torch.Tensor,
    w: Panels,
    bias: torch.Tensor | None = None,
    out: torch.Tensor | None = None,
    accumulate: bool = False,
) -> torch.Tensor:
    """:func:`panel_mm` without its checks, for a caller whose tensors meet them by construction (the
    packed decode step's own weights and buffers: a few microseconds a call, tens of calls a token).
    Only x's column stride is still looked at."""
    if x.stride(1) != 1:
        x = x.contiguous()
    if out is None:
        out = x.new_empty(x.shape[0], w.n)
    cast(ctypes.CDLL, _build()[0]).panel_mm(
        x.data_ptr(), x.stride(0), x.shape[0], w.data.data_ptr(), x.shape[1], w.n, out.data_ptr(), out.stride(0),
        accumulate, None if bias is None else bias.data_ptr(), torch.get_num_threads(),
    )  # fmt: skip
    return out
