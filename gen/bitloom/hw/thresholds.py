"""Per-channel threshold requantization: the one implementation every unit ends in.

Why one: the matrix-vector unit, the depthwise/pool reducers and the pointwise units
(:class:`~bitloom.hw.pointwise.ThresholdUnit`, :class:`~bitloom.hw.pointwise.AddUnit`) all
turn exact integer accumulators into the next layer's codes with the semantics of
:class:`~bitloom.ir.Thresholds`; sharing the compare stage keeps them bit-exact together.

Hardware: the tables of ``lanes`` consecutive channels (one *group*) form one word of a ROM;
the group's address is presented one pipeline stage before the accumulators, so the
compares, a count adder and the level-to-code map sit between the accumulator and the
output register. Without thresholds the accumulator itself is the output element.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from amaranth import Array, Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.hdl import Value
from amaranth.lib import memory

from bitloom.formats import Int
from bitloom.formats.bits import pack
from bitloom.hw.pe import adder_tree
from bitloom.hw.scale import scale_requantize
from bitloom.ir import ScaleRequant, Thresholds

#: what a unit requantizes with: a threshold table, a scale requantizer, or nothing
Requantizer = Thresholds | ScaleRequant | None


def acc_shape(acc_fmt: Int):
    """The register shape of an accumulator format."""
    return signed(acc_fmt.bits) if acc_fmt.signed else unsigned(acc_fmt.bits)


def threshold_bits(acc_fmt: Int) -> int:
    """Width of a threshold, compared as a signed number: tables reach ``lo - 1`` and
    ``hi + 1`` (a level never or always met), so a signed accumulator needs one more bit and
    an unsigned one two (``2**bits`` of a uint accumulator is not a signed ``bits + 1``
    number)."""
    return acc_fmt.bits + (1 if acc_fmt.signed else 2)


#: widest word of one threshold ROM: Amaranth's netlist holds at most 2**16 bits in a value
MAX_WORD_BITS = (1 << 16) - 1


def threshold_words(req: Thresholds, lanes: int, tbits: int, first: int = 0,
                    count: int | None = None) -> list[int]:
    """ROM contents for lanes ``first .. first + count`` (all by default): word ``g`` holds
    channel ``g*lanes + first + p``'s table at elements ``p*levels ...`` and its direction
    bit above all tables."""
    count = lanes - first if count is None else count
    levels = req.table.shape[1]
    words = []
    for g in range(req.channels // lanes):
        chans = slice(g * lanes + first, g * lanes + first + count)
        directions = req.increasing[chans].astype(np.int64)
        words.append(pack(req.table[chans], tbits)
                      | (pack(directions, 1) << (count * levels * tbits)))
    return words


def out_bits(req: Requantizer, acc_fmt: Int) -> int:
    """Bits of one output element: the thresholds' format, or the raw accumulator."""
    return acc_fmt.bits if req is None else req.out_fmt.bits


def requant_stages(req: Requantizer) -> int:
    """Pipeline registers :func:`requantize` adds for ``req`` (its latency)."""
    return req.stages if isinstance(req, ScaleRequant) else 0


def drive_output(m: Module, o, en: Value, result: Value, valid: Value) -> None:
    """A unit's output register: the requantized beat, held while the consumer stalls
    (``en`` low)."""
    with m.If(en):
        m.d.sync += o.valid.eq(valid)
        with m.If(valid):
            m.d.sync += o.payload.eq(result)


def requantize(m: Module, name: str, values: Sequence[Value], req: Requantizer,
               acc_fmt: Int, group: Value, en: Value, valid: Value) -> tuple[Value, Value]:
    """Output codes (element 0 lowest) for the accumulators ``values`` of one channel group,
    and the valid bit that goes with them: ``valid`` (the accumulators') delayed by
    :func:`requant_stages`.

    ``group`` is the group index one stage *before* ``values`` (the ROM read is registered
    and advances with ``en``, as do all the pipeline's registers). ``values`` are exact
    integers within ``acc_fmt``. A :class:`~bitloom.ir.ScaleRequant` computes the same codes
    by multiply and shift (:mod:`bitloom.hw.scale`).
    """
    lanes = len(values)
    accs = []
    for p, v in enumerate(values):
        acc = Signal(acc_shape(acc_fmt), name=f"{name}_acc{p}")
        m.d.comb += acc.eq(v)
        accs.append(acc)
    if req is None:
        return Cat(*[acc.as_unsigned() for acc in accs]), valid
    if req.channels % lanes:
        raise ValueError(f"{name}: {lanes} lanes must divide {req.channels} channels")
    if isinstance(req, ScaleRequant):
        return scale_requantize(m, name, accs, req, group, en, valid)
    tbits = threshold_bits(acc_fmt)
    levels = req.table.shape[1]
    # one ROM for all lanes, or (wide minifloat tables) as few as keep a word within limits
    per_rom = max(1, min(lanes, MAX_WORD_BITS // (levels * tbits + 1)))
    reads = []
    for first in range(0, lanes, per_rom):
        count = min(per_rom, lanes - first)
        suffix = "" if per_rom == lanes else f"_{first // per_rom}"
        m.submodules[name + suffix] = tmem = memory.Memory(
            shape=unsigned(count * (levels * tbits + 1)), depth=req.channels // lanes,
            init=threshold_words(req, lanes, tbits, first, count))
        t_rd = tmem.read_port()
        m.d.comb += [t_rd.addr.eq(group), t_rd.en.eq(en)]
        reads += [(t_rd.data, q, count) for q in range(count)]
    out_fmt = req.out_fmt
    if not isinstance(out_fmt, Int):  # the output code of each level index
        level_table = Array(Const(int(c), out_fmt.bits)
                            for c in out_fmt.encode(out_fmt.values()))
    codes = []
    for p, (acc, (data, q, count)) in enumerate(zip(accs, reads, strict=True)):
        rising = data[count * levels * tbits + q]
        hits = []
        for i in range(levels):
            t = data.word_select(q * levels + i, tbits).as_signed()
            hits.append(Mux(rising, acc >= t, acc <= t))
        index = adder_tree(hits)
        if isinstance(out_fmt, Int):  # codes are consecutive: index + min (mod 2**bits)
            offset = 0 if out_fmt.bipolar else out_fmt.min_int
            codes.append((index + offset)[:out_fmt.bits])
        else:
            # a signal, not the adder tree: the table lookup below reads it once per level
            # code, and Amaranth would rebuild (and size) the whole tree for each of them
            level = Signal(index.shape(), name=f"{name}_level{p}")
            m.d.comb += level.eq(index)
            codes.append(level_table[level])
    return Cat(*codes), valid
