"""ONNX ``QuantizeLinear``/``DequantizeLinear`` (QDQ), as onnxruntime's quantizer writes it.

``QuantizeLinear`` rounds ``x / scale`` half to even, adds the zero point and saturates to
the type of the zero point (or ``output_dtype``); ``DequantizeLinear`` is
``(q - zero_point) * scale``. A Q on a layer's float output becomes that layer's thresholds;
a DQ of an integer initializer is a quantized weight (or bias) tensor, per tensor or per
axis; a DQ after a Q is the float view of the same integers. :func:`quant_params` parses
the parameters for the QOperator ops too.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from fractions import Fraction
from functools import reduce
from math import gcd, lcm

import numpy as np
import onnx
from onnx import TensorProto

from bitloom.formats import Format, Int, parse_format
from bitloom.frontend.context import ImportContext
from bitloom.frontend.quantize import quantize
from bitloom.frontend.registry import QDQ, handles, never
from bitloom.frontend.values import (
    Constant,
    Derived,
    FloatInput,
    HostResult,
    PendingConcat,
    QuantConstant,
    ShuffledDerived,
    Stream,
    Tabulated,
    Value,
    attributes,
)
from bitloom.ir import ROUND_THEN_SHIFT, InputQuantizer, Quantizer
from bitloom.ir.graph import HostDequantize
from bitloom.ir.quantizer import ElementQuantizer, float32_quotient, quantize_elements

#: blocked weights whose scales need a larger integer multiplier of their gcd are refused
MAX_BLOCK_MULTIPLIER = 2**16

#: ONNX integer element types -> formats
ONNX_INT_FORMATS = {
    TensorProto.INT8: Int(8, True), TensorProto.UINT8: Int(8, False),
    TensorProto.INT16: Int(16, True), TensorProto.UINT16: Int(16, False),
    TensorProto.INT4: Int(4, True), TensorProto.UINT4: Int(4, False),
    TensorProto.INT2: Int(2, True), TensorProto.UINT2: Int(2, False),
}
#: ONNX float element types -> formats (QuantizeLinear rounds half to even and, with the
#: default saturate=1, clips to the largest finite value)
ONNX_FLOAT_FORMATS = {
    code: parse_format(name) for code, name in (
        (TensorProto.FLOAT8E4M3FN, "float8_e4m3fn"),
        (TensorProto.FLOAT8E4M3FNUZ, "float8_e4m3fnuz"),
        (TensorProto.FLOAT8E5M2, "float8_e5m2"),
        (TensorProto.FLOAT8E5M2FNUZ, "float8_e5m2fnuz"),
        (TensorProto.FLOAT4E2M1, "float4_e2m1fn"),
        (getattr(TensorProto, "FLOAT6E3M2", -1), "float6_e3m2fn"),
        (getattr(TensorProto, "FLOAT6E2M3", -1), "float6_e2m3fn"),
    ) if code >= 0
}
NUMPY_INT_FORMATS = {"int8": Int(8, True), "uint8": Int(8, False), "int16": Int(16, True),
                     "uint16": Int(16, False), "int4": Int(4, True), "uint4": Int(4, False),
                     "int2": Int(2, True), "uint2": Int(2, False)}


@dataclass(frozen=True)
class QuantParams:
    """A quantizer's parameters as ONNX states them: per tensor, per axis or blocked."""

    scale: np.ndarray  # float32
    zero_point: np.ndarray  # int64
    fmt: Format
    axis: int


def quant_params(ctx: ImportContext, node: onnx.NodeProto, scale: Value | None,
                 zero_point: Value | None, stored: Value | None = None, *, axis: int = 1,
                 output_dtype: int = 0, saturate: int = 1) -> QuantParams:
    """Parse a scale and zero point (operands of ``node``); the quantized type comes from
    the zero point, else from ``stored`` (the codes), else from ``output_dtype``."""
    scale_v = ctx.const_input(node, scale, "scale").astype(np.float32)
    if np.any(scale_v <= 0) or not np.all(np.isfinite(scale_v)):
        raise ctx.fail(node, "its scale must be positive and finite.")
    typed = zero_point if isinstance(zero_point, Constant) else stored
    fmt = quant_format(ctx, node, typed, output_dtype, saturate)
    zero = (ctx.const_input(node, zero_point, "zero point").astype(np.int64)
            if zero_point is not None else np.zeros(1, dtype=np.int64))
    return QuantParams(scale_v, zero, fmt, axis)


