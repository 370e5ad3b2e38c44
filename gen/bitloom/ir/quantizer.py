"""Exact semantics of the quantizers the source dialects write.

QONNX ``Quant``: ``clip(x / scale + zero_point)`` then round with its ``rounding_mode``.
ONNX ``QuantizeLinear``: round half to even of ``x / scale``, then add ``zero_point``, then
saturate. The two differ at ties when the zero point is odd, so the order is explicit.
Values are computed as exact rationals (array inputs take a float64 fast path and redo only
the elements that land within float error of a rounding boundary).
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from bitloom.formats import Int, round_exact, round_with

CLIP_THEN_ROUND = "clip_then_round"  # QONNX Quant / IntQuant
ROUND_THEN_SHIFT = "round_then_shift"  # ONNX QuantizeLinear


@dataclass(frozen=True)
class Quantizer:
    """Real -> integer value of ``fmt``: per-tensor ``scale`` and integer ``zero_point``."""

    fmt: Int
    scale: float
    zero_point: int = 0
    rounding: str = "round"
    order: str = CLIP_THEN_ROUND

    def exact(self, v: Fraction) -> int:
        fmt = self.fmt
        if fmt.bipolar:
            return 1 if v >= 0 else -1
        t = v / Fraction(self.scale)
        lo, hi = Fraction(fmt.min_int), Fraction(fmt.max_int)
        if self.order == CLIP_THEN_ROUND:
            return round_exact(min(max(t + self.zero_point, lo), hi), self.rounding)
        return int(min(max(round_exact(t, self.rounding) + self.zero_point, lo), hi))

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Integer values (int64) for a float32 array, exactly as :meth:`exact` would."""
        return self.apply_exactly(np.asarray(x, dtype=np.float32))

    def apply_exactly(self, x: np.ndarray) -> np.ndarray:
        """As :meth:`apply`, for float32 or float64 input (no conversion)."""
        fmt = self.fmt
        if fmt.bipolar:
            return np.where(x >= 0, 1, -1).astype(np.int64)
        t = x.astype(np.float64) / self.scale
        if self.order == CLIP_THEN_ROUND:
            t = np.clip(t + self.zero_point, fmt.min_int, fmt.max_int)
            y = round_with(t, self.rounding)
        else:
            y = np.clip(round_with(t, self.rounding) + self.zero_point, fmt.min_int, fmt.max_int)
        # Elements within float error of an integer or a tie are redone exactly, whatever the
        # rounding mode (each mode cares about one of the two).
        frac = t - np.floor(t)
        near = (np.abs(frac - 0.5) < 1e-9) | (frac < 1e-9) | (frac > 1 - 1e-9)
        for idx in zip(*np.nonzero(near), strict=True):
            y[idx] = self.exact(Fraction(float(x[idx])))
        return y.astype(np.int64)
