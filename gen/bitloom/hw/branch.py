"""Branching and joining streams: fan-out (Duplicate) and channel concatenation (Concat).

Why: a DAG of layers needs one producer feeding several consumers (a residual block's skip
and main branch, the branches of an inception block) and branches joined again; the
residual add joins in :class:`~bitloom.hw.pointwise.AddUnit`, concatenation here.
"""

from __future__ import annotations

import numpy as np
from amaranth import Array, Cat, Module, Mux, Signal, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from bitloom.ir import Concat


class Duplicate(wiring.Component):
    """One input ``i``, ``n`` outputs ``o0 .. o{n-1}``, every beat delivered to each.

    A register per output (one shared payload register, a valid bit per output): each
    output takes the beat when its consumer is ready, and the next beat is accepted once
    every output has delivered the current one (or does so in this cycle). So outputs may
    accept at different times without losing or repeating beats, at one beat per cycle when
    all are ready; latency 1. The slowest consumer paces all of them: a branch that must run
    ahead of another (the main branch of a residual block while the skip waits for it to
    catch up at the add) needs a FIFO on the other output (docs/hardware.md).
    """

    def __init__(self, width: int, n: int) -> None:
        self.width, self.n = width, n
        members = {"i": In(stream.Signature(unsigned(width)))}
        members.update({f"o{k}": Out(stream.Signature(unsigned(width))) for k in range(n)})
        super().__init__(members)

    def elaborate(self, platform) -> Module:
        m = Module()
        outs = [getattr(self, f"o{k}") for k in range(self.n)]
        payload = Signal(self.width)
        m.d.comb += self.i.ready.eq(Cat(*[~o.valid | o.ready for o in outs]).all())
        take = self.i.valid & self.i.ready
        with m.If(take):
            m.d.sync += payload.eq(self.i.payload)
        for o in outs:
            m.d.comb += o.payload.eq(payload)
            m.d.sync += o.valid.eq(take | (o.valid & ~o.ready))
        return m


class ConcatUnit(wiring.Component):
    """Concat: inputs ``i0 .. i{n-1}`` (``c_k`` channels each, same pixels) -> per pixel all of
    input 0's channels, then input 1's, ...; ``simd`` channels per beat on every port
    (``simd`` divides each ``c_k``).

    Combinational: the output is the selected input's stream (no register, latency 0); each
    input waits while the others' chunks of the pixel go out, so a producer that runs ahead
    needs a FIFO of about one pixel's beats.
    """

    def __init__(self, layer: Concat, simd: int) -> None:
        if any(c % simd for c in layer.channels):
            raise ValueError(f"{layer.name}: SIMD {simd} must divide every input's channels "
                             f"{layer.channels}")
        self.layer, self.simd = layer, simd
        beat = unsigned(simd * layer.fmt.bits)
        members = {f"i{k}": In(stream.Signature(beat)) for k in range(len(layer.channels))}
        members["o"] = Out(stream.Signature(beat))
        super().__init__(members)

    @property
    def cycles_per_frame(self) -> int:
        """Output beats per sample (one per cycle)."""
        return int(np.prod(self.layer.out_shape)) // self.simd

    def elaborate(self, platform) -> Module:
        m = Module()
        chunks = [c // self.simd for c in self.layer.channels]
        ins = [getattr(self, f"i{k}") for k in range(len(chunks))]
        sel = Signal(range(len(ins)))  # the input whose chunk goes out now
        chunk = Signal(range(max(chunks)))
        last_chunk = Array(n - 1 for n in chunks)[sel]
        m.d.comb += [
            self.o.valid.eq(Array(i.valid for i in ins)[sel]),
            self.o.payload.eq(Array(i.payload for i in ins)[sel]),
        ]
        m.d.comb += [i.ready.eq(self.o.ready & (sel == k)) for k, i in enumerate(ins)]
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += chunk.eq(Mux(chunk == last_chunk, 0, chunk + 1))
            with m.If(chunk == last_chunk):
                m.d.sync += sel.eq(Mux(sel == len(ins) - 1, 0, sel + 1))
        return m
