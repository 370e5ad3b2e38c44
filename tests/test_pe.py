"""Dot-product strategies in the Amaranth simulator: exhaustive for every pair of small
formats, randomized over SIMD lanes."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from amaranth import Module, Signal
from amaranth.sim import Simulator

from bitloom.formats import Int, parse_format
from bitloom.hw.pe import dot_product
from bitloom.plan.products import table_kind

SMALL = [Int(1, True), Int(2, True), Int(2, False), Int(3, True), Int(4, True),
         Int(4, False), Int(4, True, narrow=True), parse_format("float4_e2m1fn"),
         parse_format("e1m2"), parse_format("ue2m2")]


def evaluate(w_fmt: Int, a_fmt: Int, lanes: int, cases: list[tuple[list[int], list[int]]]):
    """Outputs of a ``lanes``-wide dot product for value vectors ``cases``."""
    m = Module()
    ws = [Signal(w_fmt.bits, name=f"w{i}") for i in range(lanes)]
    xs = [Signal(a_fmt.bits, name=f"a{i}") for i in range(lanes)]
    out = Signal.like(dot_product(ws, xs, w_fmt, a_fmt))
    m.d.comb += out.eq(dot_product(ws, xs, w_fmt, a_fmt))
    results: list[int] = []

    async def bench(ctx):
        for wv, av in cases:
            for sig, code in zip(ws, w_fmt.encode(w_fmt.from_grid(wv)), strict=True):
                ctx.set(sig, int(code))
            for sig, code in zip(xs, a_fmt.encode(a_fmt.from_grid(av)), strict=True):
                ctx.set(sig, int(code))
            results.append(ctx.get(out))

    sim = Simulator(m)
    sim.add_testbench(bench)
    sim.run()
    return results


@pytest.mark.parametrize(("w_fmt", "a_fmt"), list(itertools.product(SMALL, SMALL)),
                         ids=lambda f: f.name)
def test_every_operand_pair_is_exact(w_fmt, a_fmt):
    pairs = list(itertools.product(w_fmt.grid_levels().tolist(), a_fmt.grid_levels().tolist()))
    cases = [([w], [a]) for w, a in pairs]
    assert evaluate(w_fmt, a_fmt, 1, cases) == [w * a for w, a in pairs]


@pytest.mark.parametrize(("w_fmt", "a_fmt"), [(Int(1, True), Int(1, True)),
                                              (Int(1, True), Int(4, False)),
                                              (Int(8, True), Int(8, False)),
                                              (Int(4, True), Int(4, True)),
                                              (parse_format("float8_e4m3fn"),
                                               parse_format("float8_e4m3fn")),
                                              (parse_format("e3m2"), Int(4, False))], ids=str)
@pytest.mark.parametrize("lanes", [3, 16])
def test_random_vectors_with_extremes(w_fmt, a_fmt, lanes):
    rng = np.random.default_rng(lanes)
    wv, av = w_fmt.grid_levels(), a_fmt.grid_levels()
    cases = [([int(wv[0])] * lanes, [int(av[-1])] * lanes),  # most negative sum
             ([int(wv[-1])] * lanes, [int(av[-1])] * lanes)]  # most positive sum
    cases += [(list(rng.choice(wv, lanes)), list(rng.choice(av, lanes))) for _ in range(200)]
    expected = [sum(int(x) * int(y) for x, y in zip(w, a, strict=True)) for w, a in cases]
    assert evaluate(w_fmt, a_fmt, lanes, cases) == expected


@pytest.mark.synth
def test_bench_pe_writes_its_table(tmp_path):
    from bitloom.cli import main

    assert main(["bench", "pe", "--family", "xc7", "--pair", "bipolarxbipolar", "--simd", "8",
                 "--out", str(tmp_path), "--work", str(tmp_path / "work")]) == 0
    table = (tmp_path / "pe_costs.md").read_text()
    assert "| bipolar | bipolar | xc7 | 8 | 1 |" in table
    import json

    cost = json.loads((tmp_path / "pe_costs.json").read_text())["costs"][0]
    assert 0 < cost["lut_per_mac"] <= 4  # XNOR-popcount: the goal is 4 LUT per MAC


def test_e4m3_times_e4m3_exhaustive():
    """Every product of two finite float8_e4m3fn values."""
    fmt = parse_format("float8_e4m3fn")
    codes = np.arange(256)
    finite = codes[np.isfinite(fmt.decode(codes))]
    grid = fmt.to_grid(fmt.decode(finite))
    cases = [([int(w)], [int(a)]) for w in grid for a in grid]
    got = evaluate(fmt, fmt, 1, cases)
    assert got == [w[0] * a[0] for w, a in cases]


def test_narrow_products_are_tables():
    """Which pairs get LUT-table partial products (one LUT6 per bit) instead of multipliers."""
    e2m1, e4m3 = parse_format("float4_e2m1fn"), parse_format("float8_e4m3fn")
    assert table_kind(Int(4), Int(4)) == "slice activations"
    assert table_kind(Int(8), Int(4, False)) == "slice weights"
    assert table_kind(Int(4), e2m1) == "slice weights"
    assert table_kind(e2m1, e2m1) == "magnitudes"
    assert table_kind(e2m1, parse_format("e1m2")) == "magnitudes"
    assert table_kind(e4m3, e4m3) is None
    assert table_kind(Int(8), Int(8)) is None
