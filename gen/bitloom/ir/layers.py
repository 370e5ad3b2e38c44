"""Integer layers of the IR and their exact golden semantics.

Every layer reads the integer values of its producers and writes integer values; tensors
are channel-last: a vector is ``(batch, channels)``, a feature map ``(batch, H, W, C)``
(the stream order of the hardware: pixels in raster order, channels fastest), a per-sample
matrix of rows travels flattened, row after row, as ``(batch, rows * channels)``. Layers with
an accumulator end in an optional :class:`~bitloom.ir.Thresholds` requantization; without
one, the accumulator itself is the output (the last layer, dequantized on the host).

``inputs`` holds producer indices: ``-1`` is the input quantizer, ``i`` is layer ``i`` of
the network, which lists layers in a topological (stream) order.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from bitloom.formats import Format, Int
from bitloom.ir.requant import Thresholds


@dataclass(frozen=True)
class Window:
    """A 2-D sliding window over a ``(H, W, C)`` map, with ONNX's Conv/Pool geometry."""

    in_hw: tuple[int, int]
    kernel: tuple[int, int]
    stride: tuple[int, int] = (1, 1)
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)  # top, left, bottom, right
    dilation: tuple[int, int] = (1, 1)
    pad_value: int = 0  # the grid integer padding holds (real zero, or -inf-like for max)

    @property
    def out_hw(self) -> tuple[int, int]:
        (h, w), (kh, kw), (sh, sw), (dh, dw) = self.in_hw, self.kernel, self.stride, self.dilation
        top, left, bottom, right = self.pads
        return ((h + top + bottom - dh * (kh - 1) - 1) // sh + 1,
                (w + left + right - dw * (kw - 1) - 1) // sw + 1)

    @property
    def size(self) -> int:
        return self.kernel[0] * self.kernel[1]

    def pads_with_a_value_of(self, fmt: Format) -> bool:
        """Nothing is padded, or the padding value is one of ``fmt``'s: what a stream of
        ``fmt`` codes (hardware, HLS) can carry (a bipolar format has no 0)."""
        if not any(self.pads):
            return True
        if isinstance(fmt, Int) and fmt.bits > 1:  # consecutive integers, however wide
            grid = fmt.grid()
            return grid.lo <= self.pad_value <= grid.hi
        return self.pad_value in fmt.grid_levels()

    @property
    def is_global(self) -> bool:
        """The window is the whole map without padding (global pooling): one output pixel,
        read in the stream's own order."""
        return self.kernel == self.in_hw and not any(self.pads)

    @property
    def is_pointwise(self) -> bool:
        """Each output pixel is the input pixel at the same place (a 1x1 kernel at stride 1,
        no padding): the map's own stream already is the im2col stream."""
        return self.kernel == (1, 1) and self.stride == (1, 1) and not any(self.pads)

    @property
    def lag_pixels(self) -> int:
        """Input pixels taken before the first window can leave (the first window's last
        pixel in the map, plus one): what a parallel branch must buffer meanwhile."""
        (h, w), (kh, kw), (dh, dw) = self.in_hw, self.kernel, self.dilation
        top, left = self.pads[:2]
        bottom_row = min(dh * (kh - 1) - top, h - 1)
        right_col = min(dw * (kw - 1) - left, w - 1)
        return max(bottom_row, 0) * w + max(right_col, 0) + 1

    def real_counts(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """(rows, columns) of each output row and column's window that lie inside the map,
        not in the padding: a window's count of real pixels is their product."""
        def counts(size: int, out: int, k: int, s: int, d: int, begin: int) -> tuple[int, ...]:
            return tuple(sum(0 <= o * s - begin + t * d < size for t in range(k))
                         for o in range(out))

        (h, w), (kh, kw), (sh, sw), (dh, dw) = self.in_hw, self.kernel, self.stride, \
            self.dilation
        (oh, ow), (top, left) = self.out_hw, self.pads[:2]
        return counts(h, oh, kh, sh, dh, top), counts(w, ow, kw, sw, dw, left)

    def patches(self, x: np.ndarray) -> np.ndarray:
        """``(B, H, W, C)`` -> ``(B, OH, OW, KH*KW, C)``: every window, kernel rows first."""
        top, left, bottom, right = self.pads
        padded = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)),
                        constant_values=self.pad_value)
        (oh, ow), (kh, kw), (sh, sw), (dh, dw) = self.out_hw, self.kernel, self.stride, \
            self.dilation
        taps = [padded[:, i * dh: i * dh + sh * (oh - 1) + 1: sh,
                       j * dw: j * dw + sw * (ow - 1) + 1: sw, :]
                for i in range(kh) for j in range(kw)]
        return np.stack(taps, axis=3)


