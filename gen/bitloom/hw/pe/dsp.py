"""Several integer products from one DSP multiplier (Xilinx WP486 / WP521 style).

PEs of a layer share the activation of each lane, so ``ways`` weights of different PEs ride
in the multiplier's wide port ``A = sum_f w_f * 2**(f*k)`` and the shared activation in ``B``:
``A * a = sum_f (w_f * a) * 2**(f*k)``. Products of the same PE are summed over a ``group``
of lanes while still packed (one adder instead of ``ways``), then the fields are separated.

Exactness: the white papers fix the borrow each negative field takes from the one above with
a correction term per field. Here a constant ``bias = sum_{f < top} (-lo) * 2**(f*k)`` is
added to the packed sum instead, where ``[lo, hi]`` bounds a field's sum over the group. Every
lower field then holds ``sum - lo`` in ``[0, hi - lo]``, which fits ``k`` bits when
``hi - lo < 2**k``: the fields become plain bit slices (no borrows to correct), the top field
is the signed remainder, and ``lo`` comes back as one constant per output. The spacing ``k``
therefore needs only the *span* of a field, which is what lets four int4 x int4 products
(span 120 < 2**7) share one 27x18 DSP48E2 -- and even one 25x18 DSP48E1.

Yosys maps an Amaranth ``*`` of at most 27x18 (xcup) or 25x18 (xc7) signed bits onto one
DSP48E2 / DSP48E1, so the packed multiply is written as exactly that. On xc7 it also absorbs
the packing adder (pre-adder), the register after the multiply and the group sum (post-adder
cascade); on xcup those stay in the fabric.
"""

from __future__ import annotations

from dataclasses import dataclass

from amaranth import Const
from amaranth.hdl import Value

from bitloom.formats import Format, Int, accumulator_grid, integer_width

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


def plan(w_fmt: Format, a_fmt: Format, family: str, pes: int, lanes: int) -> Packing:
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


def pack_weights(values: list[Value], packing: Packing, w_fmt: Format) -> Value:
    """The A operand ``sum_f w_f * 2**(f*k)``, cut to its exact signed width so that Yosys
    sees a multiply that fits one DSP (the adder is the DSP48E1 pre-adder on xc7)."""
    width = packed_weight_width(w_fmt, len(values), packing.spacing)
    total = sum(v << (f * packing.spacing) for f, v in enumerate(values))
    return total[:width].as_signed()


def bias(packing: Packing, ways: int, lo: int) -> int:
    """The constant that lifts every field below the top one into ``[0, 2**spacing)``."""
    return sum(-lo << (f * packing.spacing) for f in range(ways - 1))


def unpack(packed: Value, packing: Packing, ways: int, lo: int) -> list[Value]:
    """Fields of a biased packed sum, each still offset by ``-lo`` except the top one."""
    k = packing.spacing
    fields: list[Value] = [packed[f * k:(f + 1) * k] for f in range(ways - 1)]
    fields.append(packed >> ((ways - 1) * k))  # arithmetic for a signed sum
    return fields


def offset_constant(value: int) -> Value:
    """A signed constant term, so ``terms + offset`` stays signed arithmetic."""
    return Const(value, range(min(value, -1), max(value, 0) + 1))
