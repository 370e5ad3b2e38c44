"""ONNX ``QuantizeLinear``/``DequantizeLinear`` (QDQ), as onnxruntime's quantizer writes it.

``QuantizeLinear`` rounds ``x / scale`` half to even, adds the zero point and saturates to
the type of the zero point (or ``output_dtype``); ``DequantizeLinear`` is
``(q - zero_point) * scale``. A Q on a layer's float output becomes that layer's thresholds;
a DQ of an integer initializer is a quantized weight (or bias) tensor, per tensor or per
axis; a DQ after a Q is the float view of the same integers.
"""

from __future__ import annotations

from dataclasses import replace
from fractions import Fraction
from functools import reduce
from math import gcd, lcm
from typing import ClassVar

import numpy as np
from onnx import TensorProto

from bitloom.formats import Format, Int, parse_format
from bitloom.frontend.importer import (
    Constant,
    Derived,
    FloatInput,
    HostResult,
    PendingConcat,
    QuantConstant,
    Stream,
    Value,
    attributes,
)
from bitloom.ir import ROUND_THEN_SHIFT, InputQuantizer, Quantizer
from bitloom.ir.graph import HostDequantize
from bitloom.ir.quantizer import ElementQuantizer, quantize_elements

#: blocked weights whose scales need a larger integer multiplier of their gcd are refused
MAX_BLOCK_MULTIPLIER = 2**16
QDQ_DOMAINS = frozenset({"", "ai.onnx", "com.microsoft"})

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


