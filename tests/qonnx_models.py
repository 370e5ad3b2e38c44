"""Small QONNX models built in the tests, so every frontend feature meets qonnx's executor.

With power-of-two scales and biases on a coarse grid, every float32 operation in the ONNX
model is exact, so qonnx's executor must agree with bitloom's golden model bit for bit,
ties (which such grids produce often) included.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

QONNX = "qonnx.custom_op.general"


@dataclass
class Builder:
    nodes: list = field(default_factory=list)
    inits: list = field(default_factory=list)
    count: int = 0

    def name(self, base: str) -> str:
        self.count += 1
        return f"{base}{self.count}"

    def const(self, value, base: str = "c") -> str:
        n = self.name(base)
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=np.float32), n))
        return n

    def node(self, op: str, inputs: list[str], domain: str = "", **attrs) -> str:
        out = self.name(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [out], name=self.name(f"n_{op}"),
                                           domain=domain, **attrs))
        return out

    def quant(self, x: str, scale, bits: int, signed: bool, narrow: bool = False,
              rounding: str = "ROUND", zero_point: float = 0.0, domain: str = QONNX) -> str:
        return self.node("Quant", [x, self.const(scale), self.const(zero_point),
                                   self.const(bits)], domain=domain, signed=int(signed),
                         narrow=int(narrow), rounding_mode=rounding)

    def float_quant(self, x: str, scale, exp_bits: int, man_bits: int, bias: int | None = None,
                    max_val: float | None = None, rounding: str = "ROUND") -> str:
        bias = 2 ** (exp_bits - 1) - 1 if bias is None else bias
        if max_val is None:  # every code a number (QONNX's default)
            max_val = (2 - 2.0 ** -man_bits) * 2.0 ** (2 ** exp_bits - 1 - bias)
        return self.node("FloatQuant", [x, self.const(scale), self.const(exp_bits),
                                        self.const(man_bits), self.const(bias),
                                        self.const(max_val)],
                         domain=QONNX, rounding_mode=rounding, has_inf=0, has_nan=0,
                         has_subnormal=1, saturation=1)

    def model(self, inp: str, shape: list[int], out: str, out_shape: list[int],
              qonnx_opset: int = 1):
        graph = helper.make_graph(
            self.nodes, "test",
            [helper.make_tensor_value_info(inp, TensorProto.FLOAT, shape)],
            [helper.make_tensor_value_info(out, TensorProto.FLOAT, out_shape)],
            self.inits)
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13),
                                                       helper.make_opsetid(QONNX, qonnx_opset)])


def random_mlp(seed: int, sizes=(16, 12, 8), in_bits=4, in_signed=False, w_bits=4,
               act_bits=4, act_signed=False, rounding="ROUND", narrow=False,
               bipolar_weights=False, negative_scales=False, clip=False, gemm=False,
               in_zero_point=0.0) -> onnx.ModelProto:
    """An MLP with power-of-two scales: exactly representable arithmetic throughout."""
    rng = np.random.default_rng(seed)
    b = Builder()
    x = b.quant("inp", 2.0 ** -3, in_bits, in_signed, rounding=rounding,
                zero_point=in_zero_point)
    for i, (k, n) in enumerate(itertools.pairwise(sizes)):
        last = i == len(sizes) - 2
        w = rng.normal(size=(k, n)).astype(np.float32)
        if bipolar_weights:
            wq = b.node("BipolarQuant", [b.const(w), b.const(2.0 ** -2)], domain=QONNX)
        else:
            wscale = 2.0 ** -int(rng.integers(1, 3))
            wq = b.quant(b.const(w * 2), wscale, w_bits, True, narrow=narrow)
        bias = rng.integers(-16, 16, size=n).astype(np.float32) / 16
        if gemm:
            y = b.node("Gemm", [x, b.node("Transpose", [wq], perm=[1, 0]), b.const(bias)],
                       transB=1)
        else:
            y = b.node("Add", [b.node("MatMul", [x, wq]), b.const(bias)])
        if last:
            return b.model("inp", [1, sizes[0]], y, [1, n])
        if negative_scales:  # a BatchNorm-like per-channel scale, some channels negative
            y = b.node("Mul", [y, b.const(rng.choice([-0.5, 0.25, 1.0, -2.0], size=n))])
        y = b.node("Clip", [y, b.const(-1.0), b.const(3.0)]) if clip else b.node("Relu", [y])
        x = b.quant(y, 2.0 ** -int(rng.integers(0, 3)), act_bits, act_signed,
                    rounding=rounding)
    raise AssertionError("unreachable")


def run_qonnx(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    """qonnx's reference executor, frame by frame."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx
    from qonnx.transformation.infer_shapes import InferShapes

    wrapped = ModelWrapper(model).transform(InferShapes())
    inp = model.graph.input[0].name
    out = model.graph.output[0].name
    return np.concatenate([execute_onnx(wrapped, {inp: x[i:i + 1]})[out]
                           for i in range(len(x))])


