"""The dot-product units of issue 22 (column counters in the carry chains, three-lane
popcount tables, minifloat products signed before the shift, nine int2 / five int3 products
per DSP48E2), bit-exact.

The counters exist only with a module (kept sums), so these tests go through
:class:`~bitloom.hw.pe.DotProductUnit`, unlike ``tests/test_pe.py``'s bare expressions:
exhaustive for every small format pair (every operand pair in every lane), random with
extremes for the wider ones, every pipeline depth, and a matrix-vector layer on Verilator.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from bitloom.formats import Format, Int, parse_format
from bitloom.formats.bits import pack, unpack
from bitloom.hw.pe import DotProductUnit
from bitloom.hw.pe.sim import simulate
from bitloom.hw.pe.unit import sum_shape
from bitloom.plan.products import dsp_packing

SMALL = [Int(1, True), Int(2, True), Int(2, False), Int(3, True), Int(4, True),
         Int(4, False), Int(4, True, narrow=True), parse_format("float4_e2m1fn"),
         parse_format("e1m2"), parse_format("ue2m2")]
LANES = 6  # two three-lane popcount groups; 12 table rows, two rounds of counters


def codes(fmt: Format, values: np.ndarray) -> np.ndarray:
    return np.asarray(fmt.encode(fmt.from_grid(np.asarray(values))), dtype=np.int64)


def run(w_fmt: Format, a_fmt: Format, weights: np.ndarray, acts: np.ndarray,
        dsp: str | None = None, pipeline: int = 0, copies: int = 64) -> np.ndarray:
    """Dot products ``[case, pe]`` for grid values ``weights[case, pe, lane]``."""
    _, pes, simd = weights.shape
    w_words = [pack(row.ravel(), w_fmt.bits) for row in codes(w_fmt, weights)]
    a_words = [pack(row, a_fmt.bits) for row in codes(a_fmt, acts)]
    raw = simulate(lambda: DotProductUnit(w_fmt, a_fmt, simd, pes, dsp, pipeline),
                   {"w": w_words, "a": a_words}, ["dot"], copies, pipeline)["dot"]
    shape = sum_shape(w_fmt, a_fmt, simd)
    top = 1 << (shape.width - 1) if shape.signed else 1 << shape.width
    return np.array([[x - 2 * top if x >= top else x for x in unpack(word, shape.width, pes)]
                     for word in raw], dtype=object)  # e5m2 sums pass 64 bits


def expected(weights: np.ndarray, acts: np.ndarray) -> np.ndarray:
    """Exact sums in Python integers."""
    w = np.vectorize(int, otypes=[object])(weights)
    a = np.vectorize(int, otypes=[object])(acts)
    return (w * a[:, None, :]).sum(axis=2)


@pytest.mark.parametrize(("w_fmt", "a_fmt"), list(itertools.product(SMALL, SMALL)),
                         ids=lambda f: f.name)
def test_every_operand_pair_in_every_lane(w_fmt, a_fmt):
    """Case ``c`` puts pair ``c + 7 * lane`` in each lane: every pair reaches every lane."""
    pairs = np.array(list(itertools.product(w_fmt.grid_levels(), a_fmt.grid_levels())))
    picks = (np.arange(len(pairs))[:, None] + 7 * np.arange(LANES)) % len(pairs)
    weights, acts = pairs[picks, 0][:, None, :], pairs[picks, 1]
    got = run(w_fmt, a_fmt, weights, acts, copies=8)  # few cases: elaboration dominates
    assert np.array_equal(got, expected(weights, acts))


def extremes(fmt: Format, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Random grid values, half of them replaced by the extremes, 0 and the smallest
    magnitudes (subnormal limits of minifloats)."""
    levels = fmt.grid_levels()
    nonzero = np.abs(levels[levels != 0])
    corners = np.unique([levels[0], levels[-1], 0, nonzero.min(), -nonzero.min()])
    corners = corners[np.isin(corners, levels)]  # bipolar has no 0
    v = rng.choice(levels, shape)
    return np.where(rng.random(shape) < 0.5, rng.choice(corners, shape), v)


#: the 8- and 16-bit minifloat and int16 units take a minute each to simulate: slow
WIDE = [("int8", "int8"), ("int8", "uint4"), ("float6_e3m2fn", "uint4"), ("bipolar", "bipolar"),
        ("bipolar", "uint4"), ("int4", "int4"), ("int4", "uint4"),
        *(pytest.param(w, a, marks=pytest.mark.slow) for w, a in [
            ("int16", "int8"), ("float8_e4m3fn", "int8"), ("float8_e4m3fn", "float8_e4m3fn"),
            ("float8_e5m2", "float8_e5m2")])]


@pytest.mark.parametrize(("w", "a"), WIDE, ids=str)
@pytest.mark.parametrize("lanes", [16, 17])
def test_random_vectors_with_extremes(w, a, lanes):
    """2 PEs x 16 or 17 lanes (a ragged last counter group and popcount table); the all-
    minimum and all-maximum vectors included."""
    w_fmt, a_fmt = parse_format(w), parse_format(a)
    rng = np.random.default_rng(lanes)
    cases = 96
    weights = extremes(w_fmt, (cases, 2, lanes), rng)
    acts = extremes(a_fmt, (cases, lanes), rng)
    for c, (wv, av) in enumerate(itertools.product(w_fmt.grid_levels()[[0, -1]],
                                                   a_fmt.grid_levels()[[0, -1]])):
        weights[c], acts[c] = wv, av
    got = run(w_fmt, a_fmt, weights, acts, copies=8)
    assert np.array_equal(got, expected(weights, acts))


