"""Element-wise float ops folded into a layer's per-channel chain.

``Add``/``Sub``/``Mul``/``Div`` by a constant, ``Relu``/``Clip``, ``Cast``, inference
``BatchNormalization`` and the identities (``Identity``, ``Dropout``) extend the exact
chain from a layer's accumulator to the next quantizer; on a quantized stream they reopen
the layer's quantizer (:func:`~.quantize.reopen`), or by a scalar just rescale it. An
``Add`` of two quantized streams is a residual join (:func:`~.joins.add_streams`); a
``Clip`` with integer bounds narrows QuantizeLinear codes (Brevitas' QCDQ pattern).
"""

from __future__ import annotations

from dataclasses import replace
from fractions import Fraction

import numpy as np
import onnx

from bitloom.formats import Int
from bitloom.frontend.context import ImportContext
from bitloom.frontend.float_joins import float_join, is_float_join
from bitloom.frontend.joins import add_streams, scale_channels
from bitloom.frontend.quantize import reopen, reopenable, rescaled
from bitloom.frontend.registry import ONNX, handles
from bitloom.frontend.values import (
    Constant,
    Derived,
    FloatInput,
    QuantConstant,
    Stream,
    Value,
    attributes,
)
from bitloom.ir import Affine, Clamp, Quantizer, derive_thresholds
from bitloom.ir.graph import FloatStep
from bitloom.ir.quantizer import ElementQuantizer


def per_channel(ctx: ImportContext, node: onnx.NodeProto, c: np.ndarray,
                x: Derived) -> list[Fraction]:
    """A constant that broadcasts per channel of the chain as rationals: axis 1 of
    ``(N, C)`` and ``(N, C, H, W)``, the last axis of a ``(N, rows, C)`` matrix."""
    values = ctx.channel_values(node, np.asarray(c, dtype=np.float32), x.shape, "constant")
    return ctx.exact(node, values, x.chain.channels, "constant")


@handles(ONNX, "Add", "Sub", "Mul", "Div", layout="elementwise")
def arith(ctx: ImportContext, node: onnx.NodeProto, ins: list[Value | None]) -> Derived:
    op = node.op_type
    if any(isinstance(v, Stream) and v.codes for v in ins):
        raise ctx.fail(node, f"{op} of quantized codes (an integer tensor, e.g. a "
                       "QuantizeLinear's output): ONNX computes it in wrapping integer "
                       "arithmetic, which bitloom does not map; apply it to the "
                       "DequantizeLinear's float output instead.")
    x, c = (Constant(v.dequantized()) if isinstance(v, QuantConstant) else v for v in ins)
    if isinstance(x, FloatInput) and isinstance(c, Constant):
        return preprocessed(ctx, node, x, FloatStep(op, float32(c), False, node.name))
    if isinstance(c, FloatInput) and isinstance(x, Constant):
        return preprocessed(ctx, node, c, FloatStep(op, float32(x), True, node.name))
    if op == "Add" and isinstance(x, Stream) and isinstance(c, Stream):
        return add_streams(ctx, node, x, c)
    if op == "Mul" and isinstance(x, Stream) and isinstance(c, Stream):
        return scale_channels(ctx, node, x, c)
    if isinstance(c, Stream) and isinstance(x, Constant) and op in ("Add", "Mul"):
        x, c = c, x  # commutative: the stream first
    if isinstance(x, Stream) and isinstance(c, Constant) and c.value.size == 1 and \
            not reopenable(ctx, node, x):
        return rescaled(ctx, node, x, op, Fraction(float(c.value.reshape(-1)[0])))
    if isinstance(x, Stream) and isinstance(c, Constant):
        x = reopen(ctx, node, x)
    elif isinstance(c, Stream) and isinstance(x, Constant):
        c = reopen(ctx, node, c)
    swapped = False
    if isinstance(x, Constant) and isinstance(c, Derived):
        x, c, swapped = c, x, True
    if not (isinstance(x, Derived) and isinstance(c, Constant)):
        if op == "Add" and isinstance(x, Derived | Stream) and isinstance(c, Derived | Stream):
            return float_join(ctx, node, x, c)
        if isinstance(x, Stream) or isinstance(c, Stream):
            raise ctx.fail(node, f"{op} of these tensors is not supported: an Add of two "
                           "branches needs both quantized; other ops need one constant.")
        raise ctx.fail(node, f"{op} of these operands cannot be folded exactly.")
    k = per_channel(ctx, node, c.value, x)
    n = x.chain.channels
    one, zero = [Fraction(1)] * n, [Fraction(0)] * n
    if op == "Add":
        step = Affine(one, k)
    elif op == "Sub":
        step = Affine([Fraction(-1)] * n, k) if swapped else Affine(one, [-v for v in k])
    elif op == "Mul":
        step = Affine(k, zero)
    else:
        if swapped:
            raise ctx.fail(node, "dividing a constant by a tensor is not monotone-exact.")
        if any(v == 0 for v in k):
            raise ctx.fail(node, "division by zero.")
        step = Affine([1 / v for v in k], zero)
    return x.then(step)


