"""``bitloom quantize``: float ONNX -> QONNX that qonnx's executor runs and bitloom loads."""

from __future__ import annotations

import argparse
import os
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from float_models import float_mlp
from onnx import TensorProto, helper, numpy_helper

import bitloom
from bitloom.errors import BitloomError
from bitloom.quantize import add_arguments, command, quantize, quantize_model
from bitloom.quantize.graph import FloatGraph

ROOT = Path(__file__).resolve().parent.parent
QONNX_OPS = {"Quant", "FloatQuant"}


def run_float(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return sess.run(None, {name: x})[0]


def run_qonnx_batch(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    """qonnx's executor on the whole batch at once (it needs static shapes: fix axis 0)."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx
    from qonnx.transformation.infer_shapes import InferShapes

    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    for v in (*fixed.graph.input, *fixed.graph.output):
        v.type.tensor_type.shape.dim[0].dim_value = len(x)
    del fixed.graph.value_info[:]
    wrapped = ModelWrapper(fixed).transform(InferShapes())
    return execute_onnx(wrapped, {fixed.graph.input[0].name: x})[fixed.graph.output[0].name]


def shifted(x: np.ndarray) -> np.ndarray:
    """Every image moved by up to one pixel in each direction (9 copies)."""
    return np.concatenate([np.roll(x, (dy, dx), axis=(2, 3))
                           for dy in (-1, 0, 1) for dx in (-1, 0, 1)])


def train_digits_cnn(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Train a small float CNN on 300 of the bundled digits (shift-augmented) and export it to
    ``path``; it is evaluated on the other 150, each in its 9 one-pixel shifts (1350 images).
    Returns the calibration batch, the evaluation set and the float accuracy."""
    import torch
    from torch import nn

    data = np.load(ROOT / "examples" / "digits_test.npz")
    x, y = data["x"], data["y"]
    perm = np.random.default_rng(0).permutation(len(x))
    train, held = perm[:300], perm[300:]
    x_train, y_train = shifted(x[train]), np.tile(y[train], 9)
    x_eval, y_eval = shifted(x[held]), np.tile(y[held], 9)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # two threads on a loaded 2-core machine are 30x slower
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.AvgPool2d(2), nn.Flatten(), nn.Linear(64, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    xt, yt = torch.from_numpy(x_train), torch.from_numpy(y_train)
    generator = torch.Generator().manual_seed(0)
    for _ in range(20):  # large batches: per-step overhead dominates on tiny images
        order = torch.randperm(len(xt), generator=generator)
        for start in range(0, len(xt), 256):
            idx = order[start:start + 256]
            opt.zero_grad()
            nn.functional.cross_entropy(model(xt[idx]), yt[idx]).backward()
            opt.step()
    model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, torch.zeros(1, 1, 8, 8), str(path), opset_version=13,
                          dynamo=False, input_names=["x"], output_names=["logits"],
                          dynamic_axes={"x": {0: "n"}, "logits": {0: "n"}})
    torch.set_num_threads(threads)
    float_acc = float(np.mean(run_float(onnx.load(path), x_eval).argmax(1) == y_eval))
    return x_train[:512], x_eval, y_eval, float_acc


@pytest.fixture(scope="module")
def digits_cnn(tmp_path_factory) -> tuple[str, np.ndarray, np.ndarray, np.ndarray, float]:
    """The trained CNN, trained once per session: xdist workers share it through a lock."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        path = tmp_path_factory.mktemp("cnn") / "digits_cnn.onnx"
        return (str(path), *train_digits_cnn(path))
    from filelock import FileLock  # a dependency of torch

    root = tmp_path_factory.getbasetemp().parent  # shared by this session's workers
    path, data = root / "digits_cnn.onnx", root / "digits_cnn.npz"
    with FileLock(str(root / "digits_cnn.lock")):
        if not data.is_file():
            calib, x, y, acc = train_digits_cnn(path)
            np.savez(data, calib=calib, x=x, y=y, acc=acc)
    saved = np.load(data)
    return str(path), saved["calib"], saved["x"], saved["y"], float(saved["acc"])


def test_cnn_int8_loses_at_most_one_point(digits_cnn):
    """Acceptance (issue 9): int8 within 1 percentage point of float, via qonnx's executor."""
    path, calib, x, y, float_acc = digits_cnn
    q = quantize_model(path, "int8", "int8", calib)
    ops = {n.op_type for n in q.graph.node}
    assert "Quant" in ops and "BatchNormalization" not in ops
    acc = float(np.mean(run_qonnx_batch(q, x).argmax(1) == y))
    print(f"digits CNN: float {float_acc:.2%}, int8 {acc:.2%}")
    assert float_acc > 0.9
    assert acc >= float_acc - 0.01


@pytest.mark.parametrize("fmt", ["int8", "float8_e4m3fn"])
def test_cnn_golden_equals_qonnx(digits_cnn, fmt):
    """bitloom compiles the quantized CNN: its golden model agrees with qonnx's executor."""
    path, calib, x, _, _ = digits_cnn
    q = quantize_model(path, fmt, fmt, calib)
    golden = bitloom.load(q).run(x[::3])
    reference = run_qonnx_batch(q, x[::3])
    np.testing.assert_array_equal(golden.argmax(1), reference.argmax(1))
    np.testing.assert_allclose(golden, reference, rtol=0, atol=1e-5 * np.abs(reference).max())


@pytest.mark.parametrize("fmt", ["int4", "float8_e4m3fn", "e3m2"])
@pytest.mark.parametrize("method", ["minmax", "percentile", "mse"])
def test_cnn_low_precision_formats(digits_cnn, fmt, method):
    """int4 and minifloats through qonnx's executor; the figures go to docs/quantize.md."""
    path, calib, x, y, float_acc = digits_cnn
    q = quantize_model(path, fmt, fmt, calib, method=method)
    if fmt != "int4":
        assert {n.op_type for n in q.graph.node} & QONNX_OPS == {"FloatQuant"}
    acc = float(np.mean(run_qonnx_batch(q, x).argmax(1) == y))
    print(f"digits CNN: float {float_acc:.2%}, {fmt} ({method}) {acc:.2%}")
    assert acc >= float_acc - 0.08


@pytest.mark.parametrize("fmt", ["int8", "int4", "float8_e4m3fn", "e3m2", "fixed8.4"])
@pytest.mark.parametrize("gemm", [True, False], ids=["gemm", "matmul_add"])
def test_mlp_golden_equals_qonnx(fmt, gemm):
    """bitloom loads the quantized MLP; its golden model and qonnx's executor agree (to the
    last float32 rounding of the dequantized output) and stay close to the float model."""
    model = float_mlp(1, sizes=(16, 24, 12, 8), gemm=gemm)
    rng = np.random.default_rng(0)
    calib, x = rng.normal(size=(64, 16)).astype(np.float32), rng.normal(size=(40, 16))
    q = quantize_model(model, fmt, fmt, calib, method="mse")
    golden = bitloom.load(q).run(x.astype(np.float32))
    reference = run_qonnx_batch(q, x.astype(np.float32))
    np.testing.assert_array_equal(golden.argmax(1), reference.argmax(1))
    np.testing.assert_allclose(golden, reference, rtol=0, atol=1e-6 * np.abs(reference).max())
    if fmt in ("int8", "float8_e4m3fn"):
        ref = np.concatenate([run_float(model, x[i:i + 1].astype(np.float32))
                              for i in range(len(x))])
        assert np.abs(reference - ref).max() < 0.1 * np.abs(ref).max()


def test_weights_per_channel_narrow_and_biases_float():
    model = float_mlp(2, sizes=(16, 12, 8))
    calib = np.random.default_rng(1).normal(size=(32, 16)).astype(np.float32)
    q = quantize_model(model, "int4", "int4", calib)
    inits = {t.name: numpy_helper.to_array(t) for t in q.graph.initializer}
    quants = [n for n in q.graph.node if n.op_type == "Quant"]
    weight_quants = [n for n in quants if n.input[0] in inits]
    assert len(weight_quants) == 2
    for n in weight_quants:
        a = {x.name: helper.get_attribute_value(x) for x in n.attribute}
        assert a["narrow"] == 1 and a["signed"] == 1
        assert inits[n.input[1]].shape == (inits[n.input[0]].shape[0], 1)  # Gemm transB=1
    relu_quant = next(n for n in quants if n.input[0] == "relu0")
    assert helper.get_attribute_value(relu_quant.attribute[0]) == 0  # unsigned after ReLU
    gemms = [n for n in q.graph.node if n.op_type == "Gemm"]
    assert all(inits[g.input[2]].dtype == np.float32 for g in gemms)
    per_tensor = quantize_model(model, "int4", "int4", calib, per_channel=False)
    scales = [numpy_helper.to_array(t) for t in per_tensor.graph.initializer
              if t.name.endswith("_scale")]
    assert all(s.size == 1 for s in scales)


def test_bias_correction_removes_the_mean_shift():
    """With coarse weights and fine activations, the corrected biases cancel the mean error
    the weight quantization adds to every output."""
    model = float_mlp(4, sizes=(32, 32, 16))
    rng = np.random.default_rng(2)
    calib = (rng.normal(size=(256, 32)) + 1.0).astype(np.float32)
    ref = np.concatenate([run_float(model, calib[i:i + 1]) for i in range(len(calib))])

    def mean_error(bias_correction: bool) -> float:
        q = quantize_model(model, "int3", "int8", calib, bias_correction=bias_correction)
        return float(np.abs((bitloom.load(q).run(calib) - ref).mean(axis=0)).mean())

    assert mean_error(True) < 0.5 * mean_error(False)


def _branchy_model() -> onnx.ModelProto:
    """Conv -> BN -> Relu, a residual Add, a Concat of two branches, AveragePool, a
    BatchNorm on the input, a Conv without bias and a MatMul without bias."""
    rng = np.random.default_rng(3)
    inits, nodes = [], []

    def const(name: str, value: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(np.asarray(value, np.float32), name))
        return name

    def node(op: str, ins: list[str], out: str, **kw) -> str:
        nodes.append(helper.make_node(op, ins, [out], name=f"n_{out}", **kw))
        return out

    def bn(x: str, c: int, out: str) -> str:
        return node("BatchNormalization", [x, const(f"{out}_g", rng.uniform(0.5, 2, c)),
                                           const(f"{out}_b", rng.normal(size=c)),
                                           const(f"{out}_m", rng.normal(size=c)),
                                           const(f"{out}_v", rng.uniform(0.5, 2, c))], out)

    x = bn("x", 2, "bn_in")
    a = node("Conv", [x, const("w1", rng.normal(size=(4, 2, 3, 3)) / 4), const("b1", rng.normal(
        size=4) * 0.1)], "c1", pads=[1, 1, 1, 1])
    a = node("Relu", [bn(a, 4, "bn1")], "r1")
    b = node("Conv", [a, const("w2", rng.normal(size=(4, 4, 3, 3)) / 6)], "c2", pads=[1, 1, 1, 1])
    s = node("Relu", [node("Add", [b, a], "res")], "r2")
    c = node("Conv", [s, const("w3", rng.normal(size=(3, 4, 1, 1)))], "c3")
    cat = node("Concat", [node("Relu", [c], "r3"), node("MaxPool", [s], "mp", kernel_shape=[1, 1])],
               "cat", axis=1)
    p = node("AveragePool", [cat], "ap", kernel_shape=[2, 2], strides=[2, 2])
    f = node("Flatten", [p], "flat")
    out = node("MatMul", [f, const("w4", rng.normal(size=(7 * 3 * 3, 5)) / 4)], "logits")
    graph = helper.make_graph(
        nodes, "branchy", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 2, 6, 6])],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, ["n", 5])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_batchnorm_folding_keeps_the_float_function():
    model = _branchy_model()
    g = FloatGraph(model, "branchy")
    g.fold_batchnorm()
    ops = [n.op_type for n in g.model.graph.node]
    assert "BatchNormalization" not in ops and ops.count("Mul") == 1  # the input BN stays
    x = np.random.default_rng(0).normal(size=(8, 2, 6, 6)).astype(np.float32)
    np.testing.assert_allclose(run_float(g.model, x), run_float(model, x), rtol=1e-4,
                               atol=1e-4)