class QdqOps:
    """Handlers for ONNX Q/DQ (a mixin of the importer)."""

    OPS: ClassVar[dict[tuple[frozenset[str], str], str]] = {
        (QDQ_DOMAINS, "QuantizeLinear"): "_quantize_linear",
        (QDQ_DOMAINS, "DequantizeLinear"): "_dequantize_linear",
    }

    def _qdq_params(self, node, ins: list[Value | None], stored: Value | None = None):
        """(scale, zero point, format, axis) of a Q or DQ node."""
        attrs = attributes(node)
        scale = self._const_input(node, ins[1], "scale").astype(np.float32)
        if np.any(scale <= 0) or not np.all(np.isfinite(scale)):
            raise self.fail(node, "its scale must be positive and finite.")
        zp_value = ins[2] if len(ins) > 2 else None
        typed = zp_value if isinstance(zp_value, Constant) else stored
        fmt = self._int_format(node, typed, attrs)
        zero_point = (self._const_input(node, zp_value, "zero point").astype(np.int64)
                      if zp_value is not None else np.zeros(1, dtype=np.int64))
        return scale, zero_point, fmt, int(attrs.get("axis", 1))

    def _blocked(self, node, values: np.ndarray, v: np.ndarray, axis: int) -> np.ndarray:
        """A blocked (``block_size``) parameter repeated to ``values``' shape."""
        block = int(attributes(node).get("block_size", 0))
        axis = axis % max(values.ndim, 1)
        if block < 1 or v.ndim != values.ndim or v.shape[axis] != -(-values.shape[axis] //
                                                                      block) or any(
                a != b for i, (a, b) in enumerate(zip(v.shape, values.shape, strict=True))
                if i != axis):
            raise self.fail(node, f"block_size={block} along axis {axis}: parameter shape "
                            f"{v.shape} does not block the tensor of shape {values.shape}.")
        return np.repeat(v, block, axis=axis).take(range(values.shape[axis]), axis=axis)

    def _blocked_weights(self, node, q: np.ndarray, scale: np.ndarray, zero: np.ndarray,
                         axis: int) -> QuantConstant:
        """Blocked weights onto one integer grid, exactly: with ``unit`` the gcd of the block
        scales (as rationals), each value is ``(q - zero) * (block_scale / unit)`` units."""
        s = self._blocked(node, q, scale, axis)
        z = self._blocked(node, q, zero, axis) if zero.size > 1 else zero.reshape(())
        steps = {float(v): Fraction(float(v)) for v in np.unique(s)}
        num = reduce(gcd, (f.numerator for f in steps.values()))
        den = reduce(lcm, (f.denominator for f in steps.values()))
        unit = Fraction(num, den)
        factors = {v: f / unit for v, f in steps.items()}
        biggest = max(factors.values())
        if biggest > MAX_BLOCK_MULTIPLIER:
            raise self.fail(node, f"blocked scales {sorted(steps)[:4]}... need integer "
                            f"multipliers up to {float(biggest):.3g} of their common unit "
                            f"{float(unit):.3g} (limit 2**16); use power-of-two or "
                            "per-channel scales.")
        mult = np.vectorize(lambda v: int(factors[float(v)]), otypes=[np.int64])(s)
        values = (q.astype(np.int64) - z.astype(np.int64)) * mult
        if float(unit) == 0 or not np.isfinite(float(unit)):
            raise self.fail(node, "the blocked scales have no representable common unit.")
        return QuantConstant(values, np.array(float(unit), dtype=np.float64),
                             Int.spanning(int(values.min(initial=0)),
                                          int(values.max(initial=0))))

    def _int_format(self, node, typed: Constant | None, attrs: dict) -> Format:
        """The quantized type: from the zero point (or stored codes), else output_dtype."""
        known = {**ONNX_INT_FORMATS, **ONNX_FLOAT_FORMATS}
        if typed is None:
            code = attrs.get("output_dtype", 0) or TensorProto.UINT8
            if code not in known:
                raise self.fail(node, f"quantized type {code} is not a type bitloom maps.")
            fmt = known[code]
        elif typed.onnx_type in known:
            fmt = known[typed.onnx_type]
        else:
            name = typed.value.dtype.name
            by_name = {**NUMPY_INT_FORMATS, "int32": Int(32, True),
                       **{f.name: f for f in ONNX_FLOAT_FORMATS.values()},
                       "float8_e4m3fn": ONNX_FLOAT_FORMATS[TensorProto.FLOAT8E4M3FN]}
            if name not in by_name:
                raise self.fail(node, f"quantized type {name} is not supported.")
            fmt = by_name[name]
        if not isinstance(fmt, Int) and self.opset < 19 and node.domain != "com.microsoft":
            self.warn(node, f"{fmt.name} Q/DQ needs opset 19 or newer, the model declares "
                      f"{self.opset}; reading it with opset 19 semantics.")
        if not isinstance(fmt, Int) and node.op_type == "QuantizeLinear" and \
                attrs.get("saturate", 1) == 0:
            raise self.fail(node, "saturate=0 turns out-of-range values into NaN/inf, which "
                            "bitloom does not carry through layers; export with saturate=1.")
        return fmt

    def _along_axis(self, node, values: np.ndarray, v: np.ndarray, axis: int) -> np.ndarray:
        """A per-axis parameter reshaped to broadcast against ``values``."""
        if v.size == 1:
            return v.reshape(())
        axis = axis % max(values.ndim, 1)
        if v.ndim != 1 or values.shape[axis] != v.size:
            raise self.fail(node, f"per-axis parameter of {v.size} values does not match axis "
                            f"{axis} of shape {values.shape}.")
        shape = [1] * values.ndim
        shape[axis] = v.size
        return v.reshape(shape)

    def _quantize_linear(self, node, ins: list[Value | None]) -> Value:
        scale, zero_point, fmt, axis = self._qdq_params(node, ins)
        x = ins[0]
        blocked = bool(attributes(node).get("block_size", 0))
        if isinstance(x, Constant):  # float weights quantized in the graph
            w = x.value.astype(np.float32)
            s, z = self._element_params(node, w.shape, scale, zero_point, axis, blocked)
            codes = quantize_elements(w, fmt, s, z)
            return Constant(codes, next((k for k, f in ONNX_INT_FORMATS.items() if f == fmt),
                                        None), fmt=fmt)
        if blocked or scale.size != 1 or zero_point.size != 1:
            return self._quantized_input(node, x, scale, zero_point, fmt, axis, blocked)
        if not isinstance(x, (FloatInput, Derived, Stream, PendingConcat)):
            raise self.fail(node, "QuantizeLinear of this tensor is not supported.")
        quantizer = Quantizer(fmt, float(scale.reshape(-1)[0]), int(zero_point.reshape(-1)[0]),
                              "round", ROUND_THEN_SHIFT)
        out = self._quantize(node, x, quantizer, scale)
        return replace(out, codes=True) if isinstance(out, Stream) else out

    def _element_params(self, node, shape: tuple[int, ...], scale: np.ndarray,
                        zero_point: np.ndarray, axis: int, blocked: bool
                        ) -> tuple[np.ndarray, np.ndarray]:
        """Per-axis or blocked scale and zero point laid out to broadcast against a tensor
        of ``shape``."""
        like = np.broadcast_to(np.int8(0), shape)  # only its shape is read: no memory
        if not blocked:
            return (self._along_axis(node, like, scale, axis),
                    self._along_axis(node, like, zero_point, axis))
        return (self._blocked(node, like, scale, axis),
                self._blocked(node, like, zero_point, axis) if zero_point.size > 1
                else zero_point.reshape(()))

    def _batched(self, node, name: str, shape: tuple[int, ...], scale: np.ndarray,
                 zero_point: np.ndarray, axis: int, blocked: bool) -> tuple[int, ...]:
        """The ONNX shape of the whole batched tensor of per-sample ``shape``: axis 0 is the
        graph input's declared static batch (1 when it is symbolic, which parameters varying
        along axis 0 cannot be). Per-axis or blocked parameters of the model input may index
        it; the host then needs exactly that batch."""
        batch = self.declared_batch()
        if batch is not None:
            return (batch, *shape)
        rank = len(shape) + 1
        along_batch = any(np.ndim(v) == rank and v.shape[0] > 1 for v in (scale, zero_point)) \
            if blocked else axis % rank == 0 and max(scale.size, zero_point.size) > 1
        if along_batch:
            raise self.fail(node, f"its parameters vary along axis 0, the batch axis, which "
                            f"input {name!r} leaves symbolic; export the model with a fixed "
                            "batch size.")
        return (1, *shape)

    def _quantized_input(self, node, x: Value, scale: np.ndarray, zero_point: np.ndarray,
                         fmt: Format, axis: int, blocked: bool) -> Stream:
        """Per-axis or blocked QuantizeLinear of the model input: the host quantizes the whole
        batched tensor with ONNX's per-element parameters (any axis, the batch axis too);
        the hardware only sees codes of the one format ``fmt``. Layers read per-tensor
        quantized tensors, so these codes may only reach the graph output (see
        :meth:`_add_layer`)."""
        what = (f"blocked (axis {axis}, block_size {attributes(node)['block_size']})" if blocked
                else f"per-axis (axis {axis}, {max(scale.size, zero_point.size)} scales)")
        if not isinstance(x, FloatInput):
            raise self.fail(node, f"{what} quantization of an activation is supported only "
                            "of the model input (the host quantizes it); a layer output is "
                            "requantized with one scale and zero point per tensor.")
        if self.input_quant is not None:
            raise self.fail(node, "the model input is quantized twice.")
        batched = self._batched(node, x.name, x.flat_shape, scale, zero_point, axis, blocked)
        s, z = self._element_params(node, batched, scale, zero_point, axis, blocked)
        self.input_quant = InputQuantizer(x.name, x.shape, x.flat_shape,
                                          ElementQuantizer(fmt, s, z), x.perm)
        # the codes themselves, as integer graph inputs are (scale 1, zero point 0) until an
        # op states their scale: a DequantizeLinear, which the host then computes
        return Stream(-1, fmt, np.ones(1), 0, x.flat_shape)

    def _add_layer(self, node, layer) -> int:
        if -1 in layer.inputs and self.input_quant is not None and isinstance(
                self.input_quant.quantizer, ElementQuantizer):
            raise self.fail(node, "the model input is quantized per axis or blocked, on the "
                            "host; layers read per-tensor quantized tensors, so these codes "
                            "may only reach the graph output. Quantize the input per tensor.")
        return super()._add_layer(node, layer)

    def _clip_codes(self, node, ins: list[Value | None]) -> Value:
        x = ins[0]
        if isinstance(x, Stream) and x.producer < 0 and self.input_quant is not None and \
                isinstance(self.input_quant.quantizer, ElementQuantizer):
            raise self.fail(node, "an integer Clip of per-axis or blocked quantized input codes "
                            "is not supported.")
        return super()._clip_codes(node, ins)

    def _dequantize_linear(self, node, ins: list[Value | None]) -> Value:
        x = ins[0]
        scale, zero_point, fmt, axis = self._qdq_params(
            node, ins, x if isinstance(x, Constant) else None)
        blocked = bool(attributes(node).get("block_size", 0))
        if isinstance(x, Constant) and blocked:
            if not isinstance(fmt if x.fmt is None else x.fmt, Int):
                raise self.fail(node, "blocked quantization is supported for integer weights.")
            return self._blocked_weights(node, x.value, scale, zero_point, axis)
        if isinstance(x, Constant):
            if x.fmt is not None:
                fmt = x.fmt
            if not isinstance(fmt, Int):  # float8/float4 weights: grid integers, no zero point
                q = x.value if x.value.dtype.kind == "i" else fmt.to_grid(
                    x.value.astype(np.float64))
                return QuantConstant(q.astype(np.int64), self._along_axis(node, q, scale, axis),
                                     fmt)
            q = x.value.astype(np.int64)
            z = self._along_axis(node, q, zero_point, axis)
            values = q - z
            if x.code_range is not None:  # QCDQ: a Clip narrowed the codes
                code_lo, code_hi = x.code_range
                fmt = Int.spanning(code_lo, code_hi)
                if not zero_point.any() and code_lo == -code_hi and code_lo < 0:
                    fmt = Int(fmt.bits, True, narrow=True)
            lo, hi = fmt.min_int - int(zero_point.max()), fmt.max_int - int(zero_point.min())
            wfmt = fmt if not zero_point.any() else Int.spanning(lo, hi)
            return QuantConstant(values, self._along_axis(node, q, scale, axis), wfmt)
        if isinstance(x, Stream):
            if not blocked and scale.size == 1 and zero_point.size == 1:
                return replace(x, scale=scale.reshape(-1),
                               zero_point=int(zero_point.reshape(-1)[0]), codes=False)
            what = "blocked" if blocked else f"per-axis (axis {axis})"
            if x.producer == -1 and not self.layers:
                return self._dequantized_input(node, x, scale, zero_point, axis, blocked)
            raise self.fail(node, f"{what} DequantizeLinear of an activation is supported "
                            "only of the model input at the graph output (the host computes "
                            "it); layers read per-tensor quantized tensors.")
        raise self.fail(node, "DequantizeLinear needs a QuantizeLinear or an integer "
                        "initializer as its input.")

    def _dequantized_input(self, node, x: Stream, scale: np.ndarray, zero_point: np.ndarray,
                           axis: int, blocked: bool) -> HostResult:
        """Per-axis or blocked DequantizeLinear of the model input's codes: the host computes
        it on the batched ONNX tensor at the graph output, after the codes come back, so only
        host-side ops may follow it."""
        batched = self._batched(node, self.input_quant.name, x.shape, scale, zero_point, axis,
                                blocked)
        s, z = self._element_params(node, batched, scale, zero_point, axis, blocked)
        codes = replace(x, scale=np.ones(1), zero_point=0)
        return HostResult(codes, [HostDequantize("DequantizeLinear", scale=s,
                                                 zero_point=z.astype(np.int64))])
