"""ChannelShuffle: ShuffleNet's permutation of the channels of every pixel."""

from __future__ import annotations

import math

from bitloom.emit.hls import Kernel, fmt_type
from bitloom.hw.shuffle import ChannelShuffleUnit
from bitloom.ir import AnyLayer, ChannelShuffle
from bitloom.plan.cost import memory_cost
from bitloom.plan.fold import Folding, divisors
from bitloom.plan.folding import LayerPlan
from bitloom.plan.kind import LayerKind
from bitloom.plan.registry import register


class ChannelShuffleKind(LayerKind):
    layer_type = ChannelShuffle

    def fold_options(self, layer: ChannelShuffle) -> list[Folding]:
        """Lanes that divide the groups and the channels of a group (one bank a lane)."""
        per_group = layer.in_shape[-1] // layer.groups
        return [Folding(p, p) for p in divisors(math.gcd(layer.groups, per_group))]

    def unwindowed_lag(self, layer: AnyLayer, fold: Folding, period: int) -> float:
        return 1 / math.prod(layer.out_shape[:-1])  # a whole pixel is written first

    def unit_counts(self, lp: LayerPlan) -> dict[str, float]:
        """Two pixels in ``pe`` banks, and the rotations in and out."""
        ly, p = lp.layer, lp.fold.pe
        bank = memory_cost(2 * ly.in_shape[-1] // p, ly.fmt.bits, "buffer")
        counts = {key: value * p for key, value in bank.items()}
        counts["ff_acc"] = counts.get("ff_acc", 0.0) + 2 * p * ly.fmt.bits
        return counts

    def make_unit(self, lp: LayerPlan):
        return ChannelShuffleUnit(lp.layer, lp.fold.pe), ["i"]

    def hls_call(self, k: Kernel, index: int, prefix: str, srcs: list[str], dst: str) -> None:
        layer = k.net.layers[index]
        k.calls.append({"kind": "shuffle", "pixels": math.prod(layer.in_shape[:-1]),
                        "channels": layer.in_shape[-1], "groups": layer.groups,
                        "code": f"{fmt_type(layer.fmt)}::code_t", "src": srcs[0], "dst": dst})


register(ChannelShuffleKind())
