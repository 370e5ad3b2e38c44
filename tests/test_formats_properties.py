"""Hypothesis properties over randomly drawn formats of every family.

* ``decode(encode(quantize(x))) == quantize(x)`` (NaN and the sign of zero included);
* ``quantize`` is monotonic and idempotent, and inside ``[min, max]`` it returns exactly the
  value a brute-force search over ``values()`` picks for every rounding mode;
* no adversarial dot product leaves the accumulator's grid or range;
* every ``name`` parses back to an equal format.
"""

from __future__ import annotations

import os
from fractions import Fraction

import numpy as np
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from bitloom.formats import (
    E8M0,
    ROUNDING_MODES,
    SPECIALS,
    Block,
    Fixed,
    Format,
    Int,
    Minifloat,
    accumulator_format,
    parse_format,
)

SETTINGS = settings(max_examples=int(os.environ.get("BITLOOM_EXAMPLES", "60")), deadline=None)
MODES = st.sampled_from([m for m in ROUNDING_MODES if m != "half_even"])


@st.composite
def minifloats(draw, max_bits: int = 16) -> Minifloat:
    e = draw(st.integers(1, min(8, max_bits - 1)))
    m = draw(st.integers(0, min(7, max_bits - 1 - e)))
    signed = draw(st.booleans())
    specials = draw(st.sampled_from([s for s in SPECIALS if (s != "ieee" or m > 0)
                                     and (s != "fnuz" or signed)]))
    try:
        fmt = Minifloat(e, m, draw(st.integers(-3, 2**e + 2)), subnormals=signed or draw(
            st.booleans()), specials=specials, saturating=draw(st.booleans()), signed=signed)
    except ValueError:  # e1m0_fn: no positive value
        assume(False)
    v = fmt.values() if fmt.bits <= 12 else np.array([])
    if draw(st.booleans()) and v.size > 1:  # a QONNX-style max_val
        fmt = Minifloat(e, m, fmt.bias, fmt.subnormals, specials, fmt.saturating, signed,
                        float(draw(st.sampled_from(list(v[v > 0])))))
    return fmt


def fixeds() -> st.SearchStrategy[Fixed]:
    return st.builds(lambda b, f, s, n: Fixed(b, f, s, n), st.integers(2, 16),
                     st.integers(-4, 20), st.booleans(), st.booleans())


def ints() -> st.SearchStrategy[Int]:
    return st.builds(Int, st.integers(1, 16), st.booleans(), st.booleans())


def blocks() -> st.SearchStrategy[Block]:
    elements = st.one_of(minifloats(8), fixeds()).filter(
        lambda f: getattr(f, "saturating", True) and f.min == -f.max)
    return st.builds(Block, elements, st.integers(1, 8), st.just(E8M0))


ANY = st.one_of(minifloats(), fixeds(), ints())


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal as IEEE values, NaN matching NaN and -0 only -0."""
    return bool(np.all(((a == b) & (np.signbit(a) == np.signbit(b)))
                       | (np.isnan(a) & np.isnan(b))))


def _inputs(data, fmt: Format, size: int = 40) -> np.ndarray:
    """Floats around the format's range, its values, midpoints and specials."""
    hi = float(fmt.max)
    x = data.draw(st.lists(st.floats(-4 * hi, 4 * hi, allow_nan=False), min_size=size,
                           max_size=size))
    v = fmt.values() if fmt.bits <= 12 else np.array([fmt.min, fmt.max])
    picks = data.draw(st.lists(st.integers(0, len(v) - 1), min_size=10, max_size=10))
    mids = [(v[i] + v[min(i + 1, len(v) - 1)]) / 2 for i in picks]
    return np.array(x + mids + list(v[picks]) + [0.0, -0.0, np.inf, -np.inf, np.nan])


