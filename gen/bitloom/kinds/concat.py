"""Concat along channels of streams with the same pixels: per pixel all of input 0's
channels, then input 1's, ..."""

from __future__ import annotations

import math

from bitloom.emit.hls import Kernel, fmt_type
from bitloom.hw.branch import ConcatUnit
from bitloom.ir import AnyLayer, Concat
from bitloom.plan.fold import Folding, divisors
from bitloom.plan.folding import LayerPlan
from bitloom.plan.kind import LayerKind
from bitloom.plan.registry import register


class ConcatKind(LayerKind):
    layer_type = Concat
    joins = True

    def fold_options(self, layer: Concat) -> list[Folding]:
        """Lanes that divide every input's channels."""
        return [Folding(p, p) for p in divisors(math.gcd(*layer.channels))]

    def unwindowed_lag(self, layer: AnyLayer, fold: Folding, period: int) -> float:
        return 1 / math.prod(layer.out_shape[:-1])  # one pixel: the earlier inputs' chunks

    def make_unit(self, lp: LayerPlan):
        return ConcatUnit(lp.layer, lp.fold.pe), [f"i{k}" for k in range(len(lp.layer.inputs))]

    def hls_call(self, k: Kernel, index: int, prefix: str, srcs: list[str], dst: str) -> None:
        """A chain of two-input concatenations."""
        layer = k.net.layers[index]
        pixels = math.prod(layer.in_shape) // layer.in_shape[-1]
        code = f"{fmt_type(layer.out_fmt)}::code_t"
        a, ca = srcs[0], layer.channels[0]
        for j, (b, cb) in enumerate(zip(srcs[1:], layer.channels[1:], strict=True)):
            out = dst if j == len(srcs) - 2 else k.stream(f"{prefix}_part", code)
            k.calls.append({"kind": "concat", "pixels": pixels, "ca": ca, "cb": cb,
                            "code": code, "a": a, "b": b, "dst": out})
            a, ca = out, ca + cb


register(ConcatKind())
