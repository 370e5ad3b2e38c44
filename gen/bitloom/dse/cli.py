"""``bitloom dse FLOAT.onnx --calib DATA.npz --eval DATA.npz --board B --out DIR``.

Writes DIR/pareto.csv (every format x folding point with its accuracy, estimated resources
and Pareto flags), DIR/pareto.svg, DIR/dse.json (what was swept, float accuracy, timing)
and DIR/models/ (the quantized models, ready for ``bitloom compile``), and prints the
table of each format at its fastest fitting folding.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from bitloom.boards import load_board
from bitloom.console import make_console
from bitloom.dse.dse import DEFAULT_FORMATS, format_pairs, sweep, synthesize_points, write_csv
from bitloom.emit.pareto import pareto_svg
from bitloom.errors import BitloomError
from bitloom.frontend.loader import read_model
from bitloom.plan.requantizers import parse_requantizers
from bitloom.quantize.calibrate import METHODS, check_calib, input_batch, run_float
from bitloom.quantize.cli import load_npz

console = make_console()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of the ``dse`` subcommand."""
    parser.add_argument("model", metavar="FLOAT.onnx", help="float ONNX model")
    parser.add_argument("--calib", required=True, metavar="DATA.npz",
                        help=".npz with calibration inputs `x`")
    parser.add_argument("--eval", required=True, metavar="DATA.npz",
                        help=".npz with inputs `x` and labels `y` to measure accuracy on")
    parser.add_argument("--board", required=True, help="board name or .toml file")
    parser.add_argument("--out", required=True, metavar="DIR", help="folder for the results")
    parser.add_argument("--formats", nargs="+", metavar="FMT", default=list(DEFAULT_FORMATS),
                        help="formats used for weights and activations alike "
                        "(default: int3..int8 and minifloats of 3..8 bits)")
    parser.add_argument("--cross", action="store_true",
                        help="every weight x activation pair of --formats, not only equal ones")
    parser.add_argument("--weights", nargs="+", metavar="FMT",
                        help="weight formats (with --acts: their product is swept)")
    parser.add_argument("--acts", nargs="+", metavar="FMT", help="activation formats")
    parser.add_argument("--targets", nargs="+", type=int, metavar="CYCLES",
                        help="cycles-per-frame targets (default: every candidate folding)")
    parser.add_argument("--method", choices=METHODS, default="mse",
                        help="calibration method of the quantizer")
    parser.add_argument("--budget", type=float, default=0.5,
                        help="fraction of the board a design may use, as `compile` plans "
                        "(default 0.5)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                        help="worker processes (default: one per core)")
    parser.add_argument("--requantizer", action="append", metavar="[LAYER=]KIND",
                        help="as compile's --requantizer (thresholds, scale, scale-lut); "
                             "default: chosen per layer by cost")
    parser.add_argument("--synth", type=int, default=0, metavar="K",
                        help="synthesize the K most accurate points of the LUT front with Yosys")


def results_table(rows: list[dict]) -> Table:
    """Each format at its fastest fitting folding (or, when none fits, its cheapest one),
    most accurate first."""
    table = Table(title="each format at its fastest folding that fits", title_justify="left")
    for col in ("weights", "acts", "accuracy", "cycles", "frames/s", "LUT", "FF", "BRAM36",
                "util.", "front"):
        table.add_column(col, justify="left" if col in ("weights", "acts", "front") else "right")
    shown = {(r["weights"], r["acts"]): r for r in rows if r["fastest_fit"]}
    for r in sorted(rows, key=lambda r: r["LUT"]):
        shown.setdefault((r["weights"], r["acts"]), r)  # none fits: its cheapest point
    for r in sorted(shown.values(), key=lambda r: -r["accuracy"]):
        front = " ".join(n for n, f in (("LUT", r["pareto_lut"]), ("fps", r["pareto_fps"])) if f)
        front = front if r["fits"] else "does not fit"
        table.add_row(r["weights"], r["acts"], f"{r['accuracy']:.2%}",
                      str(r["cycles_per_frame"]), f"{r['fps']:,.0f}", f"{r['LUT']:,.0f}",
                      f"{r['FF']:,.0f}", f"{r['BRAM36']:g}", f"{r['utilization']:.0%}", front)
    return table


def float_accuracy(model: str, x: np.ndarray, y: np.ndarray) -> float:
    """The float model's accuracy in onnxruntime, the line the formats are measured against."""
    m, source = read_model(model)
    graph_input = next(i for i in m.graph.input
                       if i.name not in {t.name for t in m.graph.initializer})
    x = check_calib(x, graph_input, source, "evaluation")
    out = m.graph.output[0].name
    ref = np.concatenate(run_float(m, x, [out], input_batch(graph_input)[1])[out])
    return float(np.mean(ref.argmax(-1) == y))


def command(args: argparse.Namespace) -> int:
    """Run ``bitloom dse``; user mistakes raise :class:`BitloomError`."""
    board = load_board(args.board)
    calib, _ = load_npz(args.calib)
    x, y = load_npz(args.eval)
    if y is None:
        raise BitloomError(f"{args.eval}: needs labels `y` to measure accuracy.")
    if args.jobs < 1 or args.synth < 0 or not 0 < args.budget <= 1:
        raise BitloomError("--jobs must be >= 1, --synth >= 0 and --budget in (0, 1].")
    parse_requantizers(args.requantizer or ())  # a bad value is refused before any work
    pairs = format_pairs(args.formats, args.weights, args.acts, args.cross)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    acc_float = float_accuracy(args.model, x, y)
    start = time.monotonic()
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=Console(stderr=True)) as bar:
        task = bar.add_task(f"{len(pairs)} format pairs on {args.jobs} worker(s)",
                            total=len(pairs))

        def done(pair: tuple[str, str], error: str | None) -> None:
            bar.advance(task)
            if error:
                bar.console.print(f"bitloom: warning: skipped {error}", markup=False)

        rows, failures = sweep(args.model, calib, x, y, board.name, pairs, out,
                               targets=args.targets, method=args.method, budget=args.budget,
                               jobs=args.jobs, on_done=done,
                               requantizers=args.requantizer or ())
    seconds = time.monotonic() - start
    if not rows:
        raise BitloomError("no format pair could be quantized and compiled: "
                           + "; ".join(failures))
    if args.synth:
        synthesize_points(rows, args.synth, board.name, out, console)
    write_csv(rows, out / "pareto.csv")
    title = f"{Path(args.model).name} on {board.title}"
    (out / "pareto.svg").write_text(pareto_svg(rows, acc_float, title))
    meta = {
        "model": str(args.model), "board": board.name, "clock_mhz": board.default_clock_mhz,
        "budget": args.budget, "method": args.method, "pairs": [list(p) for p in pairs],
        "skipped": failures, "float_accuracy": acc_float, "eval_samples": len(y),
        "jobs": args.jobs, "sweep_seconds": round(seconds, 1),
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()}",
    }
    (out / "dse.json").write_text(json.dumps(meta, indent=2) + "\n")
    console.print(results_table(rows))
    lut_front = ", ".join(f"{r['weights']}/{r['acts']}" for r in rows if r["pareto_lut"])
    console.print(f"float accuracy {acc_float:.2%}; {len(pairs)} pairs x foldings = {len(rows)} "
                  f"points in {seconds:.0f} s; Pareto (accuracy vs LUTs): {lut_front}; wrote "
                  f"{out / 'pareto.csv'} and {out / 'pareto.svg'}", markup=False, soft_wrap=True)
    return 0
