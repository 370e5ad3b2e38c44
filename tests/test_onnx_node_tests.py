"""ONNX's own node tests for the quantization ops, through the golden executor.

Each case of ``onnx.backend.test.loader.load_model_tests(kind="node")`` for QuantizeLinear,
DequantizeLinear, QLinearConv, QLinearMatMul, ConvInteger and MatMulInteger is a one-node
model with test data. Every input but the first (scales, zero points, weights, bias) is
bound as a constant initializer; the first stays the streamed input. The golden output must
equal the expected output exactly (by value: bitloom returns float32).
"""

from __future__ import annotations

import re
from functools import cache

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import bitloom
from bitloom.errors import BitloomError

OPS = ("QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "ConvInteger",
       "MatMulInteger")
NAMES = re.compile(r"^test_(quantizelinear|dequantizelinear|qlinearconv|qlinearmatmul|"
                   r"convinteger|matmulinteger)")


class _AnyOf(str):
    """An op-type filter for onnx's case collector that matches every op of OPS (it
    compares ``node.op_type != target``; a str subclass's reflected ``__ne__`` wins)."""

    __hash__ = str.__hash__

    def __eq__(self, other) -> bool:
        return other in OPS

    def __ne__(self, other) -> bool:
        return other not in OPS


@cache
def node_tests() -> dict:
    """The node test cases of OPS, cached on disk per onnx version (generating them costs
    ~20 s)."""
    import os
    import pickle
    import tempfile
    from pathlib import Path

    path = Path(tempfile.gettempdir()) / "bitloom-test-models" / f"onnx-node-{onnx.__version__}.pkl"
    if path.exists():
        return pickle.loads(path.read_bytes())
    cases = _generate_node_tests()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_bytes(pickle.dumps(cases))
    os.replace(tmp, path)
    return cases


def _generate_node_tests() -> dict:
    """What ``load_model_tests(kind="node")`` yields for OPS, generated only for them."""
    import warnings

    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cases = {t.name: t for t in collect_testcases(_AnyOf(OPS[0])) if NAMES.match(t.name)}
        if len(cases) < 20:  # the case modules were imported before: take the slow path
            from onnx.backend.test.loader import load_model_tests

            cases = {t.name: t for t in load_model_tests(kind="node") if NAMES.match(t.name)}
    return cases


def _array(value) -> np.ndarray:
    return numpy_helper.to_array(value) if isinstance(value, onnx.TensorProto) else (
        np.asarray(value))


def bound(case) -> tuple[onnx.ModelProto, np.ndarray, np.ndarray]:
    """(model with every input but the first as an initializer, first input, expected)."""
    inputs, outputs = case.data_sets[0]
    model = onnx.ModelProto()
    model.CopyFrom(case.model)
    graph = model.graph
    names = [i.name for i in graph.input]
    for name, value in zip(names[1:], inputs[1:], strict=False):
        if isinstance(value, onnx.TensorProto):  # float8/int4/... data comes as protos
            tensor = onnx.TensorProto()
            tensor.CopyFrom(value)
            tensor.name = name
        else:
            tensor = numpy_helper.from_array(np.asarray(value), name)
        graph.initializer.append(tensor)
    keep = graph.input[0]
    del graph.input[:]
    graph.input.append(keep)
    return model, _array(inputs[0]), _array(outputs[0])


FLOAT_BOUNDARY_INPUT = {"QLinearConv": (1, 2), "QLinearMatMul": (1, 2), "ConvInteger": None,
                        "MatMulInteger": None, "DequantizeLinear": (1, 2)}


