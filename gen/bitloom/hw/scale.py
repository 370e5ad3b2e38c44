"""Scale requantization in hardware: ``acc * M + B``, a shift (or a rounding onto a
minifloat's levels, ties up or to even) and a clip, per channel, as
:class:`~bitloom.ir.ScaleRequant` defines it.

Why a per-channel ROM: the constants of ``lanes`` consecutive channels form one word, read
one stage before the accumulators arrive, exactly as the threshold tables are
(:mod:`bitloom.hw.thresholds`), so the two requantizers are interchangeable in every unit.
A constant the same in every channel is a constant in the logic, not a ROM field.

Why a register after ``acc * M + B``: a 20 x 31-bit multiply and its add fill a cycle of
their own (the DSP48's M/P registers take it), so the shift, clip or minifloat rounding
after it never shares that cycle. A minifloat output has one more after the clip: the
normalisation (leading-one detection over the clipped width, a shift, the rounding) is a
path of its own. The units delay their valid bit by
:attr:`~bitloom.ir.ScaleRequant.stages`.

Why a fabric multiplier (``lut_multiplier``): Yosys gives every ``$mul`` to DSPs, so a
multiplier meant for LUTs is written as carry-chain adders: the canonical signed digits of
a constant multiplier (a power of two is a wire), or one partial product per bit of a
per-channel one.
"""

from __future__ import annotations

from collections.abc import Sequence

from amaranth import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.hdl import Value
from amaranth.lib import memory

from bitloom.hw.pe.dot import adder_tree
from bitloom.hw.pe.requant import MinifloatRequantizer, dropped
from bitloom.hw.pe.stages import Stages
from bitloom.ir.scale_requant import ScaleRequant, csd_digits


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


def fabric_product(m: Module, acc: Value, multiplier: Value | int, bits: int) -> Value:
    """``acc * multiplier`` from adders only (see the module docstring); ``multiplier`` is
    an int or a signed ``bits``-bit value."""
    if isinstance(multiplier, int):
        terms = [acc << i if digit > 0 else -(acc << i) for i, digit in csd_digits(multiplier)]
    else:
        terms = [Mux(multiplier[i], acc << i, 0) for i in range(bits - 1)]
        terms.append(Mux(multiplier[bits - 1], -(acc << (bits - 1)), 0))
    if not terms:
        return Const(0)
    return adder_tree(terms, Stages(m)) if len(terms) > 1 else terms[0]


def scale_requantize(m: Module, name: str, accs: Sequence[Value], req: ScaleRequant,
                     group: Value, en: Value, valid: Value) -> tuple[Value, Value]:
    """Output codes (element 0 lowest) of the accumulator signals ``accs`` of one channel
    group, and their valid bit: ``valid`` :attr:`~bitloom.ir.ScaleRequant.stages`
    registers later (every register advances with ``en``); ``group`` is the group index
    one stage before ``accs`` (see :func:`bitloom.hw.thresholds.requantize`)."""
    lanes = len(accs)
    varying = req.varying()
    widths = {f: req.field_bits(f) for f in req.FIELDS}
    data = later = None
    if varying:
        lane_bits = sum(widths[f] for f in varying)
        m.submodules[name] = rom = memory.Memory(
            shape=unsigned(lanes * lane_bits), depth=req.channels // lanes,
            init=scale_words(req, lanes, varying))
        rd = rom.read_port()
        m.d.comb += [rd.addr.eq(group), rd.en.eq(en)]
        data = rd.data
        # the clip bounds, a stage later with the product (the other fields go unused)
        later = Signal(len(data), name=f"{name}_consts")
        with m.If(en):
            m.d.sync += later.eq(data)
    out_valid = valid
    for k in range(req.stages):
        delayed = Signal(name=f"{name}_valid{k}")
        with m.If(en):
            m.d.sync += delayed.eq(out_valid)
        out_valid = delayed

    def field(f: str, p: int, word: Value | None) -> Value | int:
        """Lane ``p``'s ``f`` from a ROM word, or the int every channel shares."""
        if f not in varying:
            return int(getattr(req, f)[0])
        at = p * sum(widths[v] for v in varying) + \
            sum(widths[v] for v in varying[:varying.index(f)])
        return word[at:at + widths[f]].as_signed()

    def value(f: str, p: int, word: Value | None) -> Value:
        v = field(f, p, word)
        return Const(v, signed(widths[f])) if isinstance(v, int) else v

    fmt, shift = req.out_fmt, req.shift
    codes = []
    for p, acc in enumerate(accs):
        y = Signal(signed(len(acc) + widths["multiplier"] + 1 + max(widths["offset"] - 1, 0)),
                   name=f"{name}_y{p}")
        product = fabric_product(m, acc, field("multiplier", p, data), widths["multiplier"]) \
            if req.lut_multiplier else acc * value("multiplier", p, data)
        with m.If(en):
            m.d.sync += y.eq(product + value("offset", p, data))
        lo, hi = value("lo", p, later), value("hi", p, later)
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
        with m.If(en):  # the second register: the normalisation starts a cycle of its own
            m.d.sync += clipped.eq(Mux(y < bottom, bottom, Mux(y > top, top, y)))
        unit = MinifloatRequantizer(clipped.shape(), shift + fmt.grid().frac_bits, fmt,
                                    rounding="round" if req.ties_to_even else "half_ceil")
        m.submodules[f"{name}_round{p}"] = unit
        m.d.comb += unit.acc.eq(clipped)
        magnitude = unit.code[:fmt.exp_bits + fmt.man_bits]
        # zero is +0, as the format's own level list has it (a small negative y rounds to -0)
        codes.append(Mux(magnitude == 0, 0, unit.code))
    return Cat(*codes), out_valid

