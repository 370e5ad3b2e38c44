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

Where branches join (Add, Concat, ChannelScale) an input whose delay is smaller than
another's receives elements that the join cannot take until the later input catches up: its
FIFO holds the difference of delays times the beats per frame, plus one output pixel of the
join (a concatenation makes each input wait while the others' chunks of a pixel go out) and
:data:`MARGIN` beats; a join that takes one input whole before the others' first beat
(ChannelScale's vector) needs one frame more on each input. Too little is a deadlock: the
fan-out feeding both branches stops.
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

from bitloom.ir import Network
from bitloom.plan.fold import Folding
from bitloom.plan.registry import kind_of

#: pipeline cycles per edge: a unit's registers (2-4, one more with a scale requantizer),
#: width converter (1), FIFO (1-2)
HOP_CYCLES = 6
#: beats of slack on every join input beyond the schedule's difference
MARGIN = 2
#: a FIFO that only decouples two units: the fewest beats that sustain one beat per cycle
#: (:class:`~bitloom.hw.glue.StreamFifo` of 2 beats alternates: half rate)
DECOUPLE = 3


def layer_cycles(layer, fold: Folding) -> int:
    """Cycles per frame of ``layer`` at ``fold``, one beat per cycle at every port."""
    return kind_of(layer).cycles(layer, fold)


def stream_delays(net: Network, folds: list[Folding]) -> dict[int, float]:
    """Per stream (``-1``: the model input, ``n``: layer ``n``'s output) its delay behind the
    model input, in frames (see the module docstring)."""
    cycles = [layer_cycles(ly, f) for ly, f in zip(net.layers, folds, strict=True)]
    period = max(cycles)
    delays = {-1: 0.0}
    for n, (layer, fold) in enumerate(zip(net.layers, folds, strict=True)):
        start = max(delays[p] for p in layer.inputs) + HOP_CYCLES / period
        delays[n] = start + kind_of(layer).lag(layer, fold, cycles[n], period)
    return delays


def in_shapes(net: Network, layer) -> list[tuple[int, ...]]:
    """Per-sample channel-last shapes of a layer's inputs."""
    return [net.input.stream_shape if p < 0 else net.layers[p].out_shape for p in layer.inputs]


def join_depths(net: Network, folds: list[Folding], index: int,
                shapes: list[tuple[int, ...]]) -> tuple[int, ...]:
    """Input FIFO depths of the join ``index`` (Add, Concat): the schedule's lead of each
    input over the latest one."""
    layer, fold = net.layers[index], folds[index]
    delays = stream_delays(net, folds)
    latest = max(delays[p] for p in layer.inputs)
    pixel_beats = layer.out_shape[-1] // fold.pe  # one output pixel of the join
    whole = kind_of(layer).loads_whole
    depths = []
    for p, shape in zip(layer.inputs, shapes, strict=True):
        frame = math.prod(shape) // fold.simd
        lead = math.ceil((latest - delays[p]) * frame - 1e-9)
        if whole is not None:  # all wait for that input's last beat: a frame more
            lead += frame
        depths.append(max(DECOUPLE, lead + pixel_beats + MARGIN))
    return tuple(depths)


def fifo_depths(net: Network, folds: list[Folding], index: int) -> tuple[int, ...]:
    """Input FIFO depths in beats of layer ``index`` (see the module docstring), given every
    layer's folding; the model input of a single consumer needs none (the host's DMA is the
    buffer)."""
    layer = net.layers[index]
    kind = kind_of(layer)
    if kind.joins:
        return join_depths(net, folds, index, in_shapes(net, layer))
    if layer.inputs == (-1,) and len(net.consumers(-1)) == 1:
        return (0,)
    return (kind.input_fifo_depth(net, folds, index),)
