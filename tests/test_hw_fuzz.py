"""The hardware fuzzer's seeded subset, and the regressions it and its users found.

Each random model (tests/hw_fuzz_models.py) is exported by Brevitas (QONNX, QCDQ) or
quantized by onnxruntime (QDQ), checked against its reference executor, compiled with a
random folding, board and weight memory, and verified on Verilator with random
back-pressure: bit-exact at every layer, cycles per frame within 5% of the plan.
``bench/hw_fuzz.py`` runs hundreds of seeds and records them in docs/results.
"""

from __future__ import annotations

import brevitas_models as bm
import pytest
from hw_fuzz_models import REGRESSIONS, random_spec
from hw_fuzz_run import CYCLE_TOLERANCE, OK, run_spec
from reference_check import check_against_reference

import bitloom
from bitloom.boards import load_board
from bitloom.emit.design import emit_design
from bitloom.plan import plan_for_board
from bitloom.plan.memory import board_budget, with_memories
from bitloom.sim.verify import verify

pytestmark = pytest.mark.verilator

#: seeds of the fast subset (every source and form, a minifloat, streamed weights, a
#: residual pair on a small map); each reaches Verilator
FAST_SEEDS = (4, 1000, 1002, 1003)

@pytest.mark.parametrize("form", ["qonnx", "qcdq"])
def test_shared_quantizer_residual_block_is_exact_at_the_planned_rate(tmp_path, form):
    """A Brevitas residual block with one quantizer on both addends and after the add, as
    a user compiles it for a PYNQ-Z2: its requantize-of-a-requantize table reaches past the
    uint4 accumulator (thresholds read back negative), and 2-beat FIFOs moved at half rate
    (1,024 cycles per frame against 576)."""
    path = bm.cached_export("shared_quant_residual_int4", form)
    check_against_reference(path, form, bm.input_batch("shared_quant_residual_int4", 8))
    net = bitloom.load(path)
    board = load_board("pynq-z2")
    plan = with_memories(plan_for_board(net, board), board_budget(board))
    result = verify(emit_design(plan, board, tmp_path / "design", path), samples=64)
    assert result.bit_exact, result.mismatch
    assert abs(result.cycle_error) <= CYCLE_TOLERANCE, (
        result.measured_cycles_per_frame, plan.cycles_per_frame)


@pytest.mark.parametrize("seed", FAST_SEEDS)
def test_random_model_is_exact_on_verilator_at_the_planned_rate(tmp_path, seed):
    outcome = run_spec(random_spec(seed), tmp_path)
    assert outcome.stage == OK, outcome.as_dict()


@pytest.mark.parametrize("name", REGRESSIONS)
def test_fuzzer_regression(tmp_path, name):
    outcome = run_spec(REGRESSIONS[name], tmp_path)
    assert outcome.stage == OK, outcome.as_dict()