def float32(c: Constant) -> np.ndarray:
    return np.asarray(c.value, dtype=np.float32)


def preprocessed(ctx: ImportContext, node: onnx.NodeProto, x: FloatInput,
                 step: FloatStep) -> FloatInput:
    """Float ops on the model input before its quantizer run on the host, in float32 as
    ONNX computes them (the bnn-pynq models' ``2*x - 1``, a normalization, a clip)."""
    batched = (1, *x.flat_shape)
    try:
        shape = np.broadcast_shapes(batched, step.constant.shape)
    except ValueError:
        shape = None
    if shape != batched:
        raise ctx.fail(node, f"its constant of shape {list(step.constant.shape)} does not "
                       f"broadcast to the model input's shape {list(batched)}.")
    return replace(x, steps=(*x.steps, step))


def integer_clip(ins: list[Value | None]) -> bool:
    """A Clip with integer bounds clips quantized codes (Brevitas' QCDQ pattern)."""
    bounds = [v for v in ins[1:] if v is not None]
    return bool(bounds) and all(isinstance(v, Constant) and v.value.dtype.kind in "iu"
                                for v in bounds)


def clip_codes(ctx: ImportContext, node: onnx.NodeProto, ins: list[Value | None]) -> Value:
    """``QuantizeLinear -> Clip -> DequantizeLinear``: the Clip narrows the format."""
    x = ins[0]
    if isinstance(x, Stream) and x.producer < 0 and ctx.input_quant is not None and \
            isinstance(ctx.input_quant.quantizer, ElementQuantizer):
        raise ctx.fail(node, "an integer Clip of per-axis or blocked quantized input codes "
                       "is not supported.")
    info = np.iinfo(ins[1].value.dtype if ins[1] is not None else ins[2].value.dtype)
    lo = int(ins[1].value) if ins[1] is not None else info.min
    hi = int(ins[2].value) if len(ins) > 2 and ins[2] is not None else info.max
    if isinstance(x, Constant):
        return Constant(np.clip(x.value, lo, hi), x.onnx_type, (lo, hi))
    if not isinstance(x, Stream) or not isinstance(x.fmt, Int):
        raise ctx.fail(node, "an integer Clip must follow a QuantizeLinear.")
    fmt = next((f for bits in range(1, 17) for signed in (True, False)
                for narrow in (False, True)
                if (f := Int(bits, signed, narrow)).min_int == lo and f.max_int == hi
                and not f.bipolar), None)
    if fmt is None:
        raise ctx.fail(node, f"Clip to [{lo}, {hi}] is not the range of an integer format.")
    if x.producer < 0 and ctx.input_quant is not None and -1 not in ctx.consumed:
        q = ctx.input_quant.quantizer
        ctx.input_quant.quantizer = Quantizer(fmt, q.scale, q.zero_point, q.rounding,
                                              q.order)
    elif reopenable(ctx, node, x):
        chain, q = ctx.requant_sources[x.producer]
        q = Quantizer(fmt, q.scale, q.zero_point, q.rounding, q.order)
        ctx.layers[x.producer].requant = derive_thresholds(
            chain, q, ctx.layers[x.producer].acc_fmt)
        ctx.requant_sources[x.producer] = (chain, q)
    else:
        raise ctx.fail(node, "an integer Clip must directly follow a QuantizeLinear.")
    return replace(x, fmt=fmt)


@handles(ONNX, "Relu", layout="elementwise")
@handles(ONNX, "Clip", layout="elementwise",
         folds=lambda ins: not integer_clip(ins))  # integer bounds: codes, kept for the DQ
def clamp(ctx: ImportContext, node: onnx.NodeProto, ins: list[Value | None]) -> Derived:
    x = ins[0]
    if node.op_type == "Clip" and integer_clip(ins):
        return clip_codes(ctx, node, ins)
    if isinstance(x, Stream):
        x = reopen(ctx, node, x)
    if isinstance(x, FloatInput):
        lo, hi = clip_bounds(ctx, node, ins)
        steps = [FloatStep(op, np.float32(bound), False, node.name)
                 for op, bound in (("Max", lo), ("Min", hi)) if bound is not None]
        for step in steps:
            x = preprocessed(ctx, node, x, step)
        return x
    if not isinstance(x, Derived):
        raise ctx.fail(node, f"{node.op_type} must follow a layer (MatMul, Conv, pool, "
                       "Add) or a quantizer here.")
    lo, hi = clip_bounds(ctx, node, ins)
    if lo == 0 and hi is None and relu_joins(ctx, node, x):
        return x
    step = Clamp(None if lo is None else Fraction(float(lo)),
                 None if hi is None else Fraction(float(hi)))
    return x.then(step)


def relu_joins(ctx: ImportContext, node: onnx.NodeProto, x: Derived) -> bool:
    """A ReLU that is the only reader of a float join's sum becomes the join's own: it
    clamps the accumulator at 0 (:mod:`~.float_joins`), so that what reads the ReLU,
    another join in particular, reads the accumulator."""
    layer = ctx.layers[x.producer] if x.producer >= 0 else None
    if layer is None or not is_float_join(ctx, x.producer) or layer.relu or \
            layer.requant is not None or len(x.chain.ops) != 1 or \
            ctx.readers({node.input[0]}) != [node]:
        return False
    layer.relu = True
    return True


