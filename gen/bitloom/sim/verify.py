"""``bitloom verify``: a design against its golden model, bit-exact, with back-pressure.

Two simulations of the same (cached) Verilator build: one with random gaps on input valid
and output ready over corner and random frames, checked at every layer; one without gaps,
to measure the steady-state cycles per frame against the plan.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from bitloom.ir.stimulus import stimulus
from bitloom.sim.runner import SimResult, simulate
from bitloom.sim.vectors import make_vectors


@dataclass
class Verification:
    frames: int
    bit_exact: bool
    mismatch: str | None
    measured_cycles_per_frame: float | None
    expected_cycles_per_frame: int
    measured_first_frame_cycles: int | None  # reset release to the first frame's last beat

    @property
    def cycle_error(self) -> float | None:
        if self.measured_cycles_per_frame is None:
            return None
        return self.measured_cycles_per_frame / self.expected_cycles_per_frame - 1

    def as_dict(self) -> dict:
        return {"frames": self.frames, "bit_exact": self.bit_exact, "mismatch": self.mismatch,
                "measured_cycles_per_frame": self.measured_cycles_per_frame,
                "expected_cycles_per_frame": self.expected_cycles_per_frame,
                "cycle_error": self.cycle_error,
                "measured_first_frame_cycles": self.measured_first_frame_cycles}


def verify(design, samples: int = 100, seed: int = 0, pause: float = 0.3,
           status=None) -> Verification:
    from bitloom.emit.design import check_weight_files

    plan, net = design.plan, design.net
    check_weight_files(plan, Path(design.path) / "rtl")  # a stale .mem file, named early
    shape = net.input.stream_shape
    values = stimulus(plan.in_fmt, math.prod(shape), samples, seed)
    trace = net.trace_values(values.reshape(len(values), *shape))
    work = Path(design.path) / "sim"
    checked: SimResult = simulate(design.sources, make_vectors(plan, trace, pause, pause, seed),
                                  work / "backpressure", status)
    timing_frames = min(len(values), 32)
    timing = simulate(design.sources,
                      make_vectors(plan, [t[:timing_frames] for t in trace], 0.0, 0.0, seed),
                      work / "throughput", status)
    return Verification(
        frames=len(values),
        bit_exact=checked.passed and timing.passed,
        mismatch=checked.mismatch or timing.mismatch,
        measured_cycles_per_frame=timing.cycles_per_frame(),
        expected_cycles_per_frame=plan.cycles_per_frame,
        measured_first_frame_cycles=(timing.frame_done_cycle[0]
                                     if timing.frame_done_cycle else None),
    )