def test_branches_add_concat_and_pooling():
    model = _branchy_model()
    rng = np.random.default_rng(1)
    calib, x = (rng.normal(size=(n, 2, 6, 6)).astype(np.float32) for n in (64, 32))
    q = quantize_model(model, "int8", "int8", calib)
    quant_of = {n.input[0]: n for n in q.graph.node if n.op_type == "Quant"}
    inits = {t.name: numpy_helper.to_array(t) for t in q.graph.initializer}
    assert "res" not in quant_of  # the ReLU after the Add re-quantizes it
    # both Concat branches (ReLU r3, MaxPool of r2) share one scale
    assert inits[quant_of["r3"].input[1]] == inits[quant_of["r2"].input[1]]
    assert "ap" in quant_of  # the average is re-quantized before the Flatten and MatMul
    assert "c2" in quant_of  # both inputs of the Add are quantized
    assert "b1" not in inits  # BN folded into c1 gave it a new bias
    want, got = run_float(model, x), run_qonnx_batch(q, x)
    assert np.abs(got - want).max() < 0.05 * np.abs(want).max()


def test_concat_of_flattened_branches_shares_one_scale():
    """Each branch is quantized before its Flatten, and both quantizers share a scale."""
    rng = np.random.default_rng(5)
    inits = [numpy_helper.from_array(rng.normal(size=s).astype(np.float32), n) for n, s in
             (("w1", (2, 1, 3, 3)), ("w2", (3, 1, 3, 3)), ("fc", (5 * 16, 4)))]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1"),
             helper.make_node("Conv", ["x", "w2"], ["c2"], name="conv2"),
             helper.make_node("Flatten", ["c1"], ["f1"], name="flat1"),
             helper.make_node("Flatten", ["c2"], ["f2"], name="flat2"),
             helper.make_node("Concat", ["f1", "f2"], ["cat"], name="cat", axis=1),
             helper.make_node("MatMul", ["cat", "fc"], ["y"], name="mm")]
    graph = helper.make_graph(
        nodes, "cat", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 1, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    x = rng.normal(size=(32, 1, 6, 6)).astype(np.float32)
    q = quantize_model(model, "int8", "int8", x)
    quant_of = {n.input[0]: n for n in q.graph.node if n.op_type == "Quant"}
    scales = {t.name: numpy_helper.to_array(t) for t in q.graph.initializer}
    assert {"c1", "c2"} <= set(quant_of) and not {"f1", "f2", "cat"} & set(quant_of)
    assert scales[quant_of["c1"].input[1]] == scales[quant_of["c2"].input[1]]
    want = run_float(model, x)
    assert np.abs(run_qonnx_batch(q, x) - want).max() < 0.03 * np.abs(want).max()


@pytest.mark.parametrize("keepdims", [0, 1])
def test_spatial_reduce_mean_becomes_global_average_pool(keepdims):
    """torch's dynamo exporter writes AdaptiveAvgPool2d(1) as ReduceMean over H, W."""
    rng = np.random.default_rng(4)
    w = numpy_helper.from_array(rng.normal(size=(6, 3, 3, 3)).astype(np.float32), "w")
    fc = numpy_helper.from_array(rng.normal(size=(6, 4)).astype(np.float32), "fc")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("ReduceMean", ["r"], ["m"], name="mean", axes=[-2, -1],
                              keepdims=keepdims)]
    if keepdims:
        nodes.append(helper.make_node("Flatten", ["m"], ["f"], name="flat"))
    nodes.append(helper.make_node("MatMul", ["f" if keepdims else "m", "fc"], ["y"], name="mm"))
    graph = helper.make_graph(
        nodes, "gap", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])], [w, fc])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    x = rng.normal(size=(32, 3, 6, 6)).astype(np.float32)
    q = quantize_model(model, "int8", "int8", x)
    ops = [n.op_type for n in q.graph.node]
    assert "ReduceMean" not in ops and "GlobalAveragePool" in ops
    want = run_float(model, x)
    assert np.abs(run_qonnx_batch(q, x) - want).max() < 0.03 * np.abs(want).max()


