"""DSP-packed dot products: several PEs' integer products per multiplier, bit-exact.

int4 x int4 is exhaustive over every (weight, weight-above, activation) triple of each pair of
neighbouring fields (where a borrow would corrupt a field); int8 x int8 is randomized over
>= 10**5 products with the extremes forced.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from amaranth.sim import Simulator

from bitloom.formats import Int
from bitloom.formats.bits import pack, unpack
from bitloom.hw.pe import DotProductUnit
from bitloom.hw.pe.sim import simulate
from bitloom.hw.pe.stages import spread
from bitloom.hw.pe.unit import sum_shape
from bitloom.plan.products import dsp_packing as plan

INT4, INT8, UINT8 = Int(4), Int(8), Int(8, signed=False)


def codes(fmt: Int, values: np.ndarray) -> np.ndarray:
    return fmt.encode(np.asarray(values))


def to_signed(raw: list[int], width: int, signed: bool) -> np.ndarray:
    v = np.array(raw, dtype=np.int64)
    return np.where(v >= 1 << (width - 1), v - (1 << width), v) if signed else v


def run_unit(w_fmt: Int, a_fmt: Int, dsp: str | None, weights: np.ndarray,
             acts: np.ndarray) -> np.ndarray:
    """Dot products ``[case, pe]`` of a combinational unit for weights ``[case, pe, lane]``."""
    cases, pes, simd = weights.shape
    w_words = [pack(row.ravel(), w_fmt.bits) for row in codes(w_fmt, weights)]
    a_words = [pack(row, a_fmt.bits) for row in codes(a_fmt, acts)]
    raw = simulate(lambda: DotProductUnit(w_fmt, a_fmt, simd, pes, dsp),
                   {"w": w_words, "a": a_words}, ["dot"])["dot"]
    shape = sum_shape(w_fmt, a_fmt, simd)
    fields = [unpack(word, shape.width, pes) for word in raw]
    flat = list(itertools.chain.from_iterable(fields))
    return to_signed(flat, shape.width, shape.signed).reshape(cases, pes)


def expected(weights: np.ndarray, acts: np.ndarray) -> np.ndarray:
    return np.einsum("cpl,cl->cp", weights.astype(np.int64), acts.astype(np.int64))


def test_plans_meet_the_packing_goals():
    assert plan(INT8, INT8, "xcup", 2, 16).ways == 2
    assert plan(INT4, INT4, "xcup", 4, 16).ways == 4
    assert plan(INT8, INT8, "xc7", 2, 16).ways == 2
    assert plan(INT4, INT4, "xc7", 4, 16).ways == 3  # 4 x int4 needs 26 bits of a 25-bit port
    assert plan(Int(16), Int(16), "xcup", 4, 16).ways == 1  # one product fills the multiplier
    with pytest.raises(ValueError, match="B port"):
        plan(INT8, Int(18, signed=False), "xcup", 2, 16)


@pytest.mark.parametrize("family", ["xcup", "xc7"])
def test_int4_products_exhaustive_per_field_pair(family):
    """Every (w_f, w_f+1, a) for every pair of neighbouring fields; other fields random."""
    ways = plan(INT4, INT4, family, 4, 1).ways
    rng = np.random.default_rng(4)
    triples = np.array(list(itertools.product(range(-8, 8), repeat=3)))
    weights, acts = [], []
    for f in range(ways - 1):
        w = rng.integers(-8, 8, (len(triples), ways))
        w[:, f], w[:, f + 1] = triples[:, 0], triples[:, 1]
        weights.append(w)
        acts.append(triples[:, 2])
    weights = np.concatenate(weights)[:, :, None]
    acts = np.concatenate(acts)[:, None]
    assert np.array_equal(run_unit(INT4, INT4, family, weights, acts), expected(weights, acts))


def forced_corners(fmt: Int, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Uniform values with half the elements replaced by min, max, 0 or -1 (where held)."""
    corners = [c for c in (fmt.min_int, fmt.max_int, 0, -1) if fmt.min_int <= c]
    v = rng.integers(fmt.min_int, fmt.max_int + 1, shape)
    return np.where(rng.random(shape) < 0.5, rng.choice(corners, shape), v)


@pytest.mark.parametrize(("family", "a_fmt"), [("xcup", INT8), ("xc7", INT8),
                                               ("xcup", UINT8)], ids=str)