def _exact_matmul(x: np.ndarray, w: np.ndarray, acc_fmt: Int) -> np.ndarray:
    """Exact integer ``x @ w``. Every partial sum lies within the accumulator's range, so
    below 2**53 float64 (BLAS, fast) is exact whatever the summation order; int64 up to 62
    bits; Python integers beyond."""
    if acc_fmt.bits <= 52:
        return np.rint(x.astype(np.float64) @ w.astype(np.float64)).astype(np.int64)
    if acc_fmt.bits > 62:  # wide minifloat accumulators
        return x.astype(object) @ w.astype(object)
    return x.astype(np.int64) @ w.astype(np.int64)


@dataclass
class Layer:
    """What every layer has: a name, its producers, shapes and the ONNX nodes it came from."""

    name: str
    inputs: tuple[int, ...]
    in_shape: tuple[int, ...]  # per-sample, channel-last, of the first input
    source_nodes: list[str] = field(default_factory=list, kw_only=True)
    #: the ONNX tensor of integer codes that holds this layer's output (a QuantizeLinear's or
    #: QLinear op's output), where the model has one: for layer-by-layer comparisons
    onnx_tensor: str = field(default="", kw_only=True)

    kind = "layer"

    @property
    def out_shape(self) -> tuple[int, ...]:
        raise NotImplementedError

    @property
    def out_fmt(self) -> Format:
        raise NotImplementedError

    @property
    def macs(self) -> int:
        return 0

    @property
    def golden_only(self) -> str | None:
        """Why the hardware cannot build this layer (None: it can)."""
        window, fmt = getattr(self, "window", None), getattr(self, "in_fmt", None)
        if window is not None and fmt is not None and not window.pads_with_a_value_of(fmt):
            return (f"it pads its {fmt.name} input with {window.pad_value}, which is not a "
                    f"value of {fmt.name} (a bipolar input has no 0), and the hardware's "
                    "streams carry only codes of the input format; export the model without "
                    "padding on this layer, or with an input format that holds the value")
        return None

    @property
    def label(self) -> str:
        """The layer and the ONNX nodes it came from, for messages."""
        nodes = ", ".join(map(repr, self.source_nodes))
        return f"layer {self.name!r} (ONNX node{'s' if len(self.source_nodes) > 1 else ''} " \
               f"{nodes})"

    def golden(self, *xs: np.ndarray) -> np.ndarray:
        raise NotImplementedError


@dataclass
class Formatted(Layer):
    """A layer that writes values of one format it is given (``fmt``): MaxPool, Concat,
    a table unit, a channel shuffle. Its map keeps its shape unless it says otherwise."""

    fmt: Format = field(kw_only=True)

    @property
    def out_fmt(self) -> Format:
        return self.fmt

    @property
    def out_shape(self) -> tuple[int, ...]:
        return self.in_shape


@dataclass
class Accumulating(Layer):
    """A layer that sums into an exact accumulator, then (usually) requantizes."""

    acc_fmt: Int = field(kw_only=True)
    requant: Thresholds | None = field(default=None, kw_only=True)

    @property
    def out_fmt(self) -> Format:
        return self.acc_fmt if self.requant is None else self.requant.out_fmt

    def finish(self, acc: np.ndarray) -> np.ndarray:
        return acc if self.requant is None else self.requant.apply(acc)


