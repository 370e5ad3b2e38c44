"""Requantization by multiply, add and shift, proven equal to a threshold table.

Why: a table of ``2**bits - 1`` thresholds per channel is exact for any monotone chain, but
an 8-bit output needs 255 comparators per lane and a 16-bit one 65,535. Most chains are one
affine map then a rounding, which a multiplier computes: ``y = acc * M + B`` per channel, a
shift by ``S``, a clip. Instead of reasoning about the chain's floats, :func:`fit_scale`
fits ``(M, B, S)`` to the *exact* thresholds (the golden's own semantics) and proves the
fit: both are monotone step functions of the accumulator, so they are equal over the
accumulator's whole range exactly when they step at the same accumulator values, which is
a finite set of integer inequalities.

Semantics, for channel ``c`` and accumulator ``acc`` (all integers)::

    y = acc * multiplier[c] + offset[c]        # fixed point, ``shift`` fraction bits
    consecutive formats (Int, Fixed): value = clip(floor(y / 2**shift), lo[c], hi[c])
    other formats (minifloat):        value = the format's level nearest
                                      clip(y, lo[c] << shift, hi[c] << shift) / 2**shift,
                                      a tie going up

With ``ties_to_even`` the integer form rounds ``y / 2**shift`` to the nearest integer and
both forms send an exact tie to the level whose code is even: the rounding of a chain whose
scales are powers of two, which then meets ties that no shifted line can place (QONNX's
``ROUND``, ONNX's QuantizeLinear).

Values are grid integers, as :class:`~bitloom.ir.Thresholds` returns them.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

import numpy as np

from bitloom.formats import Fixed, Format, Int, Minifloat
from bitloom.ir.requant import Thresholds

#: widest multiplier :func:`fit_scale` considers: a minifloat layer's exact (Kulisch)
#: accumulator needs a multiplier about as wide as itself (e4m3 convolutions 40-43 bits,
#: e5m2 70-73); up to 15 DSP48s a lane, which the planner prices against 255 comparators
MAX_MULTIPLIER_BITS = 80
#: most fraction bits :func:`fit_scale` tries
MAX_SHIFT = 128


@dataclass
class ScaleRequant:
    """Per-channel ``y = acc * multiplier + offset``, shifted and clipped (module docstring)."""

    out_fmt: Format
    shift: int
    multiplier: np.ndarray  # [channels], Python ints (signed: negative for falling channels)
    offset: np.ndarray  # [channels], Python ints
    lo: np.ndarray  # [channels], grid integers: the least value the channel reaches
    hi: np.ndarray  # [channels], the greatest
    ties_to_even: bool = False
    #: how the hardware multiplies (not what it computes): fabric adders instead of DSPs,
    #: for a board whose DSPs are spent or a multiplier that is a few shifts
    lut_multiplier: bool = False

    #: the per-channel constants, in the order the hardware's ROM word holds them
    FIELDS = ("multiplier", "offset", "lo", "hi")

    @property
    def channels(self) -> int:
        return len(self.multiplier)

    def field_bits(self, field: str) -> int:
        """Bits of a signed register holding every channel's ``field``."""
        return _signed_bits(getattr(self, field))

    def varying(self) -> list[str]:
        """The fields that differ between channels (the others are constants in the logic)."""
        return [f for f in self.FIELDS if len({int(v) for v in getattr(self, f)}) > 1]

    @property
    def rounds_to_levels(self) -> bool:
        """Whether the output's levels are not consecutive integers (minifloat): the shift
        is then a rounding to the nearest level rather than a floor."""
        return not consecutive_levels(self.out_fmt)

    @property
    def stages(self) -> int:
        """Pipeline registers the hardware adds (:mod:`bitloom.hw.scale`): one after
        ``acc * M + B``, and for a minifloat output one more after the clip, before the
        normalisation (leading-one detection, shift, rounding). The plan's latency counts
        them."""
        return 2 if self.rounds_to_levels else 1

    @property
    def multiplier_bits(self) -> int:
        return self.field_bits("multiplier")

    @property
    def offset_bits(self) -> int:
        return self.field_bits("offset")

    def even_levels(self) -> np.ndarray:
        """Per level (ascending), whether its code is even: where a tie goes."""
        fmt = self.out_fmt
        return (np.asarray(fmt.encode(fmt.values())) & 1) == 0

    def midpoints(self) -> np.ndarray:
        """Level boundaries of a rounding output, in ``y`` units: ``y`` at or above entry
        ``k`` reaches level ``k + 1``."""
        levels = [int(v) for v in self.out_fmt.grid_levels()]
        return np.array([(a + b) << (self.shift - 1) for a, b in pairwise(levels)],
                        dtype=object)

    def apply(self, acc: np.ndarray) -> np.ndarray:
        """Output values (grid integers) for an accumulator array ``(..., channels)``,
        computed exactly as the hardware computes them (int64 where ``y`` fits, else Python
        integers)."""
        acc = np.asarray(acc)
        acc_bits = max(int(np.max(np.abs(acc), initial=0)).bit_length(), 1) + 1
        narrow = acc_bits + self.multiplier_bits < 62 and self.offset_bits < 62 and \
            max(self.lo_bits_shifted, self.hi_bits_shifted) < 62
        dtype = np.int64 if narrow else object
        y = acc.astype(dtype) * self.multiplier.astype(dtype) + self.offset.astype(dtype)
        lo, hi = self.lo.astype(dtype), self.hi.astype(dtype)
        one = dtype(1) if narrow else 1
        if self.rounds_to_levels:
            clipped = np.clip(y, lo * (one << self.shift), hi * (one << self.shift))
            levels = self.out_fmt.grid_levels()
            mids, flat = self.midpoints().astype(dtype), clipped.reshape(-1)
            index = np.searchsorted(mids, flat, side="right")
            if self.ties_to_even:
                below = np.searchsorted(mids, flat, side="left")
                index = np.where(self.even_levels()[index], index, below)
            return levels[index].reshape(acc.shape)
        q = y >> self.shift
        if self.ties_to_even:
            dropped, half = y - (q << self.shift), one << (self.shift - 1)
            q = q + ((dropped > half) | ((dropped == half) & (q % 2 == 1)))
        return np.clip(q, lo, hi).astype(np.int64)

    @property
    def lo_bits_shifted(self) -> int:
        return _signed_bits(self.lo) + self.shift

    @property
    def hi_bits_shifted(self) -> int:
        return _signed_bits(self.hi) + self.shift


