"""``bitloom.compile``: a model to a planned, emitted design folder, and what a design does
next (``verify``, ``synth``, ``build``, ``run``). The command line, the design-space search,
the cost model's calibration and ``run --engine rtl`` all compile through here, so each of
them describes the design the others build."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import onnx
from rich.console import Console

from bitloom.boards import Board, load_board
from bitloom.emit import design as emitted
from bitloom.emit.build import BuildResult, build_design
from bitloom.emit.html import write_report_html
from bitloom.errors import BitloomError
from bitloom.flows import synthesize_design
from bitloom.frontend import DeclaredInput, load_model
from bitloom.plan import plan_design
from bitloom.sim.runner import run_rtl
from bitloom.sim.verify import Verification, verify


class Design(emitted.Design):
    """A compiled design folder (``rtl/``, ``sim/``, ``report.json``, ``report.html``), with
    the steps that follow ``compile``."""

    def verify(self, samples: int = 100, seed: int = 0, status=None) -> Verification:
        """Random frames through Verilator with random back-pressure, against golden; the
        result goes into report.json and report.html."""
        result = verify(self, samples=samples, seed=seed, status=status)
        self.report["verification"] = result.as_dict()
        self.save_report()
        write_report_html(self.path)
        return result

    def synth(self, console: Console | None = None, jobs: int | None = None) -> dict:
        """Yosys for the design's board (``jobs`` processes at once: every core by
        default); the measured resources go into the report."""
        try:
            return synthesize_design(self, console or Console(quiet=True), jobs)
        finally:  # a design that does not fit still gets its measured numbers on the page
            write_report_html(self.path)

    def build(self, console: Console | None = None, run: bool = True,
              status=None) -> BuildResult:
        """The vendor and open flows' scripts in ``build/``, run where the tools exist."""
        return build_design(self, console or Console(quiet=True), run=run,
                            status=status)

    def run(self, x: np.ndarray, status=None) -> np.ndarray:
        """A batch through this design's RTL on Verilator, returned like the model's
        output."""
        return run_rtl(self.net, x, plan=self.plan, status=status)


def compile(model: str | Path, board: str | Board = "pynq-z2", *, out: str | Path,
            target_fps: float | None = None, target_cycles: int | None = None,
            weights_memory: Sequence[str] = (), max_utilization: float | None = None,
            requantizers: Sequence[str] = (), clock_mhz: float | None = None,
            input_format: str | None = None, input_scale: str | float | None = None,
            on_step: Callable[[str], None] | None = None) -> Design:
    """Plan ``model`` for ``board`` (see :func:`bitloom.plan.plan_design`) and write its
    Verilog, testbench, weight files and reports into ``out``; ``input_format`` and
    ``input_scale`` declare how a float input arrives (see :func:`bitloom.load`), and the
    folder's copy of the model keeps that declaration; ``requantizers`` overrides the
    requantizer choice (``KIND`` or ``LAYER=KIND``, KIND ``thresholds``, ``scale`` or
    ``scale-lut``); ``clock_mhz`` clocks the fabric at one of the board's PL clocks, the
    datapaths registered for it (:mod:`bitloom.plan.clock`). ``on_step`` is told what is
    being done, layer by layer while the hardware is elaborated (a progress display)."""
    step = on_step or (lambda text: None)
    board = board if isinstance(board, Board) else load_board(board)
    declared = declare(input_format, input_scale)
    step(f"reading {Path(model).name}")
    net = load_model(model, declared)
    step(f"planning {len(net.layers)} layers for {board.name}")
    plan = plan_design(net, board, target_fps=target_fps, target_cycles=target_cycles,
                       weights_memory=weights_memory, max_utilization=max_utilization,
                       requantizers=requantizers, clock_mhz=clock_mhz)
    board = board if clock_mhz is None else board.at_clock(clock_mhz)

    def on_layer(k: int, n: int, name: str) -> None:
        step(f"elaborated layer {k}/{n} ({name})" if k < n else
             f"elaborated all {n} layers; writing Verilog")

    folder = emitted.emit_design(plan, board, Path(out), model, on_layer)
    if declared is not None:
        copy = folder.path / "model.onnx"
        annotated = onnx.load(str(copy), load_external_data=False)
        declared.annotate(annotated)
        onnx.save(annotated, str(copy))
    step("writing report.html")
    write_report_html(folder.path)
    return Design(**vars(folder))


def declare(input_format: str | None, input_scale: str | float | None) -> DeclaredInput | None:
    """The declared input of ``--input-format``/``--input-scale`` (None without a format)."""
    if input_format is None:
        if input_scale is not None:
            raise BitloomError("--input-scale needs --input-format (e.g. --input-format uint8 "
                               "--input-scale 1/255).")
        return None
    return DeclaredInput.parse(input_format, input_scale)


def open_design(path: str | Path) -> Design:
    """Re-open a folder written by :func:`compile`."""
    return Design(**vars(emitted.load_design(path)))

