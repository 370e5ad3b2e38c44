"""The generated PYNQ driver: bitloom's quantizer and packing in plain numpy, the model's host
steps, and the driver end to end with golden and with Verilator standing in for the DMA."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from board_builds import (
    compile_small,
    golden_frames,
    import_driver,
    input_beats,
    verilator_frames,
)

import bitloom
from bitloom.cli import main
from bitloom.emit.design import Design, load_design
from bitloom.emit.driver import driver_context, write_driver
from bitloom.emit.vivado import stream_widths
from bitloom.errors import BitloomError
from bitloom.formats import ROUNDING_MODES, Int
from bitloom.ir import CLIP_THEN_ROUND, ROUND_THEN_SHIFT, Clamp, Quantizer

from qonnx_models import random_mlp

#: compiles and builds designs in seconds
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pynq_design(tmp_path_factory) -> Design:
    design = compile_small(tmp_path_factory.mktemp("driver") / "pynq", "pynq-z2")
    assert main(["build", str(design.path), "--scripts-only"]) == 0
    return design


def test_driver_quantizer_is_bitloom_s_for_every_rounding_mode(pynq_design):
    driver = import_driver(pynq_design.path / "build" / "overlay" / "bitloom_driver.py",
                           "bitloom_driver_rounding")
    rng = np.random.default_rng(3)
    # Ties (multiples of half the scale), values near them, out-of-range values, signed zeros.
    scale = 0.1
    x = np.concatenate([np.arange(-40, 41) * scale / 2, rng.normal(0, 2, 400),
                        np.nextafter(np.arange(-20, 21) * scale / 2, np.inf), [-0.0, 0.0]])
    x = x.astype(np.float32)
    for fmt in (Int(4, signed=False), Int(5, signed=True, narrow=True), Int(1, signed=True)):
        for rounding in ROUNDING_MODES:
            for order in (CLIP_THEN_ROUND, ROUND_THEN_SHIFT):
                ref = Quantizer(fmt, scale, 3 if not fmt.bipolar else 0, rounding, order)
                ours = driver.Quantizer(driver.Int(fmt.bits, fmt.signed, fmt.narrow, fmt.min_int,
                                                   fmt.max_int), scale, ref.zero_point,
                                        rounding, order)
                np.testing.assert_array_equal(ours.apply(x), ref.apply(x),
                                              err_msg=f"{fmt.name} {rounding} {order}")


def test_driver_host_side_is_bitloom_s_packing(pynq_design):
    """Quantize + pack give bitloom's stimulus beats; unpack + dequantize give golden, in
    chunks of DEFAULT_BATCH frames (the transport here is the golden model on beats)."""
    from bitloom.sim.vectors import to_beats

    driver = import_driver(pynq_design.path / "build" / "overlay" / "bitloom_driver.py",
                           "bitloom_driver_packing")
    net, plan = pynq_design.net, pynq_design.plan
    calls = []

    class GoldenTransport:
        def transfer(self, frames: np.ndarray) -> np.ndarray:
            calls.append(len(frames))
            return golden_frames(pynq_design, driver, frames)

    x = np.random.default_rng(5).uniform(-1, 3, size=(driver.DEFAULT_BATCH + 70, 24))
    x = x.astype(np.float32)
    # whole DMA beats: the padding above the accelerator's tdata is zero too
    beats = input_beats(driver, driver.to_frames(x[:40]), 8 * driver.IN_BEAT_BYTES)
    assert beats == to_beats(net.input.apply(x[:40]), plan.in_fmt, plan.in_elems)
    y = driver.Accelerator(transport=GoldenTransport()).run(x)
    assert calls == [driver.DEFAULT_BATCH, 70]
    assert y.dtype == np.float32
    np.testing.assert_array_equal(y, net.run(x))
    with pytest.raises(ValueError, match="must have shape"):
        driver.to_frames(x[:, :8])


def test_driver_refuses_a_host_step_it_cannot_embed(pynq_design):
    net = bitloom.load(random_mlp(3, sizes=(24, 12, 6)))
    net.output.chain = net.output.chain.then(Clamp(None, None))
    design = Design(pynq_design.path, net, pynq_design.plan, pynq_design.report)
    with pytest.raises(BitloomError, match="scale and bias"):
        driver_context(design, stream_widths(pynq_design.report), [])


@pytest.mark.verilator
def test_driver_through_verilator_equals_golden(pynq_design, tmp_path):
    """The generated driver end to end, with Verilator standing in for the DMA."""
    path = write_driver(pynq_design, tmp_path / "overlay")
    driver = import_driver(path, "bitloom_driver_verilator")
    net = pynq_design.net

    class VerilatorTransport:
        """DMA stand-in: MM2S bytes -> s_axis beats, m_axis beats -> S2MM bytes."""

        def transfer(self, frames: np.ndarray) -> np.ndarray:
            return verilator_frames(pynq_design, driver, frames, tmp_path / "sim")

    rng = np.random.default_rng(11)
    # Uniform values plus exact ties of the input quantizer (scale 1/8: multiples of 1/16).
    x = np.concatenate([rng.uniform(-1, 3, size=(40, 24)),
                        rng.integers(-24, 48, size=(24, 24)) / 16]).astype(np.float32)
    y = driver.Accelerator(transport=VerilatorTransport()).run(x)
    golden = net.run(x)
    assert y.dtype == golden.dtype == np.float32
    np.testing.assert_array_equal(y, golden)


def test_driver_transposes_the_input_as_the_model_does(tmp_path):
    """A model that transposes its (NHWC) input first: the driver's host-side quantize()
    applies the same transpose before packing, like the golden model's input quantizer."""
    from onnx import TensorProto, helper, numpy_helper

    def init(value, name):
        return numpy_helper.from_array(np.asarray(value), name)

    rng = np.random.default_rng(0)
    inits = [init(np.float32(0.25), "s"), init(np.uint8(0), "z"), init(np.float32(0.5), "ws"),
             init(np.int8(0), "wz"), init(rng.integers(-3, 4, (3, 2, 3, 3)).astype(np.int8), "w"),
             init(rng.integers(-3, 4, (27, 4)).astype(np.int8), "m"),
             init(np.float32(0.5), "ys"), init(np.uint8(0), "yz")]
    nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=[0, 3, 1, 2]),
             helper.make_node("QuantizeLinear", ["t", "s", "z"], ["tq"]),
             helper.make_node("DequantizeLinear", ["tq", "s", "z"], ["td"]),
             helper.make_node("DequantizeLinear", ["w", "ws", "wz"], ["wd"]),
             helper.make_node("Conv", ["td", "wd"], ["c"], kernel_shape=[3, 3]),
             helper.make_node("QuantizeLinear", ["c", "ys", "yz"], ["cq"]),
             helper.make_node("DequantizeLinear", ["cq", "ys", "yz"], ["cd"]),
             helper.make_node("Flatten", ["cd"], ["f"]),
             helper.make_node("DequantizeLinear", ["m", "ws", "wz"], ["md"]),
             helper.make_node("MatMul", ["f", "md"], ["mm"]),
             helper.make_node("QuantizeLinear", ["mm", "ys", "yz"], ["yq"]),
             helper.make_node("DequantizeLinear", ["yq", "ys", "yz"], ["y"])]
    model = helper.make_model(helper.make_graph(
        nodes, "nhwc", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 5, 5, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 4])], inits),
        opset_imports=[helper.make_opsetid("", 13)])
    path = tmp_path / "nhwc.onnx"
    onnx.save(model, path)
    out = tmp_path / "design"
    assert main(["compile", str(path), "--board", "pynq-z2", "--out", str(out)]) == 0
    design = load_design(out)
    driver = import_driver(write_driver(design, tmp_path / "overlay"), "bitloom_driver_nhwc")
    x = rng.uniform(-1, 4, (6, 5, 5, 2)).astype(np.float32)
    np.testing.assert_array_equal(driver.quantize(x),
                                  design.net.input.apply(x).reshape(len(x), -1))


