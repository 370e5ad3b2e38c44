"""onnxruntime's QOperator form: integer-in, integer-out operators.

``QGemm`` (com.microsoft) and ``QLinearMatMul`` take quantized tensors with their scales
and zero points and produce a requantized tensor (or, for QGemm without an output scale,
float); ``MatMulInteger`` produces the raw int32 accumulator that later float ops scale.
All of them become the same MatrixVector layer with a per-channel chain as Q/DQ models do;
per-column parameters of B lie along its last axis (B may be batched, rank 3). Their
scales and zero points are parsed as a Q/DQ node's are (:func:`~.qdq.quant_params`).
"""

from __future__ import annotations

from dataclasses import replace
from fractions import Fraction

import numpy as np
import onnx

from bitloom.frontend.context import ImportContext
from bitloom.frontend.elementwise import per_channel
from bitloom.frontend.joins import add_streams, concat, scale_channels
from bitloom.frontend.linear import convolution, dense
from bitloom.frontend.qdq import int_weights, quant_params, quantize_codes
from bitloom.frontend.quantize import reopen
from bitloom.frontend.registry import QDQ, handles
from bitloom.frontend.spatial import average_pool
from bitloom.frontend.values import Constant, Derived, QuantConstant, Stream, Value, attributes
from bitloom.ir import Affine, Chain
from bitloom.ir.elementwise import as_fractions


def _operand(ctx: ImportContext, node: onnx.NodeProto, x: Value | None, scale: Value | None,
             zp: Value | None, unit_scale: bool = False) -> Stream:
    """An integer activation input with the scale/zero point the op states for it."""
    if not isinstance(x, Stream):
        raise ctx.fail(node, "its input must be a quantized tensor (QuantizeLinear or "
                       "another QLinear op).")
    s = (np.ones(1, np.float32) if unit_scale else
         ctx.const_input(node, scale, "input scale").astype(np.float32).reshape(-1))
    z = (ctx.const_input(node, zp, "input zero point").astype(np.int64).reshape(-1)
         if zp is not None else np.zeros(1, dtype=np.int64))
    if s.size != 1 or z.size != 1:
        raise ctx.fail(node, "activations need a per-tensor scale and zero point.")
    return replace(x, scale=s, zero_point=int(z[0]))


def _int_weights(ctx: ImportContext, node: onnx.NodeProto, b: Value | None,
                 scale: Value | None, zp: Value | None, axis: int) -> QuantConstant:
    """Integer weights with their scale (1 where the op has none) and zero point."""
    if not isinstance(b, Constant):
        raise ctx.fail(node, "its weights must be an integer initializer.")
    unit = Constant(np.ones(1, np.float32))
    p = quant_params(ctx, node, unit if scale is None else scale, zp, b)
    return int_weights(ctx, node, b, p, axis)


def _requantized(ctx: ImportContext, node: onnx.NodeProto, x: Value, y_scale: Value | None,
                 y_zp: Value | None) -> Value:
    """``x`` quantized with the op's output scale and zero point (QuantizeLinear rules)."""
    p = quant_params(ctx, node, y_scale, y_zp)
    if p.scale.size != 1 or p.zero_point.size != 1:
        raise ctx.fail(node, "outputs need a per-tensor scale and zero point.")
    return quantize_codes(ctx, node, x, p)


def _with_int_bias(ctx: ImportContext, node: onnx.NodeProto, chain: Chain, x: Stream,
                   w: QuantConstant, bias: Value, what: str) -> Chain:
    """``chain`` plus an int32 bias in units of ``scale_x * scale_w``."""
    n = chain.channels
    values = ctx.const_input(node, bias, what).astype(np.int64).reshape(-1)
    unit = [Fraction(float(x.scale[0])) * s
            for s in as_fractions(np.asarray(w.scale, np.float32).reshape(-1), n)]
    return chain.then(Affine([Fraction(1)] * n, [
        u * int(c) for u, c in zip(unit, np.broadcast_to(values, (n,)), strict=True)]))


@handles(QDQ, "QGemm", inputs=6)
@handles(QDQ, "QLinearMatMul")
def qlinear_dense(ctx: ImportContext, node: onnx.NodeProto, ins: list[Value | None]) -> Value:
    attrs = attributes(node)
    ins = ins + [None] * (9 - len(ins))
    if attrs.get("transA", 0):
        raise ctx.fail(node, "transA=1 is not supported.")
    trans_b = bool(attrs.get("transB", 0))
    x = _operand(ctx, node, ins[0], ins[1], ins[2])
    w = _int_weights(ctx, node, ins[3], ins[4], ins[5], axis=0 if trans_b else -1)
    out = dense(ctx, node, x, w, trans_b)
    n = out.chain.channels
    if node.op_type == "QGemm":
        alpha = attrs.get("alpha", 1.0)
        chain = out.chain.then(Affine(ctx.exact(node, alpha, n, "alpha"), [Fraction(0)] * n))
        if ins[6] is not None:
            chain = _with_int_bias(ctx, node, chain, x, w, ins[6], "bias C")
        out = Derived(out.producer, chain, out.shape)
        y_scale, y_zp = ins[7], ins[8]
    else:
        y_scale, y_zp = ins[6], ins[7]
    if y_scale is None:
        return out
    return _requantized(ctx, node, out, y_scale, y_zp)


