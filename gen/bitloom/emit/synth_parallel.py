"""Synthesis of a design's layers in parallel Yosys processes, then of its top level.

Why: one Yosys run over a whole design keeps one core busy for minutes (the demo MLP about
eight). Synthesis keeps the hierarchy anyway (to count resources per layer), so nothing is
optimized across a layer unit's boundary: each unit (``bitloom_core.<layer>`` and what it
instantiates) is synthesized on its own with the same ``synth_xilinx`` command, several at
once, and a last pass maps the rest (FIFOs, width converters, fan-outs, the AXI wrapper)
with the units as black boxes. The counts are summed; docs/results compares them with the
whole-design run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console

from bitloom.emit.synth import (
    _LOG,
    _OUTPUT,
    _SCRIPT,
    _STAT,
    _YOSYS_SHIM,
    FAMILIES,
    SynthResult,
    _clock,
    _primitives,
    _script,
    _StepFollower,
    _tail,
    count_resources,
)
from bitloom.errors import BitloomError


class _Job:
    """One Yosys run in its own folder."""

    def __init__(self, name: str, work: Path, script: str) -> None:
        self.name, self.work = name, work
        work.mkdir(parents=True, exist_ok=True)
        for stale in (_LOG, _STAT, _OUTPUT):
            (work / stale).unlink(missing_ok=True)
        (work / _SCRIPT).write_text(script, encoding="utf-8")
        self.process: subprocess.Popen | None = None
        self.start = 0.0
        self.seconds = 0.0
        self.step = _StepFollower(work / _LOG)
        self._stat: dict | None = None

    def launch(self) -> None:
        self.start = time.monotonic()
        with (self.work / _OUTPUT).open("wb") as output:
            self.process = subprocess.Popen(
                [sys.executable, "-c", _YOSYS_SHIM, "-q", "-l", _LOG, "-s", _SCRIPT],
                cwd=self.work, stdin=subprocess.DEVNULL, stdout=output,
                stderr=subprocess.STDOUT)

    def done(self) -> bool:
        if self.process is None or self.process.poll() is None:
            return False
        self.seconds = time.monotonic() - self.start
        return True

    def stat(self) -> dict:
        """Yosys's ``stat -json`` of the finished run (read once), or its failure named."""
        if self._stat is not None:
            return self._stat
        if self.process.returncode != 0 or not (self.work / _STAT).is_file():
            raise BitloomError(
                f"Yosys failed to synthesize {self.name} (exit status "
                f"{self.process.returncode}). The full log is {self.work / _LOG}; it ends "
                f"with:\n{_tail(self.work)}")
        self._stat = json.loads((self.work / _STAT).read_text(encoding="utf-8"))
        return self._stat


def _top_script(sources: Sequence[str | os.PathLike[str]], top: str, work: Path, family: str,
                uram: bool, dsp: bool, units: Sequence[str]) -> str:
    """The whole-design script with ``units`` turned into black boxes before mapping."""
    lines = _script(sources, top, work, family, uram, dsp).splitlines()
    boxes = " ".join(units)
    reads = [line for line in lines if line.startswith("read_verilog")]
    rest = [line for line in lines if not line.startswith("read_verilog")]
    return "\n".join([*reads, f"blackbox {boxes}", *rest]) + "\n"


def synthesize_parallel(
    sources: Sequence[str | os.PathLike[str]],
    top: str,
    work_dir: str | os.PathLike[str],
    units: Sequence[str],
    *,
    family: str,
    uram: bool = False,
    dsp: bool = True,
    jobs: int | None = None,
    console: Console | None = None,
) -> SynthResult:
    """``synth_xilinx`` of each module in ``units`` (``jobs`` at a time, default all cores),
    then of ``top`` with them as black boxes; the merged counts, as one whole-design run
    would give them (module docstring). Progress goes to ``console``: a line per finished
    unit, and on a terminal the running ones with their current Yosys pass."""
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}, not {family!r}")
    console = console or Console(stderr=True)
    work = Path(work_dir).resolve()
    jobs = max(1, jobs or os.cpu_count() or 1)
    pending = [_Job(unit, work / "units" / unit, _script(
        sources, unit, work / "units" / unit, family, uram, dsp)) for unit in units]
    pending.append(_Job(top, work, _top_script(sources, top, work, family, uram, dsp, units)))
    total, start = len(pending), time.monotonic()
    console.print(f"Yosys: synthesizing {len(units)} layer units and the top level, {jobs} "
                  "at a time", markup=False)
    running: list[_Job] = []
    finished: list[_Job] = []
    status = console.status("") if console.is_terminal else None
    try:
        if status is not None:
            status.start()
        while pending or running:
            while pending and len(running) < jobs:
                job = pending.pop(0)
                job.launch()
                running.append(job)
            for job in [j for j in running if j.done()]:
                running.remove(job)
                finished.append(job)
                job.stat()  # a failed unit stops the run, naming its log
                console.print(f"  {_clock(start)} {len(finished)}/{total} {job.name} "
                              f"({job.seconds:.0f} s)", markup=False)
            if status is not None:
                status.update(f"Yosys: {len(finished)}/{total} done {_clock(start)}; " + ", ".join(
                    f"{j.name} [dim]{j.step.current()}[/dim]" for j in running))
            time.sleep(0.25)
    except BaseException:  # Ctrl-C included: do not leave Yosys running
        for job in running:
            job.process.kill()
            job.process.wait()
        raise
    finally:
        if status is not None:
            status.stop()
    return _merged(finished, units, family, time.monotonic() - start, work / _LOG)


def _merged(finished: list[_Job], units: Sequence[str], family: str, seconds: float,
            log: Path) -> SynthResult:
    """One result from the units' runs and the top-level run (units counted once, in
    their own run; their black-box instances in the top run left out)."""
    cells: dict[str, int] = {}
    modules: dict[str, dict[str, float]] = {}
    boxes = set(units)
    for job in finished:
        stat = job.stat()
        names = {name.removeprefix("\\") for name in stat["modules"]} | boxes
        for name, module in stat["modules"].items():
            name = name.removeprefix("\\")
            if name in boxes and job.name != name:
                continue  # the black box standing in for a unit in the top-level run
            own = _primitives(module, names)
            modules[name] = count_resources(own, family)
        for cell, n in _primitives(stat["design"], names).items():  # its whole subtree
            cells[cell] = cells.get(cell, 0) + n
    return SynthResult(resources=count_resources(cells, family), cells=cells,
                       modules=modules, log_path=log, seconds=seconds)