def wrapped(case) -> tuple[onnx.ModelProto, np.ndarray, np.ndarray]:
    """The bound model between float boundaries, as a quantized network has it: a
    QuantizeLinear in front of ops that read integers (fed ``(x - zp) * scale``, which it
    maps back to ``x`` exactly; a DequantizeLinear's input quantizer takes its axis and
    block size) and a DequantizeLinear (or a Cast of integer accumulators) after integer
    outputs. The expected output is the node test's, dequantized."""
    from onnx import helper

    model, x, expected = bound(case)
    graph, node = model.graph, model.graph.node[0]
    consts = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    inp, out = graph.input[0], graph.output[0]
    pre, post = [], []
    if node.op_type in FLOAT_BOUNDARY_INPUT:
        where = FLOAT_BOUNDARY_INPUT[node.op_type]
        if where:
            scale_name, zp_name = node.input[where[0]], node.input[where[1]]
        else:
            zp = node.input[2] if len(node.input) > 2 and node.input[2] else None
            scale_name = "x_unit_scale"
            graph.initializer.append(numpy_helper.from_array(np.float32(1.0), scale_name))
            zp_name = zp or "x_zero"
            if not zp:
                graph.initializer.append(numpy_helper.from_array(np.zeros((), x.dtype),
                                                                 zp_name))
        scale = consts.get(scale_name, np.float32(1.0)).astype(np.float64)
        zero = consts.get(zp_name, np.zeros((), x.dtype)).astype(np.float64)
        q = helper.make_node("QuantizeLinear", ["x_float", scale_name, zp_name], [inp.name],
                             name="boundary_q")
        if node.op_type == "DequantizeLinear":  # per-axis/blocked: x_float is its output
            q.attribute.extend(a for a in node.attribute if a.name in ("axis", "block_size"))
            x = expected.astype(np.float32)
        else:
            x = ((x.astype(np.float64) - zero) * scale).astype(np.float32)
        pre.append(q)
        new_in = helper.make_tensor_value_info("x_float", onnx.TensorProto.FLOAT,
                                               list(x.shape))
    else:
        new_in = inp
    out_elem = out.type.tensor_type.elem_type
    if out_elem in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16):
        new_out = out
    else:
        if node.op_type in ("ConvInteger", "MatMulInteger"):
            post.append(helper.make_node("Cast", [out.name], ["y_float"], name="boundary_cast",
                                         to=onnx.TensorProto.FLOAT))
            expected = expected.astype(np.float32)
        else:  # QuantizeLinear / QLinear*: dequantize with the output's own parameters
            s_idx, z_idx = {"QuantizeLinear": (1, 2), "QLinearConv": (6, 7),
                            "QLinearMatMul": (6, 7)}[node.op_type]
            attrs = [a for a in node.attribute if a.name in ("axis", "block_size")]
            dq = helper.make_node("DequantizeLinear", [out.name, node.input[s_idx]] + (
                [node.input[z_idx]] if len(node.input) > z_idx and node.input[z_idx] else []),
                ["y_float"], name="boundary_dq")
            dq.attribute.extend(attrs)
            post.append(dq)
            from onnx.reference import ReferenceEvaluator

            only_dq = helper.make_model(helper.make_graph(
                [dq], "dq", [helper.make_tensor_value_info(out.name, out_elem, None)],
                [helper.make_tensor_value_info("y_float", onnx.TensorProto.UNDEFINED, None)],
                list(graph.initializer)), opset_imports=[helper.make_opsetid("", 21)])
            expected = ReferenceEvaluator(only_dq).run(None, {out.name: expected})[0]
        new_out = helper.make_tensor_value_info("y_float", onnx.TensorProto.FLOAT,
                                                list(expected.shape))
    nodes = pre + list(graph.node) + post
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.input[:]
    graph.input.append(new_in)
    del graph.output[:]
    graph.output.append(new_out)
    return model, x, np.asarray(expected)


def check(name: str, how: str) -> None:
    model, x, expected = (bound if how == "as_shipped" else wrapped)(node_tests()[name])
    got = bitloom.load(model).run(x)
    assert got.shape == expected.shape, (got.shape, expected.shape)
    np.testing.assert_array_equal(got.astype(np.float64), expected.astype(np.float64))


