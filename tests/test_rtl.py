"""Verilator + cocotb: generated hardware against the golden model, bit for bit."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

import bitloom
from bitloom.cli import main
from bitloom.emit.design import emit_rtl
from bitloom.plan import make_plan
from bitloom.sim.runner import BUILD_INTERMEDIATES, build, simulate
from bitloom.sim.vectors import make_vectors

from qonnx_models import random_mlp

pytestmark = pytest.mark.verilator


def test_cli_rtl_run_equals_golden_on_128_digits(example_model, example_net, digits, tmp_path):
    """Acceptance: `bitloom run --engine rtl` == golden, >= 100 frames, back-pressure."""
    x, y = digits
    np.save(tmp_path / "x.npy", x[:128])
    assert main(["run", str(example_model), "--input", str(tmp_path / "x.npy"),
                 "--output", str(tmp_path / "rtl.npy"), "--engine", "rtl"]) == 0
    rtl = np.load(tmp_path / "rtl.npy")
    np.testing.assert_array_equal(rtl, example_net.run(x[:128]))
    assert (rtl.argmax(1) == y[:128]).mean() > 0.9


@pytest.mark.parametrize("variant", [
    {"bipolar_weights": True, "negative_scales": True},
    {"in_signed": True, "in_bits": 8, "act_signed": True, "clip": True, "rounding": "HALF_UP"},
])
def test_compile_verify_synth_flow(variant, tmp_path):
    """compile -> verify (bit-exact, cycles within 10% of the plan) -> synth, via the CLI."""
    model = random_mlp(11, sizes=(16, 12, 8, 6), **variant)
    import onnx

    onnx.save(model, str(tmp_path / "m.onnx"))
    out = tmp_path / "design"
    assert main(["compile", str(tmp_path / "m.onnx"), "--board", "pynq-z2", "--out", str(out),
                 "--target-fps", "2000000"]) == 0
    assert main(["verify", str(out), "--samples", "64"]) == 0
    report = json.loads((out / "report.json").read_text())
    check = report["verification"]
    assert check["bit_exact"] and check["frames"] >= 64
    assert abs(check["cycle_error"]) <= 0.10, check
    assert main(["synth", str(out), "--json"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["synth"]["resources"]["LUT"] > 0 and report["synth"]["resources"]["FF"] > 0
    assert all(ly["measured"]["LUT"] > 0 for ly in report["layers"])


def test_a_wrong_layer_is_named(tmp_path):
    """Hardware with one corrupted threshold: the verifier names that layer, not the top."""
    net = bitloom.load(random_mlp(12, sizes=(16, 12, 8, 6)))
    broken = copy.deepcopy(net)
    broken.layers[1].requant.table[3] -= 2  # channel 3 of layer 1 switches too early
    plan = make_plan(net, 16)
    bad_plan = make_plan(broken, 16)
    sources = emit_rtl(bad_plan, tmp_path / "rtl")
    rng = np.random.default_rng(0)
    trace = net.trace(rng.uniform(-1, 3, size=(8, 16)).astype(np.float32))
    assert not np.array_equal(broken.trace_values(trace[0])[2], trace[2])  # the bug shows
    result = simulate(sources, make_vectors(plan, trace, 0.2, 0.2, 3), tmp_path / "sim")
    assert not result.passed
    assert result.mismatch.startswith("layer mvu1:"), result.mismatch


def test_a_stall_is_reported_not_hung(tmp_path):
    """A run that makes no progress within its bound ends with a diagnosis."""
    net = bitloom.load(random_mlp(12, sizes=(16, 12, 8, 6)))
    plan = make_plan(net, 16)
    sources = emit_rtl(plan, tmp_path / "rtl")
    trace = net.trace(np.random.default_rng(0).uniform(-1, 3, size=(8, 16)).astype(np.float32))
    vectors = make_vectors(plan, trace, 0.0, 0.0, 3)
    vectors.timeout_cycles = 30  # far too short for 8 frames
    result = simulate(sources, vectors, tmp_path / "sim")
    assert not result.passed
    assert "stalled" in result.mismatch and "produced" in result.mismatch, result.mismatch
    cached = build([s.resolve() for s in sources])  # the cached build keeps what runs only
    assert not [p for pattern in BUILD_INTERMEDIATES for p in cached.glob(pattern)]
    assert (cached / "bitloom_top").exists()


def test_onnxruntime_qdq_int8_model_in_hardware(tmp_path):
    """An onnxruntime-quantized int8 MLP (uint8 activations, odd zero points) on the RTL."""
    from float_models import float_mlp, ort_quantize

    rng = np.random.default_rng(0)
    path = ort_quantize(float_mlp(4, (16, 6, 4)), rng.normal(size=(32, 16)).astype(np.float32),
                        tmp_path / "qdq.onnx", per_channel=True)
    net = bitloom.load(path)
    x = rng.normal(scale=1.5, size=(80, 16)).astype(np.float32)
    from bitloom.sim.runner import run_rtl

    rtl = run_rtl(net, x, plan=make_plan(net, 96), work_dir=tmp_path / "work")
    np.testing.assert_array_equal(rtl, net.run(x))


@pytest.mark.parametrize("family", ["xc7", "xcup"])
def test_int8_products_packed_into_dsps_are_exact(tmp_path, family):
    """int8 x uint8 products packed two (or more) per DSP multiplier, with the bias that
    keeps the fields apart: the RTL equals golden, odd zero points and all."""
    from float_models import float_mlp, ort_quantize

    from bitloom.plan.folding import with_dsps
    from bitloom.plan.products import dsp_packing as packing

    rng = np.random.default_rng(1)
    path = ort_quantize(float_mlp(5, (16, 8, 4)), rng.normal(size=(32, 16)).astype(np.float32),
                        tmp_path / "qdq.onnx", per_channel=True)
    net = bitloom.load(path)
    plan = with_dsps(make_plan(net, 2), family)
    assert all(lp.dsp == family and packing(lp.layer.w_fmt, lp.in_fmt, family, lp.fold.pe,
                                            lp.fold.simd).ways == 2 for lp in plan.layers)
    x = rng.normal(scale=1.5, size=(64, 16)).astype(np.float32)
    from bitloom.sim.runner import run_rtl

    rtl = run_rtl(net, x, plan=plan, work_dir=tmp_path / "work")
    np.testing.assert_array_equal(rtl, net.run(x))


@pytest.mark.parametrize(("exp_bits", "man_bits"), [(4, 3), (2, 1)])
def test_minifloat_model_in_hardware(tmp_path, exp_bits, man_bits):
    """QONNX FloatQuant minifloats end to end on Verilator, exact accumulation."""
    from bitloom.sim.runner import run_rtl

    from qonnx_models import minifloat_mlp

    net = bitloom.load(minifloat_mlp(2, exp_bits, man_bits, sizes=(16, 8, 6)))
    x = np.random.default_rng(0).normal(scale=2, size=(70, 16)).astype(np.float32)
    rtl = run_rtl(net, x, plan=make_plan(net, 32), work_dir=tmp_path / "work")
    np.testing.assert_array_equal(rtl, net.run(x))


def test_verify_minifloat_design_with_corner_frames(tmp_path):
    """`bitloom verify` drives minifloat inputs (lowest, highest, alternating, zero, random)."""
    import onnx

    from qonnx_models import minifloat_mlp

    onnx.save(minifloat_mlp(5, 2, 1, sizes=(16, 8, 6)), str(tmp_path / "mf.onnx"))
    out = tmp_path / "design"
    assert main(["compile", str(tmp_path / "mf.onnx"), "--board", "kv260", "--out", str(out),
                 "--target-fps", "3000000"]) == 0
    assert main(["verify", str(out), "--samples", "40"]) == 0
    check = json.loads((out / "report.json").read_text())["verification"]
    assert check["bit_exact"] and abs(check["cycle_error"]) <= 0.10
