"""Quantizers applied to tracked tensors, shared by every dialect's quantization ops.

A quantizer on the float model input becomes the host's input quantizer; on a layer's
float output (a :class:`Derived` chain), that layer's exact thresholds; on a quantized
stream of another scale, a thresholding layer of its own. Float math after a layer's
quantizer reopens it (:func:`reopen`): the thresholds then come from the next quantizer.
A quantizer with one scale per channel (:func:`channel_scales`) reads each channel divided
by its scale, at unit scale; its output stream carries the scales to what reads it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from fractions import Fraction

import numpy as np
import onnx

from bitloom.formats import Format, Int
from bitloom.frontend.context import ImportContext, source_op
from bitloom.frontend.joins import concat_layer
from bitloom.frontend.tables import table_layer
from bitloom.frontend.values import (
    Derived,
    FloatInput,
    PendingConcat,
    ShuffledDerived,
    Stream,
    Tabulated,
    Value,
    channel_last,
    describe_scale,
)
from bitloom.ir import (
    Affine,
    Chain,
    ChannelShuffle,
    InputQuantizer,
    MaxPool,
    Quantizer,
    Thresholding,
    Thresholds,
    derive_thresholds,
)
from bitloom.ir.elementwise import Requantize, as_fractions

#: widest layer output: the golden's threshold table has 2**bits - 1 entries a channel, and
#: the hardware's scale requantizer (bitloom.plan.requantizers) writes up to 16 bits
MAX_REQUANT_BITS = 16


#: ops after which a tensor no longer carries its input stream's scale: they start a
#: layer (whose chain reads the scale) or quantize anew
NEW_SCALE_OPS = frozenset({
    "Conv", "MatMul", "Gemm", "AveragePool", "GlobalAveragePool", "ReduceMean", "Relu",
    "Clip", "BatchNormalization", "Quant", "IntQuant", "BipolarQuant", "FloatQuant",
    "MultiThreshold", "Trunc"})


def channel_scales(ctx: ImportContext, node: onnx.NodeProto, x: Value,
                   scale: np.ndarray) -> np.ndarray | None:
    """A quantizer's ``scale`` (positive, broadcasting against ``x``) as one value per
    channel of ``x`` in the hardware's order, or None when one value serves every channel."""
    flat = scale.reshape(-1)
    if np.all(flat == flat[0]):
        return None
    if isinstance(x, FloatInput):
        raise ctx.fail(node, "a per-channel scale on the model input is not supported; "
                       "quantize the input per tensor.")
    if not isinstance(x, (Stream, Derived, PendingConcat, Tabulated)):
        raise ctx.fail(node, "this quantizer's input is not a tensor bitloom can quantize.")
    values = ctx.channel_values(node, scale, x.shape, "its scale").astype(np.float64)
    if isinstance(x, Stream) and x.order is not None:
        values = values[x.order]  # a flattened feature map streams in the hardware's order
    if ctx.reaches_output(node.output[0], NEW_SCALE_OPS):
        raise ctx.fail(node, f"its scale is {describe_scale(values)} and its "
                       "output reaches the graph output, which the host dequantizes with one "
                       "scale; quantize the output per tensor, or end the model in a layer "
                       "(Conv, Gemm, MatMul, pool).")
    return values


