"""The :class:`Format` interface every number format implements.

A format is a finite set of values plus a bit encoding. Callers (frontend, golden model,
hardware generators) talk to formats only through this interface, so fixed-point, minifloat
and block formats slot in beside :class:`~bitloom.formats.integer.Int` without touching them.

The key to exact hardware is :meth:`Format.grid`: every finite value of every format we
support is an integer multiple of a power of two, ``value = n * 2**-frac_bits`` with ``n`` in
``[lo, hi]``. Products and sums of such values are again on a (finer, wider) grid, so an
accumulator that can never overflow or round follows from the grids alone
(:func:`accumulator_grid`). For a minifloat the grid spans its whole exponent range (LSB = the
smallest subnormal, top = the largest finite value), so the accumulator is an exact "Kulisch"
register. NaN and inf codes lie outside every grid: they are not values an accumulator holds.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Grid:
    """Every value is ``n * 2**-frac_bits`` for an integer ``n`` in ``[lo, hi]``."""

    lo: int
    hi: int
    frac_bits: int = 0

    def product(self, other: Grid) -> Grid:
        """The grid holding every product of a value of ``self`` and one of ``other``."""
        corners = [a * b for a in (self.lo, self.hi) for b in (other.lo, other.hi)]
        return Grid(min(corners), max(corners), self.frac_bits + other.frac_bits)

    def sum_of(self, count: int) -> Grid:
        """The grid holding every sum of ``count`` values of ``self``."""
        return Grid(min(0, self.lo * count), max(0, self.hi * count), self.frac_bits)

    def plus(self, other: Grid) -> Grid:
        """The grid holding ``a + b`` for ``a`` on ``self`` and ``b`` on ``other``."""
        frac = max(self.frac_bits, other.frac_bits)
        sa, sb = 1 << (frac - self.frac_bits), 1 << (frac - other.frac_bits)
        return Grid(self.lo * sa + other.lo * sb, self.hi * sa + other.hi * sb, frac)

    @property
    def signed(self) -> bool:
        return self.lo < 0

    @property
    def width(self) -> int:
        """Bits of a two's-complement (or unsigned, when ``lo >= 0``) register holding ``n``."""
        return integer_width(self.lo, self.hi)


def integer_width(lo: int, hi: int) -> int:
    """Smallest register width holding every integer in ``[lo, hi]``."""
    if lo >= 0:
        return max(1, int(hi).bit_length())
    return max(int(hi).bit_length(), int(-lo - 1).bit_length()) + 1


class Format(ABC):
    """A finite set of real values with an encoding into ``bits``-wide codes."""

    bits: int

    @property
    @abstractmethod
    def name(self) -> str:
        """Short name, as used on the command line and in reports (``int4``, ``uint8``)."""

    @abstractmethod
    def grid(self) -> Grid:
        """The power-of-two grid on which every value of the format lies."""

    @abstractmethod
    def quantize(self, x: np.ndarray, rounding: str = "half_even") -> np.ndarray:
        """Nearest representable values (float64) under ``rounding``; integers saturate,
        minifloats follow their overflow/NaN policy."""

    @abstractmethod
    def encode(self, values: np.ndarray) -> np.ndarray:
        """Representable values -> unsigned integer codes (``int64`` array)."""

    @abstractmethod
    def decode(self, codes: np.ndarray) -> np.ndarray:
        """Unsigned integer codes -> values (float64 array)."""

    @property
    def min(self) -> float:
        g = self.grid()
        return g.lo / 2**g.frac_bits

    @property
    def max(self) -> float:
        g = self.grid()
        return g.hi / 2**g.frac_bits

    def values(self) -> np.ndarray:
        """Every distinct finite value in ``[min, max]``, ascending (formats of <= 16 bits).

        Decoded from every code, so NaN/inf codes (and codes a ``max_val`` excludes) drop out.
        """
        if self.bits > 16:
            raise ValueError(f"{self.name}: refusing to enumerate 2**{self.bits} codes")
        v = self.decode(np.arange(2**self.bits, dtype=np.int64))
        return np.unique(v[(v >= self.min) & (v <= self.max)]) + 0.0  # one zero, +0

    def to_grid(self, values: np.ndarray) -> np.ndarray:
        """Finite values -> their integers on :meth:`grid` (``value * 2**frac_bits``, exact).

        Hardware and the golden model carry these integers: products and sums of them are
        exact integer arithmetic for every format.
        """
        n = np.ldexp(np.asarray(values, dtype=np.float64), self.grid().frac_bits)
        if not np.all(n == np.round(n)):
            raise ValueError(f"value not on the grid of {self.name}")
        return n.astype(np.int64)

    def from_grid(self, n: np.ndarray) -> np.ndarray:
        """Grid integers -> values (float64)."""
        return np.ldexp(np.asarray(n, dtype=np.float64), -self.grid().frac_bits)

    def grid_levels(self) -> np.ndarray:
        """Every finite value as a grid integer, ascending."""
        return self.to_grid(self.values())

    def __str__(self) -> str:
        return self.name


def accumulator_grid(
    weights: Format, inputs: Format, length: int, extra: Grid | None = None
) -> Grid:
    """The grid holding any dot product of ``length`` terms ``w * x`` exactly.

    ``length=1`` is the exact product. ``extra`` widens it for a constant added into the sum
    (e.g. a folded bias).
    """
    grid = weights.grid().product(inputs.grid()).sum_of(length)
    return grid if extra is None else grid.plus(extra)


def accumulator_format(
    weights: Format, inputs: Format, length: int, extra: Grid | None = None
) -> Format:
    """The register that holds any dot product of ``length`` terms exactly.

    An :class:`~bitloom.formats.integer.Int` when the product grid is integral (integer
    operands), else a :class:`~bitloom.formats.fixed.Fixed` with the grid's binary point.
    """
    from bitloom.formats.fixed import Fixed
    from bitloom.formats.integer import Int

    grid = accumulator_grid(weights, inputs, length, extra)
    if grid.frac_bits == 0:
        return Int.spanning(grid.lo, grid.hi)
    return Fixed.spanning(grid)
