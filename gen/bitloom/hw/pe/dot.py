"""Exact SIMD dot products, one strategy per kind of format pair.

Every strategy returns the exact integer sum on the product grid (no rounding, no
truncation: Amaranth widens each addition), so the accumulator sized from the formats'
bounds can never overflow. The strategies differ only in what the hardware is made of:

- bipolar x bipolar: XNOR and popcount, ``sum = 2 * popcount(xnor) - SIMD``;
- bipolar x integer: ``2 * sum(kept) - sum(all)``, two adder trees and no negation;
- integer x integer: LUT multipliers (Yosys maps them; DSP packing comes later);
- minifloat operands: decoded to their grid integers (significand shifted by exponent), then
  multiplied exactly; the accumulator is wide enough for the full exponent range (Kulisch).
"""

from __future__ import annotations

from amaranth import Cat, Const, Mux, signed
from amaranth.hdl import Value

from bitloom.formats import Format, Int
from bitloom.formats.minifloat import Minifloat


def element_value(code: Value, fmt: Format) -> Value:
    """The grid integer of one element's code (:meth:`~bitloom.formats.Format.to_grid`).

    For a minifloat this is the significand (hidden bit for normal numbers) shifted by the
    exponent: ``e == 0 ? m : (1 << M | m) << (e - 1)``, negated by the sign. NaN/inf codes
    never reach the datapath (bitloom's quantizers saturate).
    """
    if isinstance(fmt, Minifloat):
        if not fmt.subnormals:
            raise ValueError(f"{fmt.name}: formats without zero are scales, not operands")
        mant = code[:fmt.man_bits]
        exp = code[fmt.man_bits:fmt.man_bits + fmt.exp_bits]
        normal = Cat(mant, Const(1, 1)) << (exp - 1)[:len(exp)]  # unused when exp == 0
        magnitude = Mux(exp == 0, mant, normal)
        if not fmt.signed:
            return magnitude
        return Mux(code[-1], -magnitude, magnitude)
    if not isinstance(fmt, Int):
        raise ValueError(f"{fmt.name}: no hardware datapath for this format yet")
    if fmt.bipolar:
        return Mux(code, Const(1, signed(2)), Const(-1, signed(2)))
    return code.as_signed() if fmt.signed else code.as_unsigned()


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
    return adder_tree([element_value(w, w_fmt) * element_value(a, a_fmt)
                       for w, a in zip(w_codes, a_codes, strict=True)])
