"""What the importer knows about each ONNX tensor: one of a few symbolic kinds.

Handlers never see raw tensors of activations, only these descriptions: a constant, a
quantized constant (weights), the float model input, a quantized stream of some layer, a
per-channel float function of a layer's accumulator, a host-side tail of the graph, or a
Concat waiting for the quantizer that follows it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import onnx

from bitloom.formats import Format
from bitloom.ir import Affine, Chain, HostOp, Window
from bitloom.ir.elementwise import as_fractions
from bitloom.ir.graph import FloatStep


@dataclass
class Constant:
    value: np.ndarray
    onnx_type: int | None = None  # the initializer's element type, where known
    code_range: tuple[int, int] | None = None  # integer codes clipped to this range (QCDQ)
    fmt: Format | None = None  # grid integers of this format (weights a QuantizeLinear made)


@dataclass
class QuantConstant:
    """Quantized constant (weights): ``real = scale * fmt.from_grid(values)``."""

    values: np.ndarray  # grid integers of fmt
    scale: np.ndarray
    fmt: Format

    def dequantized(self) -> np.ndarray:
        """The float32 tensor the model computes from it (ONNX rounds once, in float32)."""
        return (self.fmt.from_grid(self.values) * self.scale.astype(np.float64)).astype(
            np.float32)


@dataclass
class FloatInput:
    """The float graph input, possibly transposed (``perm``, per-sample axes), reshaped (to
    ``flat_shape``) and preprocessed (``steps``, in float32) on the host before it is
    quantized."""

    name: str
    shape: tuple[int, ...]
    flat_shape: tuple[int, ...]
    perm: tuple[int, ...] | None = None
    steps: tuple[FloatStep, ...] = ()

    @property
    def scalar_steps(self) -> bool:
        """Its preprocessing commutes with a transpose or reshape (every constant is one
        value), so the host may do those first."""
        return all(step.constant.size == 1 for step in self.steps)


@dataclass
class Stream:
    """Grid integers flowing in hardware: ``real = scale * (fmt.from_grid(n) - zero_point)``.

    ``scale`` is one value, or one per channel in the hardware's order (the last axis of
    the channel-last tensor: a feature map's channels, a vector's elements, a matrix's
    columns). ``shape`` is the per-sample ONNX shape (``(C, H, W)`` for a feature map,
    which the hardware streams channel-last). A feature map flattened to a vector keeps the
    hardware's element order; ``order[i]`` is then the ONNX index of hardware element
    ``i``. A transposed feature map keeps its hardware order too: ``perm`` (per-sample
    axes) says which view of the ``(C, H, W)`` tensor the ONNX graph holds, and ``shape``
    is that view.
    """

    producer: int  # index of the producing layer, -1 for the input quantizer
    fmt: Format
    scale: np.ndarray
    zero_point: int
    shape: tuple[int, ...]
    order: np.ndarray | None = None
    perm: tuple[int, ...] | None = None
    codes: bool = False  # an integer-typed ONNX tensor (QuantizeLinear's output), not reals

    @property
    def channels(self) -> int:
        """Channels of the hardware's stream (the last axis of its channel-last shape)."""
        return channel_last(self.shape)[-1] if self.shape else 1

    def reals(self, channels: int) -> Affine:
        """Values to reals per channel: ``scale[c] * (value * 2**-frac_bits - zero_point)``."""
        scale = as_fractions(self.scale, channels)
        step = 2 ** self.fmt.grid().frac_bits
        return Affine([s / step for s in scale], [-s * self.zero_point for s in scale])


@dataclass
class Derived:
    """A float tensor that is a per-channel monotone function of a layer's accumulator.

    ``max_pools`` are MaxPools applied to it before its quantizer. The quantizer is
    non-decreasing, so max commutes with it and with every non-decreasing op between the
    pools and it: the pools become MaxPool layers on the quantizer's codes. ``after_pools``
    holds the ops applied after the first pool, which must be non-decreasing (ops before
    it may fall: a pool takes the maximum of whatever they give).
    """

    producer: int
    chain: Chain
    shape: tuple[int, ...]
    max_pools: tuple[Window, ...] = ()
    perm: tuple[int, ...] | None = None  # as in Stream
    after_pools: Chain | None = None

    def then(self, op) -> Derived:
        """This tensor with the per-channel ``op`` applied (its pools and layout kept)."""
        return replace(self, chain=self.chain.then(op), after_pools=None
                       if self.after_pools is None else self.after_pools.then(op))

    def falls_after_pools(self) -> bool:
        """Whether an op after a MaxPool decreases in some channel (no longer a max)."""
        return self.after_pools is not None and any(
            self.after_pools.direction(c) < 0 for c in range(self.after_pools.channels))


