"""Layers reducing each window's taps per channel: max pooling and sum (average) pooling;
:class:`TapReduceKind` is also the base of the depthwise convolution."""

from __future__ import annotations

import math

from bitloom.emit.hls import Kernel, add_requant, add_window, fmt_type, tensor_fmt
from bitloom.hw.pool import PoolUnit
from bitloom.ir import MaxPool, SumPool
from bitloom.plan.fold import Folding
from bitloom.plan.folding import LayerPlan
from bitloom.plan.kind import LayerKind
from bitloom.plan.registry import register


class TapReduceKind(LayerKind):
    """A window layer with one lane count: every tap of every window is one step per
    channel chunk (a global window reads the stream itself, in the same number of steps)."""

    def cycles(self, layer, fold: Folding) -> int:
        window = layer.window
        return math.prod(window.out_hw) * window.size * layer.in_shape[-1] // fold.pe

    def unwindowed_lag(self, layer, fold: Folding, period: int) -> float:
        return 1.0  # a global window: the whole input first

    def make_unit(self, lp: LayerPlan):
        return PoolUnit(lp.layer, lp.fold.pe, ultra="window" in lp.ultra), ["i"]

    def hls_step(self, k: Kernel, layer, prefix: str, in_type: str) -> str:
        """The C++ step type that reduces one window (``bitloom_layers.h``)."""
        raise NotImplementedError

    def hls_call(self, k: Kernel, index: int, prefix: str, srcs: list[str], dst: str) -> None:
        layer = k.net.layers[index]
        w, channels = layer.window, layer.in_shape[-1]
        in_fmt = tensor_fmt(k.net, layer.inputs[0])
        src = add_window(k, prefix, w, channels, in_fmt, srcs[0])
        k.calls.append({"kind": "reduce", "taps": w.size, "channels": channels,
                        "pixels": math.prod(w.out_hw),
                        "step": self.hls_step(k, layer, prefix, fmt_type(in_fmt)),
                        "src": src, "dst": dst})


class MaxPoolKind(TapReduceKind):
    layer_type = MaxPool

    def hls_step(self, k: Kernel, layer: MaxPool, prefix: str, in_type: str) -> str:
        return f"bitloom::max_step<{in_type} >"


class SumPoolKind(TapReduceKind):
    layer_type = SumPool

    def hls_step(self, k: Kernel, layer: SumPool, prefix: str, in_type: str) -> str:
        req = add_requant(k, prefix, layer, layer.out_fmt)
        if not layer.position_weighted:
            return f"bitloom::sum_step<{in_type}, {prefix}_acc_t, {req}>"
        k.params.append({"kind": "position_weights", "name": prefix, "offset": layer.offset,
                         "rows": list(layer.row_weights), "cols": list(layer.col_weights)})
        return (f"bitloom::weighted_sum_step<{in_type}, {prefix}_acc_t, {req}, "
                f"{prefix}_positions>")


register(MaxPoolKind())
register(SumPoolKind())
