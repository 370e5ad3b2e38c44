"""Vivado flow: the accelerator as an IP-XACT IP, and a Tcl script that builds a PYNQ overlay.

``DIR/build/vivado/ip/`` holds ``component.xml`` (IP-XACT 1685-2009 as Vivado's packager
writes it) and a copy of the RTL, so the folder is an IP repository on its own.
``bitloom_project.tcl`` makes a block design around it: the board's Zynq PS, an AXI DMA in
simple mode feeding ``s_axis`` and draining ``m_axis``, one more (MM2S only) per layer whose
weights stream from DDR (``rtl/weights/streams.json``) feeding its ``s_axis_w<n>``,
SmartConnects to the PS ports the board file names, and a reset synchronizer; then it
implements the design and copies the bitstream and hardware handoff to ``DIR/build/overlay``
under the names PYNQ loads.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

from bitloom.boards import DMA_STREAM_BITS, Board, load_board
from bitloom.emit.design import CORE, STREAMS, TOP, WEIGHTS, Design, bytes_wide, render_template
from bitloom.errors import BitloomError
from bitloom.hw.core import streamed_layers
from bitloom.hw.weights import init_file

IP_VENDOR = "bitloom.org"
IP_LIBRARY = "bitloom"
IP_NAME = "bitloom_accel"
#: Folder names under DIR/build, and the names PYNQ looks for (bitloom.bit + bitloom.hwh).
VIVADO, OVERLAY, OVERLAY_NAME = "vivado", "overlay", "bitloom"
PROJECT_TCL = "bitloom_project.tcl"
PROJECT = "bitloom"  # the Vivado project and its block design
DMA_CELL = "bitloom_dma"  # the DMA's instance name: the driver finds it as overlay.bitloom_dma
DMA_LENGTH_WIDTH = 26  # PG021's widest length register: up to 64 MiB - 1 per transfer
#: The AXI4-Stream width and subset converters (PG085) carry at most 512 bytes per beat.
AXIS_CONVERTER_BITS = 4096
#: A SmartConnect has at most 16 slave and 16 master interfaces (PG247).
SMARTCONNECT_PORTS = 16
#: Address window of each DMA's registers; weight DMAs follow the frame DMA's.
CONTROL_WINDOW = 0x10000
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


@dataclass(frozen=True)
class WeightStream:
    """How one streamed layer's words travel from DDR to its port ``s_axis_w<index>``.

    The DMA reads ``slot_bits`` per word, a whole number of its ``dma_bits`` beats; a width
    converter joins the beats of a word when there are several, and a subset converter drops
    the padding bytes above ``tdata_bits``. So in memory each word is its bits little-endian,
    zero-padded to ``slot_bits``, lowest address first.
    """

    layer: str
    index: int  # the layer's position in the plan: port s_axis_w<index>, DMA bitloom_wdma<index>
    file: str  # the init file, relative to rtl/ ("weights/<layer>.mem")
    words: int  # per pass
    width: int  # bits of a word
    tdata_bits: int  # the port's: the word rounded up to bytes
    passes_per_frame: int
    dma_bits: int  # the DMA's MM2S stream
    slot_bits: int  # one word in memory
    data_port: str  # the PS slave its DMA reads DDR through
    control_base: int  # address of its DMA's registers

    @property
    def cell(self) -> str:
        """The DMA's instance name: the driver finds it as ``overlay.bitloom_wdma<n>``."""
        return f"bitloom_wdma{self.index}"

    @property
    def port(self) -> str:
        return f"s_axis_w{self.index}"

    @property
    def mm_bits(self) -> int:
        """The DMA's memory-mapped side: at least 32 bits, never narrower than its stream."""
        return max(32, self.dma_bits)


