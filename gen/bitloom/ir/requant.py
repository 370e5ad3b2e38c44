"""Requantization of an integer accumulator into the next layer's format, by thresholds.

Why thresholds rather than scale + round + clip: between two quantizers a model may apply
any chain of monotone float ops (scales, bias, BatchNorm, ReLU, Clip) and then round with
any of QONNX's rounding modes. A threshold table turns all of that into integer compares,
computed once here with exact rational arithmetic, so the hardware is exact by construction
for every chain and rounding mode, with no multiplier and no float. For outputs of up to
8 bits the table is small (2**bits - 1 entries per channel); wider outputs will get a
scale-round-clip unit alongside.

Semantics (shared by golden and hardware): for channel ``c`` the output index is
``count(acc >= T[c, i])`` when ``increasing[c]``, else ``count(acc <= T[c, i])``; the output
value is ``out_fmt``'s finite value number ``index`` in ascending order (as a grid integer).
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from bitloom.formats import Format, Int
from bitloom.ir.elementwise import Chain, Requantize
from bitloom.ir.quantizer import Quantizer


@dataclass
class Thresholds:
    """Per-channel sorted integer thresholds on the accumulator."""

    table: np.ndarray  # [channels, levels - 1], int64 or Python ints (wide accumulators)
    increasing: np.ndarray  # bool [channels]
    out_fmt: Format

    @property
    def channels(self) -> int:
        return self.table.shape[0]

    def apply(self, acc: np.ndarray) -> np.ndarray:
        """Integer output values for an accumulator array ``(..., channels)``."""
        acc = np.asarray(acc)
        levels = self.out_fmt.grid_levels()
        if acc.dtype == object or self.table.dtype == object:  # beyond 64 bits
            a = acc[..., None]
            up = np.sum(a >= self.table, axis=-1)
            down = np.sum(a <= self.table, axis=-1)
            return levels[np.where(self.increasing, up, down).astype(np.int64)]
        flat = acc.reshape(-1, self.channels)
        index = np.empty(flat.shape, dtype=np.int64)
        for c in range(self.channels):  # a binary search per channel: no (..., levels) array
            row = np.sort(self.table[c])
            if self.increasing[c]:
                index[:, c] = np.searchsorted(row, flat[:, c], side="right")
            else:
                index[:, c] = len(row) - np.searchsorted(row, flat[:, c], side="left")
        return levels[index].reshape(acc.shape)


def derive_thresholds(chain: Chain, quantizer: Quantizer, acc_fmt: Int) -> Thresholds:
    """Exact thresholds for ``quantizer(chain(acc))`` over the accumulator's whole range.

    A vectorized bisection in float64 finds every (level, channel) threshold at once; each
    is then confirmed (and, where float error misled the bisection, moved) with exact
    rational evaluation, so the table is exact while costing two exact evaluations per entry.
    """
    out_fmt = quantizer.fmt
    levels = out_fmt.grid_levels()[1:][:, None]  # [L, 1]
    channels = chain.channels
    lo, hi = acc_fmt.min_int, acc_fmt.max_int
    wide = np.int64 if acc_fmt.bits <= 62 else object  # Python ints beyond 64 bits
    sign = np.array([1 if chain.direction(c) >= 0 else -1 for c in range(channels)], dtype=wide)
    # Search a' = sign * acc upward: rising channels in [lo, hi + 1], falling in [-hi, -lo + 1];
    # the upper end means "never reached".
    start = np.array([lo if sg > 0 else -hi for sg in sign], dtype=wide)
    end = np.array([hi + 1 if sg > 0 else -lo + 1 for sg in sign], dtype=wide)
    shape = (len(levels), channels)
    a = np.broadcast_to(start, shape).astype(wide)
    b = np.broadcast_to(end, shape).astype(wide)

    def reaches(candidate: np.ndarray) -> np.ndarray:
        real = chain.approx((candidate * sign).astype(np.float64))
        return quantizer.apply_float(real) >= levels

    while np.any(a < b):
        mid = (a + b) // 2
        ok = reaches(mid)
        open_ = a < b
        b = np.where(open_ & ok, mid, b)
        a = np.where(open_ & ~ok, mid + 1, a)

    def exact_reaches(candidate: int, level: int, c: int) -> bool:
        if candidate >= end[c]:
            return True
        return quantizer.exact(chain.exact(Fraction(candidate * int(sign[c])), c)) >= level

    # Float64 is trusted where both T and T - 1 are clearly away from rounding boundaries and
    # no intermediate quantizer sits in the chain; everything else is settled exactly.
    plain = not any(isinstance(op, Requantize) for op in chain.ops)
    trusted = np.zeros(shape, dtype=bool)
    if plain:
        at = quantizer.certain(chain.approx((a * sign).astype(np.float64)))
        below = quantizer.certain(chain.approx(((a - 1) * sign).astype(np.float64)))
        inside = (a > start) & (a < end)
        trusted = at & below & inside
    for (i, c), t in np.ndenumerate(a):
        if trusted[i, c]:
            continue
        level = int(levels[i, 0])
        t = int(t)
        while t > start[c] and exact_reaches(t - 1, level, c):
            t -= 1
        while not exact_reaches(t, level, c):
            t += 1
        a[i, c] = t
    table = (a * sign).T  # back to accumulator units, [channels, levels]
    return Thresholds(np.ascontiguousarray(table), (sign > 0).astype(bool), out_fmt)
