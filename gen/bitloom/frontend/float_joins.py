"""Adds of float branches rounded separately: onnxruntime's QOperator ResNet.

There, each branch of a residual Add went through its own per-channel affine map after its
DequantizeLinear (a BatchNormalization the quantizer did not fold), and the sum runs on in
float: a ReLU of it is quantized for the next block *and* added, as a float, to the next
block's branch, a whole stage long. No small integer ratio joins such branches (the
per-channel factors are arbitrary float64 values), so the join is computed in fixed point.

Semantics (what golden and hardware compute, per channel ``c``): every term is an integer
stream ``x`` with real value ``A[c] * x + B[c]``. The sum is ``u[c] * (acc + 1/2)``, with
``acc = sum(k[c] * x) + bias[c]``, all integers:

- ``u[c]`` is a power of two, :data:`JOIN_FRACTION_BITS` + 1 bits below the largest coded
  term's coefficient (float32's precision) and at most half the unit of any wide term (the
  accumulator of an earlier join), which is so carried exactly (``k`` a power of two);
- a coded term's ``k[c]`` is ``A[c] / u[c]`` rounded, and ``bias[c]`` is ``sum(B[c]) / u[c]``
  rounded;
- a ReLU of the sum clamps ``acc`` at 0 (the sum is then ``u[c] / 2``, not 0).

So each coded term is off the exact sum by at most ``|x| * u[c] / 2`` (about ``2**-18`` of
its largest step for 8-bit codes; onnxruntime's own float32 sum is about as far off), plus
``u[c]`` over all. The half unit keeps the sum off the rounding ties of the quantizer that
follows, which lie on whole multiples of ``u[c]`` whenever that quantizer's scale is a
float32 at most ``2**8`` times finer than the coefficients (any sane model): so that
quantizer is one multiply-and-shift, where ties to even at evenly spaced points would need
a table of 255 wide thresholds a channel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import onnx

from bitloom.formats import Format, Int
from bitloom.frontend.context import ImportContext
from bitloom.frontend.islands import NotAnIsland, clamped_affine
from bitloom.frontend.values import Derived, Stream, channel_last
from bitloom.ir import AddStreams, Affine, Chain, ScaleRequant, Thresholding, derive_thresholds
from bitloom.ir.elementwise import Requantize

#: fraction bits of the join's rounding grid below its largest coded term's coefficient
JOIN_FRACTION_BITS = 24
#: widest join accumulator (golden computes it in int64)
MAX_JOIN_ACC_BITS = 62


@dataclass
class Term:
    """An integer stream of layer ``producer`` (or the input, -1) in ``fmt``, whose real value
    per channel is ``a[c] * x + b[c]``; ``wide`` for the accumulator of an earlier join."""

    producer: int
    fmt: Format
    a: list[Fraction]
    b: list[Fraction]
    wide: bool = False


def is_float_join(ctx: ImportContext, producer: int) -> bool:
    """Whether layer ``producer`` is a join of float branches (its accumulator travels on)."""
    return producer in ctx.float_joins


def float_join(ctx: ImportContext, node: onnx.NodeProto, x: Stream | Derived,
               y: Stream | Derived) -> Derived:
    """``x + y`` of float tensors that are no small-integer combination of two streams."""
    if x.shape != y.shape:
        raise ctx.fail(node, f"Add of tensors of shapes {x.shape} and {y.shape}: only equal "
                       "shapes (no broadcasting) are supported.")
    terms = [term(ctx, node, v) for v in (x, y)]
    channels = len(terms[0].a)
    units = [unit(terms, c) for c in range(channels)]
    ka, kb = (tuple(round(t.a[c] / units[c]) for c in range(channels)) for t in terms)
    bias = tuple(round((terms[0].b[c] + terms[1].b[c]) / units[c]) for c in range(channels))
    lo = hi = 0
    for c in range(channels):
        ends = [sorted((k[c] * t.fmt.grid().lo, k[c] * t.fmt.grid().hi))
                for k, t in zip((ka, kb), terms, strict=True)]
        lo = min(lo, ends[0][0] + ends[1][0] + bias[c])
        hi = max(hi, ends[0][1] + ends[1][1] + bias[c])
    acc_fmt = Int.spanning(lo, hi)
    if acc_fmt.bits > MAX_JOIN_ACC_BITS:
        raise ctx.fail(node, f"this Add of float branches needs a {acc_fmt.bits}-bit "
                       f"accumulator (at most {MAX_JOIN_ACC_BITS}): the branches' scales "
                       "are too far apart; quantize both branches.")
    index = ctx.add_layer(node, AddStreams(
        f"add{len(ctx.layers)}", (terms[0].producer, terms[1].producer),
        channel_last(x.shape), acc_fmt=acc_fmt, in_fmts=(terms[0].fmt, terms[1].fmt),
        multipliers=(collapsed(ka), collapsed(kb)), bias=bias))
    ctx.float_joins.add(index)
    return Derived(index, Chain(channels).then(Affine(units, [u / 2 for u in units])),
                   x.shape)


def collapsed(k: tuple[int, ...]) -> int | tuple[int, ...]:
    """One integer where every channel has the same multiplier."""
    return k[0] if len(set(k)) == 1 else k


def unit(terms: list[Term], c: int) -> Fraction:
    """Channel ``c``'s unit ``u[c]`` (module docstring)."""
    coded = [abs(t.a[c]) for t in terms if not t.wide and t.a[c]]
    units = [t.a[c] / 2 for t in terms if t.wide]
    if coded:
        top = math.frexp(float(max(coded)))[1] - 1  # the largest coefficient's binade
        units.append(Fraction(2) ** (top - 1 - JOIN_FRACTION_BITS))
    return min(units) if units else Fraction(1)


