"""Choosing the parallelism of every layer, and the FIFOs between them.

A dataflow pipeline runs at the pace of its slowest layer, so the plan picks one target
``cycles per frame`` and gives every layer the least parallelism that reaches it (no layer
is faster than it needs to be). A matrix-vector layer (dense or convolution) has ``PE``
output channels x ``SIMD`` inputs per cycle; every other layer has one lane count ``p``
(channels per beat in and out, recorded as ``PE = SIMD = p``). A producer's ``PE`` and each
consumer's ``SIMD`` divide one another, so the width converter on every edge is a simple
(un)packer.

FIFO depths are chosen in :mod:`bitloom.plan.fifos`, weight memory styles in
:mod:`bitloom.plan.memory`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from bitloom.errors import BitloomError
from bitloom.ir import AnyLayer, Network, ScaleRequant, Thresholds
from bitloom.plan.fifos import fifo_depths, layer_cycles
from bitloom.plan.fold import Folding
from bitloom.plan.memory import WeightMemory, choose_memories
from bitloom.plan.registry import kind_of


def compatible(a: int, b: int) -> bool:
    return a % b == 0 or b % a == 0


def fold_options(layer: AnyLayer) -> list[Folding]:
    return kind_of(layer).fold_options(layer)


@dataclass
class LayerPlan:
    layer: AnyLayer
    fold: Folding
    fifo_depths: tuple[int, ...]  # per input, in beats of that input (0: no FIFO)
    memory: WeightMemory | None = None  # the weights' memory (None: a layer without weights)
    dsp: str | None = None  # the DSP family its integer products are packed into (None: LUTs)
    scale: ScaleRequant | None = None  # requantizes by multiply-shift, not its thresholds
    #: the parts whose RAMs are UltraRAM: "window" (line buffer), "link" (input FIFOs)
    ultra: tuple[str, ...] = ()
    #: register stages in the datapath beyond the unit's own, for a faster clock
    #: (:func:`bitloom.plan.clock.with_clock`)
    pipeline: int = 0

    @property
    def requant(self) -> Thresholds | ScaleRequant | None:
        """What the hardware requantizes with: the scale unit, else the layer's thresholds
        (the golden's semantics either way; None: the layer has no requantization)."""
        return self.scale if self.scale is not None else getattr(self.layer, "requant", None)

    @property
    def style(self) -> str:
        """The weight memory style the hardware unit is built with."""
        return self.memory.style if self.memory is not None else "lutram"

    @property
    def cycles(self) -> int:
        return layer_cycles(self.layer, self.fold)

    @property
    def fifo_depth(self) -> int:
        return sum(self.fifo_depths)

    @property
    def in_elems(self) -> int:
        return self.fold.simd

    @property
    def out_elems(self) -> int:
        return self.fold.pe

    @property
    def in_fmt(self):
        layer = self.layer
        return getattr(layer, "in_fmt", None) or getattr(layer, "fmt", None) or \
            layer.in_fmts[0]

    @property
    def in_beat_bits(self) -> int:
        return self.fold.simd * self.in_fmt.bits

    @property
    def out_beat_bits(self) -> int:
        return self.fold.pe * self.layer.out_fmt.bits

    @property
    def out_beats(self) -> int:
        return math.prod(self.layer.out_shape) // self.fold.pe


@dataclass(frozen=True)
class FifoPlan:
    """One input FIFO: of layer ``layer``'s input ``port``, ``depth`` beats of ``bits``."""

    name: str
    layer: int
    port: int
    depth: int
    bits: int


@dataclass
class Plan:
    net: Network
    layers: list[LayerPlan]
    clock_mhz: float
    in_elems: int  # elements per beat on the core's input stream

    @property
    def cycles_per_frame(self) -> int:
        """Steady-state initiation interval: the slowest layer."""
        return max(lp.cycles for lp in self.layers)

    @property
    def frames_per_second(self) -> float:
        return self.clock_mhz * 1e6 / self.cycles_per_frame

    @property
    def in_beats(self) -> int:
        return math.prod(self.net.input.stream_shape) // self.in_elems

    @property
    def in_fmt(self):
        return self.net.input.fmt

    @property
    def output(self) -> LayerPlan:
        return self.layers[-1]

    def producer_elems(self, producer: int) -> int:
        return self.in_elems if producer < 0 else self.layers[producer].out_elems

    def producer_bits(self, producer: int) -> int:
        return (self.in_fmt if producer < 0 else self.layers[producer].layer.out_fmt).bits

    def fifos(self) -> list[FifoPlan]:
        """Every input FIFO of the core, in the order the core builds them."""
        out = []
        for n, lp in enumerate(self.layers):
            inputs = lp.layer.inputs
            for j, (producer, depth) in enumerate(zip(inputs, lp.fifo_depths, strict=True)):
                if depth:
                    suffix = "" if len(inputs) == 1 else str(j)
                    out.append(FifoPlan(f"{lp.layer.name}_in{suffix}_fifo", n, j, depth,
                                        lp.in_elems * self.producer_bits(producer)))
        return out

    @property
    def latency_cycles(self) -> int:
        """Estimate of first input beat to last output beat of one frame, idle pipeline,
        along the longest path: each layer's cycles plus its pipeline (3, a scale
        requantizer's registers and any added for the clock) and FIFO and converter (2).
        ``bitloom verify`` measures the real figure."""
        done: list[int] = []
        for lp in self.layers:
            start = max((done[p] for p in lp.layer.inputs if p >= 0), default=0)
            stages = (lp.scale.stages if lp.scale is not None else 0) + lp.pipeline
            done.append(start + lp.cycles + 3 + stages + 2)
        return done[-1]


def make_plan(net: Network, target_cycles: int, clock_mhz: float = 100.0) -> Plan:
    """Fold every layer to reach ``target_cycles`` per frame as cheaply as possible."""
    net.require_layers()
    net.require_hardware()
    if target_cycles < 1:
        raise BitloomError(f"target of {target_cycles} cycles per frame is impossible.")
    folds: list[Folding] = []
    in_elems: int | None = None
    for layer in net.layers:
        producer_pes = [in_elems if p < 0 else folds[p].pe for p in layer.inputs]
        options = [f for f in fold_options(layer)
                   if all(pe is None or compatible(pe, f.simd) for pe in producer_pes)]
        if not options:
            raise BitloomError(f"{layer.name}: no parallelism fits its producers' widths.")
        meeting = [f for f in options if layer_cycles(layer, f) <= target_cycles]
        if meeting:  # fewest lanes, then wider SIMD (shorter accumulation, fewer beats)
            fold = min(meeting, key=lambda f: (f.pe * f.simd, -f.simd))
        else:
            fold = min(options, key=lambda f: (layer_cycles(layer, f), f.pe * f.simd))
        if -1 in layer.inputs and in_elems is None:
            in_elems = fold.simd
        folds.append(fold)
    return make_plan_with(net, folds, None, clock_mhz, in_elems)


def with_dsps(plan: Plan, family: str | None) -> Plan:
    """``plan`` with each layer's DSP use chosen for a board of ``family``."""
    for lp in plan.layers:
        lp.dsp = kind_of(lp.layer).dsp_family(lp.layer, family)
    return plan


def make_plan_with(net: Network, folds: list[Folding], depths: list[tuple[int, ...]] | None,
                   clock_mhz: float, in_elems: int | None = None,
                   styles: list[str | None] | None = None,
                   dsps: list[str | None] | None = None) -> Plan:
    """A plan with the given per-layer folding (as recorded in a report.json); FIFO depths
    are computed unless given, weight memory styles chosen (without a BRAM limit) unless
    given per layer."""
    net.require_hardware()
    if len(folds) != len(net.layers):
        raise BitloomError(f"{len(folds)} foldings for {len(net.layers)} layers.")
    first = next(i for i, ly in enumerate(net.layers) if -1 in ly.inputs)
    in_elems = in_elems or folds[first].simd
    memories = choose_memories(net, folds, styles=styles)
    layers = []
    for i, (layer, fold) in enumerate(zip(net.layers, folds, strict=True)):
        for p in layer.inputs:
            pe = in_elems if p < 0 else folds[p].pe
            if not compatible(pe, fold.simd):
                raise BitloomError(f"{layer.name}: SIMD {fold.simd} and its producer's PE {pe} "
                                   "must divide one another.")
        d = fifo_depths(net, folds, i) if depths is None else tuple(depths[i])
        layers.append(LayerPlan(layer, fold, d, memories[i], None if dsps is None else dsps[i]))
    return Plan(net, layers, clock_mhz, in_elems)


def candidate_targets(net: Network) -> list[int]:
    """Cycles-per-frame targets worth trying, fastest first."""
    top = max(layer_cycles(ly, Folding(1, 1)) for ly in net.layers)
    targets, t = [], 1
    while t < top:
        targets.append(t)
        t *= 2
    return [*targets, top]
