"""Convolutional networks exported by Brevitas, in hardware: cocotb on Verilator, bit-exact
against golden with random back-pressure on both AXI streams and 64 frames in flight, and
the measured cycles per frame within 5% of the plan's model.

One model per topology, the formats spread over them (INT4, INT8, binary weights, float8
e4m3fn, e3m2 and e2m1), so every Verilator build (the slow part) tests something new.
"""

from __future__ import annotations

import brevitas_models as bm
import pytest

import bitloom
from bitloom.boards import load_board
from bitloom.emit.design import emit_design
from bitloom.plan import make_plan, make_plan_with
from bitloom.plan.requantizers import requantizer_name, with_requantizers
from bitloom.sim.verify import verify

pytestmark = pytest.mark.verilator

CASES = [
    ("cnn_int4", "qonnx"),  # conv 3x3 s1 p1, BN, ReLU, max pool, conv 3x3 s2, GAP, linear
    # residual block: fan-out, skip requantized, Add; requantizers of all three kinds
    ("residual_int8", "qcdq"),
    ("depthwise_binary", "qonnx"),  # depthwise 3x3 then pointwise 1x1, binary weights
    ("concat_e4m3", "qonnx"),  # two branches concatenated along channels
    ("cnn_e3m2", "qonnx"),
    ("cnn_e2m1", "qonnx"),
]
#: a folding target that leaves several layers folded (cycles per frame)
TARGET_CYCLES = 256
#: requantizers beyond the cost model's choice (which takes scale units on the int8 skip,
#: add and pool, fabric multipliers there, and on the average pools of the int4 and e3m2 CNNs)
REQUANTIZERS = {"residual_int8": ("conv0=scale", "conv2=scale-lut")}


@pytest.mark.parametrize(("variant", "form"), CASES, ids=[f"{v}-{f}" for v, f in CASES])
def test_cnn_hardware_is_bit_exact(tmp_path, variant, form):
    path = bm.cached_export(variant, form)
    net = bitloom.load(path)
    board = load_board("pynq-z2")
    plan = with_requantizers(make_plan(net, TARGET_CYCLES), REQUANTIZERS.get(variant, ()),
                             board)
    kinds = {requantizer_name(lp.requant) for lp in plan.layers}
    if variant == "residual_int8":
        assert {"thresholds", "scale", "scale-lut"} <= kinds, kinds
    design = emit_design(plan, board, tmp_path / "design", path)
    result = verify(design, samples=64, pause=0.3)
    assert result.bit_exact, result.mismatch
    assert result.cycle_error is not None and abs(result.cycle_error) <= 0.05, result.as_dict()


def test_undersized_fifo_is_named(tmp_path):
    """A skip-branch FIFO far below the branch's lag deadlocks the residual block; the
    verifier reports the stall and names that FIFO instead of hanging."""
    path = bm.cached_export("residual_int4", "qonnx")
    net = bitloom.load(path)
    plan = make_plan(net, TARGET_CYCLES)
    add = next(i for i, lp in enumerate(plan.layers) if lp.layer.kind == "Add")
    depths = [list(lp.fifo_depths) for lp in plan.layers]
    depths[add] = [2, 2]
    starved = make_plan_with(net, [lp.fold for lp in plan.layers], depths, plan.clock_mhz,
                             plan.in_elems)
    design = emit_design(starved, load_board("pynq-z2"), tmp_path / "design", path)
    result = verify(design, samples=8, pause=0.0)
    assert not result.bit_exact
    name = plan.layers[add].layer.name
    assert "stalled" in result.mismatch and f"{name}_in" in result.mismatch, result.mismatch
