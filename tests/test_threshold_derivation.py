"""Threshold derivation against its definition, on random monotone chains.

The definition (:func:`reference_thresholds`): per channel and output level, the smallest
accumulator (in the chain's rising direction) whose exactly evaluated output reaches the
level, found by bisection in rational arithmetic. Chains draw per-channel affine ops with
negative, zero and tie-making coefficients, clamps, and intermediate quantizers (integer and
minifloat, every rounding mode, both quantizer orders).
"""

from __future__ import annotations

import os
from fractions import Fraction

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from bitloom.formats import ROUNDING_MODES, Int, Minifloat
from bitloom.ir.elementwise import Affine, Chain, Clamp, Requantize
from bitloom.ir.quantizer import CLIP_THEN_ROUND, ROUND_THEN_SHIFT, Quantizer
from bitloom.ir.requant import derive_thresholds

SETTINGS = settings(max_examples=int(os.environ.get("BITLOOM_EXAMPLES", "80")), deadline=None)
#: coefficients that put exact ties and integers in the way, plus arbitrary float32 ones
NICE = [-3.0, -1.0, -0.5, -0.25, 0.0, 0.125, 0.25, 0.5, 1.0, 1.5, 2.0, 0.1, -0.1]
COEFF = st.one_of(st.sampled_from(NICE), st.floats(-8, 8, width=32, allow_subnormal=False))
SCALES = st.one_of(st.sampled_from([0.125, 0.25, 0.5, 1.0, 3.0, 0.1]),
                   st.floats(0.0009765625, 10, width=32))
MODES = st.sampled_from([m for m in ROUNDING_MODES if m != "half_even"])


def reference_thresholds(chain: Chain, quantizer: Quantizer, acc_fmt: Int) -> np.ndarray:
    """The table by its definition: exact bisection per (channel, level) on the monotone
    function ``quantizer(chain(sign * a))`` over ``a`` in the accumulator's range, whose
    upper end plus one means "never"."""
    levels = quantizer.fmt.grid_levels()[1:]
    lo, hi = acc_fmt.min_int, acc_fmt.max_int
    table = []
    for c in range(chain.channels):
        sign = 1 if chain.direction(c) >= 0 else -1
        start, end = (lo, hi + 1) if sign > 0 else (-hi, -lo + 1)
        row = []
        for level in levels:
            a, b = start, end
            while a < b:
                mid = (a + b) // 2
                if quantizer.exact(chain.exact(Fraction(mid * sign), c)) >= level:
                    b = mid
                else:
                    a = mid + 1
            row.append(a * sign)
        table.append(row)
    return np.array(table, dtype=object)


@st.composite
def quantizers(draw, fmts) -> Quantizer:
    return Quantizer(draw(fmts), draw(SCALES), draw(st.integers(-2, 2)), draw(MODES),
                     draw(st.sampled_from([CLIP_THEN_ROUND, ROUND_THEN_SHIFT])))


INT_FMTS = st.builds(Int, st.integers(2, 8), st.booleans())
OUT_FMTS = st.one_of(st.builds(Int, st.integers(1, 4), st.booleans()),
                     st.sampled_from([Minifloat(2, 1), Minifloat(3, 1, signed=False)]))


@st.composite
def chains(draw, channels: int) -> Chain:
    chain = Chain(channels)
    for _ in range(draw(st.integers(0, 5))):
        kind = draw(st.sampled_from(["affine", "affine", "clamp", "requantize"]))
        if kind == "affine":
            a = [Fraction(draw(COEFF)) for _ in range(channels)]
            b = [Fraction(draw(COEFF)) * draw(st.sampled_from([1, 10, 100])) for _ in
                 range(channels)]
            chain = chain.then(Affine(a, b))
        elif kind == "clamp":
            lo = draw(st.one_of(st.none(), COEFF))
            hi = draw(st.one_of(st.none(), COEFF))
            if lo is not None and hi is not None and lo > hi:
                lo, hi = hi, lo
            chain = chain.then(Clamp(None if lo is None else Fraction(lo),
                                     None if hi is None else Fraction(hi)))
        else:
            fmts = st.one_of(INT_FMTS, st.just(Minifloat(2, 1)))
            chain = chain.then(Requantize(draw(quantizers(fmts))))
    return chain


