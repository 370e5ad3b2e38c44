"""Weight memory styles (LUTRAM, BRAM, streamed): the units in every style in the Amaranth
simulator, the choice and its overrides, the init files read back against the model's
weights, and weights that do not fit their format refused by name."""

from __future__ import annotations

import json

import numpy as np
import pytest
from streams import beats, simulate
from test_hw_cnn import acc_format, random_codes, random_conv, random_window

import bitloom
from bitloom.cli import main
from bitloom.emit.design import (
    check_weight_files,
    emit_rtl,
    load_design,
    read_mem,
    write_mem,
)
from bitloom.errors import BitloomError
from bitloom.formats import Int, parse_format
from bitloom.hw.conv import ConvolutionUnit
from bitloom.hw.core import decode_weight_words, weight_words
from bitloom.hw.mvu import MatrixVectorUnit
from bitloom.hw.mvu import weight_words as mvu_weight_words
from bitloom.hw.pool import DepthwiseUnit
from bitloom.ir import DepthwiseConv, MatrixVector, Window
from bitloom.plan import LayerPlan, make_plan, make_plan_with
from bitloom.plan.fold import Folding
from bitloom.plan.memory import (
    STREAMED,
    STYLES,
    WeightMemory,
    bram36_fill,
    bram36_tiles,
    choose_memories,
    parse_overrides,
    weight_geometry,
    with_memories,
)
from bitloom.sim.vectors import from_beats, to_beats

from qonnx_models import random_mlp


def dense_layer(rng: np.random.Generator, in_fmt, w_fmt, k: int = 12, n: int = 6) -> MatrixVector:
    return MatrixVector("fc", (-1,), (k,), acc_fmt=acc_format(w_fmt, in_fmt, k),
                        weights=random_codes(rng, w_fmt, (k, n)), in_fmt=in_fmt, w_fmt=w_fmt)


def depthwise_layer(rng: np.random.Generator, in_fmt, w_fmt) -> tuple[DepthwiseConv, int]:
    window, c, simd = random_window(rng)
    layer = DepthwiseConv("dw", (-1,), (*window.in_hw, c),
                          acc_fmt=acc_format(w_fmt, in_fmt, window.size),
                          weights=random_codes(rng, w_fmt, (window.size, c)),
                          in_fmt=in_fmt, w_fmt=w_fmt, window=window)
    return layer, simd


def with_weight_stream(dut, inputs: dict[str, list[int]], passes: int) -> dict[str, list[int]]:
    """Add the ``w`` stream (the unit's words, ``passes`` times) for a streamed unit."""
    if dut.style == STREAMED:
        unit = getattr(dut, "mvu", dut)
        inputs["w"] = unit.weight_words * passes
    else:
        assert "w" not in dut.signature.members
    return inputs


# -- the units in every style ---------------------------------------------------------------