def csd_digits(value: int) -> list[tuple[int, int]]:
    """``(position, +-1)`` of ``value``'s canonical signed digits: the fewest nonzero
    digits, so the fewest adders of a constant multiplication."""
    digits, position = [], 0
    while value:
        if value & 1:
            digit = 2 - (value & 3)  # +1 ending ...01, -1 ending ...11 (then a carry)
            digits.append((position, digit))
            value -= digit
        value >>= 1
        position += 1
    return digits


def consecutive_levels(fmt: Format) -> bool:
    """Whether ``fmt``'s values are consecutive grid integers (Int and Fixed, not bipolar)."""
    return isinstance(fmt, Int | Fixed) and not getattr(fmt, "bipolar", False)


def _signed_bits(values: np.ndarray) -> int:
    return max(int(v).bit_length() for v in values) + 1


def scale_supported(fmt: Format) -> str | None:
    """Why ``fmt`` cannot be written by a scale requantizer, or None when it can."""
    if consecutive_levels(fmt) or (isinstance(fmt, Minifloat) and fmt.subnormals):
        return None
    return f"{fmt.name} has no scale requantizer (bipolar and zero-less formats use thresholds)"


def fit_scale(th: Thresholds, acc_fmt: Int,
              max_multiplier_bits: int = MAX_MULTIPLIER_BITS) -> ScaleRequant | str:
    """The scale requantizer equal to ``th`` on every accumulator value of ``acc_fmt``, with
    the fewest shift (and so multiplier) bits, or why there is none within
    ``max_multiplier_bits`` (a ties-to-even rounding of a power-of-two scale, for one,
    steps unevenly)."""
    reason = scale_supported(th.out_fmt)
    if reason:
        return reason
    sign = np.where(th.increasing, 1, -1)
    # in a' = sign * acc every channel rises: level k (column k - 1) from a' >= t[c, k - 1]
    t = th.table.astype(object) * sign[:, None].astype(object)
    lo, hi = acc_fmt.min_int, acc_fmt.max_int
    a_lo = np.array([lo if s > 0 else -hi for s in sign], dtype=object)
    a_hi = np.array([hi if s > 0 else -lo for s in sign], dtype=object)
    inside = (t > a_lo[:, None]) & (t <= a_hi[:, None])
    lo_level = np.sum(t <= a_lo[:, None], axis=1)
    hi_level = np.sum(t <= a_hi[:, None], axis=1)
    levels = [int(v) for v in th.out_fmt.grid_levels()]
    grid = np.array(levels, dtype=object)
    low, high = grid[lo_level], grid[hi_level]
    mids = np.array([a + b for a, b in pairwise(levels)], dtype=object)  # in halves
    if consecutive_levels(th.out_fmt):  # floor: level k from y = v_k, in halves
        first = _least_shift(t, inside, np.array([2 * v for v in levels[1:]], dtype=object),
                             strict=True)
    else:  # nearest, ties up: level k from the midpoint of v_{k-1} and v_k
        first = _least_shift(t, inside, mids, strict=True)
    candidates = [(first, False)] if first is not None else []
    if first is None:  # ties meet the steps: try the exact line with ties to even
        fit = _least_shift(t, inside, mids, strict=False)
        if fit is not None:
            candidates = [((fit[0] + k, fit[1] << k, fit[2] << k), True) for k in range(4)]
    if not candidates:
        return f"no multiplier of up to {MAX_SHIFT} fraction bits steps like the thresholds"
    for (shift, slope, offset), ties in candidates:
        req = ScaleRequant(th.out_fmt, shift, slope * sign.astype(object), offset,
                           np.minimum(low, high), np.maximum(low, high), ties)
        if req.multiplier_bits > max_multiplier_bits:
            return (f"the multiplier needs {req.multiplier_bits} bits (at most "
                    f"{max_multiplier_bits} considered)")
        if agrees(req, th, acc_fmt):
            return req
        if not ties:
            raise AssertionError("scale requantizer fit disagrees with its thresholds")
    return "no multiplier places the ties of the thresholds (ties to even)"


