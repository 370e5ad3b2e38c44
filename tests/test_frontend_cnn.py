"""CNN layers in the frontend and golden model, bit for bit against qonnx's executor.

The models use power-of-two scales, so qonnx's float32 arithmetic is exact and any
difference is a bug; geometry (kernel, stride, padding, dilation, auto_pad), depthwise,
pooling before and after the quantizer, Trunc, residual Add on two scales, Concat and
host-side output ops are each exercised.
"""

from __future__ import annotations

import numpy as np
import pytest

import bitloom
from bitloom.errors import BitloomError
from bitloom.ir import AddStreams, Concat, DepthwiseConv, MatrixVector, MaxPool, SumPool
from bitloom.plan import make_plan

from qonnx_models import QONNX, Builder, random_cnn, run_qonnx

CASES = {
    "k3s1p1": {},
    "k3s2p1": {"stride": 2},
    "k2s1p0": {"kernel": 2, "pads": (0, 0, 0, 0)},
    "k3_dilated": {"dilation": 2, "pads": (2, 1, 2, 1)},
    "k3_asym_pads": {"pads": (0, 1, 2, 0)},
    "same_upper_s2": {"auto_pad": "SAME_UPPER", "stride": 2},
    "same_lower": {"auto_pad": "SAME_LOWER", "kernel": 2},
    "valid": {"auto_pad": "VALID"},
    "depthwise": {"depthwise": True},
    "grouped": {"groups": 2},
    "maxpool_before_quant": {"pool": "max_float"},
    "avgpool": {"pool": "avg"},
    "trunc_v2": {"pool": "avg", "trunc": 2},
    "trunc_v1": {"pool": "avg", "trunc": 1},
    "residual": {"residual": True},
    "concat": {"concat": True},
    "flatten_head": {"head": "flatten", "pool": "none"},
    "int8": {"w_bits": 8, "act_bits": 8},
    "int2": {"w_bits": 2, "act_bits": 2},
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_cnn_golden_equals_qonnx(case):
    model = random_cnn(seed=len(case), **CASES[case])
    x = np.random.default_rng(1).normal(scale=0.6, size=(6, 2, 7, 7)).astype(np.float32)
    x[0] = 0.0
    x[1] = 10.0  # saturating corner
    net = bitloom.load(model)
    got = net.run(x)
    want = run_qonnx(model, x)
    np.testing.assert_array_equal(got, want)


def test_layers_are_what_the_model_says():
    net = bitloom.load(random_cnn(seed=0, residual=True, concat=True))
    kinds = [type(ly) for ly in net.layers]
    assert kinds.count(MatrixVector) == 5 and MaxPool in kinds and SumPool in kinds
    assert AddStreams in kinds and Concat in kinds
    add = next(ly for ly in net.layers if isinstance(ly, AddStreams))
    assert add.multipliers == (1, 2)  # branch scale 2**-3, skip 2**-2
    assert not net.is_chain
    dw = bitloom.load(random_cnn(seed=0, depthwise=True))
    assert isinstance(dw.layers[0], DepthwiseConv)


def test_flatten_of_a_feature_map_keeps_onnx_order():
    """Flatten is NCHW in ONNX; the stream is channel-last: weights are permuted to match."""
    model = random_cnn(seed=3, head="flatten", pool="none", shape=(2, 4, 5))
    x = np.random.default_rng(2).normal(size=(4, 2, 4, 5)).astype(np.float32)
    np.testing.assert_array_equal(bitloom.load(model).run(x), run_qonnx(model, x))


@pytest.mark.parametrize("op", ["Softmax", "ArgMax"])
def test_host_side_output_ops(op):
    model = random_cnn(seed=5, host_op=op)
    x = np.random.default_rng(3).normal(size=(5, 2, 7, 7)).astype(np.float32)
    net = bitloom.load(model)
    assert [h.op_type for h in net.output.host_ops] == [op]
    got, want = net.run(x), run_qonnx(model, x)
    if op == "ArgMax":
        np.testing.assert_array_equal(got, want)
    else:
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def test_unsupported_geometry_is_named():
    model = random_cnn(seed=0)
    conv = next(n for n in model.graph.node if n.op_type == "Conv")
    conv.attribute.append(onnx_attr("group", 2))
    with pytest.raises(BitloomError, match=r"Conv.*group=2"):
        bitloom.load(model)


def onnx_attr(name: str, value):
    from onnx import helper

    return helper.make_attribute(name, value)


@pytest.mark.parametrize("pads", [pytest.param(0, marks=pytest.mark.verilator), 1])
def test_bipolar_windows(pads):
    """A bipolar (+-1) map convolved: golden equals qonnx either way; without padding (CNV)
    the hardware equals golden on Verilator, with padding (a 0 the bipolar streams cannot
    carry) the plan refuses the layer by name."""
    rng = np.random.default_rng(pads)
    b = Builder()
    x = b.node("BipolarQuant", ["inp", b.const(1.0)], domain=QONNX)
    w = b.node("BipolarQuant", [b.const(rng.normal(size=(3, 2, 3, 3))), b.const(1.0)],
               domain=QONNX)
    y = b.node("Conv", [x, w], kernel_shape=[3, 3], pads=[pads] * 4)
    out = b.quant(y, 1.0, 5, True)
    model = b.model("inp", [1, 2, 5, 5], out, [1, 3, 5 - 2 + 2 * pads, 5 - 2 + 2 * pads])
    x = rng.normal(size=(4, 2, 5, 5)).astype(np.float32)
    net = bitloom.load(model)
    np.testing.assert_array_equal(net.run(x), run_qonnx(model, x))
    if pads:
        with pytest.raises(BitloomError, match="pads its bipolar input with 0"):
            make_plan(net, 64)
    else:
        np.testing.assert_array_equal(net.run(x, engine="rtl", plan=make_plan(net, 27)),
                                      net.run(x))


def test_an_int32_bias_quantizer_is_folded_and_a_wide_stream_quantizer_refused():
    """Brevitas quantizes biases to int32 (MobileNet-v1): a constant's quantizer of any width
    up to 32 bits folds at import (golden equals qonnx); on a stream, 17+ bits is refused."""
    rng = np.random.default_rng(3)
    b = Builder()
    x = b.quant("inp", 2.0 ** -3, 4, True)
    w = b.quant(b.const(rng.normal(size=(3, 2, 3, 3))), 2.0 ** -2, 4, True, narrow=True)
    bias = b.quant(b.const(rng.normal(size=3)), 2.0 ** -5, 32, True)
    y = b.node("Conv", [x, w, bias], kernel_shape=[3, 3], pads=[1] * 4)
    out = b.quant(b.node("Relu", [y]), 2.0 ** -2, 4, False)
    model = b.model("inp", [1, 2, 5, 5], out, [1, 3, 5, 5])
    x = rng.normal(size=(4, 2, 5, 5)).astype(np.float32)
    np.testing.assert_array_equal(bitloom.load(model).run(x), run_qonnx(model, x))
    wide = Builder()
    y = wide.quant(wide.quant("inp", 2.0 ** -3, 4, True), 2.0 ** -3, 17, True)
    with pytest.raises(BitloomError, match=r"bit width \[17.0\] is not one integer in \[1, 16\]"):
        bitloom.load(wide.model("inp", [1, 4], y, [1, 4]))


def pooled_model(order: str):
    """Conv, then a MaxPool and a per-channel op in ``order``, then a quantizer and a dense
    head: ``pool-relu`` (ReLU after the pool, as many PyTorch models write it),
    ``negative-pool`` (a per-channel scale with negative entries before the pool),
    ``pool-negative`` (the same scale after the pool)."""
    b = Builder()
    rng = np.random.default_rng(0)
    x = b.quant("inp", 2.0**-2, 4, True)
    w = b.quant(b.const(rng.normal(size=(4, 2, 3, 3)).astype(np.float32) * 2), 0.5, 4, True,
                narrow=True)
    y = b.node("Conv", [x, w], kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    signs = b.const(np.array([1, -1, 1, -1], np.float32).reshape(1, 4, 1, 1))
    for op in order.split("-"):
        if op == "pool":
            y = b.node("MaxPool", [y], kernel_shape=[2, 2], strides=[2, 2])
        elif op == "relu":
            y = b.node("Relu", [y])
        else:
            y = b.node("Mul", [y, signs])
    y = b.node("Flatten", [b.quant(y, 0.5, 4, True)], axis=1)
    w2 = b.quant(b.const(rng.normal(size=(64, 3)).astype(np.float32)), 0.5, 4, True,
                 narrow=True)
    return b.model("inp", [1, 2, 8, 8], b.node("MatMul", [y, w2]), [1, 3])


@pytest.mark.parametrize("order", ["pool-relu", "negative-pool"])
def test_a_max_pool_followed_by_float_ops_stays_a_max_pool(order):
    """The pool is kept (it was dropped once when a float op followed it, leaving a golden
    model and hardware that disagreed with the ONNX model), and a falling op before it is
    fine: the pool takes the quantized codes' maximum, the quantizer being non-decreasing."""
    model = pooled_model(order)
    net = bitloom.load(model)
    assert [ly.kind for ly in net.layers] == ["Conv", "MaxPool", "MatMul"]
    x = np.random.default_rng(1).normal(size=(16, 2, 8, 8)).astype(np.float32)
    np.testing.assert_array_equal(net.run(x), run_qonnx(model, x))


def test_a_falling_op_after_a_max_pool_is_refused_by_name():
    with pytest.raises(BitloomError, match="MaxPool before this quantizer does not commute"):
        bitloom.load(pooled_model("pool-negative"))


def test_a_reshape_after_a_host_side_op_runs_on_the_host():
    """SqueezeNet's tail as the opset converter writes it: Softmax, then a Reshape back to
    (N, C, 1, 1); the host reshapes after the Softmax."""
    from onnx import helper, numpy_helper

    model = random_cnn(seed=5, host_op="Softmax")
    out = model.graph.output[0]
    classes = out.type.tensor_type.shape.dim[1].dim_value
    model.graph.initializer.append(numpy_helper.from_array(
        np.array([1, classes, 1, 1], dtype=np.int64), "tail_shape"))
    model.graph.node.append(helper.make_node("Reshape", [out.name, "tail_shape"], ["tail"]))
    del model.graph.output[:]
    model.graph.output.append(helper.make_tensor_value_info("tail", 1, [1, classes, 1, 1]))
    x = np.random.default_rng(3).normal(size=(5, 2, 7, 7)).astype(np.float32)
    net = bitloom.load(model)
    assert [h.op_type for h in net.output.host_ops] == ["Softmax", "Reshape"]
    got = net.run(x)
    assert got.shape == (5, classes, 1, 1)
    np.testing.assert_allclose(got, run_qonnx(model, x), rtol=1e-6, atol=1e-7)
