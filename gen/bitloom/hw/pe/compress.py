"""Sums of many unsigned rows with column counters inside the carry chains' LUTs.

A carry-chain adder ``a + b`` spends one LUT6 per bit on ``a[i] ^ b[i]`` and uses two of
its six inputs. When ``b[i]`` is a function of at most five other bits the LUT computes it
for free. So five rows are counted per column (a 5:3 counter: bits of weight 1, 2 and 4,
each a function of that column's five bits) and the three count rows are added to a sixth
row by three chained adders: six rows become one with three carry chains instead of the
five a binary tree spends. The counted rows must be signals (register outputs or kept
sums), so that their bits are what the LUTs read.
"""

from __future__ import annotations

from dataclasses import dataclass

from amaranth import Cat, Const
from amaranth.hdl import Shape, Value

from bitloom.hw.pe.stages import Stages

#: rows one counter reads per column: a LUT6 is one bit of the row it adds plus these
COUNTED_ROWS = 5


@dataclass
class Row:
    """An unsigned ``value << shift``."""

    value: Value
    shift: int

    def bit(self, column: int) -> Value | None:
        offset = column - self.shift
        return self.value[offset] if 0 <= offset < len(self.value) else None


def counted(rows: list[Row], weight: int) -> Row | None:
    """Bit ``weight`` of every column's count of the rows' bits, as a row of weight
    ``2**weight`` (None when no column counts that high)."""
    low = min(r.shift for r in rows)
    high = max(r.shift + len(r.value) for r in rows)
    bits, any_bit = [], False
    for column in range(low, high):
        present = [b for r in rows if (b := r.bit(column)) is not None]
        if len(present) >> weight:
            table = [(i.bit_count() >> weight) & 1 for i in range(1 << len(present))]
            word = Const(sum(b << i for i, b in enumerate(table)), len(table))
            bits.append(word.bit_select(Cat(*present), 1))  # a LUT function, not adders
            any_bit = True
        else:
            bits.append(Const(0, 1))
    return Row(Cat(*bits), low + weight) if any_bit else None


def added(acc: Row, row: Row) -> tuple[Row, int]:
    """``acc + row + 1`` and that excess ``1 << row.shift``; the bits of ``acc`` below
    ``row`` pass around the adder.

    Written as ``acc - ~row`` (``~`` across the result's width): Yosys's ``alumacc``
    orders the operands of an addition by name, and the carry chain's DI input takes
    operand A, which must be ``acc`` (a signal) so that ``row``'s bits stay inside the XOR
    LUTs; a subtraction keeps its order.
    """
    if row.shift < acc.shift:
        acc = Row(Cat(Const(0, acc.shift - row.shift), acc.value), row.shift)
    k = row.shift - acc.shift
    padded = Cat(acc.value, Const(0, max(0, k - len(acc.value))))
    high = padded[k:]
    width = max(len(high), len(row.value)) + 1  # holds high + row + 1
    complement = Cat(~row.value, Const(-1, width - len(row.value)))
    return Row(Cat(padded[:k], (high - complement)[:width]), acc.shift), 1 << row.shift


def as_rows(values: list[Value]) -> tuple[list[Row], int]:
    """Unsigned rows and a constant whose sum is ``sum(values)``: a signed value's top bit
    weighs ``-2**(n-1)``, so it is inverted (free inside a counter's LUT) and
    ``-2**(n-1)`` joins the constant."""
    rows, constant = [], 0
    for v in values:
        if v.shape().signed:
            rows.append(Row(Cat(v[:-1], ~v[-1]), 0))
            constant -= 1 << (len(v) - 1)
        else:
            rows.append(Row(v, 0))
    return rows, constant


def counter_sum(rows: list[Row], constant: int, shape: Shape, stages: Stages,
                level: int) -> Value:
    """``constant + sum(row.value << row.shift)``, exactly, in ``shape`` (which holds it).

    The constant (with the adders' excess, see :func:`added`), modulo ``2**shape.width``,
    is counted with the last round's rows: a constant bit is no LUT input, and the last
    carry chains already span the sum's width, where a separate adder would cost a LUT per
    bit. A dry run without a module finds the excess, which depends only on the rows'
    widths. Without a module (no kept sums, nothing for the counters to feed) the sum is
    written plainly; its expression would otherwise copy every row into each counter that
    reads it.
    """
    width = shape.width
    zero = Row(Const(0, width), 0)
    if stages.m is None:  # no kept sums: Yosys would merge any adders; a plain sum is exact
        reduced(rows, zero, stages, level)  # records the levels the counters take
        total = sum((r.value << r.shift for r in rows), Const(constant % (1 << width), width))
        cut = total[:width]
        return cut.as_signed() if shape.signed else cut
    _, excess = reduced(rows, zero, Stages(), level)
    folded = Row(Const((constant - excess) % (1 << width), width), 0)
    total, _ = reduced(rows, folded, stages, level)
    cut = (total.value << total.shift)[:width]
    return cut.as_signed() if shape.signed else cut


def reduced(rows: list[Row], constant: Row, stages: Stages, level: int) -> tuple[Row, int]:
    """The sum of ``rows`` and ``constant`` as one row, and its excess over the sum.

    Each round adds to every sixth row the count rows of the five after it, one carry chain
    (one level) per count bit; rows left alone pass through the same levels, so every
    output of a round has the same latency.
    """
    used, excess, last = 0, 0, False
    while not last:
        last = len(rows) <= COUNTED_ROWS + 1
        groups = [(rows[i], rows[i + 1:i + 1 + COUNTED_ROWS])
                  for i in range(0, len(rows), COUNTED_ROWS + 1)]
        if last:  # constant bits are free inputs: the counter's range 0..6 fits 3 bits
            groups[0] = (groups[0][0], [*groups[0][1], constant])
        for weight in range(COUNTED_ROWS.bit_length()):
            sums = []
            for acc, others in groups:
                count = counted(others, weight) if others else None
                if count is not None:
                    acc, extra = added(acc, count)
                    excess += extra
                sums.append(acc)
            kept = stages.at(level + used, [s.value for s in sums], keep=True)
            groups = [(Row(v, s.shift), [Row(o, r.shift) for o, r in zip(
                stages.at(level + used, [r.value for r in others]), others, strict=True)])
                for v, s, (_, others) in zip(kept, sums, groups, strict=True)]
            used += 1
        rows = [acc for acc, _ in groups]
    return rows[0], excess
