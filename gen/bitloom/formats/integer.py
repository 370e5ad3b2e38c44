"""Integers of 1-16 bits, signed or unsigned, optionally narrow; 1-bit signed is bipolar."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bitloom.formats.base import Format, Grid, integer_width
from bitloom.formats.rounding import round_with


@dataclass(frozen=True)
class Int(Format):
    """Two's-complement (or unsigned) integer format.

    ``narrow`` drops the most negative code of a signed format (int8 -> [-127, 127]) as
    QONNX's ``narrow`` attribute does. A signed 1-bit integer is *bipolar*: the values
    are -1 and +1, encoded as 0 and 1 (FINN's convention), so XNOR-popcount hardware follows.
    Widths above 16 bits exist only as accumulators.
    """

    bits: int
    signed: bool = True
    narrow: bool = False

    def __post_init__(self) -> None:
        if self.bits < 1:
            raise ValueError(f"integer width must be >= 1, got {self.bits}")

    @classmethod
    def spanning(cls, lo: int, hi: int) -> Int:
        """Smallest integer format holding ``[lo, hi]`` (signed when ``lo < 0``)."""
        return cls(integer_width(lo, hi), signed=lo < 0)

    @property
    def bipolar(self) -> bool:
        return self.signed and self.bits == 1

    @property
    def name(self) -> str:
        if self.bipolar:
            return "bipolar"
        prefix = "int" if self.signed else "uint"
        return f"{prefix}{self.bits}{'n' if self.narrow else ''}"

    @property
    def min_int(self) -> int:
        if self.bipolar:
            return -1
        if not self.signed:
            return 0
        return -(2 ** (self.bits - 1)) + (1 if self.narrow else 0)

    @property
    def max_int(self) -> int:
        if self.bipolar:
            return 1
        if not self.signed:
            return 2**self.bits - 1 - (1 if self.narrow else 0)
        return 2 ** (self.bits - 1) - 1

    def grid(self) -> Grid:
        return Grid(self.min_int, self.max_int, 0)

    def quantize(self, x: np.ndarray, rounding: str = "half_even") -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if self.bipolar:
            return np.where(x >= 0, 1.0, -1.0)
        return np.clip(round_with(x, rounding), self.min_int, self.max_int)

    def encode(self, values: np.ndarray) -> np.ndarray:
        v = np.asarray(values).astype(np.int64)
        if np.any((v < self.min_int) | (v > self.max_int)) or (
            self.bipolar and np.any(v == 0)
        ):
            raise ValueError(f"value outside {self.name}")
        if self.bipolar:
            return (v > 0).astype(np.int64)
        return v & ((1 << self.bits) - 1)

    def decode(self, codes: np.ndarray) -> np.ndarray:
        c = np.asarray(codes).astype(np.int64) & ((1 << self.bits) - 1)
        if self.bipolar:
            return np.where(c == 1, 1.0, -1.0)
        if self.signed:
            c = np.where(c >= 1 << (self.bits - 1), c - (1 << self.bits), c)
        return c.astype(np.float64)

    def values(self) -> np.ndarray:
        if self.bipolar:
            return np.array([-1.0, 1.0])
        return np.arange(self.min_int, self.max_int + 1, dtype=np.float64)
