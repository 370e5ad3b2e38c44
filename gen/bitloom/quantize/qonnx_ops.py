"""The QONNX quantizers ``bitloom quantize`` writes, and the formats they quantize to.

``Quant(x, scale, zero_point, bit_width)`` with ``signed``/``narrow``/``rounding_mode`` for
integers and fixed point (fixed point is an integer on the fixed scale ``2**-frac_bits``), and
``FloatQuant(x, scale, exponent_bitwidth, mantissa_bitwidth, exponent_bias, max_val)`` with
``has_inf``/``has_nan``/``has_subnormal``/``saturation``/``rounding_mode`` for minifloats: the
signatures bitloom's frontend reads (:mod:`bitloom.frontend.qonnx`) and qonnx's executor runs.
Rounding is ``ROUND`` (half to even) and minifloats saturate, as hardware does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper

from bitloom.errors import BitloomError
from bitloom.formats import Fixed, Format, Int, Minifloat, float_quant_format

QONNX_DOMAIN = "qonnx.custom_op.general"


@dataclass(frozen=True)
class Spec:
    """A quantizer's grid at unit scale (``fmt``), and its scale when the format fixes it
    (fixed point) rather than calibration; ``label`` names the format in reports."""

    fmt: Int | Minifloat
    label: str
    fixed_scale: float | None = None


def _refuse(fmt: Format, role: str) -> BitloomError:
    return BitloomError(
        f"{fmt.name} cannot be used for {role}: quantize writes QONNX Quant (integers of "
        "2-16 bits, fixed point) and FloatQuant (signed minifloats with subnormals); pick "
        "e.g. int8, int4, fixed8.4, float8_e4m3fn, e3m2 or e2m1.")


def _minifloat(fmt: Minifloat, role: str) -> Spec:
    """The saturating FloatQuant twin of ``fmt``: the same finite values (ml_dtypes' types
    are non-saturating casts; a quantizer in hardware saturates)."""
    if not fmt.signed or not fmt.subnormals:
        raise _refuse(fmt, role)
    twin = float_quant_format(fmt.exp_bits, fmt.man_bits, fmt.bias, fmt.max,
                              has_inf=fmt.has_inf, has_nan=fmt.specials in ("ieee", "fn"))
    return Spec(twin, fmt.name)


def weight_spec(fmt: Format) -> Spec:
    """Weights are signed and symmetric: integers narrow-range (int8 -> [-127, 127]) as
    Brevitas exports them, so the scale alone fixes the grid."""
    if isinstance(fmt, Int) and fmt.bits >= 2:
        return Spec(Int(fmt.bits, True, True), Int(fmt.bits, True, True).name)
    if isinstance(fmt, Fixed) and fmt.bits >= 2:
        return Spec(Int(fmt.bits, True, True), Fixed(fmt.bits, fmt.frac_bits, True, True).name,
                    2.0 ** -fmt.frac_bits)
    if isinstance(fmt, Minifloat):
        return _minifloat(fmt, "weights")
    raise _refuse(fmt, "weights")


def act_spec(fmt: Format, nonneg: bool) -> Spec:
    """Unsigned where the tensor is non-negative (after ReLU) and the format family has an
    unsigned variant (integers, fixed point; FloatQuant is always signed), else signed."""
    if isinstance(fmt, Int) and fmt.bits >= 2:
        q = Int(fmt.bits, not nonneg, fmt.narrow and not nonneg)
        return Spec(q, q.name)
    if isinstance(fmt, Fixed):
        q = Int(fmt.bits, not nonneg, fmt.narrow and not nonneg)
        return Spec(q, Fixed(fmt.bits, fmt.frac_bits, q.signed, q.narrow).name,
                    2.0 ** -fmt.frac_bits)
    if isinstance(fmt, Minifloat):
        return _minifloat(fmt, "activations")
    raise _refuse(fmt, "activations")


def quant_node(x: str, out: str, scale: str, spec: Spec, name: str,
               const: Callable[[str, float], str]) -> onnx.NodeProto:
    """The Quant/FloatQuant node ``out = q(x)``; ``const(base, value)`` adds an initializer
    and returns its name (``scale`` is already one)."""
    fmt = spec.fmt
    if isinstance(fmt, Int):
        return helper.make_node(
            "Quant", [x, scale, const("zero_point", 0.0), const("bit_width", fmt.bits)], [out],
            name=name, domain=QONNX_DOMAIN, signed=int(fmt.signed), narrow=int(fmt.narrow),
            rounding_mode="ROUND")
    return helper.make_node(
        "FloatQuant", [x, scale, const("exponent_bitwidth", fmt.exp_bits),
                       const("mantissa_bitwidth", fmt.man_bits),
                       const("exponent_bias", fmt.bias), const("max_val", fmt.max)], [out],
        name=name, domain=QONNX_DOMAIN, rounding_mode="ROUND", has_inf=int(fmt.has_inf),
        has_nan=int(fmt.has_nan), has_subnormal=1, saturation=1)


def scale_array(scales: np.ndarray, channel_axis: int, ndim: int) -> np.ndarray:
    """Per-channel scales shaped to broadcast against a weight of rank ``ndim``."""
    if scales.size == 1:
        return scales.reshape(())
    shape = [1] * ndim
    shape[channel_axis] = scales.size
    return scales.reshape(shape)
