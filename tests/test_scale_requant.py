"""Scale requantizers: the fit equals its threshold table on every accumulator value, and
the hardware equals the fit.

The thresholds are the golden's semantics (checked against their definition in
test_threshold_derivation.py); here a fitted ``acc * M + B``, shift and clip must give the
same value on the accumulator's whole range: exhaustively where the range is small, and at
every step, the value before it, the range's ends and random values where it is not.
"""

from __future__ import annotations

from dataclasses import replace
from fractions import Fraction
from itertools import pairwise

import numpy as np
import pytest
from amaranth import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from hypothesis import given
from hypothesis import strategies as st
from test_threshold_derivation import MODES, SCALES, SETTINGS, chains

from bitloom.formats import Int, Minifloat
from bitloom.hw.pe.sim import simulate
from bitloom.hw.thresholds import acc_shape, requant_stages, requantize
from bitloom.ir import Affine, Chain, Clamp, Quantizer, ScaleRequant, derive_thresholds, fit_scale
from bitloom.ir.quantizer import CLIP_THEN_ROUND, ROUND_THEN_SHIFT
from bitloom.ir.scale_requant import csd_digits

#: outputs a scale requantizer writes: integers up to 16 bits, and minifloats with zero
SCALE_FMTS = st.one_of(st.builds(Int, st.integers(2, 8), st.booleans()),
                       st.sampled_from([Int(12, False), Int(16, True), Minifloat(2, 1),
                                        Minifloat(4, 3), Minifloat(5, 2),
                                        Minifloat(3, 2, signed=False)]))


@st.composite
def quantizers(draw) -> Quantizer:
    fmt = draw(SCALE_FMTS)
    zero_point = draw(st.integers(-2, 2)) if isinstance(fmt, Int) else 0
    return Quantizer(fmt, draw(SCALES), zero_point, draw(MODES),
                     draw(st.sampled_from([CLIP_THEN_ROUND, ROUND_THEN_SHIFT])))


def check_everywhere(req: ScaleRequant, th, acc_fmt: Int, rng) -> None:
    """``req`` equals ``th`` on every accumulator value (small ranges), else at every step,
    the value before and after it, the ends and 4096 random values."""
    lo, hi = acc_fmt.min_int, acc_fmt.max_int
    if acc_fmt.bits <= 12:
        points = np.repeat(np.arange(lo, hi + 1)[:, None], th.channels, axis=1)
    else:
        table = th.table.astype(np.int64)
        points = np.concatenate([table, table - 1, table + 1,
                                 np.full((th.channels, 2), [lo, hi]),
                                 rng.integers(lo, hi + 1, (th.channels, 4096))], axis=1)
        points = np.clip(points, lo, hi).T
    assert np.array_equal(req.apply(points), th.apply(points))


@SETTINGS
@given(st.data())
def test_a_fit_equals_its_thresholds_on_the_whole_range(data):
    channels = data.draw(st.integers(1, 4))
    chain = data.draw(chains(channels))
    quantizer = data.draw(quantizers())
    acc_fmt = Int(data.draw(st.integers(3, 24)), signed=data.draw(st.booleans()))
    th = derive_thresholds(chain, quantizer, acc_fmt)
    req = fit_scale(th, acc_fmt)
    if isinstance(req, str):  # the chain steps unevenly (ties to even, a coarse quantizer)
        assert "multiplier" in req
        return
    check_everywhere(req, th, acc_fmt, np.random.default_rng(0))


