"""FIFO depths from the pipeline schedule (bitloom.plan.fifos): bounded by a whole frame,
growing with the lag of the long branch, and confirmed in simulation: the computed depths
run a residual block with no stall at the planned cycles per frame, half the skip FIFO
deadlocks it (the depths are not padded far beyond the need)."""

from __future__ import annotations

import math

import brevitas_models as bm
import pytest
from core_sim import run_core, with_depths
from hw_fuzz_models import REGRESSIONS, export

import bitloom
from bitloom.boards import load_board
from bitloom.ir import AddStreams, Concat, MatrixVector
from bitloom.plan import make_plan, plan_design
from bitloom.plan.fifos import in_shapes

from qonnx_models import random_cnn, random_mlp

TARGET_CYCLES = 256  # as tests/test_rtl_cnn.py: several layers folded


def frame_cap(net, lp) -> list[int]:
    """The old bound: a whole input frame per join input, + 2."""
    return [math.prod(s) // lp.fold.simd + 2 for s in in_shapes(net, lp.layer)]


@pytest.mark.parametrize("width", [8, 16, 32])
def test_skip_fifo_follows_the_branch_lag(width):
    """A 3x3 pad-1 conv on the residual branch lags W + 2 pixels: the skip FIFO holds about
    that (a row and a bit), not the whole W x W map."""
    net = bitloom.load(random_cnn(0, shape=(2, width, width), residual=True, pool="none"))
    plan = make_plan(net, TARGET_CYCLES)
    add = next(lp for lp in plan.layers if isinstance(lp.layer, AddStreams))
    chunks = add.layer.out_shape[-1] // add.fold.simd  # beats per pixel
    skip = max(add.fifo_depths)
    assert (width + 2) * chunks <= skip <= (2 * width + 8) * chunks, (add.fifo_depths, chunks)
    assert all(d <= cap for d, cap in zip(add.fifo_depths, frame_cap(net, add), strict=True))
    if width >= 16:
        assert skip < frame_cap(net, add)[0] / 4


@pytest.mark.parametrize(("variant", "form"), [("residual_int8", "qcdq"),
                                                ("concat_e4m3", "qonnx"),
                                                ("cnn_int4", "qonnx")])
def test_depths_never_exceed_a_frame(variant, form):
    net = bitloom.load(bm.cached_export(variant, form))
    plan = make_plan(net, TARGET_CYCLES)
    for lp in plan.layers:
        assert all(0 <= d <= cap for d, cap in
                   zip(lp.fifo_depths, frame_cap(net, lp), strict=True)), lp.layer.name
        if isinstance(lp.layer, (AddStreams, Concat)):
            assert min(lp.fifo_depths) >= 2 and max(lp.fifo_depths) < frame_cap(net, lp)[0]


def test_multi_fold_dense_unit_buffers_its_producer():
    """A dense unit with several neuron folds reads its input in the first fold only: the
    FIFO in front holds what the producer makes meanwhile, at most one input vector."""
    net = bitloom.load(bm.cached_export("cnn_int4", "qonnx"))
    plan = make_plan(net, TARGET_CYCLES)
    dense = next(lp for lp in plan.layers
                 if isinstance(lp.layer, MatrixVector) and lp.layer.window is None)
    sf = dense.layer.in_features // dense.fold.simd
    nf = dense.layer.out_features // dense.fold.pe
    assert nf > 1
    assert 2 < dense.fifo_depths[0] <= sf + 2


def test_computed_depths_run_a_residual_block_at_full_rate_and_half_deadlocks():
    """Amaranth simulation of the whole core, no back-pressure: with the computed depths the
    residual model is bit-exact at the planned cycles per frame; with half the join FIFOs
    the skip branch fills its FIFO and the block stalls, naming that FIFO."""
    net = bitloom.load(bm.cached_export("residual_int8", "qcdq"))
    plan = make_plan(net, TARGET_CYCLES)
    run = run_core(plan, frames=4)
    assert run.bit_exact, (run.stalled_at, run.full_fifos)
    assert abs(run.cycles_per_frame / plan.cycles_per_frame - 1) <= 0.05, run.frame_done

    add = next(n for n, lp in enumerate(plan.layers) if isinstance(lp.layer, AddStreams))
    depths = [lp.fifo_depths for lp in plan.layers]
    depths[add] = tuple(d // 2 for d in depths[add])
    half = run_core(with_depths(plan, depths), frames=4)
    assert half.stalled_at is not None
    name = plan.layers[add].layer.name
    assert any(f.startswith(f"{name}_in") for f in half.full_fifos), half.full_fifos


@pytest.mark.parametrize("target", [4, 16, 48])
def test_dense_chain_runs_at_the_planned_rate(target):
    """Dense units with several neuron folds behind one another (Amaranth, no
    back-pressure): the computed FIFOs keep every unit at the planned cycles per frame."""
    net = bitloom.load(random_mlp(11, sizes=(64, 32, 16, 10)))
    plan = make_plan(net, target)
    assert any(lp.layer.out_features // lp.fold.pe > 1 for lp in plan.layers)
    run = run_core(plan, frames=12)
    assert run.bit_exact, (run.stalled_at, run.full_fifos)
    assert abs(run.cycles_per_frame / plan.cycles_per_frame - 1) <= 0.05, run.frame_done


@pytest.mark.parametrize("variant", ["shared_quant_residual_int4", "residual-pair-on-2x2"])
def test_small_maps_and_elementwise_layers_run_at_the_planned_rate(tmp_path, variant):
    """Amaranth, no back-pressure, 12 frames: element-wise layers at one beat per cycle
    behind 2-beat FIFOs ran at half rate (the shared-quantizer residual block: 1,024 cycles
    per frame against 576); two padded 3x3 convolutions on a 2x2 map waited for each other
    through a window buffer of just the map and a skip FIFO capped at one frame (535 against
    432)."""
    if variant in bm.VARIANTS:
        path = bm.cached_export(variant, "qonnx")
        plan = plan_design(bitloom.load(path), load_board("pynq-z2"))
    else:
        path = export(REGRESSIONS[variant], tmp_path / "model.onnx")
        plan = make_plan(bitloom.load(path), 1024)
    run = run_core(plan, frames=12)
    assert run.bit_exact, (run.stalled_at, run.full_fifos)
    assert abs(run.cycles_per_frame / plan.cycles_per_frame - 1) <= 0.05, (
        run.cycles_per_frame, plan.cycles_per_frame)
