"""onnxruntime-quantized zoo CNNs planned with the requantizer the cost model picks per
layer (the fastest plan within the board's ceilings), then with thresholds only at the same
cycles per frame: estimated LUT/FF/DSP/BRAM36 of each, and whether it fits.

Run: ``.venv/bin/python bench/requantizer_zoo.py [--models squeezenet vgg19] [--board B]``.
The models are the onnx wheel's light zoo topologies with random weights, quantized by
``quantize_static`` (QDQ, per-channel weights), as ``tests/zoo_models.py`` makes them.
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import zoo_models as zm

import bitloom
from bitloom.boards import load_board
from bitloom.plan import plan_design
from bitloom.plan.cost import estimate_plan
from bitloom.plan.design import BoardFit, frame_cycles
from bitloom.plan.requantizers import requantizer_name


def row(name: str, label: str, plan, fit: BoardFit) -> str:
    est = estimate_plan(plan)
    kinds = Counter(requantizer_name(lp.requant) for lp in plan.layers)
    fps = plan.clock_mhz * 1e6 / frame_cycles(plan, fit.board)
    over = fit.describe_over(plan) or "fits"
    return (f"| {name} | {label} | {kinds.get('thresholds', 0)} / {kinds.get('scale', 0)} / "
            f"{kinds.get('scale-lut', 0)} | "
            f"{est['LUT']:,} | {est['FF']:,} | {est['DSP']:,} | {est['BRAM36']:.1f} | "
            f"{fps:,.1f} | {over} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--models", nargs="+", default=["squeezenet", "vgg19"])
    ap.add_argument("--board", default="zcu104")
    args = ap.parse_args()
    board = load_board(args.board)
    cache = Path(tempfile.gettempdir()) / "bitloom-bench-zoo"
    lines = [f"Machine: {platform.node()} ({platform.processor() or platform.machine()}), "
             f"{time.strftime('%Y-%m-%d')}; board {board.name}; all figures are the cost "
             "model's estimates of the plans, not Yosys.", "",
             "| model | requantizers | thresholds / scale / scale-lut layers | LUT | FF | DSP "
             "| BRAM36 | frames/s | within the ceilings |", "|---|---|---|---|---|---|---|---|---|"]
    for name in args.models:
        start = time.time()
        path, _ = zm.quantized_zoo_model(name, cache, per_channel=True)
        net = bitloom.load(path)
        print(f"{name}: quantized and loaded in {time.time() - start:.0f} s", flush=True)
        start = time.time()
        chosen = plan_design(net, board)
        cycles = chosen.cycles_per_frame
        lines.append(row(name, "chosen by cost", chosen, BoardFit(net, board, None, ())))
        thresholds = plan_design(net, board, target_cycles=cycles, requantizers=["thresholds"])
        fit = BoardFit(net, board, None, (), ["thresholds"])
        lines.append(row(name, f"thresholds only, same {cycles:,} cycles", thresholds, fit))
        print(f"  planned in {time.time() - start:.0f} s", flush=True)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