#: the cases the golden executor passes: (name, "as_shipped" | "float_boundary"). As shipped,
#: integer graph inputs are codes (scale 1, zero point 0 until the op that reads them states
#: theirs), integer graph outputs are codes, and a Q/DQ-only graph is a zero-layer network.
#: The QLinearMatMul float16 cases pass as shipped only: their boundary DequantizeLinear
#: computes in float16, and bitloom's host output rounds once, to float32.
PASSING: list[tuple[str, str]] = [
    ("test_convinteger_with_padding", "as_shipped"),
    ("test_convinteger_with_padding", "float_boundary"),
    ("test_convinteger_without_padding", "as_shipped"),
    ("test_convinteger_without_padding", "float_boundary"),
    ("test_dequantizelinear", "as_shipped"),
    ("test_dequantizelinear", "float_boundary"),
    ("test_dequantizelinear_axis", "as_shipped"),
    ("test_dequantizelinear_axis", "float_boundary"),
    ("test_dequantizelinear_blocked", "as_shipped"),
    ("test_dequantizelinear_blocked", "float_boundary"),
    ("test_dequantizelinear_e4m3fn", "as_shipped"),
    ("test_dequantizelinear_e4m3fn_float16", "as_shipped"),
    ("test_dequantizelinear_e4m3fn_zero_point", "as_shipped"),
    ("test_dequantizelinear_e4m3fn_zero_point", "float_boundary"),
    ("test_dequantizelinear_e5m2", "as_shipped"),
    ("test_dequantizelinear_float4e2m1", "as_shipped"),
    ("test_dequantizelinear_float4e2m1", "float_boundary"),
    ("test_dequantizelinear_int16", "as_shipped"),
    ("test_dequantizelinear_int16", "float_boundary"),
    ("test_dequantizelinear_int2", "as_shipped"),
    ("test_dequantizelinear_int2", "float_boundary"),
    ("test_dequantizelinear_int4", "as_shipped"),
    ("test_dequantizelinear_int4", "float_boundary"),
    ("test_dequantizelinear_uint16", "as_shipped"),
    ("test_dequantizelinear_uint16", "float_boundary"),
    ("test_dequantizelinear_uint2", "as_shipped"),
    ("test_dequantizelinear_uint2", "float_boundary"),
    ("test_dequantizelinear_uint4", "as_shipped"),
    ("test_dequantizelinear_uint4", "float_boundary"),
    ("test_matmulinteger", "as_shipped"),
    ("test_matmulinteger", "float_boundary"),
    ("test_qlinearconv", "as_shipped"),
    ("test_qlinearconv", "float_boundary"),
    ("test_qlinearmatmul_2D_int8_float16", "as_shipped"),
    ("test_qlinearmatmul_2D_int8_float32", "as_shipped"),
    ("test_qlinearmatmul_2D_int8_float32", "float_boundary"),
    ("test_qlinearmatmul_2D_uint8_float16", "as_shipped"),
    ("test_qlinearmatmul_2D_uint8_float32", "as_shipped"),
    ("test_qlinearmatmul_2D_uint8_float32", "float_boundary"),
    ("test_qlinearmatmul_3D_int8_float16", "as_shipped"),
    ("test_qlinearmatmul_3D_int8_float32", "as_shipped"),
    ("test_qlinearmatmul_3D_int8_float32", "float_boundary"),
    ("test_qlinearmatmul_3D_uint8_float16", "as_shipped"),
    ("test_qlinearmatmul_3D_uint8_float32", "as_shipped"),
    ("test_qlinearmatmul_3D_uint8_float32", "float_boundary"),
    ("test_quantizelinear", "as_shipped"),
    ("test_quantizelinear", "float_boundary"),
    ("test_quantizelinear_axis", "as_shipped"),
    ("test_quantizelinear_axis", "float_boundary"),
    ("test_quantizelinear_blocked_asymmetric", "as_shipped"),
    ("test_quantizelinear_blocked_asymmetric", "float_boundary"),
    ("test_quantizelinear_blocked_symmetric", "as_shipped"),
    ("test_quantizelinear_blocked_symmetric", "float_boundary"),
    ("test_quantizelinear_e4m3fn", "as_shipped"),
    ("test_quantizelinear_e4m3fn", "float_boundary"),
    ("test_quantizelinear_e5m2", "as_shipped"),
    ("test_quantizelinear_e5m2", "float_boundary"),
    ("test_quantizelinear_float4e2m1", "as_shipped"),
    ("test_quantizelinear_float4e2m1", "float_boundary"),
    ("test_quantizelinear_int16", "as_shipped"),
    ("test_quantizelinear_int16", "float_boundary"),
    ("test_quantizelinear_int2", "as_shipped"),
    ("test_quantizelinear_int2", "float_boundary"),
    ("test_quantizelinear_int4", "as_shipped"),
    ("test_quantizelinear_int4", "float_boundary"),
    ("test_quantizelinear_uint16", "as_shipped"),
    ("test_quantizelinear_uint16", "float_boundary"),
    ("test_quantizelinear_uint2", "as_shipped"),
    ("test_quantizelinear_uint2", "float_boundary"),
    ("test_quantizelinear_uint4", "as_shipped"),
    ("test_quantizelinear_uint4", "float_boundary"),
]


