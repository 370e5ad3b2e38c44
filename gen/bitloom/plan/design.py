"""The one way a design is planned for a board, whoever asks: ``bitloom compile``, the
library's ``bitloom.compile``, ``run --engine rtl``, the design-space search and the cost
model's calibration. Each of them then describes the design the others build."""

from __future__ import annotations

from collections.abc import Sequence

from bitloom.errors import BitloomError
from bitloom.ir import Network
from bitloom.plan.folding import Plan, make_plan, plan_for_board, with_dsps
from bitloom.plan.memory import board_budget, parse_overrides, with_memories


def plan_design(net: Network, board, *, target_fps: float | None = None,
                target_cycles: int | None = None,
                weights_memory: Sequence[str] = ()) -> Plan:
    """The plan of ``net`` on ``board``: the fastest that fits half the board, or the
    cheapest reaching ``target_fps``, or the cheapest of at most ``target_cycles`` per frame
    (a design-space point, not checked against the board); integer products packed into the
    board's DSPs; weight memories chosen within half its block RAM, or as
    ``weights_memory`` (``STYLE`` and/or ``LAYER=STYLE``) says."""
    if target_cycles is not None:
        if target_fps is not None:
            raise BitloomError("give a target in frames/s or in cycles per frame, not both.")
        net.require_layers()
        plan = with_dsps(make_plan(net, target_cycles, board.default_clock_mhz), board.family)
    else:
        plan = plan_for_board(net, board, target_fps=target_fps)
    default, per_layer = parse_overrides(weights_memory)
    return with_memories(plan, board_budget(board), per_layer, default)
