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