@pytest.mark.parametrize(("name", "how"), PASSING, ids=["-".join(p) for p in PASSING])
def test_golden_equals_onnx_node_test(name, how):
    check(name, how)


def test_every_node_test_passes():
    assert set(node_tests()) == {n for n, _ in PASSING}


# -- batched MatMul: A (2, 2, 4) codes, B (2, 4, 3), output[s] = A[s] @ B[s] ---------------
BATCHED = "test_qlinearmatmul_3D_uint8_float32"


def batched_b() -> np.ndarray:
    return numpy_helper.to_array(next(t for t in bound(node_tests()[BATCHED])[0].graph.initializer
                                      if t.name == "b"))


def batched_with(b: np.ndarray | None = None, batch: int | str = 2
                 ) -> tuple[onnx.ModelProto, np.ndarray]:
    """The batched node test as shipped (its node named ``qmm``) with another B and another
    declared batch size of its input."""
    model, x, _ = bound(node_tests()[BATCHED])
    model.graph.node[0].name = "qmm"
    if b is not None:
        weights = next(t for t in model.graph.initializer if t.name == "b")
        weights.CopyFrom(numpy_helper.from_array(b.astype(np.uint8), "b"))
    dim = model.graph.input[0].type.tensor_type.shape.dim[0]
    if isinstance(batch, str):
        dim.dim_param = batch
    else:
        dim.dim_value = batch
    return model, x


