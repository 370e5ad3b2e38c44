"""Thresholding: a stream requantized on its own (e.g. a skip branch onto the other
branch's scale)."""

from __future__ import annotations

import math

from bitloom.emit.hls import Kernel, add_requant, fmt_type, tensor_fmt
from bitloom.hw.pointwise import ThresholdUnit
from bitloom.ir import Thresholding
from bitloom.plan.folding import LayerPlan
from bitloom.plan.kind import LayerKind
from bitloom.plan.registry import register


class ThresholdKind(LayerKind):
    layer_type = Thresholding

    def make_unit(self, lp: LayerPlan):
        return ThresholdUnit(lp.layer, lp.fold.pe), ["i"]

    def hls_call(self, k: Kernel, index: int, prefix: str, srcs: list[str], dst: str) -> None:
        layer = k.net.layers[index]
        req = add_requant(k, prefix, layer, layer.out_fmt)
        k.calls.append({"kind": "requantize", "name": prefix, "channels": layer.in_shape[-1],
                        "elems": math.prod(layer.in_shape),
                        "in_fmt": fmt_type(tensor_fmt(k.net, layer.inputs[0])), "req": req,
                        "src": srcs[0], "dst": dst})


register(ThresholdKind())
