"""Register stages for a target clock: how many each layer's datapath gets.

A unit's longest path is its dot product: the products, the rows of the adder tree and the
accumulation, one cycle today. :func:`with_clock` gives each layer the fewest registers
among those levels (:meth:`~bitloom.plan.kind.LayerKind.datapath_levels`, spread evenly by
the unit) that bring one segment within the clock period, by :data:`LEVEL_PS`: one level's
share of the netlist timing estimate (:mod:`bitloom.emit.timing`) of the example CNN's
units on Artix-7 -1, about 1.7 ns (a LUT, a carry-chain adder and their nets). The estimate
after synthesis, not this rule, says whether the clock is met.
"""

from __future__ import annotations

import math

from bitloom.plan.folding import Plan
from bitloom.plan.registry import kind_of

#: one datapath level on Artix-7 -1 (ps), scaled by the board's speed factor
LEVEL_PS = 1700.0


def stages_for(levels: int, period_ps: float) -> int:
    """The fewest registers among ``levels`` levels (at most one per level) after which
    every segment fits ``period_ps``; as many as there are levels when none suffices."""
    for depth in range(levels):
        if math.ceil(levels / (depth + 1)) * LEVEL_PS <= period_ps:
            return depth
    return max(levels - 1, 0)


def register_levels(depth: int, levels: int) -> list[int]:
    """The levels (of ``levels``, the last one not registrable: the accumulation) after
    which ``depth`` registers cut the chain into segments of equal length, as
    :func:`stages_for` counted them."""
    if not 0 <= depth < levels:
        raise ValueError(f"{depth} registers among {levels} levels")
    return sorted({math.ceil((i + 1) * levels / (depth + 1)) - 1 for i in range(depth)})


def with_clock(plan: Plan, clock_mhz: float, speed_factor: float) -> Plan:
    """``plan`` at ``clock_mhz`` on a part whose delays are ``speed_factor`` of Artix-7 -1,
    each layer's datapath registered for it."""
    plan.clock_mhz = clock_mhz
    period = 1e6 / clock_mhz / speed_factor  # in Artix-7 -1 picoseconds
    for lp in plan.layers:
        levels = kind_of(lp.layer).datapath_levels(lp)
        lp.pipeline = stages_for(levels, period) if levels else 0
    return plan