def onnx_reference(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    from onnx.reference import ReferenceEvaluator

    return ReferenceEvaluator(model).run(None, {model.graph.input[0].name: x})[0]


def test_batched_matmul_multiplies_each_sample_by_its_own_matrix():
    """The node test's two samples and two matrices are equal; here they differ, so a
    layer applying one matrix to both samples would fail."""
    rng = np.random.default_rng(2)
    b = rng.integers(0, 256, (2, 4, 3))
    x = rng.integers(0, 256, (2, 2, 4)).astype(np.uint8)
    model, _ = batched_with(b)
    net = bitloom.load(model)
    (layer,) = net.layers
    assert layer.weights.shape == (2, 4, 3) and layer.rows == 2
    assert net.output.shape == (2, 3)
    expected = onnx_reference(model, x)
    assert not np.array_equal(expected[1], onnx_reference(batched_with(b[:1])[0], x)[1])
    np.testing.assert_array_equal(net.run(x), expected)


@pytest.mark.parametrize("leading", [False, True], ids=["2-D B", "B of leading axis 1"])
def test_rows_of_a_per_sample_matrix_times_one_matrix(leading):
    """One matrix for every sample (a 2-D B, or a rank-3 B whose leading axis is 1): the
    layer multiplies each of the rows of every sample, for any batch size."""
    _, x = batched_with()
    b = batched_b()
    model, _ = batched_with(b[1:] if leading else b[1], batch="N")
    net = bitloom.load(model)
    assert net.layers[0].weights.shape == (4, 3) and net.layers[0].rows == 2
    x3 = np.concatenate([x, x[:1]])
    np.testing.assert_array_equal(net.run(x3), onnx_reference(model, x3))


def _qdq_rows_model(bias_shape: tuple[int, ...]) -> onnx.ModelProto:
    """Q/DQ: x (N, 3, 4) -> MatMul by a (4, 3) matrix -> Add bias -> Relu -> Q/DQ."""
    from onnx import helper

    rng = np.random.default_rng(3)
    inits = [numpy_helper.from_array(np.float32(0.05), "xs"),
             numpy_helper.from_array(np.int8(0), "xz"),
             numpy_helper.from_array(rng.integers(-100, 100, (4, 3)).astype(np.int8), "w"),
             numpy_helper.from_array(np.float32(0.02), "ws"),
             numpy_helper.from_array((np.arange(3) - 1).astype(np.float32).reshape(
                 bias_shape), "bias"),
             numpy_helper.from_array(np.float32(0.04), "ys"),
             numpy_helper.from_array(np.uint8(0), "yz")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"], name="q0"),
             helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"], name="dq0"),
             helper.make_node("DequantizeLinear", ["w", "ws"], ["wd"], name="dqw"),
             helper.make_node("MatMul", ["xd", "wd"], ["mm"], name="mm"),
             helper.make_node("Add", ["mm", "bias"], ["acc"], name="add"),
             helper.make_node("Relu", ["acc"], ["r"], name="relu"),
             helper.make_node("QuantizeLinear", ["r", "ys", "yz"], ["yq"], name="q1"),
             helper.make_node("DequantizeLinear", ["yq", "ys", "yz"], ["y"], name="dq1")]
    graph = helper.make_graph(nodes, "rows", [helper.make_tensor_value_info(
        "x", onnx.TensorProto.FLOAT, ["N", 3, 4])], [helper.make_tensor_value_info(
            "y", onnx.TensorProto.FLOAT, ["N", 3, 3])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])


def test_bias_of_a_rows_layer_is_per_column():
    """A bias (3,) after rows of a (3, 4) per-sample matrix adds per column (the last axis);
    one of shape (3, 1) adds per row, which is not per channel and is refused."""
    model = _qdq_rows_model((3,))
    x = np.random.default_rng(4).normal(size=(5, 3, 4)).astype(np.float32)
    got = bitloom.load(model).run(x)
    assert got.shape == (5, 3, 3)
    np.testing.assert_allclose(got, onnx_reference(model, x), rtol=0, atol=1e-6)
    with pytest.raises(BitloomError, match=r"node 'add' \(Add\).*not per-channel"):
        bitloom.load(_qdq_rows_model((3, 1)))


@pytest.mark.parametrize(("b_shape", "batch", "message"), [
    ((3, 4, 3), 2, "holds one matrix per index of axis 0, the batch axis, for a batch of "
                   "exactly 3 samples; input 'a' declares 2"),
    ((2, 4, 3), "N", "input 'a' leaves it symbolic"),
    ((1, 2, 4, 3), 2, "B of shape (1, 2, 4, 3) does not map onto a streamed layer"),
], ids=["other batch", "symbolic batch", "rank 4"])
def test_batched_b_that_mixes_samples_is_refused(b_shape, batch, message):
    model, _ = batched_with(np.ones(b_shape), batch)
    with pytest.raises(BitloomError, match=r"node 'qmm' \(QLinearMatMul\): .*" +
                       re.escape(message)):
        bitloom.load(model)


def test_batched_b_against_a_vector_input_is_refused():
    """A (2, 4) (per-sample vectors) times B (2, 4, 3) gives ONNX's (2, 2, 3): every
    sample meets every matrix, which no per-sample layer computes."""
    model, _, _ = bound(node_tests()["test_qlinearmatmul_2D_uint8_float32"])
    weights = next(t for t in model.graph.initializer if t.name == "b")
    b = numpy_helper.to_array(weights)
    weights.CopyFrom(numpy_helper.from_array(np.stack([b, b]), "b"))
    with pytest.raises(BitloomError, match=re.escape("for an input of per-sample shape (4,)")):
        bitloom.load(model)


def test_batched_matmul_needs_exactly_its_batch():
    model, x = batched_with()
    net = bitloom.load(model)
    with pytest.raises(BitloomError, match=re.escape(
            "layer 'mvu0' (ONNX node 'qmm') is a batched MatMul with parameters per index of "
            "axis 0 (the model declares a batch of 2); it must hold exactly 2 samples, got 1."
    )):
        net.run(x[:1])


@pytest.mark.parametrize("per_sample", [True, False], ids=["one matrix per sample", "rows"])
def test_golden_only_layers_are_refused_for_hardware(per_sample, tmp_path):
    """``bitloom inspect`` and golden runs work; planning, compiling and the hardware engines
    refuse the layer by name (exit 2), rather than building different hardware."""
    import subprocess
    import sys

    from bitloom.plan import make_plan

    model, x = batched_with(batched_b() if per_sample else batched_b()[0])
    net = bitloom.load(model)
    assert "golden only (no hardware mapping)" in net.summary()
    why = "its own weight matrix" if per_sample else "holds 2 rows per sample"
    expected = ("layer 'mvu0' (ONNX node 'qmm') runs in golden (bitloom run / inspect) but "
                "has no hardware mapping: ")
    for refused in (lambda: make_plan(net, 1), lambda: net.run(x, engine="hls")):
        with pytest.raises(BitloomError, match=re.escape(expected) + ".*" + why):
            refused()
    path = tmp_path / "batched.onnx"
    onnx.save(model, path)

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "bitloom.cli", *args],
                              capture_output=True, text=True, timeout=300)

    assert cli("inspect", str(path)).returncode == 0
    proc = cli("compile", str(path), "--board", "pynq-z2", "--out", str(tmp_path / "out"))
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert expected in " ".join(proc.stderr.split()), proc.stderr


