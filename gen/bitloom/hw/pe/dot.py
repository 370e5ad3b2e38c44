"""Exact SIMD dot products, one strategy per kind of format pair.

Every strategy returns the exact integer sum on the product grid (no rounding, no
truncation: Amaranth widens each addition), so the accumulator sized from the formats'
bounds can never overflow. The strategies differ only in what the hardware is made of:

- bipolar x bipolar: XNOR and popcount, ``sum = 2 * popcount(xnor) - SIMD``;
- bipolar x integer: ``2 * sum(kept) - sum(all)``, two adder trees and no negation;
- narrow operands (:func:`table_parts`): partial products of at most six code bits, each a
  table whose every bit is one LUT6 -- an integer cut into slices times the other code, or
  sign-magnitude operands' magnitudes multiplied and negated by the signs' XOR;
- other integer pairs: LUT multipliers (Yosys maps them), or with ``dsp=FAMILY`` several PEs'
  products packed into each DSP multiplier (:mod:`bitloom.hw.pe.dsp`);
- other minifloat operands: significands (hidden bit included) multiplied, exponents added
  into one shift, signs XORed: exact on the product grid; the accumulator is wide enough for
  the full exponent range (Kulisch).

``stages`` (:class:`~bitloom.hw.pe.stages.Stages`) registers the products (level 0) and
rows of the adder trees; parallel trees are padded to equal depth so every output of one
call has the same latency. With a module it also keeps the LUT trees' sums as carry-chain
adders (:meth:`~bitloom.hw.pe.stages.Stages.at`), which a layer gets by passing
``Stages(m)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from amaranth import Cat, Const, Mux, Shape, signed
from amaranth.hdl import Value

from bitloom.formats import Format, Int, accumulator_grid
from bitloom.formats.base import Grid
from bitloom.formats.bits import pack
from bitloom.formats.minifloat import Minifloat
from bitloom.hw.pe import dsp as packing_
from bitloom.hw.pe.compress import Row, as_rows, counter_sum
from bitloom.hw.pe.stages import Stages
from bitloom.plan.products import (
    LUT_INPUTS,
    dsp_packing,
    field_span,
    is_bipolar,
    packable,
    sign_bit,
    table_kind,
    table_layout,
)


@dataclass
class Decoded:
    """An element as ``(-1)**negative * significand << shift >> bias`` (its grid integer).

    Integers are their own significand (signed, ``shift`` 0, ``negative`` constant 0);
    minifloats split into an unsigned significand with the hidden bit, the exponent as a
    shift, and the sign bit, so a product is a small significand multiply and one shift.
    ``bias`` lets the shift be the exponent field itself (subnormals read as exponent 1)
    rather than ``exponent - 1``, which would cost a decrement per lane.
    """

    significand: Value
    shift: Value | int
    negative: Value | int
    bias: int = 0

    def value(self) -> Value:
        magnitude = self.significand << self.shift
        magnitude = magnitude[self.bias:] if self.bias else magnitude
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
        normal = exp != 0
        shift = Cat(exp[0] | ~normal, exp[1:])  # max(exp, 1): a subnormal's binade is 1's
        return Decoded(Cat(mant, normal), shift, code[-1] if fmt.signed else 0, 1)
    if not isinstance(fmt, Int):
        raise ValueError(f"{fmt.name}: no hardware datapath for this format yet")
    if fmt.bipolar:
        return Decoded(Mux(code, Const(1, signed(2)), Const(-1, signed(2))), 0, 0)
    return Decoded(code.as_signed() if fmt.signed else code.as_unsigned(), 0, 0)


def element_value(code: Value, fmt: Format) -> Value:
    """The grid integer of one element's code (:meth:`~bitloom.formats.Format.to_grid`)."""
    return decode(code, fmt).value()


