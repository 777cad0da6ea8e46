"""Number formats: layouts and ranges of fp32/fp16/bf16/int8, what π becomes, absmax int8 maths."""

from __future__ import annotations

import json
import math
import struct

import numpy as np
import pytest
import torch

from lmkit.cli import main
from lmkit.errors import LmkitError
from lmkit.numerics import (
    absmax_dequantize,
    absmax_quantize,
    example_tensor,
    float32_bits,
    format_info,
    int8_scheme_errors,
    int8_value_table,
    integer_grid,
    parse_value,
    quantization_error,
    represent,
)


def test_layouts_and_ranges_match_ieee_and_bfloat16() -> None:
    fp32, fp16, bf16, int8 = (format_info(n) for n in ("fp32", "fp16", "bf16", "int8"))
    assert (fp32.sign_bits, fp32.exponent_bits, fp32.fraction_bits) == (1, 8, 23)
    assert (fp16.sign_bits, fp16.exponent_bits, fp16.fraction_bits) == (1, 5, 10)
    assert (bf16.sign_bits, bf16.exponent_bits, bf16.fraction_bits) == (1, 8, 7)
    assert fp32.max == pytest.approx(3.4028234663852886e38, rel=1e-12)
    assert fp16.max == 65504.0
    assert bf16.max == pytest.approx(3.3895313892515355e38, rel=1e-12)
    assert fp16.smallest_normal == 2.0**-14 and fp16.smallest_subnormal == 2.0**-24
    assert fp32.smallest_subnormal == pytest.approx(2.0**-149)
    assert (fp32.epsilon, fp16.epsilon, bf16.epsilon) == (2.0**-23, 2.0**-10, 2.0**-7)
    # bf16 keeps fp32's range with far fewer digits
    assert bf16.smallest_normal == fp32.smallest_normal and bf16.decimal_digits < 3 < fp16.decimal_digits < 4
    assert (int8.min, int8.max, int8.bits) == (-128.0, 127.0, 8)


def test_pi_in_each_format() -> None:
    assert represent(math.pi, "fp32").stored == 3.1415927410125732
    assert represent(math.pi, "fp16").stored == 3.140625
    assert represent(math.pi, "bf16").stored == 3.140625
    # bit patterns, checked against independent encoders (struct for fp32, numpy for fp16)
    assert represent(math.pi, "fp32").bits == float32_bits(math.pi) == "0 10000000 10010010000111111011011"
    raw16 = int(np.array([math.pi], dtype=np.float16).view(np.uint16)[0])
    assert represent(math.pi, "fp16").bits.replace(" ", "") == format(raw16, "016b")
    # bf16 is the top half of an fp32 (here π rounds down, so it is the truncation)
    (raw32,) = struct.unpack(">I", struct.pack(">f", math.pi))
    assert represent(math.pi, "bf16").bits.replace(" ", "") == format(raw32 >> 16, "016b")
    # step between neighbours near π: 2 (the exponent) x epsilon
    assert represent(math.pi, "fp16").step == 2 * 2.0**-10
    assert represent(math.pi, "bf16").step == 2 * 2.0**-7
    assert represent(math.pi, "fp32").step == 2 * 2.0**-23


def test_pi_in_int8_with_its_absmax_scale() -> None:
    own = represent(math.pi, "int8")  # the range is the value itself: q = 127
    assert own.int8_q == 127 and own.int8_scale == pytest.approx(math.pi / 127, rel=1e-7)
    assert own.int8_factor == pytest.approx(127 / math.pi, rel=1e-6)
    assert abs(own.stored - math.pi) < 1e-6
    wide = represent(math.pi, "int8", absmax=4.0)  # inside a tensor whose max |x| is 4
    assert wide.int8_q == round(math.pi * 127 / 4) == 100
    assert wide.stored == pytest.approx(100 * 4 / 127, rel=1e-6)
    assert abs(wide.error) <= wide.int8_scale / 2


def test_overflow_and_rounding_of_large_values() -> None:
    r = represent(70000.0, "fp16")
    assert r.overflow and math.isinf(r.stored)
    assert represent(70000.0, "bf16").stored == 70144.0  # in range, but only 8 significant bits
    assert not represent(65504.0, "fp16").overflow
    assert represent(1.0, "fp16").step == 2.0**-10


def test_underflow_to_zero_is_flagged() -> None:
    tiny = represent(1e-8, "fp16")  # below half of fp16's smallest subnormal, 2^-24
    assert tiny.stored == 0.0 and tiny.underflow and not tiny.overflow
    assert represent(2.0**-24, "fp16").stored == 2.0**-24 and not represent(2.0**-24, "fp16").underflow
    assert not represent(1e-8, "bf16").underflow  # bf16 keeps fp32's exponent range
    assert not represent(0.0, "fp16").underflow  # zero is stored exactly
    small = represent(0.01, "int8", absmax=4.0)  # less than half a step of a tensor whose max |x| is 4
    assert small.int8_q == 0 and small.underflow