def onnxruntime_like(channels: int, out_fmt, acc_fmt: Int, relu: bool, seed: int = 0,
                     per_tensor: bool = False):
    """A layer's requantization as onnxruntime writes it: float32 weight and input scales
    per channel (or one per tensor, quantize_static's default), a float32 bias, a float32
    output scale and a zero point."""
    rng = np.random.default_rng(seed)
    a = [Fraction(float(np.float32(s)) * float(np.float32(3e-3))) * rng.choice([1, -1])
         for s in rng.uniform(0.05, 1, channels)]
    if per_tensor:
        a = [abs(a[0])] * channels
    b = [Fraction(float(np.float32(v))) for v in rng.uniform(-0.5, 0.5, channels)]
    chain = Chain(channels).then(Affine(a, b))
    if relu:
        chain = chain.then(Clamp(Fraction(0), None))
    zero_point = 0 if not isinstance(out_fmt, Int) or relu else 3
    quantizer = Quantizer(out_fmt, float(np.float32(0.0173)), zero_point, "round",
                          ROUND_THEN_SHIFT)
    return derive_thresholds(chain, quantizer, acc_fmt)


@pytest.mark.parametrize("out_fmt", [Int(8, True), Int(8, False),
                                     pytest.param(Int(16, False), marks=pytest.mark.slow),
                                     Minifloat(4, 3), Minifloat(5, 2)],
                         ids=lambda f: f.name)
def test_onnxruntime_style_layers_fit(out_fmt):
    acc_fmt = Int(20, True)
    th = onnxruntime_like(16, out_fmt, acc_fmt, relu=out_fmt == Int(8, False))
    req = fit_scale(th, acc_fmt)
    assert isinstance(req, ScaleRequant), req
    assert req.multiplier_bits <= 48
    check_everywhere(req, th, acc_fmt, np.random.default_rng(1))


def test_ties_to_even_of_a_power_of_two_scale_take_the_exact_line():
    """``round(acc / 2)`` with ties to even steps at 1, 3 | 5, 7 | ...: no floor of a line
    does that, the exact line with ties to even does; half up is a floor of a line."""
    chain = Chain(2).then(Affine([Fraction(1, 2)] * 2, [Fraction(0)] * 2))
    acc_fmt = Int(10, True)
    th = derive_thresholds(chain, Quantizer(Int(8, True), 1.0, 0, "round"), acc_fmt)
    even = fit_scale(th, acc_fmt)
    assert isinstance(even, ScaleRequant) and even.ties_to_even
    assert (even.shift, list(even.multiplier), list(even.offset)) == (1, [1, 1], [0, 0])
    check_everywhere(even, th, acc_fmt, np.random.default_rng(0))
    half_up = derive_thresholds(chain, Quantizer(Int(8, True), 1.0, 0, "half_ceil"), acc_fmt)
    req = fit_scale(half_up, acc_fmt)
    assert isinstance(req, ScaleRequant) and req.shift == 1  # floor((acc + 1) / 2)
    assert not req.ties_to_even
    check_everywhere(req, half_up, acc_fmt, np.random.default_rng(0))


def test_no_line_at_all_is_reported():
    """A chain through a coarse intermediate quantizer steps unevenly: the table stays."""
    from bitloom.ir.elementwise import Requantize

    chain = Chain(1).then(Affine([Fraction(3, 7)], [Fraction(0)])).then(
        Requantize(Quantizer(Int(3, True), 1.0))).then(Affine([Fraction(5, 3)], [Fraction(0)]))
    acc_fmt = Int(10, True)
    th = derive_thresholds(chain, Quantizer(Int(8, True), 0.5, 0, "round"), acc_fmt)
    reason = fit_scale(th, acc_fmt)
    assert isinstance(reason, str)


def test_a_multiplier_too_wide_is_reported():
    acc_fmt = Int(20, True)
    th = onnxruntime_like(16, Int(8, True), acc_fmt, relu=False)
    assert "bits" in fit_scale(th, acc_fmt, max_multiplier_bits=8)


