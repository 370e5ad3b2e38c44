"""Yosys synthesis and resource accounting: real `synth_xilinx` runs on a tiny design, and
the cell-to-resource arithmetic, utilization and fit check on their own."""

from __future__ import annotations

import io
import math
import re
from pathlib import Path

import pytest
from rich.console import Console

from bitloom.boards import load_board
from bitloom.emit.synth import (
    RESULT_KEYS,
    SynthResult,
    check_fits,
    count_resources,
    synthesize,
    utilization,
    utilization_table,
)
from bitloom.errors import BitloomError

# An 8-bit multiply-accumulate register, a 64x8 RAM with a synchronous read (LUTRAM size),
# a 1024x16 one (one RAMB18) and a 4096x72 one (eight RAMB36, or one URAM288).
DESIGN = """\
module ram #(parameter AW = 6, parameter DW = 8) (
    input clk, input we, input [AW-1:0] waddr, input [AW-1:0] raddr,
    input [DW-1:0] wdata, output reg [DW-1:0] rdata);
  reg [DW-1:0] mem [0:(1 << AW) - 1];
  always @(posedge clk) begin
    if (we) mem[waddr] <= wdata;
    rdata <= mem[raddr];
  end
endmodule

module mac_ram (
    input clk, input rst, input en, input signed [7:0] a, input signed [7:0] b,
    output reg signed [19:0] acc,
    input we, input [11:0] waddr, input [11:0] raddr, input [71:0] wdata,
    output [7:0] small, output [15:0] medium, output [71:0] large);
  always @(posedge clk)
    if (rst) acc <= 0;
    else if (en) acc <= acc + a * b;
  ram #(6, 8) lutram (clk, we, waddr[5:0], raddr[5:0], wdata[7:0], small);
  ram #(10, 16) bram18 (clk, we, waddr[9:0], raddr[9:0], wdata[15:0], medium);
  ram #(12, 72) big (clk, we, waddr, raddr, wdata, large);
endmodule
"""


@pytest.fixture
def design(tmp_path: Path) -> Path:
    # Under /tmp on purpose: the Yosys WASI sandbox maps its own folder over /tmp.
    path = tmp_path / "src" / "mac_ram.v"
    path.parent.mkdir()
    path.write_text(DESIGN)
    return path


def _module(result: SynthResult, resource: str) -> dict[str, float]:
    """Resources of the one module using ``resource`` (Yosys hashes parameterized names)."""
    (found,) = [used for used in result.modules.values() if used[resource]]
    return found


@pytest.mark.synth
def test_synth_xc7(design: Path, tmp_path: Path) -> None:
    log = io.StringIO()
    result = synthesize([design], "mac_ram", tmp_path / "work", family="xc7",
                        console=Console(file=log, force_terminal=False, width=200))
    print(f"xc7 synthesis took {result.seconds:.1f} s: {result.cells}")
    # a log, not a terminal: a line per Yosys pass with the time, while it runs
    lines = log.getvalue().splitlines()
    assert lines[0] == "Yosys: synthesizing mac_ram for xc7", lines
    assert sum(re.fullmatch(r"  \d+:\d\d \S.*", line) is not None for line in lines) >= 2, lines
    assert result.unmapped == {}
    assert set(result.resources) == set(RESULT_KEYS)
    # The DSP48E1 absorbs the whole MAC, accumulator register included.
    assert result.cells["DSP48E1"] == 1
    assert len(result.modules) == 4  # mac_ram and one module per RAM parameter set
    assert result.modules["mac_ram"] == dict.fromkeys(RESULT_KEYS, 0) | {"DSP": 1}
    # 64x8 with a synchronous read: three RAM64M (3 bits each, 4 LUTs each) and 8 FFs.
    assert result.cells["RAM64M"] == 3
    lutram = _module(result, "LUTRAM")
    assert (lutram["LUT"], lutram["LUTRAM"], lutram["FF"]) == (12, 12, 8)
    # 1024x16 is half a tile; 4096x72 takes eight RAMB36E1.
    assert result.cells["RAMB18E1"] == 1
    assert result.cells["RAMB36E1"] == 8
    assert result.resources["BRAM36"] == 8.5
    assert result.resources["FF"] > 0
    assert result.resources["LUT"] > 0
    assert result.resources["LUT"] >= result.resources["LUTMEM"] == 12
    assert result.resources["DSP"] == 1
    assert result.resources["URAM"] == 0
    assert result.log_path.is_file()
    assert (tmp_path / "work" / "stat.json").is_file()

    rows = {row.resource: row for row in utilization(result.resources, load_board("pynq-z2"))}
    assert rows["DSP"].used == 1 and rows["DSP"].available == 220
    assert rows["DSP"].percent == pytest.approx(100 / 220)
    assert rows["BRAM36"].percent == pytest.approx(100 * 8.5 / 140)
    assert rows["LUT"].percent == pytest.approx(100 * result.resources["LUT"] / 53200)
    assert rows["FF"].percent == pytest.approx(100 * result.resources["FF"] / 106400)
    assert "URAM" not in rows  # the XC7Z020 has none and the design uses none
    check_fits(result.resources, load_board("pynq-z2"))