def clip_bounds(ctx: ImportContext, node: onnx.NodeProto,
                ins: list[Value | None]) -> tuple[float | None, float | None]:
    """A Relu's or float Clip's bounds (None: unbounded on that side)."""
    if node.op_type == "Relu":
        return 0.0, None
    attrs = attributes(node)
    lo = attrs.get("min")
    hi = attrs.get("max")
    for i, what in ((1, "min"), (2, "max")):
        if len(ins) > i and ins[i] is not None:
            bound = ctx.const_input(node, ins[i], what, allow_inf=True).reshape(-1)
            if bound.size != 1:
                raise ctx.fail(node, f"its {what} must be a single value.")
            lo, hi = (float(bound[0]), hi) if i == 1 else (lo, float(bound[0]))
    if any(v is not None and not np.isfinite(v) and v == (np.inf if k == 0 else -np.inf)
           for k, v in enumerate((lo, hi))) or (lo is not None and np.isnan(lo)) or (
            hi is not None and np.isnan(hi)):
        raise ctx.fail(node, f"Clip to [{lo}, {hi}] is empty.")
    lo = None if lo is None or lo == -np.inf else lo
    hi = None if hi is None or hi == np.inf else hi
    return lo, hi


@handles(ONNX, "Cast", layout="elementwise")
def cast(ctx: ImportContext, node: onnx.NodeProto, ins: list[Value | None]) -> Value:
    """Casting an integer accumulator to float is exact while it fits float32's 24-bit
    significand (or float64's 53)."""
    x, to = ins[0], attributes(node).get("to")
    limits = {onnx.TensorProto.FLOAT: 24, onnx.TensorProto.DOUBLE: 53}
    if isinstance(x, Derived) and to in limits and x.producer >= 0:
        if ctx.layers[x.producer].acc_fmt.bits - 1 > limits[to]:
            raise ctx.fail(node, "the accumulator is too wide to cast to float exactly.")
        return x
    raise ctx.fail(node, "Cast is supported from an integer accumulator to float only.")


@handles(ONNX, "Identity", "Dropout", layout="elementwise")
def pass_through(ctx: ImportContext, node: onnx.NodeProto, ins: list[Value | None]) -> Value:
    return ins[0]


@handles(ONNX, "Sum", layout="elementwise")
def sum_of_many(ctx: ImportContext, node: onnx.NodeProto, ins: list[Value | None]) -> Value:
    """The Sums :func:`~.passes.sum_to_add` leaves: those of more than two inputs."""
    raise ctx.fail(node, f"Sum of {len(ins)} inputs is not supported; only one or two "
                   "(write a chain of quantized Adds).")


@handles(ONNX, "BatchNormalization")
def batch_norm(ctx: ImportContext, node: onnx.NodeProto, ins: list[Value | None]) -> Derived:
    """Inference BatchNorm folds into the layer's per-channel chain."""
    x = ins[0]
    if isinstance(x, Stream):
        x = reopen(ctx, node, x)
    if not isinstance(x, Derived):
        raise ctx.fail(node, "BatchNormalization must follow a Conv/MatMul or a "
                       "quantizer here.")
    if len(node.output) > 1 and any(node.output[1:]):
        raise ctx.fail(node, "training-mode BatchNormalization is not supported.")
    gamma, beta, mean, var = (
        ctx.const_input(node, v, what).astype(np.float64).reshape(-1)
        for v, what in zip(ins[1:5], ("scale", "B", "mean", "var"), strict=True))
    eps = float(np.float32(attributes(node).get("epsilon", 1e-5)))
    n = x.chain.channels
    if not all(v.size in (1, n) for v in (gamma, beta, mean, var)):
        raise ctx.fail(node, f"parameters must have one value per channel ({n}).")
    a = gamma / np.sqrt(var + eps)
    if np.any(var + eps <= 0):
        raise ctx.fail(node, "its variance plus epsilon must be positive.")
    return x.then(Affine(ctx.exact(node, a, n, "scale / sqrt(var + epsilon)"),
                         ctx.exact(node, beta - a * mean, n, "folded shift")))



@handles(ONNX, "LRN", listed=False)
def local_response_normalization(ctx: ImportContext, node: onnx.NodeProto,
                                 ins: list[Value | None]) -> Value:
    """Refused by choice: ``x / (bias + alpha / size * sum of x**2 over size channels)**beta``
    depends on several quantized inputs at once, so neither a threshold table nor a table
    unit of one input computes it, and a table over ``(x, sum of squares)`` would need the
    square sum quantized, which the model does not do."""
    raise ctx.fail(node, "LRN (local response normalization) divides each value by a power "
                   "of the sum of squares over neighbouring channels, a function of several "
                   "quantized inputs that bitloom does not build; remove it from the model "
                   "(or replace it with BatchNormalization) and retrain or recalibrate.")
