"""Float CNNs built with onnx.helper and their onnxruntime ``quantize_static`` versions.

The float models cover the CNN layers bitloom maps (Conv with stride/pad/groups,
BatchNormalization, Relu, MaxPool, AveragePool, GlobalAveragePool, a residual Add, Concat,
Flatten, Gemm); :func:`quantized` runs onnxruntime's post-training quantizer on them in QDQ
or QOperator form with seeded random calibration data. ``reduce_range`` is on by default:
on CPUs without VNNI onnxruntime's fused u8s8 kernels saturate 16-bit intermediates
otherwise, and the reference would no longer be what the model means.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from float_models import ort_quantize
from onnx import TensorProto, helper, numpy_helper

INPUT_SHAPES = {"cnn": (1, 8, 8), "residual": (2, 8, 8), "concat": (1, 8, 8),
                "depthwise": (4, 8, 8), "avgpool": (1, 8, 8), "concat_bn": (1, 8, 8),
                "mul": (1, 8, 8), "avgpool_real": (1, 8, 8), "residual_pool": (2, 8, 8),
                "dense_reuse": (1, 8, 8), "sigmoid": (1, 8, 8), "shuffle": (1, 8, 8),
                "pieces": (2, 8, 8), "wide": (3, 32, 32), "shuffle_bn": (1, 8, 8),
                "residual_chain": (2, 8, 8), "se": (1, 8, 8)}


class Graph:
    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list = []
        self.inits: list = []
        self.count = 0

    def name(self, base: str) -> str:
        self.count += 1
        return f"{base}{self.count}"

    def const(self, value: np.ndarray, base: str) -> str:
        n = self.name(base)
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=np.float32), n))
        return n

    def node(self, op: str, inputs: list[str], **attrs) -> str:
        out = self.name(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [out], name=self.name(f"n_{op}_"),
                                           **attrs))
        return out

    def conv(self, x: str, cin: int, cout: int, k: int, stride: int = 1, pad: int = 0,
             groups: int = 1, bn: bool = True, relu: bool = True) -> str:
        fan_in = cin // groups * k * k
        w = self.rng.normal(size=(cout, cin // groups, k, k)) / np.sqrt(fan_in)
        b = self.rng.normal(scale=0.1, size=cout)
        y = self.node("Conv", [x, self.const(w, "w"), self.const(b, "b")],
                      kernel_shape=[k, k], strides=[stride, stride], pads=[pad] * 4,
                      group=groups)
        if bn:
            y = self.batch_norm(y, cout)
        return self.node("Relu", [y]) if relu else y

    def shuffle(self, x: str, groups: int, channels: int, size: int) -> str:
        """ShuffleNet's channel shuffle: Reshape to groups, Transpose, Reshape back."""
        shapes = []
        for v in ([1, groups, channels // groups, size, size], [1, channels, size, size]):
            shapes.append(self.name("shape"))
            self.inits.append(numpy_helper.from_array(np.array(v, dtype=np.int64),
                                                      shapes[-1]))
        y = self.node("Transpose", [self.node("Reshape", [x, shapes[0]])],
                      perm=[0, 2, 1, 3, 4])
        return self.node("Reshape", [y, shapes[1]])

    def batch_norm(self, x: str, channels: int) -> str:
        return self.node("BatchNormalization", [
            x, self.const(self.rng.uniform(0.5, 1.5, channels), "gamma"),
            self.const(self.rng.normal(scale=0.2, size=channels), "beta"),
            self.const(self.rng.normal(scale=0.3, size=channels), "mean"),
            self.const(self.rng.uniform(0.5, 2.0, channels), "var")], epsilon=1e-5)

    def head(self, x: str, channels: int, classes: int = 5) -> str:
        y = self.node("Flatten", [self.node("GlobalAveragePool", [x])], axis=1)
        w = self.rng.normal(size=(classes, channels)) / np.sqrt(channels)
        return self.node("Gemm", [y, self.const(w, "fc_w"),
                                  self.const(self.rng.normal(scale=0.1, size=classes),
                                             "fc_b")], transB=1)

    def model(self, shape: tuple[int, ...], out: str, classes: int = 5) -> onnx.ModelProto:
        graph = helper.make_graph(
            self.nodes, "cnn",
            [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, *shape])],
            [helper.make_tensor_value_info(out, TensorProto.FLOAT, [1, classes])],
            self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        return onnx.shape_inference.infer_shapes(model)


def float_cnn(kind: str, seed: int = 0) -> onnx.ModelProto:
    """A float CNN of the given ``kind`` (a key of INPUT_SHAPES)."""
    g = Graph(seed)
    shape = INPUT_SHAPES[kind]
    if kind == "cnn":
        y = g.conv("input", 1, 4, 3, pad=1)
        y = g.node("MaxPool", [y], kernel_shape=[2, 2], strides=[2, 2])
        y = g.conv(y, 4, 8, 3, stride=2)
        return g.model(shape, g.head(y, 8))
    if kind == "avgpool":
        y = g.conv("input", 1, 4, 3, pad=1)
        y = g.node("AveragePool", [y], kernel_shape=[2, 2], strides=[2, 2])
        y = g.conv(y, 4, 6, 3, pad=1)
        return g.model(shape, g.head(y, 6))
    if kind == "avgpool_real":  # ShuffleNet's and Inception's: padded, real pixels counted
        y = g.conv("input", 1, 4, 3, pad=1, bn=False)
        y = g.node("AveragePool", [y], kernel_shape=[3, 3], strides=[1, 1], pads=[1] * 4,
                   count_include_pad=0)
        y = g.conv(y, 4, 6, 3, stride=2, pad=1, bn=False)
        y = g.node("AveragePool", [y], kernel_shape=[3, 3], strides=[2, 2], pads=[1] * 4)
        return g.model(shape, g.head(y, 6))  # count_include_pad=0 is ONNX's default
    if kind == "residual_pool":  # ResNet-50's tail: Sum -> Relu -> AveragePool left in float
        stem = g.conv("input", 2, 4, 3, pad=1)
        y = g.conv(stem, 4, 4, 3, pad=1)
        y = g.conv(y, 4, 4, 3, stride=1, pad=1, relu=False)
        y = g.node("Relu", [g.node("Sum", [y, stem])])
        y = g.node("Flatten", [g.node("AveragePool", [y], kernel_shape=[8, 8])], axis=1)
        w = g.rng.normal(size=(5, 4)) / 2
        return g.model(shape, g.node("Gemm", [y, g.const(w, "fc_w"),
                                              g.const(g.rng.normal(size=5), "fc_b")],
                                     transB=1))
    if kind == "residual_chain":  # ResNet's stage: the float skip runs through two Sums
        y = g.conv("input", 2, 8, 3, pad=1)
        for _ in range(2):
            branch = g.conv(g.conv(y, 8, 8, 3, pad=1), 8, 8, 3, pad=1, relu=False)
            y = g.node("Relu", [g.node("Sum", [branch, y])])
        return g.model(shape, g.head(y, 8))
    if kind == "se":  # squeeze-excitation: the map times a Sigmoid of its channel means
        y = g.conv("input", 1, 8, 3, pad=1, bn=False)
        s = g.conv(g.node("GlobalAveragePool", [y]), 8, 4, 1, bn=False)
        s = g.node("Sigmoid", [g.conv(s, 4, 8, 1, bn=False, relu=False)])
        y = g.conv(g.node("Mul", [y, s]), 8, 6, 3, pad=1, bn=False)
        return g.model(shape, g.head(y, 6))
    if kind == "dense_reuse":  # DenseNet: a tensor read by a BatchNorm, then by a later Concat
        a = g.conv("input", 1, 4, 3, pad=1, bn=False)
        b = g.node("Relu", [g.batch_norm(a, 4)])
        b = g.conv(b, 4, 3, 3, pad=1, bn=False)
        y = g.conv(g.node("Concat", [a, b], axis=1), 7, 6, 1, bn=False)
        return g.model(INPUT_SHAPES[kind], g.head(y, 6))
    if kind == "sigmoid":  # a table unit (QLinearSigmoid in QOperator form)
        y = g.node("Sigmoid", [g.conv("input", 1, 4, 3, pad=1, bn=False, relu=False)])
        y = g.conv(y, 4, 6, 3, pad=1, bn=False)
        return g.model(INPUT_SHAPES[kind], g.head(y, 6))
    if kind == "pieces":  # every float-island and table piece of the zoo CNNs, in one model
        stem = g.conv("input", 2, 8, 3, pad=1, bn=False)
        y = g.node("Relu", [g.node("Sum", [g.conv(stem, 8, 8, 3, pad=1, bn=False,
                                                 relu=False), stem])])
        y = g.node("AveragePool", [y], kernel_shape=[3, 3], pads=[1] * 4)  # island, real px
        y = g.node("Sigmoid", [g.conv(y, 8, 16, 1, bn=False, relu=False)])
        y = g.shuffle(y, 4, 16, 8)
        y = g.node("Relu", [g.batch_norm(g.node("Concat", [y, stem], axis=1), 24)])
        return g.model(INPUT_SHAPES[kind], g.head(g.conv(y, 24, 6, 3, pad=1, bn=False), 6))
    if kind == "wide":  # a map large enough for block-RAM line buffers and a deep FIFO
        stem = g.conv("input", 3, 32, 3, pad=1, bn=False)
        y = g.conv(g.conv(stem, 32, 32, 3, pad=1, bn=False), 32, 32, 3, pad=1, bn=False,
                   relu=False)
        y = g.node("Relu", [g.node("Add", [y, stem])])
        return g.model(INPUT_SHAPES[kind], g.head(y, 32))
    if kind == "shuffle_bn":  # ShuffleNet's QOperator form: BatchNorm, Relu, shuffle in float
        y = g.shuffle(g.conv("input", 1, 16, 3, pad=1), 4, 16, 8)
        y = g.conv(y, 16, 6, 3, pad=1, bn=False)
        return g.model(INPUT_SHAPES[kind], g.head(y, 6))
    if kind == "shuffle":  # ShuffleNet's channel shuffle: Reshape, Transpose, Reshape
        y = g.shuffle(g.conv("input", 1, 16, 3, pad=1, bn=False), 4, 16, 8)
        y = g.conv(y, 16, 6, 3, pad=1, bn=False)
        return g.model(INPUT_SHAPES[kind], g.head(y, 6))
    if kind == "residual":
        stem = g.conv("input", 2, 4, 3, pad=1)
        y = g.conv(stem, 4, 4, 3, pad=1)
        y = g.conv(y, 4, 4, 3, pad=1, relu=False)
        y = g.node("Relu", [g.node("Add", [y, stem])])
        return g.model(shape, g.head(y, 4))
    if kind == "concat":
        a = g.conv("input", 1, 4, 3, pad=1)
        b = g.conv("input", 1, 3, 1)
        y = g.node("Concat", [a, b], axis=1)
        y = g.node("MaxPool", [y], kernel_shape=[2, 2], strides=[2, 2])
        y = g.conv(y, 7, 6, 3, pad=1)
        return g.model(shape, g.head(y, 6))
    if kind == "concat_bn":  # DenseNet's pattern: BatchNorm and ReLU on a Concat
        a = g.conv("input", 1, 4, 3, pad=1)
        b = g.conv("input", 1, 3, 1)
        y = g.node("Concat", [a, b], axis=1)
        y = g.node("Relu", [g.batch_norm(y, 7)])
        y = g.conv(y, 7, 6, 3, pad=1, bn=False)
        return g.model(shape, g.head(y, 6))
    if kind == "mul":  # a per-channel scale, some negative (QLinearMul in QOperator form)
        y = g.conv("input", 1, 4, 3, pad=1, bn=False)
        y = g.node("Mul", [y, g.const(np.array([1.25, -0.5, 0.75, -1.5]).reshape(1, 4, 1, 1),
                                      "k")])
        y = g.conv(y, 4, 6, 3, pad=1, bn=False)
        return g.model(shape, g.head(y, 6))
    if kind == "depthwise":
        y = g.conv("input", 4, 4, 3, pad=1, groups=4)
        y = g.conv(y, 4, 8, 1)
        return g.model(shape, g.head(y, 8))
    raise KeyError(kind)


def input_batch(kind: str, n: int = 16, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, *INPUT_SHAPES[kind])).astype(
        np.float32)


