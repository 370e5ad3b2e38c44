"""ONNX Q/DQ models from onnxruntime's quantizer against onnxruntime and onnx.reference."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from float_models import float_mlp, ort_quantize, run_ort
from onnx.reference import ReferenceEvaluator

import bitloom
from bitloom.errors import BitloomError

VARIANTS = {
    "u8_s8_per_tensor_gemm": {},
    "u8_s8_per_channel_gemm": {"per_channel": True},
    "s8_s8_per_channel_matmul": {"per_channel": True, "activation": "QInt8", "gemm": False},
    "u8_u8_matmul": {"weight": "QUInt8", "gemm": False},
    "u8_s16_weights": {"weight": "QInt16"},
}
#: 16-bit activations: onnxruntime's float32 matmul lands a step off where the exact value
#: is within float32's error of a rounding boundary, which a 16-bit grid meets often (about
#: 1% of values); a hidden layer's step then moves the output by up to two of its steps
WIDE_VARIANTS = {
    "u16_s8_activations": {"activation": "QUInt16"},
    "s16_s8_activations": {"activation": "QInt16", "per_channel": True},
}
VARIANTS.update(WIDE_VARIANTS)


def quantized(tmp_path, variant: str, seed: int = 0):
    opts = dict(VARIANTS[variant])
    gemm = opts.pop("gemm", True)
    rng = np.random.default_rng(seed)
    calib = rng.normal(size=(64, 16)).astype(np.float32)
    return ort_quantize(float_mlp(seed, (16, 12, 10, 8), gemm=gemm), calib,
                        tmp_path / f"{variant}.onnx", **opts)


def output_step(path) -> float:
    """The scale of the model's last DequantizeLinear: one step of its output."""
    model = onnx.load(str(path))
    last = [n for n in model.graph.node if n.op_type == "DequantizeLinear"][-1]
    scales = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    return float(scales[last.input[1]])


@pytest.mark.parametrize("variant", WIDE_VARIANTS)
def test_16_bit_activations_match_onnxruntime_within_one_step(tmp_path, variant):
    path = quantized(tmp_path, variant)
    x = np.random.default_rng(9).normal(scale=1.5, size=(100, 16)).astype(np.float32)
    net = bitloom.load(path)
    assert any(ly.out_fmt.bits == 16 for ly in net.layers[:-1])
    golden, ort = net.run(x), run_ort(path, x)
    assert np.abs(golden - ort).max() <= 2 * output_step(path) * (1 + 1e-3)
    assert np.mean(golden == ort) >= 0.95


@pytest.mark.parametrize("variant", [v for v in VARIANTS if v not in WIDE_VARIANTS])
def test_golden_equals_onnxruntime_and_onnx_reference(tmp_path, variant):
    path = quantized(tmp_path, variant)
    x = np.random.default_rng(9).normal(scale=1.5, size=(100, 16)).astype(np.float32)
    golden = bitloom.load(path).run(x)
    np.testing.assert_array_equal(golden, run_ort(path, x))
    model = onnx.load(str(path))
    for opset in model.opset_import:
        if opset.domain in ("", "ai.onnx"):
            opset.version = max(opset.version, 21)  # onnx.reference has Q/DQ from opset 19
    ref = ReferenceEvaluator(model)
    expected = np.concatenate([ref.run(None, {"input": x[i:i + 1]})[0] for i in range(10)])
    np.testing.assert_array_equal(golden[:10], expected)


def test_fused_onnxruntime_agrees_on_argmax(tmp_path):
    """ORT's fused integer kernels may saturate (u8s8 without VNNI); argmax still agrees."""
    path = quantized(tmp_path, "u8_s8_per_channel_gemm")
    x = np.random.default_rng(3).normal(size=(200, 16)).astype(np.float32)
    golden = bitloom.load(path).run(x)
    fused = run_ort(path, x, fused=True)
    assert (golden.argmax(1) == fused.argmax(1)).mean() >= 0.8


def test_odd_zero_point_rounds_before_shifting():
    """QuantizeLinear rounds x/scale half to even *before* adding the zero point."""
    from fractions import Fraction

    from bitloom.formats import Int
    from bitloom.ir import CLIP_THEN_ROUND, ROUND_THEN_SHIFT, Quantizer

    onnx_q = Quantizer(Int(8, False), 1.0, 3, "round", ROUND_THEN_SHIFT)
    qonnx_q = Quantizer(Int(8, False), 1.0, 3, "round", CLIP_THEN_ROUND)
    assert onnx_q.exact(Fraction(5, 2)) == 5  # round(2.5) = 2, + 3
    assert qonnx_q.exact(Fraction(5, 2)) == 6  # round(5.5) = 6
    x = np.array([2.5, 3.5, -0.5, 254.0], dtype=np.float32)
    np.testing.assert_array_equal(onnx_q.apply(x), [5, 7, 3, 255])


