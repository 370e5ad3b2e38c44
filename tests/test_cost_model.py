"""The cost model's structure: each component responds to what it physically depends on."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

import bitloom
from bitloom.dse.calibrate import Row, fit
from bitloom.formats import parse_format
from bitloom.ir import Thresholds
from bitloom.plan import cost
from bitloom.plan.folding import make_plan
from bitloom.plan.memory import bram36_tiles

from qonnx_models import random_mlp


def mlp_plan(target: int, w_bits: int = 4, act_bits: int = 4):
    return make_plan(bitloom.load(random_mlp(0, sizes=(32, 16, 8), w_bits=w_bits,
                                             act_bits=act_bits, in_bits=act_bits)), target)


def test_more_parallelism_costs_more_luts():
    fast, slow = mlp_plan(16), mlp_plan(256)
    assert sum(lp.fold.pe * lp.fold.simd for lp in fast.layers) > \
        sum(lp.fold.pe * lp.fold.simd for lp in slow.layers)
    assert cost.estimate_plan(fast)["LUT"] > cost.estimate_plan(slow)["LUT"]
    assert cost.estimate_plan(fast) == {k: sum(cost.estimate_layer(lp)[k] for lp in fast.layers)
                                        for k in ("LUT", "FF", "DSP", "BRAM36")}


def test_wider_formats_cost_more():
    assert cost.estimate_plan(mlp_plan(16, 6, 6))["LUT"] > \
        cost.estimate_plan(mlp_plan(16, 3, 3))["LUT"]


def test_block_ram_only_for_large_deep_memories():
    assert cost.memory_cost(64, 256) == {"rom": 256 * cost.rom_sites(64)}  # shallow: logic
    assert "BRAM36" not in cost.memory_cost(576, 20)  # Yosys built this one as logic
    assert cost.memory_cost(720, 24) == {"BRAM36": 1.0}  # ... and this one in a RAMB36
    assert cost.memory_cost(512, 8, "fifo") == {"BRAM36": 0.5}
    assert "ram" in cost.memory_cost(16, 64, "fifo")
    assert "ram" in cost.memory_cost(144, 16, "buffer")
    assert cost.memory_cost(1, 32, "rom") == {}  # one word of constants: wiring
    # a deeper ROM of the same width never costs fewer LUT sites while it stays logic
    sites = [cost.memory_cost(d, 8).get("rom", 0) for d in (8, 32, 64, 128, 256)]
    assert sites == sorted(sites)


def test_bram_tiles():
    """Worked by hand from the RAMB18E1 aspect ratios (UG473): 16Kx1 .. 512x36."""
    assert bram36_tiles(512, 36) == 0.5
    assert bram36_tiles(1024, 36) == 1  # two 512x36, or two 1Kx18
    assert bram36_tiles(1024, 72) == 2
    assert bram36_tiles(1500, 40) == 2.5  # five 2Kx9 side by side
    assert bram36_tiles(32768, 1) == 1  # two 16Kx1 stacked
    assert bram36_tiles(1, 1) == 0.5


@pytest.mark.parametrize(("depth", "width"), [(d, w) for d in (1, 100, 513, 1500, 4097, 20000)
                                              for w in (1, 7, 9, 36, 40, 72, 130)])
def test_bram_tiles_hold_the_bits_and_grow_with_the_memory(depth, width):
    tiles = bram36_tiles(depth, width)
    assert tiles * 36 * 1024 >= depth * width  # a RAMB36 holds 36 Kib with parity
    assert tiles * 2 == int(tiles * 2)  # whole RAMB18s
    assert bram36_tiles(depth + 1, width) >= tiles
    assert bram36_tiles(depth, width + 1) >= tiles


def test_dsp_mapping_by_product_width():
    f = parse_format
    assert cost.dsp_product(f("int8"), f("uint8"))
    assert cost.dsp_product(f("int6"), f("int6"))
    assert not cost.dsp_product(f("int3"), f("uint3"))  # 6-bit product: LUTs
    assert not cost.dsp_product(f("int4"), f("uint4"))  # sliced LUT-ROM products
    assert not cost.dsp_product(f("e4m3"), f("e4m3"))
    assert not cost.dsp_product(f("bipolar"), f("int8"))
    plan = mlp_plan(16, 8, 8)
    counts = [cost.layer_counts(lp) for lp in plan.layers]
    assert [c.get("DSP", 0) for c in counts] == [lp.fold.pe * lp.fold.simd for lp in plan.layers]
    assert all("mac" not in c for c in counts)


def test_packed_dsps_are_counted_per_multiplier():
    """A board plan packs int8 products two per DSP (fewer DSPs, same LUT model); an int4
    plan keeps its products in LUT tables."""
    from bitloom.plan.folding import with_dsps

    plain = mlp_plan(4, 8, 8)
    packed = with_dsps(mlp_plan(4, 8, 8), "xcup")
    assert all(lp.dsp == "xcup" for lp in packed.layers)
    for a, b in zip(plain.layers, packed.layers, strict=True):
        assert cost.dsp_count(b) == -(-a.fold.pe // 2) * a.fold.simd < cost.dsp_count(a) \
            or a.fold.pe == 1
    assert cost.estimate_plan(packed)["DSP"] < cost.estimate_plan(plain)["DSP"]
    assert all(lp.dsp is None for lp in with_dsps(mlp_plan(4), "xcup").layers)


def thresholds(channels: int, levels: int, rng: np.random.Generator) -> Thresholds:
    table = np.sort(rng.integers(-500, 500, size=(channels, levels)), axis=1)
    return Thresholds(table=table, increasing=np.ones(channels, bool),
                      out_fmt=parse_format(f"uint{int(np.log2(levels + 1))}"))


def test_thresholds_against_constants_are_counted_apart():
    """One channel per lane: the table is constant, folded into the compares; a ROM of 16
    words or more (whose output register Yosys keeps) is counted as a table of its own."""
    req = thresholds(32, 15, np.random.default_rng(0))
    constant = cost.threshold_counts(req, 12, lanes=32)
    from_rom = cost.threshold_counts(req, 12, lanes=2)
    shallow = cost.threshold_counts(req, 12, lanes=4)
    # the thresholds lie within +-500 (10 bits) of a 12-bit accumulator (13-bit thresholds):
    # 10 bits per compare, and 3 bits per lane ask whether the accumulator is beyond them
    assert constant["table"] == 0 and constant["compare_bits"] == 0
    assert constant["const_compare"] == 32 * 15 * 10 + 32 * 3
    assert from_rom["table"] > 0 and from_rom["compare_bits"] > 0
    assert shallow["table"] == 0 and shallow["compare_bits"] > 0  # 8 words: merged
    assert from_rom["compare_bits"] + from_rom["const_compare"] == 2 * 15 * 10 + 2 * 3
    more_levels = cost.threshold_counts(thresholds(32, 255, np.random.default_rng(0)), 12, 2)
    assert more_levels["compare"] == 2 * 255 > from_rom["compare"]


def test_datapath_follows_the_pe_strategy():
    """Narrow pairs are table lookups (no multiplier), wide ones multipliers; the adder
    trees widen by a bit per row."""
    f = parse_format
    assert cost.tree_bits(1, 8) == 0
    assert cost.tree_bits(2, 8) == 9
    assert cost.tree_bits(4, 8) == 2 * 9 + 10
    looked, trees, shared = cost.datapath(f("int4"), f("int4"))
    assert looked > 0 and len(trees) == 2 and not shared  # two 2-bit slices of the weight
    assert cost.datapath(f("e4m3"), f("e4m3"))[0] == 0  # a multiplier
    assert cost.datapath(f("bipolar"), f("int4")) == (4, (4,), (4,))
    plan = mlp_plan(4)
    assert all("lookup" in cost.layer_counts(lp) and "mac" not in cost.layer_counts(lp)
               for lp in plan.layers)


def test_varying_bits_ignores_shared_table_bits():
    table = np.array([[1, 2], [1, 3], [1, 2], [1, 3]])
    assert cost.varying_bits(table, lanes=1, tbits=8) == 1  # only the LSB of column 2
    assert cost.varying_bits(table, lanes=4, tbits=8) == 0
    # wide (Kulisch) accumulators: thresholds beyond int64 are counted exactly too
    wide = np.array([[2**70 + 1, -(2**70)], [2**70 + 3, -(2**70)]], dtype=object)
    assert cost.varying_bits(wide, lanes=1, tbits=73) == 1


def test_product_costs_read_at_run_time(tmp_path):
    """The bench-pe table is read when estimating; unmeasured pairs are interpolated
    within their family, between their measured neighbours."""
    rows = [{"weight": w, "activation": a, "family": "xc7", "simd": 16, "pes": 1,
             "dsp_allowed": False, "lut": lut, "ff": 16 * 2} for w, a, lut in
            (("int2", "int2", 16 * 10), ("int4", "int4", 16 * 40), ("int8", "int8", 16 * 160),
             ("float4_e2m1fn", "float4_e2m1fn", 16 * 50))]
    path = tmp_path / "pe_costs.json"
    path.write_text(json.dumps({"costs": rows}))
    f = parse_format
    assert cost.per_mac(f("int4"), f("int4"), path) == (40, 2)
    assert 10 < cost.per_mac(f("int3"), f("int3"), path)[0] < 40
    assert cost.per_mac(f("int6"), f("int6"), path)[0] > 40
    assert cost.per_mac(f("e3m2"), f("e3m2"), path)[0] > 50  # one point: proportional
    assert cost.per_mac(f("int4"), f("int4"), tmp_path / "missing.json")[0] > 0


def test_weights_in_the_chosen_memory_style():
    lp = mlp_plan(64).layers[0]
    depth, width = lp.memory.depth, lp.memory.width
    as_bram = replace(lp, memory=replace(lp.memory, style="bram"))
    as_logic = replace(lp, memory=replace(lp.memory, style="lutram"))
    streamed = replace(lp, memory=replace(lp.memory, style="streamed"))
    assert cost.weight_memory(as_bram, depth, width) == {"BRAM36": as_bram.memory.bram36}
    assert as_bram.memory.bram36 > 0
    assert cost.weight_memory(as_logic, depth, width)["rom"] > 0
    assert "rom" not in cost.weight_memory(streamed, depth, width)
    assert cost.estimate_layer(as_logic)["LUT"] > cost.estimate_layer(streamed)["LUT"]


def test_fit_recovers_known_weights():
    """Rows generated from known weights are fitted back to them (the calibration's fit)."""
    rng = np.random.default_rng(1)
    true = {res: {k: float(rng.uniform(0.5, 3)) for k in cost.COEFFICIENTS[res]}
            for res in ("LUT", "FF")}
    rows = []
    for i in range(40):
        counts = {k: float(rng.uniform(0, 500)) for k in
                  {*cost.COEFFICIENTS["LUT"], *cost.FF_COUNTS.values()}}
        est = cost.estimate_counts(counts, true)
        measured = {"LUT": est["LUT"], "FF": est["FF"], "DSP": 0.0, "BRAM36": 0.0}
        rows.append(Row(f"c{i}", "train", "l", "MatMul", "dense", "int", "int4", "int4", 1, 1,
                        counts, measured, measured, {"unit": counts}, {"unit": measured}))
    fitted = fit(rows)
    for res in ("LUT", "FF"):
        for k, v in true[res].items():
            assert fitted[res][k] == pytest.approx(v, rel=0.02), (res, k)
