"""Element-by-element units: standalone requantization and the residual add.

Why one implementation: both compute, per element, ``acc = sum_k m_k * x_k (+ bias)`` over
beats taken together from ``n`` streams of the same shape (a Thresholding layer is ``n = 1``,
``m = 1``; AddStreams is ``n = 2`` with the layer's integer multipliers, which bring two
branches in different formats/scales onto one exact grid), optionally ``max(acc, 0)``, then
the shared threshold stage (:mod:`~bitloom.hw.thresholds`), or the raw accumulator.
Multipliers and bias that vary by channel come from a ROM read with the beat, one word a
channel chunk.

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
from amaranth.lib import memory, stream, wiring
from amaranth.lib.wiring import In, Out

from bitloom.formats import Format, Int
from bitloom.hw.pe import element_value
from bitloom.hw.thresholds import drive_output, out_bits, requantize
from bitloom.ir import AddStreams, Thresholding, Thresholds


class PointwiseUnit(wiring.Component):
    """``acc = sum(m * x) + bias`` per element over the input ports ``(name, format, m)``
    (``m`` one integer, or one per channel), ``max(acc, 0)`` with ``relu``, then
    thresholds."""

    def __init__(self, inputs: Sequence[tuple[str, Format, int | np.ndarray]],
                 shape: tuple[int, ...], simd: int, acc_fmt: Int, requant: Thresholds | None,
                 bias: np.ndarray | None = None, relu: bool = False) -> None:
        channels = shape[-1]
        if channels % simd:
            raise ValueError(f"SIMD {simd} must divide the {channels} channels")
        self.inputs, self.shape, self.simd = list(inputs), shape, simd
        self.acc_fmt, self.requant, self.bias, self.relu = acc_fmt, requant, bias, relu
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

        factors = self._channel_terms(m, cb, en)
        values = []
        for s in range(self.simd):
            terms = [element_value(h.word_select(s, fmt.bits), fmt) * k[s]
                     for h, (_, fmt, _), k in zip(held, self.inputs, factors[:len(held)],
                                                  strict=True)]
            if self.bias is not None:
                terms.append(factors[-1][s])
            value = sum(terms[1:], terms[0])
            values.append(Mux(value < 0, 0, value) if self.relu else value)
        result, r_valid = requantize(m, "thresholds", values, self.requant, self.acc_fmt, cb,
                                     en, a_valid)
        drive_output(m, self.o, en, result, r_valid)
        return m

    def _channel_terms(self, m: Module, cb: Signal, en: Signal) -> list[list]:
        """Per input (then the bias, if any), per lane: the multiplier of the held beat's
        channel. Constants where one serves every channel; else one ROM word per channel
        chunk, read as the beat is taken (so it arrives with the held beat)."""
        columns = [np.broadcast_to(np.asarray(k, dtype=object), (self.shape[-1],))
                   for _, _, k in self.inputs]
        if self.bias is not None:
            columns.append(np.asarray(self.bias, dtype=object))
        constant = [len({int(v) for v in col}) == 1 for col in columns]
        widths = [max(int(v).bit_length() for v in col) + 1 for col in columns]
        varying = [i for i, const in enumerate(constant) if not const]
        factors: list[list] = [[int(col[0])] * self.simd if const else []
                               for col, const in zip(columns, constant, strict=True)]
        if not varying:
            return factors
        word = self.simd * sum(widths[i] for i in varying)
        init = []
        for chunk in range(self.chunks):
            bits, pos = 0, 0
            for s in range(self.simd):
                for i in varying:
                    bits |= (int(columns[i][chunk * self.simd + s]) % (1 << widths[i])) << pos
                    pos += widths[i]
            init.append(bits)
        m.submodules.terms = rom = memory.Memory(shape=unsigned(word), depth=self.chunks,
                                                 init=init)
        read = rom.read_port()
        m.d.comb += [read.addr.eq(cb), read.en.eq(en)]
        pos = 0
        for _lane in range(self.simd):
            for i in varying:
                factors[i].append(read.data[pos:pos + widths[i]].as_signed())
                pos += widths[i]
        return factors


class ThresholdUnit(PointwiseUnit):
    """Thresholding: requantizes a stream on its own (e.g. a skip branch onto the other
    branch's scale). Ports ``i``, ``o``."""

    def __init__(self, layer: Thresholding, simd: int) -> None:
        self.layer = layer
        super().__init__([("i", layer.in_fmt, 1)], layer.in_shape, simd, layer.acc_fmt,
                         layer.requant)


class AddUnit(PointwiseUnit):
    """AddStreams: ``ka * a + kb * b (+ bias)``, a ReLU if the layer has one, then
    thresholds. Ports ``a`` (the layer's first input), ``b``, ``o``."""

    def __init__(self, layer: AddStreams, simd: int) -> None:
        self.layer = layer
        (fa, fb), (ka, kb) = layer.in_fmts, layer.multipliers
        super().__init__([("a", fa, ka), ("b", fb, kb)], layer.in_shape, simd,
                         layer.acc_fmt, layer.requant, layer.bias, layer.relu)
