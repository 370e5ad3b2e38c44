"""FIFO depths from the schedule against the previous frame-deep join FIFOs.

Run from the repository root: ``.venv/bin/python bench/fifo_depths.py``. For the residual
and concat models of ``tests/test_rtl_cnn.py`` (same plan: 256 cycles-per-frame target) it

- lists every join input's FIFO: the previous depth (a whole input frame + 2), the depth
  ``bitloom.plan.fifos`` computes from the schedule, and the bits saved;
- totals the bits of every FIFO of the core, previous rules against the current ones;
- verifies the design with the computed depths on Verilator (``bitloom verify``: random
  back-pressure, bit-exact, measured cycles per frame against the plan);
- runs the core in the Amaranth simulator with every join FIFO at half the computed depth
  and reports what happens (stall, or the cycles per frame).

Plan-only rows (no simulation) show the same for larger maps built by
``tests/qonnx_models.random_cnn``. Writes ``docs/results/<date>-fifo-depths.md``.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import brevitas_models as bm  # noqa: E402
from core_sim import run_core, with_depths  # noqa: E402

import bitloom  # noqa: E402
from bitloom.boards import load_board  # noqa: E402
from bitloom.emit.design import emit_design  # noqa: E402
from bitloom.ir import AddStreams, Concat, MatrixVector  # noqa: E402
from bitloom.plan import Plan, make_plan  # noqa: E402
from bitloom.plan.fifos import in_shapes  # noqa: E402
from bitloom.sim.verify import verify  # noqa: E402

from qonnx_models import random_cnn  # noqa: E402

TARGET_CYCLES = 256
SIMULATED = (("residual_int8", "qcdq"), ("concat_e4m3", "qonnx"))
#: larger maps, planned only: (label, random_cnn keyword arguments, target cycles)
PLANNED = (
    ("residual 32x32x16 int8", dict(shape=(2, 32, 32), channels=16, residual=True,
                                    pool="none", act_bits=8), 4096),
    ("concat 32x32 int4", dict(shape=(2, 32, 32), channels=8, concat=True, pool="none"),
     4096),
)


def previous_depths(plan: Plan, index: int) -> tuple[int, ...]:
    """The rules before the schedule-based sizing: a whole input frame (+ 2) per join
    input, two input bursts elsewhere."""
    net, lp = plan.net, plan.layers[index]
    layer, fold = lp.layer, lp.fold
    shapes = in_shapes(net, layer)
    if isinstance(layer, (AddStreams, Concat)):
        return tuple(math.prod(s) // fold.simd + 2 for s in shapes)
    if layer.inputs == (-1,) and len(net.consumers(-1)) == 1:
        return (0,)
    if isinstance(layer, MatrixVector) and layer.window is None:
        return (max(2, 2 * (layer.in_features // fold.simd)),)
    return (max(2, 2 * (shapes[0][-1] // fold.simd)),)


def fifo_bits(plan: Plan) -> int:
    return sum(f.depth * f.bits for f in plan.fifos())


def join_rows(label: str, plan: Plan, old: Plan) -> list[list[str]]:
    rows = []
    new_fifos = {f.name: f for f in plan.fifos()}
    for f in old.fifos():
        layer = plan.layers[f.layer].layer
        if not isinstance(layer, (AddStreams, Concat)):
            continue
        producer = layer.inputs[f.port]
        source = "input" if producer < 0 else plan.layers[producer].layer.name
        new = new_fifos[f.name]
        rows.append([label, f"{layer.name} input {f.port} (from {source})", f"{f.bits}",
                     f"{f.depth}", f"{new.depth}", f"{(f.depth - new.depth) * f.bits}"])
    return rows


def halved(plan: Plan) -> Plan:
    """Every join FIFO at half its computed depth (at least 1)."""
    depths = [tuple(max(1, d // 2) for d in lp.fifo_depths)
              if isinstance(lp.layer, (AddStreams, Concat)) else lp.fifo_depths
              for lp in plan.layers]
    return with_depths(plan, depths)


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--out", default=f"docs/results/{date.today()}-fifo-depths.md")
    args = parser.parse_args()
    started = time.time()
    joins, totals, sims = [], [], []
    work = Path(tempfile.mkdtemp(prefix="fifo-depths-"))
    for variant, form in SIMULATED:
        path = bm.cached_export(variant, form)
        net = bitloom.load(path)
        plan = make_plan(net, TARGET_CYCLES)
        old = with_depths(plan, [previous_depths(plan, i) for i in range(len(plan.layers))])
        joins += join_rows(variant, plan, old)
        totals.append([variant, f"{fifo_bits(old)}", f"{fifo_bits(plan)}"])
        print(f"{variant}: verifying on Verilator...", flush=True)
        design = emit_design(plan, load_board("pynq-z2"), work / variant, path)
        result = verify(design, samples=args.samples, pause=0.3)
        measured = result.measured_cycles_per_frame
        sims.append([variant, "computed", "Verilator, back-pressure 0.3 both sides",
                     "yes" if result.bit_exact else f"no: {result.mismatch}",
                     f"{measured:.1f}" if measured else "-", f"{plan.cycles_per_frame}",
                     f"{result.cycle_error:+.1%}" if measured else "-"])
        print(f"{variant}: half depths in the Amaranth simulator...", flush=True)
        half = halved(plan)
        run = run_core(half, frames=4)
        cpf = run.cycles_per_frame
        outcome = (f"stall after {run.stalled_at} cycles; full: {', '.join(run.full_fifos)}"
                   if run.stalled_at is not None else ("yes" if run.bit_exact else "no"))
        joins_half = ", ".join(str(d) for lp in half.layers
                               if isinstance(lp.layer, (AddStreams, Concat))
                               for d in lp.fifo_depths)
        sims.append([variant, f"half ({joins_half})", "Amaranth, no back-pressure", outcome,
                     f"{cpf:.1f}" if cpf else "-", f"{plan.cycles_per_frame}",
                     f"{cpf / plan.cycles_per_frame - 1:+.1%}" if cpf else "-"])
    for label, kwargs, target in PLANNED:
        plan = make_plan(bitloom.load(random_cnn(0, **kwargs)), target)
        old = with_depths(plan, [previous_depths(plan, i) for i in range(len(plan.layers))])
        joins += join_rows(label + " (plan only)", plan, old)
        totals.append([label + " (plan only)", f"{fifo_bits(old)}", f"{fifo_bits(plan)}"])

    load = os.getloadavg()
    text = "\n\n".join([
        f"# FIFO depths from the schedule ({date.today()})",
        f"Produced by `.venv/bin/python bench/fifo_depths.py` in {time.time() - started:.0f} s "
        f"on {platform.machine()}, {os.cpu_count()} cores, load average "
        f"{load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f}. Plans at a {TARGET_CYCLES} "
        "cycles-per-frame target (as tests/test_rtl_cnn.py), except the plan-only rows.",
        "## Join FIFOs (beats of `bits` each)",
        table(["model", "join input", "bits/beat", "old depth", "new depth", "bits saved"],
              joins),
        "## All FIFOs of the core (bits)",
        table(["model", "previous rules", "schedule-based"], totals),
        "## Simulation",
        table(["model", "join depths", "simulator", "bit-exact / outcome",
               "measured cycles/frame", "plan", "error"], sims),
    ]) + "\n"
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