def product(w: Decoded, a: Decoded, stages: Stages, shape: Shape) -> Value:
    """Exact ``w * a`` in ``shape``: significands multiplied, signed, then shifted.

    The sign is applied to the narrow significand product before the shift (a 9-bit
    negation for float8 rather than one across the whole shifted width), and the shifted
    value is cut to ``shape``, the product's exact range: Amaranth sizes a shift for every
    amount its bits could encode, which the exponents' sum never reaches.
    """
    magnitude = w.significand * a.significand
    negative = w.negative ^ a.negative if not (
        isinstance(w.negative, int) and isinstance(a.negative, int)) else 0
    signed_ = magnitude if isinstance(negative, int) and not negative else \
        negated_where(negative, magnitude, stages, "magnitude")
    if isinstance(w.shift, int) and isinstance(a.shift, int):
        return signed_
    shifted = signed_ << (w.shift + a.shift)
    bias = w.bias + a.bias
    cut = shifted[bias:bias + shape.width]
    return cut.as_signed() if shape.signed else cut.as_unsigned()


def negated_where(negative: Value, value: Value, stages: Stages, name: str) -> Value:
    """``-value`` where ``negative``, else ``value``; ``value`` is emitted once (see
    :meth:`Stages.share`), not once for each arm of the mux."""
    value = stages.share(value, name)
    return Mux(negative, -value, value)


def grid_shape(grid: Grid) -> Shape:
    """The narrowest shape holding every integer of ``grid``."""
    lo, hi = min(grid.lo, 0), max(grid.hi, 0)  # not a range: e5m2 grids pass 2**63
    if lo < 0:
        return Shape(max((-lo - 1).bit_length(), hi.bit_length()) + 1, signed=True)
    return Shape(hi.bit_length())


def tree_depth(terms: int) -> int:
    """Rows of adders in a balanced tree over ``terms`` inputs."""
    return (terms - 1).bit_length()


#: narrowest sum worth a carry chain of its own; narrower rows (a popcount's first ones) are
#: left to Yosys, whose LUT counters compress single bits better than 2-bit adders do
CHAIN_MIN_WIDTH = 4


def adder_tree(terms: list, stages: Stages | None = None, level: int = 1,
               depth: int | None = None, chains: bool = True) -> Value:
    """Balanced sum (log depth; Amaranth widens every addition, so nothing overflows).

    Row ``r`` of adders is level ``level + r`` for ``stages``; ``depth`` rows in all (default:
    as many as the terms need) keeps a small tree in step with a larger one beside it.
    ``chains`` keeps every sum of at least :data:`CHAIN_MIN_WIDTH` bits as its own adder
    (see :meth:`Stages.at`); DSP trees leave that off so the post-adders can absorb them.
    """
    stages = stages or Stages()
    rows = tree_depth(len(terms)) if depth is None else depth
    if rows < tree_depth(len(terms)):
        raise ValueError(f"{len(terms)} terms need {tree_depth(len(terms))} adder rows")
    for row in range(rows):
        pairs = [terms[i] + terms[i + 1] for i in range(0, len(terms) - 1, 2)]
        keep = chains and any(len(p) >= CHAIN_MIN_WIDTH for p in pairs)
        terms = stages.at(level + row, pairs + ([terms[-1]] if len(terms) % 2 else []), keep)
    return terms[0]


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
    if dsp is not None and packable(w_fmt, a_fmt):
        return packed_dot_products(w_rows, a_codes, w_fmt, a_fmt, dsp, stages)
    return [lut_dot_product(ws, a_codes, w_fmt, a_fmt, stages) for ws in w_rows]


def lut_dot_product(w_codes: list[Value], a_codes: list[Value], w_fmt: Format,
                    a_fmt: Format, stages: Stages) -> Value:
    """The fabric strategies: XNOR-popcount, sign-select, or products and one adder tree."""
    if is_bipolar(w_fmt) and is_bipolar(a_fmt):
        counts = stages.at(0, agreements(w_codes, a_codes))
        return (adder_tree(ternary_row(counts, stages, 1), stages, 2) << 1) - len(a_codes)
    if is_bipolar(w_fmt) or is_bipolar(a_fmt):
        # sum(+-v) = 2 * sum(v where +1) - sum(v): two plain adder trees, no negations
        signs, other, fmt = (w_codes, a_codes, a_fmt) if is_bipolar(w_fmt) else \
            (a_codes, w_codes, w_fmt)
        values = [element_value(code, fmt) for code in other]
        kept = [Mux(sign, v, 0) for sign, v in zip(signs, values, strict=True)]
        both = stages.at(0, kept + values)
        return (adder_tree(both[:len(kept)], stages) << 1) - adder_tree(both[len(kept):], stages)
    parts = table_parts(w_codes, a_codes, w_fmt, a_fmt)
    if parts is not None:
        return table_dot_product(parts, stages)
    shape = grid_shape(accumulator_grid(w_fmt, a_fmt, 1))
    products = stages.at(0, [product(decode(w, w_fmt), decode(a, a_fmt), stages, shape)
                             for w, a in zip(w_codes, a_codes, strict=True)])
    # each product on a wire: the rows read it bit by bit, and Amaranth would copy the
    # whole product expression into every bit (a minifloat MLP's Verilog 288 KB -> 24 MB)
    products = [stages.share(p, f"product{i}") for i, p in enumerate(products)]
    rows, constant = as_rows(products)
    return counter_sum(rows, constant, grid_shape(accumulator_grid(w_fmt, a_fmt, len(rows))),
                       stages, 1)


