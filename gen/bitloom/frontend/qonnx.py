"""QONNX's quantizers (``Quant``/``IntQuant``, ``BipolarQuant``), as Brevitas exports them.

``Quant(x, scale, zero_point, bit_width)`` clips ``x / scale + zero_point`` to the integer
range, then rounds with ``rounding_mode``; its output is the dequantized float. On a
constant it yields quantized weights; on the graph input, the host-side input quantizer; on
a layer's float output, that layer's thresholds. A scale may also be one per channel of
an activation (Brevitas' ``scaling_per_output_channel``): the quantizer then reads each
channel divided by its scale, and what reads it absorbs the scales or refuses by name.

FINN's ``MultiThreshold(x, thresholds)`` counts the thresholds each value reaches
(``x >= t``) and returns ``out_scale * count + out_bias``: on a layer's float output it
becomes that layer's thresholds, on a quantized stream a thresholding layer, with the counts
as values of ``out_dtype``.
"""

from __future__ import annotations

import re
from dataclasses import replace
from fractions import Fraction

import numpy as np
import onnx

from bitloom.formats import TERNARY, Format, Int, normalize_rounding
from bitloom.formats.minifloat import float_quant_format
from bitloom.frontend.context import ImportContext
from bitloom.frontend.joins import concat_layer
from bitloom.frontend.quantize import channel_scales, quantize, requantize
from bitloom.frontend.registry import QONNX, handles
from bitloom.frontend.values import (
    Constant,
    Derived,
    FloatInput,
    PendingConcat,
    QuantConstant,
    Stream,
    Value,
    attributes,
)
from bitloom.ir import CLIP_THEN_ROUND, ROUND_THEN_SHIFT, Chain, Quantizer, Thresholds
from bitloom.ir.elementwise import Requantize
from bitloom.ir.quantizer import float32_quotient


@handles(QONNX, "MultiThreshold", inputs=2, layout="aware")
def multithreshold(ctx: ImportContext, node: onnx.NodeProto, ins: list[Value | None]) -> Stream:
    """``out_scale * count(x >= t) + out_bias`` with per-tensor or per-channel ``t``."""
    attrs = attributes(node)
    x = ins[0]
    if isinstance(x, FloatInput):
        raise ctx.fail(node, "MultiThreshold on the model input is not supported; "
                       "quantize the input with a Quant node.")
    if not isinstance(x, (Stream, Derived, PendingConcat)):
        raise ctx.fail(node, "MultiThreshold of this tensor is not supported; it must "
                       "follow a layer or a quantizer.")
    thresholds = ctx.const_input(node, ins[1], "thresholds", allow_inf=True)
    if thresholds.ndim != 2 or thresholds.shape[1] < 1:
        raise ctx.fail(node, f"thresholds of shape {list(thresholds.shape)}: expected "
                       "[channels or 1, count].")
    thresholds = thresholds.astype(np.float64)  # exact for every float type
    fmt = finn_datatype(ctx, node, str(attrs.get("out_dtype", "")))
    out_scale = Fraction(float(np.float32(attrs.get("out_scale", 1.0))))
    out_bias = Fraction(float(np.float32(attrs.get("out_bias", 0.0))))
    if out_scale <= 0:
        raise ctx.fail(node, f"out_scale {float(out_scale):g} must be positive.")
    # real = out_scale * count + out_bias = scale * (levels[offset + count] - zero_point)
    levels = [int(v) for v in fmt.grid_levels()]
    step = levels[1] - levels[0]
    scale = out_scale / step
    count = thresholds.shape[1]
    start = out_bias / scale
    if start.denominator != 1 or float(scale) != scale:
        raise ctx.fail(node, f"out_bias {float(out_bias):g} is not a whole number of "
                       f"output steps ({float(out_scale):g}); no integer stream holds "
                       "these outputs.")
    if count > len(levels) - 1:
        raise ctx.fail(node, f"{count} thresholds give {count + 1} output levels; "
                       f"out_dtype {fmt.name} has {len(levels)}.")
    offset = levels.index(int(start)) if int(start) in levels and \
        levels.index(int(start)) + count < len(levels) else 0
    zero_point = levels[offset] - int(start)
    shape = x.shape
    perm = getattr(x, "perm", None) or tuple(range(len(shape)))
    channels = shape[perm.index(0)] if shape else 1
    if thresholds.shape[0] not in (1, channels):
        raise ctx.fail(node, f"thresholds for {thresholds.shape[0]} channels; the tensor "
                       f"has {channels}.")
    layout = str(attrs.get("data_layout", "")) or \
        {1: "NC", 2: "NWC", 3: "NCHW"}.get(len(shape), "")
    axis = layout.index("C") if "C" in layout else 1
    if len(layout) not in (0, len(shape) + 1):
        raise ctx.fail(node, f"data_layout {layout!r} does not match a tensor of rank "
                       f"{len(shape) + 1}.")
    if thresholds.shape[0] > 1 and axis != 1 + perm.index(0):
        raise ctx.fail(node, f"data_layout {layout!r} puts channels on axis {axis}, but "
                       f"the tensor of shape {[1, *shape]} has its channels on axis "
                       f"{1 + perm.index(0)}.")

    def apply(x: Stream | Derived, t: np.ndarray) -> Stream:
        if isinstance(x, Stream) and x.order is not None and t.shape[0] > 1:
            t = t[x.order]  # a flattened feature map streams in the hardware's order
        return requantize(
            ctx, node, x, fmt,
            lambda chain, acc: count_thresholds(chain, acc, t, len(levels), offset, fmt),
            float(scale), zero_point)

    if isinstance(x, PendingConcat):  # each branch gets its channels' thresholds
        return concat_layer(ctx, node, [apply(p, t) for p, t in
                                        zip(x.parts, x.split(thresholds), strict=True)])
    out = apply(replace(x, perm=None), thresholds)
    return replace(out, perm=x.perm)


