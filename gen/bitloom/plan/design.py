"""The one way a design is planned for a board, whoever asks: ``bitloom compile``, the
library's ``bitloom.compile``, ``run --engine rtl``, the design-space search and the cost
model's calibration. Each of them then describes the design the others build.

A plan for a board stays under a ceiling on the estimated share of each resource
(:data:`DEFAULT_MAX_UTILIZATION`, or ``max_utilization`` percent of every one). Its weights
take block RAM, then ROMs of LUTs, then stream from the board's DDR, and the frame rate is
the slower of the fabric's and the DDR's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace

from bitloom.errors import BitloomError
from bitloom.ir import Network
from bitloom.plan.clock import with_clock
from bitloom.plan.cost import estimate_counts, estimate_plan, layer_parts, rom_counts
from bitloom.plan.folding import LayerPlan, Plan, candidate_targets, make_plan, with_dsps
from bitloom.plan.memory import STREAMED, parse_overrides, with_memories
from bitloom.plan.requantizers import parse_requantizers, with_requantizers

#: Estimated share of each resource a plan may take by default: AMD's UltraFast design
#: methodology (UG949) advises staying under about 70% of LUTs and 50% of flip-flops, 80% of
#: block RAM and DSPs, for a design that still places, routes and meets timing without
#: congestion; the estimates themselves are within ~15% of Yosys (docs/dse.md).
DEFAULT_MAX_UTILIZATION = {"LUT": 0.70, "FF": 0.50, "DSP": 0.80, "BRAM36": 0.80,
                           "URAM": 0.80}
#: the resources a plan is checked against
RESOURCES = ("LUT", "FF", "DSP", "BRAM36", "URAM")


def utilization_caps(max_utilization: float | None) -> dict[str, float]:
    """Per resource, the share of the board a plan may take; ``max_utilization`` (percent)
    sets one ceiling for all."""
    if max_utilization is None:
        return dict(DEFAULT_MAX_UTILIZATION)
    if not 0 < max_utilization <= 100:
        raise BitloomError(f"--max-utilization is a percentage in (0, 100], got "
                           f"{max_utilization:g}.")
    return dict.fromkeys(DEFAULT_MAX_UTILIZATION, max_utilization / 100)


def rom_luts(depth: int, width: int) -> float:
    """LUTs of a ``depth`` x ``width`` weight ROM built as logic, as the cost model prices it."""
    return estimate_counts(rom_counts(depth, width))["LUT"]


def weight_traffic(plan: Plan, board) -> tuple[int, int]:
    """``(bits, cycles)``: what the DMAs of the streamed weights read from DDR per frame
    (every word in its DMA slot, once per pass), and the cycles per frame that takes: each
    stream gets one DMA beat per cycle on its own port, and all share the DDR's bandwidth
    (:meth:`Board.ddr_bits_per_cycle`)."""
    bits = port_cycles = 0
    for lp in plan.layers:
        memory = lp.memory
        if memory is None or memory.style != STREAMED:
            continue
        dma, slot = board.weight_dma(memory.width)
        reads = memory.depth * memory.passes
        bits += reads * slot
        port_cycles = max(port_cycles, reads * slot // dma)
    ddr_cycles = math.ceil(bits / board.ddr_bits_per_cycle(plan.clock_mhz))
    return bits, max(port_cycles, ddr_cycles)


def frame_cycles(plan: Plan, board) -> int:
    """Cycles from one frame to the next: the slowest layer's, or the streamed weights',
    whichever is longer."""
    return max(plan.cycles_per_frame, weight_traffic(plan, board)[1])


def streams_weights(plan: Plan) -> bool:
    return any(lp.memory is not None and lp.memory.style == STREAMED for lp in plan.layers)


def with_ultraram(plan: Plan, bram36_to_free: float, uram_budget: float) -> Plan:
    """``plan`` with line buffers and FIFOs moved from block RAM to UltraRAM, those that
    free the most BRAM36 per URAM tile first, until ``bram36_to_free`` tiles are freed or
    the URAM budget is spent. Why only these: UltraRAM holds no initial contents, so
    weights and constant tables stay in block RAM (or stream); a RAM needs none."""
    moves = []
    for i, lp in enumerate(plan.layers):
        for part, counts in layer_parts(lp).items():
            bram = counts.get("BRAM36", 0.0)
            if part in ("window", "link") and bram:
                tiles = layer_parts(replace(lp, ultra=(part,)))[part].get("URAM", 0)
                if tiles:
                    moves.append((bram / tiles, i, part, bram, tiles))
    layers: list[LayerPlan] = list(plan.layers)
    freed = used = 0.0
    for _, i, part, bram, tiles in sorted(moves, key=lambda m: (-m[0], m[1], m[2])):
        if freed >= bram36_to_free:
            break
        if used + tiles <= uram_budget:
            layers[i] = replace(layers[i], ultra=(*layers[i].ultra, part))
            freed, used = freed + bram, used + tiles
    return replace(plan, layers=layers)


class BoardFit:
    """Plans of one network for one board, each with its weight memories chosen within the
    ceilings and checked against them."""

    def __init__(self, net: Network, board, max_utilization: float | None,
                 weights_memory: Sequence[str], requantizers: Sequence[str] = ()) -> None:
        self.net, self.board = net, board
        self.caps = utilization_caps(max_utilization)
        self.default, self.per_layer = parse_overrides(weights_memory)
        parse_requantizers(requantizers)  # a bad value is refused before any planning
        self.requantizers = requantizers

    def budget(self, resource: str) -> float:
        return self.caps[resource] * self.board.resources.get(resource, 0)

    def memories(self, plan: Plan) -> Plan:
        """``plan`` with its weights in block RAM within what its other memories (line
        buffers, FIFOs, thresholds) leave under the ceiling, then in ROMs within the LUTs the
        logic leaves, then streamed; each layer's requantizer chosen first, a DSP and a
        BRAM36 priced at the LUTs the board has per DSP and per BRAM36."""
        plan = with_dsps(plan, self.board.family)
        plan = with_requantizers(plan, self.requantizers, self.board, self.budget("DSP"))
        if self.budget("URAM") >= 1:  # what block RAM everything would take, over budget
            wanted = estimate_plan(with_memories(plan, None, self.per_layer, self.default))
            plan = with_ultraram(plan, wanted["BRAM36"] - self.budget("BRAM36"),
                                 self.budget("URAM"))
        streamed = with_memories(plan, 0, self.per_layer, self.default)
        base = estimate_plan(streamed)
        forced = sum(lp.memory.bram36 for lp in streamed.layers if lp.memory is not None)
        bram = self.budget("BRAM36") - (base.get("BRAM36", 0) - forced)
        return with_memories(plan, max(bram, 0), self.per_layer, self.default,
                             max(self.budget("LUT") - base["LUT"], 0), rom_luts)

    def at(self, target_cycles: int) -> Plan:
        """The cheapest plan of at most ``target_cycles`` per frame (when any layer cannot
        reach it, the cheapest of the speed reached)."""
        plan = make_plan(self.net, target_cycles, self.board.default_clock_mhz)
        if plan.cycles_per_frame > target_cycles:
            plan = make_plan(self.net, plan.cycles_per_frame, self.board.default_clock_mhz)
        return self.memories(plan)

    def over(self, plan: Plan) -> list[str]:
        """The resources whose estimate is above their ceiling."""
        est = estimate_plan(plan)
        return [k for k in RESOURCES if est.get(k, 0) > self.budget(k)]

    def describe_over(self, plan: Plan) -> str:
        return ", ".join(f"{k} above {self.caps[k]:.0%}" for k in self.over(plan))

    def fastest(self) -> Plan:
        """The plan with the most frames per second within the ceilings: the best of the
        power-of-two targets, refined by bisection towards the next faster one."""
        def rank(plan: Plan) -> tuple[int, float]:
            return frame_cycles(plan, self.board), estimate_plan(plan).get("LUT", 0)

        fitting: dict[int, Plan] = {}
        last = None
        for target in candidate_targets(self.net):
            last = self.at(target)
            if not self.over(last):
                fitting[target] = last
        if not fitting:
            raise BitloomError(
                f"the model does not fit {self.board.name} even fully folded: estimated "
                f"{self.describe_over(last)} of the board; raise --max-utilization (at your "
                "own risk of routing and timing) or choose a bigger board.")
        target = min(fitting, key=lambda t: rank(fitting[t]))
        best, lo, hi = fitting[target], target // 2, target
        while hi - lo > 1:
            mid = (lo + hi) // 2
            plan = self.at(mid)
            if self.over(plan):
                lo = mid
            else:
                hi = mid
                best = min(best, plan, key=rank)
        return best


def plan_design(net: Network, board, *, target_fps: float | None = None,
                target_cycles: int | None = None, weights_memory: Sequence[str] = (),
                max_utilization: float | None = None,
                requantizers: Sequence[str] = (), clock_mhz: float | None = None) -> Plan:
    """The plan of ``net`` on ``board``: the fastest within the utilization ceilings, or the
    cheapest reaching ``target_fps``, or the cheapest of at most ``target_cycles`` per frame
    (a design-space point, not checked against the board); integer products packed into the
    board's DSPs; weight memories chosen within the ceilings, or as ``weights_memory``
    (``STYLE`` and/or ``LAYER=STYLE``) says; requantizers by cost, or as ``requantizers``
    (``KIND`` and/or ``LAYER=KIND``, :mod:`bitloom.plan.requantizers`) says. A
    ``clock_mhz`` (one of the board's PL clocks) replaces the board's default clock; each
    layer's datapath gets the registers :mod:`bitloom.plan.clock` gives it for the clock."""
    board = board if clock_mhz is None else board.at_clock(clock_mhz)
    plan = _plan_at_clock(net, board, target_fps, target_cycles, weights_memory,
                          max_utilization, requantizers)
    return with_clock(plan, board.default_clock_mhz, board.speed_factor)


def _plan_at_clock(net: Network, board, target_fps: float | None, target_cycles: int | None,
                   weights_memory: Sequence[str], max_utilization: float | None,
                   requantizers: Sequence[str]) -> Plan:
    """:func:`plan_design` before the clock's registers."""
    net.require_layers()
    fit = BoardFit(net, board, max_utilization, weights_memory, requantizers)
    if target_cycles is not None:
        if target_fps is not None:
            raise BitloomError("give a target in frames/s or in cycles per frame, not both.")
        return fit.memories(make_plan(net, target_cycles, board.default_clock_mhz))
    if target_fps is None:
        return fit.fastest()
    if target_fps <= 0:
        raise BitloomError(f"--target-fps must be positive, got {target_fps}.")
    clock = board.default_clock_mhz
    cycles = int(clock * 1e6 // target_fps)
    if cycles < 1:
        raise BitloomError(f"{target_fps} frames/s is above one frame per cycle at {clock} MHz.")
    plan = fit.at(cycles)
    if plan.cycles_per_frame > cycles:
        raise BitloomError(f"{target_fps} frames/s needs {cycles} cycles per frame; the "
                           f"fastest folding takes {plan.cycles_per_frame}.")
    if fit.over(plan):
        raise BitloomError(f"{target_fps} frames/s does not fit {board.name}: estimated "
                           f"{fit.describe_over(plan)} of the board.")
    if frame_cycles(plan, board) > cycles:
        raise BitloomError(f"{target_fps} frames/s needs {cycles} cycles per frame; the "
                           f"weights streamed from {board.name}'s DDR take "
                           f"{frame_cycles(plan, board)}.")
    return plan
