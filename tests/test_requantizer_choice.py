"""The planner's requantizer per layer (thresholds or a proven scale unit), its overrides,
its report, and the hardware of both on Verilator against golden."""

from __future__ import annotations

import json

import numpy as np
import pytest
from float_models import float_mlp, ort_quantize

import bitloom
from bitloom.boards import load_board
from bitloom.cli import main
from bitloom.errors import BitloomError
from bitloom.plan import plan_design
from bitloom.plan.requantizers import requantizer_name

from qonnx_models import minifloat_mlp

SIZES = (16, 32, 24, 8)


def ort_mlp(tmp_path, activation: str = "QUInt8"):
    """An MLP quantized by onnxruntime's quantize_static, weights int8 per channel."""
    calib = np.random.default_rng(0).normal(size=(64, 16)).astype(np.float32)
    return ort_quantize(float_mlp(0, SIZES), calib, tmp_path / f"{activation}.onnx",
                        per_channel=True, activation=activation)


def kinds(plan) -> list[str]:
    return [requantizer_name(lp.requant) for lp in plan.layers]


def test_int8_layers_take_the_cheaper_scale_unit_and_overrides_hold(tmp_path):
    net = bitloom.load(ort_mlp(tmp_path))
    board = load_board("pynq-z2")
    assert kinds(plan_design(net, board)) == ["scale"] * 3
    assert kinds(plan_design(net, board, requantizers=["thresholds"])) == ["thresholds"] * 3
    assert kinds(plan_design(net, board, requantizers=["mvu1=thresholds"])) == \
        ["scale", "thresholds", "scale"]


def test_no_exact_scale_keeps_the_thresholds_and_forcing_one_is_refused(tmp_path):
    """QONNX ROUND (ties to even) on power-of-two scales steps unevenly: no line fits."""
    import onnx

    path = tmp_path / "e4m3.onnx"
    onnx.save(minifloat_mlp(0, 4, 3, sizes=SIZES), str(path))
    net = bitloom.load(path)
    board = load_board("pynq-z2")
    assert kinds(plan_design(net, board))[:2] == ["thresholds", "thresholds"]
    with pytest.raises(BitloomError, match="no scale requantizer is exact"):
        plan_design(net, board, requantizers=["scale"])


def test_bad_requantizer_options_exit_2_with_a_message(tmp_path, capsys):
    path = ort_mlp(tmp_path)
    for option, message in (("magic", "one of thresholds, scale"),
                            ("nolayer=scale", "names no layer nolayer")):
        code = main(["compile", str(path), "--board", "pynq-z2", "--out",
                     str(tmp_path / "d"), "--requantizer", option])
        assert code == 2
        assert message in capsys.readouterr().err


@pytest.mark.verilator
@pytest.mark.parametrize("activation, options", [
    ("QUInt8", ("mvu0=thresholds",)), ("QUInt16", ())], ids=["uint8-mixed", "uint16-scale"])
def test_scale_requantizers_are_bit_exact_on_verilator(tmp_path, activation, options):
    design = bitloom.compile(ort_mlp(tmp_path, activation), "pynq-z2", out=tmp_path / "d",
                             requantizers=options)
    report = json.loads((tmp_path / "d" / "report.json").read_text())
    chosen = [ly["requant"] for ly in report["layers"]]
    assert chosen == (["thresholds", "scale", "scale"] if options else ["scale"] * 3)
    assert report["layers"][1]["requantizer"]["multiplier_bits"] > 0
    reopened = bitloom.open_design(tmp_path / "d")
    assert kinds(reopened.plan) == kinds(design.plan)
    result = reopened.verify(samples=64)
    assert result.bit_exact, result.mismatch