@pytest.mark.slow
def test_e4m3_products_exhaustive_in_two_lanes():
    """Every product of two finite float8_e4m3fn values, in both lanes of a counter sum."""
    fmt = parse_format("float8_e4m3fn")
    levels = fmt.grid_levels()
    pairs = np.array(list(itertools.product(levels, levels)))
    weights = np.stack([pairs[:, 0], pairs[::-1, 0]], axis=1)[:, None, :]
    acts = np.stack([pairs[:, 1], pairs[::-1, 1]], axis=1)
    assert np.array_equal(run(fmt, fmt, weights, acts), expected(weights, acts))


@pytest.mark.parametrize(("w", "a"), [("bipolar", "bipolar"), ("int4", "int4"),
                                      ("float8_e4m3fn", "float8_e4m3fn")], ids=str)
def test_every_pipeline_depth_is_exact(w, a):
    w_fmt, a_fmt = parse_format(w), parse_format(a)
    rng = np.random.default_rng(5)
    weights = extremes(w_fmt, (16, 1, 16), rng)
    acts = extremes(a_fmt, (16, 16), rng)
    levels = DotProductUnit(w_fmt, a_fmt, 16).levels
    assert levels >= 3
    for depth in range(levels + 1):
        got = run(w_fmt, a_fmt, weights, acts, pipeline=depth, copies=4)
        assert np.array_equal(got, expected(weights, acts)), depth


@pytest.mark.parametrize(("bits", "family", "ways"), [(2, "xcup", 9), (3, "xcup", 5),
                                                      (2, "xc7", 8), (3, "xc7", 5)])
def test_narrow_dsp_packing_goals(bits, family, ways):
    """FINN's lane formula ``1 + (A_W - 1 - W) // (W + A - 1)`` on DSP48E2 (A_W 27)."""
    fmt = Int(bits)
    assert dsp_packing(fmt, fmt, family, 27, 16).ways == ways
    if family == "xcup":
        assert ways == 1 + (27 - 1 - bits) // (2 * bits - 1)


@pytest.mark.parametrize(("bits", "family"), [(2, "xcup"), (3, "xcup"), (2, "xc7"),
                                              (3, "xc7")])
def test_narrow_packed_products_exhaustive_per_field_pair(bits, family):
    """Every (w_f, w_f+1, a) for every pair of neighbouring fields, the others random;
    then random 16-lane dot products with extremes."""
    fmt = Int(bits)
    ways = dsp_packing(fmt, fmt, family, 27, 16).ways
    rng = np.random.default_rng(bits)
    triples = np.array(list(itertools.product(fmt.grid_levels(), repeat=3)))
    weights, acts = [], []
    for f in range(ways - 1):
        w = rng.choice(fmt.grid_levels(), (len(triples), ways))
        w[:, f], w[:, f + 1] = triples[:, 0], triples[:, 1]
        weights.append(w)
        acts.append(triples[:, 2])
    weights = np.concatenate(weights)[:, :, None]
    acts = np.concatenate(acts)[:, None]
    assert np.array_equal(run(fmt, fmt, weights, acts, family), expected(weights, acts))
    weights = extremes(fmt, (200, ways, 16), rng)
    acts = extremes(fmt, (200, 16), rng)
    weights[0], acts[0] = fmt.grid_levels()[0], fmt.grid_levels()[0]
    assert np.array_equal(run(fmt, fmt, weights, acts, family, pipeline=1),
                          expected(weights, acts))


@pytest.mark.verilator
@pytest.mark.slow
@pytest.mark.parametrize("model", ["int4", "e4m3"])
def test_matrix_vector_layer_on_verilator(model, tmp_path):
    """A matrix-vector layer whose PEs sum their tables (int4 x int4) or signed minifloat
    products (e4m3 x e4m3) with the counters: 64 frames, random back-pressure, bit-exact
    against golden."""
    import onnx

    import bitloom
    from bitloom.boards import load_board
    from bitloom.emit.design import emit_design, load_design
    from bitloom.plan import make_plan
    from bitloom.sim.verify import verify

    from qonnx_models import minifloat_mlp, random_mlp

    proto = random_mlp(22, sizes=(32, 8), in_bits=4, in_signed=True) if model == "int4" \
        else minifloat_mlp(22, 4, 3, sizes=(32, 8))
    onnx.save(proto, str(tmp_path / "m.onnx"))
    plan = make_plan(bitloom.load(tmp_path / "m.onnx"), 4)
    fold = plan.layers[0].fold  # SIMD 32: several rounds of counters; two PEs
    assert (fold.pe, fold.simd, plan.layers[0].dsp) == (2, 32, None)
    emit_design(plan, load_board("pynq-z2"), tmp_path / "design", tmp_path / "m.onnx")
    result = verify(load_design(tmp_path / "design"), samples=64, pause=0.3)
    assert result.bit_exact, result.mismatch
    assert result.frames == 64
