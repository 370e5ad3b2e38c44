"""Per-channel reductions over windows: depthwise convolution, max pooling, sum pooling.

Why one implementation: the three layers differ only in what a tap contributes (a weighted
value, the value, the larger of two codes) and whether thresholds follow; the windows, the
``simd`` lane-parallel accumulators and the schedule are the same.

Input: the ``(H, W, C)`` map, ``simd`` channels per beat. A
:class:`~bitloom.hw.window.SlidingWindow` in depthwise order feeds the reducer, per output
pixel and channel chunk the ``KH*KW`` taps in a row, so ``simd`` accumulators suffice.
When the window is the whole map (global pooling: kernel = ``(H, W)``, no padding) there is
no window generator and no line buffer: the map streams straight in and one accumulator
per channel (``C/simd`` words of a small memory) sums/maxes over all pixels.

Output: the ``(OH, OW, C)`` map, ``simd`` channels per beat.

Schedule: one input beat per cycle; an image takes ``OH*OW*KH*KW*C/simd`` cycles
(``H*W*C/simd`` for a global window), one output beat per window and chunk. Pipeline:
issue (counters, weight ROM address) -> accumulate -> requantize/select -> output register
(latency 3, plus 1 in the window generator). Depthwise weights come from a ROM or, streamed,
from the ``w`` port: one word of ``simd`` weights per input beat, in issue order, again for
every output pixel (see :mod:`bitloom.hw.weights`).

Max pooling compares decoded grid values (:func:`~bitloom.hw.pe.element_value`), so it
is exact for every format the datapath decodes (integers, bipolar, minifloats), and outputs
the winning code itself.
"""

from __future__ import annotations

import numpy as np
from amaranth import Array, Cat, Const, Module, Mux, Signal, unsigned
from amaranth.hdl import Value
from amaranth.lib import memory, stream, wiring
from amaranth.lib.wiring import In, Out

from bitloom.formats import Format, Int
from bitloom.hw.pe import dot_product, element_value
from bitloom.hw.pe.stages import Stages
from bitloom.hw.thresholds import drive_output, out_bits, requantize
from bitloom.hw.weights import pack_rows, unpack_rows, weight_codes, weight_source
from bitloom.hw.window import SlidingWindow, nested_counters
from bitloom.ir import DepthwiseConv, MaxPool, SumPool, Thresholds, Window
from bitloom.plan.memory import STREAMED, tap_weight_geometry


def issue_order(window: Window) -> list[str]:
    """The issue counters, innermost first: per pixel the taps of each channel chunk, or
    (global window) the chunks of each pixel."""
    return ["chunk", "tap"] if window.is_global else ["tap", "chunk"]


def _step_axes(window: Window) -> list[int]:
    return [("tap", "chunk").index(n) for n in reversed(issue_order(window))]