def test_absmax_quantize_per_channel() -> None:
    g = torch.Generator().manual_seed(0)
    w = torch.randn(16, 64, generator=g) * torch.logspace(-3, 1, 16)[:, None]  # rows of very different scale
    w[3] = 0.0
    q, scale = absmax_quantize(w, dim=1)
    assert q.dtype == torch.int8 and q.shape == w.shape and scale.shape == (16, 1)
    assert int(q.abs().max()) == 127 and int(q.min()) >= -127
    assert torch.all(q[3] == 0) and float(scale[3]) == 1.0  # an all-zero row stays exact
    back = absmax_dequantize(q, scale)
    err = (back - w).abs()
    assert torch.all(err <= scale / 2 + 1e-7)  # round to nearest: at most half a step per row
    # each row's largest entry maps to ±127 exactly
    rows = torch.arange(16)
    idx = w.abs().argmax(dim=1)
    assert torch.all(q[rows, idx].abs()[torch.arange(16) != 3] == 127)
    # per-channel beats one scale for the whole tensor when rows differ in scale
    assert quantization_error(w, dim=1)["relative_rms"] < 0.5 * quantization_error(w, dim=None)["relative_rms"]


def test_parse_value_and_cli(capsys: pytest.CaptureFixture[str]) -> None:
    assert parse_value("pi") == math.pi and parse_value("-e") == -math.e and parse_value("0.5") == 0.5
    with pytest.raises(LmkitError):
        parse_value("three")
    assert main(["numerics", "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["formats"]["fp16"]["representation"]["stored"] == 3.140625
    assert rep["formats"]["fp32"]["info"]["fraction_bits"] == 23
    assert rep["formats"]["int8"]["representation"]["int8_q"] == 127
    assert main(["numerics", "--value", "0.1"]) == 0
    out = capsys.readouterr().out
    assert "0.0999755859375" in out and "0.10009765625" in out  # fp16 and bf16 of 0.1
    assert "±65504" in out and "-128..127" in out and "1/5/10" in out  # ranges and layouts
    assert main(["numerics", "--value", "1e-8"]) == 0
    assert "UNDERFLOW" in capsys.readouterr().out
    assert main(["numerics", "--value", "three"]) == 2
    assert "lmkit: error:" in capsys.readouterr().err


# --------------------------------------------------------------------------- int8: the lesson (a value on the integer grid, then absmax), then a tensor


def test_int8_of_pi_on_the_integer_grid_first_then_absmax_in_a_tensor() -> None:
    rows = int8_value_table(math.pi)
    grid = rows[0]
    assert grid["scheme"].startswith("integer grid") and grid["q"] == 3 and grid["stored"] == 3.0
    assert grid["error"] == pytest.approx(3 - math.pi) and abs(grid["error"]) == pytest.approx(0.1416, abs=1e-4)
    by_absmax = {r["absmax"]: r for r in rows[1:]}
    assert by_absmax[4.0]["q"] == round(math.pi * 127 / 4) == 100 and by_absmax[8.0]["q"] == 50
    for r in rows[1:]:  # round to nearest: at most half a step (absmax / 127) off
        assert r["step"] == pytest.approx(r["absmax"] / 127, rel=1e-6)
        assert abs(r["error"]) <= r["step"] / 2 + 1e-7
    assert rows[-1]["q"] == 127 and abs(rows[-1]["error"]) < 1e-6  # the value as its own range, last
    assert int8_value_table(200.0)[0]["overflow"] and int8_value_table(200.0)[0]["stored"] == 127.0
    assert torch.equal(integer_grid(torch.tensor([-300.0, -2.5, 0.4, 3.6])), torch.tensor([-128.0, -2.0, 0.0, 4.0]))


def test_int8_schemes_on_a_tensor_per_channel_beats_per_tensor() -> None:
    e = int8_scheme_errors(example_tensor())
    assert e["absmax"] == pytest.approx(8.0) and e["row_absmax_min"] == pytest.approx(1.0)
    pc, pt, grid = e["per_channel"], e["per_tensor"], e["integer_grid"]
    assert pc["relative_rms"] < pt["relative_rms"] < grid["relative_rms"]
    assert pt["max_abs"] <= 8.0 / 127 / 2 + 1e-6 and grid["max_abs"] <= 0.5
    small = int8_scheme_errors(torch.randn(8, 32) * 0.02)  # trained weights: every entry rounds to 0
    assert small["integer_grid"]["relative_rms"] == pytest.approx(1.0)


def test_numerics_prints_the_course_projection_first(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["numerics"]) == 0
    out = capsys.readouterr().out
    int8_row = next(line for line in out.splitlines() if line.startswith("int8   3"))
    assert "-0.142" in int8_row  # in the formats table, int8 of pi is 3
    assert out.index("integer grid") < out.index("absmax 4") < out.index("absmax 8") < out.index("per channel")
    assert main(["numerics", "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["int8_value"][0]["q"] == 3 and rep["int8_tensor"]["per_channel"]["relative_rms"] > 0