def test_driver_preprocesses_the_input_as_the_model_does(tmp_path):
    """bnn-pynq's ``2*x - 1`` (and a division with the constant first) before the input
    quantizer: the driver's quantize() computes it in float32 like the golden model."""
    from onnx import TensorProto, helper, numpy_helper

    def init(value, name):
        return numpy_helper.from_array(np.asarray(value), name)

    rng = np.random.default_rng(1)
    inits = [init(np.float32(2), "two"), init(np.float32(1), "one"),
             init(rng.uniform(1, 3, (1, 12)).astype(np.float32), "den"),
             init(np.float32(0.125), "s"), init(np.int8(0), "z"),
             init(rng.integers(-3, 4, (12, 4)).astype(np.int8), "m"),
             init(np.float32(0.5), "ws"), init(np.float32(0.25), "ys")]
    nodes = [helper.make_node("Mul", ["x", "two"], ["a"]),
             helper.make_node("Sub", ["a", "one"], ["b"]),
             helper.make_node("Div", ["den", "b"], ["c"]),
             helper.make_node("QuantizeLinear", ["c", "s", "z"], ["cq"]),
             helper.make_node("DequantizeLinear", ["cq", "s", "z"], ["cd"]),
             helper.make_node("DequantizeLinear", ["m", "ws", "z"], ["md"]),
             helper.make_node("MatMul", ["cd", "md"], ["mm"]),
             helper.make_node("QuantizeLinear", ["mm", "ys", "z"], ["yq"]),
             helper.make_node("DequantizeLinear", ["yq", "ys", "z"], ["y"])]
    model = helper.make_model(helper.make_graph(
        nodes, "pre", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 12])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 4])], inits),
        opset_imports=[helper.make_opsetid("", 13)])
    path = tmp_path / "pre.onnx"
    onnx.save(model, path)
    design = bitloom.compile(path, "pynq-z2", out=tmp_path / "design")
    assert [s.op_type for s in design.net.input.steps] == ["Mul", "Sub", "Div"]
    driver = import_driver(write_driver(design, tmp_path / "overlay"),
                           "bitloom_driver_pre")
    x = rng.uniform(0, 1, (16, 12)).astype(np.float32)
    np.testing.assert_array_equal(driver.quantize(x), design.net.input.apply(x))
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    np.testing.assert_array_equal(design.net.run(x), session.run(None, {"x": x})[0])


