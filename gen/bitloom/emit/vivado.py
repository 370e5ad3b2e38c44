"""Vivado flow: the accelerator as an IP-XACT IP, and a Tcl script that builds a PYNQ overlay.

``DIR/build/vivado/ip/`` holds ``component.xml`` (IP-XACT 1685-2009 as Vivado's packager
writes it) and a copy of the RTL, so the folder is an IP repository on its own.
``bitloom_project.tcl`` makes a block design around it: the board's Zynq PS, an AXI DMA in
simple mode feeding ``s_axis`` and draining ``m_axis``, SmartConnects to the PS ports the
board file names, and a reset synchronizer; then it implements the design and copies the
bitstream and hardware handoff to ``DIR/build/overlay`` under the names PYNQ loads.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

from bitloom.boards import Board, load_board
from bitloom.emit.design import CORE, TOP, Design, render_template
from bitloom.errors import BitloomError

IP_VENDOR = "bitloom.org"
IP_LIBRARY = "bitloom"
IP_NAME = "bitloom_accel"
#: Folder names under DIR/build, and the names PYNQ looks for (bitloom.bit + bitloom.hwh).
VIVADO, OVERLAY, OVERLAY_NAME = "vivado", "overlay", "bitloom"
PROJECT_TCL = "bitloom_project.tcl"
PROJECT = "bitloom"  # the Vivado project and its block design
DMA_CELL = "bitloom_dma"  # the DMA's instance name: the driver finds it as overlay.bitloom_dma
#: AXI DMA stream widths (PG021); its memory-mapped side is at least 32 bits and never
#: narrower than the stream.
DMA_STREAM_BITS = (8, 16, 32, 64, 128, 256, 512, 1024)
DMA_LENGTH_WIDTH = 26  # PG021's widest length register: up to 64 MiB - 1 per transfer
#: Vivado board parts to look for, newest file version first; without them the PS keeps
#: Vivado's defaults (see the Tcl).
BOARD_PARTS = {
    "pynq-z2": ("tul.com.tw:pynq-z2:part0:*",),
    "zybo-z7-20": ("digilentinc.com:zybo-z7-20:part0:*",),
    "ultra96-v2": ("avnet.com:ultra96v2:part0:*",),
    "kv260": ("xilinx.com:kv260_som:part0:*",),
    "zcu104": ("xilinx.com:zcu104:part0:*",),
}
#: Vivado's family names for the parts our boards carry.
FAMILIES = {"xc7": "zynq", "xcup": "zynquplus"}


@dataclass(frozen=True)
class Port:
    """A port of the Verilog top as ``component.xml`` declares it."""

    name: str
    direction: str  # "in" / "out" / "inout", IP-XACT's spelling
    left: int
    right: int

    @property
    def width(self) -> int:
        return abs(self.left - self.right) + 1


_HEADER = re.compile(r"\bmodule\s+(\w+)\s*\((.*?)\);", re.S)
_PORT = re.compile(r"^\s*(input|output|inout)\s+(?:wire\s+|reg\s+)?(?:\[(\d+):(\d+)\]\s*)?(\w+)",
                   re.M)


def verilog_ports(text: str, module: str = TOP) -> list[Port]:
    """The ANSI port list of ``module`` (what bitloom's templates write)."""
    for name, body in _HEADER.findall(text):
        if name == module:
            return [Port(m[3], m[0].removesuffix("put"), int(m[1] or 0), int(m[2] or 0))
                    for m in _PORT.findall(body)]
    raise BitloomError(f"no module {module} in the Verilog; compile the design again.")


@dataclass(frozen=True)
class StreamWidths:
    """tdata widths on both sides of the DMA, in bits."""

    accel_input_bits: int  # the accelerator's s_axis_tdata
    accel_output_bits: int  # the accelerator's m_axis_tdata
    input_bits: int  # DMA MM2S stream
    output_bits: int  # DMA S2MM stream
    input_mm_bits: int  # DMA MM2S memory-mapped side
    output_mm_bits: int  # DMA S2MM memory-mapped side


def dma_stream_bits(tdata_bits: int, side: str) -> int:
    """The narrowest AXI DMA stream width that carries ``tdata_bits``."""
    for bits in DMA_STREAM_BITS:
        if bits >= tdata_bits:
            return bits
    raise BitloomError(
        f"the accelerator's {side} beat is {tdata_bits} bits wide, more than the AXI DMA's "
        f"{DMA_STREAM_BITS[-1]}-bit stream; compile with a lower --target-fps (less "
        "parallelism per beat).")


def stream_widths(report: dict) -> StreamWidths:
    """DMA widths for the stream widths ``report.json`` records."""
    accel_in = int(report["io"]["input"]["tdata_bits"])
    accel_out = int(report["io"]["output"]["tdata_bits"])
    dma_in, dma_out = dma_stream_bits(accel_in, "input"), dma_stream_bits(accel_out, "output")
    return StreamWidths(accel_in, accel_out, dma_in, dma_out, max(32, dma_in), max(32, dma_out))


def ip_version(version: str) -> tuple[str, int]:
    """Vivado's ``major.minor`` IP version and its revision (the patch level) from bitloom's."""
    numbers = [int(n) for n in re.findall(r"\d+", version)[:3]] + [0, 0, 0]
    return f"{numbers[0]}.{numbers[1]}", numbers[2]


def ip_vlnv() -> str:
    from bitloom.version import __version__

    return f"{IP_VENDOR}:{IP_LIBRARY}:{IP_NAME}:{ip_version(__version__)[0]}"


def ps_settings(board: Board, clock_mhz: float) -> dict:
    """The PS IP, its clock and reset pins, and the CONFIG values that enable the board's
    AXI ports (PS7: ``processing_system7``; PS8: ``zynq_ultra_ps_e``)."""
    control, data = board.axi.control, board.axi.data[0] if board.axi.data else ""
    width = board.axi.data_width
    if board.ps == "PS7":
        config: dict[str, object] = {"PCW_FPGA0_PERIPHERAL_FREQMHZ": f"{clock_mhz:g}",
                                     "PCW_EN_CLK0_PORT": 1, "PCW_EN_RST0_PORT": 1}
        if m := re.fullmatch(r"M_AXI_GP([01])", control):
            config[f"PCW_USE_M_AXI_GP{m[1]}"] = 1
        else:
            raise _port_error(board, "axi.control", control, "M_AXI_GP0, M_AXI_GP1")
        if m := re.fullmatch(r"S_AXI_HP([0-3])", data):
            config[f"PCW_USE_S_AXI_HP{m[1]}"] = 1
            config[f"PCW_S_AXI_HP{m[1]}_DATA_WIDTH"] = width
        elif data == "S_AXI_ACP":
            config["PCW_USE_S_AXI_ACP"] = 1
        else:
            raise _port_error(board, "axi.data[0]", data, "S_AXI_HP0..3, S_AXI_ACP")
        return {"ps_ip": "processing_system7", "ps_clock": "FCLK_CLK0",
                "ps_reset": "FCLK_RESET0_N", "addr_width": 32, "ps_config": config}
    masters = {"M_AXI_HPM0_FPD": 0, "M_AXI_HPM1_FPD": 1, "M_AXI_HPM0_LPD": 2}
    slaves = {"S_AXI_HPC0_FPD": 0, "S_AXI_HPC1_FPD": 1, "S_AXI_HP0_FPD": 2, "S_AXI_HP1_FPD": 3,
              "S_AXI_HP2_FPD": 4, "S_AXI_HP3_FPD": 5, "S_AXI_LPD": 6}
    if control not in masters:
        raise _port_error(board, "axi.control", control, ", ".join(masters))
    if data not in slaves:
        raise _port_error(board, "axi.data[0]", data, ", ".join(slaves))
    n = slaves[data]
    config = {"PSU__FPGA_PL0_ENABLE": 1, "PSU__CRL_APB__PL0_REF_CTRL__FREQMHZ": f"{clock_mhz:g}",
              f"PSU__USE__M_AXI_GP{masters[control]}": 1, f"PSU__USE__S_AXI_GP{n}": 1,
              f"PSU__SAXIGP{n}__DATA_WIDTH": width}
    return {"ps_ip": "zynq_ultra_ps_e", "ps_clock": "pl_clk0", "ps_reset": "pl_resetn0",
            "addr_width": 64, "ps_config": config}


def _port_error(board: Board, key: str, value: str, known: str) -> BitloomError:
    return BitloomError(f"board {board.name}: `{key}` = {value!r} is not a {board.ps} port the "
                        f"Vivado flow knows; use one of {known}.")


@dataclass(frozen=True)
class VivadoScripts:
    """What :func:`write_vivado` wrote."""

    folder: Path
    project_tcl: Path
    component_xml: Path
    vlnv: str

    @property
    def command(self) -> list[str]:
        """What ``bitloom build`` runs in ``folder``; the Tcl finds everything from itself."""
        return ["vivado", "-mode", "batch", "-notrace", "-log", "vivado.log", "-journal",
                "vivado.jou", "-source", PROJECT_TCL]

    @property
    def manual_command(self) -> list[str]:
        """The short form to tell a user."""
        return ["vivado", "-mode", "batch", "-source", PROJECT_TCL]


def write_component(design: Design, ip_dir: Path) -> Path:
    """``ip/component.xml`` plus the RTL it names under ``ip/src``."""
    from bitloom.version import __version__

    report = design.report
    sources = design.sources
    ports = verilog_ports(sources[0].read_text())
    widths = {p.name: p.width for p in ports}
    io = report["io"]
    if (widths.get("s_axis_tdata"), widths.get("m_axis_tdata")) != (
            io["input"]["tdata_bits"], io["output"]["tdata_bits"]):
        raise BitloomError(f"{sources[0]} does not match {design.path}/report.json; compile the "
                           "design again.")
    (ip_dir / "src").mkdir(parents=True, exist_ok=True)
    files = []
    for src in (design.path / "rtl" / f"{CORE}.v", sources[0]):  # core before the wrapper
        shutil.copyfile(src, ip_dir / "src" / src.name)
        files.append({"name": f"src/{src.name}", "type": "verilogSource"})
    # weight ROMs $readmemh "weights/<layer>.mem" relative to the Verilog: same layout here
    for mem in sorted((design.path / "rtl" / "weights").glob("*.mem")):
        (ip_dir / "src" / "weights").mkdir(exist_ok=True)
        shutil.copyfile(mem, ip_dir / "src" / "weights" / mem.name)
        files.append({"name": f"src/weights/{mem.name}", "type": "mem"})
    version, revision = ip_version(__version__)
    model = Path(str(report.get("model") or design.net.source)).name
    views = [
        {"name": "xilinx_anylanguagesynthesis", "title": "Synthesis",
         "env": ":vivado.xilinx.com:synthesis"},
        {"name": "xilinx_anylanguagebehavioralsimulation", "title": "Simulation",
         "env": ":vivado.xilinx.com:simulation"},
    ]
    text = render_template(
        "component.xml.j2", version=__version__, vendor=IP_VENDOR, library=IP_LIBRARY,
        ip_name=IP_NAME, ip_version=version, revision=revision, model=escape(model), top=TOP,
        streams=[{"name": "s_axis", "mode": "slave"}, {"name": "m_axis", "mode": "master"}],
        clock="ap_clk", reset="ap_rst_n", ports=ports, views=views, files=files,
        families=sorted(set(FAMILIES.values())),
        description=escape(f"bitloom accelerator for {model}: "
                           f"{report['cycles_per_frame']} cycles per frame, AXI4-Stream in "
                           "and out"),
    )
    path = ip_dir / "component.xml"
    path.write_text(text)
    return path


def write_vivado(design: Design, folder: Path | None = None) -> VivadoScripts:
    """Write the IP and the project Tcl into ``DIR/build/vivado``."""
    from bitloom.version import __version__

    report = design.report
    board = load_board(report["board"])
    folder = folder or design.path / "build" / VIVADO
    folder.mkdir(parents=True, exist_ok=True)
    component = write_component(design, folder / "ip")
    widths = stream_widths(report)
    clock = float(report["clock_mhz"])
    pad = widths.output_bits - widths.accel_output_bits
    ps = ps_settings(board, clock)
    ps["ps_config"] = sorted(ps["ps_config"].items())
    tcl = render_template(
        "vivado_project.tcl.j2", version=__version__, script=PROJECT_TCL,
        model=Path(str(report.get("model") or design.net.source)).name,
        board=board.name, board_title=board.title, part=board.part,
        board_parts=BOARD_PARTS.get(board.name, ()), vlnv=ip_vlnv(), project=PROJECT,
        bd=PROJECT, overlay_name=OVERLAY_NAME, clock_mhz=f"{clock:g}", ps_name=board.ps,
        control=board.axi.control, data=board.axi.data[0] if board.axi.data else "",
        control_base=f"0x{board.axi.control_base:08X}", dma=DMA_CELL,
        length_width=DMA_LENGTH_WIDTH, widths=widths,
        output_remap=f"{pad}'b{'0' * pad},tdata[{widths.accel_output_bits - 1}:0]",
        output_keep=f"{widths.output_bits // 8}'b{'1' * (widths.output_bits // 8)}",
        **ps,
    )
    project_tcl = folder / PROJECT_TCL
    project_tcl.write_text(tcl)
    return VivadoScripts(folder, project_tcl, component, ip_vlnv())
