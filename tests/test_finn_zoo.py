"""FINN's bnn-pynq suite (TFC, SFC, LFC, CNV) from ``brevitas_examples``, exported as a FINN
user exports it: each imports (its ``2*x - 1`` preprocessing runs on the host) and its
golden output equals qonnx's executor on 16 random images, value for value."""

from __future__ import annotations

import finn_zoo_models as fz
import numpy as np
import pytest
from reference_check import run_reference

import bitloom

pytest.importorskip("brevitas_examples")


@pytest.mark.parametrize("name", sorted(fz.BNN_PYNQ))
def test_bnn_pynq_golden_equals_qonnx(name):
    path = fz.cached_export(name)
    net = bitloom.load(path)
    assert [s.op_type for s in net.input.steps] == ["Mul", "Sub"]
    x = fz.images(name, 16)
    reference, _ = run_reference(path, "qonnx", x)
    np.testing.assert_array_equal(net.run(x), reference)


#: FINN's published rates on the xc7z020 (finn-examples bnn-pynq, 100 MHz) times three:
#: the planned rates bitloom aims for on the PYNQ-Z2
GOALS_PYNQ_Z2 = {"tfc_1w1a": 12.5e6, "cnv_1w1a": 9_000}


@pytest.mark.parametrize("board", ["pynq-z2", "ultra96-v2", "zcu104"])
def test_bnn_pynq_nets_plan_within_every_board(board):
    """Every net fits every board under the default ceilings, its weights on chip."""
    from bitloom.boards import load_board
    from bitloom.plan import plan_design
    from bitloom.plan.cost import estimate_plan
    from bitloom.plan.design import DEFAULT_MAX_UTILIZATION, frame_cycles

    spec = load_board(board)
    for name in sorted(fz.BNN_PYNQ):
        plan = plan_design(bitloom.load(fz.cached_export(name)), spec)
        estimate = estimate_plan(plan)
        for resource, share in DEFAULT_MAX_UTILIZATION.items():
            assert estimate.get(resource, 0) <= share * spec.resources[resource], (name, resource)
        assert all(lp.memory is None or lp.memory.style != "streamed" for lp in plan.layers)
        assert frame_cycles(plan, spec) == plan.cycles_per_frame
        if board == "pynq-z2" and name in GOALS_PYNQ_Z2:
            assert plan.frames_per_second >= GOALS_PYNQ_Z2[name], (name, plan.cycles_per_frame)


@pytest.mark.slow
@pytest.mark.verilator
@pytest.mark.parametrize("name, cycles, frames", [("tfc_1w1a", 256, 64), ("cnv_1w1a", 65536, 3)])
def test_bnn_pynq_hardware_is_bit_exact(name, cycles, frames, tmp_path):
    """TFC and CNV (folded to keep the Verilator build short, 3 CNV frames to keep the suite
    short; bench/finn_zoo.py runs 8 at the board's folding) on random back-pressure, at the
    planned rate."""
    design = bitloom.compile(fz.cached_export(name), "pynq-z2", out=tmp_path / name,
                             target_cycles=cycles)
    result = design.verify(samples=frames)
    assert result.bit_exact, result.mismatch
    assert abs(result.cycle_error) <= 0.05, result.as_dict()
