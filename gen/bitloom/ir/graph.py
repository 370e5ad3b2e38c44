"""The typed graph bitloom compiles: host-side quantizers around a chain of integer layers.

The frontend produces a :class:`Network`; the golden executor runs it exactly; the planner
folds it; the hardware backends build it. Tensors between layers carry integer *values*
in a :class:`~bitloom.formats.Format` (never floats), laid out channel-last.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np

from bitloom.formats import Int, round_exact, round_with
from bitloom.ir.elementwise import Chain
from bitloom.ir.requant import Thresholds


@dataclass
class InputQuantizer:
    """Host side: float model input -> integer values (QONNX ``Quant`` semantics).

    ``value = clip(x / scale + zero_point)`` then rounded, exactly: in float64, with the few
    elements that land within float error of a rounding boundary redone in rationals.
    """

    name: str  # the ONNX graph input
    shape: tuple[int, ...]  # per-sample shape of the ONNX input (batch axis dropped)
    flat_shape: tuple[int, ...]  # per-sample shape after host-side reshapes
    fmt: Int
    scale: float
    zero_point: int
    rounding: str

    def apply(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        if x.shape[1:] != self.shape:
            from bitloom.errors import BitloomError

            raise BitloomError(
                f"input {self.name!r} must have shape (batch, {', '.join(map(str, self.shape))})"
                f", got {x.shape}"
            )
        x = x.reshape((x.shape[0], *self.flat_shape))
        if self.fmt.bipolar:
            return np.where(x >= 0, 1, -1).astype(np.int64)
        t = x.astype(np.float64) / self.scale + self.zero_point
        t = np.clip(t, self.fmt.min_int, self.fmt.max_int)
        y = round_with(t, self.rounding)
        # Only ties matter to the half-way modes, only integers to the directed ones.
        boundary = 0.5 if self.rounding in ("round", "half_up", "half_down") else 0.0
        frac = t - np.floor(t)
        near = np.abs(frac - boundary) < 1e-9
        if boundary == 0.0:
            near |= frac > 1 - 1e-9
        scale = Fraction(self.scale)
        for idx in zip(*np.nonzero(near), strict=True):
            exact = Fraction(float(x[idx])) / scale + self.zero_point
            exact = min(max(exact, Fraction(self.fmt.min_int)), Fraction(self.fmt.max_int))
            y[idx] = round_exact(exact, self.rounding)
        return y.astype(np.int64)


@dataclass
class MatrixVector:
    """``acc = x @ weights`` on integer values, then thresholds (or the raw accumulator)."""

    name: str
    weights: np.ndarray  # int64 [K, N] values of w_fmt
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