def test_blocked_quantization_is_refused_by_name(tmp_path):
    path = quantized(tmp_path, "u8_s8_per_tensor_gemm")
    model = onnx.load(str(path))
    dq = next(n for n in model.graph.node if n.op_type == "DequantizeLinear"
              and "w0" in n.input[0])
    dq.attribute.append(onnx.helper.make_attribute("block_size", 4))
    with pytest.raises(BitloomError, match="block_size"):
        bitloom.load(model)


@pytest.mark.parametrize("per_channel", [False, True])
def test_qoperator_qgemm_equals_onnxruntime(tmp_path, per_channel):
    """QOperator form (QGemm). reduce_range keeps onnxruntime's u8s8 kernels from
    saturating on CPUs without VNNI, so its result is exact and must equal ours."""
    rng = np.random.default_rng(2)
    path = ort_quantize(float_mlp(2, (16, 12, 10, 8)), rng.normal(size=(32, 16)).astype(
        np.float32), tmp_path / "qop.onnx", fmt="QOperator", per_channel=per_channel,
        reduce_range=True)
    assert any(n.op_type == "QGemm" for n in onnx.load(str(path)).graph.node)
    x = rng.normal(scale=1.5, size=(150, 16)).astype(np.float32)
    np.testing.assert_array_equal(bitloom.load(path).run(x), run_ort(path, x, fused=True))


def _qlinear_model(kind: str) -> onnx.ModelProto:
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(4)
    w = rng.integers(-127, 128, size=(8, 5)).astype(np.int8)
    inits = [numpy_helper.from_array(np.float32(0.05), "xs"),
             numpy_helper.from_array(np.uint8(131), "xz"),
             numpy_helper.from_array(w, "w"),
             numpy_helper.from_array(np.float32(0.01), "ws"),
             numpy_helper.from_array(np.int8(0), "wz"),
             numpy_helper.from_array(np.float32(0.3), "ys"),
             numpy_helper.from_array(np.uint8(7), "yz"),
             numpy_helper.from_array(rng.normal(size=5).astype(np.float32), "bias"),
             numpy_helper.from_array(np.float32(0.05 * 0.01), "accs")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"])]
    if kind == "QLinearMatMul":
        nodes += [helper.make_node("QLinearMatMul", ["xq", "xs", "xz", "w", "ws", "wz", "ys",
                                                     "yz"], ["yq"]),
                  helper.make_node("DequantizeLinear", ["yq", "ys", "yz"], ["y"])]
    else:
        nodes += [helper.make_node("MatMulInteger", ["xq", "w", "xz", "wz"], ["acc"]),
                  helper.make_node("Cast", ["acc"], ["accf"], to=TensorProto.FLOAT),
                  helper.make_node("Mul", ["accf", "accs"], ["scaled"]),
                  helper.make_node("Add", ["scaled", "bias"], ["y"])]
    graph = helper.make_graph(nodes, kind, [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [1, 8])], [helper.make_tensor_value_info(
        "y", TensorProto.FLOAT, [1, 5])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])


@pytest.mark.parametrize("kind", ["QLinearMatMul", "MatMulInteger"])
def test_qlinear_ops_against_onnx_reference(kind):
    model = _qlinear_model(kind)
    x = np.random.default_rng(5).normal(scale=2, size=(200, 8)).astype(np.float32)
    golden = bitloom.load(model).run(x)
    ref = ReferenceEvaluator(model)
    expected = np.concatenate([ref.run(None, {"x": x[i:i + 1]})[0] for i in range(len(x))])
    if kind == "QLinearMatMul":  # the reference requantizes in float32: allow one output step
        assert np.abs(golden - expected).max() <= 0.3 + 1e-6
        assert (golden == expected).mean() > 0.95
    else:
        np.testing.assert_allclose(golden, expected, rtol=1e-6, atol=1e-6)


