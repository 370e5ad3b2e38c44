"""Table units: an element-wise function of one quantized input (Sigmoid, Tanh, HardSwish,
GELU, ...) as a read-only memory per lane, addressed by the input code.

Why a table: the input has at most ``2**bits`` values, so the function followed by the output
quantizer is a finite map, computed once in float64 (:class:`~bitloom.ir.Lookup`). A table
of 256 8-bit entries is 32 LUT6 as distributed ROM; no arithmetic is needed and any function
(monotone or not) costs the same.

Stream: ``simd`` elements per beat in, the same number out, one beat per cycle; latency 2
(input register -> table read -> output register), as the other point-wise units.
"""

from __future__ import annotations

import numpy as np
from amaranth import Cat, Module, Signal, unsigned
from amaranth.lib import memory, stream, wiring
from amaranth.lib.wiring import In, Out

from bitloom.formats import Format
from bitloom.ir import Lookup


def table_codes(layer: Lookup) -> list[int]:
    """The output code for every input code (an input code that is no value of the input
    format reads 0)."""
    in_fmt, out_fmt = layer.in_fmt, layer.fmt
    raw = np.arange(1 << in_fmt.bits, dtype=np.int64)
    values = in_fmt.to_grid(in_fmt.decode(raw)).astype(np.int64)
    lo = in_fmt.grid().lo
    inside = (values >= lo) & (values < lo + len(layer.table))
    out = np.zeros(len(raw), dtype=np.int64)
    out[inside] = layer.table[values[inside] - lo]
    codes = out_fmt.encode(out_fmt.from_grid(out))
    return [int(c) if ok else 0 for c, ok in zip(codes, inside, strict=True)]


class LookupUnit(wiring.Component):
    """Per lane, ``o = table[i]``: ports ``i`` and ``o``, ``simd`` lanes."""

    def __init__(self, layer: Lookup, simd: int) -> None:
        channels = layer.in_shape[-1]
        if channels % simd:
            raise ValueError(f"SIMD {simd} must divide the {channels} channels")
        self.layer, self.simd = layer, simd
        self.in_fmt: Format = layer.in_fmt
        self.out_fmt: Format = layer.fmt
        super().__init__({
            "i": In(stream.Signature(unsigned(simd * self.in_fmt.bits))),
            "o": Out(stream.Signature(unsigned(simd * self.out_fmt.bits))),
        })

    @property
    def cycles_per_frame(self) -> int:
        return int(np.prod(self.layer.in_shape)) // self.simd

    def elaborate(self, platform) -> Module:
        m = Module()
        en = Signal()
        m.d.comb += en.eq(~self.o.valid | self.o.ready)
        take = Signal()
        m.d.comb += [take.eq(en & self.i.valid), self.i.ready.eq(take)]
        held, a_valid = Signal(len(self.i.payload)), Signal()
        with m.If(en):
            m.d.sync += [a_valid.eq(take), held.eq(self.i.payload)]
        m.submodules.table = rom = memory.Memory(
            shape=unsigned(self.out_fmt.bits), depth=1 << self.in_fmt.bits,
            init=table_codes(self.layer))
        lanes = []
        for s in range(self.simd):
            port = rom.read_port(domain="comb")
            m.d.comb += port.addr.eq(held.word_select(s, self.in_fmt.bits))
            lanes.append(port.data)
        with m.If(en):
            m.d.sync += self.o.valid.eq(a_valid)
            with m.If(a_valid):
                m.d.sync += self.o.payload.eq(Cat(*lanes))
        return m