@pytest.mark.synth
def test_synth_xcup_with_uram(design: Path, tmp_path: Path) -> None:
    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=120)
    result = synthesize(
        [design], "mac_ram", tmp_path / "work", family="xcup", uram=True, console=console
    )
    print(f"xcup synthesis took {result.seconds:.1f} s: {result.cells}")
    assert "Yosys: synthesizing mac_ram for xcup" in screen.getvalue()  # the spinner ran
    assert result.unmapped == {}
    # The DSP48E2 takes the multiplier; Yosys leaves the 20-bit accumulator in fabric.
    assert result.cells["DSP48E2"] == 1
    mac = result.modules["mac_ram"]
    assert mac["DSP"] == 1 and mac["FF"] == 20 and mac["LUT"] > 0
    assert result.cells.get("CARRY8", 0) == 0
    assert mac["CARRY"] == math.ceil(result.cells["CARRY4"] / 2)
    # UltraScale LUTRAM: 64x8 fits in two RAM64M8 of 8 LUTs each.
    assert result.cells["RAM64M8"] == 2
    assert result.resources["LUTRAM"] == 16
    assert result.cells["RAMB18E2"] == 1
    assert result.cells["URAM288"] == 1
    assert (result.resources["BRAM36"], result.resources["URAM"]) == (0.5, 1)
    assert result.resources["FF"] > 0 and result.resources["LUT"] > 0

    rows = {row.resource: row for row in utilization(result.resources, load_board("kv260"))}
    assert rows["URAM"].percent == pytest.approx(100 / 64)
    with pytest.raises(BitloomError, match=r"URAM 1 of 0") as info:
        check_fits(result.resources, load_board("ultra96-v2"))
    assert "Ultra96-V2" in str(info.value)


@pytest.mark.synth
def test_synth_error_shows_log_tail(tmp_path: Path) -> None:
    source = tmp_path / "broken.v"
    source.write_text("module broken(input a, output b);\n  assign b = a +;\nendmodule\n")
    with pytest.raises(BitloomError) as info:
        synthesize([source], "broken", tmp_path / "work", family="xc7")
    message = str(info.value)
    assert "Yosys failed to synthesize broken for xc7" in message
    assert "ERROR" in message and "broken.v" in message
    assert str(tmp_path / "work" / "synth.log") in message


def test_missing_source(tmp_path: Path) -> None:
    with pytest.raises(BitloomError, match="not found"):
        synthesize([tmp_path / "nope.v"], "top", tmp_path, family="xc7")
    with pytest.raises(BitloomError, match="no Verilog sources"):
        synthesize([], "top", tmp_path, family="xc7")


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="family"):
        synthesize([tmp_path / "x.v"], "top", tmp_path, family="xc7z020")
    with pytest.raises(ValueError, match="UltraRAM"):
        synthesize([tmp_path / "x.v"], "top", tmp_path, family="xc7", uram=True)


def test_count_resources() -> None:
    cells = {
        "LUT1": 1, "LUT3": 2, "LUT6": 4, "INV": 1,
        "RAM32M": 1, "RAM64X1D": 2, "RAM128X1D": 1, "RAM256X1S": 1,
        "SRL16E": 2, "SRLC32E": 3,
        "FDRE": 10, "FDCE": 2, "FDPE": 1, "FDSE": 1, "LDCE": 1,
        "CARRY4": 3, "MUXF7": 2, "MUXF8": 1,
        "DSP48E1": 2, "RAMB36E1": 2, "RAMB18E1": 3,
        "IBUF": 9, "BUFG": 1,
    }  # fmt: skip
    resources = count_resources(cells, "xc7")
    assert resources == {
        "LUT": 8 + 16 + 5,
        "LUTMEM": 16 + 5,
        "LUTRAM": 4 + 2 * 2 + 4 + 4,
        "SRL": 5,
        "FF": 15,
        "CARRY": 3,
        "MUXF7": 2,
        "MUXF8": 1,
        "MUXF9": 0,
        "DSP": 2,
        "BRAM36": 3.5,
        "URAM": 0,
    }
    ultra = {"RAM64M8": 1, "RAM32M16": 1, "CARRY4": 3, "CARRY8": 1, "DSP48E2": 1,
             "RAMB18E2": 1, "URAM288": 2}  # fmt: skip
    resources = count_resources(ultra, "xcup")
    assert (resources["LUTRAM"], resources["CARRY"]) == (16, 1 + 2)
    assert (resources["DSP"], resources["BRAM36"], resources["URAM"]) == (1, 0.5, 2)
    assert count_resources({}, "xc7") == dict.fromkeys(RESULT_KEYS, 0)


