"""Float islands made integer: a layer's float output that is an affine map and clamps of
its accumulator becomes an exact integer stream, so that ops which need quantized values
(pooling) can read it without any rounding.

onnxruntime leaves ``Sum -> Relu -> AveragePool`` in float between a DequantizeLinear and a
QuantizeLinear (ResNet-50's last block). Per channel ``c``, the float value is
``clamp(A*acc + B, LO, HI)`` with exact rationals; with ``u`` the largest rational that
divides ``A``, ``B``, ``LO`` and ``HI``, it is ``u * clamp(M*acc + K, L, H)`` for integers
``M = A/u``, ``K = B/u``, ``L``, ``H``. The layer then outputs those integers through a
shift-free scale requantizer (multiply, add, clip), and the stream carries the scale ``u``
per channel. Nothing is rounded: the next quantizer sees exactly the float value.
"""

from __future__ import annotations

from fractions import Fraction
from math import gcd, lcm

import numpy as np
import onnx

from bitloom.formats import Int
from bitloom.frontend.context import ImportContext
from bitloom.frontend.values import Derived, Stream
from bitloom.ir import Affine, Chain, Clamp, ScaleRequant

#: the widest integer stream an island may become: a residual Add of two branches whose
#: float32 scales have no small ratio already has a 30-35-bit accumulator
MAX_ISLAND_BITS = 48


class NotAnIsland(ValueError):
    """The chain holds an op that is not affine or a clamp (a rounding)."""


def clamped_affine(chain: Chain, c: int) -> tuple[Fraction, Fraction,
                                                    Fraction | None, Fraction | None]:
    """Channel ``c`` of ``chain`` as ``(A, B, LO, HI)``: ``clamp(A*acc + B, LO, HI)``."""
    a, b, lo, hi = Fraction(1), Fraction(0), None, None
    for op in chain.ops:
        if isinstance(op, Affine):
            k, d = op.a[c], op.b[c]
            a, b = k * a, k * b + d
            lo, hi = (None if lo is None else k * lo + d), (None if hi is None else k * hi + d)
            if k < 0:
                lo, hi = hi, lo
        elif isinstance(op, Clamp):
            lo = op.lo if lo is None else lo if op.lo is None else max(lo, op.lo)
            hi = op.hi if hi is None else hi if op.hi is None else min(hi, op.hi)
            if lo is not None and hi is not None and lo > hi:
                raise NotAnIsland("a clamp leaves one value")
        else:
            raise NotAnIsland(f"{type(op).__name__} rounds")
    return a, b, lo, hi


def common_unit(values: list[Fraction]) -> Fraction:
    """The largest rational that divides every one of ``values`` (1 if all are 0)."""
    den = lcm(*(v.denominator for v in values))
    g = 0
    for v in values:
        g = gcd(g, int(v * den))
    return Fraction(g, den) if g else Fraction(1)


def integer_stream(ctx: ImportContext, node: onnx.NodeProto, x: Derived) -> Stream:
    """The float output ``x`` of a layer as an exact integer stream (module docstring)."""
    what = f"the float output of layer {ctx.layers[x.producer].name if x.producer >= 0 else ''}"
    if x.producer < 0 or x.max_pools or x.perm:
        raise ctx.fail(node, f"{node.op_type} of an unquantized tensor cannot be computed "
                       "exactly; quantize the tensor before it.")
    layer = ctx.layers[x.producer]
    if layer.requant is not None:
        raise ctx.fail(node, f"{node.op_type} of {what}, which is quantized already.")
    acc = layer.acc_fmt.grid()
    terms = []
    for c in range(x.chain.channels):
        try:
            a, b, lo, hi = clamped_affine(x.chain, c)
        except NotAnIsland as exc:
            raise ctx.fail(node, f"{node.op_type} of an unquantized tensor, {what}: its "
                           f"float ops include a rounding ({exc}), so it has no exact integer "
                           "form; quantize the tensor before it (onnxruntime: run "
                           "quant_pre_process before quantize_static, which folds "
                           "BatchNormalization into the Conv).") from None
        unit = common_unit([v for v in (a, b, lo, hi) if v is not None])
        m, k = int(a / unit), int(b / unit)
        ends = (m * acc.lo + k, m * acc.hi + k)
        low = min(ends) if lo is None else max(int(lo / unit), min(ends))
        high = max(ends) if hi is None else min(int(hi / unit), max(ends))
        terms.append((unit, m, k, low, min(max(high, low), max(ends))))
    units = [t[0] for t in terms]
    if any(Fraction(float(u)) != u for u in units):
        raise ctx.fail(node, f"{node.op_type} of {what}: its exact integer form needs a scale "
                       "that float64 does not hold; quantize the tensor before it.")
    fmt = Int.spanning(min(t[3] for t in terms), max(t[4] for t in terms))
    if fmt.bits > MAX_ISLAND_BITS:
        raise ctx.fail(node, f"{node.op_type} of {what}: its exact integer form needs "
                       f"{fmt.bits}-bit values (at most {MAX_ISLAND_BITS}); quantize the "
                       "tensor before it.")
    multiplier, offset, low, high = (np.array([t[i] for t in terms], dtype=object)
                                     for i in range(1, 5))
    layer.requant = ScaleRequant(fmt, 0, multiplier, offset, low, high)
    scale = np.array([float(u) for u in units])
    return Stream(x.producer, fmt, scale[:1] if len(set(units)) == 1 else scale, 0, x.shape)