def boundary(quantizer: Quantizer, draw) -> Fraction:
    """A real that ``quantizer`` maps exactly onto one of its rounding boundaries."""
    fmt = quantizer.fmt
    if isinstance(fmt, Int):
        u = Fraction(draw(st.integers(fmt.min_int - 1, fmt.max_int))) + draw(
            st.sampled_from([0, Fraction(1, 2)]))
    else:
        values = [Fraction(float(v)) for v in fmt.values()]
        i = draw(st.integers(0, len(values) - 2))
        u = draw(st.sampled_from([values[i], (values[i] + values[i + 1]) / 2]))
    shifted_first = not isinstance(fmt, Int) or quantizer.order == CLIP_THEN_ROUND
    return (u - quantizer.zero_point if shifted_first else u) * Fraction(quantizer.scale)


def pinned(chain: Chain, quantizer: Quantizer, acc_fmt: Int, draw) -> Chain:
    """``chain`` followed by an affine op that puts one drawn accumulator value exactly on a
    rounding boundary of ``quantizer`` in every channel. Its coefficients, like those of
    merged ops, need more than float64's 53 bits, so a float-only derivation would err."""
    acc = draw(st.integers(acc_fmt.min_int, acc_fmt.max_int))
    wide = st.floats(0.125, 8, width=32)  # a product of float32s needs more than 53 bits
    a = [Fraction(draw(wide)) * Fraction(draw(wide)) * Fraction(draw(wide)) *
         draw(st.sampled_from([-1, 1])) for _ in range(chain.channels)]
    b = [boundary(quantizer, draw) - a[c] * chain.exact(Fraction(acc), c)
         for c in range(chain.channels)]
    return chain.then(Affine(a, b))


@SETTINGS
@given(st.data())
def test_derivation_equals_the_exact_definition(data):
    channels = data.draw(st.integers(1, 3))
    chain = data.draw(chains(channels))
    quantizer = data.draw(quantizers(OUT_FMTS))
    acc_fmt = Int(data.draw(st.integers(3, 40)), signed=data.draw(st.booleans()))
    if data.draw(st.booleans()):
        chain = pinned(chain, quantizer, acc_fmt, data.draw)
    got = derive_thresholds(chain, quantizer, acc_fmt)
    want = reference_thresholds(chain, quantizer, acc_fmt)
    assert got.table.tolist() == want.tolist(), chain.describe()
    assert got.increasing.tolist() == [chain.direction(c) >= 0 for c in range(channels)]
    if acc_fmt.bits <= 10:  # and the table's semantics, on every accumulator value
        accs = np.arange(acc_fmt.min_int, acc_fmt.max_int + 1)
        out = got.apply(np.repeat(accs[:, None], channels, axis=1))
        for c in range(channels):
            assert out[:, c].tolist() == [quantizer.exact(chain.exact(Fraction(int(v)), c))
                                          for v in accs]


def test_onnxruntime_style_chain_with_many_channels_and_ties():
    """Conv -> Q -> DQ -> BatchNorm -> Q, as onnxruntime writes it, per-channel BatchNorm
    with signs of both kinds and a requantization on a grid that makes ties common."""
    rng = np.random.default_rng(3)
    n = 16
    gamma = rng.choice([-1.5, -0.5, 0.25, 1.0, 2.0], n)
    chain = (Chain(n).then(Affine([Fraction(1, 64)] * n, [Fraction(float(v)) for v in
                                                          rng.integers(-40, 40, n) / 8]))
             .then(Requantize(Quantizer(Int(8, False), 0.125, 128)))
             .then(Affine([Fraction(0.125)] * n, [Fraction(-16)] * n))
             .then(Affine([Fraction(float(g)) for g in gamma],
                          [Fraction(float(v)) for v in rng.integers(-8, 8, n) / 4]))
             .then(Clamp(Fraction(0), None)))
    quantizer = Quantizer(Int(8, False), 0.0625, 0, "round", ROUND_THEN_SHIFT)
    acc_fmt = Int(20)
    got = derive_thresholds(chain, quantizer, acc_fmt)
    assert got.table.tolist() == reference_thresholds(chain, quantizer, acc_fmt).tolist()
