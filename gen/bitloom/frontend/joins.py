"""Joining branches: a residual ``Add`` of two quantized streams, channel ``Concat``, and a
feature map times a vector computed from it (squeeze-excitation's ``Mul``).

Both need their inputs on integer grids: an Add brings its two branches onto one grid with
small integer multipliers, a Concat of branches quantized alike is a layer of its own, and
one of branches quantized differently waits (:class:`PendingConcat`) for the quantizer that
follows, which then requantizes each branch; read by a layer instead, its channels keep
their branch's scale (:func:`joined`).
"""

from __future__ import annotations

from dataclasses import replace
from fractions import Fraction
from math import gcd, lcm

import numpy as np
import onnx

from bitloom.formats import Int
from bitloom.frontend.context import ImportContext
from bitloom.frontend.float_joins import collapsed, float_join
from bitloom.frontend.registry import ONNX, handles
from bitloom.frontend.values import (
    Derived,
    PendingConcat,
    Stream,
    Value,
    attributes,
    channel_last,
)
from bitloom.ir import AddStreams, Affine, Chain, ChannelScale, Concat
from bitloom.ir.elementwise import as_fractions

#: a residual Add whose branch scales need integer multipliers above this is refused
MAX_ADD_MULTIPLIER = 2**32


def add_streams(ctx: ImportContext, node: onnx.NodeProto, a: Stream, b: Stream) -> Derived:
    """``sa*(a - za) + sb*(b - zb)`` as ``u * (ka*a + kb*b) + const`` with integers
    ``ka``, ``kb`` (per channel where per-channel scales differ in ratio): exact for any two
    scales whose ratio is a modest rational; others join in fixed point
    (:mod:`~.float_joins`)."""
    if a.shape != b.shape or a.order is not None or b.order is not None:
        raise ctx.fail(node, f"Add of tensors of shapes {a.shape} and {b.shape}: only "
                       "equal shapes (no broadcasting) are supported.")
    c = a.channels
    ra, rb = a.reals(c), b.reals(c)  # per channel: value steps and offsets
    units = [Fraction(gcd(ua.numerator, ub.numerator), lcm(ua.denominator, ub.denominator))
             for ua, ub in zip(ra.a, rb.a, strict=True)]
    ka = tuple(int(ua / u) for ua, u in zip(ra.a, units, strict=True))
    kb = tuple(int(ub / u) for ub, u in zip(rb.a, units, strict=True))
    if max(map(abs, ka + kb)) > MAX_ADD_MULTIPLIER:  # no small ratio: in fixed point
        return float_join(ctx, node, a, b)
    ga, gb = a.fmt.grid(), b.fmt.grid()
    ends = [(sorted((x * ga.lo, x * ga.hi)), sorted((y * gb.lo, y * gb.hi)))
            for x, y in zip(ka, kb, strict=True)]
    lo, hi = min(x[0] + y[0] for x, y in ends), max(x[1] + y[1] for x, y in ends)
    index = ctx.add_layer(node, AddStreams(
        f"add{len(ctx.layers)}", (a.producer, b.producer), channel_last(a.shape),
        acc_fmt=Int.spanning(lo, hi), in_fmts=(a.fmt, b.fmt),
        multipliers=(collapsed(ka), collapsed(kb))))
    offsets = [oa + ob for oa, ob in zip(ra.b, rb.b, strict=True)]
    return Derived(index, Chain(c).then(Affine(units, offsets)), a.shape)


def scale_channels(ctx: ImportContext, node: onnx.NodeProto, a: Stream, b: Stream) -> Derived:
    """``Mul`` of a quantized feature map ``(C, H, W)`` and a quantized ``(C, 1, 1)`` vector
    computed from it (squeeze-excitation), in either order: one ChannelScale layer,
    ``(x - zx) * (s - zs)`` exactly, whose chain carries the product of the two scales."""
    x, v = (a, b) if len(a.shape) == 3 and a.shape[1:] != (1, 1) else (b, a)
    if len(x.shape) != 3 or tuple(v.shape) not in ((x.shape[0], 1, 1), (x.shape[0],)) or \
            x.order is not None or x.perm or v.perm:
        raise ctx.fail(node, f"Mul of two streamed tensors of shapes {a.shape} and {b.shape}: "
                       "only a (C, H, W) feature map times a (C, 1, 1) vector "
                       "(squeeze-excitation) is supported.")
    if any(f.grid().frac_bits for f in (x.fmt, v.fmt)):
        raise ctx.fail(node, "Mul of two streamed fixed-point tensors is not supported; "
                       "quantize both operands to integers.")
    c = x.channels
    sx, sv = (as_fractions(t.scale, c) for t in (x, v))
    gx, gv = x.fmt.grid(), v.fmt.grid()
    ends = [(p - x.zero_point) * (q - v.zero_point) for p in (gx.lo, gx.hi)
            for q in (gv.lo, gv.hi)]
    index = ctx.add_layer(node, ChannelScale(
        f"scale{len(ctx.layers)}", (x.producer, v.producer), channel_last(x.shape),
        acc_fmt=Int.spanning(min(ends), max(ends)), in_fmts=(x.fmt, v.fmt),
        zero_points=(x.zero_point, v.zero_point)))
    return Derived(index, Chain(c).then(Affine([p * q for p, q in zip(sx, sv, strict=True)],
                                               [Fraction(0)] * c)), x.shape)


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
    return PendingConcat(xs, shape, node)


def joined(ctx: ImportContext, x: Value | None) -> Value | None:
    """``x``, or where it is a Concat of branches quantized differently that a layer reads
    (no quantizer between), one Concat layer whose channels keep their branch's scale."""
    return concat_layer(ctx, x.node, x.parts) if isinstance(x, PendingConcat) else x


def concat_layer(ctx: ImportContext, node: onnx.NodeProto, xs: list[Stream]) -> Stream:
    """Channel concatenation of branches of one format and zero point; each channel keeps
    its branch's scale."""
    first = xs[0]
    alike = all(np.array_equal(v.scale, first.scale) for v in xs[1:])
    if any(v.fmt != first.fmt or v.zero_point != first.zero_point for v in xs[1:]) or (
            not alike and len(first.shape) == 2):
        raise ctx.fail(node, "Concat of branches quantized differently needs a quantizer "
                       "right after it (or one shared quantizer on every branch).")
    if len(first.shape) == 2:  # matrices travel flattened, row after row: rows append
        channels = tuple(int(np.prod(v.shape)) for v in xs)
        in_shape = (channels[0],)
    else:
        channels = tuple(v.shape[0] for v in xs)
        in_shape = channel_last(first.shape)
    scale = first.scale if alike else np.concatenate(
        [np.broadcast_to(v.scale, (v.channels,)) for v in xs])
    index = ctx.add_layer(node, Concat(
        f"concat{len(ctx.layers)}", tuple(v.producer for v in xs), in_shape,
        fmt=first.fmt, channels=channels))
    return replace(first, producer=index, scale=scale,
                   shape=(sum(v.shape[0] for v in xs), *first.shape[1:]))
