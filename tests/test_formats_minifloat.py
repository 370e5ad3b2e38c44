"""Minifloats against ml_dtypes (every code, casts) and QONNX's float_quant reference."""

from __future__ import annotations

from fractions import Fraction

import ml_dtypes
import numpy as np
import pytest
from qonnx.custom_op.general.floatquant import float_quant

from bitloom.formats import (
    NAMED,
    Minifloat,
    accumulator_format,
    float_quant_format,
    parse_format,
    round_exact,
)

# Every ml_dtypes float type of <= 16 bits; the first eight are the ones the issue names.
#: ml_dtypes before 0.7 casts float64 through float32 (two roundings) and rounds every
#: float32 subnormal in (2**-127, 2**-126) up to 2**-126 in e8m0; 0.7 fixed both
ML_DTYPES_BEFORE_0_7 = tuple(int(p) for p in ml_dtypes.__version__.split(".")[:2]) < (0, 7)
ML_DTYPES = ["float8_e4m3fn", "float8_e4m3fnuz", "float8_e5m2", "float8_e5m2fnuz",
             "float6_e3m2fn", "float6_e2m3fn", "float4_e2m1fn", "float8_e8m0fnu",
             "float8_e4m3", "float8_e3m4", "float8_e4m3b11fnuz", "bfloat16"]
QONNX_MODES = ["ROUND", "CEIL", "FLOOR", "UP", "DOWN", "HALF_UP", "HALF_DOWN"]


def _raw(fmt: Minifloat) -> type:
    return np.uint16 if fmt.bits > 8 else np.uint8


@pytest.mark.parametrize("name", ML_DTYPES)
def test_every_code_decodes_like_ml_dtypes(name):
    fmt, dtype = NAMED[name], getattr(ml_dtypes, name)
    codes = np.arange(2**fmt.bits)
    with np.errstate(invalid="ignore"):
        ref = codes.astype(_raw(fmt)).view(dtype).astype(np.float64)
    ours = fmt.decode(codes)
    if name == "bfloat16":  # ml_dtypes keeps bfloat16 NaN payloads; we return a quiet NaN
        nan = np.isnan(ref)
        assert np.array_equal(np.isnan(ours), nan)
        assert np.array_equal(np.signbit(ours[nan]), np.signbit(ref[nan]))
        ref, ours = ref[~nan], ours[~nan]
    np.testing.assert_array_equal(ours.view(np.uint64), ref.view(np.uint64))


def _cast_inputs(fmt: Minifloat, rng: np.random.Generator) -> np.ndarray:
    """Every value, every midpoint, their float32 neighbours, specials and 10**6 random."""
    v = fmt.values()
    edges = [0.0, -0.0, np.inf, -np.inf, np.nan, -np.nan, 2 * fmt.max, -2 * fmt.max, 1e38,
             -1e38, 1e-45, -1e-45, 1e-40, -1e-40]
    x = np.concatenate([v, -v, (v[1:] + v[:-1]) / 2, edges]).astype(np.float32)
    x = np.concatenate([x, np.nextafter(x, np.float32(np.inf)),
                        np.nextafter(x, np.float32(-np.inf))])
    bits = rng.integers(0, 2**32, 500_000, dtype=np.uint64).astype(np.uint32).view(np.float32)
    tiny = fmt.min if fmt.min > 0 else fmt.max / 2**fmt.grid().hi.bit_length()
    mag = np.exp2(rng.uniform(np.log2(tiny) - 2, np.log2(fmt.max) + 1, 500_000))
    return np.concatenate([x, bits, (mag * rng.choice([-1, 1], mag.size)).astype(np.float32)])


@pytest.mark.parametrize("name", ML_DTYPES)
def test_quantize_matches_the_ml_dtypes_cast(name):
    fmt, dtype = NAMED[name], getattr(ml_dtypes, name)
    with np.errstate(over="ignore", invalid="ignore"):  # random bits hold signalling NaNs
        x = _cast_inputs(fmt, np.random.default_rng(len(name)))
        if name == "float8_e8m0fnu" and ML_DTYPES_BEFORE_0_7:
            x = x[~((np.abs(x) > 2.0**-127) & (np.abs(x) < 2.0**-126))]
        ref = x.astype(dtype).view(_raw(fmt)).astype(np.int64)
        ours = fmt.encode(fmt.quantize(x))
    np.testing.assert_array_equal(ours, ref)


def test_e8m0_cast_of_float32_subnormals():
    """The nearest e8m0 value of a float32 subnormal below 1.5 * 2**-127 is 2**-127 (code
    0): what we return, and ml_dtypes from 0.7 (0.6 sent all of (2**-127, 2**-126) up)."""
    fmt = NAMED["float8_e8m0fnu"]
    x = np.array([1.001953125, 1.25, 1.5, 1.75], dtype=np.float32) * np.float32(2.0**-127)
    assert list(fmt.encode(fmt.quantize(x))) == [0, 0, 1, 1]
    theirs = list(x.astype(ml_dtypes.float8_e8m0fnu).view(np.uint8))
    assert theirs == ([1, 1, 1, 1] if ML_DTYPES_BEFORE_0_7 else [0, 0, 1, 1])