@handles(QONNX, "Trunc", inputs=2)
def qonnx_trunc(ctx: ImportContext, node: onnx.NodeProto, ins: list[Value | None]) -> Value:
    """``Trunc`` (v1: x, scale, zp, in_bits, out_bits; v2: x, scale, zp, in_bits,
    out_scale, out_bits): round onto the input grid, then drop low bits with
    ``rounding_mode`` (FLOOR by default) — two nested quantizers in one chain."""
    attrs = attributes(node)
    x = ins[0]
    if not isinstance(x, Derived):
        raise ctx.fail(node, "Trunc must follow a layer's float output (e.g. an "
                       "AveragePool); Trunc of this tensor is not supported.")
    version = next((o.version for o in ctx.model.opset_import if o.domain == node.domain),
                   1)
    v2 = version >= 2  # as qonnx's executor picks the implementation
    if len(ins) != (6 if v2 else 5):
        raise ctx.fail(node, f"Trunc of opset {version} ({'v2' if v2 else 'v1'}) takes "
                       f"{6 if v2 else 5} inputs, this node has {len(ins)}.")
    consts = [ctx.const_input(node, v, what).astype(np.float64).reshape(-1)
              for v, what in zip(ins[1:], ("scale", "zero point", "input bit width",
                                           *(("output scale",) if v2 else ()),
                                           "output bit width"), strict=False)]
    if any(c.size != 1 for c in consts):
        raise ctx.fail(node, "Trunc parameters must be scalars.")
    scale, zp, in_bits, out_bits = (float(consts[0][0]), consts[1][0], consts[2][0],
                                    consts[-1][0])
    if scale <= 0 or (v2 and not consts[3][0] > 0):
        raise ctx.fail(node, "its scales must be positive.")
    if zp != int(zp) or abs(zp) > 2**32 or out_bits not in range(1, 17) or \
            in_bits not in range(1, 33):
        raise ctx.fail(node, "Trunc needs an integer zero point, 1..32 input bits and "
                       "1..16 output bits.")
    in_bits, out_bits = int(in_bits), int(out_bits)
    try:
        rounding = normalize_rounding(str(attrs.get("rounding_mode", "FLOOR")))
    except ValueError as exc:
        raise ctx.fail(node, str(exc)) from None
    if v2:  # qonnx: trunc_scale = 2**round(log2(out_scale / scale))
        out_scale = float(np.float32(consts[3][0]))
        shift = round(float(np.log2(out_scale / scale)))
        fmt = Int(out_bits, bool(attrs.get("signed", 1)), bool(attrs.get("narrow", 0)))
        order = CLIP_THEN_ROUND
    else:  # v1 drops in_bits - out_bits and does not clamp
        shift, out_scale = in_bits - out_bits, scale
        fmt, order = Int(out_bits + 1, True), ROUND_THEN_SHIFT
    step = 2.0 ** shift
    if (zp / step) != int(zp / step):
        raise ctx.fail(node, "the zero point does not survive the truncation exactly.")
    grid = Quantizer(Int(min(in_bits + 8, 62), True), scale, int(zp), "round",
                     ROUND_THEN_SHIFT)
    on_grid = x.then(Requantize(grid))  # the integer on the input grid
    out = quantize(ctx, node, on_grid, Quantizer(fmt, step, 0, rounding, order))
    zero = int(zp / step) if v2 else int(zp)
    return replace(out, scale=np.array([out_scale], dtype=np.float64), zero_point=zero)


