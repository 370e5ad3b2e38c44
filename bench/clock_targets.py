"""Estimated Fmax before and after pipelining for target clocks (issue: clock and synthesis).

For each model, board and clock: the plan without datapath registers ("none") and with the
registers `compile --clock` gives ("planned"), each synthesized with Yosys (layer units in
parallel) and timed from its netlist (bitloom.emit.timing: an estimate, not routed).
Writes a Markdown table and the rows as JSON lines.

    python bench/clock_targets.py --out docs/results/2026-12-08-clock-targets
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from datetime import date
from pathlib import Path

from rich.console import Console

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

CASES = {  # name -> (model path maker, target frames/s or None for the fastest fit)
    "demo MLP (mlp_digits, 1 M frames/s)": ("examples/mlp_digits.onnx", 1e6),
    "example CNN (cnn_digits, fastest fit)": ("examples/cnn_digits.onnx", None),
    "TFC-w1a1 (784-lane binary, 1 M frames/s)": ("tfc_1w1a", 1e6),
}
#: the unregistered design once per board (its Fmax does not depend on the target), then
#: the registers planned for each target
CLOCKS = {"pynq-z2": (142.857, 250.0), "ultra96-v2": (250.0,)}


def model_path(spec: str) -> Path:
    if spec.endswith(".onnx"):
        return HERE.parent / spec
    from finn_zoo_models import cached_export
    return cached_export(spec)


def run(case: str, board_name: str, clock: float, mode: str, work: Path) -> dict:
    import bitloom
    from bitloom.boards import load_board
    from bitloom.emit.design import emit_design
    from bitloom.flows import synthesize_design
    from bitloom.pipeline import Design
    from bitloom.plan import plan_design

    spec, fps = CASES[case]
    path = model_path(spec)
    board = load_board(board_name)
    plan = plan_design(bitloom.load(path), board, target_fps=fps, clock_mhz=clock)
    if mode == "none":
        for lp in plan.layers:
            lp.pipeline = 0
    folder = emit_design(plan, board.at_clock(clock), work, path)
    design = Design(**vars(folder))
    start = time.monotonic()
    synth = synthesize_design(design, Console(quiet=True), jobs=2)
    timing = design.report["timing"]
    return {"case": case, "board": board_name, "clock_mhz": clock, "registers": mode,
            "pipeline": {lp.layer.name: lp.pipeline for lp in plan.layers if lp.pipeline},
            "cycles_per_frame": plan.cycles_per_frame,
            "latency_cycles_estimate": plan.latency_cycles,
            "fmax_mhz": timing["fmax_mhz"], "limiting_layer": timing["limiting_layer"],
            "limiting_path": timing["limiting_path"]["path"],
            "LUT": synth["resources"]["LUT"], "FF": synth["resources"]["FF"],
            "synth_seconds": round(time.monotonic() - start, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--work", type=Path, default=Path("out/clock-targets"))
    args = parser.parse_args()
    rows, console = [], Console(stderr=True)
    jsonl = args.out.with_suffix(".jsonl")
    jsonl.parent.mkdir(parents=True, exist_ok=True)
    with jsonl.open("w") as out:
        for case in CASES:
            for board, clocks in CLOCKS.items():
                runs = [(clocks[0], "none")] + [(clock, "planned") for clock in clocks]
                for clock, mode in runs:
                    row = run(case, board, clock, mode, args.work / str(len(rows)))
                    rows.append(row)
                    out.write(json.dumps(row) + "\n")
                    out.flush()
                    console.print(f"{case} {board} {clock:g} MHz {mode}: "
                                  f"{row['fmax_mhz']:.0f} MHz est., LUT {row['LUT']:g} "
                                  f"FF {row['FF']:g} ({row['synth_seconds']:.0f} s)")
    write_table(rows, args.out.with_suffix(".md"))


def write_table(rows: list[dict], path: Path) -> None:
    lines = [f"# Estimated Fmax before and after pipelining ({date.today()})", "",
             f"Machine: {platform.machine()} {platform.system()}, `bench/clock_targets.py`. "
             "Fmax is the netlist estimate of `bitloom synth` (Yosys's Xilinx cell delays "
             "plus a routing allowance per net; not placed or routed). \"none\": no "
             "datapath registers; \"planned\": the registers `compile --clock` places for "
             "the target. LUT/FF from Yosys (layer units in parallel).", "",
             "| design | board | target MHz | registers | per layer | est. Fmax MHz | "
             "limiting | LUT | FF | latency est. (cycles) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        per_layer = ", ".join(f"{k} {v}" for k, v in r["pipeline"].items()) or "-"
        lines.append(f"| {r['case']} | {r['board']} | {r['clock_mhz']:g} | {r['registers']} | "
                     f"{per_layer} | {r['fmax_mhz']:.0f} | {r['limiting_layer']}: "
                     f"{r['limiting_path']} | {r['LUT']:g} | {r['FF']:g} | "
                     f"{r['latency_cycles_estimate']} |")
    path.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
