"""Rounding modes by name, on float arrays and on exact rationals.

Names follow QONNX's ``rounding_mode`` attribute (``ROUND`` is half-to-even, ``UP``/``DOWN``
are away from/toward zero, ``HALF_UP``/``HALF_DOWN`` break ties away from/toward zero), in
lower case; ``half_even`` is an alias of ``round``.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

ROUNDING_MODES = ("round", "half_even", "ceil", "floor", "up", "down", "half_up", "half_down")


def normalize_rounding(mode: str) -> str:
    """Canonical lower-case name; raises ``ValueError`` naming the known modes."""
    m = mode.lower()
    if m == "half_even":
        m = "round"
    if m not in ROUNDING_MODES:
        raise ValueError(f"unknown rounding mode {mode!r}; known: {', '.join(ROUNDING_MODES)}")
    return m


def round_with(x: np.ndarray, mode: str) -> np.ndarray:
    """Round a float array to integers (as floats) with ``mode``."""
    m = normalize_rounding(mode)
    if m == "round":
        return np.round(x)
    if m == "ceil":
        return np.ceil(x)
    if m == "floor":
        return np.floor(x)
    if m == "up":
        return np.sign(x) * np.ceil(np.abs(x))
    if m == "down":
        return np.fix(x)
    if m == "half_up":
        return np.sign(x) * np.floor(np.abs(x) + 0.5)
    return np.sign(x) * np.ceil(np.abs(x) - 0.5)


def round_exact(x: Fraction, mode: str) -> int:
    """Round an exact rational to an integer with ``mode`` (no float in between)."""
    m = normalize_rounding(mode)
    if m == "round":
        return round(x)  # Fraction.__round__ breaks ties to even
    if m == "ceil":
        return math.ceil(x)
    if m == "floor":
        return math.floor(x)
    sign = 1 if x >= 0 else -1
    a = abs(x)
    if m == "up":
        return sign * math.ceil(a)
    if m == "down":
        return sign * math.floor(a)
    if m == "half_up":
        return sign * math.floor(a + Fraction(1, 2))
    return sign * math.ceil(a - Fraction(1, 2))