def _host_qdq_model(path, shape: tuple[int, ...], scale: np.ndarray, zero_point: np.ndarray,
                    **attrs) -> onnx.ModelProto:
    """``x -> QuantizeLinear -> DequantizeLinear -> y`` with per-axis or blocked (``attrs``)
    uint8 parameters, opset 21, saved to ``path``."""
    from onnx import TensorProto, helper, numpy_helper

    inits = [numpy_helper.from_array(scale.astype(np.float32), "s"),
             numpy_helper.from_array(zero_point.astype(np.uint8), "z")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], **attrs),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"], **attrs)]
    graph = helper.make_graph(nodes, "host_qdq",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)],
                              inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return model


#: per-axis along the channel axis, per-axis along axis 0 (the batch), blocked along axis 2
HOST_QDQ = {
    "per_axis_channel": ((4, 3, 2, 5), np.array([0.02, 0.05, 0.1]), np.array([128, 100, 7]),
                         {"axis": 1}),
    "per_axis_batch": ((3, 6), np.array([0.03, 0.07, 0.011]), np.array([10, 128, 200]),
                       {"axis": 0}),
    "blocked": ((2, 3, 8), np.random.default_rng(1).uniform(0.01, 0.1, (2, 3, 2)),
                np.random.default_rng(2).integers(0, 256, (2, 3, 2)),
                {"axis": 2, "block_size": 4}),
}


@pytest.mark.parametrize("case", HOST_QDQ)
def test_host_side_per_axis_and_blocked_qdq_equal_onnxruntime(tmp_path, case):
    """The host quantizes and dequantizes the whole batched tensor with ONNX's per-element
    parameters (the batch axis included): equal to onnxruntime, which runs the same model."""
    import onnxruntime as ort

    shape, scale, zero, attrs = HOST_QDQ[case]
    path = tmp_path / f"{case}.onnx"
    _host_qdq_model(path, shape, scale, zero, **attrs)
    rng = np.random.default_rng(5)
    x = (rng.normal(size=shape) * 4).astype(np.float32)
    x.reshape(-1)[::7] = 1e6  # saturates
    net = bitloom.load(path)
    assert not net.layers
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    expected = sess.run(None, {"x": x})[0]
    got = net.run(x)
    np.testing.assert_array_equal(got, expected)
    assert len(np.unique(got)) > got.size // 3  # not all saturated
    if shape[0] > 1 and case != "per_axis_channel":  # parameters index the batch axis
        with pytest.raises(BitloomError, match="must hold exactly"):
            net.run(x[:1])


def test_per_axis_input_codes_may_not_reach_a_layer(tmp_path):
    """Layers read per-tensor codes: a per-axis quantized input feeding a MatMul (through a
    per-tensor DequantizeLinear) is refused at load, so never compiled."""
    from onnx import TensorProto, helper, numpy_helper

    inits = [numpy_helper.from_array(np.array([0.1, 0.2, 0.3, 0.4], np.float32), "s"),
             numpy_helper.from_array(np.full(4, 128, np.uint8), "z"),
             numpy_helper.from_array(np.float32(0.1), "s1"),
             numpy_helper.from_array(np.uint8(128), "z1"),
             numpy_helper.from_array(np.ones((4, 2), np.int8), "w"),
             numpy_helper.from_array(np.float32(0.5), "ws")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], axis=1),
             helper.make_node("DequantizeLinear", ["q", "s1", "z1"], ["d"]),
             helper.make_node("DequantizeLinear", ["w", "ws"], ["wf"]),
             helper.make_node("MatMul", ["d", "wf"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, (1, 4))], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT, (1, 2))], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    with pytest.raises(BitloomError, match="may only reach the graph output"):
        bitloom.load(model)


def test_per_axis_quantization_of_a_layer_output_is_refused(tmp_path):
    """Between layers the requantizer has one scale and zero point per tensor."""
    path = quantized(tmp_path, "u8_s8_per_tensor_gemm")
    model = onnx.load(str(path))
    q = next(n for n in model.graph.node if n.op_type == "QuantizeLinear"
             and n.input[0] != model.graph.input[0].name)
    scale = next(t for t in model.graph.initializer if t.name == q.input[1])
    value = onnx.numpy_helper.to_array(scale).reshape(-1)[0]
    scale.CopyFrom(onnx.numpy_helper.from_array(np.full(12, value, np.float32), scale.name))
    zp = next(t for t in model.graph.initializer if t.name == q.input[2])
    zp.CopyFrom(onnx.numpy_helper.from_array(np.full(12, onnx.numpy_helper.to_array(zp),
                                                     np.uint8), zp.name))
    with pytest.raises(BitloomError, match="supported only of the model input"):
        bitloom.load(model)