def test_float64_inputs_round_once():
    """We round a float64 once, as ml_dtypes does from 0.7 (before, it cast through
    float32: two roundings)."""
    fmt = NAMED["float8_e4m3fn"]
    x = np.array([1 + 2.0**-4 + 2.0**-40, 1 + 2.0**-4 - 2.0**-40])  # just off the 1..1.125 tie
    np.testing.assert_array_equal(fmt.quantize(x), [1.125, 1.0])
    np.testing.assert_array_equal(x.astype(ml_dtypes.float8_e4m3fn).astype(float),
                                  [1.0, 1.0] if ML_DTYPES_BEFORE_0_7 else [1.125, 1.0])


def test_named_special_values_and_saturation():
    e4m3fn, e5m2 = NAMED["float8_e4m3fn"], NAMED["float8_e5m2"]
    assert e4m3fn.max == 448 and e5m2.max == 57344 and NAMED["float4_e2m1fn"].max == 6
    assert NAMED["float8_e4m3fnuz"].bias == 8 and NAMED["float8_e5m2fnuz"].bias == 16
    x = np.array([464.0, 465.0, np.inf, -1e9])
    assert np.isnan(e4m3fn.quantize(x)[1:]).all() and e4m3fn.quantize(x)[0] == 448
    onnx_saturating = Minifloat(4, 3, specials="fn")  # QuantizeLinear saturate=1
    np.testing.assert_array_equal(onnx_saturating.quantize(x), [448, 448, 448, -448])
    np.testing.assert_array_equal(e5m2.quantize([61439.0, 61440.0, -np.inf]),
                                  [57344, np.inf, -np.inf])
    np.testing.assert_array_equal(Minifloat(5, 2, specials="ieee").quantize([np.inf]), [57344])
    fp4 = NAMED["float4_e2m1fn"]
    assert fp4.saturating and fp4.quantize([np.inf])[0] == 6
    assert np.signbit(fp4.quantize([np.nan])[0])  # ml_dtypes: NaN -> its quiet_NaN(), -0
    with pytest.raises(ValueError):
        fp4.encode([np.nan])


@pytest.mark.parametrize(("short", "named"), [("e3m2", "float6_e3m2fn"), ("e2m3", "float6_e2m3fn"),
                                              ("e2m1", "float4_e2m1fn"),
                                              ("e5m2_ieee_nosat", "float8_e5m2"),
                                              ("ue8m0_fn_nosub_nosat", "float8_e8m0fnu"),
                                              ("e4m3_b8_fnuz_nosat", "float8_e4m3fnuz")])
def test_short_names_alias_named_formats(short, named):
    assert parse_format(short) == parse_format(named)
    assert parse_format(short).name == named


def test_spelled_names_round_trip():
    for fmt in [Minifloat(4, 3, specials="fn"), Minifloat(3, 2, bias=-2), Minifloat(4, 3,
                max_val=448.0), Minifloat(5, 2, specials="ieee", signed=False),
                Minifloat(1, 0), Minifloat(8, 7, specials="fn", saturating=False)]:
        assert parse_format(fmt.name) == fmt, fmt.name
    assert Minifloat(4, 3, max_val=480.0) == Minifloat(4, 3)  # the natural max is no max_val
    with pytest.raises(ValueError):
        Minifloat(4, 3, max_val=450.0)  # not a value
    with pytest.raises(ValueError):
        Minifloat(4, 3, specials="fn", max_val=480.0)  # 480 is the NaN code
    with pytest.raises(ValueError):
        Minifloat(4, 3, subnormals=False)  # signed without zero
    with pytest.raises(ValueError):
        parse_format("e4m3_bogus")


# -- QONNX FloatQuant ------------------------------------------------------------------------

# (exponent, mantissa, bias, max_val, has_inf, has_nan, saturation, signed)
FLOAT_QUANT = [
    (4, 3, 7, None, False, False, True, True),
    (4, 3, 7, 448.0, False, True, True, True),
    (4, 3, 7, 448.0, False, True, False, True),
    (4, 3, 8, 224.0, False, True, True, True),
    (5, 2, 15, 57344.0, True, True, False, True),
    (5, 2, 15, 57344.0, True, True, True, True),
    (4, 3, 7, 256.0, False, False, True, True),
    (2, 1, 1, None, False, False, True, True),
    (3, 2, 3, None, False, False, True, True),
    (2, 3, 1, None, False, False, True, True),
    (1, 2, 0, None, False, False, True, True),
    (3, 0, 3, None, False, False, True, True),
    (6, 1, 31, None, False, False, True, True),
    (7, 2, 63, None, False, False, True, True),
    (3, 2, -2, None, False, False, True, True),
    (4, 3, 7, None, False, False, True, False),
]


