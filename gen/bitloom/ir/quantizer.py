"""Exact semantics of the quantizers the source dialects write.

QONNX ``Quant``: ``clip(x / scale + zero_point)`` then round with its ``rounding_mode``.
ONNX ``QuantizeLinear``: round half to even of ``x / scale``, then add ``zero_point``, then
saturate. The two differ at ties when the zero point is odd, so the order is explicit.
QONNX ``FloatQuant``: ``x / scale`` clipped to the format's range, rounded to the nearest
minifloat. Values are computed as exact rationals (array inputs take a float64 fast path
and redo only the elements that land within float error of a rounding boundary). Results
are grid integers (:meth:`~bitloom.formats.Format.to_grid`): the value itself for integers.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache

import numpy as np

from bitloom.formats import Format, Int, normalize_rounding, round_exact, round_with

CLIP_THEN_ROUND = "clip_then_round"  # QONNX Quant / IntQuant
ROUND_THEN_SHIFT = "round_then_shift"  # ONNX QuantizeLinear


@lru_cache(maxsize=64)
def finite_levels(fmt: Format) -> tuple[tuple[Fraction, ...], tuple[int, ...], tuple[int, ...]]:
    """Ascending finite values of ``fmt`` as rationals, their grid integers and code parity."""
    values = fmt.values()
    codes = fmt.encode(values)
    return (tuple(Fraction(float(v)) for v in values), tuple(int(n) for n in fmt.to_grid(values)),
            tuple(int(c) & 1 for c in codes))


def round_to_levels(t: Fraction, fmt: Format, rounding: str) -> int:
    """The grid integer of ``fmt``'s value nearest ``t`` under ``rounding``, saturating.

    Ties of the half-even mode go to the even code (the even mantissa for minifloats, the
    even integer for integers)."""
    values, grid, odd = finite_levels(fmt)
    if t <= values[0]:
        return grid[0]
    if t >= values[-1]:
        return grid[-1]
    i = bisect_right(values, t) - 1
    if values[i] == t:
        return grid[i]
    lo, hi = values[i], values[i + 1]
    towards_zero = i + 1 if hi <= 0 else i
    away = i if hi <= 0 else i + 1
    mode = normalize_rounding(rounding)
    if mode in ("floor", "ceil", "down", "up"):
        return grid[{"floor": i, "ceil": i + 1, "down": towards_zero, "up": away}[mode]]
    mid = (lo + hi) / 2
    if t != mid:
        return grid[i if t < mid else i + 1]
    tie = {"round": i if odd[i] == 0 else i + 1, "half_up": away, "half_down": towards_zero,
           "half_ceil": i + 1, "half_floor": i}
    if mode not in tie:
        raise ValueError(f"rounding mode {rounding!r} is not defined for {fmt.name}")
    return grid[tie[mode]]


@dataclass(frozen=True)
class Quantizer:
    """Real -> grid integer of ``fmt``: per-tensor ``scale`` and integer ``zero_point``."""

    fmt: Format
    scale: float
    zero_point: int = 0
    rounding: str = "round"
    order: str = CLIP_THEN_ROUND

    def describe(self) -> str:
        return f"{self.fmt} (scale {self.scale:g}, zero point {self.zero_point})"

    def exact(self, v: Fraction) -> int:
        fmt = self.fmt
        if not isinstance(fmt, Int):
            return round_to_levels(v / Fraction(self.scale) + self.zero_point, fmt,
                                   self.rounding)
        if fmt.bipolar:
            return 1 if v >= 0 else -1
        t = v / Fraction(self.scale)
        lo, hi = Fraction(fmt.min_int), Fraction(fmt.max_int)
        if self.order == CLIP_THEN_ROUND:
            return round_exact(min(max(t + self.zero_point, lo), hi), self.rounding)
        return int(min(max(round_exact(t, self.rounding) + self.zero_point, lo), hi))

    def certain(self, real: np.ndarray) -> np.ndarray:
        """Where a float64 ``real`` (itself within ~1e-15 relative of the exact value) is far
        enough from every rounding boundary that quantizing it in float64 cannot differ
        from :meth:`exact`. Only integer formats are judged; others are never certain."""
        if not isinstance(self.fmt, Int) or self.fmt.bipolar:
            return np.zeros(np.shape(real), dtype=bool)
        t = np.asarray(real, dtype=np.float64) / self.scale
        if self.order == CLIP_THEN_ROUND:
            t = t + self.zero_point
        tolerance = np.abs(t) * 1e-12 + 1e-12
        frac = t - np.floor(t)
        return (np.abs(frac - 0.5) > tolerance) & (frac > tolerance) & (1 - frac > tolerance)

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Integer values (int64) for a float32 array, exactly as :meth:`exact` would."""
        return self.apply_exactly(np.asarray(x, dtype=np.float32))

    def apply_exactly(self, x: np.ndarray) -> np.ndarray:
        """As :meth:`apply`, for float32 or float64 input (no conversion)."""
        return self._apply(x, exact_ties=True)

    def apply_float(self, x: np.ndarray) -> np.ndarray:
        """Float64 quantization with no exact redo near boundaries: a fast estimate (the
        threshold search refines it exactly)."""
        return self._apply(x, exact_ties=False)

    def _apply(self, x: np.ndarray, exact_ties: bool) -> np.ndarray:
        fmt = self.fmt
        if not isinstance(fmt, Int):
            t = np.asarray(x, np.float64) / self.scale + self.zero_point
            levels = fmt.values()
            out = fmt.to_grid(fmt.quantize(np.clip(t, levels[0], levels[-1]), self.rounding))
            if exact_ties:  # redo exactly what float error could have put on the wrong side
                edges = np.sort(np.concatenate([levels, (levels[1:] + levels[:-1]) / 2]))
                i = np.clip(np.searchsorted(edges, t), 1, len(edges) - 1)
                gap = np.minimum(np.abs(t - edges[i - 1]), np.abs(edges[i] - t))
                near = gap <= 1e-9 * np.maximum(np.abs(t), np.abs(levels).min(initial=1.0)
                                                + 1e-30)
                for idx in zip(*np.nonzero(near), strict=True):
                    out[idx] = self.exact(Fraction(float(x[idx])))
            return out.astype(np.int64)
        if fmt.bipolar:
            return np.where(x >= 0, 1, -1).astype(np.int64)
        t = np.asarray(x, dtype=np.float64) / self.scale
        shifted = t + self.zero_point  # beyond the range by more than one step: the bound
        if self.order == CLIP_THEN_ROUND:
            t = np.clip(t + self.zero_point, fmt.min_int, fmt.max_int)
            y = round_with(t, self.rounding)
        else:
            y = np.clip(round_with(t, self.rounding) + self.zero_point, fmt.min_int, fmt.max_int)
        if not exact_ties:
            return y.astype(np.int64)
        # Elements within float error of an integer or a tie are redone exactly, whatever the
        # rounding mode (each mode cares about one of the two).
        frac = t - np.floor(t)
        near = (np.abs(frac - 0.5) < 1e-9) | (frac < 1e-9) | (frac > 1 - 1e-9)
        near &= (shifted > fmt.min_int - 1) & (shifted < fmt.max_int + 1)
        for idx in zip(*np.nonzero(near), strict=True):
            y[idx] = self.exact(Fraction(float(x[idx])))
        return y.astype(np.int64)


