"""Exact SIMD dot products, one strategy per kind of format pair.

Every strategy returns the exact integer sum on the product grid (no rounding, no
truncation: Amaranth widens each addition), so the accumulator sized from the formats'
bounds can never overflow. The strategies differ only in what the hardware is made of:

- bipolar x bipolar: XNOR and popcount, ``sum = 2 * popcount(xnor) - SIMD``;
- bipolar x integer: ``2 * sum(kept) - sum(all)``, two adder trees and no negation;
- integer x integer: LUT multipliers (Yosys maps them; DSP packing comes later).
"""

from __future__ import annotations

from amaranth import Const, Mux, signed
from amaranth.hdl import Value

from bitloom.formats import Int


def element_value(code: Value, fmt: Int) -> Value:
    """The integer value of one element's code."""
    if fmt.bipolar:
        return Mux(code, Const(1, signed(2)), Const(-1, signed(2)))
    return code.as_signed() if fmt.signed else code.as_unsigned()


def adder_tree(terms: list) -> Value:
    """Balanced sum (log depth; Amaranth widens every addition, so nothing overflows)."""
    while len(terms) > 1:
        pairs = [terms[i] + terms[i + 1] for i in range(0, len(terms) - 1, 2)]
        terms = pairs + ([terms[-1]] if len(terms) % 2 else [])
    return terms[0]


def dot_product(w_codes: list[Value], a_codes: list[Value], w_fmt: Int, a_fmt: Int) -> Value:
    """``sum(w[i] * a[i])`` over the lanes, exactly, from raw element codes."""
    if len(w_codes) != len(a_codes) or not w_codes:
        raise ValueError("dot product needs equally many (>= 1) weight and activation lanes")
    if w_fmt.bipolar and a_fmt.bipolar:
        agree = [~(w ^ a) for w, a in zip(w_codes, a_codes, strict=True)]
        return (adder_tree([bit.as_unsigned() for bit in agree]) << 1) - len(agree)
    if w_fmt.bipolar or a_fmt.bipolar:
        # sum(+-v) = 2 * sum(v where +1) - sum(v): two plain adder trees, no negations
        signs, other, fmt = (w_codes, a_codes, a_fmt) if w_fmt.bipolar else \
            (a_codes, w_codes, w_fmt)
        values = [element_value(code, fmt) for code in other]
        kept = [Mux(sign, v, 0) for sign, v in zip(signs, values, strict=True)]
        return (adder_tree(kept) << 1) - adder_tree(values)
    return adder_tree([element_value(w, w_fmt) * element_value(a, a_fmt)
                       for w, a in zip(w_codes, a_codes, strict=True)])