@handles(QONNX, "FloatQuant", inputs=2, layout="elementwise")
def qonnx_float_quant(ctx: ImportContext, node: onnx.NodeProto, ins: list[Value | None]) -> Value:
    """``FloatQuant(x, scale, exponent_bitwidth, mantissa_bitwidth, exponent_bias,
    max_val)``: a minifloat per QONNX's reference ``float_quant``."""
    attrs = attributes(node)
    ins = ins + [None] * (6 - len(ins))
    scale = ctx.const_input(node, ins[1], "scale").astype(np.float32)
    if np.any(scale <= 0) or not np.all(np.isfinite(scale)):
        raise ctx.fail(node, "its scale must be positive and finite.")
    params = [ctx.const_int(node, v, what, lo, hi) for v, what, lo, hi in
              ((ins[2], "exponent bit width", 0, 8), (ins[3], "mantissa bit width", 0, 16),
               (ins[4], "exponent bias", -256, 256))]
    max_val = None
    if ins[5] is not None:
        max_val = ctx.const_input(node, ins[5], "max_val").reshape(-1)
        if max_val.size != 1 or not max_val[0] > 0:
            raise ctx.fail(node, "its max_val must be one positive value.")
        max_val = float(max_val[0])
    if not attrs.get("saturation", 1):
        raise ctx.fail(node, "non-saturating FloatQuant (overflow to inf/NaN) cannot be "
                       "mapped to hardware; export with saturation=1.")
    try:
        fmt = float_quant_format(params[0], params[1], params[2], max_val,
                                 bool(attrs.get("has_inf", 0)),
                                 bool(attrs.get("has_nan", 0)), True)
        rounding = normalize_rounding(str(attrs.get("rounding_mode", "ROUND")))
    except ValueError as exc:
        raise ctx.fail(node, str(exc)) from None
    x = ins[0]
    if isinstance(x, Constant):
        return _qonnx_weights(x.value.astype(np.float32), scale, fmt, rounding)
    quantizer = Quantizer(fmt, float(scale.reshape(-1)[0]), 0, rounding, CLIP_THEN_ROUND)
    return quantize(ctx, node, x, quantizer, channel_scales(ctx, node, x, scale))


#: the widest quantizer of a constant folded at import (Brevitas' biases are int32; float64
#: holds every such grid value exactly)
MAX_CONSTANT_BITS = 32


@handles(QONNX, "Quant", "IntQuant", inputs=4, layout="elementwise")
@handles(QONNX, "BipolarQuant", inputs=2, layout="elementwise")
def qonnx_quant(ctx: ImportContext, node: onnx.NodeProto, ins: list[Value | None]) -> Value:
    """``Quant``/``IntQuant``/``BipolarQuant``: weights on a constant, a quantizer on a tensor."""
    attrs = attributes(node)
    scale = ctx.const_input(node, ins[1], "scale").astype(np.float32)
    if np.any(scale <= 0) or not np.all(np.isfinite(scale)):
        raise ctx.fail(node, "its scale must be positive and finite.")
    x = ins[0]
    if node.op_type == "BipolarQuant":
        fmt, zero_point, rounding = Int(1, signed=True), 0, "round"
    else:
        # a constant (an int32 bias) is folded here, whatever its width; a stream's quantizer
        # becomes hardware, up to 16 bits
        widest = MAX_CONSTANT_BITS if isinstance(x, Constant) else 16
        bits = ctx.const_int(node, ins[3], "bit width", 1, widest)
        zero_point = ctx.const_int(node, ins[2], "zero point", -2**16, 2**16)
        try:
            rounding = normalize_rounding(str(attrs.get("rounding_mode", "ROUND")))
        except ValueError as exc:
            raise ctx.fail(node, str(exc)) from None
        fmt = Int(bits, bool(attrs.get("signed", 1)), bool(attrs.get("narrow", 0)))
    if isinstance(x, Constant):
        if zero_point != 0:
            raise ctx.fail(node, "weights with a non-zero zero point are not supported.")
        return _qonnx_weights(x.value.astype(np.float32), scale, fmt, rounding)
    quantizer = Quantizer(fmt, float(scale.reshape(-1)[0]), zero_point, rounding,
                          CLIP_THEN_ROUND)
    return quantize(ctx, node, x, quantizer, channel_scales(ctx, node, x, scale))