def test_driver_carries_16_bit_codes(tmp_path):
    """An onnxruntime QUInt16 MLP (scale requantizers): the driver quantizes and packs 16-bit
    input codes as bitloom does and dequantizes the output to golden, the golden model on
    beats standing in for the board."""
    from float_models import float_mlp, ort_quantize

    from bitloom.sim.vectors import to_beats

    calib = np.random.default_rng(0).normal(size=(64, 16)).astype(np.float32)
    path = ort_quantize(float_mlp(0, (16, 32, 24, 8)), calib, tmp_path / "u16.onnx",
                        per_channel=True, activation="QUInt16")
    out = tmp_path / "d"
    assert main(["compile", str(path), "--board", "pynq-z2", "--out", str(out)]) == 0
    assert main(["build", str(out), "--scripts-only"]) == 0
    design = load_design(out)
    assert design.plan.in_fmt.bits == 16
    assert {ly["requant"] for ly in design.report["layers"]} <= {"scale", "scale-lut"}
    driver = import_driver(out / "build" / "overlay" / "bitloom_driver.py", "bitloom_driver_16")
    x = np.random.default_rng(9).normal(size=(40, 16)).astype(np.float32)
    beats = input_beats(driver, driver.to_frames(x), 8 * driver.IN_BEAT_BYTES)
    assert beats == to_beats(design.net.input.apply(x), design.plan.in_fmt,
                             design.plan.in_elems)

    class GoldenTransport:
        def transfer(self, frames: np.ndarray) -> np.ndarray:
            return golden_frames(design, driver, frames)

    np.testing.assert_array_equal(driver.Accelerator(transport=GoldenTransport()).run(x),
                                  design.net.run(x))
