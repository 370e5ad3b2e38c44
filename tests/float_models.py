"""Float ONNX models and onnxruntime's post-training quantizer, for the Q/DQ frontend tests."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def float_mlp(seed: int, sizes=(16, 12, 8), gemm: bool = True) -> onnx.ModelProto:
    """A float MLP (Gemm or MatMul+Add, ReLU between layers), weights ~ N(0, 1/sqrt(K))."""
    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    x = "input"
    for i, (k, n) in enumerate(itertools.pairwise(sizes)):
        w = (rng.normal(size=(k, n)) / np.sqrt(k)).astype(np.float32)
        b = (rng.normal(size=n) * 0.1).astype(np.float32)
        inits += [numpy_helper.from_array(w.T if gemm else w, f"w{i}"),
                  numpy_helper.from_array(b, f"b{i}")]
        y = f"fc{i}"
        if gemm:
            nodes.append(helper.make_node("Gemm", [x, f"w{i}", f"b{i}"], [y], name=f"gemm{i}",
                                          transB=1))
        else:
            nodes.append(helper.make_node("MatMul", [x, f"w{i}"], [f"mm{i}"], name=f"mm{i}"))
            nodes.append(helper.make_node("Add", [f"mm{i}", f"b{i}"], [y], name=f"add{i}"))
        if i < len(sizes) - 2:
            nodes.append(helper.make_node("Relu", [y], [f"relu{i}"], name=f"relu{i}"))
            y = f"relu{i}"
        x = y
    graph = helper.make_graph(
        nodes, "mlp", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, sizes[0]])],
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, [1, sizes[-1]])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def ort_quantize(model: onnx.ModelProto, calib: np.ndarray, path: Path, fmt: str = "QDQ",
                 per_channel: bool = False, activation: str = "QUInt8",
                 weight: str = "QInt8", reduce_range: bool = False) -> Path:
    """onnxruntime.quantization.quantize_static on ``model`` with ``calib`` samples."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter([{"input": calib[i:i + 1]} for i in range(len(calib))])

        def get_next(self):
            return next(self.items, None)

    src = path.with_suffix(".float.onnx")
    onnx.save(model, str(src))
    quantize_static(str(src), str(path), Reader(), quant_format=getattr(QuantFormat, fmt),
                    per_channel=per_channel, activation_type=getattr(QuantType, activation),
                    weight_type=getattr(QuantType, weight), reduce_range=reduce_range)
    return path


def run_ort(path: Path, x: np.ndarray, fused: bool = False) -> np.ndarray:
    """onnxruntime, frame by frame. Unfused by default: its fused u8s8 integer kernels may
    saturate 16-bit intermediates on CPUs without VNNI, which is not the model's meaning."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if not fused:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return np.concatenate([sess.run(None, {name: x[i:i + 1]})[0] for i in range(len(x))])
