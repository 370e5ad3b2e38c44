"""Scale requantization in hardware: ``acc * M + B``, a shift (or a rounding onto a
minifloat's levels, ties up or to even) and a clip, per channel, as
:class:`~bitloom.ir.ScaleRequant` defines it.

Why a per-channel ROM: the constants of ``lanes`` consecutive channels form one word, read
one stage before the accumulators arrive, exactly as the threshold tables are
(:mod:`bitloom.hw.thresholds`), so the two requantizers are interchangeable in every unit.
A constant the same in every channel is a constant in the logic, not a ROM field.
"""

from __future__ import annotations

from collections.abc import Sequence

from amaranth import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.hdl import Value
from amaranth.lib import memory

from bitloom.hw.pe.requant import MinifloatRequantizer, dropped
from bitloom.ir.scale_requant import ScaleRequant


def scale_words(req: ScaleRequant, lanes: int, varying: Sequence[str]) -> list[int]:
    """ROM contents: word ``g`` holds the ``varying`` fields of channels ``g*lanes ...``,
    lane 0 lowest, each lane's fields in :attr:`ScaleRequant.FIELDS` order."""
    widths = [req.field_bits(f) for f in varying]
    words = []
    for g in range(req.channels // lanes):
        word, at = 0, 0
        for c in range(g * lanes, (g + 1) * lanes):
            for f, w in zip(varying, widths, strict=True):
                word |= (int(getattr(req, f)[c]) & ((1 << w) - 1)) << at
                at += w
        words.append(word)
    return words


def scale_requantize(m: Module, name: str, accs: Sequence[Value], req: ScaleRequant,
                     group: Value, en: Value) -> Value:
    """Output codes (element 0 lowest) of the accumulator signals ``accs`` of one channel
    group; ``group`` is the group index one stage before ``accs`` (see
    :func:`bitloom.hw.thresholds.requantize`)."""
    lanes = len(accs)
    varying = req.varying()
    widths = {f: req.field_bits(f) for f in req.FIELDS}
    data = None
    if varying:
        lane_bits = sum(widths[f] for f in varying)
        m.submodules[name] = rom = memory.Memory(
            shape=unsigned(lanes * lane_bits), depth=req.channels // lanes,
            init=scale_words(req, lanes, varying))
        rd = rom.read_port()
        m.d.comb += [rd.addr.eq(group), rd.en.eq(en)]
        data = rd.data

    def field(f: str, p: int) -> Value:
        values = getattr(req, f)
        if f not in varying:
            return Const(int(values[0]), signed(widths[f]))
        at = p * sum(widths[v] for v in varying) + \
            sum(widths[v] for v in varying[:varying.index(f)])
        return data[at:at + widths[f]].as_signed()

    fmt, shift = req.out_fmt, req.shift
    codes = []
    for p, acc in enumerate(accs):
        y = Signal(signed(len(acc) + widths["multiplier"] + 1 + max(widths["offset"] - 1, 0)),
                   name=f"{name}_y{p}")
        m.d.comb += y.eq(acc * field("multiplier", p) + field("offset", p))
        lo, hi = field("lo", p), field("hi", p)
        if not req.rounds_to_levels:
            q = y >> shift
            if req.ties_to_even:  # to the nearest integer, a tie to the even one
                above, at, _ = dropped(y, shift)
                q = q + (above | (at & q[0]))
            codes.append(Mux(q < lo, lo, Mux(q > hi, hi, q))[:fmt.bits])
            continue
        bottom, top = lo << shift, hi << shift
        # the clipped value spans only the levels' range: a narrow input to the rounding
        clipped = Signal(signed(max(widths["lo"], widths["hi"]) + shift),
                         name=f"{name}_clipped{p}")
        m.d.comb += clipped.eq(Mux(y < bottom, bottom, Mux(y > top, top, y)))
        unit = MinifloatRequantizer(clipped.shape(), shift + fmt.grid().frac_bits, fmt,
                                    rounding="round" if req.ties_to_even else "half_ceil")
        m.submodules[f"{name}_round{p}"] = unit
        m.d.comb += unit.acc.eq(clipped)
        magnitude = unit.code[:fmt.exp_bits + fmt.man_bits]
        # zero is +0, as the format's own level list has it (a small negative y rounds to -0)
        codes.append(Mux(magnitude == 0, 0, unit.code))
    return Cat(*codes)