def tap_weight_words(name: str, weights: np.ndarray, window: Window, simd: int,
                     w_fmt: Format) -> list[int]:
    """Per-channel weights ``(taps, C)`` as memory words in issue order: one word of
    ``simd`` weights per (tap, chunk)."""
    codes = weight_codes(name, weights, w_fmt).reshape(window.size, -1)
    blocks = codes.reshape(window.size, codes.shape[1] // simd, simd)
    steps = np.transpose(blocks, [*_step_axes(window), 2])
    return pack_rows(name, steps.reshape(-1, simd), w_fmt.bits)


def unpack_tap_weight_words(words: list[int], window: Window, channels: int, simd: int,
                            w_fmt: Format) -> np.ndarray:
    """The inverse of :func:`tap_weight_words`: words -> ``(taps, C)`` weight codes."""
    rows = unpack_rows(words, w_fmt.bits, simd)
    axes = _step_axes(window)
    shape = [(window.size, channels // simd)[a] for a in axes]
    blocks = np.transpose(rows.reshape(*shape, simd), [*np.argsort(axes), 2])
    return blocks.reshape(window.size, channels)


class TapReducer(wiring.Component):
    """Reduces every window's taps per channel: ``max``, or a sum of (weighted) values
    followed by thresholds; the parameterized core of :class:`DepthwiseUnit` and
    :class:`PoolUnit`."""

    def __init__(self, window: Window, channels: int, simd: int, in_fmt: Format, *,
                 maximum: bool = False, weights: np.ndarray | None = None,
                 w_fmt: Format | None = None, acc_fmt: Int | None = None,
                 requant: Thresholds | None = None, name: str = "",
                 style: str = "lutram", sum_fmt: Int | None = None,
                 position_weights: tuple[tuple[int, ...], tuple[int, ...]] = ((), ()),
                 offset: int = 0, ultra: bool = False) -> None:
        if channels % simd:
            raise ValueError(f"SIMD {simd} must divide the {channels} channels")
        self.window, self.channels, self.simd, self.in_fmt = window, channels, simd, in_fmt
        self.maximum, self.weights, self.w_fmt = maximum, weights, w_fmt
        self.acc_fmt, self.requant = acc_fmt, requant
        self.sum_fmt = sum_fmt or acc_fmt  # the window sum, before any position weight
        self.position_weights, self.offset = position_weights, offset
        self.name, self.style, self.ultra = name, style, ultra
        self.chunks = channels // simd
        self.glob = window.is_global
        self.steps, self.weight_bits, _ = tap_weight_geometry(
            window, channels, simd, w_fmt.bits if w_fmt is not None else 0)
        elem = in_fmt.bits if maximum else out_bits(requant, acc_fmt)
        members = {
            "i": In(stream.Signature(unsigned(simd * in_fmt.bits))),
            "o": Out(stream.Signature(unsigned(simd * elem))),
        }
        if weights is not None and style == STREAMED:
            members["w"] = In(stream.Signature(unsigned(self.weight_bits)))
        super().__init__(members)

    @property
    def cycles_per_frame(self) -> int:
        """Input beats of the reducer per image (one per cycle)."""
        return int(np.prod(self.window.out_hw)) * self.window.size * self.chunks

    @property
    def inner_first(self) -> list[str]:
        return issue_order(self.window)

    @property
    def weight_words(self) -> list[int]:
        return tap_weight_words(self.name, self.weights, self.window, self.simd, self.w_fmt)

    def elaborate(self, platform) -> Module:
        m = Module()
        simd, cb_n, taps = self.simd, self.chunks, self.window.size
        in_bits = self.in_fmt.bits
        if self.glob:  # pixels in raster order are the taps, chunks interleave
            src = self.i
            groups = cb_n
        else:
            m.submodules.window = gen = SlidingWindow(self.window, self.channels, simd,
                                                      self.in_fmt, order="depthwise",
                                                      ultra=self.ultra)
            wiring.connect(m, wiring.flipped(self.i), gen.i)
            src = gen.o
            groups = 1

        en = Signal()  # the whole pipeline advances together
        m.d.comb += en.eq(~self.o.valid | self.o.ready)
        take = Signal()
        streamed = self.weights is not None and self.style == STREAMED
        w_ok = self.w.valid if streamed else 1  # a streamed weight is here
        m.d.comb += [src.ready.eq(en & w_ok), take.eq(en & src.valid & w_ok)]

        # -- issue ------------------------------------------------------------------------
        tap, cb = Signal(range(taps)), Signal(range(cb_n))
        counters = {"tap": (tap, taps), "chunk": (cb, cb_n)}
        nested_counters(m, [counters[n] for n in self.inner_first], take)
        a_valid, a_first, a_last = Signal(), Signal(), Signal()
        a_cb = Signal(range(cb_n))
        a_x = Signal(len(src.payload))
        with m.If(en):
            m.d.sync += [a_valid.eq(take), a_first.eq(tap == 0), a_last.eq(tap == taps - 1),
                         a_cb.eq(cb), a_x.eq(src.payload)]
        if self.weights is not None:
            step = Signal(range(taps * cb_n))
            with m.If(take):
                m.d.sync += step.eq(Mux(step == taps * cb_n - 1, 0, step + 1))
            w_word = weight_source(m, self.name, self, self.weight_words, step, en, take)

        # -- accumulate: one word of simd lanes per group ----------------------------------
        acc_bits = in_bits if self.maximum else self.sum_fmt.bits
        m.submodules.accs = amem = memory.Memory(
            shape=unsigned(simd * acc_bits), depth=groups, init=[])
        a_rd = amem.read_port(domain="comb")
        b_rd = amem.read_port(domain="comb")
        acc_wr = amem.write_port()
        b_valid = Signal()
        b_cb = Signal(range(cb_n))
        a_group = a_cb if self.glob else 0
        with m.If(en):
            m.d.sync += [b_valid.eq(a_valid & a_last), b_cb.eq(a_cb)]
        lanes = []
        for s in range(simd):
            x = a_x.word_select(s, in_bits)
            old = a_rd.data.word_select(s, acc_bits)
            if self.maximum:
                keep = ~a_first & (element_value(x, self.in_fmt)
                                   <= element_value(old, self.in_fmt))
                lanes.append(Mux(keep, old, x))
                continue
            if self.weights is None:
                term = element_value(x, self.in_fmt)
            else:
                w = w_word.word_select(s, self.w_fmt.bits)
                term = dot_product([w], [x], self.w_fmt, self.in_fmt, stages=Stages(m))
            lanes.append((Mux(a_first, 0, self._acc_value(old)) + term)[:acc_bits])
        m.d.comb += [
            a_rd.addr.eq(a_group), acc_wr.addr.eq(a_group),
            acc_wr.data.eq(Cat(*lanes)), acc_wr.en.eq(en & a_valid),
            b_rd.addr.eq(b_cb if self.glob else 0),
        ]

        # -- requantize (or pass the maximum's code) into the output register ---------------
        if self.maximum:
            result, r_valid = b_rd.data, b_valid
        else:
            values = [self._acc_value(b_rd.data.word_select(s, acc_bits)) for s in range(simd)]
            if self.position_weights[0]:
                weight = self._position_weight(m, en & b_valid & (b_cb == cb_n - 1))
                values = [(v - self.offset) * weight for v in values]
            result, r_valid = requantize(m, "thresholds", values, self.requant, self.acc_fmt,
                                         a_cb, en, b_valid)
        drive_output(m, self.o, en, result, r_valid)
        return m

    def _acc_value(self, word: Value) -> Value:
        return word.as_signed() if self.sum_fmt.signed else word

    def _position_weight(self, m: Module, window_done: Value) -> Value:
        """The weight of the output pixel whose windows leave now: row weight times column
        weight, from counters that advance after a pixel's last channel chunk."""
        rows, cols = self.position_weights
        oh, ow = Signal(range(len(rows)), name="out_row"), Signal(range(len(cols)),
                                                                 name="out_col")
        with m.If(window_done):
            m.d.sync += ow.eq(Mux(ow == len(cols) - 1, 0, ow + 1))
            with m.If(ow == len(cols) - 1):
                m.d.sync += oh.eq(Mux(oh == len(rows) - 1, 0, oh + 1))
        row_weight = Array(Const(r, range(max(rows) + 1)) for r in rows)[oh]
        col_weight = Array(Const(c, range(max(cols) + 1)) for c in cols)[ow]
        weight = Signal(range(max(rows) * max(cols) + 1), name="position_weight")
        m.d.comb += weight.eq(row_weight * col_weight)
        return weight


class DepthwiseUnit(TapReducer):
    """DepthwiseConv: per channel, the window's taps times that channel's kernel, summed,
    then thresholds (or the raw accumulator)."""

    def __init__(self, layer: DepthwiseConv, simd: int, style: str = "lutram",
                 ultra: bool = False) -> None:
        self.layer = layer
        super().__init__(layer.window, layer.channels, simd, layer.in_fmt,
                         weights=layer.weights, w_fmt=layer.w_fmt, acc_fmt=layer.acc_fmt,
                         requant=layer.requant, name=layer.name, style=style, ultra=ultra)


class PoolUnit(TapReducer):
    """MaxPool (the largest value's code) or SumPool (the sum, then thresholds; average and
    global average pooling, the division being part of the thresholds). A SumPool that
    divides by the count of real pixels weights each output pixel's sum by its position
    (:class:`~bitloom.ir.SumPool`): a row and a column weight from two small constant
    tables, one multiplier per lane."""

    def __init__(self, layer: MaxPool | SumPool, simd: int, ultra: bool = False) -> None:
        self.layer = layer
        if isinstance(layer, MaxPool):
            super().__init__(layer.window, layer.in_shape[-1], simd, layer.fmt, maximum=True,
                             ultra=ultra)
        else:
            super().__init__(layer.window, layer.in_shape[-1], simd, layer.in_fmt,
                             acc_fmt=layer.acc_fmt, requant=layer.requant,
                             sum_fmt=layer.sum_fmt,
                             position_weights=(layer.row_weights, layer.col_weights),
                             offset=layer.offset, ultra=ultra)