def _qonnx_weights(w: np.ndarray, scale: np.ndarray, fmt: Format,
                   rounding: str) -> QuantConstant:
    """Weights: the float32 quotient ``w / scale`` (as qonnx and Brevitas compute it),
    clipped, then rounded exactly to grid integers."""
    quotient = np.atleast_1d(float32_quotient(w, np.broadcast_to(scale, w.shape)))
    values = Quantizer(fmt, 1.0, 0, rounding, CLIP_THEN_ROUND).apply_exactly(quotient)
    return QuantConstant(values.reshape(w.shape), scale, fmt)


def finn_datatype(ctx: ImportContext, node: onnx.NodeProto, name: str) -> Int:
    """The integer format of a FINN/QONNX ``DataType`` name (``INT4``, ``UINT8``,
    ``BIPOLAR``, ``BINARY``, ``TERNARY``)."""
    fixed = {"BIPOLAR": Int(1, signed=True), "BINARY": Int(1, signed=False), "TERNARY": TERNARY}
    if name in fixed:
        return fixed[name]
    match = re.fullmatch(r"(U?)INT(\d+)", name)
    if match is None or not 1 <= int(match[2]) <= 16 or name == "INT1":
        raise ctx.fail(node, f"out_dtype {name!r} is not supported; use INTn/UINTn "
                            "(n <= 16), BIPOLAR, BINARY or TERNARY.")
    return Int(int(match[2]), signed=not match[1])


def count_thresholds(chain: Chain, acc_fmt: Int, thresholds: np.ndarray, levels: int,
                     offset: int, fmt: Int) -> Thresholds:
    """Accumulator thresholds for ``offset + count(chain(acc) >= t)`` (a level index of
    ``fmt``): for each real threshold ``t`` the first accumulator value whose exact real
    value reaches it (the last, on a decreasing channel). Levels below ``offset`` are always
    reached, those past the threshold count never."""
    channels = chain.channels
    real = np.sort(np.broadcast_to(thresholds, (channels, thresholds.shape[1])), axis=1).T
    lo, hi = acc_fmt.min_int, acc_fmt.max_int
    wide = np.int64 if acc_fmt.bits <= 62 else object
    sign = np.array([1 if chain.direction(c) >= 0 else -1 for c in range(channels)], dtype=wide)
    # search a = sign * acc upward, where chain(sign * a) does not decrease; end = never
    start = np.array([lo if sg > 0 else -hi for sg in sign], dtype=wide)
    end = np.array([hi + 1 if sg > 0 else -lo + 1 for sg in sign], dtype=wide)
    a = np.broadcast_to(start, real.shape).astype(wide)
    b = np.broadcast_to(end, real.shape).astype(wide)
    while np.any(a < b):  # float64 bisection first; exact rational checks below settle it
        mid = (a + b) // 2
        ok = chain.approx((mid * sign).astype(np.float64)) >= real
        open_ = a < b
        b = np.where(open_ & ok, mid, b)
        a = np.where(open_ & ~ok, mid + 1, a)

    def reaches(candidate: int, t: Fraction, c: int) -> bool:
        return candidate >= end[c] or chain.exact(Fraction(candidate * int(sign[c])), c) >= t

    for (i, c), found in np.ndenumerate(a):
        if not np.isfinite(real[i, c]):
            continue  # +-inf: never / always, which the bisection found exactly
        t, found = Fraction(float(real[i, c])), int(found)
        while found > start[c] and reaches(found - 1, t, c):
            found -= 1
        while not reaches(found, t, c):
            found += 1
        a[i, c] = found
    counted = (a * sign).T  # [channels, thresholds] in accumulator units
    always = np.where(sign > 0, lo, hi).astype(wide)[:, None]
    never = np.where(sign > 0, hi + 1, lo - 1).astype(wide)[:, None]
    after = levels - 1 - offset - counted.shape[1]
    table = np.concatenate([np.repeat(always, offset, axis=1), counted,
                            np.repeat(never, after, axis=1)], axis=1)
    return Thresholds(np.ascontiguousarray(table), (sign > 0).astype(bool), fmt)
