"""The sliding-window generator: a feature map in, every window of it out (im2col).

Why: a convolution is a matrix-vector product per output pixel over the window's
``KH*KW*C`` elements, and pooling/depthwise layers reduce over the window's taps; one
generator feeds all of them, reading every input element once from the stream and
re-reading it from line buffers ``KH*KW/stride**2`` times.

Stream orders (``simd`` channels per beat, element 0 lowest; ``simd`` divides ``C``):

- in: the ``(H, W, C)`` map, pixels in raster order, channels fastest;
- out, ``order="conv"``: for each output pixel (raster order), taps in kernel-row,
  kernel-column order, each tap's ``C/simd`` channel chunks: the im2col row
  :class:`~bitloom.ir.MatrixVector` multiplies (``K = KH*KW*C``);
- out, ``order="depthwise"``: for each output pixel, for each channel chunk, its
  ``KH*KW`` taps: a consumer reducing over taps needs only ``simd`` accumulators.

Padding taps carry the code of the window's ``pad_value``; they read no memory.

Buffer: a circular buffer of ``D = (R + sh - 1) * W`` pixels (``R`` = the dilated kernel
height ``dh*(KH-1)+1``; ``R`` rows at stride 1), more than the map itself when the map is
small, so the next frame's first pixels can come in while the last windows of a frame go
out (a buffer of just the map made two padded convolutions on a 2x2 map wait for each
other), in one
:class:`~amaranth.lib.memory.Memory` of ``D * C/simd`` beats. Input pixel ``n`` (counted
from the start of the frame the reader is in, across frame ends) is written once pixel
``n - D`` is no longer needed: ``n - D < F``, ``F`` a lower bound on the first pixel the
current output pixel or any later one reads; a tap is read once its pixel has been written. Every
window spans fewer than ``D`` pixels from ``F``, so the two can never wait on each other
(no deadlock), and the writer runs up to a full output row ahead of the reader (the extra
``sh - 1`` rows), so at one output beat per cycle the reader stalls only at row starts
where the previous row's last window overlaps the next row's first (a few beats).

Schedule: one output beat per cycle when the consumer is ready and the data is there; an
image takes ``OH*OW*KH*KW*C/simd`` output cycles plus small stalls. Latency: one cycle
from a tap's availability to its beat on ``o`` (registered memory read).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from amaranth import Array, Const, Module, Mux, Signal, unsigned
from amaranth.hdl import Value
from amaranth.lib import memory, stream, wiring
from amaranth.lib.wiring import In, Out

from bitloom.formats import Format
from bitloom.formats.bits import pack
from bitloom.hw.glue import ULTRA_ATTRS
from bitloom.ir import Window

ORDERS = ("conv", "depthwise")


def nested_counters(m: Module, counters: Sequence[tuple[Signal, int]], step: Value) -> Value:
    """Advance ``(counter, count)`` pairs, innermost first, by one on ``step``.

    Returns "every counter at its last value" (the step that closes the outermost loop).
    """
    carry: Value = Const(1, 1)
    for counter, count in counters:
        last = counter == count - 1
        with m.If(step & carry):
            m.d.sync += counter.eq(Mux(last, 0, counter + 1))
        carry = carry & last
    return carry


def wrap_add(value: Value, constant: int, modulus: int) -> Value:
    """``(value + constant) mod modulus`` for ``0 <= value < modulus`` (any int constant)."""
    c = constant % modulus
    total = value + c
    return Mux(total >= modulus, total - modulus, total)


def pad_code(window: Window, fmt: Format) -> int:
    """The code of the window's padding value in ``fmt`` (0 where nothing is padded: a
    bipolar format has no code for the real zero an unpadded window never reads)."""
    if not any(window.pads):
        return 0
    return int(fmt.encode(fmt.from_grid(np.array([window.pad_value])))[0])


class SlidingWindow(wiring.Component):
    """Streams the windows of ``(H, W, C)`` maps, ``simd`` channels per beat (see module)."""

    def __init__(self, window: Window, channels: int, simd: int, fmt: Format,
                 order: str = "conv", ultra: bool = False) -> None:
        if channels % simd:
            raise ValueError(f"SIMD {simd} must divide the {channels} channels of a window")
        if order not in ORDERS:
            raise ValueError(f"unknown window order {order!r}; known: {', '.join(ORDERS)}")
        self.window, self.channels, self.simd, self.fmt, self.order = \
            window, channels, simd, fmt, order
        self.ultra = ultra  # the line buffer in UltraRAM
        self.chunks = channels // simd
        rows = window.dilation[0] * (window.kernel[0] - 1) + 1
        self.depth_pixels = (rows + window.stride[0] - 1) * window.in_hw[1]
        beat = unsigned(simd * fmt.bits)
        super().__init__({"i": In(stream.Signature(beat)), "o": Out(stream.Signature(beat))})

    @property
    def beats_per_window(self) -> int:
        return self.window.size * self.chunks

    @property
    def cycles_per_frame(self) -> int:
        """Output beats (one per cycle at best) per input map."""
        return int(np.prod(self.window.out_hw)) * self.beats_per_window

    def elaborate(self, platform) -> Module:
        m = Module()
        win, cb_n, depth = self.window, self.chunks, self.depth_pixels
        (h, w), (kh, kw), (sh, sw), (dh, dw) = win.in_hw, win.kernel, win.stride, win.dilation
        top, left = win.pads[:2]
        oh, ow = win.out_hw
        hw = h * w
        # generous signed range for pixel indices relative to the reader's frame
        span = 4 * (h + sum(win.pads) + dh * kh + sh) * (w + sum(win.pads) + dw * kw + sw)

        m.submodules.lines = mem = memory.Memory(
            shape=unsigned(len(self.i.payload)), depth=depth * cb_n, init=[],
            attrs=ULTRA_ATTRS if self.ultra else {})
        rd, wr = mem.read_port(), mem.write_port()

        en = Signal()  # the read stage advances when the output register can move
        m.d.comb += en.eq(~self.o.valid | self.o.ready)

        # -- reader state: output pixel, its top-left tap, the tap counters -----------------
        ox = Signal(range(ow))
        y0 = Signal(range(-top - 1, oh * sh + 1), init=-top)
        x0 = Signal(range(-left - 1, ow * sw + 1), init=-left)
        row_lin = Signal(range(-span, span), init=-top * w)  # y0 * W
        origin = Signal(range(depth), init=(-top * w - left) % depth)  # address of (y0, x0)
        row_origin = Signal(range(depth), init=(-top * w - left) % depth)
        base = Signal(range(depth))  # address of pixel 0 of the reader's frame
        kr, kc, cb = Signal(range(kh)), Signal(range(kw)), Signal(range(cb_n))
        loops = [(cb, cb_n), (kc, kw), (kr, kh)] if self.order == "conv" else \
            [(kc, kw), (kr, kh), (cb, cb_n)]

        # -- writer state ---------------------------------------------------------------------
        pw = Signal(range(-span, span))  # pixel being written, relative to the reader's frame
        wcb = Signal(range(cb_n))
        waddr = Signal(range(depth * cb_n))

        # -- the tap under the reader ----------------------------------------------------------
        y = y0 + kr * dh
        x = x0 + kc * dw
        inside = (y >= 0) & (y < h) & (x >= 0) & (x < w)
        tap_lin = row_lin + x0 + kr * (dh * w) + kc * dw
        offsets = Array(Array(Const((r * dh * w + c * dw) % depth, range(depth))
                              for c in range(kw)) for r in range(kh))
        pixel_addr = origin + offsets[kr][kc]
        pixel_addr = Mux(pixel_addr >= depth, pixel_addr - depth, pixel_addr)
        # the first pixel any current or later window reads (a lower bound, never decreasing):
        # above the map, the next output row may still start at pixel 0; right of it, the
        # next row; below it, the next frame
        in_row = row_lin + Mux(x0 < 0, 0, Mux(x0 > w, w, x0))
        first_needed = Mux(y0 < 0, 0, Mux(in_row > hw, hw, in_row))

        issue = Signal()
        m.d.comb += [
            issue.eq(en & (~inside | (tap_lin < pw))),
            rd.addr.eq(pixel_addr * cb_n + cb),
            rd.en.eq(en),
        ]
        pad_r = Signal()
        with m.If(en):
            m.d.sync += [self.o.valid.eq(issue), pad_r.eq(~inside)]
        pad_word = pack(np.full(self.simd, pad_code(win, self.fmt)), self.fmt.bits)
        m.d.comb += self.o.payload.eq(Mux(pad_r, pad_word, rd.data))

        window_done = issue & nested_counters(m, loops, issue)
        row_done = ox == ow - 1
        frame_done = window_done & row_done & (y0 == (oh - 1) * sh - top)
        next_base = wrap_add(base, hw, depth)
        with m.If(window_done):
            with m.If(~row_done):
                m.d.sync += [ox.eq(ox + 1), x0.eq(x0 + sw), origin.eq(wrap_add(origin, sw, depth))]
            with m.Elif(~frame_done):
                m.d.sync += [
                    ox.eq(0), x0.eq(-left), y0.eq(y0 + sh), row_lin.eq(row_lin + sh * w),
                    origin.eq(wrap_add(row_origin, sh * w, depth)),
                    row_origin.eq(wrap_add(row_origin, sh * w, depth)),
                ]
            with m.Else():
                m.d.sync += [
                    ox.eq(0), x0.eq(-left), y0.eq(-top), row_lin.eq(-top * w),
                    base.eq(next_base),
                    origin.eq(wrap_add(next_base, -top * w - left, depth)),
                    row_origin.eq(wrap_add(next_base, -top * w - left, depth)),
                ]

        # -- writer: pixel n overwrites pixel n - D once the reader is past it ---------------
        m.d.comb += [
            self.i.ready.eq(pw < first_needed + depth),
            wr.addr.eq(waddr), wr.data.eq(self.i.payload),
            wr.en.eq(self.i.valid & self.i.ready),
        ]
        pixel_written = Signal()
        m.d.comb += pixel_written.eq(wr.en & (wcb == cb_n - 1))
        with m.If(wr.en):
            m.d.sync += [
                wcb.eq(Mux(wcb == cb_n - 1, 0, wcb + 1)),
                waddr.eq(Mux(waddr == depth * cb_n - 1, 0, waddr + 1)),
            ]
        m.d.sync += pw.eq(pw + pixel_written - Mux(frame_done, hw, 0))
        return m
