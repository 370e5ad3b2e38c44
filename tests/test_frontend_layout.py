"""Transposed activations and TopK at the output, against onnxruntime and qonnx's executor.

Exporters wrap layers in NCHW <-> NHWC Transposes, flatten NHWC maps into a Gemm and
transpose (or TopK) the output: the first two must map onto the hardware exactly (the
layout is a view, the Gemm's weight rows are permuted), the last runs on the host. Scales
are powers of two and values small, so every float32 operation of the references is exact
and outputs must agree bit for bit, ties of TopK included.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import bitloom
from bitloom.cli import main
from bitloom.errors import BitloomWarning
from bitloom.ir import MatrixVector

from qonnx_models import Builder, run_qonnx


# -- onnxruntime: ONNX Q/DQ models -----------------------------------------------------------
class QdqGraph:
    """A Q/DQ model built node by node (opset 13)."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list = []
        self.inits: list = []
        self.count = 0

    def init(self, value: np.ndarray) -> str:
        self.count += 1
        name = f"t{self.count}"
        self.inits.append(numpy_helper.from_array(value, name))
        return name

    def node(self, op: str, inputs: list[str], outputs: int = 1, **attrs) -> list[str]:
        self.count += 1
        outs = [f"{op.lower()}{self.count}_{i}" for i in range(outputs)]
        self.nodes.append(helper.make_node(op, inputs, outs, name=f"{op}_{self.count}",
                                           **attrs))
        return outs

    def qdq(self, x: str, scale: float, signed: bool = True) -> str:
        params = [self.init(np.float32(scale)),
                  self.init(np.int8(0) if signed else np.uint8(0))]
        (q,) = self.node("QuantizeLinear", [x, *params])
        return self.node("DequantizeLinear", [q, *params])[0]

    def weights(self, shape: tuple[int, ...], scale: float) -> str:
        w = self.init(self.rng.integers(-3, 4, size=shape).astype(np.int8))
        return self.node("DequantizeLinear", [w, self.init(np.float32(scale)),
                                              self.init(np.int8(0))])[0]

    def model(self, in_shape: list[int], outputs: list[tuple[str, int, list]]):
        graph = helper.make_graph(
            self.nodes, "layout",
            [helper.make_tensor_value_info("inp", TensorProto.FLOAT, in_shape)],
            [helper.make_tensor_value_info(n, t, s) for n, t, s in outputs], self.inits)
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def run_ort(model: onnx.ModelProto, x: np.ndarray) -> list[np.ndarray]:
    """onnxruntime without graph optimizations (no fused integer kernels)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    return session.run(None, {"inp": x})


def dense_topk(seed: int, k: int, largest: int, output: int, axis: int = -1):
    """MLP -> coarse output quantizer (many ties) -> TopK; the graph outputs values or
    indices."""
    g = QdqGraph(seed)
    x = g.qdq("inp", 0.125, signed=False)
    (y,) = g.node("MatMul", [x, g.weights((8, 12), 0.25)])
    y = g.qdq(y, 2.0)
    values, indices = g.node("TopK", [y, g.init(np.array([k], dtype=np.int64))], outputs=2,
                             axis=axis, largest=largest, sorted=1)
    out = [(values, TensorProto.FLOAT, [None, k]), (indices, TensorProto.INT64, [None, k])]
    return g.model([None, 8], [out[output]])


def conv_nhwc_gemm(seed: int, output_transpose: bool = False):
    """Conv -> Q/DQ -> Transpose to NHWC -> Reshape -> MatMul (exporters' flatten order),
    or the NHWC map itself as the output."""
    g = QdqGraph(seed)
    x = g.qdq("inp", 0.25, signed=False)
    (y,) = g.node("Conv", [x, g.weights((3, 2, 3, 3), 0.5)], kernel_shape=[3, 3],
                  pads=[1, 1, 1, 1])
    y = g.qdq(y, 0.5)
    (y,) = g.node("Transpose", [y], perm=[0, 2, 3, 1])
    if output_transpose:
        return g.model([None, 2, 5, 5], [(y, TensorProto.FLOAT, [None, 5, 5, 3])])
    (y,) = g.node("Reshape", [y, g.init(np.array([0, -1], dtype=np.int64))])
    (y,) = g.node("MatMul", [y, g.weights((75, 6), 0.25)])
    return g.model([None, 2, 5, 5], [(y, TensorProto.FLOAT, [None, 6])])


def frames(seed: int, shape: tuple[int, ...], n: int = 32) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 12, size=(n, *shape)).astype(np.float32)


@pytest.mark.parametrize("k, largest, output", [(1, 1, 0), (3, 1, 1), (4, 0, 0), (4, 0, 1),
                                                (12, 1, 1), (12, 0, 0)])
def test_topk_matches_onnxruntime_ties_included(k, largest, output):
    model = dense_topk(k, k, largest, output)
    x = frames(k, (8,))
    (want,) = run_ort(model, x)
    got = bitloom.load(model).run(x)
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_array_equal(got, want)
    pre = bitloom.load(dense_topk(k, 12, 1, 0)).run(x)  # all twelve values, sorted
    assert (pre[:, 1:] == pre[:, :-1]).any(), "no ties: the tie-break is not exercised"


def test_topk_along_channels_of_a_feature_map():
    g = QdqGraph(3)
    x = g.qdq("inp", 0.25, signed=False)
    (y,) = g.node("Conv", [x, g.weights((6, 2, 3, 3), 0.5)], kernel_shape=[3, 3])
    y = g.qdq(y, 1.0)
    _, indices = g.node("TopK", [y, g.init(np.array([2], dtype=np.int64))], outputs=2, axis=1)
    model = g.model([None, 2, 5, 5], [(indices, TensorProto.INT64, [None, 2, 3, 3])])
    x = frames(3, (2, 5, 5))
    np.testing.assert_array_equal(bitloom.load(model).run(x), run_ort(model, x)[0])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_nhwc_flatten_into_matmul_matches_onnxruntime(seed):
    model = conv_nhwc_gemm(seed)
    net = bitloom.load(model)
    x = frames(seed, (2, 5, 5))
    np.testing.assert_array_equal(net.run(x), run_ort(model, x)[0])
    # the NHWC flatten order is the hardware's own: the weights are not permuted
    w = numpy_helper.to_array(next(t for t in model.graph.initializer if t.dims == [75, 6]))
    mvu = [ly for ly in net.layers if isinstance(ly, MatrixVector)][-1]
    np.testing.assert_array_equal(mvu.weights, w)


def test_transpose_at_the_output_runs_on_the_host():
    model = conv_nhwc_gemm(4, output_transpose=True)
    x = frames(4, (2, 5, 5))
    got = bitloom.load(model).run(x)
    assert got.shape == (32, 5, 5, 3)
    np.testing.assert_array_equal(got, run_ort(model, x)[0])


# -- qonnx: QONNX models ---------------------------------------------------------------------
def qonnx_cnn(seed: int, flatten_perm: list[int] | None, transpose_output: bool = False,
              quant_inside: bool = False):
    """Conv -> NHWC Transpose -> per-channel Mul (last axis) -> Relu -> Transpose back ->
    Quant (or Quant, then Transpose back) -> (Transpose flatten_perm) -> Flatten -> Gemm."""
    rng = np.random.default_rng(seed)
    b = Builder()
    x = b.quant("inp", 1.0, 3, False)
    w = b.quant(b.const(rng.integers(-2, 3, size=(4, 2, 3, 3))), 1.0, 3, True)
    y = b.node("Conv", [x, w], kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    y = b.node("Transpose", [y], perm=[0, 2, 3, 1])
    y = b.node("Mul", [y, b.const(np.array([0.5, -0.25, 1.0, 0.125]))])
    y = b.node("Relu", [y])
    if quant_inside:
        x = b.node("Transpose", [b.quant(y, 1.0, 3, False)], perm=[0, 3, 1, 2])
    else:
        x = b.quant(b.node("Transpose", [y], perm=[0, 3, 1, 2]), 1.0, 3, False)
    if transpose_output:
        x = b.node("Transpose", [x], perm=[0, 3, 2, 1])
        return b.model("inp", [1, 2, 4, 4], x, [1, 4, 4, 4])
    if flatten_perm is not None:
        x = b.node("Transpose", [x], perm=flatten_perm)
    x = b.node("Flatten", [x])
    w = b.quant(b.const(rng.integers(-2, 3, size=(5, 64))), 1.0, 3, True)
    y = b.node("Gemm", [x, w, b.const(rng.integers(-4, 4, size=5))], transB=1)
    return b.model("inp", [1, 2, 4, 4], y, [1, 5])


@pytest.mark.parametrize("quant_inside", [False, True])
@pytest.mark.parametrize("flatten_perm", [None, [0, 2, 3, 1], [0, 3, 2, 1], [0, 1, 3, 2]])
def test_transposes_match_qonnx(flatten_perm, quant_inside):
    model = qonnx_cnn(7, flatten_perm, quant_inside=quant_inside)
    net = bitloom.load(model)
    x = frames(7, (2, 4, 4), 16)
    np.testing.assert_array_equal(net.run(x), run_qonnx(model, x))


def test_transposed_output_matches_qonnx():
    model = qonnx_cnn(8, None, transpose_output=True)
    x = frames(8, (2, 4, 4), 8)
    np.testing.assert_array_equal(bitloom.load(model).run(x), run_qonnx(model, x))


# -- refusals ----------------------------------------------------------------------------------
def refused(tmp_path, capsys, model: onnx.ModelProto) -> str:
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    assert main(["inspect", str(path)]) == 2
    return " ".join(capsys.readouterr().err.split())


def test_transpose_before_conv_is_refused_naming_node_and_perm(tmp_path, capsys):
    b = Builder()
    x = b.quant("inp", 1.0, 3, False)
    w = b.quant(b.const(np.ones((2, 2, 1, 1))), 1.0, 3, True)
    x = b.quant(b.node("Conv", [x, w], kernel_shape=[1, 1]), 1.0, 3, False)
    x = b.node("Transpose", [x], perm=[0, 1, 3, 2])
    w = b.quant(b.const(np.ones((2, 2, 3, 3))), 1.0, 3, True)
    y = b.node("Conv", [x, w], kernel_shape=[3, 3])
    err = refused(tmp_path, capsys, b.model("inp", [1, 2, 5, 5], y, [1, 2, 3, 3]))
    assert "(Conv)" in err and "transposed activation (perm [0, 1, 3, 2])" in err


def test_transpose_of_the_batch_axis_is_refused(tmp_path, capsys):
    b = Builder()
    x = b.quant("inp", 1.0, 3, False)
    y = b.node("Transpose", [x], perm=[1, 0])
    err = refused(tmp_path, capsys, b.model("inp", [1, 4], y, [4, 1]))
    assert "(Transpose)" in err and "perm [1, 0] moves the batch axis" in err


@pytest.mark.parametrize("quantize_first", [False, True])
def test_transpose_of_the_model_input_runs_on_the_host(quantize_first):
    """NHWC model input -> Transpose to NCHW -> Conv (as converted TensorFlow models start):
    the host transposes the input before it quantizes, whether the Transpose comes before or
    after the input's Q/DQ."""
    g = QdqGraph(5)
    if quantize_first:
        x = g.qdq("inp", 0.25, signed=False)
        (x,) = g.node("Transpose", [x], perm=[0, 3, 1, 2])
    else:
        (x,) = g.node("Transpose", ["inp"], perm=[0, 3, 1, 2])
        x = g.qdq(x, 0.25, signed=False)
    (y,) = g.node("Conv", [x, g.weights((3, 2, 3, 3), 0.5)], kernel_shape=[3, 3])
    y = g.qdq(y, 0.5)
    model = g.model([None, 5, 5, 2], [(y, TensorProto.FLOAT, [None, 3, 3, 3])])
    x = frames(5, (5, 5, 2))
    (want,) = run_ort(model, x)
    net = bitloom.load(model)
    assert net.input.perm == (2, 0, 1)
    np.testing.assert_array_equal(net.run(x), want)


def test_transpose_of_the_model_input_after_a_reshape_is_refused(tmp_path, capsys):
    b = Builder()
    b.inits.append(numpy_helper.from_array(np.array([1, 4, 2, 4], dtype=np.int64), "shape"))
    x = b.node("Reshape", ["inp", "shape"])
    x = b.node("Transpose", [x], perm=[0, 3, 1, 2])
    x = b.quant(x, 1.0, 3, False)
    err = refused(tmp_path, capsys, b.model("inp", [1, 4, 4, 2], x, [1, 4, 4, 2]))
    assert "(Transpose)" in err and "after a reshape is not supported" in err


def test_topk_before_a_layer_is_refused(tmp_path, capsys):
    g = QdqGraph(0)
    x = g.qdq("inp", 0.125, signed=False)
    values, _ = g.node("TopK", [x, g.init(np.array([2], dtype=np.int64))], outputs=2)
    err = refused(tmp_path, capsys, g.model([1, 8], [(values, TensorProto.FLOAT, [1, 2])]))
    assert "(TopK)" in err and "only at the graph output" in err


def test_topk_with_k_too_large_is_refused(tmp_path, capsys):
    model = dense_topk(0, 13, 1, 0)
    err = refused(tmp_path, capsys, model)
    assert "(TopK)" in err and "K=13 is not between 1 and the 12 elements" in err


def test_topk_with_both_outputs_is_refused_cleanly(tmp_path, capsys):
    g = QdqGraph(0)
    x = g.qdq("inp", 0.125, signed=False)
    (y,) = g.node("MatMul", [x, g.weights((8, 12), 0.25)])
    values, indices = g.node("TopK", [g.qdq(y, 2.0), g.init(np.array([3], dtype=np.int64))],
                             outputs=2)
    model = g.model([1, 8], [(values, TensorProto.FLOAT, [1, 3]),
                             (indices, TensorProto.INT64, [1, 3])])
    err = refused(tmp_path, capsys, model)
    assert "1 inputs and 2 outputs" in err


def test_requantizing_a_flattened_map_keeps_its_order():
    """Conv -> Quant -> Flatten -> Quant (another scale) -> Gemm: the second quantizer is a
    thresholding layer on the channel-last stream, whose order the Gemm's rows follow."""
    rng = np.random.default_rng(13)
    b = Builder()
    x = b.quant("inp", 1.0, 3, False)
    w = b.quant(b.const(rng.integers(-2, 3, size=(3, 2, 3, 3))), 1.0, 3, True)
    y = b.node("Flatten", [b.quant(b.node("Conv", [x, w], kernel_shape=[3, 3]), 1.0, 4,
                                   True)])
    y = b.quant(y, 2.0, 3, True)
    w = b.quant(b.const(rng.integers(-2, 3, size=(12, 4))), 1.0, 3, True)
    model = b.model("inp", [1, 2, 4, 4], b.node("MatMul", [y, w]), [1, 4])
    x = frames(13, (2, 4, 4), 16)
    np.testing.assert_array_equal(bitloom.load(model).run(x), run_qonnx(model, x))


def test_qdq_between_cancelling_transposes_matches_onnxruntime():
    """Conv -> Q/DQ -> Transpose to NHWC -> Relu -> Q/DQ -> Transpose back -> Conv."""
    g = QdqGraph(14)
    x = g.qdq("inp", 0.25, signed=False)
    (y,) = g.node("Conv", [x, g.weights((3, 2, 3, 3), 0.5)], kernel_shape=[3, 3],
                  pads=[1, 1, 1, 1])
    (y,) = g.node("Transpose", [g.qdq(y, 0.5)], perm=[0, 2, 3, 1])
    (y,) = g.node("Relu", [y])
    (y,) = g.node("Transpose", [g.qdq(y, 1.0, signed=False)], perm=[0, 3, 1, 2])
    (y,) = g.node("Conv", [y, g.weights((2, 3, 3, 3), 0.5)], kernel_shape=[3, 3])
    model = g.model([None, 2, 5, 5], [(g.qdq(y, 0.5), TensorProto.FLOAT, [None, 2, 3, 3])])
    x = frames(14, (2, 5, 5))
    np.testing.assert_array_equal(bitloom.load(model).run(x), run_ort(model, x)[0])


def test_reshape_of_a_transposed_map_is_refused(tmp_path, capsys):
    b = Builder()
    x = b.quant("inp", 1.0, 3, False)
    w = b.quant(b.const(np.ones((2, 2, 1, 1))), 1.0, 3, True)
    x = b.quant(b.node("Conv", [x, w], kernel_shape=[1, 1]), 1.0, 3, False)
    x = b.node("Transpose", [x], perm=[0, 2, 3, 1])
    shape = b.name("shape")
    b.inits.append(numpy_helper.from_array(np.array([1, 4, 8], dtype=np.int64), shape))
    y = b.node("Reshape", [x, shape])
    err = refused(tmp_path, capsys, b.model("inp", [1, 2, 4, 4], y, [1, 4, 8]))
    assert "(Reshape)" in err and "transposed feature map (perm [0, 2, 3, 1])" in err


def test_unsorted_topk_warns_and_returns_the_same_elements():
    model = dense_topk(5, 5, 0, 1)
    next(a for a in model.graph.node[-1].attribute if a.name == "sorted").i = 0
    x = frames(5, (8,))
    with pytest.warns(BitloomWarning, match="sorted=0"):
        net = bitloom.load(model)
    got, (want,) = net.run(x), run_ort(model, x)
    np.testing.assert_array_equal(np.sort(got, axis=1), np.sort(want, axis=1))


def test_inspect_lists_host_side_output_ops(tmp_path, capsys):
    from bitloom.cli import main

    path = tmp_path / "topk.onnx"
    onnx.save(dense_topk(0, 3, 1, 1), path)
    assert main(["inspect", str(path)]) == 0
    assert "TopK(k=3, axis=-1, largest) indices on the host" in capsys.readouterr().out


def rows_concat_model() -> onnx.ModelProto:
    """A per-sample (3, 4) matrix concatenated with itself along its rows (ONNX axis 1)."""
    inits = [numpy_helper.from_array(np.array(0.05, np.float32), "s"),
             numpy_helper.from_array(np.array(0, np.int8), "z")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["d"]),
             helper.make_node("Concat", ["d", "d"], ["c"], axis=1),
             helper.make_node("QuantizeLinear", ["c", "s", "z"], ["q2"]),
             helper.make_node("DequantizeLinear", ["q2", "s", "z"], ["y"])]
    graph = helper.make_graph(nodes, "rows", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, ["n", 3, 4])], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT, ["n", 6, 4])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])


def test_concat_of_matrices_appends_rows_in_golden_and_hardware():
    """Matrices travel flattened row after row, so a Concat of their rows appends the
    streams: the layer is a concatenation of two 12-element vectors, and the core built
    from it (Amaranth simulator) is bit-exact."""
    from core_sim import run_core
    from onnx.reference import ReferenceEvaluator

    from bitloom.plan import make_plan

    model = rows_concat_model()
    net = bitloom.load(model)
    x = frames(0, (3, 4), 8)
    np.testing.assert_array_equal(net.run(x), ReferenceEvaluator(model).run(None, {"x": x})[0])
    (layer,) = net.layers
    assert (layer.in_shape, layer.out_shape) == ((12,), (24,))
    assert run_core(make_plan(net, 8), frames=4).bit_exact
