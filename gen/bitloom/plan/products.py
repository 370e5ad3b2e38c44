"""How a layer's products are built, per weight x activation format pair: LUT tables of
at most six code bits, or multipliers, and how many integer products share one DSP. The
planner and the cost model choose and count with these; :mod:`bitloom.hw.pe` builds exactly
what they describe (pure functions of the formats, no hardware here)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bitloom.formats import Format, Int, accumulator_grid, integer_width
from bitloom.formats.integer import decode_int
from bitloom.formats.minifloat import Minifloat

#: inputs of the fabric's LUT: any function of this many bits costs one LUT per output bit
LUT_INPUTS = 6


def is_bipolar(fmt: Format) -> bool:
    return isinstance(fmt, Int) and fmt.bipolar


def code_values(fmt: Format, bits: int) -> list[int]:
    """Grid integers of the codes ``0 .. 2**bits - 1`` (NaN/inf codes, which quantizers
    never produce, as 0)."""
    with np.errstate(invalid="ignore"):
        values = np.asarray(fmt.decode(np.arange(2**bits)), dtype=np.float64)
    return fmt.to_grid(np.where(np.isfinite(values), values, 0)).tolist()


def sign_bit(fmt: Format) -> bool:
    """Whether the top code bit is a sign apart from the magnitude (signed minifloats)."""
    return isinstance(fmt, Minifloat) and fmt.signed


def tabulable(fmt: Format) -> bool:
    return (isinstance(fmt, Int) and not fmt.bipolar) or \
        (isinstance(fmt, Minifloat) and fmt.subnormals)


def table_kind(w_fmt: Format, a_fmt: Format) -> str | None:
    """How :func:`table_parts` splits the products: ``"slice weights"``, ``"slice
    activations"``, ``"magnitudes"``, or None when some partial product needs more than
    :data:`LUT_INPUTS` code bits (a multiplier then)."""
    if not (tabulable(w_fmt) and tabulable(a_fmt)):
        return None
    w_is_int, a_is_int = isinstance(w_fmt, Int), isinstance(a_fmt, Int)
    sliced_w = w_is_int and (not a_is_int or w_fmt.bits > a_fmt.bits)
    if (a_is_int or w_is_int) and LUT_INPUTS - (a_fmt if sliced_w else w_fmt).bits >= 2:
        return "slice weights" if sliced_w else "slice activations"
    if w_fmt.bits - sign_bit(w_fmt) + a_fmt.bits - sign_bit(a_fmt) <= LUT_INPUTS:
        return "magnitudes"
    return None


def sliceable(w_fmt: Format, a_fmt: Format) -> bool:
    """Whether the products are LUT tables rather than multipliers (the cost model asks)."""
    return table_kind(w_fmt, a_fmt) is not None


@dataclass(frozen=True)
class TablePart:
    """One partial product per lane: ``table[index]``, weighted by ``2**cut``. A slice part
    indexes with bits ``cut .. cut + bits`` of the sliced operand's code above the whole
    code of the other; a magnitude part with both magnitudes, negated by the signs' XOR
    where ``negative``."""

    table: list[int]
    cut: int
    bits: int
    negative: bool


def table_layout(w_fmt: Format, a_fmt: Format) -> list[TablePart] | None:
    """Partial products of at most :data:`LUT_INPUTS` code bits each, or None.

    - Slices: an integer operand is linear in its bits, so it is cut into slices of
      ``LUT_INPUTS - b`` bits where ``b`` is the other operand's whole code (<= 4 bits);
      each slice times that code is one table (the top slice of a signed integer is signed).
      The wider integer is the one sliced.
    - Magnitudes: otherwise, when the operands' codes without their sign bits fit one LUT
      together, one table of magnitudes and a negation by the XOR of the signs.
    """
    kind = table_kind(w_fmt, a_fmt)
    if kind is None:
        return None
    if kind != "magnitudes":
        whole_fmt, cut_fmt = (a_fmt, w_fmt) if kind == "slice weights" else (w_fmt, a_fmt)
        width = LUT_INPUTS - whole_fmt.bits
        whole_values = code_values(whole_fmt, whole_fmt.bits)
        parts = []
        for cut in range(0, cut_fmt.bits, width):
            bits = min(width, cut_fmt.bits - cut)
            top = cut + bits == cut_fmt.bits and cut_fmt.signed  # a 1-bit slice: 0/-1
            s_values = decode_int(np.arange(2**bits), bits, top).tolist()
            parts.append(TablePart([x * v for x in whole_values for v in s_values],  # x: high
                                   cut, bits, False))
        return parts
    w_mag, a_mag = w_fmt.bits - sign_bit(w_fmt), a_fmt.bits - sign_bit(a_fmt)
    table = [x * y for x in code_values(w_fmt, w_mag) for y in code_values(a_fmt, a_mag)]
    return [TablePart(table, 0, 0, sign_bit(w_fmt) or sign_bit(a_fmt))]


#: signed operand widths ``(A, B)`` of one multiplier per ``synth_xilinx -family``
MULTIPLIERS: dict[str, tuple[int, int]] = {"xc7": (25, 18), "xcup": (27, 18)}


@dataclass(frozen=True)
class Packing:
    """``ways`` products per multiplier, fields ``spacing`` bits apart, summed over
    ``group`` lanes before they are separated (``ways == 1``: one plain product)."""

    ways: int
    spacing: int
    group: int


def packable(w_fmt: Format, a_fmt: Format) -> bool:
    """Integer (not bipolar) operands: what the packed multiply handles."""
    return all(isinstance(f, Int) and not f.bipolar for f in (w_fmt, a_fmt))


def field_span(w_fmt: Format, a_fmt: Format, lanes: int) -> tuple[int, int]:
    """``(lo, hi)`` of a sum of ``lanes`` products: the range one field must hold."""
    grid = accumulator_grid(w_fmt, a_fmt, lanes)
    return grid.lo, grid.hi


def packed_weight_width(w_fmt: Format, ways: int, spacing: int) -> int:
    """Signed bits of ``sum_f w_f * 2**(f * spacing)`` over every weight combination."""
    scale = sum(1 << (f * spacing) for f in range(ways))
    lo, hi = w_fmt.grid().lo * scale, w_fmt.grid().hi * scale
    return integer_width(min(lo, -1), hi)  # a signed operand, whatever the weights' sign


def dsp_packing(w_fmt: Format, a_fmt: Format, family: str, pes: int, lanes: int) -> Packing:
    """Most products per multiplier (at most ``pes``), then the widest spacing that fits
    the A port, which allows the largest packed group."""
    if family not in MULTIPLIERS:
        raise ValueError(f"no DSP model for family {family!r}; known: {', '.join(MULTIPLIERS)}")
    a_port, b_port = MULTIPLIERS[family]
    if not packable(w_fmt, a_fmt):
        raise ValueError(f"{w_fmt.name} x {a_fmt.name}: DSP packing takes integer operands")
    a_grid = a_fmt.grid()
    if integer_width(min(a_grid.lo, -1), a_grid.hi) > b_port:
        raise ValueError(f"{a_fmt.name} does not fit the {b_port}-bit B port")
    if packed_weight_width(w_fmt, 1, 0) > a_port:
        raise ValueError(f"{w_fmt.name} does not fit the {a_port}-bit A port")
    for ways in range(min(pes, a_port), 1, -1):
        for spacing in range(a_port, 0, -1):
            if packed_weight_width(w_fmt, ways, spacing) > a_port:
                continue
            lo, hi = field_span(w_fmt, a_fmt, 1)
            if hi - lo >= 1 << spacing:
                break  # narrower spacings fit even less
            group = max(g for g in range(1, lanes + 1)
                        if field_span(w_fmt, a_fmt, g)[1] - field_span(w_fmt, a_fmt, g)[0]
                        < 1 << spacing)
            return Packing(ways, spacing, group)
    return Packing(1, 0, lanes)
