"""One fuzz model end to end: export, golden against its reference executor, compile with a
random folding, board and weight memory, then ``bitloom verify`` on Verilator (random
back-pressure, corner and random frames, every layer checked) and cycles against the plan.
"""

from __future__ import annotations

import random
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from hw_fuzz_models import Spec, export, input_batch, shrink

#: measured cycles per frame may differ from the plan by this fraction
CYCLE_TOLERANCE = 0.05
#: the slowest folding target drawn (cycles per frame)
MAX_TARGET = 8192
BOARDS = ("pynq-z2", "zybo-z7-20", "ultra96-v2", "kv260", "zcu104")
#: the outcomes; EXPORT and REFUSED end a run without a verdict on the hardware
EXPORT, REFUSED, REFERENCE, RTL, CYCLES, OK = (
    "export", "refused", "reference", "rtl", "cycles", "ok")
FAILURES = (REFERENCE, RTL, CYCLES, "error")


@dataclass
class Outcome:
    spec: Spec
    stage: str  # EXPORT / REFUSED (no verdict), RTL / CYCLES / "error", REFERENCE (the
    # hardware equals golden, golden differs from the reference executor), or OK
    detail: str = ""
    layers: int = 0
    planned: int | None = None
    measured: float | None = None
    board: str = ""
    seconds: float = 0.0

    @property
    def failed(self) -> bool:
        return self.stage in FAILURES

    def as_dict(self) -> dict:
        return {"seed": self.spec.seed, "model": self.spec.describe(), "stage": self.stage,
                "detail": self.detail[:2000], "layers": self.layers, "board": self.board,
                "planned": self.planned, "measured": self.measured,
                "seconds": round(self.seconds, 1)}


def hardware_choices(spec: Spec, net) -> tuple[str, int, str | None]:
    """(board, cycles-per-frame target, weight memory default) drawn from the spec's seed:
    one of the three slowest foldings up to :data:`MAX_TARGET` cycles per frame (the
    Verilator build, which grows with the hardware, costs more than simulating long frames),
    any board, any memory style."""
    from bitloom.plan.folding import candidate_targets

    rng = random.Random(spec.seed * 7919 + 1)
    targets = [t for t in candidate_targets(net) if t <= MAX_TARGET] or [1]
    return (rng.choice(BOARDS), rng.choice(targets[-3:]),
            rng.choice((None, None, "lutram", "bram", "streamed")))


def run_spec(spec: Spec, work: Path, frames: int = 8) -> Outcome:
    """Every stage for ``spec`` in the folder ``work``; never raises."""
    start = time.monotonic()
    outcome = _run(spec, Path(work), frames)
    outcome.seconds = time.monotonic() - start
    return outcome


def _run(spec: Spec, work: Path, frames: int) -> Outcome:
    from reference_check import check_against_reference

    import bitloom
    from bitloom.boards import load_board
    from bitloom.emit.design import emit_design
    from bitloom.plan import plan_design
    from bitloom.sim.verify import verify

    work.mkdir(parents=True, exist_ok=True)
    try:
        path = export(spec, work / "model.onnx")
    except Exception as exc:  # the exporter's limits are not bitloom's failures
        return Outcome(spec, EXPORT, f"{type(exc).__name__}: {exc}")
    try:
        net = bitloom.load(path)
        board_name, target, memory = hardware_choices(spec, net)
        board = load_board(board_name)
        plan = plan_design(net, board, target_cycles=target,
                           weights_memory=(memory,) if memory else ())
    except bitloom.BitloomError as exc:
        return Outcome(spec, REFUSED, str(exc))
    layers = len(net.layers)
    reference = ""  # the hardware is still checked against golden when golden is off
    try:
        check_against_reference(path, spec.form, input_batch(spec, 8, seed=spec.seed))
    except AssertionError as exc:
        reference = str(exc)
    try:
        design = emit_design(plan, board, work / "design", path)
        result = verify(design, samples=frames, seed=spec.seed)
    except Exception:
        return Outcome(spec, "error", traceback.format_exc(), layers, board=board_name)
    planned, measured = plan.cycles_per_frame, result.measured_cycles_per_frame
    common = {"layers": layers, "planned": planned, "measured": measured,
              "board": f"{board_name} target {target} weights {memory or 'auto'}"}
    if not result.bit_exact:
        return Outcome(spec, RTL, result.mismatch or "differs", **common)
    if measured is None or abs(measured / planned - 1) > CYCLE_TOLERANCE:
        return Outcome(spec, CYCLES, f"measured {measured} vs planned {planned}", **common)
    if reference:
        return Outcome(spec, REFERENCE, reference, **common)
    return Outcome(spec, OK, "", **common)


def shrunk(outcome: Outcome, work: Path, budget: int = 25) -> Spec:
    """The smallest spec that still fails at the same stage."""
    count = [0]

    def fails(candidate: Spec) -> bool:
        count[0] += 1
        return run_spec(candidate, work / f"shrink{count[0]}").stage == outcome.stage

    return shrink(outcome.spec, fails, budget)
