"""FINN's MultiThreshold against qonnx's executor: bit-identical outputs.

The models keep every float32 value of the ONNX graph exact (integer inputs and weights,
power-of-two scales), while the thresholds sit on, between and far off the integer grid,
so a threshold converted to the accumulator with the wrong rounding shows up as a mismatch.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import bitloom
from bitloom.cli import main
from bitloom.formats import Int
from bitloom.ir import MatrixVector, Thresholding

from qonnx_models import Builder, run_qonnx

FINN = "finn.custom_op.general"
QONNX = "qonnx.custom_op.general"


def multithreshold(b: Builder, x: str, thresholds: np.ndarray, out_dtype: str,
                   domain: str = QONNX, **attrs) -> str:
    return b.node("MultiThreshold", [x, b.const(thresholds, "thr")], domain=domain,
                  out_dtype=out_dtype, **attrs)


def thresholds(rng, channels: int, count: int, lo: float, hi: float) -> np.ndarray:
    """Sorted rows mixing integers (ties with the accumulator), halves and random floats."""
    t = rng.uniform(lo, hi, size=(channels, count))
    kind = rng.integers(3, size=t.shape)
    t = np.where(kind == 0, np.round(t), np.where(kind == 1, np.round(t) + 0.5, t))
    return np.sort(t, axis=1).astype(np.float32)


def int64_const(b: Builder, value) -> str:
    name = b.name("shape")
    b.inits.append(numpy_helper.from_array(np.asarray(value, dtype=np.int64), name))
    return name


def make_model(b: Builder, out: str, in_shape: list[int], out_shape: list[int],
               domain: str = QONNX) -> onnx.ModelProto:
    from qonnx.util.basic import qonnx_make_model

    graph = helper.make_graph(b.nodes, "mt", [
        helper.make_tensor_value_info("inp", TensorProto.FLOAT, in_shape)], [
        helper.make_tensor_value_info(out, TensorProto.FLOAT, out_shape)], b.inits)
    opsets = [helper.make_opsetid("", 13), helper.make_opsetid(QONNX, 1)]
    if domain != QONNX:
        opsets.append(helper.make_opsetid(domain, 1))
    return qonnx_make_model(graph, opset_imports=opsets)


def mlp(seed: int, domain: str = QONNX) -> onnx.ModelProto:
    """MatMul -> MultiThreshold (per channel, UINT4) -> Mul -> MatMul -> MultiThreshold
    (per tensor, INT4 via out_bias) -> MatMul -> negative per-channel Mul -> MultiThreshold
    (bipolar: out_scale 2, out_bias -1) -> MatMul."""
    rng = np.random.default_rng(seed)
    b = Builder()
    x = b.quant("inp", 1.0, 3, False)

    def dense(x: str, k: int, n: int) -> str:
        return b.node("MatMul", [x, b.quant(b.const(rng.integers(-3, 4, size=(k, n))), 1.0, 3,
                                            True)])

    y = dense(x, 12, 10)
    x = multithreshold(b, y, thresholds(rng, 10, 15, -20, 20), "UINT4", domain)
    x = b.node("Mul", [x, b.const(0.5)])
    y = dense(x, 10, 8)
    x = multithreshold(b, y, thresholds(rng, 1, 7, -8, 8), "INT4", domain, out_bias=-4.0)
    y = dense(x, 8, 6)
    y = b.node("Mul", [y, b.const(rng.choice([-1.0, 0.5, -0.25], size=6))])
    x = multithreshold(b, y, thresholds(rng, 6, 1, -3, 3), "BIPOLAR", domain, out_scale=2.0,
                       out_bias=-1.0)
    y = dense(x, 6, 5)
    return make_model(b, y, [1, 12], [1, 5], domain)


def cnn(seed: int, nhwc_flatten: bool) -> onnx.ModelProto:
    """Conv -> MultiThreshold (NCHW) -> Conv -> Transpose to NHWC -> MultiThreshold (NHWC)
    -> either Transpose back, MaxPool, Flatten -> Gemm, or Flatten of the NHWC map -> MatMul."""
    rng = np.random.default_rng(seed)
    b = Builder()
    x = b.quant("inp", 1.0, 2, False)

    def conv(x: str, cin: int, cout: int) -> str:
        w = b.quant(b.const(rng.integers(-2, 3, size=(cout, cin, 3, 3))), 1.0, 3, True)
        return b.node("Conv", [x, w], kernel_shape=[3, 3], pads=[1, 1, 1, 1])

    x = multithreshold(b, conv(x, 2, 4), thresholds(rng, 4, 3, -12, 12), "UINT2",
                       data_layout="NCHW")
    y = b.node("Transpose", [conv(x, 4, 3)], perm=[0, 2, 3, 1])
    x = multithreshold(b, y, thresholds(rng, 3, 3, -10, 10), "INT2", data_layout="NHWC",
                       out_bias=-2.0)
    if nhwc_flatten:
        x = b.node("Reshape", [x, int64_const(b, [1, -1])])
        w = rng.integers(-2, 3, size=(6 * 6 * 3, 5))
    else:
        x = b.node("Transpose", [x], perm=[0, 3, 1, 2])
        x = b.node("MaxPool", [x], kernel_shape=[2, 2], strides=[2, 2])
        x = b.node("Flatten", [x])
        w = rng.integers(-2, 3, size=(3 * 3 * 3, 5))
    y = b.node("MatMul", [x, b.quant(b.const(w), 1.0, 3, True)])
    return make_model(b, y, [1, 2, 6, 6], [1, 5])


def inputs(rng, shape: tuple[int, ...], n: int = 24) -> np.ndarray:
    return rng.uniform(-1, 9, size=(n, *shape)).astype(np.float32)


@pytest.mark.parametrize("domain", [QONNX, FINN])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mlp_bit_identical_to_qonnx(seed, domain):
    model = mlp(seed, domain)
    net = bitloom.load(model)
    x = inputs(np.random.default_rng(seed + 100), (12,))
    np.testing.assert_array_equal(net.run(x), run_qonnx(model, x))
    dense = [ly for ly in net.layers if isinstance(ly, MatrixVector)]
    assert [ly.requant.out_fmt for ly in dense[:3]] == [Int(4, False), Int(4), Int(1)]


@pytest.mark.parametrize("nhwc_flatten", [False, True])
@pytest.mark.parametrize("seed", [0, 1])
def test_cnn_nchw_nhwc_bit_identical_to_qonnx(seed, nhwc_flatten):
    model = cnn(seed, nhwc_flatten)
    net = bitloom.load(model)
    x = inputs(np.random.default_rng(seed), (2, 6, 6), 12)
    np.testing.assert_array_equal(net.run(x), run_qonnx(model, x))
    assert [ly.requant.out_fmt for ly in net.layers[:2]] == [Int(2, False), Int(2)]


def test_thresholds_are_exact_at_ties():
    """Accumulator values equal to a threshold count (x >= t); halves round up."""
    b = Builder()
    x = b.quant("inp", 1.0, 4, True)
    y = b.node("MatMul", [x, b.quant(b.const(np.eye(4)), 1.0, 2, True)])
    t = np.array([[-2.0, 0.0, 1.5], [-8.0, -7.5, 7.0], [0.25, 0.75, 1.0], [3.0, 3.0, 3.0]],
                 dtype=np.float32)
    y = multithreshold(b, y, t, "UINT2")
    model = make_model(b, y, [1, 4], [1, 4])
    net = bitloom.load(model)
    x = np.repeat(np.arange(-8, 8, dtype=np.float32)[:, None], 4, axis=1)
    got = net.run(x)
    np.testing.assert_array_equal(got, run_qonnx(model, x))
    np.testing.assert_array_equal(got[:, 3], (x[:, 3] >= 3) * 3)


def test_multithreshold_on_a_stream_is_a_thresholding_layer():
    """Thresholds on a quantized stream (not a fresh accumulator) get a layer of their own."""
    rng = np.random.default_rng(5)
    b = Builder()
    x = b.quant("inp", 0.5, 4, False)
    x = multithreshold(b, x, thresholds(rng, 1, 3, 0, 7), "UINT2")
    y = b.node("MatMul", [x, b.quant(b.const(rng.integers(-3, 4, size=(6, 4))), 1.0, 3,
                                     True)])
    model = make_model(b, y, [1, 6], [1, 4])
    net = bitloom.load(model)
    assert isinstance(net.layers[0], Thresholding)
    x = inputs(rng, (6,))
    np.testing.assert_array_equal(net.run(x), run_qonnx(model, x))


@pytest.mark.parametrize("attrs, message", [
    ({"out_dtype": "FLOAT32"}, "out_dtype 'FLOAT32' is not supported"),
    ({"out_dtype": "UINT1"}, "3 thresholds give 4 output levels"),
    ({"out_dtype": "UINT2", "out_bias": 0.5}, "not a whole number of output steps"),
    ({"out_dtype": "UINT2", "out_scale": -1.0}, "must be positive"),
    ({"out_dtype": "UINT2", "data_layout": "NWC"}, "does not match a tensor of rank 2"),
])
def test_unsupported_variants_exit_2_naming_the_node(tmp_path, capsys, attrs, message):
    b = Builder()
    x = b.quant("inp", 1.0, 4, True)
    y = b.node("MatMul", [x, b.quant(b.const(np.eye(4)), 1.0, 2, True)])
    y = b.node("MultiThreshold", [y, b.const(np.zeros((4, 3)), "thr")], domain=QONNX, **attrs)
    path = tmp_path / "bad.onnx"
    onnx.save(make_model(b, y, [1, 4], [1, 4]), path)
    assert main(["inspect", str(path)]) == 2
    err = capsys.readouterr().err
    assert "MultiThreshold" in err and message in " ".join(err.split())


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_inspect_and_compile(tmp_path, capsys, kind):
    path = tmp_path / f"{kind}.onnx"
    onnx.save(mlp(0) if kind == "mlp" else cnn(0, nhwc_flatten=False), path)
    assert main(["inspect", str(path)]) == 0
    text = capsys.readouterr().out
    assert "thresholds" in text
    assert ("uint4" in text and "bipolar" in text) if kind == "mlp" else "uint2" in text
    out = tmp_path / "design"
    assert main(["compile", str(path), "--board", "pynq-z2", "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert len(report["layers"]) == 4
    assert (out / "rtl").is_dir()


def shifted_outputs(conv: bool) -> onnx.ModelProto:
    """MultiThreshold whose outputs (2..5) lie outside its INT2 out_dtype: the values stay
    INT2 with a zero point, exact for a MatMul; a zero-padded Conv cannot pad with 0."""
    rng = np.random.default_rng(9)
    b = Builder()
    x = b.quant("inp", 1.0, 3, False)
    if conv:
        x = multithreshold(b, x, thresholds(rng, 1, 3, 0, 7), "INT2", out_bias=2.0)
        w = b.quant(b.const(rng.integers(-2, 3, size=(2, 1, 3, 3))), 1.0, 3, True)
        y = b.node("Conv", [x, w], kernel_shape=[3, 3], pads=[1, 1, 1, 1])
        return make_model(b, y, [1, 1, 4, 4], [1, 2, 4, 4])
    x = multithreshold(b, x, thresholds(rng, 6, 3, 0, 7), "INT2", out_bias=2.0)
    y = b.node("MatMul", [x, b.quant(b.const(rng.integers(-3, 4, size=(6, 4))), 1.0, 3,
                                     True)])
    return make_model(b, y, [1, 6], [1, 4])


def test_outputs_beyond_out_dtype_keep_a_zero_point(tmp_path, capsys):
    model = shifted_outputs(conv=False)
    net = bitloom.load(model)
    x = inputs(np.random.default_rng(9), (6,))
    np.testing.assert_array_equal(net.run(x), run_qonnx(model, x))
    assert net.layers[0].requant.out_fmt == Int(2)
    path = tmp_path / "conv.onnx"
    onnx.save(shifted_outputs(conv=True), path)
    assert main(["inspect", str(path)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "(Conv)" in err and "zero padding cannot be represented" in err


def flattened_or_concatenated(concat: bool) -> onnx.ModelProto:
    """Per-element thresholds on a flattened feature map (streamed channel-last), or
    per-channel thresholds on a Concat of branches quantized with different scales."""
    rng = np.random.default_rng(11)
    b = Builder()
    x = b.quant("inp", 1.0, 2, False)

    def conv(x: str, cout: int) -> str:
        w = b.quant(b.const(rng.integers(-2, 3, size=(cout, 2, 3, 3))), 1.0, 3, True)
        return b.node("Conv", [x, w], kernel_shape=[3, 3])

    if concat:
        left = b.quant(conv(x, 2), 1.0, 4, True)
        right = b.quant(conv(x, 3), 2.0, 4, True)
        y = b.node("Concat", [left, right], axis=1)
        y = multithreshold(b, y, thresholds(rng, 5, 3, -10, 10), "UINT2")
        y = b.node("Flatten", [y])
        n = 5 * 2 * 2
    else:
        y = b.node("Flatten", [b.quant(conv(x, 3), 1.0, 4, True)])
        y = multithreshold(b, y, thresholds(rng, 12, 3, -6, 6), "UINT2")
        n = 12
    y = b.node("MatMul", [y, b.quant(b.const(rng.integers(-3, 4, size=(n, 4))), 1.0, 3,
                                     True)])
    return make_model(b, y, [1, 2, 4, 4], [1, 4])


@pytest.mark.parametrize("concat", [False, True])
def test_flattened_and_concatenated_inputs(concat):
    model = flattened_or_concatenated(concat)
    net = bitloom.load(model)
    x = inputs(np.random.default_rng(12), (2, 4, 4), 16)
    np.testing.assert_array_equal(net.run(x), run_qonnx(model, x))
    assert any(isinstance(ly, Thresholding) for ly in net.layers)


def test_double_thresholds_keep_their_precision():
    """A float64 threshold just above an integer is not that integer (no float32 cast)."""
    b = Builder()
    x = b.quant("inp", 1.0, 4, True)
    y = b.node("MatMul", [x, b.quant(b.const(np.eye(2)), 1.0, 2, True)])
    t = b.name("thr")
    b.inits.append(numpy_helper.from_array(np.array([[2 + 1e-9], [-3 - 1e-9]]), t))
    y = b.node("MultiThreshold", [y, t], domain=QONNX, out_dtype="BINARY")
    model = make_model(b, y, [1, 2], [1, 2])
    x = np.repeat(np.arange(-8, 8, dtype=np.float32)[:, None], 2, axis=1)
    got = bitloom.load(model).run(x)
    np.testing.assert_array_equal(got, run_qonnx(model, x))
    np.testing.assert_array_equal(got[:, 0], x[:, 0] >= 3)
