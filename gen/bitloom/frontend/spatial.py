"""Sliding windows and pooling: MaxPool, AveragePool, GlobalAveragePool, ReduceMean.

Feature maps are ``(C, H, W)`` per sample in ONNX and stream channel-last in hardware; the
IR layers (:mod:`bitloom.ir.layers`) use the hardware order. Pooling is exact on the
integer values because it sits where the model quantizes: max pooling commutes with every
non-decreasing quantizer, average pooling is a sum whose division joins the next
requantization; both keep one scale per channel.
"""

from __future__ import annotations

import math
from dataclasses import replace
from fractions import Fraction

import onnx

from bitloom.formats import Int
from bitloom.frontend.context import ImportContext
from bitloom.frontend.float_joins import fixed_point_stream
from bitloom.frontend.islands import integer_stream
from bitloom.frontend.joins import joined
from bitloom.frontend.registry import ONNX, handles
from bitloom.frontend.values import Derived, Stream, Value, attributes, channel_last
from bitloom.ir import Affine, Chain, MaxPool, SumPool, Window
from bitloom.ir.elementwise import Requantize


def sliding_window(ctx: ImportContext, node: onnx.NodeProto, x_shape: tuple[int, ...],
                   kernel: tuple[int, int], pad_value: int) -> Window:
    """The sliding window of a Conv/Pool node over a ``(C, H, W)`` input."""
    attrs = attributes(node)
    if len(x_shape) != 3:
        raise ctx.fail(node, f"expected a (C, H, W) feature map, got shape {x_shape}.")
    in_hw = (x_shape[1], x_shape[2])
    stride = tuple(attrs.get("strides", (1, 1)))
    dilation = tuple(attrs.get("dilations", (1, 1)))
    if len(stride) != 2 or len(dilation) != 2 or len(kernel) != 2:
        raise ctx.fail(node, "only 2-D windows are supported.")
    if min(stride) < 1 or min(dilation) < 1 or min(kernel) < 1:
        raise ctx.fail(node, f"kernel {list(kernel)}, strides {list(stride)} and "
                       f"dilations {list(dilation)} must all be positive.")
    auto = attrs.get("auto_pad", "NOTSET")
    if auto in ("NOTSET", ""):
        pads = tuple(attrs.get("pads", (0, 0, 0, 0)))
        if len(pads) != 4 or min(pads) < 0:
            raise ctx.fail(node, f"pads {list(pads)}: expected 4 non-negative values.")
        pads = (pads[0], pads[1], pads[2], pads[3])
    elif auto == "VALID":
        pads = (0, 0, 0, 0)
    elif auto in ("SAME_UPPER", "SAME_LOWER"):
        begin, end = [], []
        for size, k, s, d in zip(in_hw, kernel, stride, dilation, strict=True):
            total = max((-(-size // s) - 1) * s + (k - 1) * d + 1 - size, 0)
            small, large = total // 2, total - total // 2
            begin.append(small if auto == "SAME_UPPER" else large)
            end.append(large if auto == "SAME_UPPER" else small)
        pads = (begin[0], begin[1], end[0], end[1])
    else:
        raise ctx.fail(node, f"auto_pad={auto!r} is not an ONNX padding mode.")
    window = Window(in_hw, (int(kernel[0]), int(kernel[1])),
                    (int(stride[0]), int(stride[1])), tuple(int(p) for p in pads),
                    (int(dilation[0]), int(dilation[1])), pad_value)
    if attrs.get("ceil_mode", 0):
        ceil_hw = tuple(-(-(size + p0 + p1 - d * (k - 1) - 1) // s) + 1
                        for size, p0, p1, k, s, d in zip(in_hw, pads[:2], pads[2:],
                                                         window.kernel, stride, dilation,
                                                         strict=True))
        if ceil_hw != window.out_hw:
            raise ctx.fail(node, "ceil_mode=1 with partial windows is not supported.")
    if min(window.out_hw) < 1:
        raise ctx.fail(node, f"the window does not fit the input {in_hw}.")
    return window


def pad_of(ctx: ImportContext, node: onnx.NodeProto, x: Stream) -> int:
    """The grid integer of real zero: what zero padding holds in the quantized domain."""
    if x.zero_point and x.fmt.grid().frac_bits:
        raise ctx.fail(node, "a zero point on a non-integer input is not supported.")
    return x.zero_point


def padded_window(ctx: ImportContext, node: onnx.NodeProto, x: Stream,
                  kernel: tuple[int, ...]) -> Window:
    """The window of ``node``, padded with the value of real zero, which must be one of
    the input format's values (a zero point may lie outside, e.g. after a
    MultiThreshold's out_bias)."""
    window = sliding_window(ctx, node, x.shape, kernel, pad_of(ctx, node, x))
    grid = x.fmt.grid()
    if any(window.pads) and not grid.lo <= x.zero_point <= grid.hi:
        raise ctx.fail(node, f"its input's real zero is value {x.zero_point}, outside "
                       f"{x.fmt.name}: zero padding cannot be represented.")
    return window


@handles(ONNX, "MaxPool")
def max_pool(ctx: ImportContext, node: onnx.NodeProto, ins: list[Value | None]) -> Stream | Derived:
    """The maximum commutes with every non-decreasing function, so with any positive scale,
    one per channel too."""
    x = joined(ctx, ins[0])
    if len(node.output) > 1 and any(node.output[1:]):
        raise ctx.fail(node, "MaxPool's Indices output is not supported.")
    kernel = tuple(attributes(node).get("kernel_shape", ()))
    if isinstance(x, Derived):  # pooled after the quantizer that follows
        window = sliding_window(ctx, node, x.shape, kernel, 0)
        return replace(x, shape=(x.shape[0], *window.out_hw),
                       max_pools=(*x.max_pools, window),
                       after_pools=x.after_pools or Chain(x.chain.channels))
    if not isinstance(x, Stream):
        raise ctx.fail(node, "MaxPool of this tensor is not supported; quantize it first.")
    window = sliding_window(ctx, node, x.shape, kernel, x.fmt.grid().lo)
    index = ctx.add_layer(node, MaxPool(f"maxpool{len(ctx.layers)}", (x.producer,),
                                        channel_last(x.shape), fmt=x.fmt, window=window))
    return replace(x, producer=index, shape=(x.shape[0], *window.out_hw))


@handles(ONNX, "AveragePool", "GlobalAveragePool", "ReduceMean")
def average_pool(ctx: ImportContext, node: onnx.NodeProto, ins: list[Value | None]) -> Derived:
    """AveragePool, GlobalAveragePool and ReduceMean over H, W: a sum pool whose
    division by the window size joins the chain (and so the next requantization). A layer's
    float output is pooled as its exact integers (:mod:`bitloom.frontend.islands`); one after
    its own quantizer and float ops (onnxruntime's QOperator BatchNormalization and ReLU
    before a GlobalAveragePool) in fixed point (:func:`~.float_joins.fixed_point_stream`)."""
    x, op, attrs = joined(ctx, ins[0]), node.op_type.removeprefix("QLinear"), attributes(node)
    if isinstance(x, Derived):  # a float island (ResNet-50's Sum -> Relu -> AveragePool)
        rounded = any(isinstance(op, Requantize) for op in x.chain.ops)
        x = fixed_point_stream(ctx, node, x) if rounded else integer_stream(ctx, node, x)
    if not isinstance(x, Stream):
        raise ctx.fail(node, f"{op} of an unquantized tensor cannot be computed exactly; "
                       "quantize the tensor before pooling.")
    if attrs.get("channels_last", 0):
        raise ctx.fail(node, "channels_last=1 is not supported; use NCHW.")
    if len(x.shape) != 3:
        raise ctx.fail(node, f"{op} needs a (C, H, W) feature map, got {x.shape}.")
    c, h, w = x.shape
    keep = True
    if op == "AveragePool":
        kernel = tuple(attrs.get("kernel_shape", ()))
        window = padded_window(ctx, node, x, kernel)
        if any(window.pads) and not attrs.get("count_include_pad", 0):
            return real_pixel_average(ctx, node, x, window)
    else:
        if op == "ReduceMean":
            axes = attrs.get("axes")
            if axes is None and len(ins) > 1 and ins[1] is not None:
                axes = ctx.const_input(node, ins[1], "axes").reshape(-1).tolist()
            if sorted(int(a) % 4 for a in (axes or [])) != [2, 3]:
                raise ctx.fail(node, f"ReduceMean over axes {axes}: only the spatial "
                               "axes (2, 3) are supported.")
            keep = bool(attrs.get("keepdims", 1))
        window = sliding_window(ctx, node, x.shape, (h, w), 0)
    grid = x.fmt.grid()
    size = window.size
    acc = Int.spanning(min(0, grid.lo * size), max(0, grid.hi * size))
    index = ctx.add_layer(node, SumPool(
        f"avgpool{len(ctx.layers)}", (x.producer,), channel_last(x.shape), acc_fmt=acc,
        in_fmt=x.fmt, window=window))
    chain = Chain(c).then(Affine([Fraction(1, size)] * c, [Fraction(0)] * c)).then(x.reals(c))
    shape = (c, *window.out_hw) if keep else (c,)
    return Derived(index, chain, shape)



def real_pixel_average(ctx: ImportContext, node: onnx.NodeProto, x: Stream,
                       window: Window) -> Derived:
    """A padded AveragePool with ``count_include_pad=0``: each window divides by its count
    of real pixels, ``rows(oh) * cols(ow)``. The sum minus the padding's share is weighted
    by ``(Lr / rows) * (Lc / cols)``, with ``Lr``, ``Lc`` the least common multiples of the
    row and column counts, so every position divides by ``Lr * Lc`` in one requantization."""
    c = x.shape[0]
    rows, cols = window.real_counts()
    lr, lc = math.lcm(*rows), math.lcm(*cols)
    row_weights, col_weights = tuple(lr // r for r in rows), tuple(lc // k for k in cols)
    offset = window.size * window.pad_value
    grid = x.fmt.grid()
    top = max(row_weights) * max(col_weights)
    acc = Int.spanning(min(0, (grid.lo * window.size - offset) * top),
                       max(0, (grid.hi * window.size - offset) * top))
    index = ctx.add_layer(node, SumPool(
        f"avgpool{len(ctx.layers)}", (x.producer,), channel_last(x.shape), acc_fmt=acc,
        in_fmt=x.fmt, window=window, row_weights=row_weights, col_weights=col_weights,
        offset=offset))
    to_reals = Affine(x.reals(c).a, [Fraction(0)] * c)  # the offset took out the zero point
    chain = Chain(c).then(Affine([Fraction(1, lr * lc)] * c, [Fraction(0)] * c)).then(to_reals)
    return Derived(index, chain, (c, *window.out_hw))
