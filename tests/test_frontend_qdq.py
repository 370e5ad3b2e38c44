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


def quantized(tmp_path, variant: str, seed: int = 0):
    opts = dict(VARIANTS[variant])
    gemm = opts.pop("gemm", True)
    rng = np.random.default_rng(seed)
    calib = rng.normal(size=(64, 16)).astype(np.float32)
    return ort_quantize(float_mlp(seed, (16, 12, 10, 8), gemm=gemm), calib,
                        tmp_path / f"{variant}.onnx", **opts)


@pytest.mark.parametrize("variant", VARIANTS)
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


def test_16_bit_activations_are_refused_clearly(tmp_path):
    path = ort_quantize(float_mlp(0, (16, 12, 8)), np.ones((4, 16), np.float32),
                        tmp_path / "a16.onnx", activation="QUInt16")
    with pytest.raises(BitloomError, match="uint16 is not supported yet"):
        bitloom.load(path)


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