def _float_quant_case(cfg, seed: int, pow2_scale: bool):
    """Random values over the whole range; with a power-of-two scale also every value and tie."""
    fmt = float_quant_format(*cfg)
    rng = np.random.default_rng(seed)
    scale = np.float32(2.0 ** (rng.integers(-3, 4) if pow2_scale else rng.uniform(-3, 3)))
    span = np.log2(fmt.max)
    mag = np.exp2(rng.uniform(span - 2 ** cfg[0] - cfg[1] - 3, span + 2, 20_000))
    x = mag * rng.choice([-1, 1], mag.size)
    if pow2_scale:
        v = fmt.values()
        ties = np.concatenate([v, (v[1:] + v[:-1]) / 2, [2 * fmt.max]])
        x = np.concatenate([x, ties * scale, -ties * scale])
    return fmt, scale, x.astype(np.float32)


def _qonnx_binade_is_off(xs: np.ndarray, fmt: Minifloat) -> np.ndarray:
    """Where QONNX's float32 ``floor(log2(|x|))`` misjudges the binade (x just below 2**k)."""
    est = np.floor(np.log2(np.abs(xs) + np.finfo(np.float32).tiny))
    _, e = np.frexp(xs.astype(np.float64))
    q_min = -fmt.grid().frac_bits
    return (est != e - 1) & (np.maximum(est, e - 1) - fmt.man_bits > q_min)


@pytest.mark.parametrize("pow2_scale", [True, False], ids=["pow2-scale", "random-scale"])
@pytest.mark.parametrize("mode", QONNX_MODES)
@pytest.mark.parametrize("cfg", FLOAT_QUANT, ids=lambda c: "e{}m{}b{}_{}_{}{}{}s{}".format(*c))
def test_quantize_matches_qonnx_float_quant(cfg, mode, pow2_scale):
    seed = FLOAT_QUANT.index(cfg) * 16 + QONNX_MODES.index(mode) * 2 + pow2_scale
    fmt, scale, x = _float_quant_case(cfg, seed, pow2_scale)
    e, m, bias, max_val, has_inf, has_nan, saturation, signed = cfg
    ref = float_quant(x, scale, e, m, bias, signed, max_val, has_inf, has_nan, True, mode,
                      saturation)
    xs = x / scale  # float32, exactly as the reference divides
    # the reference's max is a float64, which promotes its result: compare in its dtype
    ours = (fmt.quantize(xs, rounding=mode) * np.float64(scale)).astype(ref.dtype)
    keep = np.ones(x.size, bool)
    if mode in ("FLOOR", "DOWN"):  # see test_qonnx_binade_estimate_near_powers_of_two
        keep = ~_qonnx_binade_is_off(xs, fmt)
        assert keep.mean() > 0.999
    np.testing.assert_array_equal(ours[keep], ref[keep])


def test_qonnx_binade_estimate_near_powers_of_two():
    """QONNX takes the binade from a float32 log2, which rounds up to k just below 2**k; only
    the directed modes toward zero then see a coarser step. We round exactly."""
    fmt = float_quant_format(4, 3, 7)
    x = np.array([np.float32(256) - np.float32(2.0**-15)], dtype=np.float32)
    ref = float_quant(x, np.float32(1), 4, 3, 7, True, None, False, False, True, "FLOOR", True)
    assert ref[0] == 224  # a step of 32: the binade [256, 512)
    assert fmt.quantize(x, rounding="floor")[0] == 240  # the binade [128, 256) steps by 16
    exact = round_exact(Fraction(float(x[0])) / 16, "floor") * 16
    assert exact == 240


def test_qonnx_maps_infinities_to_nan():
    """QONNX computes inf/inf for an infinite input and returns NaN even when saturating; the
    formats follow ONNX instead: inf saturates, or stays inf/becomes NaN per the policy."""
    x = np.array([np.inf, -np.inf], dtype=np.float32)
    with np.errstate(invalid="ignore"):
        ref = float_quant(x, np.float32(1), 4, 3, 7, True, 448.0, False, True, True, "ROUND", True)
    assert np.isnan(ref).all()
    fmt = float_quant_format(4, 3, 7, 448.0, has_nan=True)
    np.testing.assert_array_equal(fmt.quantize(x), [448, -448])


def test_float_quant_format_rejects_unencodable_attributes():
    with pytest.raises(ValueError):
        float_quant_format(4, 3, 7, has_inf=True)  # default max 480 collides with inf codes
    with pytest.raises(ValueError):
        float_quant_format(4, 3, 7, saturation=False)  # QONNX raises too
    assert float_quant_format(4, 3, 7, 448.0, has_nan=True, saturation=False) == Minifloat(
        4, 3, specials="fn", saturating=False)


def test_kulisch_accumulator_of_e4m3():
    fmt = NAMED["float8_e4m3fn"]
    acc = accumulator_format(fmt, fmt, 1)  # the exact product: 2**-18 .. 448**2
    assert acc.frac_bits == 18 and acc.max >= 448.0**2 and acc.min <= -(448.0**2)
    acc = accumulator_format(fmt, fmt, 4096)
    assert acc.frac_bits == 18 and acc.bits == 1 + (448 * 448 * 2**18 * 4096).bit_length()
