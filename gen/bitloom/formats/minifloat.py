"""Minifloats: one parameterized class for every exponent/mantissa/bias/special-value policy.

A code is ``[sign] exponent-field mantissa-field``. With subnormals, field ``e = 0`` means
``m * 2**(1 - bias - M)`` and ``e >= 1`` means ``(2**M + m) * 2**(e - bias - M)``; without them
(E8M0) every field is a normal binade, so the format has no zero. ``specials`` reserves codes:

========  ==========================================================  ==================
policy    reserved codes                                              e.g.
========  ==========================================================  ==================
ieee      top exponent: mantissa 0 is ±inf, the rest NaN              float8_e5m2
fn        all-ones exponent and mantissa is NaN (both signs); no inf  float8_e4m3fn
fnuz      the code ``1000...0`` (negative zero) is the only NaN       float8_e4m3fnuz
finite    none: every code is a number                                float4_e2m1fn
========  ==========================================================  ==================

Quantization rounds once, exactly: ``np.frexp`` finds the binade, ``np.ldexp`` scales by powers
of two, and :func:`~bitloom.formats.rounding.round_scaled` rounds the integer significand.
The result is rounded on the format's unbounded grid first; only then is it compared with
``max`` (so ``464`` rounds to 448 in E4M3FN but ``465`` overflows), as ml_dtypes, ONNX and
QONNX's ``float_quant`` all do. Overflow and ±inf inputs saturate to ±max when ``saturating``
(ONNX ``saturate=1``); otherwise they become ±inf if the format has inf, else NaN (ml_dtypes'
casts, ONNX ``saturate=0``). A format with neither inf nor NaN always saturates. NaN inputs
stay NaN; a format without NaN maps NaN to zero of the opposite sign, exactly like ml_dtypes
(whose ``quiet_NaN()`` for those types is the code of -0).
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from functools import cached_property

import numpy as np

from bitloom.formats.base import Format, Grid
from bitloom.formats.rounding import round_scaled

SPECIALS = ("ieee", "fn", "fnuz", "finite")


@dataclass(frozen=True)
class Minifloat(Format):
    """A floating-point format of ``exp_bits`` (1-8) and ``man_bits`` (0-23) bits.

    ``bias`` defaults to the IEEE ``2**(E-1) - 1``. ``max_val`` (QONNX FloatQuant's) lowers the
    largest value to a representable one below the natural maximum; codes above it still
    decode but are never produced. ``subnormals=False`` (no zero) is for unsigned scale formats.
    """

    exp_bits: int
    man_bits: int
    bias: int | None = None
    subnormals: bool = True
    specials: str = "finite"
    saturating: bool = True
    signed: bool = True
    max_val: float | None = None

    def __post_init__(self) -> None:
        e, m = self.exp_bits, self.man_bits
        if not (1 <= e <= 8 and 0 <= m <= 23):
            raise ValueError(f"minifloat needs 1-8 exponent and 0-23 mantissa bits, got e{e}m{m}")
        if self.bias is None:
            object.__setattr__(self, "bias", 2 ** (e - 1) - 1)
        if self.specials not in SPECIALS:
            raise ValueError(f"unknown specials {self.specials!r}; known: {', '.join(SPECIALS)}")
        if self.specials == "ieee" and m == 0:
            raise ValueError("an IEEE-like format needs a mantissa bit to tell NaN from inf")
        if self.specials == "fnuz" and not self.signed:
            raise ValueError("fnuz keeps its NaN in the sign bit; it needs a signed format")
        if not self.subnormals and self.signed:
            raise ValueError("without subnormals there is no zero; only unsigned scales allow it")
        if not (self._q_min >= -1074 and 2**e - self.bias <= 1023):
            raise ValueError(f"bias {self.bias} puts e{e}m{m} outside float64's range")
        if self._max_code == 0 and self.subnormals:
            raise ValueError(f"e{e}m{m} with {self.specials} specials has no positive value")
        if not (self.has_inf or self.has_nan):
            object.__setattr__(self, "saturating", True)  # nothing else to overflow to
        if self.max_val is not None:
            self._set_max_val(float(self.max_val))

    def _set_max_val(self, mv: float) -> None:
        natural = self._magnitude(self._max_code) * Fraction(2) ** self._q_min
        if not 0 < mv <= natural:
            raise ValueError(f"max_val {mv} is not in (0, {float(natural)}] of this format")
        units = Fraction(mv) / Fraction(2) ** self._q_min
        lsb = 2 ** max(0, int(units).bit_length() - 1 - self.man_bits)
        if units.denominator != 1 or units.numerator % lsb:
            raise ValueError(f"max_val {mv} is not a value of the format")
        object.__setattr__(self, "max_val", None if mv == natural else mv)

    # -- structure ------------------------------------------------------------------------

    @property
    def bits(self) -> int:
        return self.signed + self.exp_bits + self.man_bits

    @property
    def has_inf(self) -> bool:
        return self.specials == "ieee"

    @property
    def has_nan(self) -> bool:
        return self.specials != "finite"

    @property
    def _q_min(self) -> int:
        """Exponent of the LSB of the lowest binade: the grid's ``-frac_bits``."""
        return int(self.subnormals) - self.bias - self.man_bits

    @property
    def _max_code(self) -> int:
        """Magnitude code of the natural largest finite value."""
        ones = 2 ** (self.exp_bits + self.man_bits) - 1
        return {"finite": ones, "fnuz": ones, "fn": ones - 1, "ieee": ones - 2**self.man_bits}[
            self.specials
        ]

    def _magnitude(self, code: int) -> int:
        """Magnitude code -> integer significand in units of ``2**_q_min``."""
        e, m = code >> self.man_bits, code % 2**self.man_bits
        if self.subnormals:
            return code if e == 0 else (2**self.man_bits + m) << (e - 1)
        return (2**self.man_bits + m) << e

    def grid(self) -> Grid:
        if self.max_val is None:
            hi = self._magnitude(self._max_code)
        else:
            hi = int(Fraction(self.max_val) / Fraction(2) ** self._q_min)
        lo = -hi if self.signed else self._magnitude(0)
        return Grid(lo, hi, -self._q_min)

    @cached_property
    def _limits(self) -> tuple[float, float]:
        """(smallest value, largest value) as floats, for the vectorized paths."""
        return self.min, self.max

    @property
    def name(self) -> str:
        from bitloom.formats.names import canonical_name

        return canonical_name(self) or self.spelled_name

    @property
    def spelled_name(self) -> str:
        """``[u]eXmY`` plus ``_``-joined modifiers for every field off its default."""
        parts = [f"{'' if self.signed else 'u'}e{self.exp_bits}m{self.man_bits}"]
        if self.bias != 2 ** (self.exp_bits - 1) - 1:
            parts.append(f"b{self.bias}")
        if self.specials != "finite":
            parts.append(self.specials)
        if not self.subnormals:
            parts.append("nosub")
        if not self.saturating:
            parts.append("nosat")
        if self.max_val is not None:
            parts.append(f"max{self.max_val:.17g}")
        return "_".join(parts)

    # -- arithmetic -----------------------------------------------------------------------

    def quantize(self, x: np.ndarray, rounding: str = "half_even") -> np.ndarray:
        """Nearest values under ``rounding``, with the overflow/NaN policy of the module doc."""
        x = np.asarray(x, dtype=np.float64)
        lo, hi = self._limits
        _, e = np.frexp(x)
        q = np.maximum(e - (1 + self.man_bits), self._q_min)  # LSB exponent of x's binade
        # only a grid whose LSB exceeds 1 scales small values down (far enough to underflow)
        r = np.ldexp(round_scaled(x, -q, rounding, may_underflow=self._q_min > 0), q)
        if not self.subnormals:  # no zero: the smallest value is the nearest to any tiny x > 0
            r = np.where((r < lo) & (x > 0), lo, r)
        if self.saturating:
            r = np.clip(r, lo, hi)
        else:
            special = np.inf if self.has_inf else np.nan
            r = np.where(r > hi, special, r)
            r = np.where(r < lo, -special if self.signed else np.nan, r)
        if self.has_nan:
            r = np.where(np.isnan(x), x, r)
        else:
            r = np.where(np.isnan(x), np.where(np.signbit(x), 0.0, -0.0) if self.signed else lo, r)
        if self.specials == "fnuz" or not self.signed:
            r = r + 0.0  # no negative zero
        return r

    def encode(self, values: np.ndarray) -> np.ndarray:
        """Values -> codes; raises ``ValueError`` for anything the format does not hold."""
        v = np.asarray(values, dtype=np.float64)
        ebits, mbits, bias = self.exp_bits, self.man_bits, self.bias
        finite = np.isfinite(v)
        a = np.where(finite, np.abs(v), 0.0)
        _, e = np.frexp(a)
        field = e - 1 + bias
        if self.subnormals:
            field = np.where(a < 2.0 ** (1 - bias), 0, field)
        field = np.clip(field, 0, 2**ebits - 1)
        lsb = np.where(field == 0, self._q_min, field - bias - mbits)
        n = np.ldexp(a, -lsb) - np.where((field > 0) | (not self.subnormals), 2**mbits, 0)
        mag = (field.astype(np.int64) << mbits) | np.clip(n, 0, 2**mbits - 1).astype(np.int64)
        ones = 2 ** (ebits + mbits) - 1
        if self.has_inf:
            mag = np.where(np.isinf(v), ones - 2**mbits + 1, mag)
        nan_mag = {"ieee": ones - 2**mbits + 1 + 2 ** (mbits - 1), "fn": ones}.get(self.specials, 0)
        mag = np.where(np.isnan(v), nan_mag, mag)
        codes = mag
        if self.signed:
            codes = mag | (np.signbit(v).astype(np.int64) << (ebits + mbits))
        if self.specials == "fnuz":
            codes = np.where(v == 0, 0, np.where(np.isnan(v), 1 << (self.bits - 1), codes))
        back = self.decode(codes)
        ok = (back == v) | (np.isnan(back) & np.isnan(v))
        if not np.all(ok & ~(finite & ((v > self.max) | (v < self.min)))):
            bad = v[~ok][:3] if np.any(~ok) else v[(v > self.max) | (v < self.min)][:3]
            raise ValueError(f"values outside {self.name}: {bad}")
        return codes

    def decode(self, codes: np.ndarray) -> np.ndarray:
        ebits, mbits = self.exp_bits, self.man_bits
        c = np.asarray(codes).astype(np.int64) & ((1 << self.bits) - 1)
        mag = c & ((1 << (ebits + mbits)) - 1)
        field, m = mag >> mbits, mag & ((1 << mbits) - 1)
        if self.subnormals:
            x = np.ldexp(np.where(field == 0, m, m + 2**mbits).astype(np.float64),
                         np.maximum(field, 1) - self.bias - mbits)
        else:
            x = np.ldexp((m + 2**mbits).astype(np.float64), field - self.bias - mbits)
        if self.specials == "ieee":
            x = np.where(field == 2**ebits - 1, np.where(m == 0, np.inf, np.nan), x)
        elif self.specials == "fn":
            x = np.where(mag == (1 << (ebits + mbits)) - 1, np.nan, x)
        elif self.specials == "fnuz":
            x = np.where(c == 1 << (self.bits - 1), np.nan, x)
        if self.signed:
            x = np.where(c >> (ebits + mbits), -x, x)
        return x


def float_quant_format(
    exponent_bitwidth: int,
    mantissa_bitwidth: int,
    exponent_bias: int | None = None,
    max_val: float | None = None,
    has_inf: bool = False,
    has_nan: bool = False,
    saturation: bool = True,
    signed: bool = True,
) -> Minifloat:
    """The :class:`Minifloat` that QONNX's ``FloatQuant`` (with unit scale) quantizes to.

    QONNX's reference always keeps subnormals (it ignores ``has_subnormal``) and by default
    uses every exponent for numbers; ``has_inf``/``has_nan`` only say what non-saturating
    overflow becomes, so they need codes above ``max_val``: ``has_inf`` picks the ``ieee``
    policy, ``has_nan`` alone ``fn``. A ``max_val`` inside those reserved codes raises.
    """
    e, m = int(exponent_bitwidth), int(mantissa_bitwidth)
    bias = None if exponent_bias is None else int(exponent_bias)
    if max_val is None:  # QONNX's compute_max_val: all codes are numbers
        max_val = Minifloat(e, m, bias, signed=signed).max
    specials = "ieee" if has_inf else "fn" if has_nan else "finite"
    if not saturation and specials == "finite":
        raise ValueError("a non-saturating FloatQuant needs has_inf or has_nan")
    return Minifloat(e, m, bias, specials=specials, saturating=bool(saturation),
                     signed=signed, max_val=float(max_val))