def node_params(ctx: ImportContext, node: onnx.NodeProto, ins: list[Value | None],
                stored: Value | None = None) -> QuantParams:
    """The parameters of a QuantizeLinear or DequantizeLinear node."""
    attrs = attributes(node)
    return quant_params(
        ctx, node, ins[1], ins[2] if len(ins) > 2 else None, stored,
        axis=int(attrs.get("axis", 1)), output_dtype=attrs.get("output_dtype", 0),
        saturate=attrs.get("saturate", 1) if node.op_type == "QuantizeLinear" else 1)


def quant_format(ctx: ImportContext, node: onnx.NodeProto, typed: Value | None,
                 output_dtype: int, saturate: int) -> Format:
    """The quantized type: from the zero point (or stored codes), else output_dtype."""
    known = {**ONNX_INT_FORMATS, **ONNX_FLOAT_FORMATS}
    if typed is None:
        code = output_dtype or TensorProto.UINT8
        if code not in known:
            raise ctx.fail(node, f"quantized type {code} is not a type bitloom maps.")
        fmt = known[code]
    elif typed.onnx_type in known:
        fmt = known[typed.onnx_type]
    else:
        name = typed.value.dtype.name
        by_name = {**NUMPY_INT_FORMATS, "int32": Int(32, True),
                   **{f.name: f for f in ONNX_FLOAT_FORMATS.values()},
                   "float8_e4m3fn": ONNX_FLOAT_FORMATS[TensorProto.FLOAT8E4M3FN]}
        if name not in by_name:
            raise ctx.fail(node, f"quantized type {name} is not supported.")
        fmt = by_name[name]
    if not isinstance(fmt, Int) and ctx.opset < 19 and node.domain != "com.microsoft":
        ctx.warn(node, f"{fmt.name} Q/DQ needs opset 19 or newer, the model declares "
                 f"{ctx.opset}; reading it with opset 19 semantics.")
    if not isinstance(fmt, Int) and saturate == 0:
        raise ctx.fail(node, "saturate=0 turns out-of-range values into NaN/inf, which "
                       "bitloom does not carry through layers; export with saturate=1.")
    return fmt


def along_axis(ctx: ImportContext, node: onnx.NodeProto, values: np.ndarray, v: np.ndarray,
               axis: int) -> np.ndarray:
    """A per-axis parameter reshaped to broadcast against ``values``."""
    if v.size == 1:
        return v.reshape(())
    axis = axis % max(values.ndim, 1)
    if v.ndim != 1 or values.shape[axis] != v.size:
        raise ctx.fail(node, f"per-axis parameter of {v.size} values does not match axis "
                       f"{axis} of shape {values.shape}.")
    shape = [1] * values.ndim
    shape[axis] = v.size
    return v.reshape(shape)


def int_weights(ctx: ImportContext, node: onnx.NodeProto, codes: Constant, p: QuantParams,
                axis: int) -> QuantConstant:
    """Integer codes with their zero point removed: weights ``scale * (q - zero_point)``
    on a format wide enough for the difference."""
    q = codes.value.astype(np.int64)
    values = q - along_axis(ctx, node, q, p.zero_point, axis)
    wfmt = p.fmt if not p.zero_point.any() else type(p.fmt).spanning(
        p.fmt.min_int - int(p.zero_point.max()), p.fmt.max_int - int(p.zero_point.min()))
    return QuantConstant(values, along_axis(ctx, node, q, p.scale, axis), wfmt)


def _blocked(ctx: ImportContext, node: onnx.NodeProto, values: np.ndarray, v: np.ndarray,
             axis: int) -> np.ndarray:
    """A blocked (``block_size``) parameter repeated to ``values``' shape."""
    block = int(attributes(node).get("block_size", 0))
    axis = axis % max(values.ndim, 1)
    if block < 1 or v.ndim != values.ndim or v.shape[axis] != -(-values.shape[axis] //
                                                                  block) or any(
            a != b for i, (a, b) in enumerate(zip(v.shape, values.shape, strict=True))
            if i != axis):
        raise ctx.fail(node, f"block_size={block} along axis {axis}: parameter shape "
                       f"{v.shape} does not block the tensor of shape {values.shape}.")
    return np.repeat(v, block, axis=axis).take(range(values.shape[axis]), axis=axis)


