"""Weighted layers: MatMul, Gemm and Conv (dense, grouped and depthwise).

Each becomes one integer layer (:class:`~bitloom.ir.MatrixVector` or
:class:`~bitloom.ir.DepthwiseConv`) summing ``weights * inputs`` on integer grids; its float
output ``scale_x * scale_w[c] * (acc - zero_point * colsum[c])`` starts the per-channel
chain that the next quantizer turns into thresholds. The QOperator ops reuse
:func:`dense` and :func:`convolution`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from fractions import Fraction
from functools import reduce
from math import gcd, lcm

import numpy as np
import onnx

from bitloom.formats import Format, Int, accumulator_grid
from bitloom.frontend.context import ImportContext
from bitloom.frontend.joins import joined
from bitloom.frontend.registry import ONNX, handles
from bitloom.frontend.spatial import padded_window
from bitloom.frontend.values import (
    Constant,
    Derived,
    QuantConstant,
    Stream,
    Value,
    attributes,
    channel_last,
    describe_scale,
)
from bitloom.ir import Affine, AnyLayer, Chain, DepthwiseConv, MatrixVector
from bitloom.ir.elementwise import as_fractions

#: the refusal of a layer reading an unquantized tensor (the float model input, often)
NOT_QUANTIZED = ("its input is not quantized; put a quantizer before it, or, if it reads the "
                 "float model input, declare how inputs arrive: --input-format uint8 "
                 "--input-scale 1/255 for 8-bit images (bitloom.load(..., input_format=, "
                 "input_scale=)).")


def weights_of(ctx: ImportContext, node: onnx.NodeProto, v: Value | None) -> QuantConstant:
    """The weight operand of a MatMul/Gemm/Conv: it must be quantized."""
    if isinstance(v, QuantConstant):
        return v
    if isinstance(v, Constant):
        raise ctx.fail(node, "its weights are float; quantize them (e.g. a QONNX Quant).")
    raise ctx.fail(node, "multiplying two activation tensors is not supported.")


@handles(ONNX, "MatMul", "Gemm")
def matmul(ctx: ImportContext, node: onnx.NodeProto, ins: list[Value | None]) -> Derived:
    attrs = attributes(node)
    if attrs.get("transA", 0):
        raise ctx.fail(node, "transA=1 is not supported.")
    w = weights_of(ctx, node, ins[1])
    x = dense(ctx, node, joined(ctx, ins[0]), w, bool(attrs.get("transB", 0)))
    n = x.chain.channels
    if node.op_type == "Gemm":
        alpha, beta = attrs.get("alpha", 1.0), attrs.get("beta", 1.0)
        chain = x.chain.then(Affine(ctx.exact(node, alpha, n, "alpha"), [Fraction(0)] * n))
        if len(ins) > 2 and ins[2] is not None:
            bias = ctx.const_input(node, ins[2], "bias C")
            if bias.size not in (1, n):
                raise ctx.fail(node, "bias C must be per output channel.")
            shift = ctx.exact(node, np.float32(beta) * bias, n, "bias C times beta")
            chain = chain.then(Affine([Fraction(1)] * n, shift))
        x = Derived(x.producer, chain, x.shape)
    return x


def dense(ctx: ImportContext, node: onnx.NodeProto, x: Value | None, w: QuantConstant,
          trans_b: bool) -> Derived:
    """A new MatrixVector layer; its float output is ``scale_x * scale_w * (acc - zp)``.
    A per-sample ``(rows, K)`` input (a rank-3 A of MatMul) is ``rows`` vectors, each
    multiplied by the matrix, or by its sample's own matrix (see :func:`matrices`)."""
    if not isinstance(x, Stream):
        raise ctx.fail(node, NOT_QUANTIZED)
    matrix = node.op_type not in ("Gemm", "QGemm")  # MatMul broadcasts a rank-3 A
    if len(x.shape) not in ((1, 2) if matrix else (1,)):
        raise ctx.fail(node, f"input of per-sample shape {x.shape}: only vectors"
                       f"{' and (rows, K) matrices' if matrix else ''} map onto "
                       f"{node.op_type}; flatten the tensor first.")
    values, wscale = matrices(ctx, node, x, w)
    if trans_b:
        values = values.T
        wscale = wscale.T if wscale.ndim == 2 else wscale
    k, n = values.shape[-2:]
    if k != x.shape[-1]:
        raise ctx.fail(node, f"weights have {k} rows for an input of {x.shape[-1]}.")
    if wscale.size not in (1, n) or (wscale.ndim == 2 and wscale.shape[0] != 1):
        raise ctx.fail(node, "weight scales must be per-tensor or per output channel.")
    if x.order is not None:  # the input is a flattened feature map, streamed channel-last
        values = values[x.order]
    rows = x.shape[0] if len(x.shape) == 2 else 1
    per_sample = values.ndim == 3
    return weighted(
        ctx, node, x, values, as_fractions(wscale, n), w.fmt, (*x.shape[:-1], n),
        lambda index, acc, weights, w_fmt: MatrixVector(
            f"mvu{index}", (x.producer,), x.shape if rows > 1 else x.shape[-1:], acc_fmt=acc,
            weights=weights, in_fmt=x.fmt, w_fmt=w_fmt, rows=rows,
            in_zero_point=x.zero_point if per_sample else 0),
        zero_in_layer=per_sample)


