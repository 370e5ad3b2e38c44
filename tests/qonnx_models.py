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

    def model(self, inp: str, shape: list[int], out: str, out_shape: list[int]):
        graph = helper.make_graph(
            self.nodes, "test",
            [helper.make_tensor_value_info(inp, TensorProto.FLOAT, shape)],
            [helper.make_tensor_value_info(out, TensorProto.FLOAT, out_shape)],
            self.inits)
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13),
                                                       helper.make_opsetid(QONNX, 1)])


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
