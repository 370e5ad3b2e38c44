"""The ``bitloom`` command: inspect, run, compile, verify, synth, build, bench, quantize, dse.

Exit status: 0 success, 1 a verification found hardware that differs from golden, 2 a user
error (bad file, unsupported op, bad option) with a one-paragraph message and no traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from rich.table import Table

import bitloom
from bitloom import dse, quantize
from bitloom.arrays import load_arrays
from bitloom.bench import DEFAULT_PAIRS, measure, write_results
from bitloom.boards import load_board
from bitloom.console import make_console
from bitloom.emit.hls import emit_hls, run_vitis_hls
from bitloom.errors import BitloomError
from bitloom.ir.summary import layer_formats
from bitloom.plan import plan_design
from bitloom.plan.cost import estimate_layer
from bitloom.plan.requantizers import requantizer_name

console = make_console()
errors = make_console(stderr=True)


@contextmanager
def progress(message: str):
    """A spinner on a terminal, a plain line otherwise (CI logs)."""
    if console.is_terminal:
        with console.status(message) as status:
            yield status
    else:
        console.print(message)

        class Plain:
            def update(self, text: str) -> None:
                console.print(text)

        yield Plain()


def load_array(path: str) -> np.ndarray:
    """The input batch of ``bitloom run``: a .npy, or an .npz of one array (or one named
    ``x``)."""
    p = Path(path)
    data = load_arrays(path, "Pass a .npy array batched on axis 0.")
    if isinstance(data, dict):
        if len(data) != 1 and "x" not in data:
            raise BitloomError(f"{p}: an .npz must hold one array (or one named 'x'); it "
                               f"holds {', '.join(data)}.")
        data = data["x"] if "x" in data else next(iter(data.values()))
    if not np.issubdtype(data.dtype, np.number):
        raise BitloomError(f"{p}: holds {data.dtype} data; expected numbers.")
    return data


def layer_table(plan, report: dict | None = None) -> Table:
    table = Table(title="layers", title_justify="left")
    for col in ("layer", "op", "in -> out", "in", "weight", "acc", "out", "requant", "PE",
                "SIMD", "cycles", "est. LUT"):
        table.add_column(col, justify="left" if col in ("layer", "op") else "right")
    for lp in plan.layers:
        ly, fmts = lp.layer, layer_formats(lp.layer)
        shapes = f"{'x'.join(map(str, ly.in_shape))} -> {'x'.join(map(str, ly.out_shape))}"
        table.add_row(ly.name, ly.kind, shapes, fmts["input"], fmts.get("weight", "-"),
                      fmts.get("accumulator", "-"), fmts["output"],
                      requant_label(lp), str(lp.fold.pe),
                      str(lp.fold.simd), str(lp.cycles), str(estimate_layer(lp)["LUT"]))
    return table


def requant_label(lp) -> str:
    """The requant column: the requantizer, "table" for a table unit, "-" for a layer that
    passes its input's codes on (MaxPool, Concat, ChannelShuffle)."""
    if hasattr(lp.layer, "table"):
        return "table"
    return requantizer_name(lp.requant) if hasattr(lp.layer, "acc_fmt") else "-"


# -- commands ------------------------------------------------------------------------------
def cmd_inspect(args) -> int:
    net = bitloom.load(args.model, args.input_format, args.input_scale)
    console.print(net.summary(), soft_wrap=True, markup=False)
    return 0


def cmd_run(args) -> int:
    net = bitloom.load(args.model, args.input_format, args.input_scale)
    x = load_array(args.input)
    if args.engine == "rtl":
        plan = plan_design(net, load_board(args.board))
        with progress(f"Running {len(x)} frames on the RTL...") as status:
            y = net.run(x, engine="rtl", status=status, plan=plan)
    else:
        y = net.run(x, engine=args.engine)
    try:
        np.save(args.output, y)
    except OSError as exc:
        raise BitloomError(f"cannot write {args.output}: {exc.strerror}.") from None
    console.print(f"{args.engine}: {len(x)} frames -> {args.output} {tuple(y.shape)} float32")
    return 0


