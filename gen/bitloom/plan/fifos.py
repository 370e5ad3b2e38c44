"""FIFO depths between layers.

A layer's input FIFO holds two input frames' worth of a layer's burst (a matrix-vector unit
takes its input during its first neuron fold only). Where branches join (Add, Concat), each
input FIFO holds a whole input frame: the other branch may lag by up to that much, and a
frame-deep buffer can never deadlock the fan-out that feeds both.
"""

from __future__ import annotations

import math

from bitloom.hw.mvu import Folding
from bitloom.ir import AddStreams, Concat, MatrixVector, Network


def fifo_depths(net: Network, folds: list[Folding], index: int) -> tuple[int, ...]:
    """Input FIFO depths in beats of layer ``index`` (see the module docstring), given every
    layer's folding; the model input of a single consumer needs none (the host's DMA is the
    buffer)."""
    from bitloom.plan.folding import in_shapes

    layer, fold = net.layers[index], folds[index]
    shapes = in_shapes(net, layer)
    if isinstance(layer, (AddStreams, Concat)):
        return tuple(math.prod(s) // fold.simd + 2 for s in shapes)
    if layer.inputs == (-1,) and len(net.consumers(-1)) == 1:
        return (0,)
    if isinstance(layer, MatrixVector) and layer.window is None:
        return (max(2, 2 * (layer.in_features // fold.simd)),)
    return (max(2, 2 * (shapes[0][-1] // fold.simd)),)
