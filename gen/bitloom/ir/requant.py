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
value is ``out_fmt`` value number ``index`` in ascending order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from bitloom.formats import Int
from bitloom.ir.elementwise import Chain


@dataclass
class Thresholds:
    """Per-channel sorted integer thresholds on the accumulator."""

    table: np.ndarray  # int64 [channels, levels - 1]
    increasing: np.ndarray  # bool [channels]
    out_fmt: Int

    @property
    def channels(self) -> int:
        return self.table.shape[0]

    def apply(self, acc: np.ndarray) -> np.ndarray:
        """Integer output values for an accumulator array ``(..., channels)``."""
        a = acc[..., None]
        up = np.sum(a >= self.table, axis=-1)
        down = np.sum(a <= self.table, axis=-1)
        index = np.where(self.increasing, up, down)
        levels = self.out_fmt.values().astype(np.int64)
        return levels[index]


def derive_thresholds(
    chain: Chain,
    quantize: Callable[[Fraction, int], int],
    acc_fmt: Int,
    out_fmt: Int,
) -> Thresholds:
    """Exact thresholds for ``quantize(chain(acc))`` over the accumulator's whole range.

    ``quantize(real, channel)`` maps an exact real to an output value of ``out_fmt`` and must
    be monotone non-decreasing in ``real`` (every quantizer is). Binary search per level
    keeps this at ``levels * log2(range)`` exact evaluations per channel.
    """
    levels = [int(v) for v in out_fmt.values()]
    lo, hi = acc_fmt.min_int, acc_fmt.max_int
    table = np.zeros((chain.channels, len(levels) - 1), dtype=np.int64)
    increasing = np.ones(chain.channels, dtype=bool)
    for c in range(chain.channels):

        def g(acc: int, c: int = c) -> int:
            return quantize(chain.exact(Fraction(acc), c), c)

        rising = chain.direction(c) >= 0
        increasing[c] = rising
        for i, level in enumerate(levels[1:]):
            if rising:  # smallest acc in [lo, hi + 1] with g(acc) >= level
                a, b = lo, hi + 1
                while a < b:
                    mid = (a + b) // 2
                    if g(mid) >= level:
                        b = mid
                    else:
                        a = mid + 1
                table[c, i] = a
            else:  # largest acc in [lo - 1, hi] with g(acc) >= level
                a, b = lo - 1, hi
                while a < b:
                    mid = (a + b + 1) // 2
                    if g(mid) >= level:
                        a = mid
                    else:
                        b = mid - 1
                table[c, i] = a
    return Thresholds(table, increasing, out_fmt)
