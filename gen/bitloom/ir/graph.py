"""The typed graph bitloom compiles: host-side quantizers around a chain of integer layers.

The frontend produces a :class:`Network`; the golden executor runs it exactly; the planner
folds it; the hardware backends build it. Tensors between layers carry integer *values*
in a :class:`~bitloom.formats.Format` (never floats), laid out channel-last.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from bitloom.formats import Int
from bitloom.ir.elementwise import Chain
from bitloom.ir.quantizer import Quantizer
from bitloom.ir.requant import Thresholds


@dataclass
class InputQuantizer:
    """Host side: float model input -> integer values, with the source's exact semantics."""

    name: str  # the ONNX graph input
    shape: tuple[int, ...]  # per-sample shape of the ONNX input (batch axis dropped)
    flat_shape: tuple[int, ...]  # per-sample shape after host-side reshapes
    quantizer: Quantizer

    @property
    def fmt(self) -> Int:
        return self.quantizer.fmt

    def apply(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        if x.shape[1:] != self.shape:
            from bitloom.errors import BitloomError

            raise BitloomError(
                f"input {self.name!r} must have shape (batch, {', '.join(map(str, self.shape))})"
                f", got {x.shape}"
            )
        return self.quantizer.apply(x.reshape((x.shape[0], *self.flat_shape)))


@dataclass
class MatrixVector:
    """``acc = x @ weights`` on integer values, then thresholds (or the raw accumulator)."""

    name: str
    weights: np.ndarray  # int64 [K, N] grid integers of w_fmt
    in_fmt: Int
    w_fmt: Int
    acc_fmt: Int
    requant: Thresholds | None = None
    source_nodes: list[str] = field(default_factory=list)

    @property
    def in_features(self) -> int:
        return self.weights.shape[0]

    @property
    def out_features(self) -> int:
        return self.weights.shape[1]

    @property
    def out_fmt(self) -> Int:
        return self.acc_fmt if self.requant is None else self.requant.out_fmt

    @property
    def macs(self) -> int:
        return self.in_features * self.out_features

    def golden(self, x: np.ndarray) -> np.ndarray:
        if self.acc_fmt.bits > 62:  # exact beyond int64 (wide minifloat accumulators)
            acc = x.astype(object) @ self.weights.astype(object)
        else:
            acc = x.astype(np.int64) @ self.weights
        return acc if self.requant is None else self.requant.apply(acc)


@dataclass
class OutputDequantizer:
    """Host side: integer values of the last layer -> the float32 the ONNX model returns."""

    name: str  # the ONNX graph output
    shape: tuple[int, ...]  # per-sample output shape
    chain: Chain

    def apply(self, values: np.ndarray) -> np.ndarray:
        y = self.chain.approx(values.astype(np.float64))
        return y.reshape((values.shape[0], *self.shape)).astype(np.float32)


@dataclass
class Network:
    """A compiled model: input quantizer, integer layers in stream order, output dequantizer."""

    source: str
    input: InputQuantizer
    layers: list[MatrixVector]
    output: OutputDequantizer

    def trace(self, x: np.ndarray) -> list[np.ndarray]:
        """Integer values at the input and after every layer, for a float batch ``x``."""
        return self.trace_values(self.input.apply(x))

    def trace_values(self, values: np.ndarray) -> list[np.ndarray]:
        """Integer values after every layer, starting from quantized input ``values``."""
        values = [np.asarray(values, dtype=np.int64)]
        for layer in self.layers:
            values.append(layer.golden(values[-1]))
        return values

    def run(self, x: np.ndarray | dict[str, np.ndarray], engine: str = "golden", **options):
        """Run a batch through ``engine`` and return what the ONNX model would (float32)."""
        from bitloom.engines import run_engine

        if isinstance(x, dict):
            if set(x) != {self.input.name}:
                from bitloom.errors import BitloomError

                raise BitloomError(f"model input is {self.input.name!r}, got {sorted(x)}")
            return {self.output.name: run_engine(self, x[self.input.name], engine, **options)}
        return run_engine(self, x, engine, **options)

    def summary(self) -> str:
        from bitloom.report import summary_text

        return summary_text(self)