#: lanes whose XNOR bits one table counts: three (weight, activation) pairs fill a LUT6
COUNTED_LANES = LUT_INPUTS // 2


def agreements(w_codes: list[Value], a_codes: list[Value]) -> list[Value]:
    """How many lanes agree, per group of :data:`COUNTED_LANES`: each count bit is one LUT6
    of three lanes' codes, so the XNORs and the first row of the popcount are one level
    (a register after it holds 11 bits for 16 lanes, not 16)."""
    counts = []
    for first in range(0, len(a_codes), COUNTED_LANES):
        pairs = list(zip(w_codes[first:first + COUNTED_LANES],
                         a_codes[first:first + COUNTED_LANES], strict=True))
        rom = table_rom(tuple(sum(((i >> 2 * k) ^ (i >> 2 * k + 1) ^ 1) & 1  # XNOR of pair k
                                  for k in range(len(pairs)))
                              for i in range(4 ** len(pairs))))
        counts.append(rom[Cat(*(bit for pair in pairs for bit in pair))])
    return counts


def ternary_row(terms: list[Value], stages: Stages, level: int) -> list[Value]:
    """``a + (b + c)`` per three terms, where ``b + c`` (at most 5 bits in) is a table inside
    the carry chain's LUTs: the adder bit's LUT6 takes ``a``'s bit and the five bits, so
    three terms cost one carry chain instead of two."""
    sums = []
    for first in range(0, len(terms), 3):
        group = terms[first:first + 3]
        if len(group) < 3 or len(group[1]) + len(group[2]) > LUT_INPUTS - 1:
            sums += group
            continue
        a, b, c = group
        rom = table_rom(tuple((i & ((1 << len(b)) - 1)) + (i >> len(b))
                              for i in range(1 << (len(b) + len(c)))))
        sums.append(a + rom[Cat(b, c)])
    return stages.at(level, sums, keep=True)


@dataclass
class Part:
    """One table lookup per lane, ``table[index]`` negated where ``negative``, summed over
    the lanes and weighted by ``2**shift``: a partial product whose index fits one LUT."""

    table: list[int]
    indices: list[Value]
    negative: list[Value] | None
    shift: int


def table_parts(w_codes: list[Value], a_codes: list[Value], w_fmt: Format,
                a_fmt: Format) -> list[Part] | None:
    """The partial products of :func:`~bitloom.plan.products.table_layout` on these codes,
    or None."""
    layout = table_layout(w_fmt, a_fmt)
    if layout is None:
        return None
    kind = table_kind(w_fmt, a_fmt)
    if kind != "magnitudes":
        whole, cut_codes = (a_codes, w_codes) if kind == "slice weights" else (w_codes, a_codes)
        return [Part(p.table, [Cat(c[p.cut:p.cut + p.bits], x) for c, x in
                               zip(cut_codes, whole, strict=True)], None, p.cut)
                for p in layout]
    (part,) = layout
    w_mag, a_mag = w_fmt.bits - sign_bit(w_fmt), a_fmt.bits - sign_bit(a_fmt)
    signs = [(w[-1] if sign_bit(w_fmt) else 0) ^ (a[-1] if sign_bit(a_fmt) else 0)
             for w, a in zip(w_codes, a_codes, strict=True)]
    return [Part(part.table, [Cat(a[:a_mag], w[:w_mag]) for w, a in zip(w_codes, a_codes,
                                                                       strict=True)],
                 signs if part.negative else None, 0)]