def weight_beat_bits(layer: str, width: int, board: Board) -> tuple[int, int]:
    """The DMA stream width and the bits one word takes in memory (:meth:`Board.weight_dma`:
    the plan counts the same slots against the DDR), within the width converter's beats."""
    bus_bits = board.axi.data_width
    if bus_bits not in DMA_STREAM_BITS or bus_bits < 32:
        raise BitloomError(f"the board's axi.data_width ({bus_bits}) is not an AXI DMA "
                           "memory-mapped width (32 to 1024 bits, a power of two).")
    dma, slot = board.weight_dma(width)
    if slot > AXIS_CONVERTER_BITS:
        raise BitloomError(
            f"layer {layer} streams {width}-bit weight words, wider than the "
            f"{AXIS_CONVERTER_BITS}-bit beats of the AXI4-Stream width converter; compile with "
            f"a lower --target-fps or keep its weights on chip (--weights-memory {layer}=bram).")
    return dma, slot


def data_ports(board: Board) -> tuple[str, ...]:
    """The PS slave ports the DMAs may read and write DDR through."""
    if not board.axi.data:
        raise BitloomError(f"board {board.name}: `axi.data` lists no PS port for the DMAs.")
    return board.axi.data


def weight_streams(design: Design, board: Board) -> list[WeightStream]:
    """The design's streamed layers (``rtl/weights/streams.json``, checked against the plan)
    with their DMA widths; the frame DMA has ``axi.data[0]`` to itself when the board lists
    more data ports, and the weight DMAs take turns on the others."""
    planned = streamed_layers(design.plan)
    if not planned:
        return []
    manifest = design.path / "rtl" / WEIGHTS / STREAMS
    try:
        found = [(e["layer"], e["index"], e["file"], e["words"], e["width"], e["tdata_bits"],
                  e["passes_per_frame"]) for e in json.loads(manifest.read_text())]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BitloomError(f"{manifest}: cannot read the weight streams ({exc}); compile the "
                           "design again.") from None
    expected = [(lp.layer.name, n, init_file(lp.layer.name), lp.memory.depth, lp.memory.width,
                 bytes_wide(lp.memory.width), lp.memory.passes) for n, lp in planned]
    if found != expected:
        raise BitloomError(f"{manifest} does not list the streamed layers of the design's plan; "
                           "compile the design again.")
    data = data_ports(board)
    ports = data[1:] or data[:1]
    streams = []
    for k, (layer, n, file, words, width, tdata, passes) in enumerate(expected):
        dma, slot = weight_beat_bits(layer, width, board)
        streams.append(WeightStream(layer, n, file, words, width, tdata, passes, dma, slot,
                                    ports[k % len(ports)],
                                    board.axi.control_base + (k + 1) * CONTROL_WINDOW))
    return streams


def ip_version(version: str) -> tuple[str, int]:
    """Vivado's ``major.minor`` IP version and its revision (the patch level) from bitloom's."""
    numbers = [int(n) for n in re.findall(r"\d+", version)[:3]] + [0, 0, 0]
    return f"{numbers[0]}.{numbers[1]}", numbers[2]


def ip_vlnv() -> str:
    from bitloom.version import __version__

    return f"{IP_VENDOR}:{IP_LIBRARY}:{IP_NAME}:{ip_version(__version__)[0]}"


