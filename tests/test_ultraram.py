"""Line buffers and FIFOs in UltraRAM: planned when block RAM runs out, exact in hardware,
and UltraRAM in synthesis."""

from __future__ import annotations

from dataclasses import replace

import ort_models as om
import pytest

import bitloom
from bitloom.boards import load_board
from bitloom.errors import BitloomError
from bitloom.plan.cost import estimate_plan, layer_parts
from bitloom.plan.design import plan_design, with_ultraram
from bitloom.plan.folding import make_plan


@pytest.fixture(scope="module")
def wide(tmp_path_factory):
    """A 32x32x32 residual CNN (onnxruntime QDQ): its line buffers and the skip FIFO are
    block-RAM sized."""
    path = om.quantized("wide_qdq_pt", tmp_path_factory.mktemp("wide") / "wide.onnx")
    return path, bitloom.load(path)


def test_an_ultraram_part_counts_uram_tiles_instead_of_block_ram(wide):
    _, net = wide
    plan = make_plan(net, 1 << 20)
    lp = next(lp for lp in plan.layers if layer_parts(lp).get("window", {}).get("BRAM36"))
    moved = layer_parts(replace(lp, ultra=("window",)))["window"]
    assert "BRAM36" not in moved and moved["URAM"] >= 1


def test_the_planner_frees_block_ram_with_ultraram_best_ratio_first(wide):
    _, net = wide
    plan = make_plan(net, 1 << 20)
    before = estimate_plan(plan)
    assert before["BRAM36"] >= 4 and "URAM" not in before
    moved = with_ultraram(plan, 2, uram_budget=100)
    after = estimate_plan(moved)
    assert before["BRAM36"] - after["BRAM36"] >= 2 and after["URAM"] >= 1
    everything = with_ultraram(plan, 1000, uram_budget=100)
    assert estimate_plan(everything)["URAM"] > after["URAM"]
    none = with_ultraram(plan, 1000, uram_budget=0)
    assert estimate_plan(none) == before


def test_a_board_short_of_block_ram_fits_with_its_ultraram(wide):
    """ZCU104 with only 4 BRAM36 left: the fastest plan moves buffers to UltraRAM and stays
    within both ceilings; the same board without UltraRAM does not fit the model."""
    _, net = wide
    zcu104 = load_board("zcu104")
    short = replace(zcu104, resources={**zcu104.resources, "BRAM36": 4})
    plan = plan_design(net, short)
    est = estimate_plan(plan)
    assert any(lp.ultra for lp in plan.layers)
    assert est["BRAM36"] <= 0.8 * 4 and 1 <= est["URAM"] <= 0.8 * 96
    without = replace(short, resources={**short.resources, "URAM": 0})
    with pytest.raises(BitloomError, match="does not fit"):
        plan_design(net, without)


@pytest.mark.slow
@pytest.mark.verilator
def test_ultraram_buffers_are_bit_exact(wide, tmp_path):
    """Every line buffer and FIFO of the design in UltraRAM: 16 frames with random
    back-pressure, bit-exact on Verilator against golden."""
    from bitloom.emit.design import emit_design
    from bitloom.plan.requantizers import with_requantizers
    from bitloom.sim.verify import verify

    path, net = wide
    plan = with_ultraram(with_requantizers(make_plan(net, 1 << 16)), 1000, uram_budget=1000)
    assert sum(len(lp.ultra) for lp in plan.layers) >= 3
    design = emit_design(plan, load_board("zcu104"), tmp_path / "d", path)
    assert (tmp_path / "d" / "rtl" / "bitloom_core.v").read_text().count('"ultra"') >= 3
    result = verify(design, samples=16, pause=0.3)
    assert result.bit_exact, result.mismatch


@pytest.mark.synth
def test_ultraram_line_buffer_and_fifo_synthesize_to_uram(tmp_path):
    """Yosys (xcup, -uram) builds a line buffer and a FIFO placed in UltraRAM from URAM288
    tiles, and the same two from block RAM when they are not."""
    from amaranth import Elaboratable, Module
    from amaranth.back import verilog

    from bitloom.emit.synth import synthesize
    from bitloom.formats import Int
    from bitloom.hw.glue import StreamFifo
    from bitloom.hw.window import SlidingWindow
    from bitloom.ir import Window

    class Pair(Elaboratable):
        def __init__(self, ultra: bool) -> None:
            self.window = SlidingWindow(Window((32, 32), (3, 3)), 32, 1, Int(8), ultra=ultra)
            self.fifo = StreamFifo(8, 6000, ultra=ultra)

        def elaborate(self, platform) -> Module:
            m = Module()
            m.submodules.window, m.submodules.fifo = self.window, self.fifo
            return m

    counts = {}
    for ultra in (True, False):
        pair = Pair(ultra)
        ports = [getattr(port, name) for unit in (pair.window, pair.fifo)
                 for port in (unit.i, unit.o) for name in ("payload", "valid", "ready")]
        src = tmp_path / f"pair{ultra:d}.v"
        src.write_text(verilog.convert(pair, name="pair", ports=ports))
        counts[ultra] = synthesize([src], "pair", tmp_path / f"synth{ultra:d}",
                                   family="xcup", uram=True).resources
    assert counts[True]["URAM"] >= 2 and counts[True]["BRAM36"] == 0, counts[True]
    assert counts[False]["URAM"] == 0 and counts[False]["BRAM36"] >= 2, counts[False]
