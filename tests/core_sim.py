"""A planned core in the Amaranth simulator: frames in back to back, outputs drained at
full rate, the steady-state cycles per frame measured and a stall detected (no output
for several frames' time), naming the FIFOs that are full then. No Verilator build, so a
FIFO depth can be tried in seconds."""

from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np
from amaranth.sim import Simulator
from streams import producer

from bitloom.formats import Format
from bitloom.hw.core import Core
from bitloom.plan import Plan, make_plan_with
from bitloom.sim.vectors import to_beats


@dataclass
class CoreRun:
    outputs: list[int]  # output beats received
    expected: list[int]  # the golden output beats
    frame_done: list[int]  # cycle of each frame's last output beat
    stalled_at: int | None  # cycle at which the stall was declared
    full_fifos: list[str]  # FIFOs full at the stall

    @property
    def bit_exact(self) -> bool:
        return self.stalled_at is None and self.outputs == self.expected

    @property
    def cycles_per_frame(self) -> float | None:
        """Steady-state interval between frame completions (the fill skipped), as
        ``bitloom verify`` measures it."""
        done = self.frame_done
        if len(done) < 3:
            return None
        half = len(done) // 2
        return (done[-1] - done[half]) / (len(done) - 1 - half)


def stimulus(fmt: Format, shape: tuple[int, ...], frames: int, seed: int) -> np.ndarray:
    levels = fmt.grid_levels()
    rng = np.random.default_rng(seed)
    return levels[rng.integers(0, len(levels), size=(frames, *shape))].astype(np.int64)


def with_depths(plan: Plan, depths: list[tuple[int, ...]]) -> Plan:
    """``plan`` with other FIFO depths (same folding)."""
    return make_plan_with(plan.net, [lp.fold for lp in plan.layers], depths, plan.clock_mhz,
                          plan.in_elems)


def run_core(plan: Plan, frames: int = 6, seed: int = 0) -> CoreRun:
    """Stream ``frames`` random frames through the core of ``plan``, no back-pressure."""
    net = plan.net
    x = stimulus(plan.in_fmt, net.input.stream_shape, frames, seed)
    trace = net.trace_values(x)
    in_beats = to_beats(trace[0], plan.in_fmt, plan.in_elems)
    expected = to_beats(trace[-1], plan.output.layer.out_fmt, plan.output.out_elems)
    per_frame = plan.output.out_beats
    patience = 2 * plan.cycles_per_frame + 500  # no output for this long: a stall
    dut = Core(plan)
    run = CoreRun([], expected, [], None, [])

    async def sink(ctx):
        ctx.set(dut.o.ready, 1)
        cycle = last = 0
        async for _, _, valid, payload, full in ctx.tick().sample(
                dut.o.valid, dut.o.payload, dut.fifo_full):
            cycle += 1
            if valid:
                run.outputs.append(payload)
                last = cycle
                if len(run.outputs) % per_frame == 0:
                    run.frame_done.append(cycle)
                    if len(run.frame_done) == frames:
                        return
            elif cycle - last > patience:
                run.stalled_at = cycle
                run.full_fifos = [f.name for k, f in enumerate(dut.fifo_plans) if full >> k & 1]
                return

    # the simulator compiles wide constants (threshold tables) through Python source
    sys.set_int_max_str_digits(0)
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(producer(dut.i, in_beats), background=True)
    sim.add_testbench(sink)
    sim.run()
    return run
