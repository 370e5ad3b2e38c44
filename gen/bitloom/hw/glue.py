"""Stream glue between layers: element-width conversion and FIFOs."""

from __future__ import annotations

from amaranth import Module, Signal, unsigned
from amaranth.lib import fifo, stream, wiring
from amaranth.lib.wiring import In, Out


class WidthConverter(wiring.Component):
    """Re-chunks a stream of ``elem_bits``-wide elements from ``n_in`` to ``n_out`` per beat.

    One of ``n_in`` and ``n_out`` must divide the other (the planner guarantees it); element
    order is preserved, lowest element first. Full throughput: one input beat per cycle when
    packing, one output beat per cycle when unpacking.
    """

    def __init__(self, elem_bits: int, n_in: int, n_out: int) -> None:
        if n_in % n_out and n_out % n_in:
            raise ValueError(f"width conversion {n_in} -> {n_out} elements needs a divisor")
        self.elem_bits, self.n_in, self.n_out = elem_bits, n_in, n_out
        super().__init__({
            "i": In(stream.Signature(unsigned(elem_bits * n_in))),
            "o": Out(stream.Signature(unsigned(elem_bits * n_out))),
        })

    def elaborate(self, platform) -> Module:
        m = Module()
        if self.n_in == self.n_out:
            wiring.connect(m, wiring.flipped(self.i), wiring.flipped(self.o))
        elif self.n_out > self.n_in:
            self._pack(m, self.n_out // self.n_in)
        else:
            self._unpack(m, self.n_in // self.n_out)
        return m

    def _pack(self, m: Module, ratio: int) -> None:
        w = len(self.i.payload)
        partial = Signal(w * (ratio - 1))
        count = Signal(range(ratio))
        last = count == ratio - 1
        m.d.comb += self.i.ready.eq(~last | ~self.o.valid | self.o.ready)
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        with m.If(self.i.valid & self.i.ready):
            with m.If(last):
                m.d.sync += [
                    self.o.payload.eq(partial | (self.i.payload << (w * (ratio - 1)))),
                    self.o.valid.eq(1),
                    count.eq(0),
                ]
            with m.Else():
                m.d.sync += [
                    partial.word_select(count, w).eq(self.i.payload),
                    count.eq(count + 1),
                ]

    def _unpack(self, m: Module, ratio: int) -> None:
        w = len(self.o.payload)
        held = Signal(len(self.i.payload))
        full = Signal()
        index = Signal(range(ratio))
        done = self.o.ready & (index == ratio - 1)
        m.d.comb += [
            self.o.valid.eq(full),
            self.o.payload.eq(held.word_select(index, w)),
            self.i.ready.eq(~full | done),
        ]
        with m.If(self.o.valid & self.o.ready):
            with m.If(index == ratio - 1):
                m.d.sync += [full.eq(0), index.eq(0)]
            with m.Else():
                m.d.sync += index.eq(index + 1)
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [held.eq(self.i.payload), full.eq(1)]


#: Verilog attributes of a RAM placed in UltraRAM (Vivado and Yosys's ``synth_xilinx -uram``
#: both read ``ram_style``; UltraRAM is never chosen without it)
ULTRA_ATTRS = {"ram_style": "ultra"}


class UltraFifo(fifo.SyncFIFOBuffered):
    """Amaranth's buffered FIFO with its storage in UltraRAM."""

    def elaborate(self, platform) -> Module:
        m = super().elaborate(platform)
        if self.depth > 1:  # one beat is a register, no memory
            m.submodules.storage.attrs.update(ULTRA_ATTRS)
        return m


class StreamFifo(wiring.Component):
    """A synchronous FIFO with stream interfaces (``depth`` >= 1 beats).

    Amaranth's buffered FIFO is an output register behind a FIFO of ``depth - 1`` that
    cannot be written while full, even in a cycle it is read: below 3 beats it moves one
    beat every other cycle, so a FIFO that must keep up at one beat per cycle has 3 or more.
    """

    def __init__(self, width: int, depth: int, ultra: bool = False) -> None:
        self.width, self.depth, self.ultra = width, depth, ultra
        super().__init__({
            "i": In(stream.Signature(unsigned(width))),
            "o": Out(stream.Signature(unsigned(width))),
        })

    def elaborate(self, platform) -> Module:
        m = Module()
        kind = UltraFifo if self.ultra else fifo.SyncFIFOBuffered
        m.submodules.fifo = buf = kind(width=self.width, depth=self.depth)
        wiring.connect(m, wiring.flipped(self.i), buf.w_stream)
        wiring.connect(m, buf.r_stream, wiring.flipped(self.o))
        return m