def ps_settings(board: Board, clock_mhz: float, data_ports: list[str]) -> dict:
    """The PS IP, its clock and reset pins, and the CONFIG values that enable the board's
    AXI control master and the ``data_ports`` slaves the DMAs use (PS7:
    ``processing_system7``; PS8: ``zynq_ultra_ps_e``)."""
    control, width = board.axi.control, board.axi.data_width
    if board.ps == "PS7":
        config: dict[str, object] = {"PCW_FPGA0_PERIPHERAL_FREQMHZ": f"{clock_mhz:g}",
                                     "PCW_EN_CLK0_PORT": 1, "PCW_EN_RST0_PORT": 1}
        if m := re.fullmatch(r"M_AXI_GP([01])", control):
            config[f"PCW_USE_M_AXI_GP{m[1]}"] = 1
        else:
            raise _port_error(board, "axi.control", control, "M_AXI_GP0, M_AXI_GP1")
        for data in data_ports:
            if m := re.fullmatch(r"S_AXI_HP([0-3])", data):
                config[f"PCW_USE_S_AXI_HP{m[1]}"] = 1
                config[f"PCW_S_AXI_HP{m[1]}_DATA_WIDTH"] = width
            elif data == "S_AXI_ACP":
                config["PCW_USE_S_AXI_ACP"] = 1
            else:
                raise _port_error(board, "axi.data", data, "S_AXI_HP0..3, S_AXI_ACP")
        return {"ps_ip": "processing_system7", "ps_clock": "FCLK_CLK0",
                "ps_reset": "FCLK_RESET0_N", "addr_width": 32, "ps_config": config}
    masters = {"M_AXI_HPM0_FPD": 0, "M_AXI_HPM1_FPD": 1, "M_AXI_HPM0_LPD": 2}
    slaves = {"S_AXI_HPC0_FPD": 0, "S_AXI_HPC1_FPD": 1, "S_AXI_HP0_FPD": 2, "S_AXI_HP1_FPD": 3,
              "S_AXI_HP2_FPD": 4, "S_AXI_HP3_FPD": 5, "S_AXI_LPD": 6}
    if control not in masters:
        raise _port_error(board, "axi.control", control, ", ".join(masters))
    config = {"PSU__FPGA_PL0_ENABLE": 1, "PSU__CRL_APB__PL0_REF_CTRL__FREQMHZ": f"{clock_mhz:g}",
              f"PSU__USE__M_AXI_GP{masters[control]}": 1}
    for data in data_ports:
        if data not in slaves:
            raise _port_error(board, "axi.data", data, ", ".join(slaves))
        config[f"PSU__USE__S_AXI_GP{slaves[data]}"] = 1
        config[f"PSU__SAXIGP{slaves[data]}__DATA_WIDTH"] = width
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


def write_component(design: Design, ip_dir: Path, streams: list[WeightStream]) -> Path:
    """``ip/component.xml`` plus the RTL it names under ``ip/src``; ``streams`` are the weight
    inputs, declared as AXI4-Stream slaves beside ``s_axis``."""
    from bitloom.version import __version__

    report = design.report
    sources = design.sources
    ports = verilog_ports(sources[0].read_text())
    widths = {p.name: p.width for p in ports}
    io = report["io"]
    expected = {"s_axis_tdata": io["input"]["tdata_bits"],
                "m_axis_tdata": io["output"]["tdata_bits"],
                **{f"{w.port}_tdata": w.tdata_bits for w in streams}}
    if {name: widths.get(name) for name in expected} != expected:
        raise BitloomError(f"{sources[0]} does not match {design.path}/report.json and "
                           "rtl/weights/streams.json; compile the design again.")
    (ip_dir / "src").mkdir(parents=True, exist_ok=True)
    files = []
    for src in (design.path / "rtl" / f"{CORE}.v", sources[0]):  # core before the wrapper
        shutil.copyfile(src, ip_dir / "src" / src.name)
        files.append({"name": f"src/{src.name}", "type": "verilogSource"})
    # weight ROMs $readmemh "weights/<layer>.mem" relative to the Verilog: same layout here
    # (streamed layers' files are the driver's, not the RTL's)
    streamed = {Path(w.file).name for w in streams}
    for mem in sorted((design.path / "rtl" / WEIGHTS).glob("*.mem")):
        if mem.name in streamed:
            continue
        (ip_dir / "src" / "weights").mkdir(exist_ok=True)
        shutil.copyfile(mem, ip_dir / "src" / "weights" / mem.name)
        files.append({"name": f"src/weights/{mem.name}", "type": "mem"})
    version, revision = ip_version(__version__)
    model = Path(str(report.get("model") or design.net.source)).name
    weights_note = f", weights of {len(streams)} layer(s) streamed in" if streams else ""
    views = [
        {"name": "xilinx_anylanguagesynthesis", "title": "Synthesis",
         "env": ":vivado.xilinx.com:synthesis"},
        {"name": "xilinx_anylanguagebehavioralsimulation", "title": "Simulation",
         "env": ":vivado.xilinx.com:simulation"},
    ]
    text = render_template(
        "component.xml.j2", version=__version__, vendor=IP_VENDOR, library=IP_LIBRARY,
        ip_name=IP_NAME, ip_version=version, revision=revision, model=escape(model), top=TOP,
        streams=[{"name": "s_axis", "mode": "slave"}, {"name": "m_axis", "mode": "master"},
                 *({"name": w.port, "mode": "slave"} for w in streams)],
        clock="ap_clk", reset="ap_rst_n", ports=ports, views=views, files=files,
        families=sorted(set(FAMILIES.values())),
        description=escape(f"bitloom accelerator for {model}: "
                           f"{report['cycles_per_frame']} cycles per frame, AXI4-Stream in "
                           f"and out{weights_note}"),
    )
    path = ip_dir / "component.xml"
    path.write_text(text)
    return path


