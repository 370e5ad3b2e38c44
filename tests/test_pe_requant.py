"""Requantizers in the Amaranth simulator against the golden quantizers, bit for bit.

Scale-round-clip: every 12-bit accumulator, every rounding mode, both quantizer orders (the
odd zero point is where they differ). Minifloat: every 12-bit accumulator per format and
binary point, plus wide accumulators at every level, every tie between levels and the
overflow boundary of the format.
"""

from __future__ import annotations

from dataclasses import replace
from fractions import Fraction

import numpy as np
import pytest
from amaranth import signed

from bitloom.formats import ROUNDING_MODES, Fixed, Int, Minifloat, parse_format
from bitloom.hw.pe.requant import MinifloatRequantizer, ScaleRequantizer, multiplier
from bitloom.hw.pe.sim import simulate
from bitloom.ir.quantizer import CLIP_THEN_ROUND, ROUND_THEN_SHIFT, Quantizer

ALL12 = np.arange(-2048, 2048)


def run(make, accs: np.ndarray, width: int, latency: int = 0) -> np.ndarray:
    raw = [int(a) & ((1 << width) - 1) for a in accs]
    return np.array(simulate(make, {"acc": raw}, ["code"], copies=8, latency=latency)["code"],
                    dtype=np.int64)


def test_multiplier_is_exact_for_dyadic_ratios_only():
    assert multiplier(Fraction(3, 16)) == (3, 4, True)
    assert multiplier(Fraction(5)) == (5, 0, True)
    m, s, exact = multiplier(Fraction(1, 3), bits=16)
    assert not exact and 2**15 <= m < 2**16 and abs(Fraction(m, 2**s) - Fraction(1, 3)) < 2**-s


@pytest.mark.parametrize("order", [CLIP_THEN_ROUND, ROUND_THEN_SHIFT])
@pytest.mark.parametrize("rounding", ROUNDING_MODES)
def test_scale_round_clip_every_mode(rounding, order):
    lsb = Fraction(3, 64)  # ratio 3/16: ties at every 16/3-th... and at acc = 8 mod 16 / 3
    q = Quantizer(Int(8), 0.25, zero_point=3, rounding=rounding, order=order)
    got = run(lambda: ScaleRequantizer(signed(12), lsb, q), ALL12, 12)
    want = [q.exact(Fraction(int(a)) * lsb) for a in ALL12]
    assert np.array_equal(Int(8).decode(got), want)


@pytest.mark.parametrize(("fmt", "scale", "zp"), [(Int(4, False), 2.0, 0), (Int(16), 2**-6, -5),
                                                  (Fixed(8, 3), 0.5, 1), (Int(3, True, True),
                                                                          1.0, 0)], ids=str)
@pytest.mark.parametrize("pipeline", [0, 1])
def test_scale_round_clip_formats(fmt, scale, zp, pipeline):
    lsb = Fraction(1, 8)
    q = Quantizer(fmt, scale, zero_point=zp, rounding="round")
    got = run(lambda: ScaleRequantizer(signed(12), lsb, q, pipeline=pipeline), ALL12, 12,
              pipeline)
    want = fmt.to_grid([q.exact(Fraction(int(a)) * lsb) for a in ALL12] if isinstance(fmt, Int)
                       else [float(q.exact(Fraction(int(a)) * lsb)) / 2**fmt.frac_bits
                             for a in ALL12])
    assert np.array_equal(fmt.to_grid(fmt.decode(got)), want)


def golden_codes(fmt: Minifloat, accs: np.ndarray, frac: int, rounding: str) -> np.ndarray:
    return fmt.encode(fmt.quantize(np.ldexp(accs.astype(np.float64), -frac), rounding))


MINIFLOATS = [parse_format("float8_e4m3fn"), parse_format("float8_e5m2"),
              parse_format("float4_e2m1fn"), parse_format("float6_e3m2fn"),
              parse_format("float8_e4m3fnuz"),
              replace(parse_format("float8_e4m3fn"), saturating=True),
              Minifloat(3, 2, signed=False),
              Minifloat(2, 3, specials="ieee", saturating=False)]


@pytest.mark.parametrize("fmt", MINIFLOATS, ids=lambda f: f.spelled_name)
@pytest.mark.parametrize(("frac", "pipeline"), [(-3, 0), (0, 1), (6, 0), (12, 1)])
def test_minifloat_every_small_accumulator(fmt, frac, pipeline):
    got = run(lambda: MinifloatRequantizer(signed(12), frac, fmt, pipeline=pipeline), ALL12,
              12, pipeline)
    assert np.array_equal(got, golden_codes(fmt, ALL12, frac, "round"))


@pytest.mark.parametrize("rounding", ["floor", "ceil", "up", "down", "half_up", "half_down"])
def test_minifloat_directed_and_tie_modes(rounding):
    fmt = parse_format("float6_e3m2fn")
    got = run(lambda: MinifloatRequantizer(signed(12), 7, fmt, rounding), ALL12, 12)
    assert np.array_equal(got, golden_codes(fmt, ALL12, 7, rounding))


def corner_accumulators(fmt: Minifloat, frac: int, width: int, rng) -> np.ndarray:
    """Every level, every midpoint between levels, one LSB either side of each, past the top,
    and random values: as accumulators with ``frac`` fraction bits."""
    levels = np.unique(np.concatenate([fmt.values(), -fmt.values()]))
    points = np.concatenate([levels, (levels[1:] + levels[:-1]) / 2,
                             [fmt.max * 2, fmt.max * 1.1, -fmt.max * 1.5]])
    accs = np.ldexp(points, frac).astype(np.int64)
    accs = np.concatenate([accs, accs - 1, accs + 1,
                           rng.integers(-(2 ** (width - 1)), 2 ** (width - 1), 3000),
                           [-(2 ** (width - 1)), 2 ** (width - 1) - 1]])
    return accs[(accs >= -(2 ** (width - 1))) & (accs < 2 ** (width - 1))]


@pytest.mark.parametrize("fmt", MINIFLOATS[:5], ids=lambda f: f.spelled_name)
def test_minifloat_wide_accumulators_at_ties_and_limits(fmt):
    rng = np.random.default_rng(7)
    frac = 1 - fmt.bias - fmt.man_bits  # the smallest subnormal is one LSB
    frac = -frac + 3  # ... and three bits below it, so ties and sticky bits occur
    accs = corner_accumulators(fmt, frac, 48, rng)
    got = run(lambda: MinifloatRequantizer(signed(48), frac, fmt), accs, 48)
    assert np.array_equal(got, golden_codes(fmt, accs, frac, "round"))


def test_minifloat_matches_the_ir_quantizer():
    """The Q/DQ quantizer (saturating e4m3fn, unit scale) gives the same grid values."""
    fmt = replace(parse_format("float8_e4m3fn"), saturating=True)
    q = Quantizer(fmt, 1.0)
    got = run(lambda: MinifloatRequantizer(signed(12), 4, fmt), ALL12, 12)
    want = [q.exact(Fraction(int(a), 16)) for a in ALL12]
    assert np.array_equal(fmt.to_grid(fmt.decode(got)), want)
