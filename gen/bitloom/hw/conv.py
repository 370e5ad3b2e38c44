"""A convolution as one streaming unit: sliding window -> matrix-vector unit.

Why: the core wires every layer from its producer's map stream; a convolution's MVU needs
the im2col frames instead, and the window generator must match the MVU's SIMD.
"""

from __future__ import annotations

from amaranth import Module, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from bitloom.hw.mvu import MatrixVectorUnit
from bitloom.hw.window import SlidingWindow
from bitloom.ir import MatrixVector
from bitloom.plan.fold import Folding
from bitloom.plan.memory import STREAMED


class ConvolutionUnit(wiring.Component):
    """``MatrixVector(window=...)``: in the ``(H, W, C)`` map at ``fold.simd`` channels per
    beat, out the ``(OH, OW, N)`` map at ``fold.pe`` channels per beat.

    ``fold.simd`` must divide ``C`` (a beat never straddles two taps). An output pixel takes
    ``SF * NF`` cycles (:attr:`cycles_per_frame` per image); the window generator delivers
    the ``SF`` input beats of a pixel during its first neuron fold. Streamed weights (the
    ``w`` port) pass straight to the MVU: its words again for every output pixel.
    """

    def __init__(self, layer: MatrixVector, fold: Folding, style: str = "lutram",
                 dsp: str | None = None, ultra: bool = False, pipeline: int = 0) -> None:
        if layer.window is None:
            raise ValueError(f"{layer.name}: a ConvolutionUnit needs a windowed layer")
        self.layer, self.fold, self.style = layer, fold, style
        self.im2col = SlidingWindow(layer.window, layer.in_shape[-1], fold.simd, layer.in_fmt,
                                    ultra=ultra)
        self.mvu = MatrixVectorUnit(layer, fold, style, dsp, pipeline)
        members = {
            "i": In(stream.Signature(unsigned(fold.simd * layer.in_fmt.bits))),
            "o": Out(stream.Signature(unsigned(fold.pe * layer.out_fmt.bits))),
        }
        if style == STREAMED:
            members["w"] = In(stream.Signature(unsigned(self.mvu.weight_bits)))
        super().__init__(members)

    @property
    def cycles_per_frame(self) -> int:
        return self.layer.pixels * self.mvu.cycles_per_frame

    def elaborate(self, platform) -> Module:
        m = Module()
        m.submodules.window = self.im2col
        m.submodules.mvu = self.mvu
        wiring.connect(m, wiring.flipped(self.i), self.im2col.i)
        wiring.connect(m, self.im2col.o, self.mvu.i)
        wiring.connect(m, self.mvu.o, wiring.flipped(self.o))
        if self.style == STREAMED:
            wiring.connect(m, wiring.flipped(self.w), self.mvu.w)
        return m