@handles(QDQ, "QLinearConv")
def qlinear_conv(ctx: ImportContext, node: onnx.NodeProto, ins: list[Value | None]) -> Value:
    ins = ins + [None] * (9 - len(ins))
    x = _operand(ctx, node, ins[0], ins[1], ins[2])
    w = _int_weights(ctx, node, ins[3], ins[4], ins[5], axis=0)
    out = convolution(ctx, node, x, w)
    if ins[8] is not None:
        out = replace(out, chain=_with_int_bias(ctx, node, out.chain, x, w, ins[8], "bias B"))
    return _requantized(ctx, node, out, ins[6], ins[7])


@handles(QDQ, "ConvInteger")
def conv_integer(ctx: ImportContext, node: onnx.NodeProto, ins: list[Value | None]) -> Derived:
    ins = ins + [None] * (4 - len(ins))
    x = _operand(ctx, node, ins[0], None, ins[2], unit_scale=True)
    return convolution(ctx, node, x, _int_weights(ctx, node, ins[1], None, ins[3], axis=0))


@handles(QDQ, "QLinearAdd")
@handles(QDQ, "QLinearMul")
def qlinear_binary(ctx: ImportContext, node: onnx.NodeProto, ins: list[Value | None]) -> Value:
    """An Add of two quantized streams (a residual), or a quantized tensor plus or times a
    quantized constant (a per-channel shift or scale, as onnxruntime writes a
    BatchNormalization it could not fold, or one the model spells as Mul and Add): the
    constant's float32 values join the chain like an Add or Mul after DequantizeLinear. A
    product of two streamed operands (squeeze-excitation) needs an element-wise multiplier,
    which is a ChannelScale layer (:func:`~.joins.scale_channels`)."""
    ins = ins + [None] * (8 - len(ins))
    op = node.op_type.removeprefix("QLinear")
    a, b = ins[0:3], ins[3:6]
    if isinstance(a[0], Constant) and isinstance(b[0], Stream):
        a, b = b, a
    if isinstance(b[0], Stream):
        join = add_streams if op == "Add" else scale_channels
        out = join(ctx, node, _operand(ctx, node, *a), _operand(ctx, node, *b))
        return _requantized(ctx, node, out, ins[6], ins[7])
    if not (isinstance(a[0], Stream) and isinstance(b[0], Constant)):
        raise ctx.fail(node, f"{node.op_type} of these operands is not supported; only two "
                       f"quantized tensors or a tensor {'plus' if op == 'Add' else 'times'} "
                       "a constant.")
    x = reopen(ctx, node, _operand(ctx, node, *a))
    scale = ctx.const_input(node, b[1], "B scale").astype(np.float32)
    zero = (ctx.const_input(node, b[2], "B zero point").astype(np.int64)
            if b[2] is not None else np.zeros(1, np.int64))
    if scale.size != 1 or zero.size != 1:
        raise ctx.fail(node, "its constant needs a per-tensor scale and zero point.")
    k = ((b[0].value.astype(np.int64) - zero.reshape(-1)[0]).astype(np.float32)
         * scale.reshape(-1)[0]).astype(np.float32)  # DequantizeLinear's float32 values
    n = x.chain.channels
    values, zero_list, one_list = per_channel(ctx, node, k, x), [Fraction(0)] * n, \
        [Fraction(1)] * n
    step = Affine(one_list, values) if op == "Add" else Affine(values, zero_list)
    return _requantized(ctx, node, x.then(step), ins[6], ins[7])


@handles(QDQ, "QLinearAveragePool", "QLinearGlobalAveragePool")
def qlinear_pool(ctx: ImportContext, node: onnx.NodeProto, ins: list[Value | None]) -> Value:
    ins = ins + [None] * (5 - len(ins))
    x = _operand(ctx, node, ins[0], ins[1], ins[2])
    return _requantized(ctx, node, average_pool(ctx, node, [x]), ins[3], ins[4])


@handles(QDQ, "QLinearConcat")
def qlinear_concat(ctx: ImportContext, node: onnx.NodeProto, ins: list[Value | None]) -> Value:
    if (len(ins) - 2) % 3 or len(ins) < 5:
        raise ctx.fail(node, "expects Y_scale, Y_zero_point, then (X, scale, zero point) "
                       "triples.")
    parts = [_operand(ctx, node, *ins[i:i + 3]) for i in range(2, len(ins), 3)]
    return _requantized(ctx, node, concat(ctx, node, parts), ins[0], ins[1])


@handles(QDQ, "MatMulInteger")
def matmul_integer(ctx: ImportContext, node: onnx.NodeProto, ins: list[Value | None]) -> Derived:
    ins = ins + [None] * (4 - len(ins))
    x = _operand(ctx, node, ins[0], None, ins[2], unit_scale=True)
    w = _int_weights(ctx, node, ins[1], None, ins[3], axis=-1)
    return dense(ctx, node, x, w, trans_b=False)