@dataclass
class MatrixVector(Accumulating):
    """``acc = x @ weights`` per vector, per window of a convolution (im2col order: kernel
    row, kernel column, input channel) when ``window`` is set, or per row of a per-sample
    ``(rows, K)`` matrix (ONNX MatMul of a rank-3 A). Weights ``(G, K, N)`` hold one matrix
    per sample (ONNX MatMul's batch broadcasting of a rank-3 B): a batch must then hold
    exactly ``G`` samples, and the layer subtracts the input's zero point itself
    (``in_zero_point``), because its correction, zero point times a column sum of the
    sample's matrix, differs per sample and cannot join the per-channel chain."""

    weights: np.ndarray = field(kw_only=True)  # int64 [K, N] (or [G, K, N]) grid integers
    in_fmt: Format = field(kw_only=True)
    w_fmt: Format = field(kw_only=True)
    window: Window | None = field(default=None, kw_only=True)
    rows: int = field(default=1, kw_only=True)
    in_zero_point: int = field(default=0, kw_only=True)

    @property
    def kind(self) -> str:
        return "Conv" if self.window else "MatMul"

    @property
    def in_features(self) -> int:
        return self.weights.shape[-2]

    @property
    def out_features(self) -> int:
        return self.weights.shape[-1]

    @property
    def pixels(self) -> int:
        return 1 if self.window is None else int(np.prod(self.window.out_hw))

    @property
    def out_shape(self) -> tuple[int, ...]:
        if self.window is not None:
            return (*self.window.out_hw, self.out_features)
        return (self.out_features,) if self.rows == 1 else (self.rows, self.out_features)

    @property
    def macs(self) -> int:
        return self.in_features * self.out_features * self.pixels * self.rows

    @property
    def golden_only(self) -> str | None:
        if self.weights.ndim == 3:
            return (f"it multiplies each of the {len(self.weights)} samples of a batch by its "
                    "own weight matrix (a batched MatMul), and the hardware applies one weight "
                    "matrix to every frame")
        if self.rows > 1:
            return (f"its input holds {self.rows} rows per sample, and the hardware's "
                    "matrix-vector unit multiplies one vector (or convolution window) at a "
                    "time, not the rows of a matrix")
        return super().golden_only

    def golden(self, x: np.ndarray) -> np.ndarray:
        if self.window is None:
            return self._dense(x)
        p = self.window.patches(x)
        b, oh, ow = p.shape[:3]
        acc = _exact_matmul(p.reshape(b * oh * ow, -1), self.weights, self.acc_fmt)
        return self.finish(acc.reshape(b, oh, ow, -1))

    def _dense(self, x: np.ndarray) -> np.ndarray:
        """One vector, or ``rows`` of them, per sample (a flattened feature map arrives as
        ``(B, H, W, C)``), times the matrix or the sample's own matrix."""
        b = len(x)
        vectors = x.reshape(b * self.rows, self.in_features)
        if self.weights.ndim == 2:
            acc = _exact_matmul(vectors, self.weights, self.acc_fmt)
        else:
            from bitloom.ir.graph import check_batch

            check_batch(len(self.weights), b, f"{self.label} is a batched MatMul")
            shifted = vectors.reshape(b, self.rows, -1).astype(np.int64) - \
                self.in_zero_point
            acc = np.concatenate([_exact_matmul(v, w, self.acc_fmt)
                                  for v, w in zip(shifted, self.weights, strict=True)])
        return self.finish(acc).reshape(b, self.rows * self.out_features)


