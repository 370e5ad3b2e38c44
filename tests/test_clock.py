"""A target clock: register stages in the layers' datapaths, bit-exact at the new depth."""

from __future__ import annotations

from pathlib import Path

import pytest

import bitloom
from bitloom.cli import main
from bitloom.plan.clock import LEVEL_PS, register_levels, stages_for

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.mark.parametrize("levels, period, depth", [
    (8, 8 * LEVEL_PS, 0), (8, 4 * LEVEL_PS, 1), (8, 3 * LEVEL_PS, 2), (8, 2 * LEVEL_PS, 3),
    (8, LEVEL_PS, 7), (8, LEVEL_PS / 2, 7), (1, LEVEL_PS / 2, 0)])
def test_the_fewest_registers_that_fit_the_period(levels, period, depth):
    assert stages_for(levels, period) == depth


@pytest.mark.parametrize("depth, levels, placed", [
    (0, 8, []), (1, 8, [3]), (3, 8, [1, 3, 5]), (7, 8, [0, 1, 2, 3, 4, 5, 6]), (2, 5, [1, 3])])
def test_registers_cut_the_chain_evenly_the_accumulation_last(depth, levels, placed):
    assert register_levels(depth, levels) == placed


def test_a_faster_clock_registers_more_and_reports_frames_at_it(tmp_path):
    slow = bitloom.compile(EXAMPLES / "cnn_digits.onnx", "ultra96-v2", out=tmp_path / "a")
    fast = bitloom.compile(EXAMPLES / "cnn_digits.onnx", "ultra96-v2", out=tmp_path / "b",
                           clock_mhz=250)
    assert all(lp.pipeline == 0 for lp in slow.plan.layers)
    depths = {lp.layer.name: lp.pipeline for lp in fast.plan.layers}
    assert depths["conv2"] >= 1 and depths["maxpool1"] == 0  # only datapaths with levels
    assert fast.report["clock_mhz"] == 250
    assert fast.report["frames_per_second"] == pytest.approx(
        250e6 / fast.report["cycles_per_frame"])
    assert fast.report["latency_cycles_estimate"] > slow.report["latency_cycles_estimate"]
    reopened = bitloom.open_design(tmp_path / "b")
    assert {lp.layer.name: lp.pipeline for lp in reopened.plan.layers} == depths


def test_a_clock_the_board_cannot_give_exits_2(tmp_path, capsys):
    code = main(["compile", str(EXAMPLES / "cnn_digits.onnx"), "--board", "pynq-z2",
                 "--out", str(tmp_path / "d"), "--clock", "150"])
    assert code == 2
    err = capsys.readouterr().err
    assert "--clock 150" in err and "142.857" in err and "Traceback" not in err


@pytest.mark.verilator
def test_pipelined_datapaths_are_bit_exact_on_verilator(tmp_path):
    """The example CNN at 250 MHz on a PYNQ-Z2 (convolutions and the dense layer with two
    to three registers among their adder rows): 64 frames with random back-pressure,
    bit-exact, cycles per frame as planned."""
    design = bitloom.compile(EXAMPLES / "cnn_digits.onnx", "pynq-z2", out=tmp_path / "d",
                             clock_mhz=250)
    assert sum(lp.pipeline for lp in design.plan.layers) >= 4
    result = design.verify(samples=64)
    assert result.bit_exact, result.mismatch
    assert result.measured_cycles_per_frame <= 1.05 * result.expected_cycles_per_frame