def test_compile_refuses_a_host_only_per_axis_model(tmp_path):
    """A per-axis Q/DQ model has no layer: ``bitloom compile`` says so with exit 2 (and
    writes no RTL) instead of building hardware that would not mean the model."""
    import subprocess
    import sys

    shape, scale, zero, attrs = HOST_QDQ["per_axis_batch"]
    path = tmp_path / "per_axis.onnx"
    _host_qdq_model(path, shape, scale, zero, **attrs)
    out = tmp_path / "design"
    proc = subprocess.run([sys.executable, "-m", "bitloom.cli", "compile", str(path),
                           "--board", "pynq-z2", "--out", str(out)], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert "no layer" in proc.stderr
    assert not (out / "rtl").exists()


def test_dequantize_per_batch_index_needs_that_batch():
    """Codes in, DequantizeLinear along axis 0: one scale per index of the declared batch."""
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"], axis=0)], "dq_axis0",
        [helper.make_tensor_value_info("q", TensorProto.UINT8, (3, 4))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, (3, 4))],
        [numpy_helper.from_array(np.array([0.5, 0.25, 3.0], np.float32), "s"),
         numpy_helper.from_array(np.array([1, 2, 3], np.uint8), "z")])
    net = bitloom.load(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)]))
    q = np.arange(12, dtype=np.uint8).reshape(3, 4)
    expected = (q.astype(np.float32) - [[1], [2], [3]]) * np.float32([[0.5], [0.25], [3.0]])
    np.testing.assert_array_equal(net.run(q), expected)
    with pytest.raises(BitloomError, match="dequantized with parameters per index of axis 0"):
        net.run(q[:2])


def test_parameters_along_a_symbolic_batch_axis_are_refused(tmp_path):
    model = _host_qdq_model(tmp_path / "m.onnx", (3, 6), np.array([0.1, 0.2, 0.3]),
                            np.array([1, 2, 3]), axis=0)
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "N"
    with pytest.raises(BitloomError, match="leaves symbolic; export the model with a fixed"):
        bitloom.load(model)


def test_inspect_describes_a_per_axis_input_quantizer(tmp_path, capsys):
    from bitloom.cli import main

    shape, scale, zero, attrs = HOST_QDQ["per_axis_batch"]
    path = tmp_path / "per_axis.onnx"
    _host_qdq_model(path, shape, scale, zero, **attrs)
    assert main(["inspect", str(path)]) == 0
    assert "scale and zero point per element" in capsys.readouterr().out


def test_qlinear_softmax_at_the_output_runs_on_the_host(tmp_path):
    """onnxruntime's QOperator form of a classifier ending in Softmax: QGemm, QGemm,
    QLinearSoftmax (com.microsoft), DequantizeLinear. The host computes Q(Softmax(DQ(x)));
    onnxruntime's table of exponentials may differ by one output step at a boundary."""
    model = float_mlp(0, (16, 12, 8))
    logits = model.graph.output[0].name
    model.graph.node.append(onnx.helper.make_node("Softmax", [logits], ["prob"], axis=-1))
    model.graph.output[0].name = "prob"
    calib = np.random.default_rng(0).normal(size=(32, 16)).astype(np.float32)
    path = ort_quantize(model, calib, tmp_path / "softmax.onnx", fmt="QOperator")
    assert "QLinearSoftmax" in {n.op_type for n in onnx.load(str(path)).graph.node}
    net = bitloom.load(path)
    assert [op.op_type for op in net.output.host_ops] == \
        ["Softmax", "QuantizeLinear", "DequantizeLinear"]
    x = np.random.default_rng(1).normal(size=(128, 16)).astype(np.float32)
    ref, got = run_ort(path, x), net.run(x)
    assert np.max(np.abs(ref - got)) <= 1 / 256 + 1e-9
    assert np.mean(ref == got) >= 0.99


@pytest.mark.parametrize(("op", "attrs"), [
    ("Sigmoid", {}), ("Tanh", {}), ("HardSwish", {}), ("Erf", {}), ("Exp", {}),
    ("HardSigmoid", {"alpha": 0.25, "beta": 0.4}), ("LeakyRelu", {"alpha": 0.1}),
    ("Elu", {"alpha": 0.5}), ("Softplus", {}), ("Gelu", {}), ("Gelu", {"approximate": "tanh"})])