@dataclass(frozen=True)
class Rom:
    """A table of integers as one constant word: the same LUT functions as a case statement
    after synthesis, and one line of Verilog for the simulators."""

    word: Const
    shape: Shape

    def __getitem__(self, index: Value) -> Value:
        value = self.word.word_select(index, self.shape.width)
        return value.as_signed() if self.shape.signed else value


@cache
def table_rom(entries: tuple[int, ...]) -> Rom:
    """The ROM of ``entries``, built once for every lane and PE that reads the same table
    rather than packed again for each of them."""
    shape = Shape.cast(range(min(min(entries), 0), max(max(entries), 0) + 1))
    return Rom(Const(pack(entries, shape.width), shape.width * len(entries)), shape)


def table_dot_product(parts: list[Part], stages: Stages) -> Value:
    """``sum_j (sum_i part_j[i]) << shift_j``: every table bit is one LUT, and the shifts are
    applied once per part after its adder tree instead of once per lane.

    Tables without a sign to apply are stored offset-binary (``entry - min``, unsigned, often
    a bit narrower than two's complement, and so are their trees); the offsets return as one
    constant.
    """
    lanes = len(parts[0].indices)
    values: list[Value] = []
    offset = 0
    for part in parts:
        lo = 0 if part.negative else min(part.table)
        rom = table_rom(tuple(x - lo for x in part.table))
        looked = [rom[index] for index in part.indices]
        if part.negative:
            looked = [negated_where(neg, v, stages, "looked")
                      for neg, v in zip(part.negative, looked, strict=True)]
        values += looked
        offset += (lo * lanes) << part.shift
    values = stages.at(0, values)
    if not any(part.negative for part in parts):  # unsigned rows: counters in the chains
        rows = [Row(v, part.shift) for j, part in enumerate(parts)
                for v in values[j * lanes:(j + 1) * lanes]]
        low = sum((min(part.table) * lanes) << part.shift for part in parts)
        high = sum((max(part.table) * lanes) << part.shift for part in parts)
        return counter_sum(rows, offset, grid_shape(Grid(low, high, 0)), stages, 1)
    rows = tree_depth(lanes)
    sums = [adder_tree(values[j * lanes:(j + 1) * lanes], stages, 1, rows)
            for j in range(len(parts))]
    return sum((s << part.shift for s, part in zip(sums, parts, strict=True)), Const(0, 1))


def packed_dot_products(w_rows: list[list[Value]], a_codes: list[Value], w_fmt: Format,
                        a_fmt: Format, family: str, stages: Stages) -> list[Value]:
    """Integer dot products with ``ways`` PEs per DSP multiplier (:mod:`~.dsp`).

    Per lane, one multiply of the packed weights by the shared activation (level 0); per
    group of lanes, one adder tree over the packed products plus the bias; per PE, one tree
    over its field of every group plus the constant that removes the bias.
    """
    lanes = len(a_codes)
    plan = dsp_packing(w_fmt, a_fmt, family, len(w_rows), lanes)
    acts = [element_value(a, a_fmt) for a in a_codes]
    if plan.ways == 1:
        return [adder_tree(stages.at(0, [element_value(w, w_fmt) * x
                                         for w, x in zip(ws, acts, strict=True)]), stages,
                           chains=False) for ws in w_rows]
    lo = field_span(w_fmt, a_fmt, plan.group)[0]
    starts = range(0, lanes, plan.group)
    last_lo = field_span(w_fmt, a_fmt, lanes - starts[-1])[0]
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
            packed = stages.share(adder_tree(terms, stages, 1, group_rows, chains=False),
                                  "packed")
            per_group.append(packing_.unpack(packed, plan, ways, g_lo))
        offsets = [lo * (len(starts) - 1) + last_lo] * (ways - 1) + [0]
        for f in range(ways):
            terms = [fields[f] for fields in per_group]
            if offsets[f]:
                terms.append(packing_.offset_constant(offsets[f]))
            results.append(adder_tree(terms, stages, 1 + group_rows, field_rows,
                                      chains=False))
    return results