def _blocked_weights(ctx: ImportContext, node: onnx.NodeProto, q: np.ndarray,
                     p: QuantParams) -> QuantConstant:
    """Blocked weights onto one integer grid, exactly: with ``unit`` the gcd of the block
    scales (as rationals), each value is ``(q - zero) * (block_scale / unit)`` units."""
    s = _blocked(ctx, node, q, p.scale, p.axis)
    z = _blocked(ctx, node, q, p.zero_point, p.axis) if p.zero_point.size > 1 else \
        p.zero_point.reshape(())
    steps = {float(v): Fraction(float(v)) for v in np.unique(s)}
    num = reduce(gcd, (f.numerator for f in steps.values()))
    den = reduce(lcm, (f.denominator for f in steps.values()))
    unit = Fraction(num, den)
    factors = {v: f / unit for v, f in steps.items()}
    biggest = max(factors.values())
    if biggest > MAX_BLOCK_MULTIPLIER:
        raise ctx.fail(node, f"blocked scales {sorted(steps)[:4]}... need integer "
                       f"multipliers up to {float(biggest):.3g} of their common unit "
                       f"{float(unit):.3g} (limit 2**16); use power-of-two or "
                       "per-channel scales.")
    mult = np.vectorize(lambda v: int(factors[float(v)]), otypes=[np.int64])(s)
    values = (q.astype(np.int64) - z.astype(np.int64)) * mult
    if float(unit) == 0 or not np.isfinite(float(unit)):
        raise ctx.fail(node, "the blocked scales have no representable common unit.")
    return QuantConstant(values, np.array(float(unit), dtype=np.float64),
                         Int.spanning(int(values.min(initial=0)),
                                      int(values.max(initial=0))))


def _element_params(ctx: ImportContext, node: onnx.NodeProto, shape: tuple[int, ...],
                    p: QuantParams, blocked: bool) -> tuple[np.ndarray, np.ndarray]:
    """Per-axis or blocked scale and zero point laid out to broadcast against a tensor
    of ``shape``."""
    like = np.broadcast_to(np.int8(0), shape)  # only its shape is read: no memory
    if not blocked:
        return (along_axis(ctx, node, like, p.scale, p.axis),
                along_axis(ctx, node, like, p.zero_point, p.axis))
    return (_blocked(ctx, node, like, p.scale, p.axis),
            _blocked(ctx, node, like, p.zero_point, p.axis) if p.zero_point.size > 1
            else p.zero_point.reshape(()))


def _batched(ctx: ImportContext, node: onnx.NodeProto, name: str, shape: tuple[int, ...],
             p: QuantParams, blocked: bool) -> tuple[int, ...]:
    """The ONNX shape of the whole batched tensor of per-sample ``shape``: axis 0 is the
    graph input's declared static batch (1 when it is symbolic, which parameters varying
    along axis 0 cannot be). Per-axis or blocked parameters of the model input may index
    it; the host then needs exactly that batch."""
    batch = ctx.declared_batch()
    if batch is not None:
        return (batch, *shape)
    rank = len(shape) + 1
    along_batch = any(np.ndim(v) == rank and v.shape[0] > 1 for v in (p.scale, p.zero_point)) \
        if blocked else p.axis % rank == 0 and max(p.scale.size, p.zero_point.size) > 1
    if along_batch:
        raise ctx.fail(node, f"its parameters vary along axis 0, the batch axis, which "
                       f"input {name!r} leaves symbolic; export the model with a fixed "
                       "batch size.")
    return (1, *shape)


@handles(QDQ, "QuantizeLinear", layout="per_tensor", folds=never)
def quantize_linear(ctx: ImportContext, node: onnx.NodeProto, ins: list[Value | None]) -> Value:
    p = node_params(ctx, node, ins)
    x = ins[0]
    blocked = bool(attributes(node).get("block_size", 0))
    if isinstance(x, Constant):  # float weights quantized in the graph
        w = x.value.astype(np.float32)
        s, z = _element_params(ctx, node, w.shape, p, blocked)
        codes = quantize_elements(float32_quotient(w, s), p.fmt, np.ones_like(s), z)
        return Constant(codes, next((k for k, f in ONNX_INT_FORMATS.items() if f == p.fmt),
                                    None), fmt=p.fmt)
    if blocked or p.scale.size != 1 or p.zero_point.size != 1:
        return _quantized_input(ctx, node, x, p, blocked)
    if not isinstance(x, (FloatInput, Derived, Stream, PendingConcat, Tabulated,
                          ShuffledDerived)):
        raise ctx.fail(node, "QuantizeLinear of this tensor is not supported.")
    return quantize_codes(ctx, node, x, p)


def quantize_codes(ctx: ImportContext, node: onnx.NodeProto, x: Value,
                   p: QuantParams) -> Value:
    """``x`` quantized per tensor as QuantizeLinear does; a stream result holds codes."""
    quantizer = Quantizer(p.fmt, float(p.scale.reshape(-1)[0]),
                          int(p.zero_point.reshape(-1)[0]), "round", ROUND_THEN_SHIFT)
    out = quantize(ctx, node, x, quantizer)
    return replace(out, codes=True) if isinstance(out, Stream) else out