def minifloat_mlp(seed: int, exp_bits: int, man_bits: int, sizes=(16, 12, 8),
                  rounding: str = "ROUND", act_max: float | None = None) -> onnx.ModelProto:
    """An MLP whose input, weights and activations are minifloats (QONNX FloatQuant) with
    power-of-two scales, so qonnx's float32 executor is exact too."""
    rng = np.random.default_rng(seed)
    b = Builder()
    x = b.float_quant("inp", 2.0 ** -2, exp_bits, man_bits, rounding=rounding)
    for i, (k, n) in enumerate(itertools.pairwise(sizes)):
        w = b.float_quant(b.const(rng.normal(size=(k, n)) * 2), 2.0 ** -1, exp_bits, man_bits,
                          rounding=rounding)
        y = b.node("Add", [b.node("MatMul", [x, w]), b.const(
            rng.integers(-8, 8, size=n).astype(np.float32) / 8)])
        if i == len(sizes) - 2:
            return b.model("inp", [1, sizes[0]], y, [1, n])
        x = b.float_quant(b.node("Relu", [y]), 2.0 ** -int(rng.integers(0, 3)), exp_bits,
                          man_bits, max_val=act_max, rounding=rounding)
    raise AssertionError("unreachable")


def random_cnn(seed: int, shape=(2, 7, 7), channels=4, kernel=3, stride=1, pads=(1, 1, 1, 1),
               dilation=1, auto_pad: str | None = None, depthwise=False, groups=1, w_bits=4,
               act_bits=4,
               pool: str = "max", residual=False, concat=False, head: str = "gap",
               host_op: str | None = None, trunc: int = 0) -> onnx.ModelProto:
    """A small CNN with power-of-two scales (so qonnx's float32 executor is exact): conv
    (geometry as given) -> ReLU -> Quant -> pool -> [residual | concat] -> head -> output.

    ``pool``: ``max`` (on the quantized map), ``max_float`` (MaxPool between ReLU and the
    quantizer), ``avg`` (AveragePool 2x2 + Quant) or ``none``; ``trunc`` = 1 or 2 quantizes
    the average with QONNX Trunc v1/v2 instead. ``head``: ``gap`` (GlobalAveragePool,
    Quant, Flatten, Gemm) or ``flatten`` (Flatten of the whole map, then MatMul).
    """
    rng = np.random.default_rng(seed)
    b = Builder()
    c_in = shape[0]

    def conv(x: str, cin: int, cout: int, k: int, **attrs) -> str:
        group = attrs.pop("group", 1)
        w = rng.normal(size=(cout, cin // group, k, k)) * 2
        wq = b.quant(b.const(w), 2.0 ** -int(rng.integers(1, 3)), w_bits, True, narrow=True)
        bias = b.const(rng.integers(-8, 8, size=cout).astype(np.float32) / 8)
        return b.node("Conv", [x, wq, bias], kernel_shape=[k, k], group=group, **attrs)

    def act(y: str, scale_exp: int, signed: bool = False) -> str:
        return b.quant(b.node("Relu", [y]), 2.0 ** -scale_exp, act_bits, signed)

    x = b.quant("inp", 2.0 ** -3, act_bits, True)
    geometry = {"strides": [stride, stride], "dilations": [dilation, dilation]}
    geometry.update({"auto_pad": auto_pad} if auto_pad else {"pads": list(pads)})
    if depthwise:
        y = conv(x, c_in, c_in, kernel, group=c_in, **geometry)
        x = act(y, 1)
        y = conv(x, c_in, channels, 1)
    else:
        y = conv(x, c_in, channels, kernel, group=groups, **geometry)
    if pool == "max_float":
        y = b.node("MaxPool", [b.node("Relu", [y])], kernel_shape=[2, 2], strides=[2, 2])
        x = b.quant(y, 2.0 ** -1, act_bits, False)
    else:
        x = act(y, 1)
    if pool == "max":
        x = b.node("MaxPool", [x], kernel_shape=[2, 2], strides=[1, 1], pads=[0, 0, 1, 1])
    elif pool == "avg":
        y = b.node("AveragePool", [x], kernel_shape=[2, 2], strides=[2, 2])
        if trunc == 2:  # Brevitas' TruncAvgPool: drop 2 bits of the 4x sum
            x = b.node("Trunc", [y, b.const(2.0 ** -3), b.const(0.0), b.const(act_bits + 2),
                                 b.const(2.0 ** -1), b.const(act_bits)], domain=QONNX,
                       rounding_mode="FLOOR", signed=0, narrow=0)
        elif trunc == 1:
            x = b.node("Trunc", [y, b.const(2.0 ** -3), b.const(0.0), b.const(act_bits + 2),
                                 b.const(act_bits)], domain=QONNX, rounding_mode="FLOOR")
        else:
            x = b.quant(y, 2.0 ** -2, act_bits, False)
    if residual:  # skip branch on another (power-of-two) scale, summed and re-quantized
        y = conv(x, channels, channels, 3, pads=[1, 1, 1, 1])
        skip = b.quant(x, 2.0 ** -2, min(act_bits + 1, 8), True)
        branch = b.quant(y, 2.0 ** -3, min(act_bits + 1, 8), True)
        x = act(b.node("Add", [branch, skip]), 1)
    if concat:  # two branches under one quantizer, concatenated along channels
        y1 = conv(x, channels, 2, 1)
        y2 = conv(x, channels, 3, 3, pads=[1, 1, 1, 1])
        shared = 2.0 ** -1
        x = b.node("Concat", [b.quant(b.node("Relu", [y]), shared, act_bits, False)
                              for y in (y1, y2)], axis=1)
        channels = 5
    classes = 5
    if head == "gap":
        y = b.node("GlobalAveragePool", [x])
        x = b.node("Flatten", [b.quant(y, 2.0 ** -3, min(act_bits + 2, 8), False)], axis=1)
        k = channels
    else:
        x = b.node("Flatten", [x], axis=1)
        k = None
    model_shape = [1, *shape]
    if k is None:  # flattened conv map (explicit pads; max pool keeps the size)
        assert auto_pad is None and pool in ("none", "max") and not depthwise
        h, w_ = ((size + pads[i] + pads[i + 2] - dilation * (kernel - 1) - 1) // stride + 1
                 for i, size in enumerate(shape[1:]))
        k = channels * h * w_
    w = b.quant(b.const(rng.normal(size=(k, classes)) * 2), 2.0 ** -2, w_bits, True,
                narrow=True)
    y = b.node("Add", [b.node("MatMul", [x, w]), b.const(
        rng.integers(-8, 8, size=classes).astype(np.float32) / 8)])
    if host_op == "Softmax":
        y = b.node("Softmax", [y], axis=-1)
    elif host_op == "ArgMax":
        y = b.node("ArgMax", [y], axis=1, keepdims=0)
    out_shape = [1] if host_op == "ArgMax" else [1, classes]
    model = b.model("inp", model_shape, y, out_shape, qonnx_opset=2 if trunc == 2 else 1)
    if host_op == "ArgMax":
        model.graph.output[0].type.tensor_type.elem_type = TensorProto.INT64
    return model
