"""Rounding modes by name, on float arrays and on exact rationals.

Names follow QONNX's ``rounding_mode`` attribute (``ROUND`` is half-to-even, ``UP``/``DOWN``
are away from/toward zero, ``HALF_UP``/``HALF_DOWN`` break ties away from/toward zero), in
lower case; ``half_even`` is an alias of ``round``. ``half_ceil``/``half_floor`` break ties
toward +inf/-inf: ``half_ceil`` is the "add half an LSB, then truncate" rounding that fixed-point
hardware gets for free (APyFixed's ``RND``).

:func:`round_with` is exact for every float64 input: it never forms ``x + 0.5`` (which itself
rounds for ``x`` just below a tie or above 2**52), so a format's quantizer rounds exactly once.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

ROUNDING_MODES = ("round", "half_even", "ceil", "floor", "up", "down", "half_up", "half_down",
                  "half_ceil", "half_floor")


def normalize_rounding(mode: str) -> str:
    """Canonical lower-case name; raises ``ValueError`` naming the known modes."""
    m = mode.lower()
    if m == "half_even":
        m = "round"
    if m not in ROUNDING_MODES:
        raise ValueError(f"unknown rounding mode {mode!r}; known: {', '.join(ROUNDING_MODES)}")
    return m


def _half_toward_pos(x: np.ndarray) -> np.ndarray:
    # x - floor(x) is exact whenever it is below 0.5, so the tie test never misfires.
    f = np.floor(x)
    with np.errstate(invalid="ignore"):  # inf - inf: the comparison is False, inf stays
        return np.copysign(f + (x - f >= 0.5), x)


def round_with(x: np.ndarray, mode: str) -> np.ndarray:
    """Round a float array to integers (as floats) with ``mode``; the sign of zero is kept."""
    m = normalize_rounding(mode)
    x = np.asarray(x)
    if m == "round":
        return np.round(x)
    if m == "ceil":
        return np.ceil(x)
    if m == "floor":
        return np.floor(x)
    if m == "up":
        return np.copysign(np.ceil(np.abs(x)), x)
    if m == "down":
        return np.trunc(x)
    if m == "half_ceil":
        return _half_toward_pos(x)
    if m == "half_floor":
        return -_half_toward_pos(-x)
    a = np.abs(x)
    f = np.floor(a)
    with np.errstate(invalid="ignore"):
        frac = a - f  # exact for a >= 0
        up = (frac > 0.5) | ((frac == 0.5) & (m == "half_up"))
    return np.copysign(f + up, x)


def round_scaled(
    x: np.ndarray, shift: np.ndarray | int, mode: str, may_underflow: bool = True
) -> np.ndarray:
    """``round_with(x * 2**shift, mode)``, exact even where the scaled value underflows.

    Scaling by a power of two is exact unless it lands below float64's subnormals; a nonzero
    ``x`` then keeps a nonzero (tiny) stand-in, which every mode rounds like the true value.
    Callers that never scale small values down pass ``may_underflow=False`` to skip that pass.
    """
    y = np.ldexp(x, shift)
    if may_underflow:
        y = np.where((y == 0) & (x != 0), np.copysign(2.0**-1074, x), y)
    return round_with(y, mode)


def round_exact(x: Fraction, mode: str) -> int:
    """Round an exact rational to an integer with ``mode`` (no float in between)."""
    m = normalize_rounding(mode)
    if m == "round":
        return round(x)  # Fraction.__round__ breaks ties to even
    if m == "ceil":
        return math.ceil(x)
    if m == "floor":
        return math.floor(x)
    if m == "half_ceil":
        return math.floor(x + Fraction(1, 2))
    if m == "half_floor":
        return math.ceil(x - Fraction(1, 2))
    sign = 1 if x >= 0 else -1
    a = abs(x)
    if m == "up":
        return sign * math.ceil(a)
    if m == "down":
        return sign * math.floor(a)
    if m == "half_up":
        return sign * math.floor(a + Fraction(1, 2))
    return sign * math.ceil(a - Fraction(1, 2))
