"""`make demo`: the bundled digits MLP from QONNX to verified, synthesized hardware.

Compiles examples/mlp_digits.onnx for a PYNQ-Z2 at a million frames per second (80 cycles a
frame: the fully parallel 4-cycle design takes Yosys ten minutes, this one under one),
verifies it bit-exact on Verilator with random back-pressure, classifies the 450 test digits
on the RTL simulation, synthesizes it with Yosys, estimates its clock from the netlist and
prints one summary table with the wall time.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from bitloom.cli import main as bitloom

HERE = Path(__file__).resolve().parent
OUT = HERE.parent / "out" / "demo"
#: frames per second the demo compiles for (the PYNQ-Z2 fits 25 million: see README)
TARGET_FPS = "1000000"


def step(args: list[str]) -> None:
    Console().rule(f"bitloom {' '.join(args)}")
    status = bitloom(args)
    if status != 0:
        sys.exit(status)


def demo() -> None:
    import json

    start = time.monotonic()
    import bitloom as bl
    from bitloom.emit.design import load_design

    model = str(HERE / "mlp_digits.onnx")
    data = np.load(HERE / "digits_test.npz")
    x, y = data["x"], data["y"]
    OUT.mkdir(parents=True, exist_ok=True)
    np.save(OUT / "digits_x.npy", x)

    step(["inspect", model])
    step(["compile", model, "--board", "pynq-z2", "--out", str(OUT), "--target-fps", TARGET_FPS])
    step(["verify", str(OUT), "--samples", "200"])
    Console().rule("classifying the test digits on the RTL simulation")
    design = load_design(OUT)
    rtl = design.net.run(x, engine="rtl", plan=design.plan, work_dir=OUT / "sim" / "digits")
    golden = bl.load(model).run(x)
    step(["synth", str(OUT)])

    report = json.loads((OUT / "report.json").read_text())
    res = report["synth"]["resources"]
    check = report["verification"]
    table = Table(title="bitloom demo: 4-bit MLP on 8x8 digits, PYNQ-Z2 (xc7z020)",
                  show_header=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    table.add_row("test images", str(len(x)))
    table.add_row("accuracy on the RTL simulation", f"{(rtl.argmax(1) == y).mean():.2%}")
    table.add_row("accuracy of the golden model", f"{(golden.argmax(1) == y).mean():.2%}")
    table.add_row("RTL == golden on every test image",
                  "yes" if np.array_equal(rtl, golden) else "NO")
    table.add_row(f"bit-exact on {check['frames']} corner/random frames, back-pressure",
                  "yes" if check["bit_exact"] else "NO")
    table.add_row("cycles per frame (measured / planned)",
                  f"{check['measured_cycles_per_frame']:g} / {report['cycles_per_frame']}")
    table.add_row("LUT / FF / DSP / BRAM36",
                  f"{res['LUT']:g} / {res['FF']:g} / {res['DSP']:g} / {res['BRAM36']:g}")
    table.add_row(f"frames/s at {report['clock_mhz']:g} MHz",
                  f"{report['frames_per_second']:,.0f}")
    timing = report["timing"]
    table.add_row("estimated Fmax (Yosys netlist, not routed)",
                  f"{timing['fmax_mhz']:.0f} MHz ({timing['limiting_layer']})")
    table.add_row("demo wall time", f"{time.monotonic() - start:.0f} s")
    Console().print(table)
    if not (check["bit_exact"] and np.array_equal(rtl, golden)):
        sys.exit(1)


if __name__ == "__main__":
    demo()
