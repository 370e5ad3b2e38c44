"""Malformed models are refused with a message naming the file and the node or initializer
(the fuzz test checks that nothing escapes; these check what the messages say)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from fuzz_models import _qdq_mlp
from onnx import helper, numpy_helper

import bitloom
from bitloom.errors import BitloomError


def _refused(model: onnx.ModelProto, *fragments: str) -> None:
    with pytest.raises(BitloomError) as info:
        bitloom.load(model)
    for fragment in fragments:
        assert fragment in str(info.value), str(info.value)


def _initializer(m: onnx.ModelProto, name: str) -> onnx.TensorProto:
    return next(t for t in m.graph.initializer if t.name == name)


def test_malformed_initializer_is_named():
    m = _qdq_mlp()
    t = _initializer(m, "w")
    t.dims.append(3)  # dims say one more axis than the data holds
    _refused(m, "initializer 'w'", "malformed")
    m = _qdq_mlp()
    _initializer(m, "ws").data_type = 99  # no such element type
    _refused(m, "initializer 'ws'", "element type 99")


def test_missing_input_names_node_and_index():
    m = _qdq_mlp()
    node = next(n for n in m.graph.node if n.name == "mm")
    del node.input[1]
    _refused(m, "node 'mm' (MatMul)", "input 1 (B) is missing")


def test_wrong_attribute_type_is_named():
    m = _qdq_mlp()
    node = next(n for n in m.graph.node if n.name == "dqw")
    node.attribute.append(helper.make_attribute("axis", "ROUND"))
    _refused(m, "node 'dqw' (DequantizeLinear)", "attribute 'axis'", "STRING")


def test_non_finite_constants_are_refused():
    m = _qdq_mlp()
    b = _initializer(m, "b")
    b.CopyFrom(numpy_helper.from_array(np.full(8, np.inf, np.float32), "b"))
    _refused(m, "node 'add' (Add)", "NaN or infinite")


def test_absurd_qonnx_bit_width_is_refused():
    from qonnx_models import random_mlp

    m = random_mlp(1)
    quant = next(n for n in m.graph.node if n.op_type == "Quant")
    bits = _initializer(m, quant.input[3])
    bits.CopyFrom(numpy_helper.from_array(np.float32(1e30), bits.name))
    _refused(m, f"node {quant.name!r} (Quant)", "bit width")


def _blocked_mlp(scales: np.ndarray) -> onnx.ModelProto:
    rng = np.random.default_rng(5)
    inits = [numpy_helper.from_array(np.float32(0.05), "xs"),
             numpy_helper.from_array(np.int8(0), "xz"),
             numpy_helper.from_array(rng.integers(-8, 8, (8, 4)).astype(np.int8), "w"),
             numpy_helper.from_array(scales.astype(np.float32), "ws")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"], name="q0"),
             helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"], name="dq0"),
             helper.make_node("DequantizeLinear", ["w", "ws"], ["wd"], name="dqw", axis=0,
                              block_size=4),
             helper.make_node("MatMul", ["xd", "wd"], ["y"], name="mm")]
    graph = helper.make_graph(nodes, "blocked", [helper.make_tensor_value_info(
        "x", onnx.TensorProto.FLOAT, [1, 8])], [helper.make_tensor_value_info(
            "y", onnx.TensorProto.FLOAT, [1, 4])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])


def test_blocked_weights_are_exact_on_one_grid():
    from onnx.reference import ReferenceEvaluator

    model = _blocked_mlp(np.array([[0.5, 0.25, 0.75, 1.0], [0.125, 0.375, 0.5, 2.0]]))
    net = bitloom.load(model)
    assert net.layers[0].w_fmt.bits <= 8  # multipliers up to 16 of the unit 0.125
    x = np.random.default_rng(1).normal(size=(6, 8)).astype(np.float32)
    ref = np.concatenate([ReferenceEvaluator(model).run(None, {"x": x[i:i + 1]})[0]
                          for i in range(len(x))])
    np.testing.assert_allclose(net.run(x), ref, rtol=1e-6, atol=1e-6)


def test_blocked_weights_without_a_small_common_unit_are_refused():
    _refused(_blocked_mlp(np.array([[0.1, 0.25, 0.75, 1.0], [1e-4, 0.375, 0.5, 2.0]])),
             "node 'dqw' (DequantizeLinear)", "limit 2**16")


@pytest.mark.parametrize("op", ["Mul", "Add"])
def test_arithmetic_on_integer_codes_is_refused(op):
    """``QuantizeLinear -> Mul(codes, uint8 2) -> DequantizeLinear``: ONNX multiplies the
    codes in wrapping uint8 arithmetic (onnx.reference gives 14.4 for 25.5 * 2 at scale 0.1);
    bitloom refuses rather than treating the codes as reals."""
    from onnx import TensorProto
    from onnx.reference import ReferenceEvaluator

    inits = [numpy_helper.from_array(np.float32(0.1), "s"),
             numpy_helper.from_array(np.uint8(0), "z"),
             numpy_helper.from_array(np.uint8(2), "k")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
             helper.make_node(op, ["q", "k"], ["m"], name="on_codes"),
             helper.make_node("DequantizeLinear", ["m", "s", "z"], ["y"])]
    model = helper.make_model(helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 4])], inits),
        opset_imports=[helper.make_opsetid("", 19)])
    x = np.array([[0, 0.5, 1.9, 25.5]], np.float32)
    reference = ReferenceEvaluator(model).run(None, {"x": x})[0]
    assert not np.array_equal(reference, x)  # the op does change the result
    _refused(model, "on_codes", f"{op} of quantized codes")


def _preprocessed(constant: np.ndarray, reshape: bool) -> onnx.ModelProto:
    """x (N, 2, 6) -> Mul(constant) -> [Reshape to (N, 12)] -> Q/DQ -> MatMul -> Q/DQ."""
    inits = [numpy_helper.from_array(np.asarray(v), n) for v, n in (
        (constant.astype(np.float32), "k"), (np.array([-1, 12], np.int64), "shape"),
        (np.float32(0.125), "s"), (np.int8(0), "z"),
        (np.ones((12, 3), np.int8), "m"))]
    nodes = [helper.make_node("Mul", ["x", "k"], ["a"])]
    if reshape:
        nodes.append(helper.make_node("Reshape", ["a", "shape"], ["b"]))
    nodes += [helper.make_node("QuantizeLinear", ["b" if reshape else "a", "s", "z"], ["q"]),
              helper.make_node("DequantizeLinear", ["q", "s", "z"], ["d"]),
              helper.make_node("DequantizeLinear", ["m", "s", "z"], ["md"]),
              helper.make_node("MatMul", ["d", "md"], ["y0"]),
              helper.make_node("QuantizeLinear", ["y0", "s", "z"], ["yq"]),
              helper.make_node("DequantizeLinear", ["yq", "s", "z"], ["y"])]
    shape = [None, 2, 6] if reshape else [None, 12]
    return helper.make_model(helper.make_graph(
        nodes, "pre", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [None, 3])], inits),
        opset_imports=[helper.make_opsetid("", 13)])


def test_float_preprocessing_that_the_host_cannot_reorder_is_refused():
    """A per-element constant before a Reshape of the input (the host reshapes first), and a
    constant that does not broadcast to the input, are named; a scalar one imports."""
    _refused(_preprocessed(np.arange(12).reshape(2, 6) + 1.0, reshape=True),
             "a Reshape node",
             "after float preprocessing with a per-element constant")
    _refused(_preprocessed(np.ones(5), reshape=False), "a Mul node",
             "does not broadcast to the model input's shape [1, 12]")
    assert [s.op_type for s in bitloom.load(_preprocessed(np.float32(2), True)).input.steps] \
        == ["Mul"]


def test_add_of_unrounded_float_branches_is_refused():
    """Two layers' float outputs added before any quantizer: neither went through a rounding
    that a float join could carry in fixed point; refused by name, not guessed."""
    m = _qdq_mlp()
    nodes = list(m.graph.node)
    add = next(n for n in nodes if n.name == "add")
    nodes.insert(nodes.index(add), helper.make_node("MatMul", ["xd", "wd"], ["mm2"],
                                                    name="mm2"))
    add.input[1] = "mm2"
    del m.graph.node[:]
    m.graph.node.extend(nodes)
    _refused(m, "node 'add' (Add)", "unrounded output", "quantize it")