def cmd_compile(args) -> int:
    board = load_board(args.board)
    if args.backend == "hls":
        net = bitloom.load(args.model, args.input_format, args.input_scale)
        plan = plan_design(net, board, target_fps=args.target_fps,
                           weights_memory=args.weights_memory or (),
                           max_utilization=args.max_utilization,
                           requantizers=args.requantizer or (), clock_mhz=args.clock)
        with progress("Generating HLS C++..."):
            hls_dir = emit_hls(net, Path(args.out), plan=plan, part=board.part,
                               clock_ns=1000.0 / plan.clock_mhz)
        console.print(f"wrote {hls_dir}")
        console.print(run_vitis_hls(hls_dir))
        return 0
    start = time.monotonic()
    with progress("Compiling: Amaranth elaborates each layer, then writes Verilog") as status:
        design = bitloom.compile(
            args.model, board, out=args.out, target_fps=args.target_fps,
            weights_memory=args.weights_memory or (), max_utilization=args.max_utilization,
            requantizers=args.requantizer or (), clock_mhz=args.clock,
            input_format=args.input_format,
            input_scale=args.input_scale,
            on_step=lambda text: status.update(f"{text} [{time.monotonic() - start:.0f} s]"))
    plan = design.plan
    console.print(layer_table(plan))
    memories = [f"{lp.layer.name} {lp.memory.style}"
                + (f" ({lp.memory.bram36:g} BRAM36)" if lp.memory.bram36 else "")
                for lp in plan.layers if lp.memory is not None]
    if memories:
        console.print(f"weights: {', '.join(memories)} (init files in {args.out}/rtl/weights)")
    r = design.report
    ddr = r["weights_from_ddr"]
    if ddr["bits_per_frame"]:
        console.print(f"streamed weights: {ddr['bits_per_frame'] / 8e6:,.2f} MB per frame from "
                      f"DDR ({ddr['ddr_gbytes_per_s']:g} GB/s peak, half counted on): "
                      f"{ddr['cycles_per_frame']} cycles/frame")
    console.print(f"{board.title} ({board.part}) at {plan.clock_mhz:g} MHz: "
                  f"{r['cycles_per_frame']} cycles/frame, {r['frames_per_second']:,.0f} frames/s"
                  f"; wrote {args.out}/rtl, {args.out}/sim, {args.out}/report.json, "
                  f"{args.out}/report.html")
    return 0


def cmd_verify(args) -> int:
    design = bitloom.open_design(args.dir)
    with progress("Verifying on Verilator...") as status:
        result = design.verify(samples=args.samples, seed=args.seed, status=status)
    measured = result.measured_cycles_per_frame
    console.print(
        f"{result.frames} frames with random back-pressure: "
        f"{'bit-exact' if result.bit_exact else 'MISMATCH'}; cycles/frame measured "
        f"{measured if measured is not None else 'n/a'} vs planned "
        f"{result.expected_cycles_per_frame}")
    if not result.bit_exact:
        errors.print(f"bitloom: hardware differs from golden: {result.mismatch}")
        return 1
    return 0


def cmd_synth(args) -> int:
    design = bitloom.open_design(args.dir)
    if args.jobs is not None and args.jobs < 1:
        raise BitloomError(f"--jobs {args.jobs}: give at least 1.")
    measured = design.synth(errors if args.json else console, jobs=args.jobs)
    if args.json:
        print(json.dumps(measured, indent=2))
    return 0


def cmd_build(args) -> int:
    design = bitloom.open_design(args.dir)
    console.print(f"Build scripts for {design.report['board']} in {design.path / 'build'}:",
                  markup=False)
    with progress("Writing the scripts, then running the flows whose tools are installed...") \
            as status:
        result = design.build(console, run=not args.scripts_only, status=status)
    for note in result.notes:
        console.print(note, markup=False, highlight=False, soft_wrap=True)
    if result.bitstreams:
        console.print("Bitstream(s): " + ", ".join(map(str, result.bitstreams)), markup=False,
                      soft_wrap=True)
    else:
        console.print("No bitstream was built; the scripts above are ready to run.")
    return 0


def cmd_bench(args) -> int:
    if args.what != "pe":
        raise BitloomError(f"unknown benchmark {args.what!r}; available: pe")
    pairs = DEFAULT_PAIRS
    if args.pair:
        pairs = []
        for text in args.pair:
            parts = text.split("x")
            if len(parts) != 2:
                raise BitloomError(f"--pair {text!r}: write WEIGHTxACTIVATION, e.g. int4xuint4")
            pairs.append((parts[0], parts[1], args.dsp))
    costs = []
    work = Path(args.work)
    for family in args.family:
        for weight, activation, dsp in pairs:
            try:
                depth = {} if args.pipeline is None else {"pipeline": args.pipeline}
                cost = measure(weight, activation, family, args.simd, dsp,
                               work / f"{family}-{weight}-{activation}-{'dsp' if dsp else 'lut'}",
                               console, **depth)
            except ValueError as exc:
                raise BitloomError(f"--pair {weight}x{activation}: {exc}") from None
            console.print(f"{family} {cost.weight} x {cost.activation} "
                          f"({'DSP' if dsp else 'LUT'}): {cost.lut_per_mac:g} LUT/MAC, "
                          f"{cost.dsp:g} DSP, {cost.seconds:g} s")
            costs.append(cost)
    md, js = write_results(costs, Path(args.out))
    console.print(f"wrote {md} and {js}")
    return 0