@dataclass
class HostResult:
    """Float ops at the graph output (Softmax, ArgMax) that the host computes."""

    base: Stream | Derived
    ops: list[HostOp]


@dataclass
class PendingConcat:
    """A Concat of branches quantized differently: each branch is moved onto the quantizer
    that follows (a thresholding layer where its scale differs), then concatenated; read by
    a layer instead, it is one Concat layer whose channels keep their branch's scale."""

    parts: list[Stream]
    shape: tuple[int, ...]
    node: onnx.NodeProto  # the Concat

    def split(self, values: np.ndarray) -> list[np.ndarray]:
        """Per-channel ``values`` of the concatenation (axis 0: one per channel, or one for
        all) as each branch's share; matrices concatenate rows, so each gets all columns."""
        if values.shape[0] == 1 or len(self.shape) == 2:
            return [values] * len(self.parts)
        return np.split(values, np.cumsum([p.shape[0] for p in self.parts])[:-1])


@dataclass
class Tabulated:
    """A float element-wise function (Sigmoid, Tanh, ...) of a quantized stream, waiting for
    the quantizer that follows it: the two together become a table over the stream's
    values (:mod:`bitloom.frontend.tables`)."""

    base: Stream
    function: Callable[[np.ndarray], np.ndarray]  # float64 reals -> float64 reals
    name: str  # the ops applied, for messages and reports

    @property
    def shape(self) -> tuple[int, ...]:
        return self.base.shape


@dataclass
class ShuffledDerived:
    """A layer's float output whose channels a channel shuffle reordered before its
    quantizer (onnxruntime's QOperator ShuffleNet: DequantizeLinear, BatchNormalization,
    Relu, the shuffle, QuantizeLinear). A quantizer with one scale commutes with a channel
    permutation, so it becomes the layer's requantization followed by a ChannelShuffle
    layer; nothing else may read it."""

    base: Derived  # before the shuffle
    groups: int

    @property
    def shape(self) -> tuple[int, ...]:
        return self.base.shape


Value = (Constant | QuantConstant | FloatInput | Stream | Derived | HostResult | PendingConcat
         | Tabulated | ShuffledDerived)


def describe_scale(scale: np.ndarray) -> str:
    """A scale for messages: its value, or the first few of one per channel."""
    flat = np.asarray(scale, dtype=np.float64).reshape(-1)
    if flat.size == 1:
        return f"{flat[0]:g}"
    shown = ", ".join(f"{v:g}" for v in flat[:4])
    return f"per channel ({shown}{', ...' if flat.size > 4 else ''})"


def untransposed(shape: tuple[int, ...], perm: tuple[int, ...] | None) -> tuple[int, ...]:
    """The per-sample shape before a per-sample transpose ``perm`` gave ``shape``."""
    if not perm:
        return shape
    out = [0] * len(shape)
    for i, axis in enumerate(perm):
        out[axis] = shape[i]
    return tuple(out)


def full_perm(perm: tuple[int, ...]) -> list[int]:
    """A per-sample permutation as the ONNX ``perm`` attribute (batch axis first)."""
    return [0, *(a + 1 for a in perm)]


def channel_last(shape: tuple[int, ...]) -> tuple[int, ...]:
    """The hardware (stream) shape of a per-sample ONNX shape."""
    return (*shape[1:], shape[0]) if len(shape) == 3 else shape


def attributes(node: onnx.NodeProto) -> dict:
    """Node attributes as Python values (strings decoded)."""
    out = {}
    for a in node.attribute:
        v = onnx.helper.get_attribute_value(a)
        out[a.name] = v.decode() if isinstance(v, bytes) else v
    return out