def _least_shift(t: np.ndarray, inside: np.ndarray, bound: np.ndarray,
                 strict: bool) -> tuple[int, np.ndarray, np.ndarray] | None:
    """``(S, m, b)`` of :func:`_fit_at` for the least shift ``S`` that has them: fitting at
    ``S + 1`` what fits at ``S`` is doubling ``(m, b)``, so gallop up, then bisect."""
    t, inside, bound = _hull_steps(t, inside, bound)
    fits: dict[int, tuple | None] = {}

    def fit(shift: int):
        if shift not in fits:
            fits[shift] = _fit_at(t, inside, bound * (1 << (shift - 1)), strict)
        return fits[shift]

    hi_shift = 1
    while fit(hi_shift) is None:
        if hi_shift == MAX_SHIFT:
            return None
        hi_shift = min(2 * hi_shift, MAX_SHIFT)
    lo_shift = hi_shift // 2 + 1
    while lo_shift < hi_shift:
        mid = (lo_shift + hi_shift) // 2
        lo_shift, hi_shift = (lo_shift, mid) if fit(mid) is not None else (mid + 1, hi_shift)
    return (lo_shift, *fit(lo_shift))


def _hull_steps(t: np.ndarray, inside: np.ndarray, bound: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per channel, only the steps :func:`_fit_at` can be bound by, packed to the left:
    ``(t, inside, bound)`` with ``bound`` per channel and step.

    Why: a 16-bit output has 65,535 steps a channel and the fit evaluates every one some
    thousand times. Its bounds on ``b`` are ``max_k(c_k - m t_k)`` and
    ``min_k(c_k - 1 - m (t_k - 1))``, which only the upper and lower convex hulls of the
    points ``(t_k, c_k)`` reach; a power-of-two ``c`` scale (the shift) keeps the hulls. A
    rounded straight line has a few dozen hull points."""
    kept = []
    for row in range(t.shape[0]):
        cols = np.nonzero(inside[row])[0]
        x, y = t[row, cols], bound[cols]
        wide = max((int(np.max(np.abs(v), initial=0)).bit_length() for v in (x, y)),
                   default=0)
        if 2 * wide + 3 < 63:
            x, y = x.astype(np.int64), y.astype(np.int64)
        hull = np.union1d(_chain(x, y, upper=True), _chain(x, y, upper=False))
        kept.append(cols[hull])
    width = max((len(k) for k in kept), default=0) or 1
    steps = np.zeros((t.shape[0], width), dtype=t.dtype)
    mask = np.zeros((t.shape[0], width), dtype=bool)
    bounds = np.zeros((t.shape[0], width), dtype=object)
    for row, cols in enumerate(kept):
        steps[row, :len(cols)], mask[row, :len(cols)] = t[row, cols], True
        bounds[row, :len(cols)] = bound[cols]
    return steps, mask, bounds


def _chain(x: np.ndarray, y: np.ndarray, upper: bool) -> np.ndarray:
    """Indices of the points ``(x, y)`` (``x`` ascending) that may be vertices of their
    upper (or lower) convex hull: a point on the far side of the chord between its
    neighbours is dropped, never two neighbours in one pass, until none is."""
    idx = np.arange(len(x))
    while len(idx) >= 3:
        a, b, c = idx[:-2], idx[1:-1], idx[2:]
        cross = (x[b] - x[a]) * (y[c] - y[a]) - (y[b] - y[a]) * (x[c] - x[a])
        drop = ((cross >= 0) if upper else (cross <= 0)) & \
            (x[a] <= x[b]) & (x[b] <= x[c]) & (x[a] < x[c])
        drop[1:] &= ~drop[:-1]
        if not drop.any():
            break
        idx = idx[np.concatenate([[True], ~drop, [True]])]
    return idx


def _fit_at(t: np.ndarray, inside: np.ndarray, c: np.ndarray,
            strict: bool = True) -> tuple[np.ndarray, np.ndarray] | None:
    """Per channel, integers ``m >= 0`` and ``b`` with ``m * t_k + b >= c_k`` and
    ``m * (t_k - 1) + b <= c_k - 1`` for every level ``k`` the channel steps at inside the
    range (``inside``), or None if some channel has none; not ``strict``, the second is
    ``<= c_k`` (a tie at ``c_k`` may go either way, as ties to even do).

    For a given ``m`` the feasible ``b`` lie between ``max_k(c_k - m t_k)`` and
    ``min_k(c_k - 1 - m (t_k - 1))``; the gap between them is concave in ``m``, so a binary
    search on its slope finds the ``m`` that maximizes it, between the slopes the first and
    last steps allow. ``t`` is taken from each channel's first step. ``c`` is per step, or
    per channel and step."""
    channels = t.shape[0]
    c = np.broadcast_to(c, t.shape)
    ms, bs = np.zeros(channels, dtype=object), np.zeros(channels, dtype=object)
    rows = np.nonzero(inside.any(axis=1))[0]
    if len(rows) == 0:
        return ms, bs
    mask = inside[rows]
    first = np.argmax(mask, axis=1)
    last = mask.shape[1] - 1 - np.argmax(mask[:, ::-1], axis=1)
    ref = t[rows, first]
    rise = c[rows, last] - c[rows, first]  # per channel, Python ints
    run = t[rows, last] - ref
    d = 1 if strict else 0
    pairs = list(zip(rise, run, strict=True))
    m_lo = np.array([(r + d + n) // (n + 1) for r, n in pairs], dtype=object)
    m_hi = np.array([(r - d) // (n - 1) if n > 1 else r + 2 for r, n in pairs], dtype=object)
    if np.any(m_lo > m_hi):
        return None
    # in residuals of the least slope the search runs in int64 (Python ints if ever wider):
    # c_k - m t_k = base_k - (m - m_lo) t_k, with base = c - m_lo * t
    tt = np.where(mask, t[rows] - ref[:, None], 0).astype(object)
    base = np.where(mask, c[rows] - m_lo[:, None] * tt, 0)
    widest = max(int(np.max(base)).bit_length(), int(np.min(base)).bit_length(),
                 max(int(h - m) * (int(n) + 1) for h, m, n in zip(m_hi, m_lo, run,
                                                                  strict=True)).bit_length())
    narrow = widest + 4 < 63
    dtype = np.int64 if narrow else object
    far = (1 << 62) if narrow else (1 << 400)  # "no constraint" in max / min
    tt, base = tt.astype(dtype), base.astype(dtype)
    least = m_lo.astype(dtype)

    def gap(delta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Upper minus lower bound on ``b`` at ``m = m_lo + delta``, and the lower one."""
        dd = delta[:, None]
        lower = np.where(mask, base - dd * tt, -far).max(axis=1)
        upper = np.where(mask, base - dd * tt, far).min(axis=1) + least + delta - d
        return upper - lower, lower

    lo = np.zeros(len(rows), dtype=dtype)
    hi = (m_hi - m_lo).astype(dtype)
    while np.any(lo < hi):  # smallest m where the gap stops growing
        mid = (lo + hi) // 2
        rising = gap(mid + 1)[0] > gap(mid)[0]
        lo = np.where(rising, mid + 1, lo)
        hi = np.where(rising, hi, mid)
    width, lower = gap(lo)
    if np.any(width < 0):
        return None
    shared = _shared_slope(lo + least, least, hi + least, gap)
    if shared is not None:
        lo = (shared - least).astype(dtype)
        width, lower = gap(lo)
    lo = np.array([int(v) for v in lo], dtype=object) + m_lo
    middle = lower + width // 2  # clear of both sides: no tie where the steps have none
    ms[rows] = [int(v) for v in lo]
    bs[rows] = [int(b) - int(m) * int(r) for b, m, r in zip(middle, lo, ref, strict=True)]
    return ms, bs


def _shared_slope(best: np.ndarray, least: np.ndarray, most: np.ndarray, gap) -> int | None:
    """One slope every channel can take, when there is one among the channels' own best
    (most common first) and their median: a shared multiplier is a constant in the logic
    (no ROM field, a few adders instead of a multiplier in LUTs). ``gap`` is
    :func:`_fit_at`'s, of a delta above ``least``."""
    values, counts = np.unique(best, return_counts=True)
    candidates = [int(v) for v in values[np.argsort(-counts, kind="stable")][:4]]
    candidates.append(int(np.sort(best)[len(best) // 2]))
    for slope in dict.fromkeys(candidates):
        if np.all(least <= slope) and np.all(slope <= most) and \
                np.all(gap((slope - least).astype(least.dtype))[0] >= 0):
            return slope
    return None


def agrees(req: ScaleRequant, th: Thresholds, acc_fmt: Int) -> bool:
    """The proof, independent of how the fit was found: the two agree at every step of the
    thresholds, the values beside it and the range's ends. Both functions are monotone in
    the same direction, so agreement there is agreement everywhere in the range."""
    lo, hi = acc_fmt.min_int, acc_fmt.max_int
    wide = th.table.dtype == object
    table = th.table.astype(object if wide else np.int64)
    ends = np.full((th.channels, 2), [lo, hi], dtype=table.dtype)
    points = np.concatenate([table, table - 1, table + 1, ends], axis=1)
    points = np.clip(points, lo, hi).T  # [points, channels]
    return bool(np.array_equal(req.apply(points), th.apply(points)))