def matrices(ctx: ImportContext, node: onnx.NodeProto, x: Stream,
             w: QuantConstant) -> tuple[np.ndarray, np.ndarray]:
    """The weights as one ``(K, N)`` matrix, or ``(G, K, N)``, one per sample, and their
    scale. ONNX MatMul broadcasts a rank-3 B against a rank-3 A along axis 0, which
    bitloom streams as independent samples: a leading axis of 1 is one matrix for all,
    one of the model's batch size a matrix per sample; other batched Bs mix samples."""
    values, wscale = w.values, np.asarray(w.scale, dtype=np.float32)
    if values.ndim == 3 and len(x.shape) == 2:
        groups = values.shape[0]
        if wscale.ndim == 3:
            if wscale.shape[0] != 1:
                raise ctx.fail(node, f"weight scales of shape {wscale.shape} vary along "
                               "B's leading axis; only per-tensor or per-column scales "
                               "are supported.")
            wscale = wscale[0]
        if groups == 1:
            return values[0], wscale
        batch = ctx.declared_batch()
        if batch != groups:
            declared = "leaves it symbolic" if batch is None else f"declares {batch}"
            raise ctx.fail(node, f"B of shape {values.shape} holds one matrix per index "
                           "of axis 0, the batch axis, for a batch of exactly "
                           f"{groups} samples; input {ctx.graph_input.name!r} "
                           f"{declared}. Export the model with a fixed batch size of "
                           f"{groups} (or one matrix for every sample).")
        return values, wscale
    if values.ndim != 2:
        raise ctx.fail(node, f"B of shape {values.shape} does not map onto a streamed "
                       f"layer for an input of per-sample shape {x.shape} (batch axis "
                       "0): bitloom maps a 2-D B, or for a rank-3 input a rank-3 B with "
                       "one matrix for every sample or one per sample.")
    return values, wscale


#: a layer mixing channels absorbs per-channel input scales as integer multipliers of its
#: weights, while the weights stay this narrow
MAX_FOLDED_WEIGHT_BITS = 16


def weighted(ctx: ImportContext, node: onnx.NodeProto, x: Stream, values: np.ndarray,
             wscale: list[Fraction], w_fmt: Format, shape: tuple[int, ...],
             make: Callable[[int, Int, np.ndarray, Format], AnyLayer],
             zero_in_layer: bool = False, reads: np.ndarray | None = None) -> Derived:
    """A layer ``make(index, acc_fmt, weights, w_fmt)`` summing ``values[k, c] * x[k]``
    over ``k`` (dense, conv and depthwise): its float output is ``scale_x * scale_w[c] *
    (acc - zp * colsum[c])``, or with ``zero_in_layer`` (the layer subtracts the input's
    zero point) ``scale_x * scale_w[c] * acc``. A per-channel ``scale_x`` joins the
    per-channel scale where output channel ``c`` reads one input channel, ``reads[c]``
    (depthwise convolutions, groups of one input channel); layers mixing channels fold it
    into their weights (:func:`folded_input_scales`)."""
    if x.zero_point and x.fmt.grid().frac_bits:
        raise ctx.fail(node, "a zero point on a non-integer input is not supported.")
    # acc counts units of the product grid: 2**-(frac_w + frac_x)
    unit = Fraction(1, 2 ** (w_fmt.grid().frac_bits + x.fmt.grid().frac_bits))
    if x.scale.size == 1:
        in_scale = as_fractions(x.scale, len(wscale))
    elif reads is not None:
        scale = as_fractions(x.scale, x.scale.size)
        in_scale = [scale[c] for c in reads]
    else:
        values, w_fmt, common = folded_input_scales(ctx, node, x, values, w_fmt)
        in_scale = [common] * len(wscale)
    a = [sx * s * unit for sx, s in zip(in_scale, wscale, strict=True)]
    in_fmt = x.fmt
    if zero_in_layer:
        b = [Fraction(0)] * len(a)
        if x.zero_point:  # the product's operand is x - zp
            grid = x.fmt.grid()
            in_fmt = Int.spanning(int(grid.lo) - x.zero_point, int(grid.hi) - x.zero_point)
    else:
        colsum = values.sum(axis=0)
        b = [-ai * x.zero_point * int(cs) for ai, cs in zip(a, colsum, strict=True)]
    grid = accumulator_grid(w_fmt, in_fmt, values.shape[-2])
    layer = make(len(ctx.layers), Int.spanning(grid.lo, grid.hi), values.astype(np.int64),
                 w_fmt)
    index = ctx.add_layer(node, layer)
    return Derived(index, Chain(len(a)).then(Affine(a, b)), shape)