def add_input_declaration(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input-format", default=None, metavar="FORMAT",
                   help="how a float input arrives, for a model whose first layer reads it "
                        "unquantized: integer codes of FORMAT (e.g. uint8 for images)")
    p.add_argument("--input-scale", default=None, metavar="SCALE",
                   help="the real value of one input code: a number or a fraction "
                        "(e.g. 1/255); default 1")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bitloom", description="Compile quantized ONNX models into verified FPGA "
        "accelerators.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("inspect", help="layers, shapes, formats, MACs")
    p.add_argument("model")
    add_input_declaration(p)
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("run", help="run a batch through an engine")
    p.add_argument("model")
    p.add_argument("--input", required=True, help=".npy batched along axis 0")
    p.add_argument("--output", required=True, help=".npy to write (float32)")
    p.add_argument("--engine", choices=("golden", "rtl", "hls"), default="golden")
    p.add_argument("--board", default="pynq-z2", help="board whose folding rtl uses")
    add_input_declaration(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("compile", help="model -> RTL, testbench and report")
    p.add_argument("model")
    p.add_argument("--board", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--target-fps", type=float, default=None)
    p.add_argument("--clock", type=float, default=None, metavar="MHZ",
                   help="fabric clock, one of the board's PL clocks (default: the board's); "
                        "the layers' datapaths get register stages for it, and frames/s are "
                        "given at it")
    p.add_argument("--backend", choices=("amaranth", "hls"), default="amaranth")
    p.add_argument("--weights-memory", action="append", metavar="[LAYER=]STYLE",
                   help="weight memory style: lutram, bram or streamed, for every layer or "
                        "(LAYER=STYLE, repeatable) one layer; default: chosen per layer")
    p.add_argument("--max-utilization", type=float, default=None, metavar="PERCENT",
                   help="ceiling on the estimated share of every resource; default: 70%% of "
                        "LUTs, 50%% of FFs, 80%% of DSPs and block RAM (AMD UG949's guidance)")
    p.add_argument("--requantizer", action="append", metavar="[LAYER=]KIND",
                   help="requantizer: thresholds, scale (multiply-shift proven exact, the "
                        "multiplier in DSPs) or scale-lut (the multiplier in LUTs), for every "
                        "layer or (LAYER=KIND, repeatable) one layer; default: the cheapest by "
                        "the cost model, within the DSP budget")
    add_input_declaration(p)
    p.set_defaults(func=cmd_compile)

    p = sub.add_parser("verify", help="cocotb on Verilator, bit-exact against golden")
    p.add_argument("dir")
    p.add_argument("--samples", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("synth", help="Yosys synthesis and utilization")
    p.add_argument("dir")
    p.add_argument("--json", action="store_true", help="print the measured resources as JSON")
    p.add_argument("--jobs", type=int, default=None,
                   help="Yosys processes at once, a layer unit each, then the top level "
                        "(default: every core; 1: one Yosys run over the whole design)")
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("build", help="bitstream, PYNQ overlay and driver, FuseSoC core")
    p.add_argument("dir")
    p.add_argument("--scripts-only", action="store_true",
                   help="write the scripts without running Vivado or the open flow")
    p.set_defaults(func=cmd_build)

    p = sub.add_parser("bench", help="benchmarks: `bench pe` measures dot-product units")
    p.add_argument("what", choices=("pe",))
    p.add_argument("--simd", type=int, default=16)
    p.add_argument("--family", nargs="+", default=["xc7", "xcup"], choices=("xc7", "xcup"))
    p.add_argument("--pair", nargs="+", help="WEIGHTxACTIVATION, e.g. int4xuint4 bipolarxbipolar")
    p.add_argument("--dsp", action="store_true", help="allow DSPs for --pair units")
    p.add_argument("--pipeline", type=int, default=None,
                   help="register stages in the dot-product unit (default: one)")
    p.add_argument("--out", default="docs/results", help="folder for pe_costs.md/.json")
    p.add_argument("--work", default="build/bench-pe", help="scratch folder for synthesis")
    p.set_defaults(func=cmd_bench)
    p = sub.add_parser("quantize", help="post-training quantization of a float model to QONNX")
    quantize.add_arguments(p)
    p.set_defaults(func=quantize.command)
    p = sub.add_parser("dse", help="format x folding sweep: accuracy vs resources (Pareto)")
    dse.add_arguments(p)
    p.set_defaults(func=dse.command)
    return parser


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    errors.print(f"bitloom: warning: {message}", markup=False, soft_wrap=True)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    warnings.showwarning = _show_warning
    try:
        return args.func(args)
    except BitloomError as exc:
        errors.print(f"bitloom: error: {exc}", markup=False, soft_wrap=True)
        return exc.exit_code
    except KeyboardInterrupt:
        errors.print("bitloom: interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