def test_softmax_head_stays_float():
    model = float_mlp(0)
    model.graph.node.append(helper.make_node("Softmax", ["fc1"], ["probs"], name="head"))
    model.graph.output[0].name = "probs"
    calib = np.random.default_rng(0).normal(size=(8, 16)).astype(np.float32)
    q = quantize_model(model, "int8", "int8", calib)
    assert q.graph.node[-1].op_type == "Softmax" and q.graph.node[-1].input[0] == "fc1"
    np.testing.assert_allclose(run_qonnx_batch(q, calib).sum(axis=1), 1, rtol=1e-5)


def test_unsupported_op_names_the_node():
    model = float_mlp(0)
    model.graph.node.insert(1, helper.make_node("Sigmoid", ["fc0"], ["sig"], name="squash"))
    model.graph.node[2].input[0] = "sig"
    with pytest.raises(BitloomError, match=r"squash.*Sigmoid"):
        quantize_model(model, "int8", "int8", np.zeros((4, 16), np.float32))


@pytest.mark.parametrize("calib, match", [
    (np.zeros((4, 15), np.float32), r"shape \(4, 15\).*\(N, 16\)"),
    (np.zeros((4, 2, 8), np.float32), r"shape \(4, 2, 8\)"),
    (np.zeros((0, 16), np.float32), "0 calibration samples"),
    (np.full((2, 16), np.nan, np.float32), "NaN"),
])
def test_bad_calibration_data(calib, match):
    model = float_mlp(0)  # its input has a fixed batch of 1
    with pytest.raises(BitloomError, match=match):
        quantize_model(model, "int8", "int8", calib)