#: per-axis and blocked cases onnxruntime also runs (it cannot hand int4 outputs to numpy)
ORT_CASES = [(n, how) for n in ("test_quantizelinear_axis", "test_quantizelinear_int4",
                                "test_quantizelinear_blocked_asymmetric",
                                "test_dequantizelinear_blocked")
             for how in ("as_shipped", "float_boundary")
             if (n, how) != ("test_quantizelinear_int4", "as_shipped")]


@pytest.mark.parametrize(("name", "how"), ORT_CASES, ids=["-".join(p) for p in ORT_CASES])
def test_golden_equals_onnxruntime_on_per_axis_and_blocked_cases(name, how):
    """onnxruntime runs the same model; it implements opsets up to 23 and Q/DQ's per-axis
    and blocked semantics have not changed since opset 21, so the model is declared 23."""
    import onnxruntime as ort

    model, x, _ = (bound if how == "as_shipped" else wrapped)(node_tests()[name])
    got = bitloom.load(model).run(x)
    for opset in model.opset_import:
        if opset.domain in ("", "ai.onnx"):
            opset.version = min(opset.version, 23)
    model.ir_version = min(model.ir_version, 10)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    expected = sess.run(None, {model.graph.input[0].name: x})[0]
    np.testing.assert_array_equal(got.astype(np.float64), expected.astype(np.float64))
