"""Exact SIMD dot products, one strategy per kind of format pair.

Every strategy returns the exact integer sum on the product grid (no rounding, no
truncation: Amaranth widens each addition), so the accumulator sized from the formats'
bounds can never overflow. The strategies differ only in what the hardware is made of:

- bipolar x bipolar: XNOR and popcount, ``sum = 2 * popcount(xnor) - SIMD``;
- bipolar x integer: ``2 * sum(kept) - sum(all)``, two adder trees and no negation;
- integer x integer: LUT multipliers (Yosys maps them), or with ``dsp=FAMILY`` several PEs'
  products packed into each DSP multiplier (:mod:`bitloom.hw.pe.dsp`);
- minifloat operands: significands (hidden bit included) multiplied, exponents added into one
  shift, signs XORed: exact on the product grid; the accumulator is wide enough for the full
  exponent range (Kulisch).

``stages`` (:class:`~bitloom.hw.pe.stages.Stages`) registers the products (level 0) and
rows of the adder trees; parallel trees are padded to equal depth so every output of one
call has the same latency.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from amaranth import Array, Cat, Const, Mux, signed
from amaranth.hdl import Value

from bitloom.formats import Format, Int
from bitloom.formats.integer import decode_int
from bitloom.formats.minifloat import Minifloat
from bitloom.hw.pe import dsp as packing_
from bitloom.hw.pe.stages import Stages


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


def tree_depth(terms: int) -> int:
    """Rows of adders in a balanced tree over ``terms`` inputs."""
    return (terms - 1).bit_length()


def adder_tree(terms: list, stages: Stages | None = None, level: int = 1,
               depth: int | None = None) -> Value:
    """Balanced sum (log depth; Amaranth widens every addition, so nothing overflows).

    Row ``r`` of adders is level ``level + r`` for ``stages``; ``depth`` rows in all (default:
    as many as the terms need) keeps a small tree in step with a larger one beside it.
    """
    stages = stages or Stages()
    rows = tree_depth(len(terms)) if depth is None else depth
    if rows < tree_depth(len(terms)):
        raise ValueError(f"{len(terms)} terms need {tree_depth(len(terms))} adder rows")
    for row in range(rows):
        pairs = [terms[i] + terms[i + 1] for i in range(0, len(terms) - 1, 2)]
        terms = stages.at(level + row, pairs + ([terms[-1]] if len(terms) % 2 else []))
    return terms[0]


def is_bipolar(fmt: Format) -> bool:
    return isinstance(fmt, Int) and fmt.bipolar


def dot_product(w_codes: list[Value], a_codes: list[Value], w_fmt: Format,
                a_fmt: Format, dsp: str | None = None, stages: Stages | None = None) -> Value:
    """``sum(w[i] * a[i])`` over the lanes, exactly, from raw element codes.

    ``dsp`` names a family (``xc7``/``xcup``) whose DSP multipliers take the integer products
    (one per multiplier: packing needs several PEs, see :func:`dot_products`).
    """
    return dot_products([w_codes], a_codes, w_fmt, a_fmt, dsp, stages)[0]


def dot_products(w_rows: list[list[Value]], a_codes: list[Value], w_fmt: Format,
                 a_fmt: Format, dsp: str | None = None,
                 stages: Stages | None = None) -> list[Value]:
    """One exact dot product per weight row (PE), all rows sharing the activation lanes."""
    if not w_rows or any(len(ws) != len(a_codes) for ws in w_rows) or not a_codes:
        raise ValueError("dot product needs equally many (>= 1) weight and activation lanes")
    stages = stages or Stages()
    if dsp is not None and packing_.packable(w_fmt, a_fmt):
        return packed_dot_products(w_rows, a_codes, w_fmt, a_fmt, dsp, stages)
    return [lut_dot_product(ws, a_codes, w_fmt, a_fmt, stages) for ws in w_rows]


def lut_dot_product(w_codes: list[Value], a_codes: list[Value], w_fmt: Format,
                    a_fmt: Format, stages: Stages) -> Value:
    """The fabric strategies: XNOR-popcount, sign-select, or products and one adder tree."""
    if is_bipolar(w_fmt) and is_bipolar(a_fmt):
        agree = stages.at(0, [(~(w ^ a)).as_unsigned() for w, a in zip(w_codes, a_codes,
                                                                     strict=True)])
        return (adder_tree(agree, stages) << 1) - len(agree)
    if is_bipolar(w_fmt) or is_bipolar(a_fmt):
        # sum(+-v) = 2 * sum(v where +1) - sum(v): two plain adder trees, no negations
        signs, other, fmt = (w_codes, a_codes, a_fmt) if is_bipolar(w_fmt) else \
            (a_codes, w_codes, w_fmt)
        values = [element_value(code, fmt) for code in other]
        kept = [Mux(sign, v, 0) for sign, v in zip(signs, values, strict=True)]
        both = stages.at(0, kept + values)
        return (adder_tree(both[:len(kept)], stages) << 1) - adder_tree(both[len(kept):], stages)
    if sliceable(w_fmt, a_fmt):
        return sliced_dot_product(w_codes, a_codes, w_fmt, a_fmt, stages)
    return adder_tree(stages.at(0, [product(decode(w, w_fmt), decode(a, a_fmt))
                                    for w, a in zip(w_codes, a_codes, strict=True)]), stages)


#: inputs of the fabric's LUT: any function of this many bits costs one LUT per output bit
LUT_INPUTS = 6


def sliceable(w_fmt: Format, a_fmt: Format) -> bool:
    """Plain integers where the narrower operand leaves >= 2 LUT inputs for slices of the
    wider one, and the wider one needs more than one slice."""
    if not all(isinstance(f, Int) and not f.bipolar for f in (w_fmt, a_fmt)):
        return False
    narrow, wide = sorted((w_fmt.bits, a_fmt.bits))
    return LUT_INPUTS - narrow >= 2 and wide > LUT_INPUTS - narrow


def sliced_dot_product(w_codes: list[Value], a_codes: list[Value], w_fmt: Format,
                       a_fmt: Format, stages: Stages) -> Value:
    """``sum_j (sum_i t_i * slice_j(x_i)) << (j * s)``: each partial product has six input
    bits, so every output bit is one LUT6 (a ROM), and the shifts are applied once per
    slice after the adder trees instead of once per lane."""
    if w_fmt.bits > a_fmt.bits:
        w_codes, a_codes, w_fmt, a_fmt = a_codes, w_codes, a_fmt, w_fmt
    width = LUT_INPUTS - w_fmt.bits
    cuts = list(range(0, a_fmt.bits, width))
    w_levels = w_fmt.decode(np.arange(2**w_fmt.bits)).astype(np.int64)
    partial = []
    for j, cut in enumerate(cuts):
        bits = min(width, a_fmt.bits - cut)
        signed_slice = j == len(cuts) - 1 and a_fmt.signed
        s_levels = decode_int(np.arange(2**bits), bits, signed_slice)  # a 1-bit slice: 0/-1
        table = [int(w) * int(v) for w in w_levels for v in s_levels]  # index: w code, slice
        rom = Array(Const(x, range(min(table), max(table) + 1)) for x in table)
        partial += [rom[Cat(a[cut:cut + bits], w)] for w, a in zip(w_codes, a_codes,
                                                                    strict=True)]
    partial = stages.at(0, partial)
    lanes = len(w_codes)
    rows = tree_depth(lanes)
    sums = [adder_tree(partial[j * lanes:(j + 1) * lanes], stages, 1, rows)
            for j in range(len(cuts))]
    return sum((total << cut for total, cut in zip(sums, cuts, strict=True)), Const(0, 1))


def packed_dot_products(w_rows: list[list[Value]], a_codes: list[Value], w_fmt: Format,
                        a_fmt: Format, family: str, stages: Stages) -> list[Value]:
    """Integer dot products with ``ways`` PEs per DSP multiplier (:mod:`~.dsp`).

    Per lane, one multiply of the packed weights by the shared activation (level 0); per
    group of lanes, one adder tree over the packed products plus the bias; per PE, one tree
    over its field of every group plus the constant that removes the bias.
    """
    lanes = len(a_codes)
    plan = packing_.plan(w_fmt, a_fmt, family, len(w_rows), lanes)
    acts = [element_value(a, a_fmt) for a in a_codes]
    if plan.ways == 1:
        return [adder_tree(stages.at(0, [element_value(w, w_fmt) * x
                                         for w, x in zip(ws, acts, strict=True)]), stages)
                for ws in w_rows]
    lo = packing_.field_span(w_fmt, a_fmt, plan.group)[0]
    starts = range(0, lanes, plan.group)
    last_lo = packing_.field_span(w_fmt, a_fmt, lanes - starts[-1])[0]
    group_rows = tree_depth(plan.group + 1)  # the bias is one more term
    field_rows = tree_depth(len(starts) + 1)  # the constant is one more term
    results: list[Value] = []
    for first in range(0, len(w_rows), plan.ways):
        chunk = w_rows[first:first + plan.ways]
        ways = len(chunk)
        products = stages.at(0, [
            packing_.pack_weights([element_value(row[i], w_fmt) for row in chunk], plan,
                                  w_fmt) * acts[i] for i in range(lanes)])
        per_group = []
        for start in starts:
            # the last group may be shorter: its own (smaller) bound keeps the fields apart
            g_lo = lo if start + plan.group <= lanes else last_lo
            terms = [*products[start:start + plan.group], packing_.bias(plan, ways, g_lo)]
            packed = adder_tree(terms, stages, 1, group_rows)
            per_group.append(packing_.unpack(packed, plan, ways, g_lo))
        offsets = [lo * (len(starts) - 1) + last_lo] * (ways - 1) + [0]
        for f in range(ways):
            terms = [fields[f] for fields in per_group]
            if offsets[f]:
                terms.append(packing_.offset_constant(offsets[f]))
            results.append(adder_tree(terms, stages, 1 + group_rows, field_rows))
    return results