@pytest.mark.parametrize("style", STYLES)
def test_dense_unit_in_every_style(style):
    rng = np.random.default_rng(3)
    in_fmt, w_fmt = Int(4, signed=True), parse_format("e4m3")
    layer = dense_layer(rng, in_fmt, w_fmt)
    x = random_codes(rng, in_fmt, (4, 12))
    fold = Folding(pe=2, simd=3)
    dut = MatrixVectorUnit(layer, fold, style)
    inputs = with_weight_stream(dut, {"i": to_beats(x, in_fmt, fold.simd)}, passes=len(x))
    expected = layer.golden(x).reshape(-1)
    out = simulate(dut, inputs, {"o": expected.size // fold.pe}, seed=1)
    np.testing.assert_array_equal(from_beats(beats(out["o"]), layer.out_fmt, fold.pe), expected)


@pytest.mark.parametrize("style", STYLES)
def test_convolution_unit_in_every_style(style):
    rng = np.random.default_rng(11)
    in_fmt, w_fmt = parse_format("int4"), parse_format("int3")
    layer, x, fold = random_conv(rng, in_fmt, w_fmt, requant=True, frames=2)
    dut = ConvolutionUnit(layer, fold, style)
    inputs = with_weight_stream(dut, {"i": to_beats(x, in_fmt, fold.simd)},
                                passes=len(x) * layer.pixels)
    expected = layer.golden(x).reshape(-1)
    out = simulate(dut, inputs, {"o": expected.size // fold.pe}, seed=2)
    np.testing.assert_array_equal(from_beats(beats(out["o"]), layer.out_fmt, fold.pe), expected)


@pytest.mark.parametrize("style", STYLES)
def test_depthwise_unit_in_every_style(style):
    rng = np.random.default_rng(21)
    in_fmt, w_fmt = parse_format("uint3"), parse_format("int4")
    layer, simd = depthwise_layer(rng, in_fmt, w_fmt)
    x = random_codes(rng, in_fmt, (2, *layer.window.in_hw, layer.channels))
    dut = DepthwiseUnit(layer, simd, style)
    inputs = with_weight_stream(dut, {"i": to_beats(x, in_fmt, simd)},
                                passes=len(x) * int(np.prod(layer.window.out_hw)))
    expected = layer.golden(x).reshape(-1)
    out = simulate(dut, inputs, {"o": expected.size // simd}, seed=3)
    np.testing.assert_array_equal(from_beats(beats(out["o"]), layer.out_fmt, simd), expected)


# -- never truncated ------------------------------------------------------------------------

@pytest.mark.parametrize("w_name", ["int2", "int4", "int8", "bipolar", "float8_e4m3fn"])
def test_weight_files_read_back_to_the_weights(tmp_path, w_name):
    """Words -> .mem file -> words -> decoded weights == the layer's, for a dense, a conv and
    a depthwise layer; every level of the format (minimum and maximum included) occurs."""
    rng = np.random.default_rng(len(w_name))
    in_fmt, w_fmt = parse_format("int4"), parse_format(w_name)
    conv = MatrixVector("conv", (-1,), (5, 5, 4), acc_fmt=acc_format(w_fmt, in_fmt, 36),
                        weights=random_codes(rng, w_fmt, (36, 6)), in_fmt=in_fmt, w_fmt=w_fmt,
                        window=Window((5, 5), (3, 3)))
    dw = DepthwiseConv("dw", (-1,), (5, 5, 6), acc_fmt=acc_format(w_fmt, in_fmt, 9),
                       weights=random_codes(rng, w_fmt, (9, 6)), in_fmt=in_fmt, w_fmt=w_fmt,
                       window=Window((5, 5), (3, 3), pads=(1, 1, 1, 1)))
    levels = w_fmt.grid_levels()
    cases = [(dense_layer(rng, in_fmt, w_fmt, k=4 * (len(levels) // 4 + 1)), Folding(2, 4)),
             (conv, Folding(3, 2)), (dw, Folding(3, 3))]
    for layer, fold in cases:
        layer.weights.reshape(-1)[:len(levels)] = levels[:layer.weights.size]
        depth, width, passes = weight_geometry(layer, fold)
        lp = LayerPlan(layer, fold, (0,), WeightMemory("bram", depth, width, passes))
        words = weight_words(lp)
        assert len(words) == depth and all(0 <= w < 1 << width for w in words)
        path = tmp_path / f"{layer.name}.mem"
        write_mem(path, words, width)
        assert len(path.read_text().splitlines()) == depth
        np.testing.assert_array_equal(decode_weight_words(lp, read_mem(path)), layer.weights,
                                      err_msg=f"{layer.name} {w_name}")


def test_a_weight_outside_its_format_is_an_error_naming_the_layer():
    rng = np.random.default_rng(0)
    layer = dense_layer(rng, Int(4, signed=True), Int(4, signed=True))
    layer.weights[3, 2] = 9  # int4 holds -8..7: a silent mask would give -7
    with pytest.raises(BitloomError, match=r"fc: weight 9.0 at index \(3, 2\) does not fit"):
        mvu_weight_words(layer.weights, Folding(2, 3), layer.w_fmt, layer.name)
    lp = LayerPlan(layer, Folding(2, 3), (0,), WeightMemory("lutram", 12, 24, 1))
    with pytest.raises(BitloomError, match=r"fc: weight 9\.0"):
        weight_words(lp)


def test_emitted_design_loads_its_roms_from_the_weight_files(tmp_path):
    net = bitloom.load(random_mlp(5, sizes=(16, 12, 4)))
    plan = make_plan(net, 16)
    first, second = (lp.layer.name for lp in plan.layers if lp.memory)
    plan = with_memories(plan, styles={first: "bram", second: "streamed"})
    rtl = tmp_path / "rtl"
    emit_rtl(plan, rtl)
    core = (rtl / "bitloom_core.v").read_text()
    top = (rtl / "bitloom_top.v").read_text()
    assert 'rom_style = "block"' in core and 'ram_style = "block"' in core
    assert 'rom_style = "distributed"' not in core
    assert f'$readmemh("weights/{first}.mem", weights, 0,' in core
    assert "weights[0] =" not in core  # no inline contents left
    streams = json.loads((rtl / "weights" / "streams.json").read_text())
    assert [s["layer"] for s in streams] == [second]
    assert f"{streams[0]['port']}_tdata" in top and f"{streams[0]['port']}_tready" in top
    check_weight_files(plan, rtl)
    # a changed word is caught, naming the layer and the weight
    path = rtl / "weights" / f"{first}.mem"
    words = read_mem(path)
    words[0] ^= 1
    write_mem(path, words, plan.layers[0].memory.width)
    with pytest.raises(BitloomError, match=f"layer {first}'s weight at"):
        check_weight_files(plan, rtl)
    path.write_text("\n".join(path.read_text().splitlines()[:-1]) + "\n")
    with pytest.raises(BitloomError, match="words, expected"):
        check_weight_files(plan, rtl)


# -- the choice -------------------------------------------------------------------------------

def test_styles_are_chosen_by_size_and_budget():
    assert bram36_tiles(512, 36) == 0.5 and bram36_tiles(1024, 72) == 2.0
    rng = np.random.default_rng(0)
    fmt = Int(8, signed=True)
    small = dense_layer(rng, fmt, fmt, k=8, n=8)  # 8 x 64 bits at PE=SIMD=1: 64 words
    big = dense_layer(rng, fmt, fmt, k=256, n=64)  # 16384 words of 8 bits
    huge = dense_layer(rng, fmt, fmt, k=512, n=256)  # 131072 words
    small.name, big.name, huge.name = "small", "big", "huge"
    net = type("Net", (), {"layers": [small, big, huge]})()
    folds = [Folding(1, 1)] * 3
    assert [m.style for m in choose_memories(net, folds)] == ["lutram", "bram", "bram"]
    budgeted = choose_memories(net, folds, bram36_budget=10)
    assert [m.style for m in budgeted] == ["lutram", "bram", "streamed"]
    assert budgeted[1].bram36 == 4.0 and budgeted[2].bram36 == 0
    forced = choose_memories(net, folds, styles={"small": "bram"})
    assert forced[0].style == "bram"
    assert [m.style for m in choose_memories(net, folds, default="streamed")] == ["streamed"] * 3


def test_when_block_ram_runs_out_weights_go_to_luts_then_stream():
    """Block RAM goes to the memories that fill their tiles best (a shallow, wide memory
    wastes most of each tile); of the rest, the cheapest ROMs take LUTs while the budget
    lasts; the others stream."""
    rng = np.random.default_rng(0)
    fmt = Int(8, signed=True)
    shallow = dense_layer(rng, fmt, fmt, k=256, n=256)  # PE 32, SIMD 16: 128 x 4096 bits
    deep = dense_layer(rng, fmt, fmt, k=256, n=64)  # PE = SIMD = 1: 16384 x 8 bits
    wide = dense_layer(rng, fmt, fmt, k=512, n=256)  # 131072 x 8 bits
    shallow.name, deep.name, wide.name = "shallow", "deep", "wide"
    net = type("Net", (), {"layers": [shallow, deep, wide]})()
    folds = [Folding(32, 16), Folding(1, 1), Folding(1, 1)]
    assert bram36_tiles(128, 4096) == 57 and bram36_fill(128, 4096) < 0.3
    assert bram36_fill(16384, 8) == bram36_fill(131072, 8) > 0.8  # 16 of every 18 Kb

    def styles(**budget):
        return [m.style for m in choose_memories(net, folds, bram36_budget=61,
                                                 rom_cost=lambda d, w: d * w, **budget)]

    assert styles() == ["streamed", "bram", "bram"]  # 36 tiles, not 4 + 57 for fewer bits
    assert styles(rom_lut_budget=128 * 4096) == ["lutram", "bram", "bram"]



def test_overrides_are_checked():
    assert parse_overrides(["bram", "fc1=streamed"]) == ("bram", {"fc1": "streamed"})
    with pytest.raises(BitloomError, match="unknown style 'rom'"):
        parse_overrides(["fc1=rom"])
    net = bitloom.load(random_mlp(5, sizes=(16, 12, 4)))
    plan = make_plan(net, 16)
    with pytest.raises(BitloomError, match="no layer 'nope'"):
        with_memories(plan, styles={"nope": "bram"})


def test_report_records_the_memories_and_verify_reloads_them(tmp_path):
    net = bitloom.load(random_mlp(5, sizes=(16, 12, 4)))
    model = tmp_path / "mlp.onnx"
    import onnx

    onnx.save(random_mlp(5, sizes=(16, 12, 4)), model)
    name = net.layers[1].name
    out = tmp_path / "design"
    assert main(["compile", str(model), "--board", "pynq-z2", "--out", str(out),
                 "--weights-memory", "bram", "--weights-memory", f"{name}=streamed"]) == 0
    report = json.loads((out / "report.json").read_text())
    memories = [ly["weight_memory"] for ly in report["layers"] if ly["weight_memory"]]
    assert [m["style"] for m in memories] == ["bram", "streamed"]
    assert all(m["bits"] == m["depth"] * m["width"] for m in memories)
    assert memories[0]["bram36"] > 0 and memories[1]["bram36"] == 0
    design = load_design(out)
    assert [lp.style for lp in design.plan.layers if lp.memory] == ["bram", "streamed"]
    assert main(["compile", str(model), "--board", "pynq-z2", "--out", str(out),
                 "--weights-memory", "nope=bram"]) == 2
    assert main(["compile", str(model), "--board", "pynq-z2", "--out", str(out),
                 "--weights-memory", "flash"]) == 2


def test_make_plan_with_keeps_given_styles():
    net = bitloom.load(random_mlp(5, sizes=(16, 12, 4)))
    plan = make_plan(net, 16)
    again = make_plan_with(net, [lp.fold for lp in plan.layers], None, 100.0, None,
                           ["streamed"] * len(plan.layers))
    assert [lp.style for lp in again.layers if lp.memory] == ["streamed", "streamed"]


# -- synthesis --------------------------------------------------------------------------------

@pytest.mark.synth
def test_rom_styles_reach_yosys(tmp_path):
    """One dense layer's weights forced to block RAM, the other's to LUTs: Yosys maps the
    first into RAMB tiles (read from its init file) and the second into none."""
    from bitloom.emit.synth import synthesize

    net = bitloom.load(random_mlp(5, sizes=(16, 12, 4)))
    plan = make_plan(net, 16)
    first, second = (lp for lp in plan.layers if lp.memory)
    plan = with_memories(plan, styles={first.layer.name: "bram", second.layer.name: "lutram"})
    sources = emit_rtl(plan, tmp_path / "rtl")
    result = synthesize(sources, "bitloom_top", tmp_path / "synth", family="xc7")
    ram = {name: used["BRAM36"] for name, used in result.modules.items()}
    print(f"xc7 synthesis took {result.seconds:.1f} s: {result.cells}; BRAM36 per module {ram}")
    owner = [name for name, tiles in ram.items() if tiles]
    assert owner and all(name.endswith(f".{first.layer.name}") for name in owner), ram
    planned = next(lp.memory for lp in plan.layers if lp.layer.name == first.layer.name)
    assert result.resources["BRAM36"] == planned.bram36 > 0
    assert not any(tiles for name, tiles in ram.items() if second.layer.name in name), ram
    log = result.log_path.read_text()
    assert "ram_style = block' on memory" in log and "ram_style = logic' on memory" in log


def test_pynq_driver_feeds_streamed_weights(tmp_path):
    """A design whose weights all stream gets a PYNQ driver that knows every stream (its
    DMA, words, passes) and loads the compiler's init files, which build puts beside it."""
    from board_builds import import_driver

    from bitloom.boards import load_board
    from bitloom.emit.design import emit_design
    from bitloom.emit.driver import write_driver

    model = tmp_path / "mlp.onnx"
    import onnx

    onnx.save(random_mlp(5, sizes=(16, 12, 4)), model)
    net = bitloom.load(model)
    plan = with_memories(make_plan(net, 16), default="streamed")
    design = emit_design(plan, load_board("pynq-z2"), tmp_path / "design", model)
    driver = import_driver(write_driver(design), "bitloom_driver_weight_memory")
    streams = json.loads((tmp_path / "design" / "rtl" / "weights" / "streams.json").read_text())
    assert [(s.layer, s.dma_name, s.words, s.bits, s.passes_per_frame)
            for s in driver.WEIGHT_STREAMS] == [
        (st["layer"], f"bitloom_wdma{st['index']}", st["words"], st["width"],
         st["passes_per_frame"]) for st in streams]
    for stream in driver.WEIGHT_STREAMS:
        words = read_mem(tmp_path / "design" / "rtl" / "weights" / stream.file)
        data = driver.weight_pass(stream).reshape(stream.words, stream.slot_bytes)
        assert [int.from_bytes(row.tobytes(), "little") for row in data] == words
