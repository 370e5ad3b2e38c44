"""CNN hardware blocks in the Amaranth simulator, bit-exact against the IR's golden.

Random small geometries (kernel 1-3, stride 1-2, pad 0-1, dilation 1-2, C 1-4, H/W 3-7),
corner input codes, several frames back to back, random gaps on every input and random
back-pressure on every output.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
from amaranth import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from streams import beats, simulate

from bitloom.formats import Format, Int, accumulator_grid, parse_format
from bitloom.hw import thresholds
from bitloom.hw.branch import ConcatUnit, Duplicate
from bitloom.hw.conv import ConvolutionUnit
from bitloom.hw.glue import StreamFifo
from bitloom.hw.pointwise import AddUnit, ThresholdUnit
from bitloom.hw.pool import DepthwiseUnit, PoolUnit
from bitloom.hw.window import SlidingWindow
from bitloom.ir import (
    AddStreams,
    Concat,
    DepthwiseConv,
    MatrixVector,
    MaxPool,
    SumPool,
    Thresholding,
    Thresholds,
    Window,
)
from bitloom.plan.fifos import DECOUPLE
from bitloom.plan.fold import Folding
from bitloom.sim.vectors import from_beats, to_beats


def random_codes(rng: np.random.Generator, fmt: Format, shape: tuple[int, ...]) -> np.ndarray:
    """Grid integers of ``fmt``, with its minimum, maximum and zero planted up front."""
    levels = fmt.grid_levels()
    values = levels[rng.integers(0, len(levels), size=shape)]
    flat = values.reshape(-1)
    corners = [levels[0], levels[-1]] + ([0] if 0 in levels else [])
    flat[:len(corners)] = corners[:flat.size]
    return values


def random_window(rng: np.random.Generator, pad_value: int = 0) -> tuple[Window, int, int]:
    """A random geometry whose windows fit: ``(window, channels, simd)``."""
    while True:
        h, w = (int(v) for v in rng.integers(3, 8, size=2))
        k = tuple(int(v) for v in rng.integers(1, 4, size=2))
        window = Window((h, w), k, tuple(int(v) for v in rng.integers(1, 3, size=2)),
                        tuple(int(v) for v in rng.integers(0, 2, size=4)),
                        tuple(int(v) for v in rng.integers(1, 3, size=2)), pad_value)
        if min(window.out_hw) >= 1:
            c = int(rng.integers(1, 5))
            simd = int(rng.choice([d for d in range(1, c + 1) if c % d == 0]))
            return window, c, simd


def random_thresholds(rng: np.random.Generator, acc: np.ndarray, out_fmt: Format) -> Thresholds:
    """Sorted thresholds drawn from accumulator values that occur (so outputs spread)."""
    channels = acc.shape[-1]
    levels = len(out_fmt.grid_levels()) - 1
    per_channel = acc.reshape(-1, channels)
    table = np.stack([np.sort(rng.choice(per_channel[:, c], size=levels)) for c in
                      range(channels)]).astype(np.int64)
    return Thresholds(table, rng.random(channels) < 0.7, out_fmt)


def acc_format(w_fmt: Format | None, in_fmt: Format, length: int) -> Int:
    """The exact accumulator of ``length`` products (or plain values, without ``w_fmt``)."""
    grid = in_fmt.grid().sum_of(length) if w_fmt is None else \
        accumulator_grid(w_fmt, in_fmt, length)
    return Int.spanning(grid.lo, grid.hi)


# -- sliding window ------------------------------------------------------------------------

def window_order(patches: np.ndarray, simd: int, order: str) -> np.ndarray:
    """``(B, OH, OW, K, C)`` patches -> the stream of elements in ``order``."""
    b, oh, ow, k, c = patches.shape
    if order == "conv":
        return patches.reshape(-1)
    chunks = patches.reshape(b, oh, ow, k, c // simd, simd).transpose(0, 1, 2, 4, 3, 5)
    return chunks.reshape(-1)


def test_sliding_window_streams_every_window_in_both_orders():
    fmt = Int(4, signed=True)
    for seed in range(6):
        rng = np.random.default_rng(seed)
        window, c, simd = random_window(rng, pad_value=int(rng.integers(-8, 8)))
        order = ("conv", "depthwise")[seed % 2]
        x = random_codes(rng, fmt, (2, *window.in_hw, c))
        dut = SlidingWindow(window, c, simd, fmt, order)
        expected = window_order(window.patches(x), simd, order)
        out = simulate(dut, {"i": to_beats(x, fmt, simd)}, {"o": expected.size // simd},
                       seed=seed)
        got = from_beats(beats(out["o"]), fmt, simd)
        np.testing.assert_array_equal(got, expected, err_msg=f"{window} C={c} SIMD={simd}")


# -- convolution: sliding window + matrix-vector unit -------------------------------------

def random_conv(rng: np.random.Generator, in_fmt: Format, w_fmt: Format, requant: bool,
                frames: int) -> tuple[MatrixVector, np.ndarray, Folding]:
    window, c, simd = random_window(rng)
    n = int(rng.integers(1, 5))
    pe = int(rng.choice([d for d in range(1, n + 1) if n % d == 0]))
    k = window.size * c
    weights = random_codes(rng, w_fmt, (k, n))
    layer = MatrixVector("conv", (-1,), (*window.in_hw, c), acc_fmt=acc_format(w_fmt, in_fmt, k),
                         weights=weights, in_fmt=in_fmt, w_fmt=w_fmt, window=window)
    x = random_codes(rng, in_fmt, (frames, *window.in_hw, c))
    if requant:
        layer.requant = random_thresholds(rng, layer.golden(x), Int(3, signed=False))
    return layer, x, Folding(pe, simd)


def test_convolution_unit_is_bit_exact():
    cases = [("int4", "int3", True), ("uint4", "bipolar", False), ("float6_e2m3fn", "int4", True),
             ("int8", "int8", False)]
    for seed, (in_name, w_name, requant) in enumerate(cases):
        rng = np.random.default_rng(10 + seed)
        in_fmt, w_fmt = parse_format(in_name), parse_format(w_name)
        layer, x, fold = random_conv(rng, in_fmt, w_fmt, requant, frames=2)
        expected = layer.golden(x).reshape(-1)
        dut = ConvolutionUnit(layer, fold)
        out = simulate(dut, {"i": to_beats(x, in_fmt, fold.simd)}, {"o": expected.size // fold.pe},
                       seed=seed)
        got = from_beats(beats(out["o"]), layer.out_fmt, fold.pe)
        np.testing.assert_array_equal(got, expected, err_msg=f"{layer.window} {fold}")


def test_convolution_keeps_the_mac_array_busy():
    """3x3, stride 1, pad 1, one neuron fold: the window must deliver a beat every cycle."""
    rng = np.random.default_rng(0)
    fmt = Int(4, signed=True)
    window = Window((6, 6), (3, 3), pads=(1, 1, 1, 1))
    c, n, frames = 4, 4, 3
    weights = random_codes(rng, fmt, (9 * c, n))
    layer = MatrixVector("conv", (-1,), (6, 6, c), acc_fmt=acc_format(fmt, fmt, 9 * c),
                         weights=weights, in_fmt=fmt, w_fmt=fmt, window=window)
    fold = Folding(pe=4, simd=2)
    x = random_codes(rng, fmt, (frames, 6, 6, c))
    dut = ConvolutionUnit(layer, fold)
    per_frame = 36 * n // fold.pe
    out = simulate(dut, {"i": to_beats(x, fmt, fold.simd)}, {"o": frames * per_frame}, seed=0,
                   pause=0.0)
    np.testing.assert_array_equal(
        from_beats(beats(out["o"]), layer.out_fmt, fold.pe), layer.golden(x).reshape(-1))
    last = [out["o"][f * per_frame - 1][0] for f in range(1, frames + 1)]
    steady = (last[-1] - last[0]) / (frames - 1)
    ideal = dut.cycles_per_frame  # OH * OW * SF * NF
    assert ideal == 36 * 18
    print(f"conv 3x3/1 pad 1, 6x6x4, SF 18 NF 1: {steady:.0f} cycles per image, ideal {ideal}")
    assert steady <= 1.1 * ideal, f"{steady} cycles per image, ideal {ideal}"


# -- depthwise convolution and pooling ----------------------------------------------------

def run_map_unit(dut, layer, x: np.ndarray, in_fmt: Format, simd: int, seed: int) -> None:
    """Stream ``x`` through a map-in, map-out unit and compare with ``layer.golden``."""
    expected = layer.golden(x).reshape(-1)
    out = simulate(dut, {"i": to_beats(x, in_fmt, simd)}, {"o": expected.size // simd},
                   seed=seed)
    got = from_beats(beats(out["o"]), layer.out_fmt, simd)
    np.testing.assert_array_equal(got, expected, err_msg=f"{layer.kind} {layer.window}")


def global_window(rng: np.random.Generator) -> tuple[Window, int, int]:
    h, w = (int(v) for v in rng.integers(3, 6, size=2))
    return Window((h, w), (h, w)), 4, 2


def test_depthwise_unit_is_bit_exact():
    cases = [("int4", "int3", True, False), ("float6_e2m3fn", "int4", False, False),
             ("uint3", "bipolar", True, False), ("int4", "int4", True, True)]
    for seed, (in_name, w_name, requant, whole) in enumerate(cases):
        rng = np.random.default_rng(20 + seed)
        in_fmt, w_fmt = parse_format(in_name), parse_format(w_name)
        window, c, simd = global_window(rng) if whole else random_window(rng)
        layer = DepthwiseConv("dw", (-1,), (*window.in_hw, c),
                              acc_fmt=acc_format(w_fmt, in_fmt, window.size),
                              weights=random_codes(rng, w_fmt, (window.size, c)),
                              in_fmt=in_fmt, w_fmt=w_fmt, window=window)
        x = random_codes(rng, in_fmt, (3, *window.in_hw, c))
        if requant:
            layer.requant = random_thresholds(rng, layer.golden(x), Int(4, signed=True))
        run_map_unit(DepthwiseUnit(layer, simd), layer, x, in_fmt, simd, seed)


def test_pool_units_are_bit_exact():
    cases = [("max", "int4"), ("max", "float6_e2m3fn"), ("max", "uint3"), ("sum", "int4"),
             ("sum", "float4_e2m1fn"), ("global", "uint4")]
    for seed, (kind, name) in enumerate(cases):
        rng = np.random.default_rng(30 + seed)
        fmt = parse_format(name)
        if kind == "max":
            window, c, simd = random_window(rng, pad_value=int(fmt.grid().lo))
            layer = MaxPool("max", (-1,), (*window.in_hw, c), fmt=fmt, window=window)
        else:
            window, c, simd = global_window(rng) if kind == "global" else random_window(rng)
            layer = SumPool("sum", (-1,), (*window.in_hw, c), in_fmt=fmt, window=window,
                            acc_fmt=acc_format(None, fmt, window.size))
        x = random_codes(rng, fmt, (3, *window.in_hw, c))
        if kind != "max":
            layer.requant = random_thresholds(rng, layer.golden(x), Int(3, signed=False))
        run_map_unit(PoolUnit(layer, simd), layer, x, fmt, simd, seed)


# -- pointwise: thresholds and residual add -----------------------------------------------

def test_threshold_and_add_units_are_bit_exact():
    cases = [("int5", None, 1, 1, True), ("float6_e2m3fn", None, 1, 1, True),
             ("int4", "uint3", 3, 2, True), ("uint4", "int4", 1, -4, False)]
    for seed, (a_name, b_name, ka, kb, requant) in enumerate(cases):
        rng = np.random.default_rng(40 + seed)
        shape = (int(rng.integers(1, 4)), 3, 4)
        simd = int(rng.choice([1, 2, 4]))
        fa = parse_format(a_name)
        a = random_codes(rng, fa, (3, *shape))
        if b_name is None:
            grid = fa.grid()
            layer = Thresholding("req", (-1,), shape, in_fmt=fa,
                                 acc_fmt=Int.spanning(grid.lo, grid.hi))
            streams, dut_of = {"i": to_beats(a, fa, simd)}, ThresholdUnit
            args: tuple[np.ndarray, ...] = (a,)
        else:
            fb = parse_format(b_name)
            b = random_codes(rng, fb, (3, *shape))
            bounds = [ka * ga + kb * gb for ga in (fa.grid().lo, fa.grid().hi)
                      for gb in (fb.grid().lo, fb.grid().hi)]
            layer = AddStreams("add", (-1, -1), shape, in_fmts=(fa, fb), multipliers=(ka, kb),
                               acc_fmt=Int.spanning(min(bounds), max(bounds)))
            streams = {"a": to_beats(a, fa, simd), "b": to_beats(b, fb, simd)}
            dut_of, args = AddUnit, (a, b)
        if requant:
            layer.requant = random_thresholds(rng, layer.golden(*args), Int(3, signed=True))
        expected = layer.golden(*args).reshape(-1)
        out = simulate(dut_of(layer, simd), streams, {"o": expected.size // simd}, seed=seed)
        got = from_beats(beats(out["o"]), layer.out_fmt, simd)
        np.testing.assert_array_equal(got, expected, err_msg=f"{layer.kind} {a_name} {b_name}")


@pytest.mark.parametrize("simd", [1, 2, 4])
def test_add_unit_with_per_channel_terms_and_relu_is_bit_exact(simd):
    """A float island's join: multipliers and a bias that differ per channel (a ROM read
    with the beat), a ReLU, and either the wide accumulator out or thresholds."""
    rng = np.random.default_rng(70 + simd)
    shape = (2, 3, 8)
    fa, fb = Int(8, signed=False), Int(12, signed=True)
    ka = tuple(int(v) for v in rng.integers(-2**20, 2**20, 8))
    kb = 1 << 5
    bias = tuple(int(v) for v in rng.integers(-2**26, 2**26, 8))
    bound = 255 * 2**20 + 2**11 * 2**5 + 2**26
    a, b = random_codes(rng, fa, (3, *shape)), random_codes(rng, fb, (3, *shape))
    for requant in (False, True):
        layer = AddStreams("add", (-1, -1), shape, in_fmts=(fa, fb), multipliers=(ka, kb),
                           bias=bias, relu=True, acc_fmt=Int.spanning(-bound, bound))
        if requant:
            layer.requant = random_thresholds(rng, layer.golden(a, b), Int(4, signed=False))
        expected = layer.golden(a, b).reshape(-1)
        assert (expected == 0).any() and (expected > 0).any()
        out = simulate(AddUnit(layer, simd), {"a": to_beats(a, fa, simd),
                                              "b": to_beats(b, fb, simd)},
                       {"o": expected.size // simd}, seed=simd)
        got = from_beats(beats(out["o"]), layer.out_fmt, simd)
        np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("simd", [1, 2, 4])
def test_channel_scale_unit_is_bit_exact(simd):
    """A map times one value per channel and frame (the vector first, then the map), with
    zero points, several frames, raw and requantized."""
    from bitloom.hw.channel_scale import ChannelScaleUnit
    from bitloom.ir import ChannelScale

    rng = np.random.default_rng(90 + simd)
    shape, frames = (3, 2, 8), 3
    fx, fs = Int(5, signed=True), Int(8, signed=False)
    x, v = random_codes(rng, fx, (frames, *shape)), random_codes(rng, fs, (frames, 8))
    zx, zs = -3, 128
    ends = [(a - zx) * (b - zs) for a in (-16, 15) for b in (0, 255)]
    for requant in (False, True):
        layer = ChannelScale("scale", (-1, -1), shape, in_fmts=(fx, fs), zero_points=(zx, zs),
                             acc_fmt=Int.spanning(min(ends), max(ends)))
        if requant:
            layer.requant = random_thresholds(rng, layer.golden(x, v), Int(4, signed=False))
        expected = layer.golden(x, v).reshape(-1)
        out = simulate(ChannelScaleUnit(layer, simd), {"x": to_beats(x, fx, simd),
                                                       "s": to_beats(v, fs, simd)},
                       {"o": expected.size // simd}, seed=simd)
        got = from_beats(beats(out["o"]), layer.out_fmt, simd)
        np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("split", [False, True])
@pytest.mark.parametrize("in_name", ["uint4", "int4", "uint1"])
def test_threshold_unit_meets_tables_that_reach_past_the_accumulator(monkeypatch, in_name,
                                                                     split):
    """Saturating tables hold ``hi + 1`` (a level never met) and ``lo - 1`` (always met). A
    uint4 accumulator's ``hi + 1 = 16`` was read back as a signed 5-bit -16, so every
    'never' level counted as met (a Brevitas residual block's shared quantizer). ``split``:
    one ROM per lane, as tables too wide for one ROM word are built (an E4M3 MLP's 253
    levels of 48-bit thresholds on 12 lanes stopped Amaranth at 2**16 bits)."""
    if split:
        monkeypatch.setattr(thresholds, "MAX_WORD_BITS", 100)
    fmt = parse_format(in_name)
    grid = fmt.grid()
    lo, hi = int(grid.lo), int(grid.hi)
    levels = fmt.grid_levels()
    x = np.tile(levels, 4).reshape(1, 1, -1, 2)  # every code, on both channels
    shape = x.shape[1:]
    out_fmt = Int(4, signed=False)
    rising = np.linspace(lo, hi + 1, 15).round().astype(np.int64)  # ends at 'never'
    falling = np.linspace(lo - 1, hi, 15).round().astype(np.int64)  # starts at 'always'
    layer = Thresholding("req", (-1,), shape, in_fmt=fmt, acc_fmt=Int.spanning(lo, hi))
    layer.requant = Thresholds(np.stack([np.sort(rising), np.sort(falling)]),
                               np.array([True, False]), out_fmt)
    expected = layer.golden(x).reshape(-1)
    out = simulate(ThresholdUnit(layer, 2), {"i": to_beats(x, fmt, 2)},
                   {"o": expected.size // 2}, seed=3)
    np.testing.assert_array_equal(from_beats(beats(out["o"]), out_fmt, 2), expected)


# -- branches: concat and fan-out ---------------------------------------------------------

def test_concat_interleaves_channels_per_pixel():
    rng = np.random.default_rng(50)
    fmt = Int(4, signed=True)
    channels, simd = (2, 4, 2), 2
    xs = [random_codes(rng, fmt, (3, 3, 4, c)) for c in channels]
    layer = Concat("cat", (0, 1, 2), (3, 4, 2), fmt=fmt, channels=channels)
    expected = layer.golden(*xs).reshape(-1)
    out = simulate(ConcatUnit(layer, simd),
                   {f"i{k}": to_beats(x, fmt, simd) for k, x in enumerate(xs)},
                   {"o": expected.size // simd}, seed=50)
    np.testing.assert_array_equal(from_beats(beats(out["o"]), fmt, simd), expected)


def test_duplicate_delivers_every_beat_to_every_output():
    data = [random.Random(7).randrange(256) for _ in range(60)]
    out = simulate(Duplicate(8, 3), {"i": data}, {f"o{k}": len(data) for k in range(3)},
                   seed=60, pause=0.5)
    for k in range(3):
        assert beats(out[f"o{k}"]) == data


# -- a residual block: fan-out, conv branch, skip FIFO, add --------------------------------

class Residual(wiring.Component):
    """``x -> Duplicate -> (conv, FIFO) -> add``: the skip FIFO holds what the conv lags."""

    def __init__(self, conv: MatrixVector, add: AddStreams, fold: Folding, skip_depth: int):
        self.conv = ConvolutionUnit(conv, fold)
        self.add = AddUnit(add, fold.simd)
        self.skip_depth = skip_depth
        super().__init__({"i": In(self.conv.i.signature.flip()),
                          "o": Out(self.add.o.signature)})

    def elaborate(self, platform) -> Module:
        m = Module()
        width = len(self.i.payload)
        m.submodules.dup = dup = Duplicate(width, 2)
        m.submodules.skip = skip = StreamFifo(width, self.skip_depth)
        m.submodules.conv, m.submodules.add = self.conv, self.add
        wiring.connect(m, wiring.flipped(self.i), dup.i)
        wiring.connect(m, dup.o0, self.conv.i)
        wiring.connect(m, dup.o1, skip.i)
        wiring.connect(m, self.conv.o, self.add.a)
        wiring.connect(m, skip.o, self.add.b)
        wiring.connect(m, self.add.o, wiring.flipped(self.o))
        return m


def test_residual_block_runs_with_the_documented_skip_fifo_and_stalls_without():
    rng = np.random.default_rng(70)
    fmt, c = Int(4, signed=True), 2
    window = Window((5, 5), (3, 3), pads=(1, 1, 1, 1))
    conv = MatrixVector("conv", (-1,), (5, 5, c), acc_fmt=acc_format(fmt, fmt, 9 * c),
                        weights=random_codes(rng, fmt, (9 * c, c)), in_fmt=fmt, w_fmt=fmt,
                        window=window)
    x = random_codes(rng, fmt, (3, 5, 5, c))
    conv.requant = random_thresholds(rng, conv.golden(x), fmt)
    add = AddStreams("add", (0, -1), (5, 5, c), in_fmts=(fmt, fmt), multipliers=(1, 1),
                     acc_fmt=Int(5, signed=True))
    add.requant = random_thresholds(rng, add.golden(conv.golden(x), x), fmt)
    expected = add.golden(conv.golden(x), x).reshape(-1)
    fold = Folding(pe=c, simd=c)
    lag = window.lag_pixels  # one beat per pixel here
    assert lag == 5 + 2
    inputs = {"i": to_beats(x, fmt, c)}
    out = simulate(Residual(conv, add, fold, lag + 4 + 5), inputs, {"o": expected.size // c},
                   seed=70)
    np.testing.assert_array_equal(from_beats(beats(out["o"]), fmt, c), expected)
    stalled = Residual(conv, add, fold, 2)
    with pytest.raises(AssertionError, match="0 of"):
        simulate(stalled, inputs, {"o": expected.size // c}, seed=70, max_cycles=500)


def test_decoupling_fifo_sustains_one_beat_per_cycle():
    """The planner's smallest FIFO keeps up with a producer and consumer that never pause
    (a 2-beat buffered FIFO moved every other beat: a residual block ran at 1,024 cycles per
    frame against 576 planned, issue 15)."""
    data = list(range(200))
    out = simulate(StreamFifo(8, DECOUPLE), {"i": data}, {"o": len(data)}, seed=1, pause=0.0)
    cycles = [c for c, _ in out["o"]]
    assert beats(out["o"]) == data
    assert cycles[-1] - cycles[0] == len(data) - 1
