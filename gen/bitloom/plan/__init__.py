"""Planning: per-layer folding, stream widths, FIFO depths and the throughput they give."""

from bitloom.plan.design import plan_design
from bitloom.plan.folding import LayerPlan, Plan, make_plan, make_plan_with

__all__ = ["LayerPlan", "Plan", "make_plan", "make_plan_with", "plan_design"]