@pytest.mark.parametrize("kwargs, match", [
    ({"weights": "int9x"}, "unknown format"),
    ({"weights": "mxfp4"}, "mxfp4 cannot be used for weights"),
    ({"acts": "ue4m3"}, "cannot be used for activations"),
    ({"method": "kl"}, "unknown calibration method"),
])
def test_bad_options(kwargs, match):
    args = {"weights": "int8", "acts": "int8", "method": "minmax", **kwargs}
    with pytest.raises(BitloomError, match=match):
        quantize_model(float_mlp(0), args["weights"], args["acts"],
                       np.zeros((4, 16), np.float32), method=args["method"])


def test_cli_command_writes_model_and_reports_accuracy(tmp_path, capsys):
    model = float_mlp(5, sizes=(16, 12, 4))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 16)).astype(np.float32)
    # labels: the float model's own answers
    y = np.concatenate([run_float(model, x[i:i + 1]).argmax(1) for i in range(len(x))])
    onnx.save(model, tmp_path / "f.onnx")
    np.savez(tmp_path / "d.npz", x=x, y=y)
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args([str(tmp_path / "f.onnx"), "--format", "int8", "--calib",
                              str(tmp_path / "d.npz"), "-o", str(tmp_path / "q.onnx"),
                              "--method", "percentile"])
    assert command(args) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "float 100.00%" in out and "bitloom golden" in out and "uint8" in out
    assert bitloom.load(tmp_path / "q.onnx").run(x).shape == (64, 4)
    args = parser.parse_args([str(tmp_path / "f.onnx"), "--weights", "int8", "--calib",
                              str(tmp_path / "d.npz"), "-o", str(tmp_path / "q.onnx")])
    with pytest.raises(BitloomError, match="--acts"):
        command(args)
    args = parser.parse_args([str(tmp_path / "f.onnx"), "--format", "int8", "--calib",
                              str(tmp_path / "missing.npz"), "-o", str(tmp_path / "q.onnx")])
    with pytest.raises(BitloomError, match=r"missing\.npz"):
        command(args)


def test_quantize_report_lists_layers_and_groups():
    model = float_mlp(6, sizes=(16, 12, 8))
    r = quantize(model, "e3m2", "e3m2", np.ones((8, 16), np.float32), method="mse")
    assert [w.op for w in r.weights] == ["Gemm", "Gemm"]
    assert all(w.fmt == "float6_e3m2fn" and w.bias_shift is not None for w in r.weights)
    assert [a.tensors for a in r.acts] == [["input"], ["relu0"]]
