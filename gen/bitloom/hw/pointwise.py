"""Element-by-element units: standalone requantization and the residual add.

Why one implementation: both compute, per element, ``acc = sum_k m_k * x_k`` over beats
taken together from ``n`` streams of the same shape (a Thresholding layer is ``n = 1``,
``m = 1``; AddStreams is ``n = 2`` with the layer's integer multipliers, which bring two
branches in different formats/scales onto one exact grid), then the shared threshold stage
(:mod:`~bitloom.hw.thresholds`), or the raw accumulator.

Streams: every input and the output carry the same ``(..., C)`` elements in the same
order, ``simd`` channels per beat (``simd`` divides ``C``; a vector is a ``(C,)`` map).

Schedule: a beat is taken when every input has one and the output can move, so the inputs
advance in lock step; one beat per cycle; latency 2 (input -> values -> output register).
For a residual add the skip branch's FIFO must hold what arrives on it while the other
branch's first output is still being computed (see docs/hardware.md).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from amaranth import Cat, Module, Mux, Signal, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from bitloom.formats import Format, Int
from bitloom.hw.pe import element_value
from bitloom.hw.thresholds import out_bits, requantize
from bitloom.ir import AddStreams, Thresholding, Thresholds


class PointwiseUnit(wiring.Component):
    """``acc = sum(m * x)`` per element over the input ports ``(name, format, m)``, then
    thresholds."""

    def __init__(self, inputs: Sequence[tuple[str, Format, int]], shape: tuple[int, ...],
                 simd: int, acc_fmt: Int, requant: Thresholds | None) -> None:
        channels = shape[-1]
        if channels % simd:
            raise ValueError(f"SIMD {simd} must divide the {channels} channels")
        self.inputs, self.shape, self.simd = list(inputs), shape, simd
        self.acc_fmt, self.requant = acc_fmt, requant
        self.chunks = channels // simd
        members = {name: In(stream.Signature(unsigned(simd * fmt.bits)))
                   for name, fmt, _ in self.inputs}
        members["o"] = Out(stream.Signature(unsigned(simd * out_bits(requant, acc_fmt))))
        super().__init__(members)

    @property
    def cycles_per_frame(self) -> int:
        """Beats per sample (one per cycle)."""
        return int(np.prod(self.shape)) // self.simd

    def elaborate(self, platform) -> Module:
        m = Module()
        ports = [getattr(self, name) for name, _, _ in self.inputs]
        en = Signal()
        m.d.comb += en.eq(~self.o.valid | self.o.ready)
        take = Signal()
        m.d.comb += take.eq(en & Cat(*[port.valid for port in ports]).all())
        m.d.comb += [port.ready.eq(take) for port in ports]

        cb = Signal(range(self.chunks))  # channel chunk of the beat taken now
        with m.If(take):
            m.d.sync += cb.eq(Mux(cb == self.chunks - 1, 0, cb + 1))
        a_valid = Signal()
        held = [Signal(len(port.payload), name=f"a_{name}")
                for port, (name, _, _) in zip(ports, self.inputs, strict=True)]
        with m.If(en):
            m.d.sync += a_valid.eq(take)
            m.d.sync += [h.eq(port.payload) for h, port in zip(held, ports, strict=True)]

        values = []
        for s in range(self.simd):
            terms = [element_value(h.word_select(s, fmt.bits), fmt) * k
                     for h, (_, fmt, k) in zip(held, self.inputs, strict=True)]
            values.append(sum(terms[1:], terms[0]))
        result, r_valid = requantize(m, "thresholds", values, self.requant, self.acc_fmt, cb,
                                     en, a_valid)
        with m.If(en):
            m.d.sync += self.o.valid.eq(r_valid)
            with m.If(r_valid):
                m.d.sync += self.o.payload.eq(result)
        return m


class ThresholdUnit(PointwiseUnit):
    """Thresholding: requantizes a stream on its own (e.g. a skip branch onto the other
    branch's scale). Ports ``i``, ``o``."""

    def __init__(self, layer: Thresholding, simd: int) -> None:
        self.layer = layer
        super().__init__([("i", layer.in_fmt, 1)], layer.in_shape, simd, layer.acc_fmt,
                         layer.requant)


class AddUnit(PointwiseUnit):
    """AddStreams: ``ka * a + kb * b``, then thresholds. Ports ``a`` (the layer's first
    input), ``b``, ``o``."""

    def __init__(self, layer: AddStreams, simd: int) -> None:
        self.layer = layer
        (fa, fb), (ka, kb) = layer.in_fmts, layer.multipliers
        super().__init__([("a", fa, ka), ("b", fb, kb)], layer.in_shape, simd,
                         layer.acc_fmt, layer.requant)