def quantize(ctx: ImportContext, node: onnx.NodeProto, x: Value, quantizer: Quantizer,
             channel_scale: np.ndarray | None = None) -> Value:
    """A quantizer applied to ``x``: input quantizer, requantization or (weights) folded.

    ``channel_scale`` (one scale per channel of ``x``, see :func:`channel_scales`) replaces
    ``quantizer.scale``: the quantizer reads ``x / channel_scale[c]`` at unit scale, exact in
    rationals, so thresholds (and float ops that reopen them) stay exact per channel."""
    scale = np.array([quantizer.scale]) if channel_scale is None else channel_scale
    if isinstance(x, Stream) and x.fmt == quantizer.fmt and \
            x.zero_point == quantizer.zero_point and np.array_equal(x.scale, scale):
        return x  # values already on this grid and in range: the quantizer is the identity
    if isinstance(x, Tabulated):
        return table_layer(ctx, node, x, quantizer, channel_scale)
    if isinstance(x, ShuffledDerived):
        if channel_scale is not None:
            raise ctx.fail(node, "a quantizer with one scale per channel after a channel "
                           "shuffle of float values is not supported; quantize per tensor.")
        out = quantize(ctx, node, x.base, quantizer)
        return replace(out, producer=add_shuffle(ctx, node, out, x.groups))
    if isinstance(x, PendingConcat):
        shares = [None] * len(x.parts) if channel_scale is None else x.split(channel_scale)
        return concat_layer(ctx, node, [quantize(ctx, node, p, quantizer, share)
                                        for p, share in zip(x.parts, shares, strict=True)])
    if isinstance(x, FloatInput):
        if ctx.input_quant is not None:
            raise ctx.fail(node, "the model input is quantized twice.")
        ctx.input_quant = InputQuantizer(x.name, x.shape, x.flat_shape, quantizer, x.perm,
                                         x.steps)
        return Stream(-1, quantizer.fmt, scale, quantizer.zero_point, x.flat_shape)
    if channel_scale is None:
        def reads(chain: Chain) -> tuple[Chain, Quantizer]:
            return chain, quantizer
    else:
        unit = replace(quantizer, scale=1.0)
        inverse = [1 / s for s in as_fractions(channel_scale, channel_scale.size)]
        divide = Affine(inverse, [Fraction(0)] * len(inverse))

        def reads(chain: Chain) -> tuple[Chain, Quantizer]:
            return chain.then(divide), unit
    return requantize(ctx, node, x, quantizer.fmt,
                      lambda chain, acc: derive_thresholds(*reads(chain), acc),
                      scale, quantizer.zero_point, reads)


def requantize(ctx: ImportContext, node: onnx.NodeProto, x: Value, fmt: Format,
               table_for: Callable[[Chain, Int], Thresholds], scale: float | np.ndarray,
               zero_point: int,
               reads: Callable[[Chain], tuple[Chain, Quantizer]] | None = None) -> Stream:
    """Thresholds ``table_for(chain, acc_fmt)`` on ``x``: the requantization of the layer
    computing ``x``, or a thresholding layer of its own on a quantized stream. The
    result holds ``fmt`` values, real ``scale * (value - zero_point)`` (``scale`` per
    tensor or per channel); ``reads(chain)``, if given, is the chain and per-tensor ONNX
    quantizer the thresholds implement (float ops may then reopen them)."""
    scale = np.atleast_1d(np.asarray(scale, dtype=np.float64))
    if isinstance(x, Derived):
        return _layer_thresholds(ctx, node, x, fmt, table_for, scale, zero_point, reads)
    if isinstance(x, Stream):  # onto another scale or format: a thresholding layer
        out = requantize(ctx, node, thresholding_view(ctx, node, x), fmt, table_for,
                         scale, zero_point, reads)
        return replace(out, order=x.order)  # element-wise: the stream order stays
    raise ctx.fail(node, "this quantizer's input is not a tensor bitloom can quantize.")


def _layer_thresholds(ctx: ImportContext, node: onnx.NodeProto, x: Derived, fmt: Format,
                      table_for: Callable[[Chain, Int], Thresholds], scale: np.ndarray,
                      zero_point: int,
                      reads: Callable[[Chain], tuple[Chain, Quantizer]] | None) -> Stream:
    """The thresholds of the layer computing ``x``, then the MaxPools deferred past them."""
    if x.producer < 0:
        raise ctx.fail(node, "a per-channel float view of the model input cannot be "
                       "quantized again; quantize the input per tensor.")
    if reads is not None:
        x = split_double_rounding(ctx, node, x, fmt, reads)
    if x.producer in ctx.float_joins and ctx.readers({node.input[0]}) != [node]:
        x = shared_join(ctx, node, x)
    layer = ctx.layers[x.producer]
    if layer.requant is not None:
        raise ctx.fail(node, "a layer output is quantized twice.")
    if fmt.bits > MAX_REQUANT_BITS:
        raise ctx.fail(node, f"requantizing a layer output to {fmt} is not "
                       f"supported (at most {MAX_REQUANT_BITS} bits); "
                       f"quantize activations to {MAX_REQUANT_BITS} bits or fewer.")
    layer.requant = table_for(x.chain, layer.acc_fmt)
    if reads is not None:
        ctx.requant_sources[x.producer] = reads(x.chain)
    out = Stream(x.producer, fmt, scale, zero_point, x.shape)
    if x.max_pools:
        if x.falls_after_pools():
            raise ctx.fail(node, "a MaxPool before this quantizer does not commute with "
                           "the decreasing float ops between them (a negative scale after "
                           "the pool); quantize before the MaxPool.")
        for window in x.max_pools:
            in_shape = (*window.in_hw, x.chain.channels)
            window = replace(window, pad_value=fmt.grid().lo)
            index = ctx.add_layer(node, MaxPool(
                f"maxpool{len(ctx.layers)}", (out.producer,), in_shape,
                fmt=fmt, window=window))
            out = replace(out, producer=index)
    return out