def test_int8_dot_products_random_with_extremes(family, a_fmt):
    """>= 10**5 products; 3 PEs (one packed pair and one plain), extreme sums included."""
    rng = np.random.default_rng(8)
    simd, pes, cases = 16, 3, 2100
    weights = forced_corners(INT8, (cases, pes, simd), rng)
    acts = forced_corners(a_fmt, (cases, simd), rng)
    weights[0], acts[0] = INT8.min_int, a_fmt.min_int  # largest positive sum (or zero)
    weights[1], acts[1] = INT8.min_int, a_fmt.max_int  # most negative sum
    weights[2], acts[2] = INT8.max_int, a_fmt.max_int
    assert weights.size >= 10**5
    got = run_unit(INT8, a_fmt, family, weights, acts)
    assert np.array_equal(got, expected(weights, acts))


def test_single_pe_on_dsp_is_exact():
    rng = np.random.default_rng(1)
    weights = forced_corners(INT8, (300, 1, 5), rng)
    acts = forced_corners(INT8, (300, 5), rng)
    assert np.array_equal(run_unit(INT8, INT8, "xcup", weights, acts), expected(weights, acts))


def run_clocked(unit: DotProductUnit, weights: np.ndarray, acts: np.ndarray,
                depth: int) -> np.ndarray:
    """Outputs ``[cycle, pe]`` when case ``t`` is applied in cycle ``t`` (the last one held)."""
    w_fmt, a_fmt, cycles = unit.w_fmt, unit.a_fmt, len(acts)
    got: list[int] = []

    async def bench(ctx) -> None:
        for t in range(cycles + depth):
            c = min(t, cycles - 1)
            ctx.set(unit.w, pack(codes(w_fmt, weights[c]).ravel(), w_fmt.bits))
            ctx.set(unit.a, pack(codes(a_fmt, acts[c]), a_fmt.bits))
            got.extend(ctx.get(unit.result(p)) for p in range(unit.pes))
            if depth:
                await ctx.tick()

    sim = Simulator(unit)
    if depth:
        sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return np.array(got, dtype=np.int64).reshape(-1, unit.pes)


@pytest.mark.parametrize(("w_fmt", "a_fmt", "dsp"), [(INT4, INT4, None), (INT4, INT4, "xcup"),
                                                     (INT8, UINT8, "xc7")], ids=str)
def test_pipeline_depth_is_the_latency(w_fmt, a_fmt, dsp):
    """Every depth up to one register per level: outputs arrive exactly ``depth`` cycles
    after their inputs, and still exact."""
    simd, pes, cycles = 16, 4, 12
    rng = np.random.default_rng(3)
    weights = forced_corners(w_fmt, (cycles, pes, simd), rng)
    acts = forced_corners(a_fmt, (cycles, simd), rng)
    want = expected(weights, acts)
    combinational = DotProductUnit(w_fmt, a_fmt, simd, pes, dsp)
    levels = combinational.levels
    assert levels >= 5  # products + 4 adder rows at least
    for depth in range(levels + 1):
        unit = DotProductUnit(w_fmt, a_fmt, simd, pes, dsp, pipeline=depth) if depth else \
            combinational
        values = run_clocked(unit, weights, acts, depth)
        assert np.array_equal(values[depth:depth + cycles], want), depth
        if depth:
            assert not np.array_equal(values[depth - 1:depth - 1 + cycles], want)
    with pytest.raises(ValueError, match="at most"):
        spread(levels + 1, levels)


@pytest.mark.synth
@pytest.mark.parametrize(("family", "w_fmt", "pes", "dsps"), [("xcup", INT8, 2, 4),
                                                              ("xcup", INT4, 4, 4),
                                                              ("xc7", INT8, 2, 4)], ids=str)
def test_packed_unit_uses_one_dsp_per_ways_products(tmp_path, family, w_fmt, pes, dsps):
    from amaranth.back import verilog

    from bitloom.emit.synth import synthesize

    unit = DotProductUnit(w_fmt, w_fmt, 4, pes, family, pipeline=1)
    (tmp_path / "u.v").write_text(verilog.convert(unit, name="u", emit_src=False))
    result = synthesize([tmp_path / "u.v"], "u", tmp_path / "s", family=family)
    assert result.resources["DSP"] == dsps
