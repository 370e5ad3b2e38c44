"""Quantizers applied to tracked tensors, shared by every dialect's quantization ops.

A quantizer on the float model input becomes the host's input quantizer; on a layer's
float output (a :class:`Derived` chain), that layer's exact thresholds; on a quantized
stream of another scale, a thresholding layer of its own. Float math after a layer's
quantizer reopens it (:func:`reopen`): the thresholds then come from the next quantizer.
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
from bitloom.frontend.values import Derived, FloatInput, PendingConcat, Stream, Value, channel_last
from bitloom.ir import (
    Affine,
    Chain,
    InputQuantizer,
    MaxPool,
    Quantizer,
    Thresholding,
    Thresholds,
    derive_thresholds,
)
from bitloom.ir.elementwise import Requantize, as_fractions

#: thresholds grow as 2**bits per channel; wider requantization needs a
#: scale-round-clip unit, which the hardware does not have yet
MAX_THRESHOLD_BITS = 8


def quantize(ctx: ImportContext, node: onnx.NodeProto, x: Value,
             quantizer: Quantizer) -> Value:
    """A quantizer applied to ``x``: input quantizer, requantization or (weights) folded."""
    if isinstance(x, Stream) and x.fmt == quantizer.fmt and x.scale.size == 1 and \
            float(x.scale[0]) == quantizer.scale and x.zero_point == quantizer.zero_point:
        return x  # values already on this grid and in range: the quantizer is the identity
    if isinstance(x, PendingConcat):
        return concat_layer(ctx, node, [quantize(ctx, node, p, quantizer) for p in x.parts])
    if isinstance(x, FloatInput):
        if ctx.input_quant is not None:
            raise ctx.fail(node, "the model input is quantized twice.")
        ctx.input_quant = InputQuantizer(x.name, x.shape, x.flat_shape, quantizer, x.perm,
                                         x.steps)
        return Stream(-1, quantizer.fmt, np.array([quantizer.scale]),
                      quantizer.zero_point, x.flat_shape)
    return requantize(
        ctx, node, x, quantizer.fmt,
        lambda chain, acc: derive_thresholds(chain, quantizer, acc),
        quantizer.scale, quantizer.zero_point, quantizer)


def requantize(ctx: ImportContext, node: onnx.NodeProto, x: Value, fmt: Format,
               table_for: Callable[[Chain, Int], Thresholds], scale: float,
               zero_point: int, quantizer: Quantizer | None = None) -> Stream:
    """Thresholds ``table_for(chain, acc_fmt)`` on ``x``: the requantization of the layer
    computing ``x``, or a thresholding layer of its own on a quantized stream. The
    result holds ``fmt`` values, real ``scale * (value - zero_point)``; ``quantizer`` is
    the ONNX quantizer it implements, if any (float ops may then reopen it)."""
    if isinstance(x, PendingConcat):
        return concat_layer(ctx, node, [
            requantize(ctx, node, p, fmt, table_for, scale, zero_point, quantizer)
            for p in x.parts])
    if isinstance(x, Derived):
        return _layer_thresholds(ctx, node, x, fmt, table_for, scale, zero_point, quantizer)
    if isinstance(x, Stream):  # onto another scale or format: a thresholding layer
        if x.scale.size != 1:
            raise ctx.fail(node, "re-quantizing needs a per-tensor input scale.")
        grid = x.fmt.grid()
        shape = channel_last(x.shape)
        index = ctx.add_layer(node, Thresholding(
            f"requant{len(ctx.layers)}", (x.producer,), shape,
            acc_fmt=Int.spanning(grid.lo, grid.hi), in_fmt=x.fmt))
        s = as_fractions(x.scale, 1)[0]
        n = shape[-1]
        chain = Chain(n).then(Affine([s / 2 ** grid.frac_bits] * n, [-s * x.zero_point] * n))
        out = requantize(ctx, node, Derived(index, chain, x.shape), fmt, table_for,
                         scale, zero_point, quantizer)
        return replace(out, order=x.order)  # element-wise: the stream order stays
    raise ctx.fail(node, "this quantizer's input is not a tensor bitloom can quantize.")


def _layer_thresholds(ctx: ImportContext, node: onnx.NodeProto, x: Derived, fmt: Format,
                      table_for: Callable[[Chain, Int], Thresholds], scale: float,
                      zero_point: int, quantizer: Quantizer | None) -> Stream:
    """The thresholds of the layer computing ``x``, then the MaxPools deferred past them."""
    if x.producer < 0:
        raise ctx.fail(node, "a per-channel float view of the model input cannot be "
                       "quantized again; quantize the input per tensor.")
    layer = ctx.layers[x.producer]
    if layer.requant is not None:
        raise ctx.fail(node, "a layer output is quantized twice.")
    if fmt.bits > MAX_THRESHOLD_BITS:
        raise ctx.fail(node, f"requantizing a layer output to {fmt} is not "
                       f"supported yet (at most {MAX_THRESHOLD_BITS} bits); "
                       "quantize activations to 8 bits or fewer.")
    layer.requant = table_for(x.chain, layer.acc_fmt)
    if quantizer is not None:
        ctx.requant_sources[x.producer] = (x.chain, quantizer)
    out = Stream(x.producer, fmt, np.array([scale]), zero_point, x.shape)
    if x.max_pools:
        if any(x.chain.direction(c) < 0 for c in range(x.chain.channels)):
            raise ctx.fail(node, "a MaxPool before this quantizer does not commute "
                           "with the decreasing float ops between them.")
        for window in x.max_pools:
            in_shape = (*window.in_hw, x.chain.channels)
            window = replace(window, pad_value=fmt.grid().lo)
            index = ctx.add_layer(node, MaxPool(
                f"maxpool{len(ctx.layers)}", (out.producer,), in_shape,
                fmt=fmt, window=window))
            out = replace(out, producer=index)
    return out


def reopen(ctx: ImportContext, node: onnx.NodeProto, x: Stream) -> Derived:
    """Float math on a layer's quantized output: that quantizer joins the chain, and the
    layer's thresholds will come from the next quantizer instead."""
    if x.producer < 0:
        raise ctx.fail(node, f"{source_op(node)} on the quantized model input is not "
                       "supported; apply it before the input quantizer.")
    if x.producer not in ctx.requant_sources or x.producer in ctx.consumed:
        raise ctx.fail(node, f"{source_op(node)} on a quantized tensor that is not the fresh "
                       "output of a layer with an accumulator; put a quantizer after it.")
    chain, quantizer = ctx.requant_sources.pop(x.producer)
    ctx.layers[x.producer].requant = None
    n, s = chain.channels, as_fractions(x.scale, 1)[0]
    step = s / 2 ** x.fmt.grid().frac_bits
    chain = chain.then(Requantize(quantizer)).then(Affine([step] * n,
                                                          [-s * x.zero_point] * n))
    return Derived(x.producer, chain, x.shape)


