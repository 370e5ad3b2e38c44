"""Fixed point against apytypes (every rounding and overflow mode); Int against qonnx with
random non-power-of-two scales; ternary; the accumulator for fixed-point operands."""

from __future__ import annotations

import apytypes
import numpy as np
import pytest
from qonnx.custom_op.general.intquant import int_quant

from bitloom.formats import (
    TERNARY,
    Fixed,
    Int,
    accumulator_format,
    parse_format,
)

Q = apytypes.QuantizationMode
SAT, WRAP = apytypes.OverflowMode.SAT, apytypes.OverflowMode.WRAP
APY_MODES = {"round": Q.RND_CONV, "ceil": Q.TRN_INF, "floor": Q.TRN, "up": Q.TRN_AWAY,
             "down": Q.TRN_ZERO, "half_up": Q.RND_INF, "half_down": Q.RND_ZERO,
             "half_ceil": Q.RND, "half_floor": Q.RND_MIN_INF}
FORMATS = [(8, 4), (4, 0), (6, 8), (5, -2), (12, 6), (2, 1), (16, 15)]


def _inputs(bits: int, frac_bits: int, rng: np.random.Generator) -> np.ndarray:
    """Random values (40 fraction bits) twice the range wide, every tie and every value."""
    span = 2.0 ** (bits - frac_bits)
    lsb = 2.0**-frac_bits
    ties = (np.arange(-(2**bits), 2**bits) + 0.5) * lsb
    x = np.round(rng.uniform(-span, span, 10_000) * 2.0**40) / 2.0**40
    return np.concatenate([x, ties, ties / 2, np.arange(-(2**bits), 2**bits) * lsb])


def _exact(x: np.ndarray) -> apytypes.APyFixedArray:
    # 64 bits hold every input exactly; wider sources hit an apytypes 0.5.1 bug: a WRAP cast
    # from a multi-limb array keeps the unwrapped value (to_bits is right, to_numpy is not).
    return apytypes.APyFixedArray.from_float(x, int_bits=20, frac_bits=44)


def _apy(x: np.ndarray, bits: int, frac_bits: int, mode: str, overflow) -> np.ndarray:
    exact = _exact(x)
    return exact.cast(bits=bits, frac_bits=frac_bits, quantization=APY_MODES[mode],
                      overflow=overflow).to_numpy()


@pytest.mark.parametrize("mode", list(APY_MODES))
@pytest.mark.parametrize(("bits", "frac_bits"), FORMATS)
def test_signed_fixed_matches_apytypes(bits, frac_bits, mode):
    x = _inputs(bits, frac_bits, np.random.default_rng(bits * 31 + frac_bits))
    fmt = Fixed(bits, frac_bits)
    np.testing.assert_array_equal(fmt.quantize(x, mode), _apy(x, bits, frac_bits, mode, SAT))
    np.testing.assert_array_equal(fmt.quantize(x, mode, overflow="wrap"),
                                  _apy(x, bits, frac_bits, mode, WRAP))


@pytest.mark.parametrize("mode", list(APY_MODES))
@pytest.mark.parametrize(("bits", "frac_bits"), FORMATS[:4])
def test_unsigned_fixed_matches_apytypes(bits, frac_bits, mode):
    """APyFixed is always signed: one more bit, then the unsigned range (saturate), or its
    low ``bits`` bits read unsigned (wrap)."""
    x = _inputs(bits, frac_bits, np.random.default_rng(bits * 37 + frac_bits))
    fmt = Fixed(bits, frac_bits, signed=False)
    sat = np.clip(_apy(x, bits + 1, frac_bits, mode, SAT), 0, fmt.max)
    np.testing.assert_array_equal(fmt.quantize(x, mode), sat)
    wrapped = _exact(x).cast(
        bits=bits, frac_bits=frac_bits, quantization=APY_MODES[mode], overflow=WRAP)
    codes = np.array(wrapped.to_bits(), dtype=np.int64)
    np.testing.assert_array_equal(fmt.quantize(x, mode, overflow="wrap"), fmt.decode(codes))


