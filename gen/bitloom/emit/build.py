"""``bitloom build DIR``: every build flow's scripts, then the bitstreams the installed tools make.

The scripts are always written (Vivado IP + project Tcl, the openXC7 Makefile on Zynq-7000,
the PYNQ driver, the FuseSoC core), so a machine without the vendor tools still prepares a
build to run elsewhere; a flow runs only when its tools are on PATH, and the summary says
which tool is missing, the command to run, and whether any bitstream was built.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from bitloom.boards import load_board
from bitloom.emit.design import Design
from bitloom.emit.driver import write_driver
from bitloom.emit.fusesoc import write_fusesoc_core
from bitloom.emit.openxc7 import NAME, missing_tools, no_open_flow, write_openxc7
from bitloom.emit.vivado import OVERLAY, OVERLAY_NAME, write_vivado
from bitloom.errors import BitloomError

MARKER = "bitloom: "  # progress lines the generated scripts print


@dataclass
class BuildResult:
    """What ``bitloom build`` wrote and built."""

    scripts: dict[str, Path] = field(default_factory=dict)  # what -> file
    bitstreams: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # flows that did not run, and why


def run_tool(command: list[str], cwd: Path, log: Path, what: str, status=None) -> None:
    """Run a build tool, relaying the scripts' progress markers; raise with the log's end."""
    tail: deque[str] = deque(maxlen=25)
    try:
        process = subprocess.Popen(command, cwd=cwd, stdin=subprocess.DEVNULL,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                   errors="replace")
    except OSError as exc:
        raise BitloomError(f"cannot start {command[0]}: {exc.strerror}.") from None
    try:
        with log.open("w") as out:
            assert process.stdout is not None
            for line in process.stdout:
                out.write(line)
                tail.append(line.rstrip())
                if status is not None and line.startswith(MARKER):
                    status.update(f"{what}: {escape(line[len(MARKER):].strip())}")
        process.wait()
    except BaseException:  # Ctrl-C included: do not leave the tool running
        process.kill()
        process.wait()
        raise
    if process.returncode != 0:
        raise BitloomError(f"{what} failed (exit status {process.returncode}); the log is {log}. "
                           "It ends with:\n" + "\n".join(tail))


def _shell(command: list[str], cwd: Path) -> str:
    return f"cd {shlex.quote(str(cwd))} && {shlex.join(command)}"


def vivado_timing(path: Path) -> dict | None:
    """The post-route summary the Vivado script wrote (WNS/TNS/WHS/THS in ns), with the
    clock it would meet: ``1000 / (period - WNS)`` MHz. None without one."""
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    wns, clock = summary.get("wns_ns"), float(summary["clock_mhz"])
    summary["fmax_mhz"] = None if wns is None else round(1000 / (1000 / clock - wns), 1)
    summary["source"] = "Vivado post-route (report_timing_summary)"
    return summary


def build_design(design: Design, console: Console, run: bool = True, status=None) -> BuildResult:
    """Write every flow's scripts into ``DIR/build`` and run the flows whose tools exist."""
    if "io" not in design.report:
        raise BitloomError(f"{design.path}/report.json has no stream widths (it predates them); "
                           "compile the design again.")
    board = load_board(design.report["board"])
    result = BuildResult()
    result.scripts["FuseSoC core"] = write_fusesoc_core(design)
    vivado = write_vivado(design)
    result.scripts["Vivado IP"] = vivado.component_xml
    result.scripts["Vivado project"] = vivado.project_tcl
    try:
        result.scripts["PYNQ driver"] = write_driver(design)
    except BitloomError as exc:
        result.notes.append(f"PYNQ driver: not written: {exc}")
    reason = no_open_flow(board)
    openxc7 = None if reason else write_openxc7(design)
    if openxc7 is not None:
        result.scripts["openXC7 Makefile"] = openxc7.makefile

    for what, path in result.scripts.items():
        console.print(f"  {what:17} {path}", markup=False, highlight=False, soft_wrap=True)

    overlay = design.path / "build" / OVERLAY
    if not run:
        result.notes.append(f"Vivado: not run (--scripts-only). To build the overlay:\n    "
                            f"{_shell(vivado.manual_command, vivado.folder)}")
    elif shutil.which("vivado") is None:
        result.notes.append(
            "Vivado: `vivado` is not on PATH, so no overlay was built; the scripts are ready. "
            "With Vivado installed (and its settings64.sh sourced), run:\n    "
            f"{_shell(vivado.manual_command, vivado.folder)}")
    else:
        if status is not None:
            status.update("Vivado: starting (a build takes tens of minutes)")
        bitstream = overlay / f"{OVERLAY_NAME}.bit"
        bitstream.unlink(missing_ok=True)  # so a stale overlay cannot pass for a new one
        run_tool(vivado.command, vivado.folder, vivado.folder / "vivado.out", "Vivado", status)
        if not bitstream.is_file():
            raise BitloomError(f"Vivado finished without writing {bitstream}; see "
                               f"{vivado.folder / 'vivado.log'}.")
        result.bitstreams.append(bitstream)
        timing = vivado_timing(overlay / f"{OVERLAY_NAME}_timing.json")
        if timing is not None:
            design.report["vivado_timing"] = timing
            design.save_report()
            result.notes.append(
                f"Vivado timing after routing: WNS {timing['wns_ns']} ns at "
                f"{timing['clock_mhz']:g} MHz, about {timing['fmax_mhz']:.1f} MHz achievable "
                f"(report.json vivado_timing; {overlay / 'timing_summary.rpt'}).")

    if openxc7 is None:
        result.notes.append(f"openXC7: {reason}")
    elif missing := missing_tools():
        result.notes.append(
            f"openXC7: {', '.join(missing)} not on PATH, so the open flow did not run; with the "
            f"openXC7 toolchain installed, run:\n    {_shell(['make'], openxc7.folder)}")
    elif not run:
        result.notes.append(f"openXC7: not run (--scripts-only); run:\n    "
                            f"{_shell(['make'], openxc7.folder)}")
    else:
        if status is not None:
            status.update("openXC7: starting")
        run_tool(openxc7.command, openxc7.folder, openxc7.folder / "make.log", "openXC7", status)
        result.bitstreams.append(openxc7.folder / f"{NAME}.bit")
        result.notes.append(f"openXC7: {NAME}.bit is the pin-free harness (fit and timing on the "
                            "part), not a PYNQ overlay; see build/openxc7/README.md.")
    return result