def reopenable(ctx: ImportContext, x: Stream) -> bool:
    """Whether ``x`` is the fresh output of a layer's quantizer that float ops may reopen."""
    return x.producer in ctx.requant_sources and x.producer not in ctx.consumed


def rescaled(ctx: ImportContext, node: onnx.NodeProto, x: Stream, op: str,
             k: Fraction) -> Stream:
    """A quantized stream times, or plus, a scalar (as after FINN's MultiThreshold):
    the same values with another scale or zero point, when those stay exact."""
    s = as_fractions(x.scale, 1)[0]
    if op in ("Mul", "Div"):
        if k <= 0:
            raise ctx.fail(node, f"{op} of a quantized stream by {float(k):g}: only "
                           "positive factors keep it a stream.")
        scale = s * k if op == "Mul" else s / k
        if Fraction(float(np.float32(scale))) != scale:
            raise ctx.fail(node, f"the scale {float(s):g} {op} {float(k):g} is not "
                           "exactly a float32; use power-of-two factors.")
        return replace(x, scale=np.array([float(scale)]))
    shift = (k if op == "Add" else -k) / s
    if shift.denominator != 1 or x.fmt.grid().frac_bits:
        raise ctx.fail(node, f"{op} of {float(k):g} to a quantized stream of scale "
                       f"{float(s):g} is not a whole number of steps; it cannot stay exact.")
    return replace(x, zero_point=x.zero_point - int(shift))