def test_table_units_equal_onnx_on_every_input_code(op, attrs):
    """Q -> DQ -> op -> Q -> DQ over all 256 input codes: golden's table (float64, then the
    quantizer) against onnx.reference (float32); they may differ by one output step only
    where float32 lands on the other side of a rounding boundary."""
    from onnx import TensorProto, helper, numpy_helper

    from bitloom.ir import Lookup

    inits = [numpy_helper.from_array(np.array(v, dtype=t), n) for n, v, t in (
        ("s_in", 0.05, np.float32), ("z_in", 128, np.uint8),
        ("s_out", 0.03, np.float32), ("z_out", 60, np.uint8))]
    nodes = [helper.make_node("QuantizeLinear", ["x", "s_in", "z_in"], ["q"]),
             helper.make_node("DequantizeLinear", ["q", "s_in", "z_in"], ["d"]),
             helper.make_node(op, ["d"], ["f"], **attrs),
             helper.make_node("QuantizeLinear", ["f", "s_out", "z_out"], ["q2"]),
             helper.make_node("DequantizeLinear", ["q2", "s_out", "z_out"], ["y"])]
    graph = helper.make_graph(nodes, "t", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [1, 256])], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT, [1, 256])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    x = ((np.arange(256, dtype=np.float32) - 128) * np.float32(0.05)).reshape(1, 256)
    net = bitloom.load(model)
    assert [type(ly) for ly in net.layers] == [Lookup]
    got = net.run(x)
    want = ReferenceEvaluator(model).run(None, {"x": x})[0]
    steps = np.abs(got - want) / np.float32(0.03)
    assert steps.max() <= 1 + 1e-4, steps.max()
    # rounding boundaries only: at most 5 of 256 codes (HardSigmoid, LeakyRelu: products
    # that float32 rounds onto the other side of a tie)
    assert (steps > 0.5).sum() <= 5, int((steps > 0.5).sum())


@pytest.mark.parametrize(("kernel", "strides", "pads"), [
    ((3, 3), (1, 1), (1, 1, 1, 1)), ((3, 3), (2, 2), (1, 1, 1, 1)),
    ((2, 3), (1, 2), (0, 1, 1, 0)), ((5, 5), (1, 1), (2, 2, 2, 2)), ((3, 2), (3, 1), (2, 0, 1, 1))])
def test_average_of_real_pixels_equals_onnxruntime(kernel, strides, pads):
    """AveragePool with count_include_pad=0 between Q/DQ pairs, symmetric and asymmetric
    padding, strides: golden's position weights against onnxruntime on random codes."""
    from onnx import TensorProto, helper, numpy_helper

    from bitloom.ir import SumPool

    inits = [numpy_helper.from_array(np.array(v, dtype=t), n) for n, v, t in (
        ("s", 0.05, np.float32), ("z", 7, np.uint8), ("s2", 0.04, np.float32),
        ("z2", 3, np.uint8))]
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["d"]),
             helper.make_node("AveragePool", ["d"], ["p"], kernel_shape=list(kernel),
                              strides=list(strides), pads=list(pads), count_include_pad=0),
             helper.make_node("QuantizeLinear", ["p", "s2", "z2"], ["q2"]),
             helper.make_node("DequantizeLinear", ["q2", "s2", "z2"], ["y"])]
    graph = helper.make_graph(nodes, "t", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [1, 3, 7, 6])], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    x = np.random.default_rng(sum(pads)).uniform(-0.3, 12, size=(4, 3, 7, 6)).astype(
        np.float32)
    net = bitloom.load(model)
    assert [type(ly) for ly in net.layers] == [SumPool]
    want = np.concatenate([run_ort_model(model, x[i:i + 1]) for i in range(len(x))])
    steps = np.abs(net.run(x) - want) / np.float32(0.04)
    assert steps.max() <= 1 + 1e-4
    # where they differ, the exact average is within float32 error (two ulps) of a rounding
    # tie: onnxruntime's float32 lands on the tie and rounds it to even
    pool = net.layers[0]
    codes = net.input.apply(x)
    sums = pool.window.patches(codes).astype(np.int64).sum(axis=3) - pool.offset
    rows, cols = pool.window.real_counts()
    counts = np.outer(rows, cols)[None, :, :, None]
    exact = np.float32(0.05).astype(np.float64) * sums / counts / np.float32(0.04)
    differ = steps.transpose(0, 2, 3, 1) > 0.5
    near = np.abs(exact[differ] % 1 - 0.5) < 2.4e-7 * np.abs(exact[differ])
    assert np.all(near), exact[differ]


def run_ort_model(model, x):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), options,
                                providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]