def test_unmapped_cells() -> None:
    result = SynthResult(
        resources={},
        cells={"LUT4": 3, "IBUF": 2, "$_DFF_P_": 1, "my_blackbox": 1},
        modules={},
        log_path=Path("synth.log"),
        seconds=0.0,
    )
    assert result.unmapped == {"$_DFF_P_": 1, "my_blackbox": 1}


def test_utilization_and_fit() -> None:
    board = load_board("pynq-z2")
    used = dict.fromkeys(RESULT_KEYS, 0) | {"LUT": 26600, "FF": 10640, "DSP": 250, "BRAM36": 7}
    rows = utilization(used, board)
    assert [row.resource for row in rows] == ["LUT", "LUTMEM", "FF", "CARRY", "DSP", "BRAM36"]
    table = {row.resource: (row.used, row.available, row.percent) for row in rows}
    assert table["LUT"] == (26600, 53200, 50.0)
    assert table["FF"] == (10640, 106400, 10.0)
    assert table["BRAM36"] == (7, 140, 5.0)
    assert table["DSP"][2] == pytest.approx(113.63636)

    with pytest.raises(BitloomError) as info:
        check_fits(used, board, hint="Layer conv3 uses 200 DSP.")
    message = str(info.value)
    assert "DSP 250 of 220 (114%)" in message
    assert "LUT" not in message.split(":")[1].split(".")[0]  # only what is over capacity
    assert "PYNQ-Z2" in message and "xc7z020clg400-1" in message
    assert "Layer conv3 uses 200 DSP." in message
    check_fits(used | {"DSP": 220}, board)  # exactly full fits

    screen = Console(record=True, width=80, file=io.StringIO())
    screen.print(utilization_table(rows, title="pynq-z2"))
    text = screen.export_text()
    assert "pynq-z2" in text and "Util%" in text
    assert "50.0" in text and "113.6" in text and "53200" in text


def test_utilization_on_board_without_uram() -> None:
    used = dict.fromkeys(RESULT_KEYS, 0) | {"URAM": 2, "BRAM36": 0.5}
    rows = {row.resource: row for row in utilization(used, load_board("zybo-z7-20"))}
    assert math.isinf(rows["URAM"].percent)
    screen = Console(record=True, width=80, file=io.StringIO())
    screen.print(utilization_table(list(rows.values())))
    text = screen.export_text()
    assert "∞" in text and "0.5" in text
    with pytest.raises(BitloomError, match=r"URAM 2 of 0\."):
        check_fits(used, load_board("zybo-z7-20"))


@pytest.mark.synth
def test_layer_units_in_parallel_count_as_the_whole_design(tmp_path: Path) -> None:
    """Each layer unit in its own Yosys run, then the top with them as black boxes: the
    summed counts match one run over the whole design (kept hierarchy: nothing crosses a
    unit's boundary), every layer's unit is attributed, and the progress names each run."""
    import onnx

    import bitloom
    from bitloom.flows import layer_units

    from qonnx_models import random_mlp

    onnx.save(random_mlp(11, sizes=(16, 8, 6)), str(tmp_path / "m.onnx"))
    design = bitloom.compile(tmp_path / "m.onnx", "pynq-z2", out=tmp_path / "d")
    units = layer_units(design)
    assert len(units) == len(design.report["layers"])
    whole = design.synth(jobs=1)["resources"]
    out = io.StringIO()
    parallel = design.synth(Console(file=out, width=200), jobs=2)["resources"]
    for key in ("LUT", "FF", "CARRY", "BRAM36", "DSP"):
        assert abs(parallel[key] - whole[key]) <= 0.01 * max(whole[key], 1), (key, whole,
                                                                               parallel)
    text = out.getvalue()
    assert all(f"/{len(units) + 1} {unit}" in text for unit in units), text
    assert all(ly["measured"]["LUT"] > 0 for ly in design.report["layers"])
    # the timing estimate: per layer from its unit's netlist, the design's the least
    timing = design.report["timing"]
    assert timing["estimate"] and "not a placed-and-routed result" in timing["basis"]
    layers = {ly["name"]: ly["timing"] for ly in design.report["layers"]}
    assert set(layers) <= set(timing["parts"]) and timing["limiting_layer"] in timing["parts"]
    assert timing["fmax_mhz"] == min(p["fmax_mhz"] for p in timing["parts"].values())
    assert all(t["through"].get("LUT", 0) > 0 and " -> " in t["path"] for t in layers.values())
    assert "Estimated Fmax" in text and timing["limiting_layer"] in text