class Requantizing(wiring.Component):
    """One channel group of lanes through :func:`requantize`: the group's constants are
    read one cycle after ``group`` is set."""

    def __init__(self, req, acc_fmt: Int, lanes: int) -> None:
        self.req, self.acc_fmt, self.lanes = req, acc_fmt, lanes
        super().__init__({"acc": In(lanes * acc_fmt.bits), "group": In(8),
                          "code": Out(lanes * req.out_fmt.bits)})

    def elaborate(self, platform):
        m = Module()
        accs = []
        for p in range(self.lanes):
            a = Signal(acc_shape(self.acc_fmt), name=f"a{p}")
            m.d.comb += a.eq(self.acc.word_select(p, self.acc_fmt.bits))
            accs.append(a)
        codes, _ = requantize(m, "rq", accs, self.req, self.acc_fmt, self.group, 1, 1)
        m.d.comb += self.code.eq(codes)
        return m


def hardware_codes(req, acc_fmt: Int, lanes: int, accs: np.ndarray) -> np.ndarray:
    """Codes of ``accs`` (``[cases, channels]``) from the simulated unit, group by group."""
    cases, channels = accs.shape
    bits, out_bits = acc_fmt.bits, req.out_fmt.bits
    rows, groups = [], []
    for g in range(channels // lanes):
        for row in accs[:, g * lanes:(g + 1) * lanes]:
            rows.append(sum((int(v) & ((1 << bits) - 1)) << (p * bits)
                            for p, v in enumerate(row)))
            groups.append(g)
    raw = simulate(lambda: Requantizing(req, acc_fmt, lanes), {"acc": rows, "group": groups},
                   ["code"], latency=1 + requant_stages(req))["code"]
    codes = np.array([[(word >> (p * out_bits)) & ((1 << out_bits) - 1) for p in range(lanes)]
                      for word in raw])
    per_group = codes.reshape(channels // lanes, cases, lanes)
    return np.concatenate(list(per_group), axis=1)


def expected_codes(th, accs: np.ndarray) -> np.ndarray:
    fmt = th.out_fmt
    return fmt.encode(fmt.from_grid(th.apply(accs)))


SLOW = pytest.mark.slow


@pytest.mark.parametrize("out_fmt", [Int(4, True), pytest.param(Int(3, False), marks=SLOW),
                                     pytest.param(Int(8, True), marks=SLOW), Minifloat(2, 1),
                                     pytest.param(Minifloat(4, 3), marks=SLOW), Minifloat(5, 2),
                                     pytest.param(Minifloat(3, 2, signed=False), marks=SLOW)],
                         ids=lambda f: f.name)
def test_the_hardware_equals_the_thresholds_on_every_accumulator_value(out_fmt):
    """Exhaustive over a 10-bit accumulator, 4 channels on 2 lanes (two ROM words), with
    rising and falling channels and a clip."""
    acc_fmt = Int(10, True)
    rng = np.random.default_rng(7)
    a = [Fraction(float(np.float32(v))) for v in rng.uniform(0.01, 0.2, 4) * [1, -1, 1, -1]]
    b = [Fraction(float(np.float32(v))) for v in rng.uniform(-1, 1, 4)]
    chain = Chain(4).then(Affine(a, b)).then(Clamp(Fraction(-3), None))
    th = derive_thresholds(chain, Quantizer(out_fmt, 0.25, 0, "round", ROUND_THEN_SHIFT),
                           acc_fmt)
    req = fit_scale(th, acc_fmt)
    assert isinstance(req, ScaleRequant), req
    accs = np.repeat(np.arange(acc_fmt.min_int, acc_fmt.max_int + 1)[:, None], 4, axis=1)
    assert np.array_equal(hardware_codes(req, acc_fmt, 2, accs), expected_codes(th, accs))


@pytest.mark.parametrize("out_fmt", [Int(4, True), Minifloat(4, 3), Minifloat(5, 2)],
                         ids=lambda f: f.name)
def test_the_hardware_rounds_ties_to_even_like_the_thresholds(out_fmt):
    """Power-of-two scales (a Brevitas/QONNX minifloat MLP): ties everywhere, to even."""
    acc_fmt = Int(10, True)
    a = [Fraction(1, 8), Fraction(-1, 4), Fraction(3, 16), Fraction(1, 2)]
    b = [Fraction(1, 8), Fraction(0), Fraction(-5, 8), Fraction(1, 4)]
    chain = Chain(4).then(Affine(a, b)).then(Clamp(Fraction(0), None))
    th = derive_thresholds(chain, Quantizer(out_fmt, 0.25, 0, "round"), acc_fmt)
    req = fit_scale(th, acc_fmt)
    assert isinstance(req, ScaleRequant) and req.ties_to_even, req
    accs = np.repeat(np.arange(acc_fmt.min_int, acc_fmt.max_int + 1)[:, None], 4, axis=1)
    assert np.array_equal(hardware_codes(req, acc_fmt, 2, accs), expected_codes(th, accs))


@pytest.mark.parametrize("out_fmt", [Int(8, False), pytest.param(Int(16, True), marks=SLOW),
                                     pytest.param(Minifloat(4, 3), marks=SLOW)],
                         ids=lambda f: f.name)
def test_the_hardware_on_a_wide_accumulator_at_steps_ends_and_random(out_fmt):
    acc_fmt = Int(24, True)
    th = onnxruntime_like(4, out_fmt, acc_fmt, relu=False, seed=3)
    req = fit_scale(th, acc_fmt)
    assert isinstance(req, ScaleRequant), req
    rng = np.random.default_rng(5)
    table = th.table.astype(np.int64)
    picks = table[:, rng.integers(0, table.shape[1], 256)]
    points = np.concatenate([picks, picks - 1, rng.integers(acc_fmt.min_int, acc_fmt.max_int,
                                                            (4, 256)),
                             np.full((4, 2), [acc_fmt.min_int, acc_fmt.max_int])], axis=1)
    accs = np.clip(points, acc_fmt.min_int, acc_fmt.max_int).T
    assert np.array_equal(hardware_codes(req, acc_fmt, 4, accs), expected_codes(th, accs))



@given(st.integers(-(1 << 40), 1 << 40))
def test_canonical_signed_digits_are_the_value_with_no_two_adjacent(value):
    digits = csd_digits(value)
    assert sum(d << i for i, d in digits) == value
    positions = [i for i, _ in digits]
    assert all(b - a >= 2 for a, b in pairwise(positions))


@pytest.mark.parametrize("out_fmt,per_tensor", [(Int(4, True), False), (Int(8, False), True),
                                                pytest.param(Minifloat(4, 3), False,
                                                             marks=SLOW)],
                         ids=["int4-per-channel", "uint8-per-tensor", "e4m3-per-channel"])
def test_the_fabric_multiplier_equals_the_thresholds_on_every_accumulator_value(out_fmt,
                                                                               per_tensor):
    """The multiplier built from adders (no DSP): per-channel (one partial product per
    multiplier bit) and a constant (canonical signed digits), exhaustive over 10 bits."""
    acc_fmt = Int(10, True)
    rng = np.random.default_rng(11)
    a = [Fraction(float(np.float32(v))) for v in rng.uniform(0.01, 0.2, 4) * [1, -1, 1, -1]]
    if per_tensor:
        a = [a[0]] * 4
    b = [Fraction(float(np.float32(v))) for v in rng.uniform(-1, 1, 4)]
    chain = Chain(4).then(Affine(a, b)).then(Clamp(Fraction(-3), None))
    th = derive_thresholds(chain, Quantizer(out_fmt, 0.25 if per_tensor else 0.125, 0, "round",
                                            ROUND_THEN_SHIFT), acc_fmt)
    req = fit_scale(th, acc_fmt)
    assert isinstance(req, ScaleRequant), req
    assert ("multiplier" in req.varying()) != per_tensor
    accs = np.repeat(np.arange(acc_fmt.min_int, acc_fmt.max_int + 1)[:, None], 4, axis=1)
    fabric = replace(req, lut_multiplier=True)
    assert np.array_equal(hardware_codes(fabric, acc_fmt, 2, accs), expected_codes(th, accs))
