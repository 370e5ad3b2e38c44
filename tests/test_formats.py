"""Int formats against qonnx's reference quantizer, plus the exact accumulator bound."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from qonnx.custom_op.general.intquant import int_quant

from bitloom.formats import (
    ROUNDING_MODES,
    Int,
    accumulator_format,
    parse_format,
    round_exact,
    round_with,
)
from bitloom.formats.bits import pack, unpack

QONNX_MODES = ["ROUND", "CEIL", "FLOOR", "UP", "DOWN", "HALF_UP", "HALF_DOWN"]


@pytest.mark.parametrize("mode", QONNX_MODES)
@pytest.mark.parametrize(("bits", "signed", "narrow"),
                         [(2, True, False), (4, True, True), (4, False, False), (8, True, False),
                          (3, False, False), (16, True, False)])
def test_quantize_matches_qonnx_int_quant(mode, bits, signed, narrow):
    rng = np.random.default_rng(bits * 7 + len(mode))
    fmt = Int(bits, signed, narrow)
    scale = np.float32(2.0 ** rng.integers(-4, 2))
    span = 2 ** bits * float(scale)
    # random values, plus exact ties and exact grid points at this scale
    x = np.concatenate([rng.uniform(-span, span, 4000),
                        (np.arange(-2 ** bits, 2 ** bits) + 0.5) * scale,
                        np.arange(-2 ** bits, 2 ** bits) * scale]).astype(np.float32)
    ref = int_quant(x, scale, np.float32(0), np.float32(bits), signed, narrow, mode) / scale
    ours = fmt.quantize(x / scale, rounding=mode)
    np.testing.assert_array_equal(ours, ref)


def test_bipolar_matches_qonnx():
    x = np.array([-2.0, -0.0, 0.0, 1e-9, 3.0], dtype=np.float32)
    ref = int_quant(x, np.float32(1), np.float32(0), np.float32(1), True, False, "ROUND")
    np.testing.assert_array_equal(Int(1, signed=True).quantize(x), ref)


@pytest.mark.parametrize("mode", ROUNDING_MODES)
def test_exact_rounding_agrees_with_float_rounding(mode):
    for num in range(-40, 41):
        q = Fraction(num, 4)
        assert round_exact(q, mode) == round_with(np.array([num / 4]), mode)[0], (mode, q)


@pytest.mark.parametrize("fmt", [Int(1, True), Int(2, True), Int(4, False), Int(4, True, True),
                                 Int(8, True), Int(16, False)])
def test_encode_decode_round_trip(fmt):
    values = fmt.values()
    assert values.min() == fmt.min_int and values.max() == fmt.max_int
    codes = fmt.encode(values)
    assert codes.min() >= 0 and codes.max() < 2 ** fmt.bits
    np.testing.assert_array_equal(fmt.decode(codes), values)
    np.testing.assert_array_equal(fmt.quantize(values), values)


def test_encode_rejects_values_outside_the_format():
    with pytest.raises(ValueError):
        Int(4, True, narrow=True).encode(np.array([-8]))
    with pytest.raises(ValueError):
        Int(1, True).encode(np.array([0]))


@pytest.mark.parametrize(("w", "a"), [(Int(4, True, True), Int(4, False)), (Int(1, True),
                         Int(1, True)), (Int(8, True), Int(8, True)), (Int(2, False),
                         Int(3, True)), (Int(16, True), Int(16, True))])
@pytest.mark.parametrize("length", [1, 7, 64, 1000])
def test_accumulator_holds_adversarial_dot_products(w, a, length):
    acc = accumulator_format(w, a, length)
    corners = [(x, y) for x in (w.min_int, w.max_int) for y in (a.min_int, a.max_int)]
    lo = length * min(x * y for x, y in corners)
    hi = length * max(x * y for x, y in corners)
    assert acc.min_int <= lo and hi <= acc.max_int
    # and it is the smallest such width
    b = acc.bits - 1
    s_lo, s_hi = (-(2 ** (b - 1)), 2 ** (b - 1) - 1) if acc.signed else (0, 2 ** b - 1)
    assert not (s_lo <= lo and hi <= s_hi)


def test_parse_format_names():
    assert parse_format("int4") == Int(4, True)
    assert parse_format("uint8") == Int(8, False)
    assert parse_format("int8n") == Int(8, True, narrow=True)
    assert parse_format("bipolar").bipolar
    with pytest.raises(ValueError):
        parse_format("int99")


def test_fields_pack_element_zero_lowest_and_unpack_back():
    codes = np.array([[3, -1], [0, 2]])
    word = pack(codes, 4)
    assert word == 0x20F3
    assert unpack(word, 4, 4) == [3, 15, 0, 2]
    wide = [2**70 + 5, 1]
    assert unpack(pack(wide, 72), 72, 2) == wide