def folded_input_scales(ctx: ImportContext, node: onnx.NodeProto, x: Stream,
                        values: np.ndarray, w_fmt: Format) -> tuple[np.ndarray, Int, Fraction]:
    """A layer mixing channels sums ``w[k, c] * scale_x[k] * x[k]``, which one integer
    accumulator holds exactly only when every input scale is an integer multiple
    ``m[k] * u`` of one unit (power-of-two scales are): the weights become ``w * m``, the
    input scale ``u``. Rows ``k`` read input channel ``k % channels`` (im2col order)."""
    scale = as_fractions(x.scale, x.scale.size)
    unit = Fraction(reduce(gcd, (s.numerator for s in scale)),
                    reduce(lcm, (s.denominator for s in scale)))
    multipliers = [int(s / unit) for s in scale]
    grid = w_fmt.grid()
    if isinstance(w_fmt, Int) and max(-grid.lo, grid.hi) * max(multipliers) < \
            2 ** (MAX_FOLDED_WEIGHT_BITS - 1):
        rows = np.arange(values.shape[-2]) % len(multipliers)
        folded = values.astype(np.int64) * np.array(multipliers, dtype=np.int64)[rows, None]
        return folded, Int.spanning(min(int(folded.min()), 0), max(int(folded.max()), 0)), unit
    raise ctx.fail(node, f"per-channel input scale: {node.op_type} sums inputs of "
                   f"{len(set(scale))} different scales ({describe_scale(x.scale)}), which are "
                   "not small integer multiples of one unit, so no integer accumulator sums "
                   "them exactly (depthwise convolutions, pooling and element-wise ops absorb "
                   "per-channel scales, layers mixing channels do not). Export with a "
                   "per-tensor scale on the activation quantizer before it (Brevitas: "
                   "scaling_per_output_channel=False), or with power-of-two scales.")


@handles(ONNX, "Conv")
def conv(ctx: ImportContext, node: onnx.NodeProto, ins: list[Value | None]) -> Derived:
    x = joined(ctx, ins[0])
    if not isinstance(x, Stream):
        raise ctx.fail(node, NOT_QUANTIZED)
    out = convolution(ctx, node, x, weights_of(ctx, node, ins[1]))
    if len(ins) > 2 and ins[2] is not None:
        m = out.chain.channels
        bias = ctx.const_input(node, ins[2], "bias B").reshape(-1)
        if bias.size != m:
            raise ctx.fail(node, "bias B must have one value per output channel.")
        out = out.then(Affine([Fraction(1)] * m, ctx.exact(node, bias, m, "bias B")))
    return out


def convolution(ctx: ImportContext, node: onnx.NodeProto, x: Stream,
                w: QuantConstant) -> Derived:
    """A Conv layer (group 1) or a depthwise one (group = C = M), without bias."""
    if w.values.ndim != 4:
        raise ctx.fail(node, f"weights of rank {w.values.ndim}: only 2-D convolutions "
                       "(4-D weights) are supported.")
    m, c_per_group, kh, kw = w.values.shape
    c = x.shape[0] if len(x.shape) == 3 else -1
    group = int(attributes(node).get("group", 1))
    window = padded_window(ctx, node, x, (kh, kw))
    wscale = np.asarray(w.scale, dtype=np.float32)
    if wscale.size not in (1, m) or (wscale.size == m and wscale.reshape(-1).size != m):
        raise ctx.fail(node, "weight scales must be per-tensor or per output channel.")
    if wscale.ndim and wscale.size == m and wscale.shape[0] != m:
        raise ctx.fail(node, "weight scales must be per output channel (axis 0).")
    scales = as_fractions(wscale.reshape(-1), m)
    shape = (m, *window.out_hw)
    if group < 1 or c % group or m % group or c_per_group * group != c:
        raise ctx.fail(node, f"group={group}: weights expect {c_per_group} input channels "
                       f"per group, the input has {c} channels and {m} outputs.")
    depthwise = group == c == m and group > 1
    if group > 1 and not depthwise:
        # a grouped convolution is an ordinary one whose weights are zero across groups
        full = np.zeros((m, c, kh, kw), dtype=np.int64)
        mg = m // group
        for g in range(group):
            full[g * mg:(g + 1) * mg, g * c_per_group:(g + 1) * c_per_group] = \
                w.values[g * mg:(g + 1) * mg]
        w = replace(w, values=full)
    if depthwise:  # (kh, kw) rows of per-channel taps
        values = w.values[:, 0].transpose(1, 2, 0).reshape(kh * kw, c)
        layer_type, name = DepthwiseConv, "dwconv"
    else:  # (kh, kw, c) rows
        values = w.values.transpose(2, 3, 1, 0).reshape(kh * kw * c, m)
        layer_type, name = MatrixVector, "conv"
    reads = np.arange(m) // (m // group) if c_per_group == 1 else None
    return weighted(
        ctx, node, x, values, scales, w.fmt, shape,
        lambda index, acc, weights, w_fmt: layer_type(
            f"{name}{index}", (x.producer,), channel_last(x.shape), acc_fmt=acc,
            weights=weights, in_fmt=x.fmt, w_fmt=w_fmt, window=window),
        reads=reads)

