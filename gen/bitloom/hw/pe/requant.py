"""Requantizers: an exact integer accumulator -> the next layer's code, in one rounding.

Thresholds (:mod:`bitloom.ir.requant`) cover any monotone chain for outputs up to 8 bits;
these units cover the cases where a table is too large or needless:

- :class:`ScaleRequantizer`: ``clip(round(acc * M / 2**S) + zero_point)`` for Int/Fixed
  outputs of up to 16 bits, with :func:`multiplier` deriving ``(M, S)`` from the rational
  ratio of the accumulator's LSB to the output scale (and saying whether it is exact);
- :class:`MinifloatRequantizer`: a fixed-point accumulator to any :class:`Minifloat` by
  leading-one detection, one rounding of the significand, subnormals, and saturation or
  inf/NaN as the format says.

Both round with any mode of :mod:`bitloom.formats.rounding` through :func:`round_increment`,
and take ``pipeline`` (0 or 1): a register after the multiply / normalization.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
from amaranth import Const, Module, Mux, Signal, signed, unsigned
from amaranth.hdl import Shape, Value
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from bitloom.formats import Fixed, Int, Minifloat, normalize_rounding
from bitloom.ir.quantizer import CLIP_THEN_ROUND, Quantizer


def multiplier(ratio: Fraction, bits: int = 24) -> tuple[int, int, bool]:
    """``(M, S, exact)`` with ``M / 2**S`` equal to ``ratio`` when its denominator is a power
    of two (``exact``), else the nearest with ``M`` of ``bits`` significant bits."""
    ratio = Fraction(ratio)
    if ratio <= 0:
        raise ValueError(f"scale ratio must be positive, got {ratio}")
    den = ratio.denominator
    if den & (den - 1) == 0:
        return ratio.numerator, den.bit_length() - 1, True
    shift = bits - (ratio.numerator.bit_length() - den.bit_length())
    while ratio * 2**shift >= 2**bits:
        shift -= 1
    while ratio * 2**shift < 2 ** (bits - 1):
        shift += 1
    shift = max(shift, 0)
    return round(ratio * 2**shift), shift, False


def round_increment(mode: str, above: Value, at: Value, inexact: Value, odd: Value,
                    up: Value | int, away: Value | int) -> Value:
    """Whether to add one LSB to a truncated result under ``mode``.

    ``above``/``at``: the dropped part is more than / exactly half an LSB; ``inexact``: it is
    not zero; ``odd``: the kept LSB. ``up``/``away``: adding one moves toward +inf / away
    from zero -- (1, sign-is-positive) for floor-truncated two's complement, (positive, 1)
    for a truncated magnitude -- so one table serves both datapaths.
    """
    m = normalize_rounding(mode)
    up, away = Value.cast(up), Value.cast(away)
    directed = {"ceil": up, "floor": ~up, "up": away, "down": ~away}
    if m in directed:
        return inexact & directed[m]
    tie = {"round": odd, "half_ceil": up, "half_floor": ~up, "half_up": away,
           "half_down": ~away}[m]
    return above | (at & tie)


def dropped(value: Value, shift: Value | int) -> tuple[Value, Value, Value]:
    """``(above, at, inexact)`` of the ``shift`` low bits of ``value`` (vs. half an LSB)."""
    low = value & ((Const(1, 1) << shift) - 1)
    half = Const(1, 1) << (shift - 1) if isinstance(shift, int) and shift >= 1 else \
        (Const(1, 1) << shift) >> 1
    return low > half, (low == half) & (low != 0), low != 0


class ScaleRequantizer(wiring.Component):
    """``code = clip(round(acc * M / 2**S) + zp)`` exactly as ``quantizer`` would compute
    it for the real value ``acc * lsb`` (Int/Fixed outputs; QONNX or ONNX order)."""

    def __init__(self, acc_shape: Shape, lsb: Fraction, quantizer: Quantizer,
                 bits: int = 24, pipeline: int = 0) -> None:
        fmt = quantizer.fmt
        if not isinstance(fmt, Int | Fixed) or (isinstance(fmt, Int) and fmt.bipolar):
            raise ValueError(f"{fmt.name}: the scale requantizer writes Int or Fixed codes")
        if fmt.bits > 16:
            raise ValueError(f"{fmt.name}: outputs of at most 16 bits")
        frac = fmt.frac_bits if isinstance(fmt, Fixed) else 0
        self.fmt, self.quantizer, self.pipeline = fmt, quantizer, pipeline
        self.m_, self.s_, self.exact = multiplier(Fraction(lsb) / Fraction(quantizer.scale)
                                                  * Fraction(2) ** frac, bits)
        zp = quantizer.zero_point * Fraction(2) ** frac  # in output LSBs
        if zp.denominator != 1:
            raise ValueError(f"zero point {quantizer.zero_point} is not on {fmt.name}'s grid")
        self.zp = int(zp)
        # Fixed outputs round onto levels after the zero point, as QONNX's Quant does
        self.clip_first = isinstance(fmt, Fixed) or quantizer.order == CLIP_THEN_ROUND
        lo, hi = fmt.grid().lo, fmt.grid().hi
        self.lo, self.hi = lo, hi
        super().__init__({"acc": In(acc_shape), "code": Out(fmt.bits)})

    def elaborate(self, platform) -> Module:
        m = Module()
        scaled = self.acc * self.m_
        if self.clip_first:
            scaled = scaled + (self.zp << self.s_)
        if self.pipeline:
            reg = Signal(scaled.shape())
            m.d.sync += reg.eq(scaled)
            scaled = reg
        q = scaled >> self.s_  # floor
        above, at, inexact = dropped(scaled, self.s_) if self.s_ else (0, 0, 0)
        inc = round_increment(self.quantizer.rounding, above, at, inexact, q[0], 1,
                              scaled >= 0) if self.s_ else 0
        y = q + inc if self.clip_first else q + inc + self.zp
        clipped = Mux(y < self.lo, self.lo, Mux(y > self.hi, self.hi, y))
        m.d.comb += self.code.eq(clipped[:self.fmt.bits])
        return m


class MinifloatRequantizer(wiring.Component):
    """``code`` = the minifloat nearest ``acc * 2**-frac`` under ``rounding``, exactly as
    ``fmt.encode(fmt.quantize(acc * 2**-frac, rounding))``: sign and magnitude, leading one,
    one rounding of the significand (a carry into the next binade is the code's own carry),
    subnormals at the bottom, saturation or inf/NaN at the top."""

    def __init__(self, acc_shape: Shape, frac: int, fmt: Minifloat, rounding: str = "round",
                 pipeline: int = 0) -> None:
        if not fmt.subnormals:
            raise ValueError(f"{fmt.name}: formats without zero are scales, not outputs")
        normalize_rounding(rounding)
        self.fmt, self.frac, self.rounding, self.pipeline = fmt, frac, rounding, pipeline
        self.max_code = int(fmt.encode(fmt.max))  # a positive code: no sign bit
        super().__init__({"acc": In(acc_shape), "code": Out(fmt.bits)})

    def overflow_codes(self) -> tuple[int, int]:
        """Codes for values beyond ``max`` / below ``min``: the format's own encoding of what
        its quantizer returns there (±max, ±inf or NaN)."""
        fmt = self.fmt
        if fmt.saturating or not fmt.has_nan:
            top, bottom = fmt.max, fmt.min
        else:
            top = np.inf if fmt.has_inf else np.nan
            bottom = -top if fmt.signed else np.nan
        return int(fmt.encode(top)), int(fmt.encode(bottom))

    def elaborate(self, platform) -> Module:
        m = Module()
        fmt, man = self.fmt, self.fmt.man_bits
        acc = self.acc
        width = len(acc)
        negative = acc < 0 if acc.shape().signed else Const(0, 1)
        mag = Signal(unsigned(width))
        m.d.comb += mag.eq(Mux(negative, -acc, acc))
        lead = Signal(range(width + 1))  # index of the leading one (0 for mag == 0)
        for i in range(width):
            with m.If(mag[i]):
                m.d.comb += lead.eq(i)
        q_min = 1 - fmt.bias - man  # LSB exponent of the lowest binade
        base = q_min + self.frac  # the shift that keeps the lowest binade's LSB
        # bits dropped below the result's LSB: the binade's LSB, never below the lowest one
        shift = Signal(signed(max(width, abs(base)).bit_length() + 3))
        m.d.comb += shift.eq(Mux((lead - man > base) & (mag != 0), lead - man, base))
        if self.pipeline:
            regs = [Signal.like(v) for v in (mag, shift, negative)]
            m.d.sync += [r.eq(v) for r, v in zip(regs, (mag, shift, negative), strict=True)]
            mag, shift, negative = regs
        # shift amounts as narrow as their reach (shift >= base; beyond width + 1 every bit
        # is dropped and below half an LSB alike): a full-width shift amount would make
        # Yosys build shifters 2**bits wide
        right = Signal(range(width + 2))
        left = Signal(range(max(-base, 0) + 1))
        m.d.comb += [right.eq(Mux(shift > width + 1, width + 1, Mux(shift > 0, shift, 0))),
                     left.eq(Mux(shift < 0, -shift, 0))]
        kept = Mux(shift >= 0, mag >> right, mag << left)
        above, at, inexact = dropped(mag, right)
        inc = round_increment(self.rounding, above, at, inexact & (shift > 0), kept[0],
                              ~negative, 1)
        inc = inc & (shift > 0)
        # code = (binade - lowest binade) << man + significand; a carry out of the
        # significand lands in the exponent field, which is the next binade's code
        code = ((shift - base).as_unsigned() << man) + kept + inc
        mag_bits = fmt.exp_bits + man
        top, bottom = self.overflow_codes()
        if fmt.signed:
            # -0 keeps its sign as numpy's rounding does, except where that code is NaN (fnuz)
            sign = negative & (code != 0) if fmt.specials == "fnuz" else negative
            normal = code[:mag_bits] | (sign << mag_bits)
            over = code > self.max_code
        else:  # a negative value is below the minimum unless it rounds to zero
            normal = code[:mag_bits]
            over = (code > self.max_code) | (negative & (code != 0))
        m.d.comb += self.code.eq(Mux(over, Mux(negative, bottom, top), normal))
        return m