#: name -> (float model kind, format, per-channel, BatchNorm folded by ``quant_pre_process``)
VARIANTS = {f"{kind}_{fmt.lower()}_{'pc' if pc else 'pt'}": (kind, fmt, pc, False)
            for kind in INPUT_SHAPES for fmt in ("QDQ", "QOperator") for pc in (False, True)}
VARIANTS.update({f"{kind}_{fmt.lower()}_pc_folded": (kind, fmt, True, True)
                 for kind in ("cnn", "residual") for fmt in ("QDQ", "QOperator")})


def preprocessed(model: onnx.ModelProto, path: Path) -> onnx.ModelProto:
    """onnxruntime's ``quant_pre_process`` (the documented first step: its optimizer folds
    BatchNormalization into Conv)."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    src = path.with_suffix(".raw.onnx")
    onnx.save(model, str(src))
    quant_pre_process(str(src), str(path))
    return onnx.load(str(path))


def quantized(variant: str, path: Path | str, seed: int = 0, calib: int = 32) -> Path:
    """``quantize_static`` of ``variant`` (u8 activations, s8 weights, reduce_range)."""
    kind, fmt, per_channel, fold = VARIANTS[variant]
    path = Path(path)
    model = float_cnn(kind, seed)
    if fold:
        model = preprocessed(model, path.with_suffix(".pre.onnx"))
    return ort_quantize(model, input_batch(kind, calib, seed=100 + seed), path, fmt=fmt,
                        per_channel=per_channel, reduce_range=True)