def term(ctx: ImportContext, node: onnx.NodeProto, v: Stream | Derived) -> Term:
    """``v`` as an integer stream and its per-channel affine map to reals."""
    if isinstance(v, Stream):
        if v.order is not None or v.perm:
            raise ctx.fail(node, "an Add of a flattened or transposed tensor with a float "
                           "branch is not supported.")
        reals = v.reals(v.channels)
        return Term(v.producer, v.fmt, reals.a, reals.b)
    if is_float_join(ctx, v.producer):
        ops, layer = v.chain.ops, ctx.layers[v.producer]
        if len(ops) == 1 and isinstance(ops[0], Affine) and not (v.max_pools or v.perm) and \
                all(b == a / 2 for a, b in zip(ops[0].a, ops[0].b, strict=True)):
            return Term(v.producer, layer.acc_fmt, ops[0].a, ops[0].b, wide=True)
        raise ctx.fail(node, "this Add reads an earlier Add of float branches through ops "
                       "other than a ReLU that reads nothing else; quantize it.")
    fmt, tail = rounded_tail(ctx, node, v)
    if all(lo is None and hi is None for _, _, lo, hi in tail):
        return Term(v.producer, fmt, [t[0] for t in tail], [t[1] for t in tail])
    return clamped_term(ctx, node, v, fmt, tail)


def rounded_tail(ctx: ImportContext, node: onnx.NodeProto,
                 v: Derived) -> tuple[Format, list[tuple]]:
    """A layer's float output after its own quantizer (reopened by float ops such as a
    BatchNormalization after its DequantizeLinear): that quantizer set again as the
    layer's, its format, and per channel ``(A, B, LO, HI)``, the ops after it as
    ``clamp(A*x + B, LO, HI)`` of its codes ``x``."""
    if v.producer < 0 or v.max_pools or v.perm:
        raise ctx.fail(node, "this float tensor is not a per-channel affine map of a "
                       "quantized tensor (a pool or transpose before it); quantize it.")
    layer, ops = ctx.layers[v.producer], v.chain.ops
    last = max((r for r, op in enumerate(ops) if isinstance(op, Requantize)), default=None)
    if last is None:
        raise ctx.fail(node, "this float tensor is a layer's unrounded output; quantize it.")
    head, inner = Chain(v.chain.channels, ops[:last]), ops[last].quantizer
    if layer.requant is None:  # reopened by the float ops: the layer's quantizer again
        layer.requant = derive_thresholds(head, inner, layer.acc_fmt)
        ctx.requant_sources[v.producer] = (head, inner)
    elif ctx.requant_sources.get(v.producer) != (head, inner):
        raise ctx.fail(node, "this float tensor follows a quantizer other than its "
                       "layer's; quantize it.")
    try:
        tail = [clamped_affine(Chain(v.chain.channels, ops[last + 1:]), c)
                for c in range(v.chain.channels)]
    except NotAnIsland as exc:
        raise ctx.fail(node, f"this float tensor rounds twice ({exc}); quantize "
                       "it.") from None
    return inner.fmt, tail


def fixed_point_stream(ctx: ImportContext, node: onnx.NodeProto, v: Derived) -> Stream:
    """A layer's float output after its own quantizer, in fixed point for an op that needs
    integers (a pool): onnxruntime's QOperator ``DequantizeLinear -> BatchNormalization ->
    Relu -> GlobalAveragePool``. Each channel on the grid of a float join's term
    (:func:`clamped_term`), so the pool sums it exactly."""
    fmt, tail = rounded_tail(ctx, node, v)
    t = clamped_term(ctx, node, v, fmt, tail)
    return Stream(t.producer, t.fmt, np.array([float(u) for u in t.a]), 0, v.shape)


def clamped_term(ctx: ImportContext, node: onnx.NodeProto, v: Derived, fmt: Format,
                 tail: list[tuple]) -> Term:
    """A clamp of an affine map of a layer's codes (a ReLU after a BatchNormalization,
    read by the Add and by a quantizer), per channel ``clamp(A*x + B, LO, HI)``: a
    thresholding layer on the codes computes it in integers on the join's grid (a
    multiply, add and clip: each bound and coefficient rounded), a wide term."""
    grid = fmt.grid()
    units, rows = [], []
    for a, b, lo, hi in tail:
        u = Fraction(2) ** (math.frexp(float(abs(a) or 1))[1] - 2 - JOIN_FRACTION_BITS)
        m, k = round(a / u), round(b / u)
        ends = sorted((m * grid.lo + k, m * grid.hi + k))
        low = ends[0] if lo is None else min(max(round(lo / u), ends[0]), ends[1])
        high = ends[1] if hi is None else max(min(round(hi / u), ends[1]), low)
        units.append(u)
        rows.append((m, k, low, high))
    out = Int.spanning(min(r[2] for r in rows), max(r[3] for r in rows))
    shape = channel_last(v.shape)
    index = ctx.add_layer(node, Thresholding(
        f"requant{len(ctx.layers)}", (v.producer,), shape,
        acc_fmt=Int.spanning(grid.lo, grid.hi), in_fmt=fmt))
    multiplier, offset, low, high = (np.array([r[i] for r in rows], dtype=object)
                                     for i in range(4))
    ctx.layers[index].requant = ScaleRequant(out, 0, multiplier, offset, low, high)
    return Term(index, out, units, [Fraction(0)] * len(units), wide=True)
