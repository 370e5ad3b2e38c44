"""Depthwise convolution: each channel's window times its own taps' weights."""

from __future__ import annotations

from bitloom.emit.hls import Kernel, add_requant, fmt_type, weights_param
from bitloom.hw.pool import DepthwiseUnit, tap_weight_words, unpack_tap_weight_words
from bitloom.ir import DepthwiseConv
from bitloom.kinds.pool import TapReduceKind
from bitloom.plan.cost import add, lane_counts, per_mac, weight_memory
from bitloom.plan.fold import Folding
from bitloom.plan.folding import LayerPlan
from bitloom.plan.memory import tap_weight_geometry
from bitloom.plan.registry import register


class DepthwiseKind(TapReduceKind):
    layer_type = DepthwiseConv

    def weight_geometry(self, layer: DepthwiseConv, fold: Folding) -> tuple[int, int, int]:
        return tap_weight_geometry(layer.window, layer.channels, fold.pe, layer.w_fmt.bits)

    def unit_counts(self, lp: LayerPlan) -> dict[str, float]:
        ly, p = lp.layer, lp.fold.pe
        counts = lane_counts(lp)
        lut, ff = per_mac(ly.w_fmt, lp.in_fmt)
        add(counts, {"mac": p * lut, "ff_mac": p * ff})
        add(counts, weight_memory(lp, *self.weight_geometry(ly, lp.fold)[:2]))
        return counts

    def make_unit(self, lp: LayerPlan):
        return DepthwiseUnit(lp.layer, lp.fold.pe, lp.style, ultra="window" in lp.ultra), ["i"]

    def weight_words(self, lp: LayerPlan) -> list[int]:
        layer = lp.layer
        return tap_weight_words(layer.name, layer.weights, layer.window, lp.fold.pe,
                                layer.w_fmt)

    def decode_weight_words(self, lp: LayerPlan, words: list[int]):
        layer = lp.layer
        return unpack_tap_weight_words(words, layer.window, layer.channels, lp.fold.pe,
                                       layer.w_fmt)

    def hls_step(self, k: Kernel, layer: DepthwiseConv, prefix: str, in_type: str) -> str:
        req = add_requant(k, prefix, layer, layer.out_fmt)
        k.params.append(weights_param(prefix, layer.w_fmt, layer.weights, member=True))
        return (f"bitloom::depthwise_step<{in_type}, {fmt_type(layer.w_fmt)}, {prefix}_acc_t, "
                f"{req}, {prefix}_weights>")


register(DepthwiseKind())
