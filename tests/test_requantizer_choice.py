"""The planner's requantizer per layer (thresholds or a proven scale unit), its overrides,
its report, and the hardware of both on Verilator against golden."""

from __future__ import annotations

import json
import pickle

import numpy as np
import onnx
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


def minifloat_model(tmp_path, exp_bits: int, man_bits: int):
    """A QONNX MLP of minifloat activations on power-of-two scales, rounded ties to even."""
    path = tmp_path / f"e{exp_bits}m{man_bits}.onnx"
    onnx.save(minifloat_mlp(0, exp_bits, man_bits, sizes=SIZES), str(path))
    return path


def test_minifloat_layers_of_power_of_two_scales_shift_instead_of_comparing(tmp_path):
    net = bitloom.load(minifloat_model(tmp_path, 4, 3))
    plan = plan_design(net, load_board("pynq-z2"))
    assert kinds(plan)[:2] == ["scale", "scale"]
    assert all(lp.scale.ties_to_even and "multiplier" not in lp.scale.varying()
               for lp in plan.layers[:2])


def test_without_an_exact_scale_the_plan_keeps_thresholds_and_refuses_to_force_one(
        tmp_path, monkeypatch):
    from bitloom.plan import requantizers

    monkeypatch.setenv("BITLOOM_CACHE", str(tmp_path / "cache"))  # no stored fits
    monkeypatch.setattr(requantizers, "fit_scale", lambda th, acc: "no line steps so")
    requantizers._fits.clear()
    net = bitloom.load(ort_mlp(tmp_path))
    board = load_board("pynq-z2")
    try:
        assert kinds(plan_design(net, board)) == ["thresholds"] * 3
        with pytest.raises(BitloomError, match="no scale requantizer is exact here"):
            plan_design(net, board, requantizers=["scale"])
    finally:
        requantizers._fits.clear()


def test_bad_requantizer_options_exit_2_with_a_message(tmp_path, capsys):
    path = ort_mlp(tmp_path)
    for option, message in (("magic", "one of thresholds, scale"),
                            ("nolayer=scale", "names no layer nolayer")):
        code = main(["compile", str(path), "--board", "pynq-z2", "--out",
                     str(tmp_path / "d"), "--requantizer", option])
        assert code == 2
        assert message in capsys.readouterr().err


@pytest.mark.verilator
@pytest.mark.parametrize("exp_bits, man_bits", [(4, 3), (5, 2)], ids=["e4m3", "e5m2"])
def test_minifloat_scale_requantizers_are_bit_exact_on_verilator(tmp_path, exp_bits,
                                                                 man_bits):
    design = bitloom.compile(minifloat_model(tmp_path, exp_bits, man_bits), "pynq-z2",
                             out=tmp_path / "d", requantizers=["scale"])
    assert kinds(design.plan)[:2] == ["scale", "scale"]
    result = design.verify(samples=64)
    assert result.bit_exact, result.mismatch


@pytest.mark.verilator
@pytest.mark.parametrize("activation, options", [
    ("QUInt8", ("mvu0=thresholds", "mvu1=scale", "mvu2=scale-lut")), ("QUInt16", ())],
    ids=["uint8-mixed", "uint16-scale"])
def test_scale_requantizers_are_bit_exact_on_verilator(tmp_path, activation, options):
    """Thresholds, a DSP multiplier and a fabric one in one model; 16-bit outputs by cost."""
    design = bitloom.compile(ort_mlp(tmp_path, activation), "pynq-z2", out=tmp_path / "d",
                             requantizers=options)
    report = json.loads((tmp_path / "d" / "report.json").read_text())
    chosen = [ly["requant"] for ly in report["layers"]]
    if options:
        assert chosen == ["thresholds", "scale", "scale-lut"]
    else:
        assert set(chosen) <= {"scale", "scale-lut"}
    assert report["layers"][1]["requantizer"]["multiplier_bits"] > 0
    reopened = bitloom.open_design(tmp_path / "d")
    assert kinds(reopened.plan) == kinds(design.plan)
    result = reopened.verify(samples=64)
    assert result.bit_exact, result.mismatch


def test_a_spent_dsp_budget_moves_requantizers_off_the_dsps(tmp_path):
    """With no DSP to spare every scale unit gives its DSPs up (to a fabric multiplier or
    thresholds, whichever costs fewer LUTs); a layer the user fixed keeps its kind."""
    from bitloom.plan.cost import estimate_plan
    from bitloom.plan.requantizers import with_requantizers

    net = bitloom.load(ort_mlp(tmp_path))
    board = load_board("pynq-z2")
    plan = plan_design(net, board)
    before = estimate_plan(plan)["DSP"]
    assert kinds(plan) == ["scale"] * 3 and before > 0
    spent = with_requantizers(plan, (), board, dsp_budget=0)
    assert "scale" not in kinds(spent)
    assert estimate_plan(spent).get("DSP", 0) < before
    pinned = with_requantizers(plan, ("mvu2=scale",), board, dsp_budget=0)
    assert kinds(pinned)[2] == "scale" and "scale" not in kinds(pinned)[:2]


def test_the_dsp_budget_passes_over_layers_without_a_requantizer(tmp_path):
    """A CNN with a max pool (no accumulator, no requantizer) through the DSP budget."""
    from bitloom.plan.cost import requant_counts
    from bitloom.plan.requantizers import with_requantizers

    from qonnx_models import random_cnn

    path = tmp_path / "cnn.onnx"
    onnx.save(random_cnn(2, channels=8, w_bits=8, act_bits=8, residual=True), str(path))
    net = bitloom.load(path)
    plan = plan_design(net, load_board("pynq-z2"), requantizers=["scale"])
    assert "scale" in kinds(plan) and any(lp.layer.kind == "MaxPool" for lp in plan.layers)
    spent = with_requantizers(plan, (), load_board("pynq-z2"), dsp_budget=0)
    assert all(requant_counts(lp.scale, lp.layer.acc_fmt.bits, lp.fold.pe)["DSP"] == 0
               for lp in spent.layers if lp.scale is not None)


def test_a_stored_fit_is_reused_and_proven_again(tmp_path, monkeypatch):
    """Fits are kept in the user's cache; a stored one is checked against the table before
    use, so a wrong one (here: tampered with) is fitted again, not trusted."""
    from dataclasses import replace

    from bitloom.plan import requantizers

    monkeypatch.setenv("BITLOOM_CACHE", str(tmp_path / "cache"))
    layer = bitloom.load(ort_mlp(tmp_path)).layers[1]
    first = requantizers.stored_fit(layer.requant, layer.acc_fmt)
    (stored,) = (tmp_path / "cache" / "scale-fits").iterdir()

    def refit(th, acc):
        raise AssertionError("fitted again")

    monkeypatch.setattr(requantizers, "fit_scale", refit)
    again = requantizers.stored_fit(layer.requant, layer.acc_fmt)
    assert again.shift == first.shift and list(again.multiplier) == list(first.multiplier)
    wrong = replace(first, multiplier=first.multiplier + 1)
    stored.write_bytes(pickle.dumps(wrong))
    with pytest.raises(AssertionError, match="fitted again"):
        requantizers.stored_fit(layer.requant, layer.acc_fmt)
