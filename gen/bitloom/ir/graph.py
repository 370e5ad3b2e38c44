"""The typed graph bitloom compiles: host-side quantizers around a DAG of integer layers.

The frontend produces a :class:`Network`; the golden executor runs it exactly; the planner
folds it; the hardware backends build it. Tensors between layers carry integer *values*
in a :class:`~bitloom.formats.Format` (never floats), laid out channel-last: an ONNX
``(N, C, H, W)`` input is transposed to ``(N, H, W, C)`` on the host, and back at the output.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from bitloom.errors import BitloomError
from bitloom.formats import Format
from bitloom.ir.elementwise import Chain
from bitloom.ir.layers import AnyLayer
from bitloom.ir.quantizer import ElementQuantizer, Quantizer, parameter_batch
from bitloom.ir.summary import summary_text

#: Execution engines by name: ``runner(net, x, **options)`` returns float32 like the ONNX
#: model. The IR names none of them: :mod:`bitloom.engines` registers golden, rtl and hls
#: when bitloom is imported, so the graph stays below the simulators that run it.
ENGINES: dict[str, Callable[..., np.ndarray]] = {}


#: the float32 arithmetic of :class:`FloatStep` (numpy rounds each op once, as ONNX does)
FLOAT_OPS: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.divide,
    "Max": np.maximum, "Min": np.minimum}


@dataclass(frozen=True)
class FloatStep:
    """Float preprocessing of the model input before its quantizer (``2*x - 1``, a
    normalization, a clip), which the host computes in float32 exactly as ONNX does:
    ``x op constant``, or ``constant op x`` if ``constant_first``."""

    op_type: str  # a key of FLOAT_OPS (Clip and Relu are Max and Min)
    constant: np.ndarray  # float32, broadcasting against the batched tensor
    constant_first: bool = False
    source: str = ""  # the ONNX node, for inspect

    def apply(self, x: np.ndarray) -> np.ndarray:
        c = self.constant.astype(np.float32)
        a, b = (c, x) if self.constant_first else (x, c)
        return FLOAT_OPS[self.op_type](a, b).astype(np.float32)

    def describe(self) -> str:
        c = self.constant
        value = f"{float(c.reshape(-1)[0]):g}" if c.size == 1 else \
            f"<{'x'.join(map(str, c.shape))}>"
        text = f"{value} {self.op_type} x" if self.constant_first else \
            f"x {self.op_type} {value}"
        return f"{text} ({self.source})" if self.source else text


@dataclass
class InputQuantizer:
    """Host side: float model input -> integer values, with the source's exact semantics."""

    name: str  # the ONNX graph input
    shape: tuple[int, ...]  # per-sample shape of the ONNX input (batch axis dropped)
    flat_shape: tuple[int, ...]  # per-sample ONNX shape after host-side reshapes
    quantizer: Quantizer | ElementQuantizer
    perm: tuple[int, ...] | None = None  # host-side transpose (per-sample axes), before reshapes
    steps: tuple[FloatStep, ...] = ()  # float preprocessing after the reshape, in order

    @property
    def fmt(self) -> Format:
        return self.quantizer.fmt

    @property
    def stream_shape(self) -> tuple[int, ...]:
        """Per-sample shape of the values the hardware receives (channel-last)."""
        if len(self.flat_shape) == 3:
            c, h, w = self.flat_shape
            return (h, w, c)
        return (int(np.prod(self.flat_shape)),)

    def apply(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        if x.shape[1:] != self.shape:
            from bitloom.errors import BitloomError

            raise BitloomError(
                f"input {self.name!r} must have shape (batch, {', '.join(map(str, self.shape))})"
                f", got {x.shape}"
            )
        if np.isnan(x).any():
            from bitloom.errors import BitloomError

            first = tuple(int(i) for i in np.argwhere(np.isnan(x))[0])
            raise BitloomError(f"input {self.name!r} holds NaN (first at index {first}); a "
                               "quantizer has no code for it.")
        big = float(np.finfo(np.float32).max)  # +-inf saturate like any out-of-range value
        x = np.clip(x, -big, big)
        if isinstance(self.quantizer, ElementQuantizer):
            check_batch(self.quantizer.batch, x.shape[0], f"input {self.name!r} is quantized")
        if self.perm:
            x = x.transpose(0, *(a + 1 for a in self.perm))
        x = x.reshape((x.shape[0], *self.flat_shape))
        for step in self.steps:
            x = step.apply(x)
        values = self.quantizer.apply(x)
        if len(self.flat_shape) == 3:
            return values.transpose(0, 2, 3, 1)
        return values.reshape(x.shape[0], -1)


def check_batch(expected: int | None, got: int, what: str) -> None:
    """Host-side parameters given per index of the batch axis need exactly that batch."""
    if expected is not None and got != expected:
        from bitloom.errors import BitloomError

        raise BitloomError(f"{what} with parameters per index of axis 0 (the "
                           f"model declares a batch of {expected}); it must hold exactly "
                           f"{expected} samples, got {got}.")


@dataclass
class OutputDequantizer:
    """Host side: integer values of the last layer -> the float32 the ONNX model returns,
    then the output ops that run on the host (Softmax, ArgMax, ...)."""

    name: str  # the ONNX graph output
    shape: tuple[int, ...]  # per-sample ONNX shape of the dequantized tensor
    chain: Chain
    host_ops: list[HostOp] = field(default_factory=list)

    def apply(self, values: np.ndarray) -> np.ndarray:
        # the chain is per channel: the last axis of the channel-last per-sample shape (a
        # (rows, columns) tensor of a zero-layer network arrives flattened)
        stream = (*self.shape[1:], self.shape[0]) if len(self.shape) == 3 else self.shape
        values = values.reshape((values.shape[0], *stream))
        y = self.chain.approx(values.astype(np.float64)).astype(np.float32)
        if y.ndim == 4:  # channel-last feature map back to ONNX's NCHW
            y = y.transpose(0, 3, 1, 2)
        y = y.reshape((values.shape[0], *self.shape))
        for op in self.host_ops:
            y = op.apply(y)
        return y


@dataclass
class HostOp:
    """A float op after the last quantized layer that the host computes (like ONNX would)."""

    op_type: str  # Softmax, LogSoftmax, ArgMax, ArgMin, TopK, Transpose, Reshape
    axis: int = -1
    keepdims: bool = True
    perm: tuple[int, ...] = ()  # Transpose: ONNX perm, batch axis included
    shape: tuple[int, ...] = ()  # Reshape: the new per-sample shape
    k: int = 1  # TopK: how many, the largest (or smallest) first, ties to the lower index
    largest: bool = True
    output: int = 0  # TopK: 0 the values, 1 their indices

    def apply(self, y: np.ndarray) -> np.ndarray:
        if self.op_type in ("Softmax", "LogSoftmax"):
            z = y - y.max(axis=self.axis, keepdims=True)
            e = np.exp(z)
            s = e.sum(axis=self.axis, keepdims=True)
            out = z - np.log(s) if self.op_type == "LogSoftmax" else e / s
            return out.astype(np.float32)
        if self.op_type in ("ArgMax", "ArgMin"):
            pick = np.argmax if self.op_type == "ArgMax" else np.argmin
            r = pick(y, axis=self.axis).astype(np.int64)
            return np.expand_dims(r, self.axis) if self.keepdims else r
        if self.op_type == "TopK":
            order = np.argsort(-y if self.largest else y, axis=self.axis, kind="stable")
            index = np.take(order, np.arange(self.k), axis=self.axis).astype(np.int64)
            return index if self.output else np.take_along_axis(y, index, axis=self.axis)
        if self.op_type == "Transpose":
            return y.transpose(self.perm)
        if self.op_type == "Reshape":
            return y.reshape((y.shape[0], *self.shape))
        raise ValueError(self.op_type)

    def describe(self) -> str:
        """The op and its parameters, as ``bitloom inspect`` lists host-side ops."""
        if self.op_type == "Transpose":
            return f"Transpose(perm={list(self.perm)})"
        if self.op_type == "Reshape":
            return f"Reshape(per-sample shape {list(self.shape)})"
        if self.op_type == "TopK":
            which = "indices" if self.output else "values"
            return f"TopK(k={self.k}, axis={self.axis}, " \
                   f"{'largest' if self.largest else 'smallest'}) {which}"
        if self.op_type in ("ArgMax", "ArgMin"):
            return f"{self.op_type}(axis={self.axis}, keepdims={int(self.keepdims)})"
        return f"{self.op_type}(axis={self.axis})"


@dataclass
class HostDequantize(HostOp):
    """ONNX DequantizeLinear with a scale and zero point per element (per-axis or blocked,
    broadcast against the batched ONNX tensor, whose axis 0 they may index), which the host
    applies to codes at the graph output: ``(q - zero_point) * scale``, rounded once to
    float32 as ONNX does (the float64 product of a code and a float32 scale is exact)."""

    scale: np.ndarray = field(default_factory=lambda: np.ones((), np.float32))
    zero_point: np.ndarray = field(default_factory=lambda: np.zeros((), np.int64))

    def apply(self, y: np.ndarray) -> np.ndarray:
        check_batch(parameter_batch(self.scale, self.zero_point), y.shape[0],
                    "the output is dequantized")
        return ((y.astype(np.float64) - self.zero_point) * self.scale.astype(np.float64)
                ).astype(np.float32)

    def describe(self) -> str:
        shape = np.broadcast_shapes(np.shape(self.scale), np.shape(self.zero_point))
        return f"DequantizeLinear(per-element scale and zero point of shape {shape})"


@dataclass
class Network:
    """A compiled model: input quantizer, integer layers in stream order, output dequantizer."""

    source: str
    input: InputQuantizer
    layers: list[AnyLayer]
    output: OutputDequantizer

    def values_of(self, producer: int, values: list[np.ndarray]) -> np.ndarray:
        """The output of ``producer`` (-1: the input) in a :meth:`trace` list."""
        return values[producer + 1]

    def consumers(self, producer: int) -> list[int]:
        return [i for i, ly in enumerate(self.layers) if producer in ly.inputs]

    @property
    def is_chain(self) -> bool:
        """Whether every layer reads only the one before it (an MLP-shaped pipeline)."""
        return all(ly.inputs == (i - 1,) for i, ly in enumerate(self.layers))

    def trace(self, x: np.ndarray) -> list[np.ndarray]:
        """Integer values at the input and after every layer, for a float batch ``x``."""
        return self.trace_values(self.input.apply(x))

    def trace_values(self, values: np.ndarray) -> list[np.ndarray]:
        """Integer values of the input and after every layer, from quantized input ``values``."""
        values = [np.asarray(values, dtype=np.int64)]
        for layer in self.layers:
            values.append(layer.golden(*(values[p + 1] for p in layer.inputs)))
        return values

    def require_layers(self) -> None:
        """Hardware needs at least one layer; a quantize/dequantize-only model has none."""
        if not self.layers:
            raise BitloomError(f"{self.source}: the model has no layer (quantize/dequantize "
                               "only); there is nothing to build in hardware. Run it with "
                               "--engine golden.")

    def require_hardware(self) -> None:
        """Refuse, naming them, layers only the golden executor runs (no hardware maps them),
        before a plan or a hardware engine would build something else."""
        gaps = [f"{ly.label} runs in golden (bitloom run / inspect) but has no hardware "
                f"mapping: {ly.golden_only}" for ly in self.layers if ly.golden_only]
        if gaps:
            raise BitloomError(f"{self.source}: {'; '.join(gaps)}.")

    def run(self, x: np.ndarray | dict[str, np.ndarray], engine: str = "golden", **options):
        """Run a batch through ``engine`` and return what the ONNX model would (float32)."""
        runner = ENGINES.get(engine)
        if runner is None:
            raise BitloomError(f"unknown engine {engine!r}; choose one of: "
                               f"{', '.join(ENGINES)}")
        if engine != "golden":
            self.require_hardware()
            self.require_layers()
        if isinstance(x, dict):
            if set(x) != {self.input.name}:
                raise BitloomError(f"model input is {self.input.name!r}, got {sorted(x)}")
            return {self.output.name: runner(self, np.asarray(x[self.input.name]), **options)}
        return runner(self, np.asarray(x), **options)

    def summary(self) -> str:
        return summary_text(self)