#: widest output whose double-rounding chain stays one threshold table in the layer (15
#: thresholds a channel); wider ones get a thresholding layer of their own
MAX_COMPOSED_BITS = 4


def split_double_rounding(ctx: ImportContext, node: onnx.NodeProto, x: Derived, fmt: Format,
                          reads: Callable[[Chain], tuple[Chain, Quantizer]]) -> Derived:
    """``x`` itself, or, when its chain rounds twice (a layer's quantizer, then float ops such
    as onnxruntime's BatchNormalization after a DequantizeLinear, then this quantizer) onto
    an output wider than :data:`MAX_COMPOSED_BITS`, the float ops after the first rounding
    as a thresholding layer of their own. Why: composed, the layer needs ``2**bits - 1``
    thresholds a channel on its wide accumulator (ResNet-50: ~4,000 BRAM36), because a
    double rounding is no single scale; split, each rounding is one small scale unit. A
    chain that only moves the first grid by whole output steps (a ReLU) stays composed."""
    last = max((r for r, op in enumerate(x.chain.ops) if isinstance(op, Requantize)),
               default=None)
    if last is None or fmt.bits <= MAX_COMPOSED_BITS or not isinstance(fmt, Int):
        return x
    inner = x.chain.ops[last].quantizer
    if not isinstance(inner.fmt, Int) or inner.fmt.bits > MAX_REQUANT_BITS // 2:
        return x
    after = Chain(x.chain.channels, x.chain.ops[last + 1:])
    if all(float(steps).is_integer() for steps in output_steps_per_code(*reads(after))):
        return x
    layer = ctx.layers[x.producer]
    head = Chain(x.chain.channels, x.chain.ops[:last])
    layer.requant = derive_thresholds(head, inner, layer.acc_fmt)
    ctx.requant_sources[x.producer] = (head, inner)
    grid = inner.fmt.grid()
    shape = channel_last(x.shape)
    index = ctx.add_layer(node, Thresholding(
        f"requant{len(ctx.layers)}", (x.producer,), shape,
        acc_fmt=Int.spanning(grid.lo, grid.hi), in_fmt=inner.fmt))
    return replace(x, producer=index, chain=after)


def shared_join(ctx: ImportContext, node: onnx.NodeProto, x: Derived) -> Derived:
    """``x``, the sum of a float join (:mod:`~.float_joins`) that something besides this
    quantizer reads (the next join, as a float), as the float output of a thresholding layer
    of its own on the join's accumulator: the join keeps its accumulator as its output."""
    acc_fmt = ctx.layers[x.producer].acc_fmt
    index = ctx.add_layer(node, Thresholding(
        f"requant{len(ctx.layers)}", (x.producer,), channel_last(x.shape),
        acc_fmt=acc_fmt, in_fmt=acc_fmt))
    return replace(x, producer=index)


def output_steps_per_code(tail: Chain, out: Quantizer) -> list[Fraction]:
    """Per channel, how many of ``out``'s steps one step of the chain's input moves (the
    product of its affine slopes over the output scale)."""
    slopes = [Fraction(1)] * tail.channels
    for op in tail.ops:
        if isinstance(op, Affine):
            slopes = [s * a for s, a in zip(slopes, op.a, strict=True)]
    return [s / Fraction(float(out.scale)) for s in slopes]


def add_shuffle(ctx: ImportContext, node: onnx.NodeProto, x: Stream, groups: int) -> int:
    """A ChannelShuffle layer on the quantized feature map ``x``; its index."""
    h, w = x.shape[-2:]
    channels = int(np.prod(x.shape)) // (h * w)
    return ctx.add_layer(node, ChannelShuffle(
        f"shuffle{len(ctx.layers)}", (x.producer,), (h, w, channels), fmt=x.fmt,
        groups=groups))


