"""A dot-product unit as a component: PE weight rows, shared SIMD activation lanes, and a
chosen pipeline depth -- what layers instantiate and ``bitloom bench pe`` measures."""

from __future__ import annotations

from amaranth import Module, Signal, signed, unsigned
from amaranth.hdl import Shape, Value
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from bitloom.formats import Format, Int, accumulator_grid
from bitloom.hw.pe.dot import dot_products
from bitloom.hw.pe.stages import Stages, spread


def sum_shape(w_fmt: Format, a_fmt: Format, lanes: int) -> Shape:
    """Register shape holding any ``lanes``-term dot product exactly (grid integers)."""
    grid = accumulator_grid(w_fmt, a_fmt, lanes)
    fmt = Int.spanning(grid.lo, grid.hi)
    return signed(fmt.bits) if fmt.signed else unsigned(fmt.bits)


class DotProductUnit(wiring.Component):
    """``dot[p] = sum_i w[p][i] * a[i]`` exactly, ``latency`` cycles after the inputs.

    ``w`` holds ``pes`` rows of ``simd`` codes (PE 0 lowest), ``a`` the ``simd`` shared
    activation codes. ``pipeline`` registers are spread over the products and adder rows;
    ``dsp`` packs the integer products of several PEs into each DSP multiplier of that family.
    """

    def __init__(self, w_fmt: Format, a_fmt: Format, simd: int, pes: int = 1,
                 dsp: str | None = None, pipeline: int = 0) -> None:
        self.w_fmt, self.a_fmt, self.simd, self.pes = w_fmt, a_fmt, simd, pes
        self.dsp, self.pipeline = dsp, pipeline
        self.shape = sum_shape(w_fmt, a_fmt, simd)
        counting = Stages()  # a dry run counts the levels the registers can go after
        self._products(Signal(pes * simd * w_fmt.bits), Signal(simd * a_fmt.bits), counting)
        self.levels = counting.deepest + 1
        self.stage_levels = spread(pipeline, self.levels)
        super().__init__({
            "w": In(pes * simd * w_fmt.bits), "a": In(simd * a_fmt.bits),
            "dot": Out(pes * self.shape.width),
        })

    @property
    def latency(self) -> int:
        return self.pipeline

    def result(self, pe: int) -> Value:
        """PE ``pe``'s dot product out of the flat ``dot`` port (flat, not an array layout:
        Yosys's ABC pass trips over the ``dot[0]`` wire names a view would create)."""
        word = self.dot.word_select(pe, self.shape.width)
        return word.as_signed() if self.shape.signed else word

    def _products(self, w: Signal, a: Signal, stages: Stages) -> list:
        bits, simd = self.w_fmt.bits, self.simd
        rows = [[w.word_select(p * simd + i, bits) for i in range(simd)]
                for p in range(self.pes)]
        xs = [a.word_select(i, self.a_fmt.bits) for i in range(simd)]
        return dot_products(rows, xs, self.w_fmt, self.a_fmt, self.dsp, stages)

    def elaborate(self, platform) -> Module:
        m = Module()
        dots = self._products(self.w, self.a, Stages(m, self.stage_levels))
        for p, dot in enumerate(dots):
            m.d.comb += self.dot.word_select(p, self.shape.width).eq(dot)
        return m