@dataclass
class DepthwiseConv(Accumulating):
    """One kernel per channel: ``acc[c] = sum_k window[k, c] * weights[k, c]``."""

    weights: np.ndarray = field(kw_only=True)  # int64 [KH*KW, C]
    in_fmt: Format = field(kw_only=True)
    w_fmt: Format = field(kw_only=True)
    window: Window = field(kw_only=True)

    kind = "DepthwiseConv"

    @property
    def channels(self) -> int:
        return self.weights.shape[1]

    @property
    def out_shape(self) -> tuple[int, ...]:
        return (*self.window.out_hw, self.channels)

    @property
    def macs(self) -> int:
        return self.weights.size * int(np.prod(self.window.out_hw))

    def golden(self, x: np.ndarray) -> np.ndarray:
        p = self.window.patches(x)  # (B, OH, OW, K, C)
        dtype = object if self.acc_fmt.bits > 62 else np.int64
        acc = np.sum(p.astype(dtype) * self.weights.astype(dtype), axis=3)
        return self.finish(acc)


@dataclass
class MaxPool(Formatted):
    """Maximum over each window; values keep the input's format (max commutes with it)."""

    window: Window = field(kw_only=True)

    kind = "MaxPool"

    @property
    def out_shape(self) -> tuple[int, ...]:
        return (*self.window.out_hw, self.in_shape[-1])

    def golden(self, x: np.ndarray) -> np.ndarray:
        return self.window.patches(x).max(axis=3)


@dataclass
class SumPool(Accumulating):
    """Sum over each window (average pooling: the division joins the requantization).

    A padded average that divides by the count of real pixels (ONNX's
    ``count_include_pad=0``) has per-position weights: ``acc = (sum - offset) *
    row_weights[oh] * col_weights[ow]``, where ``offset`` is the padding's contribution to
    the sum and the weights are ``lcm / count`` per row and column, so that every position
    divides by the same ``lcm`` in the one requantization that follows."""

    in_fmt: Format = field(kw_only=True)
    window: Window = field(kw_only=True)
    row_weights: tuple[int, ...] = field(default=(), kw_only=True)
    col_weights: tuple[int, ...] = field(default=(), kw_only=True)
    offset: int = field(default=0, kw_only=True)

    kind = "AveragePool"

    @property
    def out_shape(self) -> tuple[int, ...]:
        return (*self.window.out_hw, self.in_shape[-1])

    @property
    def position_weighted(self) -> bool:
        return bool(self.row_weights)

    @property
    def sum_fmt(self) -> Int:
        """The window sum's format (before the position weights)."""
        if not self.position_weighted:
            return self.acc_fmt
        grid = self.in_fmt.grid()
        return Int.spanning(min(0, grid.lo * self.window.size),
                            max(0, grid.hi * self.window.size))

    def golden(self, x: np.ndarray) -> np.ndarray:
        acc = self.window.patches(x).astype(np.int64).sum(axis=3)
        if self.position_weighted:
            rows = np.asarray(self.row_weights, dtype=np.int64)[None, :, None, None]
            cols = np.asarray(self.col_weights, dtype=np.int64)[None, None, :, None]
            acc = (acc - self.offset) * rows * cols
        return self.finish(acc)


