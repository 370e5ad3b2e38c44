"""Exact SIMD dot products, one strategy per kind of format pair.

Every strategy returns the exact integer sum on the product grid (no rounding, no
truncation: Amaranth widens each addition), so the accumulator sized from the formats'
bounds can never overflow. The strategies differ only in what the hardware is made of:

- bipolar x bipolar: XNOR and popcount, ``sum = 2 * popcount(xnor) - SIMD``;
- bipolar x integer: ``2 * sum(kept) - sum(all)``, two adder trees and no negation;
- integer x integer: LUT multipliers (Yosys maps them; DSP packing comes later);
- minifloat operands: significands (hidden bit included) multiplied, exponents added into one
  shift, signs XORed: exact on the product grid; the accumulator is wide enough for the full
  exponent range (Kulisch).
"""

from __future__ import annotations

from dataclasses import dataclass

from amaranth import Cat, Const, Mux, signed
from amaranth.hdl import Value

from bitloom.formats import Format, Int
from bitloom.formats.minifloat import Minifloat


@dataclass
class Decoded:
    """An element as ``(-1)**negative * significand << shift`` (its grid integer).

    Integers are their own significand (signed, ``shift`` 0, ``negative`` constant 0);
    minifloats split into an unsigned significand with the hidden bit, the exponent as a
    shift, and the sign bit, so a product is a small significand multiply and one shift.
    """

    significand: Value
    shift: Value | int
    negative: Value | int

    def value(self) -> Value:
        magnitude = self.significand << self.shift
        return magnitude if isinstance(self.negative, int) and not self.negative else \
            Mux(self.negative, -magnitude, magnitude)


def decode(code: Value, fmt: Format) -> Decoded:
    """Split one element's code; NaN/inf codes never reach the datapath (quantizers
    saturate)."""
    if isinstance(fmt, Minifloat):
        if not fmt.subnormals:
            raise ValueError(f"{fmt.name}: formats without zero are scales, not operands")
        mant = code[:fmt.man_bits]
        exp = code[fmt.man_bits:fmt.man_bits + fmt.exp_bits]
        subnormal = exp == 0
        significand = Mux(subnormal, mant, Cat(mant, Const(1, 1)))
        shift = Mux(subnormal, 0, (exp - 1)[:len(exp)])
        return Decoded(significand, shift, code[-1] if fmt.signed else 0)
    if not isinstance(fmt, Int):
        raise ValueError(f"{fmt.name}: no hardware datapath for this format yet")
    if fmt.bipolar:
        return Decoded(Mux(code, Const(1, signed(2)), Const(-1, signed(2))), 0, 0)
    return Decoded(code.as_signed() if fmt.signed else code.as_unsigned(), 0, 0)


def element_value(code: Value, fmt: Format) -> Value:
    """The grid integer of one element's code (:meth:`~bitloom.formats.Format.to_grid`)."""
    return decode(code, fmt).value()


def product(w: Decoded, a: Decoded) -> Value:
    """Exact ``w * a``: significands multiplied, exponents added, signs combined."""
    magnitude = (w.significand * a.significand) << (w.shift + a.shift) \
        if not (isinstance(w.shift, int) and isinstance(a.shift, int)) else \
        w.significand * a.significand
    negative = w.negative ^ a.negative if not (
        isinstance(w.negative, int) and isinstance(a.negative, int)) else 0
    return magnitude if isinstance(negative, int) and not negative else \
        Mux(negative, -magnitude, magnitude)


def adder_tree(terms: list) -> Value:
    """Balanced sum (log depth; Amaranth widens every addition, so nothing overflows)."""
    while len(terms) > 1:
        pairs = [terms[i] + terms[i + 1] for i in range(0, len(terms) - 1, 2)]
        terms = pairs + ([terms[-1]] if len(terms) % 2 else [])
    return terms[0]


def is_bipolar(fmt: Format) -> bool:
    return isinstance(fmt, Int) and fmt.bipolar


def dot_product(w_codes: list[Value], a_codes: list[Value], w_fmt: Format,
                a_fmt: Format) -> Value:
    """``sum(w[i] * a[i])`` over the lanes, exactly, from raw element codes."""
    if len(w_codes) != len(a_codes) or not w_codes:
        raise ValueError("dot product needs equally many (>= 1) weight and activation lanes")
    if is_bipolar(w_fmt) and is_bipolar(a_fmt):
        agree = [~(w ^ a) for w, a in zip(w_codes, a_codes, strict=True)]
        return (adder_tree([bit.as_unsigned() for bit in agree]) << 1) - len(agree)
    if is_bipolar(w_fmt) or is_bipolar(a_fmt):
        # sum(+-v) = 2 * sum(v where +1) - sum(v): two plain adder trees, no negations
        signs, other, fmt = (w_codes, a_codes, a_fmt) if is_bipolar(w_fmt) else \
            (a_codes, w_codes, w_fmt)
        values = [element_value(code, fmt) for code in other]
        kept = [Mux(sign, v, 0) for sign, v in zip(signs, values, strict=True)]
        return (adder_tree(kept) << 1) - adder_tree(values)
    return adder_tree([product(decode(w, w_fmt), decode(a, a_fmt))
                       for w, a in zip(w_codes, a_codes, strict=True)])