def test_fixed_codes_round_trip_and_reject():
    fmt = Fixed(8, 4)
    v = fmt.values()
    assert v.size == 256 and v[0] == -8 and v[-1] == 8 - 1 / 16
    np.testing.assert_array_equal(fmt.decode(fmt.encode(v)), v)
    narrow = parse_format("fixed8.6n")
    assert narrow.min == -narrow.max == -127 / 64
    for bad in ([8.0], [0.03125], [np.nan], [np.inf]):
        with pytest.raises(ValueError):
            fmt.encode(bad)
    with pytest.raises(ValueError):
        narrow.quantize([1.0], overflow="wrap")
    assert np.isnan(fmt.quantize([np.nan, np.inf], overflow="wrap")).all()
    np.testing.assert_array_equal(fmt.quantize([np.inf, -np.inf]), [fmt.max, fmt.min])


def test_fixed_names():
    for name in ("fixed8.4", "ufixed8.8", "fixed4.-2", "fixed8.6n", "ufixed1.0"):
        assert parse_format(name).name == name
    assert parse_format("fixed16.8") == Fixed(16, 8)
    with pytest.raises(ValueError):
        parse_format("fixed1.0")  # a signed fixed point needs a sign and a magnitude bit


@pytest.mark.parametrize("mode", ["ROUND", "CEIL", "FLOOR", "UP", "DOWN", "HALF_UP",
                                  "HALF_DOWN"])
@pytest.mark.parametrize(("bits", "signed", "narrow"),
                         [(2, True, True), (3, True, False), (8, True, True), (8, False, False),
                          (5, False, True), (12, True, False)])
def test_int_matches_qonnx_with_random_scales(bits, signed, narrow, mode):
    rng = np.random.default_rng(bits * 11 + signed * 3 + narrow)
    fmt = Int(bits, signed, narrow)
    scale = rng.uniform(0.01, 3, (8, 1)).astype(np.float32)  # per-channel, not powers of two
    span = 2.0**bits * scale
    x = (rng.uniform(-1.5, 1.5, (8, 2000)) * span).astype(np.float32)
    ref = int_quant(x, scale, np.float32(0), np.float32(bits), signed, narrow, mode)
    ours = fmt.quantize(x / scale, rounding=mode) * scale.astype(np.float64)
    np.testing.assert_array_equal(ours.astype(ref.dtype), ref)


def test_ternary_is_a_named_int():
    assert parse_format("ternary") is TERNARY and Int(2, True, narrow=True) == TERNARY
    assert TERNARY.name == "ternary" and list(TERNARY.values()) == [-1, 0, 1]
    np.testing.assert_array_equal(TERNARY.quantize([-3, -0.6, 0.4, 0.5, 9]), [-1, -1, 0, 0, 1])
    np.testing.assert_array_equal(TERNARY.decode(TERNARY.encode([-1, 0, 1])), [-1, 0, 1])


@pytest.mark.parametrize(("w", "a"), [(Fixed(8, 4), Fixed(8, 7, signed=False)),
                                      (Fixed(4, -2), Int(4)), (TERNARY, Fixed(6, 3))])
@pytest.mark.parametrize("length", [1, 9, 512])
def test_fixed_accumulator_holds_adversarial_dot_products(w, a, length):
    acc = accumulator_format(w, a, length)
    assert isinstance(acc, Fixed if w.grid().frac_bits + a.grid().frac_bits else Int)
    products = [x * y for x in (w.min, w.max) for y in (a.min, a.max)]
    assert acc.min <= length * min(products) and length * max(products) <= acc.max
    smaller = Fixed(acc.bits - 1, acc.grid().frac_bits, acc.grid().lo < 0)
    assert smaller.min > length * min(products) or length * max(products) > smaller.max


def test_spanning_a_grid_never_gives_a_bipolar_register():
    assert Int.spanning(-1, 0) == Int(2) and Int.spanning(0, 1) == Int(1, signed=False)
    assert accumulator_format(Int(1, signed=False), Int(2, True, narrow=True), 1) == Int(2)
