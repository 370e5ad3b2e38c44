"""Dense and convolution layers: a matrix of weights times each input vector (or window),
``PE`` output channels x ``SIMD`` inputs per cycle."""

from __future__ import annotations

import math

from bitloom.emit.hls import (
    MAX_PE,
    MAX_SIMD,
    Kernel,
    add_requant,
    add_window,
    fmt_type,
    largest_divisor,
    tensor_fmt,
    weights_param,
)
from bitloom.errors import BitloomError
from bitloom.hw.conv import ConvolutionUnit
from bitloom.hw.mvu import MatrixVectorUnit, dot_levels, unpack_weight_words, weight_words
from bitloom.ir import MatrixVector, Network, Window
from bitloom.plan.cost import (
    accumulator_bits,
    add,
    dsp_product,
    memory_cost,
    product_counts,
    requant_counts,
    weight_memory,
)
from bitloom.plan.fifos import DECOUPLE, MARGIN, layer_cycles
from bitloom.plan.fold import Folding, divisors
from bitloom.plan.folding import LayerPlan
from bitloom.plan.kind import LayerKind
from bitloom.plan.memory import matrix_weight_geometry
from bitloom.plan.products import dsp_packing
from bitloom.plan.registry import register


class MatrixVectorKind(LayerKind):
    layer_type = MatrixVector

    def fold_options(self, layer: MatrixVector) -> list[Folding]:
        k_lanes = layer.in_shape[-1] if layer.window else layer.in_features
        return [Folding(pe, simd) for pe in divisors(layer.out_features)
                for simd in divisors(k_lanes)]

    def cycles(self, layer: MatrixVector, fold: Folding) -> int:
        return layer.pixels * (layer.in_features // fold.simd) * (layer.out_features // fold.pe)

    def unwindowed_lag(self, layer: MatrixVector, fold: Folding, period: int) -> float:
        # a dense unit takes its whole input first, then computes one neuron fold
        return 1 + layer.in_features // fold.simd / period

    def input_fifo_depth(self, net: Network, folds: list[Folding], index: int) -> int:
        """A unit without window generator and with several neuron folds takes each input
        vector during the first fold only: the FIFO holds what the producer makes during
        the others (at most ``SF``)."""
        layer, fold = net.layers[index], folds[index]
        if self.window_buffer(layer) is not None:
            return DECOUPLE  # the sliding window buffers rows itself
        sf, nf = layer.in_features // fold.simd, layer.out_features // fold.pe
        if nf == 1:
            return DECOUPLE
        producer = layer.inputs[0]
        # the producer's fastest rate: its frame of SF beats a vector in its cycles per frame
        beats = layer.pixels * sf
        produce = beats if producer < 0 else layer_cycles(net.layers[producer],
                                                          folds[producer])
        made = math.ceil((nf - 1) * sf * beats / produce)
        return max(DECOUPLE, min(sf, made) + MARGIN)

    def weight_geometry(self, layer: MatrixVector, fold: Folding) -> tuple[int, int, int]:
        return matrix_weight_geometry(layer, fold)

    def dsp_family(self, layer: MatrixVector, family: str | None) -> str | None:
        """Integer products that ``synth_xilinx`` would map to one DSP48 each (9 or more
        bits) are packed two to four per multiplier (:mod:`bitloom.hw.pe.dsp`); narrower
        products and minifloats stay in LUTs, where they are cheaper (docs/pe.md)."""
        if family is None or not dsp_product(layer.w_fmt, layer.in_fmt):
            return None
        try:
            dsp_packing(layer.w_fmt, layer.in_fmt, family, 1, 1)
        except ValueError:  # operands wider than the multiplier's ports
            return None
        return family

    def unit_counts(self, lp: LayerPlan) -> dict[str, float]:
        ly, fold = lp.layer, lp.fold
        acc_bits = accumulator_bits(lp)
        counts = product_counts(lp)
        add(counts, {"acc": fold.pe * acc_bits,
                     "ff_acc": fold.pe * (acc_bits + ly.out_fmt.bits)})
        add(counts, weight_memory(lp, *self.weight_geometry(ly, fold)[:2]))
        add(counts, memory_cost(ly.in_features // fold.simd, fold.simd * lp.in_fmt.bits,
                                "buffer"))
        add(counts, requant_counts(lp.requant, acc_bits, fold.pe))
        return counts

    def datapath_levels(self, lp: LayerPlan) -> int:
        """The dot product's levels (products, adder rows: a dry run of the unit's own
        builder) and the accumulation after them."""
        return dot_levels(lp.layer.w_fmt, lp.layer.in_fmt, lp.fold, lp.dsp) + 1

    def window_buffer(self, layer: MatrixVector) -> Window | None:
        """The convolution's window generator; none for a 1x1 convolution at stride 1, which
        reads its input stream as it comes (ResNet-50's 1x1 convolutions held a row of their
        map each, 3.5 BRAM36 at 56x56x256)."""
        window = layer.window
        return None if window is None or window.is_pointwise else window

    def make_unit(self, lp: LayerPlan):
        if self.window_buffer(lp.layer) is None:
            return MatrixVectorUnit(lp.layer, lp.fold, lp.style, lp.dsp, lp.pipeline), ["i"]
        return ConvolutionUnit(lp.layer, lp.fold, lp.style, lp.dsp,
                               ultra="window" in lp.ultra, pipeline=lp.pipeline), ["i"]

    def weight_words(self, lp: LayerPlan) -> list[int]:
        layer = lp.layer
        return weight_words(layer.weights, lp.fold, layer.w_fmt, layer.name)

    def decode_weight_words(self, lp: LayerPlan, words: list[int]):
        return unpack_weight_words(words, lp.layer.weights.shape, lp.fold, lp.layer.w_fmt)

    def hls_call(self, k: Kernel, index: int, prefix: str, srcs: list[str], dst: str) -> None:
        net = k.net
        layer = net.layers[index]
        kk, n = layer.in_features, layer.out_features
        in_fmt = tensor_fmt(net, layer.inputs[0])
        src = srcs[0]
        if layer.window is not None:
            src = add_window(k, prefix, layer.window, layer.in_shape[-1], in_fmt, src)
            pixels = layer.pixels
        else:
            elems = math.prod(layer.in_shape)
            if elems % kk:
                raise BitloomError(f"layer {layer.name}: {elems} inputs per frame is not a "
                                   f"multiple of its {kk} weights rows.")
            pixels = elems // kk
        req = add_requant(k, prefix, layer, layer.out_fmt)
        k.params.append(weights_param(prefix, layer.w_fmt, layer.weights.T, member=False))
        want_pe, want_simd = k.folds.get(index, (MAX_PE, MAX_SIMD))
        k.calls.append({"kind": "mvu", "name": prefix, "k": kk, "n": n,
                        "pe": largest_divisor(n, want_pe),
                        "simd": largest_divisor(kk, want_simd), "pixels": pixels,
                        "in_fmt": fmt_type(in_fmt), "w_fmt": fmt_type(layer.w_fmt),
                        "req": req, "src": src, "dst": dst})


register(MatrixVectorKind())
