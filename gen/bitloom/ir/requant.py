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

from dataclasses import dataclass, replace
from fractions import Fraction

import numpy as np

from bitloom.formats import Format, Int, normalize_rounding
from bitloom.ir.elementwise import Affine, Chain, Clamp, Requantize
from bitloom.ir.quantizer import CLIP_THEN_ROUND, Quantizer


@dataclass
class Thresholds:
    """Per-channel sorted integer thresholds on the accumulator."""

    table: np.ndarray  # [channels, levels - 1], int64 or Python ints (wide accumulators)
    increasing: np.ndarray  # bool [channels]
    out_fmt: Format

    @property
    def channels(self) -> int:
        return self.table.shape[0]

    def index(self, acc: np.ndarray) -> np.ndarray:
        """Output level numbers (0 .. levels - 1) for an accumulator array ``(..., channels)``."""
        acc = np.asarray(acc)
        if acc.dtype == object or self.table.dtype == object:  # beyond 64 bits
            a = acc[..., None]
            up = np.sum(a >= self.table, axis=-1)
            down = np.sum(a <= self.table, axis=-1)
            return np.where(self.increasing, up, down).astype(np.int64)
        flat = acc.reshape(-1, self.channels)
        index = np.empty(flat.shape, dtype=np.int64)
        for c in range(self.channels):  # a binary search per channel: no (..., levels) array
            row = np.sort(self.table[c])
            if self.increasing[c]:
                index[:, c] = np.searchsorted(row, flat[:, c], side="right")
            else:
                index[:, c] = len(row) - np.searchsorted(row, flat[:, c], side="left")
        return index.reshape(acc.shape)

    def apply(self, acc: np.ndarray) -> np.ndarray:
        """Integer output values for an accumulator array ``(..., channels)``."""
        return self.out_fmt.grid_levels()[self.index(acc)]


#: unit roundoff of float64: every correctly rounded operation is within this relative error
_U = 2.0**-53
#: a bound on the absolute error an operation that underflows can add
_TINY = 8 * float(np.finfo(np.float64).smallest_subnormal)
_DIRECTED = ("floor", "ceil", "down", "up")  # rounding modes that jump at integers, not ties


def derive_thresholds(chain: Chain, quantizer: Quantizer, acc_fmt: Int) -> Thresholds:
    """Exact thresholds for ``quantizer(chain(acc))`` over the accumulator's whole range.

    An intermediate quantizer in the chain splits it in two: the part before it has a
    threshold table onto the intermediate format, the part after it (fed with that small
    format's values) has one onto the output, and the two compose exactly in integers. A
    chain without intermediate quantizer is searched in float64 with a rigorous error bound;
    only the entries that bound cannot settle are evaluated in rational arithmetic.
    """
    for r, op in enumerate(chain.ops):
        if isinstance(op, Requantize):
            head = Chain(chain.channels, chain.ops[:r])
            inner = _reachable(head, op.quantizer, acc_fmt)
            grid = inner.fmt.grid()
            first = derive_thresholds(head, inner, acc_fmt)
            second = derive_thresholds(Chain(chain.channels, chain.ops[r + 1:]), quantizer,
                                       Int.spanning(grid.lo, grid.hi))
            rising = np.array([chain.direction(c) >= 0 for c in range(chain.channels)])
            return _compose(first, second, acc_fmt, rising)
    return _derive_plain(chain, quantizer, acc_fmt)


def _reachable(chain: Chain, quantizer: Quantizer, acc_fmt: Int) -> Quantizer:
    """``quantizer`` with its integer format narrowed to the values ``quantizer(chain(acc))``
    takes over the accumulator's range (a monotone chain reaches its extremes at the range's
    ends), which it computes alike: an intermediate quantizer may be far wider than what
    reaches it (QONNX Trunc's input grid), and a table has a column per value."""
    fmt = quantizer.fmt
    if not isinstance(fmt, Int) or fmt.bipolar:
        return quantizer
    ends = [quantizer.exact(chain.exact(Fraction(a), c)) for c in range(chain.channels)
            for a in (acc_fmt.min_int, acc_fmt.max_int)]
    narrow = Int.spanning(min(ends), max(ends))
    return replace(quantizer, fmt=narrow) if narrow.bits < fmt.bits else quantizer


