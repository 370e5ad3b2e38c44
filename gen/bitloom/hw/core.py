"""The accelerator core: the network's layers as streaming units, wired as its DAG.

Every edge producer -> consumer is a width converter (the producer's ``PE`` elements per
beat to the consumer's ``SIMD``) and a FIFO of the depth the plan chose; a producer with
several consumers feeds them through a :class:`~bitloom.hw.branch.Duplicate`. The core's
ports are plain streams (``i``, ``o``); the AXI4-Stream wrapper from ``rtl_templates/``
adapts them. Each layer's output is also brought out as a probe port
(``probe<n>__valid/ready/payload``) so verification can name the first layer that differs;
probes are taps on existing wires and cost no logic. A layer whose weights are streamed has
its own input stream ``w<n>`` (``n`` its index), passed straight to its unit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np
from amaranth import Fragment, Module, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from bitloom.hw.branch import Duplicate
from bitloom.hw.glue import StreamFifo, WidthConverter
from bitloom.plan import LayerPlan, Plan
from bitloom.plan.memory import STREAMED
from bitloom.plan.registry import kind_of

#: ``on_layer(k, n, name)``: ``k`` of the core's ``n`` layers are elaborated, ``name`` the last
#: of them; after ``k == n`` the whole design goes to Amaranth's netlist and Yosys in one pass
LayerProgress = Callable[[int, int, str], None]


def probe_signature(width: int) -> wiring.Signature:
    """A read-only view of a stream: every member is an output of the core."""
    return wiring.Signature({"payload": Out(width), "valid": Out(1), "ready": Out(1)})


def make_unit(lp: LayerPlan) -> tuple[wiring.Component, list[str]]:
    """The streaming unit of a planned layer and the names of its input ports, in the
    order of ``layer.inputs`` (its layer kind builds it, with the plan's requantizer)."""
    if lp.scale is not None:
        lp = replace(lp, layer=replace(lp.layer, requant=lp.scale))
    return kind_of(lp.layer).make_unit(lp)


def weight_words(lp: LayerPlan) -> list[int]:
    """A weight layer's memory words in step order, exactly as its unit holds them."""
    return kind_of(lp.layer).weight_words(lp)


def decode_weight_words(lp: LayerPlan, words: list[int]) -> np.ndarray:
    """Memory words -> the layer's weights (grid integers, the layer's weight shape): the
    inverse of :func:`weight_words`, to check an init file against the model."""
    layer = lp.layer
    codes = kind_of(layer).decode_weight_words(lp, words)
    return layer.w_fmt.to_grid(layer.w_fmt.decode(codes)).reshape(layer.weights.shape)


def streamed_layers(plan: Plan) -> list[tuple[int, LayerPlan]]:
    """The layers (index, plan) whose weights come in on a core input stream."""
    return [(n, lp) for n, lp in enumerate(plan.layers)
            if lp.memory is not None and lp.memory.style == STREAMED]


class Core(wiring.Component):
    """All hardware layers of a planned network, as one streaming component.

    ``on_layer`` (optional) is told of every layer elaborated, for a progress display."""

    def __init__(self, plan: Plan, on_layer: LayerProgress | None = None) -> None:
        self.plan, self.on_layer = plan, on_layer
        last = plan.output
        members = {
            "i": In(stream.Signature(unsigned(plan.in_elems * plan.in_fmt.bits))),
            "o": Out(stream.Signature(unsigned(last.out_beat_bits))),
        }
        for n, lp in enumerate(plan.layers):
            members[f"probe{n}"] = Out(probe_signature(lp.out_beat_bits))
        for n, lp in streamed_layers(plan):
            members[f"w{n}"] = In(stream.Signature(unsigned(lp.memory.width)))
        # which input FIFOs are full (bit k: plan.fifos()[k]), to name the one a stall
        # backs up into
        self.fifo_plans = plan.fifos()
        members["fifo_full"] = Out(max(1, len(self.fifo_plans)))
        super().__init__(members)

    def elaborate(self, platform) -> Module:
        m = Module()
        plan, net = self.plan, self.plan.net
        units = []
        for k, lp in enumerate(plan.layers, 1):
            unit, ports = make_unit(lp)
            # elaborated now rather than after this method returns, so that the progress
            # callback counts the layers as they are built
            m.submodules[lp.layer.name] = Fragment.get(unit, platform)
            units.append((unit, ports))
            if self.on_layer is not None:
                self.on_layer(k, len(plan.layers), lp.layer.name)

        # every producer's output endpoints, one per consuming edge, in edge order
        outputs: dict[int, list] = {}
        for producer in range(-1, len(plan.layers)):
            source = wiring.flipped(self.i) if producer < 0 else units[producer][0].o
            edges = sum(ly.inputs.count(producer) for ly in net.layers)
            if producer == len(plan.layers) - 1:
                wiring.connect(m, source, wiring.flipped(self.o))
                continue
            if edges == 1:
                outputs[producer] = [source]
            elif edges > 1:
                name = "input" if producer < 0 else plan.layers[producer].layer.name
                dup = Duplicate(len(source.payload), edges)
                m.submodules[f"{name}_fanout"] = dup
                wiring.connect(m, source, dup.i)
                outputs[producer] = [getattr(dup, f"o{k}") for k in range(edges)]

        fifos = iter(enumerate(self.fifo_plans))
        for n, lp in enumerate(plan.layers):
            unit, ports = units[n]
            name = lp.layer.name
            for j, (producer, port, depth) in enumerate(
                    zip(lp.layer.inputs, ports, lp.fifo_depths, strict=True)):
                upstream = outputs[producer].pop(0)
                bits = plan.producer_bits(producer)
                suffix = "" if len(ports) == 1 else str(j)
                conv = WidthConverter(bits, plan.producer_elems(producer), lp.in_elems)
                m.submodules[f"{name}_in{suffix}_width"] = conv
                wiring.connect(m, upstream, conv.i)
                upstream = conv.o
                if depth:
                    # converter first, FIFO second: the FIFO then holds whole input beats,
                    # so a layer can take a burst at one beat per cycle from a slow producer
                    k, fp = next(fifos)
                    buf = StreamFifo(fp.bits, fp.depth, ultra="link" in lp.ultra)
                    m.submodules[fp.name] = buf
                    wiring.connect(m, upstream, buf.i)
                    m.d.comb += self.fifo_full[k].eq(~buf.i.ready)
                    upstream = buf.o
                wiring.connect(m, upstream, getattr(unit, port))
            if lp.memory is not None and lp.memory.style == STREAMED:
                wiring.connect(m, wiring.flipped(getattr(self, f"w{n}")), unit.w)
            probe = getattr(self, f"probe{n}")
            m.d.comb += [
                probe.payload.eq(unit.o.payload),
                probe.valid.eq(unit.o.valid),
                probe.ready.eq(unit.o.ready),
            ]
        return m