def _quantized_input(ctx: ImportContext, node: onnx.NodeProto, x: Value, p: QuantParams,
                     blocked: bool) -> Stream:
    """Per-axis or blocked QuantizeLinear of the model input: the host quantizes the whole
    batched tensor with ONNX's per-element parameters (any axis, the batch axis too);
    the hardware only sees codes of the one format ``fmt``. Layers read per-tensor
    quantized tensors, so these codes may only reach the graph output (see
    :meth:`ImportContext.add_layer`)."""
    what = (f"blocked (axis {p.axis}, block_size {attributes(node)['block_size']})"
            if blocked else
            f"per-axis (axis {p.axis}, {max(p.scale.size, p.zero_point.size)} scales)")
    if not isinstance(x, FloatInput):
        raise ctx.fail(node, f"{what} quantization of an activation is supported only "
                       "of the model input (the host quantizes it); a layer output is "
                       "requantized with one scale and zero point per tensor.")
    if ctx.input_quant is not None:
        raise ctx.fail(node, "the model input is quantized twice.")
    batched = _batched(ctx, node, x.name, x.flat_shape, p, blocked)
    s, z = _element_params(ctx, node, batched, p, blocked)
    ctx.input_quant = InputQuantizer(x.name, x.shape, x.flat_shape,
                                     ElementQuantizer(p.fmt, s, z), x.perm, x.steps)
    # the codes themselves, as integer graph inputs are (scale 1, zero point 0) until an
    # op states their scale: a DequantizeLinear, which the host then computes
    return Stream(-1, p.fmt, np.ones(1), 0, x.flat_shape)


@handles(QDQ, "DequantizeLinear", layout="per_tensor", folds=never)
def dequantize_linear(ctx: ImportContext, node: onnx.NodeProto,
                      ins: list[Value | None]) -> Value:
    x = ins[0]
    p = node_params(ctx, node, ins, x if isinstance(x, Constant) else None)
    blocked = bool(attributes(node).get("block_size", 0))
    if isinstance(x, Constant) and blocked:
        if not isinstance(p.fmt if x.fmt is None else x.fmt, Int):
            raise ctx.fail(node, "blocked quantization is supported for integer weights.")
        return _blocked_weights(ctx, node, x.value, p)
    if isinstance(x, Constant):
        return _dequantized_weights(ctx, node, x, p)
    if isinstance(x, Stream):
        if not blocked and p.scale.size == 1 and p.zero_point.size == 1:
            return replace(x, scale=p.scale.reshape(-1),
                           zero_point=int(p.zero_point.reshape(-1)[0]), codes=False)
        what = "blocked" if blocked else f"per-axis (axis {p.axis})"
        if x.producer == -1 and not ctx.layers:
            return _dequantized_input(ctx, node, x, p, blocked)
        raise ctx.fail(node, f"{what} DequantizeLinear of an activation is supported "
                       "only of the model input at the graph output (the host computes "
                       "it); layers read per-tensor quantized tensors.")
    raise ctx.fail(node, "DequantizeLinear needs a QuantizeLinear or an integer "
                   "initializer as its input.")


def _dequantized_weights(ctx: ImportContext, node: onnx.NodeProto, x: Constant,
                         p: QuantParams) -> QuantConstant:
    """A DequantizeLinear of integer (or float8/float4) codes: quantized weights."""
    fmt = p.fmt if x.fmt is None else x.fmt
    if not isinstance(fmt, Int):  # float8/float4 weights: grid integers, no zero point
        q = x.value if x.value.dtype.kind == "i" else fmt.to_grid(x.value.astype(np.float64))
        return QuantConstant(q.astype(np.int64), along_axis(ctx, node, q, p.scale, p.axis),
                             fmt)
    if x.code_range is not None:  # QCDQ: a Clip narrowed the codes
        code_lo, code_hi = x.code_range
        fmt = Int.spanning(code_lo, code_hi)
        if not p.zero_point.any() and code_lo == -code_hi and code_lo < 0:
            fmt = Int(fmt.bits, True, narrow=True)
    return int_weights(ctx, node, x, replace(p, fmt=fmt), p.axis)


def _dequantized_input(ctx: ImportContext, node: onnx.NodeProto, x: Stream, p: QuantParams,
                       blocked: bool) -> HostResult:
    """Per-axis or blocked DequantizeLinear of the model input's codes: the host computes
    it on the batched ONNX tensor at the graph output, after the codes come back, so only
    host-side ops may follow it."""
    batched = _batched(ctx, node, ctx.input_quant.name, x.shape, p, blocked)
    s, z = _element_params(ctx, node, batched, p, blocked)
    codes = replace(x, scale=np.ones(1), zero_point=0)
    return HostResult(codes, [HostDequantize("DequantizeLinear", scale=s,
                                             zero_point=z.astype(np.int64))])
