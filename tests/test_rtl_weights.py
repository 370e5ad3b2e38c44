"""Weight memory styles in the whole accelerator: cocotb on Verilator, bit-exact against
golden with 64 frames and random back-pressure on every stream, the weights streamed into
one layer while the others read their ROMs from the emitted init files; and weight files
swapped under an unchanged RTL."""

from __future__ import annotations

import copy

import brevitas_models as bm
import numpy as np
import pytest

import bitloom
from bitloom.boards import load_board
from bitloom.emit.design import (
    check_weight_files,
    emit_design,
    emit_rtl,
    emit_weights,
    load_design,
)
from bitloom.plan import make_plan, make_plan_with
from bitloom.plan.memory import with_memories
from bitloom.sim.runner import simulate
from bitloom.sim.vectors import make_vectors
from bitloom.sim.verify import verify

from qonnx_models import random_mlp

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


def test_swapped_weight_files_run_without_new_rtl(tmp_path):
    """New weights written over the .mem files (the Verilog untouched, so the Verilator
    build is reused) give the new network's outputs, bit-exact."""
    net = bitloom.load(random_mlp(12, sizes=(16, 12, 8), bipolar_weights=True))
    plan = with_memories(make_plan(net, 16), default="bram")
    sources = emit_rtl(plan, tmp_path / "rtl")
    verilog = [src.read_text() for src in sources]
    swapped = copy.deepcopy(net)
    swapped.layers[0].weights = -swapped.layers[0].weights  # bipolar: still in the format
    swapped_plan = make_plan_with(swapped, [lp.fold for lp in plan.layers],
                                  [lp.fifo_depths for lp in plan.layers], plan.clock_mhz,
                                  plan.in_elems, [lp.style for lp in plan.layers])
    emit_weights(swapped_plan, tmp_path / "rtl")
    check_weight_files(swapped_plan, tmp_path / "rtl")
    assert [src.read_text() for src in sources] == verilog
    x = np.random.default_rng(0).uniform(-1, 3, size=(16, 16)).astype(np.float32)
    trace = swapped.trace(x)
    assert not np.array_equal(trace[-1], net.trace(x)[-1])  # the swap changes the outputs
    result = simulate(sources, make_vectors(swapped_plan, trace, 0.3, 0.3, 1), tmp_path / "sim")
    assert result.passed, result.mismatch