def _search_space(signs: np.ndarray, acc_fmt: Int, dtype) -> tuple[np.ndarray, np.ndarray]:
    """Per channel, the range searched for ``a' = sign * acc``: rising channels
    ``[lo, hi + 1]``, falling ``[-hi, -lo + 1]``; the upper end means "never reached"."""
    lo, hi = acc_fmt.min_int, acc_fmt.max_int
    start = np.array([lo if s > 0 else -hi for s in signs], dtype=dtype)
    end = np.array([hi + 1 if s > 0 else -lo + 1 for s in signs], dtype=dtype)
    return start, end


def _compose(first: Thresholds, second: Thresholds, acc_fmt: Int,
             rising: np.ndarray) -> Thresholds:
    """The table of ``second(first(acc))``, where ``second`` reads ``first``'s output values,
    in the direction ``rising`` (which differs from the tables' only where a flat op makes
    the output constant: there the table says "always" up to that constant, then "never").

    In ``a' = sign * acc`` (``sign`` the product of both directions) the composition rises.
    ``first``'s level number ``i`` rises with ``s1 * acc``, passing ``i >= j`` at
    ``a1[j] = s1 * T1[j - 1]``, and ``tab[i]``, the output level of ``first``'s level ``i``,
    is monotone in ``i`` with direction ``s2``. If ``s2 > 0`` the output reaches ``k`` from
    the first ``i = J`` with ``tab[J] >= k``, i.e. from ``a' = a1[J]``; if ``s2 < 0`` it
    reaches ``k`` while ``i <= J`` (the last such ``i``), i.e. from ``a' = 1 - a1[J + 1]``.
    """
    wide = first.table.dtype
    n_first = first.table.shape[1] + 1
    channels = first.channels
    levels1 = first.out_fmt.grid_levels()
    tab = second.index(np.repeat(levels1[:, None], channels, axis=1))  # [n_first, channels]
    s1 = np.where(first.increasing, 1, -1)
    s2 = np.where(second.increasing, 1, -1)
    sign = np.where(rising, 1, -1)
    start, end = _search_space(sign, acc_fmt, wide)
    ks = np.arange(1, second.table.shape[1] + 1)
    table = np.empty((channels, len(ks)), dtype=wide)
    constant = tab[first.index(np.full((1, channels), acc_fmt.min_int)), np.arange(channels)]
    for c in range(channels):
        if sign[c] != s1[c] * s2[c]:
            table[c] = np.where(ks <= constant[0, c], start[c], end[c]) * sign[c]
            continue
        a1 = first.table[c] * s1[c]  # a1[j - 1] is where first's level number reaches j
        col = tab[:, c]
        if s2[c] > 0:
            j = np.searchsorted(col, ks, side="left")  # first level whose output reaches k
            at = np.where(j == 0, start[c], end[c]).astype(wide)
            inner = (j > 0) & (j < n_first)
            at[inner] = a1[j[inner] - 1]
        else:
            j = n_first - np.searchsorted(col[::-1], ks, side="left") - 1  # last such level
            at = np.where(j < 0, end[c], start[c]).astype(wide)
            inner = (j >= 0) & (j < n_first - 1)
            at[inner] = 1 - a1[j[inner]]
        table[c] = at * sign[c]
    return Thresholds(table, rising, second.out_fmt)


