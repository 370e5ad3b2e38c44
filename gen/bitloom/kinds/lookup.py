"""Lookup: an element-wise function of a quantized input as a table per lane."""

from __future__ import annotations

import math

from bitloom.emit.hls import Kernel, c_array, code_literals, fmt_type, rom_type
from bitloom.hw.lookup import LookupUnit
from bitloom.ir import Lookup
from bitloom.plan.cost import memory_cost
from bitloom.plan.folding import LayerPlan
from bitloom.plan.kind import LayerKind
from bitloom.plan.registry import register


class LookupKind(LayerKind):
    layer_type = Lookup

    def unit_counts(self, lp: LayerPlan) -> dict[str, float]:
        """One read-only table of ``2**in_bits`` output codes per lane."""
        ly = lp.layer
        table = memory_cost(1 << ly.in_fmt.bits, ly.fmt.bits, "rom")
        return {key: value * lp.fold.pe for key, value in table.items()}

    def make_unit(self, lp: LayerPlan):
        return LookupUnit(lp.layer, lp.fold.pe), ["i"]

    def hls_call(self, k: Kernel, index: int, prefix: str, srcs: list[str], dst: str) -> None:
        layer = k.net.layers[index]
        literals = code_literals(layer.fmt, layer.table)
        k.params.append({"kind": "lookup", "name": prefix, "word": rom_type(literals),
                         "entries": len(literals), "table": c_array(literals)})
        k.calls.append({"kind": "lookup", "name": prefix, "elems": math.prod(layer.in_shape),
                        "lo": int(layer.in_fmt.grid().lo), "entries": len(literals),
                        "in_fmt": fmt_type(layer.in_fmt), "out_fmt": fmt_type(layer.fmt),
                        "src": srcs[0], "dst": dst})


register(LookupKind())
