"""ChannelScale: a feature map times one value per channel and frame (squeeze-excitation).

Schedule, per frame: *load* takes the vector ``s`` (``C / simd`` beats) into a memory, one
word a channel chunk; *scale* then streams the map ``x`` through, each beat's lanes times
their channels' values (read with the beat, as a threshold ROM is), then the shared
threshold stage (:mod:`~bitloom.hw.thresholds`). One beat per cycle while scaling; the next
frame's vector is taken once the map's last beat is. The map reaches the unit only after the
vector, which is computed from that same map: its FIFO holds about a frame (the plan sizes
it, :mod:`bitloom.plan.fifos`).
"""

from __future__ import annotations

import numpy as np
from amaranth import Module, Mux, Signal, unsigned
from amaranth.lib import memory, stream, wiring
from amaranth.lib.wiring import In, Out

from bitloom.hw.pe import element_value
from bitloom.hw.thresholds import drive_output, out_bits, requantize
from bitloom.ir import ChannelScale


class ChannelScaleUnit(wiring.Component):
    """Ports ``x`` (the map), ``s`` (the vector) and ``o``; ``simd`` channels a beat."""

    def __init__(self, layer: ChannelScale, simd: int) -> None:
        channels = layer.in_shape[-1]
        if channels % simd:
            raise ValueError(f"{layer.name}: SIMD {simd} must divide the {channels} channels")
        self.layer, self.simd, self.chunks = layer, simd, channels // simd
        fx, fs = layer.in_fmts
        super().__init__({
            "x": In(stream.Signature(unsigned(simd * fx.bits))),
            "s": In(stream.Signature(unsigned(simd * fs.bits))),
            "o": Out(stream.Signature(unsigned(simd * out_bits(layer.requant,
                                                               layer.acc_fmt)))),
        })

    @property
    def cycles_per_frame(self) -> int:
        """Beats per sample: the vector's, then the map's."""
        return self.chunks + int(np.prod(self.layer.in_shape)) // self.simd

    def elaborate(self, platform) -> Module:
        m = Module()
        layer, simd = self.layer, self.simd
        (fx, fs), (zx, zs) = layer.in_fmts, layer.zero_points
        beats = int(np.prod(layer.in_shape)) // simd

        m.submodules.vector = vector = memory.Memory(
            shape=unsigned(simd * fs.bits), depth=self.chunks, init=[])
        write, read = vector.write_port(), vector.read_port()
        loading = Signal(init=1)
        loaded = Signal(range(self.chunks))  # chunks of the vector taken so far
        m.d.comb += [self.s.ready.eq(loading), write.addr.eq(loaded),
                     write.data.eq(self.s.payload), write.en.eq(self.s.valid & loading)]
        with m.If(self.s.valid & loading):
            m.d.sync += loaded.eq(Mux(loaded == self.chunks - 1, 0, loaded + 1))
            with m.If(loaded == self.chunks - 1):
                m.d.sync += loading.eq(0)

        en, take = Signal(), Signal()
        m.d.comb += [en.eq(~self.o.valid | self.o.ready),
                     take.eq(en & self.x.valid & ~loading), self.x.ready.eq(take)]
        cb = Signal(range(self.chunks))  # channel chunk of the beat taken now
        beat = Signal(range(beats))
        with m.If(take):
            m.d.sync += [cb.eq(Mux(cb == self.chunks - 1, 0, cb + 1)),
                         beat.eq(Mux(beat == beats - 1, 0, beat + 1))]
            with m.If(beat == beats - 1):
                m.d.sync += loading.eq(1)
        m.d.comb += [read.addr.eq(cb), read.en.eq(en)]
        a_valid, held = Signal(), Signal(simd * fx.bits)
        with m.If(en):
            m.d.sync += [a_valid.eq(take), held.eq(self.x.payload)]
        values = [(element_value(held.word_select(lane, fx.bits), fx) - zx)
                  * (element_value(read.data.word_select(lane, fs.bits), fs) - zs)
                  for lane in range(simd)]
        result, r_valid = requantize(m, "thresholds", values, layer.requant, layer.acc_fmt,
                                     cb, en, a_valid)
        drive_output(m, self.o, en, result, r_valid)
        return m

