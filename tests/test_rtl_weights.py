"""Weight memory styles in the whole accelerator: cocotb on Verilator, bit-exact against
golden with 64 frames and random back-pressure on every stream, the weights streamed into
one layer while the others read their ROMs from the emitted init files."""

from __future__ import annotations

import brevitas_models as bm
import pytest

import bitloom
from bitloom.boards import load_board
from bitloom.emit.design import emit_design, load_design
from bitloom.plan import make_plan
from bitloom.plan.memory import with_memories
from bitloom.sim.verify import verify

pytestmark = pytest.mark.verilator


def test_streamed_depthwise_with_bram_and_lutram_roms(tmp_path):
    path = bm.cached_export("depthwise_binary", "qonnx")
    net = bitloom.load(path)
    plan = make_plan(net, 256)
    kinds = {lp.layer.kind: lp.layer.name for lp in plan.layers if lp.memory}
    styles = {kinds["DepthwiseConv"]: "streamed", kinds["Conv"]: "bram", kinds["MatMul"]: "lutram"}
    plan = with_memories(plan, styles=styles)
    emit_design(plan, load_board("pynq-z2"), tmp_path / "design", path)
    design = load_design(tmp_path / "design")  # what `bitloom verify DIR` checks
    assert {lp.layer.name: lp.style for lp in design.plan.layers if lp.memory} == styles
    result = verify(design, samples=64, pause=0.3)
    assert result.bit_exact, result.mismatch
    assert result.frames == 64
    # the streamed words keep up: one weight word per step, no extra cycles
    assert result.measured_cycles_per_frame == plan.cycles_per_frame, result.as_dict()