@SETTINGS
@given(fmt=ANY, mode=MODES, data=st.data())
def test_decode_encode_is_quantize(fmt, mode, data):
    x = _inputs(data, fmt)
    if isinstance(fmt, Minifloat):
        q = fmt.quantize(x, mode)
    else:  # integer formats have no NaN/inf codes
        q = fmt.quantize(x[np.isfinite(x)], mode)
    assert _same(fmt.decode(fmt.encode(q)), q)
    assert _same(fmt.quantize(q, mode), q)


@SETTINGS
@given(fmt=blocks(), mode=MODES, data=st.data())
def test_block_decode_encode_is_quantize(fmt, mode, data):
    x = np.array(data.draw(st.lists(st.floats(-1e30, 1e30), min_size=1, max_size=40)))
    q = fmt.quantize(x, mode)
    assert _same(fmt.decode(fmt.encode(q)), q)


@SETTINGS
@given(fmt=ANY, mode=MODES, data=st.data())
def test_quantize_is_monotonic(fmt, mode, data):
    x = np.sort(_inputs(data, fmt)[:-1])  # NaN excluded
    q = fmt.quantize(x, mode)
    q = q[~np.isnan(q)]  # non-saturating overflow
    assert np.all(q[1:] >= q[:-1])


def _brute_force(fmt: Format, x: float, mode: str) -> float:
    """The value ``mode`` picks among the two neighbours of ``x`` in ``values()``."""
    v = fmt.values()
    i = int(np.searchsorted(v, x))
    if v[i] == x:
        return x
    lo, hi = v[i - 1], v[i]
    away, toward = (hi, lo) if x > 0 else (lo, hi)
    directed = {"floor": lo, "ceil": hi, "down": toward, "up": away}
    if mode in directed:
        return directed[mode]
    mid = (lo + hi) / 2
    if x != mid:
        return lo if x < mid else hi
    # ties to the even integer significand, counted in steps of the gap (the mantissa LSB;
    # with no mantissa bits the implicit 1 is odd, so ties go up, as ml_dtypes does)
    even = lo if (Fraction(lo) / Fraction(hi - lo)) % 2 == 0 else hi
    return {"round": even, "half_up": away, "half_down": toward, "half_ceil": hi,
            "half_floor": lo}[mode]


@SETTINGS
@given(fmt=st.one_of(minifloats(10), fixeds().filter(lambda f: f.bits <= 10)), mode=MODES,
       data=st.data())
def test_quantize_is_the_nearest_value_under_the_mode(fmt, mode, data):
    x = _inputs(data, fmt)
    x = x[(x >= fmt.min) & (x <= fmt.max)]
    ref = np.array([_brute_force(fmt, float(t), mode) for t in x])
    np.testing.assert_array_equal(fmt.quantize(x, mode), ref)


@SETTINGS
@given(w=st.one_of(ANY, blocks()), a=st.one_of(ANY, blocks()), length=st.integers(1, 300),
       data=st.data())
def test_accumulator_holds_adversarial_dot_products(w, a, length, data):
    acc = accumulator_format(w, a, length)
    grid = acc.grid()
    scale = Fraction(2) ** grid.frac_bits
    corners = [Fraction(p) * Fraction(q) for p in (w.min, w.max) for q in (a.min, a.max)]
    sums = [length * min(corners), length * max(corners)]
    if w.bits <= 12 and a.bits <= 12:  # and a random dot product of actual values
        vw, va = w.values(), a.values()
        iw = data.draw(st.lists(st.integers(0, len(vw) - 1), min_size=length, max_size=length))
        ia = data.draw(st.lists(st.integers(0, len(va) - 1), min_size=length, max_size=length))
        sums.append(sum(Fraction(vw[i]) * Fraction(va[j]) for i, j in zip(iw, ia, strict=True)))
    for s in sums:
        n = s * scale
        assert n.denominator == 1 and grid.lo <= n <= grid.hi


@SETTINGS
@given(fmt=st.one_of(ANY, blocks()))
def test_names_parse_back(fmt):
    assert parse_format(fmt.name) == fmt
