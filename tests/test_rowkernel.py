"""The compiled few-row product kernel (lmkit.infer.rowkernel): equal to PyTorch's product for every
row count, tail of columns, row stride, bias, accumulation and thread count; built once per machine
into the cache, atomically; refused with a reason where it cannot be built."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lmkit.infer import rowkernel

needs_kernel = pytest.mark.skipif(not rowkernel.available(), reason=f"{rowkernel.unavailable_reason()}")


@needs_kernel
@pytest.mark.parametrize("threads", [1, 2])
def test_panel_products_equal_torch_for_every_shape(threads: int) -> None:
    g = torch.Generator().manual_seed(0)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for rows in (1, 2, 3, 7, 8, 9, 17):
            for n_out, n_in in ((16, 8), (37, 24), (5, 64), (300, 96)):  # tails of 5, 4 and 12 columns
                w = torch.randn(n_out, n_in, generator=g)
                b = torch.randn(n_out, generator=g)
                wide = torch.randn(rows, n_in + 5, generator=g)
                x = wide[:, 2 : 2 + n_in]  # rows with a stride of their own
                panels = rowkernel.pack(w)
                assert panels.n == n_out and panels.data.shape == (-(-n_out // 16), n_in, 16)
                want = x @ w.t()
                torch.testing.assert_close(rowkernel.panel_mm(x, panels), want, rtol=1e-5, atol=1e-5)
                torch.testing.assert_close(rowkernel.panel_mm(x, panels, b), want + b, rtol=1e-5, atol=1e-5)
                full = torch.full((rows, n_out + 3), 7.0)
                out = full[:, :n_out]  # written in place, its neighbours kept
                rowkernel.panel_mm(x, panels, out=out)
                torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-5)
                acc = torch.randn(rows, n_out, generator=g)
                start = acc.clone()
                rowkernel.panel_mm(x, panels, out=acc, accumulate=True)
                torch.testing.assert_close(acc, start + want, rtol=1e-5, atol=1e-5)
                assert torch.equal(full[:, n_out:], torch.full((rows, 3), 7.0))
    finally:
        torch.set_num_threads(before)


def _probe(env: dict[str, str]) -> str:
    """available() and unavailable_reason() in a fresh process with this environment."""
    code = "from lmkit.infer import rowkernel as r; print(r.available(), r.unavailable_reason())"
    done = subprocess.run([sys.executable, "-c", code], env={**os.environ, **env}, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@needs_kernel
def test_built_once_per_machine_into_the_cache(tmp_path: Path) -> None:
    env = {"XDG_CACHE_HOME": str(tmp_path)}
    assert _probe(env) == "True None"
    built = list((tmp_path / "lmkit" / "kernels").iterdir())
    assert len(built) == 1 and built[0].suffix == ".so"  # nothing half-written left beside it
    stamp = built[0].stat().st_mtime_ns
    assert _probe({**env, "CC": "/nonexistent/cc"}) == "True None"  # reused: no compiler needed
    assert built[0].stat().st_mtime_ns == stamp
    built[0].write_bytes(b"not a shared library")  # e.g. left by another toolchain: built again
    assert _probe(env) == "True None" and built[0].read_bytes()[:4] == b"\x7fELF"


def test_refused_with_a_reason(tmp_path: Path) -> None:
    assert _probe({"LMKIT_ROW_KERNEL": "0"}) == "False LMKIT_ROW_KERNEL=0"
    env = {"XDG_CACHE_HOME": str(tmp_path), "CC": "/nonexistent/cc"}
    out = _probe(env)
    assert out.startswith("False ") and ("compiler" in out or "lacks" in out or "x86-64" in out)
    if "compiler" in out:  # the failure is remembered: the next process does not try again
        failed = list((tmp_path / "lmkit" / "kernels").glob("*.failed"))
        assert len(failed) == 1 and "/nonexistent/cc" in failed[0].read_text()
        assert _probe({**env, "CC": "cc"}).endswith(f"(delete {failed[0]} to try again)")


@needs_kernel
def test_bad_inputs_are_refused_before_the_kernel_sees_them() -> None:
    w = rowkernel.pack(torch.randn(20, 8))
    x = torch.randn(3, 8)
    with pytest.raises(ValueError, match="float32 CPU rows"):
        rowkernel.panel_mm(x, w, out=torch.empty(3, 20, dtype=torch.float64))
    with pytest.raises(ValueError, match="float32 CPU rows"):
        rowkernel.panel_mm(x.double(), w)
    with pytest.raises(ValueError, match="bias"):
        rowkernel.panel_mm(x, w, torch.zeros(20, dtype=torch.float64))
    with pytest.raises(ValueError, match="shares memory"):
        both = torch.randn(3, 28)
        rowkernel.panel_mm(both[:, :8], w, out=both[:, 8:])
    with pytest.raises(ValueError, match="panels of a"):
        rowkernel.panel_mm(x, rowkernel.Panels(w.data[:1], 20))
    with pytest.raises(ValueError, match="accumulate"):
        rowkernel.panel_mm(x, w, accumulate=True)
    with pytest.raises(ValueError, match="float32 CPU matrix"):
        rowkernel.pack(torch.randn(4, 4, dtype=torch.float64))
