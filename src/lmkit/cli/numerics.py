"""The ``numerics`` command: flags, runner and printing of fp32, fp16, bf16 and int8 side by side.

``add_numerics(sub)`` declares the flags, with help that teaches; ``_run_numerics(args)`` asks
``lmkit.numerics`` for the data (``report``, ``format_info``, ``represent``) and prints it as tables
or one JSON object; ``_print_int8_lesson`` prints the int8 schemes on the value and on the example
tensor. ``lmkit.numerics`` (torch) loads only when the command runs, so ``lmkit --help`` stays
instant.
"""

from __future__ import annotations

import argparse
import math
from typing import Any

from lmkit.cli.common import add_json, print_json


def add_numerics(sub: Any) -> None:
    p = sub.add_parser(
        "numerics",
        help="fp32, fp16, bf16 and int8: bits, range, precision, and what a number becomes",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Show the four number formats a model is stored and run in: sign/exponent/fraction bits, "
        "largest value, smallest normal value, machine epsilon, and what --value becomes in each "
        "(with the step to the next representable number near it and its bit pattern).\n\n"
        "int8 is shown twice. First as the plain integer grid: the integers -128..127 with no "
        "scale, where pi is projected to 3 (error -0.14). Then as it is used on tensors: symmetric "
        "absmax quantization, q = round(x * 127/absmax), x ~ q * absmax/127, with the value inside "
        "a tensor whose max |x| is 4 or 8 (step absmax/127, error at most half a step), and on an "
        "example weight matrix with one scale for the whole tensor against one per output channel "
        "(row), the scheme lmkit quantize stores.\n\n"
        "examples:\n  lmkit numerics                 pi in every format\n"
        "  lmkit numerics --value 70000   beyond fp16's range (65,504)\n"
        "  lmkit numerics --value 0.1 --absmax 4 --json",
    )
    p.add_argument("--value", default="pi", help="the number to store: a float, or pi / e (default pi)")
    p.add_argument(
        "--absmax", type=float, default=None, help="int8 range: the tensor's max |x| that maps to 127 (default |value|)"
    )
    add_json(p)
    p.set_defaults(func=_run_numerics)


def _g(x: float | None, digits: int = 8) -> str:
    if x is None:
        return "-"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return f"{x:.{digits}g}"


def _run_numerics(args: argparse.Namespace) -> int:
    """``lmkit numerics``: the four formats, and what --value becomes in each."""
    # torch: loaded only when this command runs
    from lmkit.numerics import FORMATS, format_info, int8_value_table, parse_value, report, represent

    value = parse_value(args.value)
    rep = report(value, args.absmax)
    if args.json:
        print_json(rep)
        return 0
    print(f"value: {value!r}\n")
    head = f"{'format':<6} {'bits s/e/f':<11} {'range':>15} {'smallest normal':>16} {'epsilon':>13}  decimal digits"
    print(head)
    print("-" * len(head))
    for name in FORMATS:
        i = format_info(name)
        layout = f"1/{i.exponent_bits}/{i.fraction_bits}" if i.kind == "float" else "1/-/7 (int)"
        rng = f"±{_g(i.max)}" if i.kind == "float" else f"{i.min:.0f}..{i.max:.0f}"
        print(
            f"{name:<6} {layout:<11} {rng:>15} {_g(i.smallest_normal):>16} {_g(i.epsilon):>13}  {i.decimal_digits:.1f}"
        )
    print()
    head = f"{'format':<6} {'stored value':<22} {'error':>12} {'step near it':>13}  bits (sign exponent fraction)"
    print(head)
    print("-" * len(head))
    for name in FORMATS:
        if name == "int8" and args.absmax is None:  # the integer grid first: integers, no scale
            g = int8_value_table(value)[0]
            q = int(g["q"])
            print(
                f"{name:<6} {repr(g['stored']):<22} {_g(g['error'], 3):>12} {_g(g['step'], 4):>13}  "
                f"{format(q & 0xFF, '08b')[0]} {format(q & 0xFF, '08b')[1:]}" + ("   CLIPPED" if g["overflow"] else "")
            )
            continue
        r = represent(value, name, args.absmax)
        stored = repr(r.stored) if math.isfinite(r.stored) else _g(r.stored)
        print(
            f"{name:<6} {stored:<22} {_g(r.error, 3):>12} {_g(r.step, 4):>13}  {r.bits}"
            + ("   OVERFLOW" if r.overflow else "")
            + ("   UNDERFLOW (stored as 0)" if r.underflow else "")
        )
    if args.absmax is None:
        print(
            "(int8 above: the integer grid -128..127 with no scale; the tables "
            "below add the scale that makes int8 usable, absmax quantization inside a tensor.)"
        )
    else:
        r8 = represent(value, "int8", args.absmax)
        print(
            f"(int8 above: symmetric absmax quantization with absmax {_g(r8.int8_absmax)}: q = round(x · "
            f"127/absmax) = {r8.int8_q}, x ≈ q · {_g(r8.int8_scale)}; the stored value is the dequantised "
            "q · scale, the step is the scale.)"
        )
    _print_int8_lesson(rep)
    return 0


def _print_int8_lesson(rep: dict[str, Any]) -> None:
    """int8 of the value scheme by scheme, then the schemes' errors on the example tensor."""
    print(f"\nint8 of {rep['value']!r}: the integer grid first (no scale), then absmax scaling inside a tensor")
    head = f"{'scheme':<62} {'q':>5} {'stored':>12} {'error':>11} {'step':>9} {'max error':>10}"
    print(head)
    print("-" * len(head))
    for r in rep["int8_value"]:
        print(
            f"{r['scheme']:<62} {r['q']:>5} {_g(r['stored'], 8):>12} {_g(r['error'], 3):>11} "
            f"{_g(r['step'], 3):>9} {_g(r['step'] / 2, 3):>10}" + ("   CLIPPED" if r["overflow"] else "")
        )
    print(
        "(max error: half a step, the most round-to-nearest can be off; the integer grid keeps no fraction "
        "at all, absmax scaling spends all 255 codes on the tensor's own range)"
    )
    t = rep["int8_tensor"]
    print(
        f"\nint8 of a tensor: {t['about']} (shape {'x'.join(str(n) for n in t['shape'])}, absmax {_g(t['absmax'], 3)})"
    )
    head = f"{'scheme':<46} {'relative RMS error':>18} {'mean |error|':>13} {'p99 |error|':>12} {'max |error|':>12}"
    print(head)
    print("-" * len(head))
    for key, label in (
        ("integer_grid", "integer grid (no scale)"),
        ("per_tensor", "absmax per tensor (one scale: 8/127)"),
        ("per_channel", "absmax per channel (a scale per row: lmkit)"),
    ):
        e = t[key]
        print(
            f"{label:<46} {100 * e['relative_rms']:>17.2f}% {_g(e['mean_abs'], 3):>13} {_g(e['p99_abs'], 3):>12} "
            f"{_g(e['max_abs'], 3):>12}"
        )
    print(
        "(per channel, each row's step is its own absmax/127, so the rows with a small range keep their "
        "precision; lmkit quantize reports the same table for every layer of a checkpoint)"
    )
