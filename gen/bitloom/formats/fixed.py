"""Fixed point: a ``bits``-wide integer ``n`` read as ``n * 2**-frac_bits``.

``frac_bits`` may exceed ``bits`` (all bits fractional) or be negative (the LSB weighs 2, 4,
...), so every :class:`~bitloom.formats.base.Grid` has a matching Fixed: that is what
:func:`~bitloom.formats.base.accumulator_format` returns for non-integer grids.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bitloom.formats.base import Format, Grid, integer_width
from bitloom.formats.integer import decode_int, encode_int, fit_range, int_range
from bitloom.formats.rounding import round_scaled


@dataclass(frozen=True)
class Fixed(Format):
    """Two's-complement (or unsigned) fixed point; ``narrow`` drops the most negative code.

    Rounding (any of :data:`~bitloom.formats.rounding.ROUNDING_MODES`) and overflow
    (``saturate`` or ``wrap``) are properties of a quantizer, so :meth:`quantize` takes them.
    Integer formats have no NaN or inf code: ``quantize`` passes NaN through (and ``wrap`` turns
    ±inf into NaN), and ``encode`` rejects them.
    """

    bits: int
    frac_bits: int
    signed: bool = True
    narrow: bool = False

    def __post_init__(self) -> None:
        if self.bits < (2 if self.signed else 1):
            raise ValueError(f"fixed-point width must be >= {2 if self.signed else 1}")

    @classmethod
    def spanning(cls, grid: Grid) -> Fixed:
        """Smallest fixed-point format holding every value of ``grid``."""
        signed = grid.lo < 0
        bits = integer_width(grid.lo, grid.hi)
        return cls(max(bits, 2) if signed else bits, grid.frac_bits, signed)

    @property
    def name(self) -> str:
        return f"{'' if self.signed else 'u'}fixed{self.bits}.{self.frac_bits}" + (
            "n" if self.narrow else ""
        )

    def grid(self) -> Grid:
        return Grid(*int_range(self.bits, self.signed, self.narrow), self.frac_bits)

    def quantize(
        self, x: np.ndarray, rounding: str = "half_even", overflow: str = "saturate"
    ) -> np.ndarray:
        """Nearest multiples of ``2**-frac_bits`` under ``rounding``; saturate or wrap."""
        x = np.asarray(x, dtype=np.float64)
        n = round_scaled(x, self.frac_bits, rounding, may_underflow=self.frac_bits < 0)
        n = fit_range(n, self.bits, self.signed, self.narrow, overflow)
        return np.ldexp(n, -self.frac_bits)

    def encode(self, values: np.ndarray) -> np.ndarray:
        lo, hi = int_range(self.bits, self.signed, self.narrow)
        n = np.ldexp(np.asarray(values, dtype=np.float64), self.frac_bits)
        return encode_int(n, self.bits, lo, hi, self.name)

    def decode(self, codes: np.ndarray) -> np.ndarray:
        n = decode_int(codes, self.bits, self.signed).astype(np.float64)
        return np.ldexp(n, -self.frac_bits)
