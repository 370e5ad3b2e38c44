"""Choosing PE x SIMD per layer.

A dataflow pipeline runs at the pace of its slowest layer, so the plan picks one target
``cycles per frame`` and gives every layer the fewest MACs per cycle that reach it (no layer
is faster than it needs to be). Adjacent layers need ``PE[i]`` and ``SIMD[i+1]`` to divide
one another so the width converter between them stays a simple (un)packer.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from bitloom.errors import BitloomError
from bitloom.hw.mvu import Folding
from bitloom.ir import MatrixVector, Network


@dataclass
class LayerPlan:
    layer: MatrixVector
    fold: Folding
    fifo_depth: int  # input FIFO in beats of in_beat_bits (0: the first layer has none)

    @property
    def cycles(self) -> int:
        k, n = self.layer.weights.shape
        return (k // self.fold.simd) * (n // self.fold.pe)

    @property
    def in_beat_bits(self) -> int:
        return self.fold.simd * self.layer.in_fmt.bits

    @property
    def out_beat_bits(self) -> int:
        return self.fold.pe * self.layer.out_fmt.bits

    @property
    def out_beats(self) -> int:
        return self.layer.out_features // self.fold.pe

    @property
    def in_beats(self) -> int:
        return self.layer.in_features // self.fold.simd


@dataclass
class Plan:
    net: Network
    layers: list[LayerPlan]
    clock_mhz: float

    @property
    def cycles_per_frame(self) -> int:
        """Steady-state initiation interval: the slowest layer."""
        return max(lp.cycles for lp in self.layers)

    @property
    def frames_per_second(self) -> float:
        return self.clock_mhz * 1e6 / self.cycles_per_frame

    @property
    def latency_cycles(self) -> int:
        """Estimate of first input beat to last output beat of one frame, idle pipeline:
        each layer's cycles plus its unit pipeline (3) and FIFO/converter (2). ``bitloom
        verify`` measures the real figure."""
        total = 0
        for lp in self.layers:
            total += lp.cycles + 3 + 2  # unit pipeline + FIFO/converter
        return total


def divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def compatible(a: int, b: int) -> bool:
    return a % b == 0 or b % a == 0


def fold_layer(layer: MatrixVector, target: int, prev_pe: int | None) -> Folding:
    """Cheapest folding with at most ``target`` cycles (or the fastest possible)."""
    k, n = layer.weights.shape
    options = [
        Folding(pe, simd) for pe in divisors(n) for simd in divisors(k)
        if prev_pe is None or compatible(prev_pe, simd)
    ]
    meeting = [f for f in options if (k // f.simd) * (n // f.pe) <= target]
    if meeting:
        # fewest MACs, then wider SIMD (shorter accumulation, fewer output beats)
        return min(meeting, key=lambda f: (f.pe * f.simd, -f.simd))
    return min(options, key=lambda f: ((k // f.simd) * (n // f.pe), f.pe * f.simd))


def make_plan(net: Network, target_cycles: int, clock_mhz: float = 100.0) -> Plan:
    """Fold every layer to reach ``target_cycles`` per frame as cheaply as possible."""
    if target_cycles < 1:
        raise BitloomError(f"target of {target_cycles} cycles per frame is impossible.")
    layers: list[LayerPlan] = []
    prev_pe = None
    for layer in net.layers:
        fold = fold_layer(layer, target_cycles, prev_pe)
        # Two input frames: a layer takes its input in a burst during its first neuron fold
        # and not at all during the others, while its producer delivers at an even rate.
        depth = 0 if prev_pe is None else max(2, 2 * (layer.in_features // fold.simd))
        layers.append(LayerPlan(layer, fold, depth))
        prev_pe = fold.pe
    return Plan(net, layers, clock_mhz)


def make_plan_with(net: Network, folds: list[Folding], depths: list[int],
                   clock_mhz: float) -> Plan:
    """A plan with the given per-layer folding (as recorded in a report.json)."""
    if len(folds) != len(net.layers):
        raise BitloomError(f"{len(folds)} foldings for {len(net.layers)} layers.")
    layers = [LayerPlan(ly, f, d) for ly, f, d in zip(net.layers, folds, depths, strict=True)]
    for prev, lp in itertools.pairwise(layers):
        if not compatible(prev.fold.pe, lp.fold.simd):
            raise BitloomError(f"{lp.layer.name}: SIMD {lp.fold.simd} and the previous PE "
                               f"{prev.fold.pe} must divide one another.")
    return Plan(net, layers, clock_mhz)


def candidate_targets(net: Network) -> list[int]:
    """Cycles-per-frame targets worth trying, fastest first."""
    top = max(ly.macs for ly in net.layers)
    targets, t = [], 1
    while t < top:
        targets.append(t)
        t *= 2
    return [*targets, top]


def plan_for_board(net: Network, board, target_fps: float | None = None,
                   clock_mhz: float | None = None, budget: float = 0.5) -> Plan:
    """Fit to ``board``: the fastest plan within ``budget`` of its capacity, or the cheapest
    plan reaching ``target_fps``. Deterministic."""
    from bitloom.plan.cost import estimate_plan

    clock = clock_mhz or board.default_clock_mhz

    def over(plan: Plan) -> list[str]:
        est = estimate_plan(plan)
        return [k for k in ("LUT", "FF", "DSP", "BRAM36")
                if est.get(k, 0) > budget * board.resources.get(k, 0)]

    if target_fps is not None:
        if target_fps <= 0:
            raise BitloomError(f"--target-fps must be positive, got {target_fps}.")
        cycles = int(clock * 1e6 // target_fps)
        if cycles < 1:
            raise BitloomError(f"{target_fps} frames/s is above one frame per cycle at "
                               f"{clock} MHz.")
        plan = make_plan(net, cycles, clock)
        if plan.cycles_per_frame > cycles:
            raise BitloomError(f"{target_fps} frames/s needs {cycles} cycles per frame; the "
                               f"fastest folding takes {plan.cycles_per_frame}.")
        if over(plan):
            raise BitloomError(f"{target_fps} frames/s does not fit {board.name}: estimated "
                               f"{', '.join(over(plan))} above {budget:.0%} of the board.")
        return plan
    for target in candidate_targets(net):
        plan = make_plan(net, target, clock)
        if not over(plan):
            return plan
    raise BitloomError(f"the model does not fit {board.name} even fully folded: "
                       f"estimated {', '.join(over(plan))} above {budget:.0%} of the board.")


def default_plan(net: Network) -> Plan:
    """The plan ``run --engine rtl`` uses when none is given: fit to a PYNQ-Z2."""
    from bitloom.boards import load_board

    return plan_for_board(net, load_board("pynq-z2"))
