"""The accelerator core: layers chained by width converters and FIFOs.

The core's ports are plain streams (``i``, ``o``); the AXI4-Stream wrapper from
``rtl_templates/`` adapts them. Each layer's output is also brought out as a probe port
(``probe<n>__valid/ready/payload``) so verification can name the first layer that differs;
probes are taps on existing wires and cost no logic.
"""

from __future__ import annotations

from amaranth import Module, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from bitloom.hw.glue import StreamFifo, WidthConverter
from bitloom.hw.mvu import MatrixVectorUnit
from bitloom.plan import Plan


def probe_signature(width: int) -> wiring.Signature:
    """A read-only view of a stream: every member is an output of the core."""
    return wiring.Signature({"payload": Out(width), "valid": Out(1), "ready": Out(1)})


class Core(wiring.Component):
    """All hardware layers of a planned network, as one streaming component."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        layers = plan.net.layers
        first, last = plan.layers[0], plan.layers[-1]
        members = {
            "i": In(stream.Signature(unsigned(first.in_beat_bits))),
            "o": Out(stream.Signature(unsigned(last.out_beat_bits))),
        }
        for n, lp in enumerate(plan.layers):
            members[f"probe{n}"] = Out(probe_signature(lp.out_beat_bits))
        assert len(layers) == len(plan.layers)
        super().__init__(members)

    def elaborate(self, platform) -> Module:
        m = Module()
        upstream = wiring.flipped(self.i)
        for n, lp in enumerate(self.plan.layers):
            name = lp.layer.name
            if n > 0:
                # converter first, FIFO second: the FIFO then holds whole input beats, so a
                # layer can burst through its first neuron fold at one beat per cycle even
                # when its producer trickles out fewer elements per cycle.
                prev = self.plan.layers[n - 1]
                conv = WidthConverter(lp.layer.in_fmt.bits, prev.fold.pe, lp.fold.simd)
                m.submodules[f"{name}_in_width"] = conv
                wiring.connect(m, upstream, conv.i)
                buf = StreamFifo(lp.in_beat_bits, lp.fifo_depth)
                m.submodules[f"{name}_in_fifo"] = buf
                wiring.connect(m, conv.o, buf.i)
                upstream = buf.o
            unit = MatrixVectorUnit(lp.layer, lp.fold)
            m.submodules[name] = unit
            wiring.connect(m, upstream, unit.i)
            probe = getattr(self, f"probe{n}")
            m.d.comb += [
                probe.payload.eq(unit.o.payload),
                probe.valid.eq(unit.o.valid),
                probe.ready.eq(unit.o.ready),
            ]
            upstream = unit.o
        wiring.connect(m, upstream, wiring.flipped(self.o))
        return m