def float32_quotient(x: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """``x / scale`` as a float32 division gives it. ONNX runtimes, qonnx's executor and
    PyTorch (so Brevitas, which trained the weights) all divide in float32, so a constant's
    quantized codes are what that quotient rounds to: a quotient that float32 puts exactly on
    a tie rounds as a tie, even where the exact quotient lies just beside it."""
    return np.asarray(x, dtype=np.float32) / np.asarray(scale, dtype=np.float32)


def quantize_elements(x: np.ndarray, fmt: Format, scale: np.ndarray, zero_point: np.ndarray,
                      rounding: str = "round", order: str = ROUND_THEN_SHIFT) -> np.ndarray:
    """Grid integers of ``x`` with a scale and zero point per element (arrays that broadcast
    against ``x``): the elements of each distinct (scale, zero point) pair are quantized
    together, exactly. Pairs are found on the parameters, before they broadcast."""
    x = np.asarray(x)
    s, z = np.broadcast_arrays(np.asarray(scale, dtype=np.float32),
                               np.asarray(zero_point, dtype=np.int64))
    pairs, inverse = np.unique(np.stack([s.ravel().astype(np.float64),
                                         z.ravel().astype(np.float64)], axis=1),
                               axis=0, return_inverse=True)
    group = np.broadcast_to(inverse.reshape(s.shape), x.shape).ravel()
    by_group = np.argsort(group, kind="stable")
    starts = np.searchsorted(group[by_group], np.arange(len(pairs) + 1))
    flat, codes = x.ravel(), np.empty(x.size, dtype=np.int64)
    for (step, zero), a, b in zip(pairs, starts[:-1], starts[1:], strict=True):
        index = by_group[a:b]
        codes[index] = Quantizer(fmt, float(step), int(zero), rounding,
                                 order).apply_exactly(flat[index])
    return codes.reshape(x.shape)


def parameter_batch(*params: np.ndarray) -> int | None:
    """The batch size parameters laid out on a batched tensor are given for (their axis 0),
    or None when they broadcast over any batch."""
    sizes = {p.shape[0] for p in params if np.ndim(p) and p.shape[0] != 1}
    return sizes.pop() if sizes else None


@dataclass(frozen=True, eq=False)
class ElementQuantizer:
    """ONNX QuantizeLinear with a scale and zero point per element (per-axis or blocked),
    as the host applies it to the model input: ``scale`` and ``zero_point`` broadcast against
    the batched ONNX tensor, whose axis 0 they may index (see :func:`parameter_batch`).
    Every element lands in one format ``fmt``: the hardware sees only its grid integers."""

    fmt: Format
    scale: np.ndarray
    zero_point: np.ndarray
    rounding: str = "round"
    order: str = ROUND_THEN_SHIFT

    @property
    def batch(self) -> int | None:
        return parameter_batch(self.scale, self.zero_point)

    def describe(self) -> str:
        shape = np.broadcast_shapes(np.shape(self.scale), np.shape(self.zero_point))
        return f"{self.fmt} (scale and zero point per element, of shape {shape}, on the host)"

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Grid integers (int64) of a batched float array (its batch must fit :attr:`batch`)."""
        return quantize_elements(np.asarray(x, dtype=np.float32), self.fmt, self.scale,
                                 self.zero_point, self.rounding, self.order)