@dataclass
class AddStreams(Accumulating):
    """``acc = ka * a + kb * b (+ bias)``, then ``max(acc, 0)`` with ``relu``: two branches
    brought onto one integer grid. The multipliers are one integer for every channel (the
    ratio of two scales), or one per channel with a per-channel ``bias``: a float island of
    onnxruntime's QOperator form, where each branch went through its own per-channel affine
    map (a BatchNormalization after a DequantizeLinear) before the Add."""

    in_fmts: tuple[Format, Format] = field(kw_only=True)
    multipliers: tuple[int | tuple[int, ...], int | tuple[int, ...]] = field(kw_only=True)
    bias: tuple[int, ...] | None = field(default=None, kw_only=True)
    relu: bool = field(default=False, kw_only=True)

    kind = "Add"

    @property
    def out_shape(self) -> tuple[int, ...]:
        return self.in_shape

    def channel_terms(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per channel: the two multipliers and the bias (int64)."""
        c = self.in_shape[-1]
        ka, kb = (np.broadcast_to(np.asarray(k, dtype=np.int64), (c,))
                  for k in self.multipliers)
        bias = np.zeros(c, dtype=np.int64) if self.bias is None else np.asarray(
            self.bias, dtype=np.int64)
        return ka, kb, bias

    @property
    def per_channel(self) -> bool:
        """Whether the multipliers or a bias vary by channel (a ROM of terms per lane)."""
        return self.bias is not None or any(not isinstance(k, int) for k in self.multipliers)

    def golden(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        ka, kb, bias = self.channel_terms()
        acc = a.astype(np.int64) * ka + b.astype(np.int64) * kb + bias
        return self.finish(np.maximum(acc, 0) if self.relu else acc)


@dataclass
class ChannelScale(Accumulating):
    """``acc = (x - zx) * (s[c] - zs)``: a feature map ``x`` (the first input, ``(H, W, C)``)
    times one value per channel and frame ``s`` (the second, ``C`` values): a
    squeeze-excitation block's map scaled by the attention vector computed from it."""

    in_fmts: tuple[Format, Format] = field(kw_only=True)
    zero_points: tuple[int, int] = field(default=(0, 0), kw_only=True)

    kind = "ChannelScale"

    @property
    def out_shape(self) -> tuple[int, ...]:
        return self.in_shape

    def golden(self, x: np.ndarray, s: np.ndarray) -> np.ndarray:
        zx, zs = self.zero_points
        scale = s.reshape(len(s), *[1] * (x.ndim - 2), -1).astype(np.int64) - zs
        return self.finish((x.astype(np.int64) - zx) * scale)


@dataclass
class Concat(Formatted):
    """Channel concatenation of streams in one format (same scale and zero point)."""

    channels: tuple[int, ...] = field(kw_only=True)

    kind = "Concat"

    @property
    def out_shape(self) -> tuple[int, ...]:
        return (*self.in_shape[:-1], sum(self.channels))

    def golden(self, *xs: np.ndarray) -> np.ndarray:
        return np.concatenate(xs, axis=-1)


@dataclass
class Thresholding(Accumulating):
    """Requantization of a stream on its own (FINN's Thresholding): the input values are
    the "accumulator" of the thresholds, e.g. a skip branch moved onto another scale."""

    in_fmt: Format = field(kw_only=True)

    kind = "Requantize"

    @property
    def out_shape(self) -> tuple[int, ...]:
        return self.in_shape

    def golden(self, x: np.ndarray) -> np.ndarray:
        return self.finish(x.astype(np.int64))


@dataclass
class Lookup(Formatted):
    """An element-wise function of one quantized input as a table: ``table[x - lo]`` for
    every value ``x`` of ``in_fmt`` (``lo`` its least), each entry the output quantizer
    applied to the function evaluated in float64 (Sigmoid, Tanh, HardSwish, GELU, ...)."""

    in_fmt: Format = field(kw_only=True)
    table: np.ndarray = field(kw_only=True)  # int64 output grid values, one per input value
    function: str = field(default="", kw_only=True)

    kind = "Lookup"

    def golden(self, x: np.ndarray) -> np.ndarray:
        return self.table[np.asarray(x, dtype=np.int64) - self.in_fmt.grid().lo]


@dataclass
class ChannelShuffle(Formatted):
    """ShuffleNet's channel shuffle (ONNX: Reshape to ``(G, C/G, H, W)``, Transpose of the
    two channel axes, Reshape back): output channel ``k`` is input channel
    ``(k % G) * (C / G) + k // G``."""

    groups: int = field(kw_only=True)

    kind = "ChannelShuffle"

    def golden(self, x: np.ndarray) -> np.ndarray:
        c = x.shape[-1]
        grouped = x.reshape(*x.shape[:-1], self.groups, c // self.groups)
        return grouped.swapaxes(-1, -2).reshape(x.shape)


AnyLayer = (MatrixVector | DepthwiseConv | MaxPool | SumPool | AddStreams | Concat |
            Thresholding | Lookup | ChannelShuffle | ChannelScale)
