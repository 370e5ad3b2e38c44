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

from amaranth import Const
from amaranth.hdl import Value

from bitloom.formats import Format
from bitloom.plan.products import Packing, packed_weight_width


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
