"""Non-linear element-wise ops on a quantized tensor as table units.

An op such as Sigmoid, Tanh, HardSwish, Erf (GELU), Exp or LeakyRelu on a quantized input
with a quantized output is a finite map from input values to output values: bitloom
evaluates the function in float64 at every input value, applies the output quantizer, and
builds the table (:class:`~bitloom.ir.Lookup`). onnxruntime computes the function in
float32, so an output may differ by one step where the float64 and float32 results fall on
either side of a rounding boundary.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import onnx

from bitloom.formats import Int
from bitloom.frontend.context import ImportContext
from bitloom.frontend.registry import ONNX, QDQ, handles
from bitloom.frontend.values import Stream, Tabulated, Value, attributes, channel_last
from bitloom.ir import Lookup, Quantizer

#: widest input a table unit reads (4,096 entries a lane)
MAX_TABLE_BITS = 12

_erf = np.vectorize(math.erf, otypes=[np.float64])


def _hard_sigmoid(x: np.ndarray, alpha: float, beta: float) -> np.ndarray:
    return np.clip(alpha * x + beta, 0.0, 1.0)


def function_of(ctx: ImportContext, node: onnx.NodeProto) -> Callable[[np.ndarray], np.ndarray]:
    """The float64 function of ``node`` (the ONNX definition, attributes applied)."""
    op, attrs = node.op_type.removeprefix("QLinear"), attributes(node)
    alpha = float(attrs.get("alpha", {"LeakyRelu": 0.01, "HardSigmoid": 0.2, "Elu": 1.0}
                            .get(op, 0.0)))
    if op == "Sigmoid":
        return lambda x: 1.0 / (1.0 + np.exp(-x))
    if op == "Tanh":
        return np.tanh
    if op == "Erf":
        return _erf
    if op == "Exp":
        return np.exp
    if op == "Softplus":
        return lambda x: np.logaddexp(0.0, x)
    if op == "HardSigmoid":
        beta = float(attrs.get("beta", 0.5))
        return lambda x: _hard_sigmoid(x, alpha, beta)
    if op == "HardSwish":
        return lambda x: x * _hard_sigmoid(x, 1 / 6, 0.5)
    if op == "LeakyRelu":
        return lambda x: np.where(x >= 0, x, alpha * x)
    if op == "Elu":
        return lambda x: np.where(x >= 0, x, alpha * np.expm1(np.minimum(x, 0.0)))
    if op == "Gelu":
        if attrs.get("approximate", "none") == "tanh":
            return lambda x: 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi)
                                                    * (x + 0.044715 * x**3)))
        return lambda x: 0.5 * x * (1 + _erf(x / math.sqrt(2)))
    raise ctx.fail(node, f"{op} has no table form.")


@handles(ONNX, "Sigmoid", "Tanh", "Erf", "Exp", "Softplus", "HardSigmoid", "HardSwish",
         "LeakyRelu", "Elu", "Gelu", layout="elementwise")
def tabulated(ctx: ImportContext, node: onnx.NodeProto, ins: list[Value | None]) -> Tabulated:
    """A non-linear function of a quantized tensor, or of one already waiting for its
    table (the functions compose)."""
    x, fn = ins[0], function_of(ctx, node)
    if isinstance(x, Tabulated):
        inner = x.function
        return Tabulated(x.base, lambda v: fn(inner(v)), f"{x.name} -> {node.op_type}")
    if not isinstance(x, Stream) or x.codes:
        raise ctx.fail(node, f"{node.op_type} of an unquantized tensor has no exact integer "
                       "form; quantize its input (bitloom builds it as a table from the "
                       "input's values to the next quantizer's).")
    return Tabulated(x, fn, node.op_type)


@handles(QDQ, "QLinearSigmoid", "QLinearLeakyRelu", "QLinearSoftplus", inputs=5)
def qlinear_tabulated(ctx: ImportContext, node: onnx.NodeProto,
                      ins: list[Value | None]) -> Value:
    """onnxruntime's QLinear activations (com.microsoft): X, its scale and zero point, then
    Y's: the function between a DequantizeLinear and a QuantizeLinear."""
    from bitloom.frontend.qoperator import _operand, _requantized

    ins = ins + [None] * (5 - len(ins))
    x = _operand(ctx, node, ins[0], ins[1], ins[2])
    return _requantized(ctx, node, Tabulated(x, function_of(ctx, node), node.op_type),
                        ins[3], ins[4])


def table_layer(ctx: ImportContext, node: onnx.NodeProto, x: Tabulated,
                quantizer: Quantizer, channel_scale: np.ndarray | None) -> Stream:
    """The table unit computing ``quantizer(function(input))`` for every input value."""
    base = x.base
    grid = base.fmt.grid()
    if not isinstance(base.fmt, Int) or base.fmt.bits > MAX_TABLE_BITS:
        raise ctx.fail(node, f"{x.name} of a {base.fmt.name} tensor: a table unit reads "
                       f"integers of at most {MAX_TABLE_BITS} bits.")
    if base.scale.size != 1 or channel_scale is not None:
        raise ctx.fail(node, f"{x.name} needs a per-tensor scale on its input and on this "
                       "quantizer (one table for every channel).")
    levels = np.arange(grid.lo, grid.hi + 1, dtype=np.int64)
    reals = (levels - base.zero_point) * float(base.scale.reshape(-1)[0])
    with np.errstate(over="ignore"):
        y = np.asarray(x.function(reals.astype(np.float64)), dtype=np.float64)
    if not np.all(np.isfinite(y)):
        raise ctx.fail(node, f"{x.name} is not finite at some input value; it has no table.")
    table = np.asarray(quantizer.apply_exactly(y), dtype=np.int64)
    index = ctx.add_layer(node, Lookup(
        f"lookup{len(ctx.layers)}", (base.producer,), channel_last(base.shape),
        in_fmt=base.fmt, fmt=quantizer.fmt, table=table, function=x.name))
    return Stream(index, quantizer.fmt, np.array([quantizer.scale]), quantizer.zero_point,
                  base.shape, order=base.order)
