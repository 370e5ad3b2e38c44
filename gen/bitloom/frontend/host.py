"""Float ops at the graph output that the host computes: Softmax, LogSoftmax, ArgMax,
ArgMin, TopK, onnxruntime's QLinearSoftmax, and a QuantizeLinear/DequantizeLinear, Reshape,
Flatten or Transpose after them.

They follow the last layer, so the accelerator returns that layer's output and the host
applies them in float32 as ONNX does (:class:`~bitloom.ir.HostOp`); only other host-side
ops (and a Transpose or reshape) may come after them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from bitloom.formats import Int
from bitloom.frontend.context import ImportContext
from bitloom.frontend.qdq import node_params, quant_params
from bitloom.frontend.registry import ONNX, QDQ, handles
from bitloom.frontend.values import (
    Derived,
    HostResult,
    Stream,
    Value,
    attributes,
    channel_last,
)
from bitloom.ir import Chain, HostOp


@dataclass
class HostQuantize(HostOp):
    """ONNX QuantizeLinear (round half to even of ``x / scale`` in float32, plus the zero
    point, saturated to ``[lo, hi]``) or DequantizeLinear (``(q - zero_point) * scale``)
    that the host applies after a host-side op; codes are returned as float32 values."""

    scale: float = 1.0
    zero_point: int = 0
    lo: int = 0
    hi: int = 255

    def apply(self, y: np.ndarray) -> np.ndarray:
        y = np.asarray(y, dtype=np.float32)
        s = np.float32(self.scale)
        if self.op_type == "QuantizeLinear":
            q = np.rint(y / s).astype(np.float64) + self.zero_point
            return np.clip(q, self.lo, self.hi).astype(np.float32)
        return ((y.astype(np.float64) - self.zero_point).astype(np.float32) * s).astype(
            np.float32)

    def describe(self) -> str:
        return f"{self.op_type}(scale={self.scale:g}, zero_point={self.zero_point})"


def host_shape(base: Stream | Derived, ops: list[HostOp]) -> list[int]:
    """The shape (batch axis 1) of ``base`` after the host-side ``ops``."""
    shape = [1, *base.shape]
    for op in ops:
        if (op.op_type in ("ArgMax", "ArgMin") and op.keepdims) or op.op_type == "TopK":
            shape[op.axis] = op.k if op.op_type == "TopK" else 1
        elif op.op_type in ("ArgMax", "ArgMin"):
            del shape[op.axis]
        elif op.op_type == "Transpose":
            shape = [shape[a] for a in op.perm]
        elif op.op_type == "Reshape":
            shape = [1, *op.shape]
    return shape


@handles(ONNX, "Softmax", "LogSoftmax", "ArgMax", "ArgMin", "TopK", layout="aware",
         reads_host=True)
def host_op(ctx: ImportContext, node: onnx.NodeProto, ins: list[Value | None]) -> HostResult:
    """Softmax/ArgMax after the last layer: computed by the host in float32."""
    x, attrs, op = ins[0], attributes(node), node.op_type
    if isinstance(x, HostResult):
        base, ops = x.base, list(x.ops)
    elif isinstance(x, (Stream, Derived)) and x.producer >= 0:
        base, ops = x, []
    else:
        raise ctx.fail(node, f"{op} is supported only at the graph output, after the "
                       "last layer.")
    if op in ("Softmax", "LogSoftmax"):
        ops.append(HostOp(op, int(attrs.get("axis", -1 if ctx.opset >= 13 else 1))))
    elif op == "TopK":
        return _top_k(ctx, node, base, ops)
    else:
        if attrs.get("select_last_index", 0):
            raise ctx.fail(node, "select_last_index=1 is not supported.")
        ops.append(HostOp(op, int(attrs.get("axis", 0)), bool(attrs.get("keepdims", 1))))
    return HostResult(base, ops)


def checked_host_shape(ctx: ImportContext, node: onnx.NodeProto, base: Stream | Derived,
                       ops: list[HostOp]) -> list[int]:
    """:func:`host_shape`, with an axis out of range blamed on ``node``."""
    try:
        return host_shape(base, ops)
    except IndexError:
        raise ctx.fail(node, "an op before it on the host has an axis out of range."
                       ) from None


def _top_k(ctx: ImportContext, node: onnx.NodeProto, base: Stream | Derived,
           ops: list[HostOp]) -> HostResult:
    """TopK on the host: values (output 0) and indices (output 1) as onnxruntime gives
    them, equal values in ascending index order."""
    attrs = attributes(node)
    shape = checked_host_shape(ctx, node, base, ops)
    rank, axis = len(shape), int(attrs.get("axis", -1))
    if not -rank <= axis < rank or axis % rank == 0:
        raise ctx.fail(node, f"TopK along axis {axis} of a rank-{rank} tensor: only a "
                       "per-sample axis is supported.")
    if len(node.input) > 1 and node.input[1]:
        k = ctx.const_int(node, ctx.values.get(node.input[1]), "K", 1, 2**31)
    else:
        k = int(attrs.get("k", 0))
    if not 1 <= k <= shape[axis]:
        raise ctx.fail(node, f"K={k} is not between 1 and the {shape[axis]} elements of "
                       f"axis {axis}.")
    if not attrs.get("sorted", 1) and k > 1:
        ctx.warn(node, "sorted=0 leaves the order of the K results to the runtime; "
                 "bitloom returns them sorted (onnxruntime's order differs).")
    results = [HostResult(base, [*ops, HostOp("TopK", axis, k=k,
                                              largest=bool(attrs.get("largest", 1)),
                                              output=i)]) for i in (0, 1)]
    if len(node.output) > 1 and node.output[1]:
        ctx.values[node.output[1]] = results[1]
    return results[0]


@handles(QDQ, "QuantizeLinear", "DequantizeLinear", host_result=True, layout="aware",
         reads_host=True)
def host_qdq(ctx: ImportContext, node: onnx.NodeProto, ins: list[Value | None]) -> HostResult:
    """QuantizeLinear/DequantizeLinear after a host-side op (onnxruntime quantizes the
    Softmax output): computed on the host in float32 exactly as ONNX does."""
    x = ins[0]
    p = node_params(ctx, node, ins)
    if p.scale.size != 1 or p.zero_point.size != 1:
        raise ctx.fail(node, "a host-side Q/DQ needs a per-tensor scale and zero point.")
    if not isinstance(p.fmt, Int):
        raise ctx.fail(node, f"a host-side Q/DQ to {p.fmt.name} is not supported; only "
                       "integer types.")
    step = HostQuantize(node.op_type, scale=float(p.scale.reshape(-1)[0]),
                        zero_point=int(p.zero_point.reshape(-1)[0]), lo=p.fmt.min_int,
                        hi=p.fmt.max_int)
    return HostResult(x.base, [*x.ops, step])


@handles(QDQ, "QLinearSoftmax", layout="aware", inputs=5)
def qlinear_softmax(ctx: ImportContext, node: onnx.NodeProto,
                    ins: list[Value | None]) -> HostResult:
    """onnxruntime's QLinearSoftmax (com.microsoft) after the last layer, on the host:
    ``Q(Softmax(DQ(x)))`` in float32 with its input and output scales and zero points.
    onnxruntime computes it through a table of exponentials, so the two can differ by one
    output step where the float sits at a rounding boundary."""
    x = ins[0]
    if not isinstance(x, Stream) or x.producer < 0 or x.order is not None or x.perm:
        raise ctx.fail(node, "QLinearSoftmax is supported only at the graph output, on the "
                       "last layer's quantized output.")
    if len(ins) < 5 or ins[1] is None or ins[3] is None:
        raise ctx.fail(node, "QLinearSoftmax needs X_scale and Y_scale inputs.")
    s = ctx.const_input(node, ins[1], "X_scale").astype(np.float32).reshape(-1)
    z = (ctx.const_input(node, ins[2], "X_zero_point").astype(np.int64).reshape(-1)
         if ins[2] is not None else np.zeros(1, np.int64))
    if s.size != 1 or z.size != 1:
        raise ctx.fail(node, "QLinearSoftmax needs a per-tensor input scale and zero point.")
    x = Stream(x.producer, x.fmt, s, int(z[0]), x.shape)
    n = channel_last(x.shape)[-1] if x.shape else 1
    reals = Derived(x.producer, Chain(n).then(x.reals(n)), x.shape)
    p = quant_params(ctx, node, ins[3], ins[4])
    if p.scale.size != 1 or p.zero_point.size != 1 or not isinstance(p.fmt, Int):
        raise ctx.fail(node, "QLinearSoftmax needs a per-tensor integer output scale and "
                       "zero point.")
    attrs = attributes(node)
    axis = int(attrs.get("axis", -1 if int(attrs.get("opset", 13)) >= 13 else 1))
    quantize = HostQuantize("QuantizeLinear", scale=float(p.scale.reshape(-1)[0]),
                            zero_point=int(p.zero_point.reshape(-1)[0]), lo=p.fmt.min_int,
                            hi=p.fmt.max_int)
    return HostResult(reals, [HostOp("Softmax", axis), quantize])
