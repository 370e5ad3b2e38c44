"""AddStreams: ``ka * a + kb * b`` of two streams of one shape (a residual join)."""

from __future__ import annotations

import math

from bitloom.emit.hls import Kernel, add_requant, fmt_type, tensor_fmt
from bitloom.hw.pointwise import AddUnit
from bitloom.ir import AddStreams
from bitloom.plan.cost import lane_counts
from bitloom.plan.folding import LayerPlan
from bitloom.plan.kind import LayerKind
from bitloom.plan.registry import register


class AddKind(LayerKind):
    layer_type = AddStreams
    joins = True

    def unit_counts(self, lp: LayerPlan) -> dict[str, float]:
        ly, p = lp.layer, lp.fold.pe
        counts = lane_counts(lp)
        counts["acc"] += p * 2 * lp.in_fmt.bits * max(1, max(ly.multipliers).bit_length())
        return counts

    def make_unit(self, lp: LayerPlan):
        return AddUnit(lp.layer, lp.fold.pe), ["a", "b"]

    def hls_call(self, k: Kernel, index: int, prefix: str, srcs: list[str], dst: str) -> None:
        layer = k.net.layers[index]
        a_fmt, b_fmt = (fmt_type(tensor_fmt(k.net, p)) for p in layer.inputs)
        req = add_requant(k, prefix, layer, layer.out_fmt)
        ka, kb = layer.multipliers
        k.calls.append({"kind": "add", "name": prefix, "channels": layer.in_shape[-1],
                        "elems": math.prod(layer.in_shape), "a_fmt": a_fmt, "b_fmt": b_fmt,
                        "req": req, "a": srcs[0], "b": srcs[1], "dst": dst, "ka": int(ka),
                        "kb": int(kb)})


register(AddKind())
