"""Joining branches: a residual ``Add`` of two quantized streams and channel ``Concat``.

Both need their inputs on integer grids: an Add brings its two branches onto one grid with
small integer multipliers, a Concat of branches quantized alike is a layer of its own, and
one of branches quantized differently waits (:class:`PendingConcat`) for the quantizer that
follows, which then requantizes each branch.
"""

from __future__ import annotations

from dataclasses import replace
from fractions import Fraction
from math import gcd, lcm

import numpy as np
import onnx

from bitloom.formats import Int
from bitloom.frontend.context import ImportContext
from bitloom.frontend.registry import ONNX, handles
from bitloom.frontend.values import (
    Derived,
    PendingConcat,
    Stream,
    Value,
    attributes,
    channel_last,
)
from bitloom.ir import AddStreams, Affine, Chain, Concat
from bitloom.ir.elementwise import as_fractions

#: a residual Add whose branch scales need integer multipliers above this is refused
MAX_ADD_MULTIPLIER = 2**32


def add_streams(ctx: ImportContext, node: onnx.NodeProto, a: Stream, b: Stream) -> Derived:
    """``sa*(a - za) + sb*(b - zb)`` as ``u * (ka*a + kb*b) + const`` with integers
    ``ka``, ``kb``: exact for any two scales whose ratio is a modest rational."""
    if a.shape != b.shape or a.order is not None or b.order is not None:
        raise ctx.fail(node, f"Add of tensors of shapes {a.shape} and {b.shape}: only "
                       "equal shapes (no broadcasting) are supported.")
    if a.scale.size != 1 or b.scale.size != 1:
        raise ctx.fail(node, "both inputs of an Add need per-tensor scales.")
    sa, sb = (as_fractions(v.scale, 1)[0] for v in (a, b))
    ua, ub = (s / 2 ** v.fmt.grid().frac_bits for s, v in ((sa, a), (sb, b)))
    unit = Fraction(gcd(ua.numerator, ub.numerator), lcm(ua.denominator, ub.denominator))
    ka, kb = int(ua / unit), int(ub / unit)
    if max(abs(ka), abs(kb)) > MAX_ADD_MULTIPLIER:
        raise ctx.fail(node, f"the branch scales {float(sa):g} and {float(sb):g} have no "
                       "small integer ratio; quantize both branches with one shared "
                       "quantizer (or power-of-two scales).")
    ga, gb = a.fmt.grid(), b.fmt.grid()
    lo = min(ka * ga.lo, ka * ga.hi) + min(kb * gb.lo, kb * gb.hi)
    hi = max(ka * ga.lo, ka * ga.hi) + max(kb * gb.lo, kb * gb.hi)
    shape = channel_last(a.shape)
    index = ctx.add_layer(node, AddStreams(
        f"add{len(ctx.layers)}", (a.producer, b.producer), shape,
        acc_fmt=Int.spanning(lo, hi), in_fmts=(a.fmt, b.fmt), multipliers=(ka, kb)))
    c = shape[-1]
    offset = -(sa * a.zero_point + sb * b.zero_point)
    return Derived(index, Chain(c).then(Affine([unit] * c, [offset] * c)), a.shape)


@handles(ONNX, "Concat")
def concat(ctx: ImportContext, node: onnx.NodeProto,
           ins: list[Value | None]) -> Stream | PendingConcat:
    xs = [v for v in ins if v is not None]
    if not all(isinstance(v, Stream) for v in xs):
        raise ctx.fail(node, "Concat of unquantized tensors is not supported; quantize "
                       "every branch.")
    first = xs[0]
    axis = int(attributes(node).get("axis", 1)) % (len(first.shape) + 1)
    if axis != 1:
        raise ctx.fail(node, f"Concat along axis {axis}: only channels (axis 1) are "
                       "supported.")
    for v in xs[1:]:
        if v.shape[1:] != first.shape[1:] or v.order is not None:
            raise ctx.fail(node, "Concat inputs must agree in every axis but channels.")
    if all(v.fmt == first.fmt and v.zero_point == first.zero_point
           and np.array_equal(v.scale, first.scale) for v in xs[1:]):
        return concat_layer(ctx, node, xs)
    shape = (sum(v.shape[0] for v in xs), *first.shape[1:])
    return PendingConcat(xs, shape)


def concat_layer(ctx: ImportContext, node: onnx.NodeProto, xs: list[Stream]) -> Stream:
    """Channel concatenation of branches quantized alike."""
    first = xs[0]
    if any(v.fmt != first.fmt or v.zero_point != first.zero_point
           or not np.array_equal(v.scale, first.scale) for v in xs[1:]):
        raise ctx.fail(node, "Concat of branches quantized differently needs a quantizer "
                       "right after it (or one shared quantizer on every branch).")
    if len(first.shape) == 2:  # matrices travel flattened, row after row: rows append
        channels = tuple(int(np.prod(v.shape)) for v in xs)
        in_shape = (channels[0],)
    else:
        channels = tuple(v.shape[0] for v in xs)
        in_shape = channel_last(first.shape)
    index = ctx.add_layer(node, Concat(
        f"concat{len(ctx.layers)}", tuple(v.producer for v in xs), in_shape,
        fmt=first.fmt, channels=channels))
    return replace(first, producer=index,
                   shape=(sum(v.shape[0] for v in xs), *first.shape[1:]))
