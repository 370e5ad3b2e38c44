"""ChannelScale: a feature map times one value per channel and frame (squeeze-excitation)."""

from __future__ import annotations

import math

from bitloom.emit.hls import Kernel, add_requant, fmt_type, tensor_fmt
from bitloom.hw.channel_scale import ChannelScaleUnit
from bitloom.ir import ChannelScale
from bitloom.plan.cost import lane_counts
from bitloom.plan.fold import Folding
from bitloom.plan.folding import LayerPlan
from bitloom.plan.kind import LayerKind
from bitloom.plan.registry import register


class ChannelScaleKind(LayerKind):
    layer_type = ChannelScale
    joins = True
    #: the vector (input 1) is taken whole before the map's first beat
    loads_whole = 1

    def cycles(self, layer: ChannelScale, fold: Folding) -> int:
        return (math.prod(layer.in_shape) + layer.in_shape[-1]) // fold.pe

    def unwindowed_lag(self, layer: ChannelScale, fold: Folding, period: int) -> float:
        """The map's first output waits for the vector's last value: up to a frame."""
        return 1.0

    def unit_counts(self, lp: LayerPlan) -> dict[str, float]:
        """A multiplier per lane, and the vector's memory (one frame's ``C`` values)."""
        counts = lane_counts(lp)
        fx, fs = lp.layer.in_fmts
        counts["acc"] += lp.fold.pe * fx.bits * fs.bits
        counts["acc"] += lp.layer.in_shape[-1] * fs.bits / 64  # distributed RAM, 64 b/LUT
        return counts

    def make_unit(self, lp: LayerPlan):
        return ChannelScaleUnit(lp.layer, lp.fold.pe), ["x", "s"]

    def hls_call(self, k: Kernel, index: int, prefix: str, srcs: list[str], dst: str) -> None:
        layer = k.net.layers[index]
        x_fmt, s_fmt = (fmt_type(tensor_fmt(k.net, p)) for p in layer.inputs)
        req = add_requant(k, prefix, layer, layer.out_fmt)
        zx, zs = layer.zero_points
        k.calls.append({"kind": "channel_scale", "name": prefix,
                        "channels": layer.in_shape[-1], "elems": math.prod(layer.in_shape),
                        "x_fmt": x_fmt, "s_fmt": s_fmt, "req": req, "x": srcs[0],
                        "s": srcs[1], "dst": dst, "zx": zx, "zs": zs})


register(ChannelScaleKind())
