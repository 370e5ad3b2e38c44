"""Planning: per-layer folding, stream widths, FIFO depths and the throughput they give."""

from bitloom.plan.folding import (
    LayerPlan,
    Plan,
    default_plan,
    make_plan,
    make_plan_with,
    plan_for_board,
)

__all__ = ["LayerPlan", "Plan", "default_plan", "make_plan", "make_plan_with", "plan_for_board"]