def memory_ports(board: Board, streams: list[WeightStream]) -> list[dict]:
    """One SmartConnect per PS data port the DMAs use, with the DMA masters it joins: the frame
    DMA's two on ``axi.data[0]`` (SmartConnect ``memory``), each weight DMA's on its port."""
    data = data_ports(board)
    masters = {data[0]: ["$dma/M_AXI_MM2S", "$dma/M_AXI_S2MM"]}
    for w in streams:
        masters.setdefault(w.data_port, []).append(f"$wdma{w.index}/M_AXI_MM2S")
    if len(streams) + 1 > SMARTCONNECT_PORTS or \
            any(len(pins) > SMARTCONNECT_PORTS for pins in masters.values()):
        raise BitloomError(
            f"{len(streams)} layers stream their weights: more DMAs than the block design's "
            f"SmartConnects connect ({SMARTCONNECT_PORTS} interfaces each); keep some layers' "
            "weights on chip (--weights-memory LAYER=bram).")
    return [{"cell": "memory" if data.index(port) == 0 else f"memory{data.index(port)}",
             "port": port, "masters": pins} for port, pins in masters.items()]


def write_vivado(design: Design, folder: Path | None = None) -> VivadoScripts:
    """Write the IP and the project Tcl into ``DIR/build/vivado``."""
    from bitloom.version import __version__

    report = design.report
    board = load_board(report["board"])
    folder = folder or design.path / "build" / VIVADO
    folder.mkdir(parents=True, exist_ok=True)
    streams = weight_streams(design, board)
    memories = memory_ports(board, streams)
    component = write_component(design, folder / "ip", streams)
    widths = stream_widths(report)
    clock = float(report["clock_mhz"])
    pad = widths.output_bits - widths.accel_output_bits
    ps = ps_settings(board, clock, [m["port"] for m in memories])
    ps["ps_config"] = sorted(ps["ps_config"].items())
    tcl = render_template(
        "vivado_project.tcl.j2", version=__version__, script=PROJECT_TCL,
        model=Path(str(report.get("model") or design.net.source)).name,
        board=board.name, board_title=board.title, part=board.part,
        board_parts=BOARD_PARTS.get(board.name, ()), vlnv=ip_vlnv(), project=PROJECT,
        bd=PROJECT, overlay_name=OVERLAY_NAME, clock_mhz=f"{clock:g}", ps_name=board.ps,
        control=board.axi.control, control_base=f"0x{board.axi.control_base:08X}",
        dma=DMA_CELL, length_width=DMA_LENGTH_WIDTH, widths=widths, weights=streams,
        memories=memories, control_window=f"0x{CONTROL_WINDOW:X}",
        output_remap=f"{pad}'b{'0' * pad},tdata[{widths.accel_output_bits - 1}:0]",
        output_keep=f"{widths.output_bits // 8}'b{'1' * (widths.output_bits // 8)}",
        **ps,
    )
    project_tcl = folder / PROJECT_TCL
    project_tcl.write_text(tcl)
    return VivadoScripts(folder, project_tcl, component, ip_vlnv())