def _split(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``a`` as the exact sum of two halves of at most 26 significant bits (Veltkamp)."""
    c = 134217729.0 * a  # 2**27 + 1
    hi = c - (c - a)
    return hi, a - hi


def _two_product(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``a * b`` rounded, and its rounding error exactly (Dekker; exact barring underflow)."""
    p = a * b
    ah, al = _split(a)
    bh, bl = _split(b)
    return p, ((ah * bh - p) + ah * bl + al * bh) + al * bl


def _two_sum(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``a + b`` rounded, and its rounding error exactly (Knuth)."""
    s = a + b
    bb = s - a
    return s, (a - (s - bb)) + (b - bb)


def _as_float(values: list[Fraction]) -> tuple[np.ndarray, np.ndarray]:
    """Nearest float64 of each rational, and a bound on how far it is (0 when exact)."""
    near = np.array([float(v) for v in values])
    off = np.array([abs(float(v - Fraction(float(f)))) for v, f in zip(values, near,
                                                                       strict=True)])
    return near, np.where(np.array([v != Fraction(float(f)) for v, f in zip(
        values, near, strict=True)]), np.maximum(off * (1 + 8 * _U), _TINY), 0.0)


def _float_ops(chain: Chain) -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """Each op of a chain of affine and clamp ops as float64 coefficients with bounds on
    their distance from the exact ones: ``(kind, first, first_error, second, second_error)``
    for ``a * x + b`` ("affine") and ``clip(x, lo, hi)`` ("clamp")."""
    ops = []
    for op in chain.ops:
        if isinstance(op, Affine):
            ops.append(("affine", *_as_float(op.a), *_as_float(op.b)))
        elif isinstance(op, Clamp):
            lo, d_lo = _as_float([op.lo]) if op.lo is not None else (np.array([-np.inf]), 0.0)
            hi, d_hi = _as_float([op.hi]) if op.hi is not None else (np.array([np.inf]), 0.0)
            ops.append(("clamp", lo, d_lo, hi, d_hi))
        else:
            raise TypeError(f"not a float op: {op!r}")
    return ops


def _float_with_error(ops: list, acc: np.ndarray,
                      bound: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """Float64 values of a chain (as :func:`_float_ops`), and (if ``bound``) a rigorous
    bound on how far each is from the exact value. Rounding errors are computed exactly (error-free
    transformations), so the bound is 0 wherever float64 happens to be exact: dyadic
    coefficients on integers, as dequantization scales usually are, and their ties."""
    with np.errstate(over="ignore", invalid="ignore"):
        y = np.asarray(acc, dtype=np.float64)
        err = np.where(np.abs(y) <= 2.0**53, 0.0, 2 * _U * np.abs(y))  # int -> float64
        for kind, first, d_first, second, d_second in ops:
            if not bound:
                y = y * first + second if kind == "affine" else np.clip(y, first, second)
            elif kind == "affine":
                product, e_product = _two_product(y, first)
                out, e_sum = _two_sum(product, second)
                # exact - out = e_product + e_sum + (a - a_f) x + a (x - x_f) + (b - b_f)
                err = (np.abs(e_product) + np.abs(e_sum) + d_first * np.abs(y)
                       + (np.abs(first) + d_first) * err + d_second) * (1 + 8 * _U)
                err = err + np.where(np.abs(product) < 2.0**-900, _TINY, 0.0)  # underflow
                y = out
            else:  # clamping moves no value further from the exact one than its bounds move
                y = np.clip(y, first, second)
                err = err + d_first + d_second
    return y, err


def _certain(quantizer: Quantizer, real: np.ndarray, err: np.ndarray) -> np.ndarray:
    """Where every real within ``err`` of ``real`` quantizes like ``real`` itself, so the
    float64 result equals the exact one: either the quantizer's scaled input is exact in
    float64, or it is further than its error from every rounding boundary (the ties, or for
    directed modes the integers, of integer formats; every value and midpoint of others)."""
    fmt = quantizer.fmt
    real = np.asarray(real, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        if isinstance(fmt, Int) and fmt.bipolar:
            return np.isfinite(err) & ((err == 0) | (np.abs(real) > err))
        scale = np.float64(quantizer.scale)
        t = real / scale
        product, e_product = _two_product(t, scale)  # real - t * scale, exactly
        err_t = (err + np.abs(real - product) + np.abs(e_product)) / abs(scale) * (1 + 8 * _U)
        if not isinstance(fmt, Int) or quantizer.order == CLIP_THEN_ROUND:
            t, e_shift = _two_sum(t, np.float64(quantizer.zero_point))
            err_t = (err_t + np.abs(e_shift)) * (1 + 8 * _U)
        err_t = err_t + np.where(np.abs(product) < 2.0**-900, _TINY, 0.0)  # underflow
        if isinstance(fmt, Int):
            directed = normalize_rounding(quantizer.rounding) in _DIRECTED
            s = t if directed else t - 0.5
            gap = np.abs(s - np.round(s))
        else:
            values = fmt.values()
            edges = np.sort(np.concatenate([values, (values[1:] + values[:-1]) / 2]))
            i = np.clip(np.searchsorted(edges, t), 1, len(edges) - 1)
            gap = np.minimum(np.abs(t - edges[i - 1]), np.abs(edges[i] - t))
        clear = gap > err_t + 4 * _U * (np.abs(t) + 1)
        return np.isfinite(t) & np.isfinite(err_t) & ((err_t == 0) | clear)


def _settle(guess: int, reaches, start: int, end: int) -> int:
    """The smallest ``a`` in ``[start, end]`` with ``reaches(a)`` (``end`` always counts),
    for a monotone ``reaches``: gallop out from ``guess``, then bisect."""
    def ok(a: int) -> bool:
        return a >= end or reaches(a)

    lo, hi, step = guess - 1, guess, 1  # invariant: lo < start or not ok(lo); ok(hi)
    if ok(guess):
        while lo >= start and ok(lo):
            hi, lo, step = lo, max(lo - step, start - 1), step * 2
    else:
        lo, hi = guess, guess + 1
        while not ok(hi):
            lo, hi, step = hi, min(hi + step, end), step * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if ok(mid):
            hi = mid
        else:
            lo = mid
    return hi


def _derive_plain(chain: Chain, quantizer: Quantizer, acc_fmt: Int) -> Thresholds:
    """Thresholds for a chain of affine and clamp ops: a vectorized float64 bisection finds
    every (level, channel) entry at once; an entry is exact when the error bound shows both
    it and the accumulator below it on the right side, and is settled exactly otherwise."""
    out_fmt = quantizer.fmt
    levels = out_fmt.grid_levels()[1:][:, None]  # [L, 1]
    channels = chain.channels
    wide = np.int64 if acc_fmt.bits <= 62 else object  # Python ints beyond 64 bits
    sign = np.array([1 if chain.direction(c) >= 0 else -1 for c in range(channels)], dtype=wide)
    start, end = _search_space(sign, acc_fmt, wide)
    shape = (len(levels), channels)
    a = np.broadcast_to(start, shape).astype(wide)
    b = np.broadcast_to(end, shape).astype(wide)

    ops = _float_ops(chain)

    def evaluate(candidate: np.ndarray, sure: bool) -> tuple[np.ndarray, np.ndarray | None]:
        """Whether float64 says ``candidate`` reaches its level, and (if ``sure``) whether
        that is certain."""
        real, err = _float_with_error(ops, (candidate * sign).astype(np.float64), sure)
        return (quantizer.apply_float(real) >= levels,
                _certain(quantizer, real, err) if sure else None)

    while np.any(a < b):  # invariant: a - 1 does not reach in float64, b does (or is end)
        mid = (a + b) // 2
        ok, _ = evaluate(mid, sure=False)
        open_ = a < b
        b = np.where(open_ & ok, mid, b)
        a = np.where(open_ & ~ok, mid + 1, a)

    at_ok, at_sure = evaluate(np.minimum(a, end - 1), sure=True)
    below_ok, below_sure = evaluate(np.maximum(a - 1, start), sure=True)
    exact_at = (a == end) | (at_ok & at_sure)
    exact_below = (a == start) | (~below_ok & below_sure)
    for i, c in zip(*np.nonzero(~(exact_at & exact_below)), strict=True):
        level, sg = int(levels[i, 0]), int(sign[c])

        def reaches(candidate: int, level=level, sg=sg, c=c) -> bool:
            return quantizer.exact(chain.exact(Fraction(candidate * sg), c)) >= level

        a[i, c] = _settle(int(a[i, c]), reaches, int(start[c]), int(end[c]))
    table = (a * sign).T  # back to accumulator units, [channels, levels]
    return Thresholds(np.ascontiguousarray(table), (sign > 0).astype(bool), out_fmt)
