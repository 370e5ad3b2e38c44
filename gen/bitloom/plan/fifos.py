"""FIFO depths between layers, from the pipeline's schedule.

Every layer of a plan runs at the bottleneck's pace, ``T`` cycles per frame, and each
streams its frame in order. So the schedule is described by one number per stream: its
*delay*, the fraction of a frame by which its element ``k/n`` of the frame trails the
model input's element ``k/n``. A layer adds to the latest of its inputs' delays

- a sliding window: :attr:`~bitloom.ir.Window.lag_pixels` of its input map (the pixels
  taken before the first window is complete), then one output pixel's compute
  (``cycles / pixels`` of the layer);
- a whole-input layer (dense matrix-vector, global pooling): the whole input frame, then
  one neuron fold (its first outputs);
- an element-wise layer: one beat; a concatenation: one pixel (input ``k``'s chunks follow
  the earlier inputs');
- on every edge, :data:`HOP_CYCLES` of pipeline registers, width converter and FIFO.

Where branches join (Add, Concat) an input whose delay is smaller than another's receives
elements that the join cannot take until the later input catches up: its FIFO holds the
difference of delays times the beats per frame, plus one output pixel of the join (a
concatenation makes each input wait while the others' chunks of a pixel go out) and
:data:`MARGIN` beats. Too little is a deadlock: the fan-out feeding both branches stops.
No frame bound caps this: on a small map each windowed layer waits for most of the map,
so a branch of two such layers leads by more than two frames, and a skip FIFO of one frame
then limits the frames in flight (a residual pair on a 2x2 map ran 24% slow).

Elsewhere a FIFO only decouples producer and consumer with :data:`DECOUPLE` beats, except
in front of a dense matrix-vector unit with several neuron folds: it takes its input during
the first fold only, so the FIFO holds what the producer makes during the other folds (at
most the unit's whole input, ``SF`` beats), and the producer never waits.
A sliding window buffers rows itself and a convolution's unit reads it, not the FIFO.
"""

from __future__ import annotations

import math

from bitloom.ir import (
    AddStreams,
    AnyLayer,
    Concat,
    DepthwiseConv,
    MatrixVector,
    MaxPool,
    Network,
    SumPool,
)
from bitloom.plan.fold import Folding

#: pipeline cycles per edge: a unit's registers (2-4), width converter (1), FIFO (1-2)
HOP_CYCLES = 6
#: beats of slack on every join input beyond the schedule's difference
MARGIN = 2
#: a FIFO that only decouples two units: the fewest beats that sustain one beat per cycle
#: (:class:`~bitloom.hw.glue.StreamFifo` of 2 beats alternates: half rate)
DECOUPLE = 3


def _windowed(layer: AnyLayer) -> bool:
    """A layer reading a sliding window (not a whole-map or whole-vector reduction)."""
    window = getattr(layer, "window", None)
    return window is not None and not (window.kernel == window.in_hw and not any(window.pads))


def _lag(layer: AnyLayer, fold: Folding, cycles: int, period: int) -> float:
    """Frame fraction by which ``layer``'s output trails its (latest) input."""

    out_pixels = math.prod(layer.out_shape[:-1])
    if _windowed(layer):
        window = layer.window
        return window.lag_pixels / math.prod(window.in_hw) + cycles / out_pixels / period
    if isinstance(layer, (MatrixVector, DepthwiseConv, MaxPool, SumPool)):
        # whole input first: a dense unit or a global pool; then one neuron fold
        if isinstance(layer, MatrixVector):
            return 1 + layer.in_features // fold.simd / period
        return 1.0
    if isinstance(layer, Concat):
        return 1 / out_pixels
    return fold.pe / math.prod(layer.out_shape)


def stream_delays(net: Network, folds: list[Folding]) -> dict[int, float]:
    """Per stream (``-1``: the model input, ``n``: layer ``n``'s output) its delay behind the
    model input, in frames (see the module docstring)."""
    from bitloom.plan.folding import layer_cycles

    cycles = [layer_cycles(ly, f) for ly, f in zip(net.layers, folds, strict=True)]
    period = max(cycles)
    delays = {-1: 0.0}
    for n, (layer, fold) in enumerate(zip(net.layers, folds, strict=True)):
        start = max(delays[p] for p in layer.inputs) + HOP_CYCLES / period
        delays[n] = start + _lag(layer, fold, cycles[n], period)
    return delays


def join_depths(net: Network, folds: list[Folding], index: int,
                shapes: list[tuple[int, ...]]) -> tuple[int, ...]:
    """Input FIFO depths of the join ``index`` (Add, Concat): the schedule's lead of each
    input over the latest one."""
    layer, fold = net.layers[index], folds[index]
    delays = stream_delays(net, folds)
    latest = max(delays[p] for p in layer.inputs)
    pixel_beats = layer.out_shape[-1] // fold.pe  # one output pixel of the join
    depths = []
    for p, shape in zip(layer.inputs, shapes, strict=True):
        frame = math.prod(shape) // fold.simd
        lead = math.ceil((latest - delays[p]) * frame - 1e-9)
        depths.append(max(DECOUPLE, lead + pixel_beats + MARGIN))
    return tuple(depths)


def fifo_depths(net: Network, folds: list[Folding], index: int) -> tuple[int, ...]:
    """Input FIFO depths in beats of layer ``index`` (see the module docstring), given every
    layer's folding; the model input of a single consumer needs none (the host's DMA is the
    buffer)."""
    from bitloom.plan.folding import in_shapes, layer_cycles

    layer, fold = net.layers[index], folds[index]
    shapes = in_shapes(net, layer)
    if isinstance(layer, (AddStreams, Concat)):
        return join_depths(net, folds, index, shapes)
    if layer.inputs == (-1,) and len(net.consumers(-1)) == 1:
        return (0,)
    if isinstance(layer, MatrixVector) and layer.window is None:
        sf, nf = layer.in_features // fold.simd, layer.out_features // fold.pe
        if nf == 1:
            return (DECOUPLE,)
        producer = layer.inputs[0]
        # the producer's fastest rate: its frame of SF beats in its own cycles per frame
        produce = sf if producer < 0 else layer_cycles(net.layers[producer], folds[producer])
        made = math.ceil((nf - 1) * sf * sf / produce)
        return (max(DECOUPLE, min(sf, made) + MARGIN),)
    return (DECOUPLE,)
