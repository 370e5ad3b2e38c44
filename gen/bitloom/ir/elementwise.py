"""Per-channel monotone float functions that sit between an accumulator and a quantizer.

The frontend collects every float op a model applies to an integer accumulator (scales,
bias, BatchNorm, ReLU, Clip) into a :class:`Chain`. Coefficients are exact rationals
(every float32 is one), so the chain can be evaluated without any rounding: that is what
makes requantization thresholds exact rather than approximately right.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np

from bitloom.ir.quantizer import Quantizer


def as_fractions(values: np.ndarray | float, channels: int) -> list[Fraction]:
    """Broadcast a scalar or per-channel float array to ``channels`` exact rationals."""
    flat = np.asarray(values, dtype=np.float64).reshape(-1)
    if flat.size == 1:
        flat = np.repeat(flat, channels)
    if flat.size != channels:
        raise ValueError(f"expected 1 or {channels} values, got {flat.size}")
    if not np.all(np.isfinite(flat)):
        raise ValueError(f"non-finite coefficient in {flat[:8]}")
    return [Fraction(float(v)) for v in flat]


@dataclass
class Affine:
    """``a[c] * x + b[c]``."""

    a: list[Fraction]
    b: list[Fraction]

    def exact(self, x: Fraction, c: int) -> Fraction:
        return self.a[c] * x + self.b[c]

    def approx(self, x: np.ndarray) -> np.ndarray:
        a = np.array([float(v) for v in self.a])
        b = np.array([float(v) for v in self.b])
        return x * a + b

    def slope_sign(self, c: int) -> int:
        return (self.a[c] > 0) - (self.a[c] < 0)


@dataclass
class Clamp:
    """``min(max(x, lo), hi)``; ReLU is ``Clamp(0, None)``. Never decreasing."""

    lo: Fraction | None
    hi: Fraction | None

    def exact(self, x: Fraction, c: int) -> Fraction:
        if self.lo is not None and x < self.lo:
            x = self.lo
        if self.hi is not None and x > self.hi:
            x = self.hi
        return x

    def approx(self, x: np.ndarray) -> np.ndarray:
        lo = -np.inf if self.lo is None else float(self.lo)
        hi = np.inf if self.hi is None else float(self.hi)
        return np.clip(x, lo, hi)

    def slope_sign(self, c: int) -> int:
        return 1


@dataclass
class Requantize:
    """An intermediate quantizer inside a chain, output as its integer value.

    A model may quantize a layer's output and then keep computing in float before the next
    quantizer (onnxruntime writes MatMul -> Q -> DQ -> Add(bias) -> Q). Rounding is
    monotone, so the whole composition still folds into one threshold table.
    """

    quantizer: Quantizer

    def exact(self, x: Fraction, c: int) -> Fraction:
        return Fraction(self.quantizer.exact(x))

    def approx(self, x: np.ndarray) -> np.ndarray:
        return self.quantizer.apply_exactly(x).astype(np.float64)

    def slope_sign(self, c: int) -> int:
        return 1


@dataclass
class Chain:
    """A composition of monotone per-channel ops, applied left to right."""

    channels: int
    ops: list[Affine | Clamp | Requantize] = field(default_factory=list)

    def then(self, op: Affine | Clamp | Requantize) -> Chain:
        """A new chain with ``op`` appended; adjacent affine ops are merged."""
        ops = list(self.ops)
        if isinstance(op, Affine) and ops and isinstance(ops[-1], Affine):
            prev = ops.pop()
            op = Affine(
                [a2 * a1 for a1, a2 in zip(prev.a, op.a, strict=True)],
                [a2 * b1 + b2 for b1, a2, b2 in zip(prev.b, op.a, op.b, strict=True)],
            )
        ops.append(op)
        return Chain(self.channels, ops)

    def exact(self, x: Fraction, c: int) -> Fraction:
        for op in self.ops:
            x = op.exact(x, c)
        return x

    def approx(self, x: np.ndarray) -> np.ndarray:
        """Float64 evaluation over a ``(..., channels)`` array (for dequantized outputs)."""
        y = np.asarray(x, dtype=np.float64)
        for op in self.ops:
            y = op.approx(y)
        return y

    def direction(self, c: int) -> int:
        """+1 if non-decreasing in ``x`` for channel ``c``, -1 if non-increasing, 0 if flat."""
        sign = 1
        for op in self.ops:
            sign *= op.slope_sign(c)
        return sign

    def describe(self) -> str:
        names = []
        for op in self.ops:
            if isinstance(op, Affine):
                names.append("scale+bias")
            elif isinstance(op, Requantize):
                names.append(f"quantize({op.quantizer.fmt})")
            elif op.lo == 0 and op.hi is None:
                names.append("relu")
            else:
                names.append("clip")
        return " -> ".join(names) or "identity"