def thresholding_view(ctx: ImportContext, node: onnx.NodeProto, x: Stream) -> Derived:
    """The reals of the quantized stream ``x`` as the float output of a thresholding layer
    of their own, whose thresholds the next quantizer sets (an identity accumulator: the
    input values)."""
    grid = x.fmt.grid()
    shape = channel_last(x.shape)
    index = ctx.add_layer(node, Thresholding(
        f"requant{len(ctx.layers)}", (x.producer,), shape,
        acc_fmt=Int.spanning(grid.lo, grid.hi), in_fmt=x.fmt))
    return Derived(index, Chain(shape[-1]).then(x.reals(shape[-1])), x.shape)


def reopen(ctx: ImportContext, node: onnx.NodeProto, x: Stream) -> Derived:
    """Float math on a quantized tensor. On a layer's fresh output, that quantizer joins the
    chain and the layer's thresholds come from the next quantizer instead; on any other
    (a Concat's output, one another layer reads too: onnxruntime's BatchNormalization after
    a DenseNet Concat) a thresholding layer of its own computes the float ops and the next
    quantizer."""
    if x.producer < 0:
        raise ctx.fail(node, f"{source_op(node)} on the quantized model input is not "
                       "supported; apply it before the input quantizer.")
    if not reopenable(ctx, node, x):
        if x.order is not None or x.perm:
            raise ctx.fail(node, f"{source_op(node)} on a flattened or transposed quantized "
                           "tensor that is not a layer's fresh output; put it before the "
                           "Flatten/Transpose.")
        return thresholding_view(ctx, node, x)
    chain, quantizer = ctx.requant_sources.pop(x.producer)
    ctx.layers[x.producer].requant = None
    chain = chain.then(Requantize(quantizer)).then(x.reals(chain.channels))
    return Derived(x.producer, chain, x.shape)


def reopenable(ctx: ImportContext, node: onnx.NodeProto, x: Stream) -> bool:
    """Whether ``x`` is the fresh output of a layer's quantizer that float ops in ``node``
    may reopen."""
    return x.producer in ctx.requant_sources and x.producer not in ctx.consumed and \
        not read_elsewhere(ctx, node, x)


def read_elsewhere(ctx: ImportContext, node: onnx.NodeProto, x: Stream) -> bool:
    """Whether a node other than ``node`` reads the quantized stream ``x`` (through any
    tensor that carries it so far) and does not just pass it on: reopening the layer's
    quantizer would change what that node reads (DenseNet: a DequantizeLinear read by a
    BatchNormalization and by a later Concat)."""
    names = {name for name, v in ctx.values.items()
             if isinstance(v, Stream) and v.producer == x.producer}
    return any(reader is not node and not all(o in names for o in reader.output if o)
               for reader in ctx.readers(names))


def rescaled(ctx: ImportContext, node: onnx.NodeProto, x: Stream, op: str,
             k: Fraction) -> Stream:
    """A quantized stream times, or plus, a scalar (as after FINN's MultiThreshold):
    the same values with another scale or zero point, when those stay exact."""
    scale = as_fractions(x.scale, x.scale.size)
    if op in ("Mul", "Div"):
        if k <= 0:
            raise ctx.fail(node, f"{op} of a quantized stream by {float(k):g}: only "
                           "positive factors keep it a stream.")
        scale = [s * k if op == "Mul" else s / k for s in scale]
        if any(Fraction(float(np.float32(s))) != s for s in scale):
            raise ctx.fail(node, f"the scale {describe_scale(x.scale)} {op} {float(k):g} is "
                           "not exactly a float32; use power-of-two factors.")
        return replace(x, scale=np.array([float(s) for s in scale]))
    shifts = {(k if op == "Add" else -k) / s for s in scale}
    shift = shifts.pop()
    if shifts or shift.denominator != 1 or x.fmt.grid().frac_bits:
        raise ctx.fail(node, f"{op} of {float(k):g} to a quantized stream of scale "
                       f"{describe_scale(x.scale)} is not a whole number of steps (the same "
                       "in every channel); it cannot stay exact.")
    return replace(x, zero_point=x.zero_point - int(shift))
