"""``bitloom.compile``: the library's one pipeline plans what the command line, the DSE and the
calibration plan (``plan_design``), and a design folder re-opens as the same design."""

from __future__ import annotations

from pathlib import Path

import pytest

import bitloom
from bitloom.boards import load_board
from bitloom.errors import BitloomError
from bitloom.plan import plan_design

MLP = Path(__file__).resolve().parent.parent / "examples" / "mlp_digits.onnx"


def layout(plan) -> list[tuple]:
    return [(lp.layer.name, lp.fold, lp.fifo_depths, lp.memory, lp.dsp) for lp in plan.layers]


@pytest.mark.parametrize("options", [{}, {"target_cycles": 64},
                                     {"weights_memory": ("streamed",)}])
def test_compile_builds_the_plan_every_user_plans(tmp_path, options):
    design = bitloom.compile(MLP, "pynq-z2", out=tmp_path / "d", **options)
    expected = plan_design(bitloom.load(MLP), load_board("pynq-z2"), **options)
    assert layout(design.plan) == layout(expected)
    assert design.report["cycles_per_frame"] == expected.cycles_per_frame
    reopened = bitloom.open_design(tmp_path / "d")
    assert layout(reopened.plan) == layout(expected)


def test_one_target_at_a_time(tmp_path):
    with pytest.raises(BitloomError, match="not both"):
        bitloom.compile(MLP, "pynq-z2", out=tmp_path / "d", target_fps=1e5, target_cycles=64)
