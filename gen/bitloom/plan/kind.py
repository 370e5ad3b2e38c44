"""What every stage needs to know about one kind of layer: :class:`LayerKind`.

Each IR layer class has one entry, written in its own module under :mod:`bitloom.kinds`
(its planning facts, cost parts, Amaranth unit and HLS call side by side) and registered in
:mod:`bitloom.plan.registry` when bitloom is imported; the stages ask
:func:`~bitloom.plan.registry.kind_of` instead of switching on layer classes. The defaults
below describe an element-wise layer: one lane count, one beat of lag, no weights.

The base class sits in the planning layer because the planner is its first user; entries
live above the hardware and emitter layers, whose builders they call (dependency inversion,
as :data:`bitloom.ir.graph.ENGINES` does for the engines).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, ClassVar

from bitloom.errors import BitloomError
from bitloom.ir import AnyLayer, Network, Window
from bitloom.plan.cost import lane_counts
from bitloom.plan.fifos import DECOUPLE
from bitloom.plan.fold import Folding, divisors, windowed

if TYPE_CHECKING:
    from amaranth.lib import wiring

    from bitloom.plan.folding import LayerPlan


class LayerKind:
    """One kind of layer as every stage sees it. Subclasses set :attr:`layer_type` and
    override what differs from an element-wise layer."""

    layer_type: ClassVar[type]
    #: a join of several streams (Add, Concat): its input FIFOs follow the schedule
    joins: ClassVar[bool] = False
    #: the input a join takes whole, each frame, before the others' first beat (None: the
    #: inputs advance together)
    loads_whole: ClassVar[int | None] = None

    # -- planning ----------------------------------------------------------------------------
    def fold_options(self, layer: AnyLayer) -> list[Folding]:
        """The foldings the planner may choose from (all divide the layer's dimensions)."""
        return [Folding(p, p) for p in divisors(layer.out_shape[-1])]

    def cycles(self, layer: AnyLayer, fold: Folding) -> int:
        """Cycles per frame at ``fold``, one beat per cycle at every port."""
        return math.prod(layer.out_shape) // fold.pe

    def lag(self, layer: AnyLayer, fold: Folding, cycles: int, period: int) -> float:
        """Frame fraction by which the output trails the (latest) input, at a pipeline
        period of ``period`` cycles (see :mod:`bitloom.plan.fifos`)."""
        if windowed(layer):
            window = layer.window
            out_pixels = math.prod(layer.out_shape[:-1])
            return window.lag_pixels / math.prod(window.in_hw) + cycles / out_pixels / period
        return self.unwindowed_lag(layer, fold, period)

    def unwindowed_lag(self, layer: AnyLayer, fold: Folding, period: int) -> float:
        """:meth:`lag` of a layer without a sliding window: one beat."""
        return fold.pe / math.prod(layer.out_shape)

    def input_fifo_depth(self, net: Network, folds: list[Folding], index: int) -> int:
        """The input FIFO depth in beats of the single-input layer ``index``."""
        return DECOUPLE

    def weight_geometry(self, layer: AnyLayer, fold: Folding) -> tuple[int, int, int] | None:
        """``(depth, width, passes)`` of its weight memory, or None without weights."""
        return None

    def dsp_family(self, layer: AnyLayer, family: str | None) -> str | None:
        """The DSP family its products are packed into on a board of ``family`` (None:
        LUTs)."""
        return None

    # -- cost ------------------------------------------------------------------------------
    def unit_counts(self, lp: LayerPlan) -> dict[str, float]:
        """Component counts of the compute unit beyond its control and output register
        (see :func:`bitloom.plan.cost.layer_parts`): here accumulators and thresholds."""
        return lane_counts(lp)

    def datapath_levels(self, lp: LayerPlan) -> int:
        """Levels of its longest one-cycle path that registers may be placed among
        (:mod:`bitloom.plan.clock`); 0: nothing to pipeline."""
        return 0

    def window_buffer(self, layer: AnyLayer) -> Window | None:
        """The window whose line buffer the layer's hardware holds (None: none)."""
        return layer.window if windowed(layer) else None

    # -- hardware and HLS ------------------------------------------------------------------
    def make_unit(self, lp: LayerPlan) -> tuple[wiring.Component, list[str]]:
        """The streaming unit and the names of its input ports, in ``layer.inputs`` order."""
        raise BitloomError(f"layer {lp.layer.name}: no hardware unit for {lp.layer.kind}.")

    def weight_words(self, lp: LayerPlan) -> list[int]:
        """The weight memory's words in step order, exactly as the unit holds them."""
        raise BitloomError(f"layer {lp.layer.name} has no weights.")

    def decode_weight_words(self, lp: LayerPlan, words: list[int]):
        """Memory words -> the layer's weight codes: the inverse of :meth:`weight_words`."""
        raise BitloomError(f"layer {lp.layer.name} has no weights.")

    def hls_call(self, kernel, index: int, srcs: list[str], dst: str) -> None:
        """Append the HLS calls and constants of layer ``index`` to ``kernel``
        (:class:`bitloom.emit.hls.Kernel`), reading ``srcs`` and writing ``dst``."""
        layer = kernel.net.layers[index]
        raise BitloomError(f"the HLS backend does not support layer {layer.name} "
                           f"({layer.kind}) yet.")
