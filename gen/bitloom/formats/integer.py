"""Integers of 1-16 bits, signed or unsigned, optionally narrow; 1-bit signed is bipolar.

The integer-code helpers here (range, saturate/wrap, two's-complement codes) are shared with
:class:`~bitloom.formats.fixed.Fixed`, which is the same thing with a binary point.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bitloom.formats.base import Format, Grid, integer_width
from bitloom.formats.rounding import round_with

OVERFLOW_MODES = ("saturate", "wrap")


def int_range(bits: int, signed: bool, narrow: bool) -> tuple[int, int]:
    """``(lo, hi)`` of a ``bits``-wide integer; ``narrow`` drops one code as QONNX does."""
    if signed:
        return -(2 ** (bits - 1)) + narrow, 2 ** (bits - 1) - 1
    return 0, 2**bits - 1 - narrow


def fit_range(n: np.ndarray, bits: int, signed: bool, narrow: bool, overflow: str) -> np.ndarray:
    """Bring rounded integers ``n`` (floats) into range: clip, or wrap modulo ``2**bits``.

    Integers have one zero: the result never holds -0.
    """
    lo, hi = int_range(bits, signed, narrow)
    if overflow == "saturate":
        return np.clip(n, lo, hi) + 0.0
    if overflow != "wrap":
        raise ValueError(f"unknown overflow mode {overflow!r}; known: {', '.join(OVERFLOW_MODES)}")
    if narrow:
        raise ValueError("wrapping needs every two's-complement code; a narrow format saturates")
    # fmod of an integer-valued float by a power of two is exact, even for huge n; ±inf -> NaN.
    with np.errstate(invalid="ignore"):
        return np.mod(n - lo, float(2**bits)) + lo


def encode_int(n: np.ndarray, bits: int, lo: int, hi: int, name: str) -> np.ndarray:
    """Integers in ``[lo, hi]`` -> ``bits``-wide two's-complement codes; rejects anything else."""
    n = np.asarray(n)
    if bits > 63:
        raise ValueError(f"{name}: {bits}-bit codes do not fit int64")
    if n.dtype.kind == "f":
        if not np.all(np.isfinite(n) & (n == np.round(n))):
            raise ValueError(f"value outside {name}")
        n = n.astype(np.int64)
    n = n.astype(np.int64)
    if np.any((n < lo) | (n > hi)):
        raise ValueError(f"value outside {name}")
    return n & ((1 << bits) - 1)


def decode_int(codes: np.ndarray, bits: int, signed: bool) -> np.ndarray:
    """``bits``-wide codes -> integers (int64), sign-extended when ``signed``."""
    c = np.asarray(codes).astype(np.int64) & ((1 << bits) - 1)
    if signed:
        c = np.where(c >= 1 << (bits - 1), c - (1 << bits), c)
    return c


@dataclass(frozen=True)
class Int(Format):
    """Two's-complement (or unsigned) integer format.

    ``narrow`` drops the most negative code of a signed format (int8 -> [-127, 127]) as
    QONNX's ``narrow`` attribute does; ``int2n`` is *ternary* {-1, 0, 1}. A signed 1-bit
    integer is *bipolar*: the values are -1 and +1, encoded as 0 and 1 (FINN's convention), so
    XNOR-popcount hardware follows. Widths above 16 bits exist only as accumulators.
    """

    bits: int
    signed: bool = True
    narrow: bool = False

    def __post_init__(self) -> None:
        if self.bits < 1:
            raise ValueError(f"integer width must be >= 1, got {self.bits}")
        if self.bipolar:
            object.__setattr__(self, "narrow", False)  # {-1, +1} has nothing to narrow

    @classmethod
    def spanning(cls, lo: int, hi: int) -> Int:
        """Smallest integer format holding ``[lo, hi]`` (signed when ``lo < 0``).

        Signed results have at least 2 bits: a signed 1-bit Int is bipolar, which lacks 0.
        """
        bits = integer_width(lo, hi)
        return cls(max(bits, 2) if lo < 0 else bits, signed=lo < 0)

    @property
    def bipolar(self) -> bool:
        return self.signed and self.bits == 1

    @property
    def ternary(self) -> bool:
        return self.signed and self.narrow and self.bits == 2

    @property
    def name(self) -> str:
        if self.bipolar:
            return "bipolar"
        if self.ternary:
            return "ternary"
        prefix = "int" if self.signed else "uint"
        return f"{prefix}{self.bits}{'n' if self.narrow else ''}"

    @property
    def min_int(self) -> int:
        return -1 if self.bipolar else int_range(self.bits, self.signed, self.narrow)[0]

    @property
    def max_int(self) -> int:
        return 1 if self.bipolar else int_range(self.bits, self.signed, self.narrow)[1]

    def grid(self) -> Grid:
        return Grid(self.min_int, self.max_int, 0)

    def quantize(
        self, x: np.ndarray, rounding: str = "half_even", overflow: str = "saturate"
    ) -> np.ndarray:
        """Nearest integers under ``rounding``; out-of-range values saturate or wrap."""
        x = np.asarray(x, dtype=np.float64)
        if self.bipolar:
            return np.where(x >= 0, 1.0, -1.0)
        return fit_range(round_with(x, rounding), self.bits, self.signed, self.narrow, overflow)

    def encode(self, values: np.ndarray) -> np.ndarray:
        v = np.asarray(values)
        if self.bipolar:
            if not np.all((v == 1) | (v == -1)):
                raise ValueError(f"value outside {self.name}")
            return (v > 0).astype(np.int64)
        return encode_int(v, self.bits, self.min_int, self.max_int, self.name)

    def decode(self, codes: np.ndarray) -> np.ndarray:
        if self.bipolar:
            c = np.asarray(codes).astype(np.int64) & 1
            return np.where(c == 1, 1.0, -1.0)
        return decode_int(codes, self.bits, self.signed).astype(np.float64)

    def values(self) -> np.ndarray:
        if self.bipolar:
            return np.array([-1.0, 1.0])
        return np.arange(self.min_int, self.max_int + 1, dtype=np.float64)


TERNARY = Int(2, signed=True, narrow=True)
