"""Block formats: OCP MX against the spec's scale rule with ml_dtypes elements, and ONNX
opset-21 blocked QuantizeLinear (onnx's reference evaluator) with model-supplied scales."""

from __future__ import annotations

import math

import ml_dtypes
import numpy as np
import pytest
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

from bitloom.formats import (
    NAMED,
    Block,
    Fixed,
    Int,
    Minifloat,
    accumulator_grid,
    parse_format,
)

MX = ["mxfp8_e4m3", "mxfp8_e5m2", "mxfp6_e3m2", "mxfp6_e2m3", "mxfp4", "mxint8"]
# The element type of each MX format in ml_dtypes (mxint8: 1.6 fixed point, symmetric) and
# the exponent of its largest normal, emax_elem in the OCP MX spec's table.
ELEMENTS = {"mxfp8_e4m3": ("float8_e4m3fn", 8), "mxfp8_e5m2": ("float8_e5m2", 15),
            "mxfp6_e3m2": ("float6_e3m2fn", 4), "mxfp6_e2m3": ("float6_e2m3fn", 2),
            "mxfp4": ("float4_e2m1fn", 2), "mxint8": (None, 0)}


def _spec_mx(x: np.ndarray, name: str) -> np.ndarray:
    """OCP MX v1.0 section 6.3, written out block by block (last axis, blocks of 32)."""
    element, emax = ELEMENTS[name]
    out = np.empty_like(x)
    for i in range(0, x.shape[-1], 32):
        block = x[..., i:i + 32]
        for row in np.ndindex(block.shape[:-1]):
            v = block[row]
            amax = float(np.max(np.abs(v)))
            shared = -127 if amax == 0 else max(math.frexp(amax)[1] - 1 - emax, -127)
            p = v / 2.0**shared
            if element is None:
                q = np.clip(np.round(p * 64), -127, 127) / 64
            else:
                top = float(ml_dtypes.finfo(getattr(ml_dtypes, element)).max)
                q = np.clip(p, -top, top).astype(getattr(ml_dtypes, element)).astype(float)
            out[(*row, slice(i, i + 32))] = q * 2.0**shared
    return out


@pytest.mark.parametrize("name", MX)
def test_mx_quantize_follows_the_spec(name):
    rng = np.random.default_rng(len(name))
    x = rng.normal(size=(6, 96)) * np.exp2(rng.integers(-30, 30, size=(6, 1)))
    x[0, 5] = 0.0
    x[1, :32] = 0.0  # an all-zero block
    x[2, 40] = 2.0**-140  # tiny values in a block of tiny values: the scale clamps
    x[2, 32:64] = rng.normal(size=32) * 2.0**-140
    fmt = NAMED[name]
    np.testing.assert_array_equal(fmt.quantize(x), _spec_mx(x, name))
    codes = fmt.encode(fmt.quantize(x))
    np.testing.assert_array_equal(fmt.decode(codes), fmt.quantize(x))
    assert codes.max() < 2**fmt.bits


@pytest.mark.parametrize("name", MX)
def test_mx_blocks_along_any_axis_with_a_partial_block(name):
    fmt = NAMED[name]
    x = np.random.default_rng(1).normal(size=(45, 3)) * 100
    q = fmt.quantize(x, axis=0)
    np.testing.assert_array_equal(q, _spec_mx(x.T.copy(), name).T)
    assert fmt.shared_scales(x, axis=0).shape == (2, 3)
    np.testing.assert_array_equal(fmt.decode(fmt.encode(q, axis=0)), q)


def test_mx_nan_and_overflow_blocks():
    fmt = NAMED["mxfp4"]
    x = np.ones((3, 32))
    x[0, 3] = np.nan
    x[1, 7] = np.inf
    x[2, 0] = 2.0**140  # scale 2**138 exceeds E8M0
    q = fmt.quantize(x)
    assert np.isnan(q).all()
    np.testing.assert_array_equal(fmt.encode(q) >> 4, 0xFF)  # the E8M0 NaN
    assert fmt.shared_scales(np.zeros(32))[0] == 2.0**-127


def test_mx_values_and_accumulator():
    fmt = NAMED["mxfp4"]
    v = fmt.values()
    assert v.max() == 6 * 2.0**127 and v[v > 0].min() == 0.5 * 2.0**-127
    grid = accumulator_grid(fmt, fmt, 32)
    assert grid.frac_bits == 2 * (1 + 127) and grid.hi == 32 * (12 * 2**254) ** 2


def _onnx_quantize(x, scales, out_type, block_size, saturate=1):
    zp_type = {TensorProto.INT8: np.int8, TensorProto.UINT8: np.uint8,
               TensorProto.INT4: ml_dtypes.int4,
               TensorProto.FLOAT8E4M3FN: ml_dtypes.float8_e4m3fn}[out_type]
    attrs = {"saturate": saturate} if out_type == TensorProto.FLOAT8E4M3FN else {}
    node = helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["y"], axis=1,
                            block_size=block_size, **attrs)
    graph = helper.make_graph(
        [node], "q",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape),
         helper.make_tensor_value_info("s", TensorProto.FLOAT, scales.shape),
         helper.make_tensor_value_info("zp", out_type, scales.shape)],
        [helper.make_tensor_value_info("y", out_type, x.shape)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    zp = np.zeros(scales.shape, dtype=zp_type)
    return ReferenceEvaluator(model).run(None, {"x": x, "s": scales, "zp": zp})[0]


@pytest.mark.parametrize(("element", "out_type"), [
    (Int(8), TensorProto.INT8), (Int(8, signed=False), TensorProto.UINT8),
    (Int(4), TensorProto.INT4), (Minifloat(4, 3, specials="fn"), TensorProto.FLOAT8E4M3FN)])
@pytest.mark.parametrize("block_size", [4, 16, 7])
def test_onnx_blocked_quantize_linear(element, out_type, block_size):
    rng = np.random.default_rng(block_size)
    x = (rng.normal(size=(5, 50)) * 40).astype(np.float32)
    scales = rng.uniform(0.05, 2, size=(5, -(-50 // block_size))).astype(np.float32)
    fmt = Block(element, block_size, NAMED["float32"])
    ref = _onnx_quantize(x, scales, out_type, block_size).astype(np.float64)
    q = fmt.quantize(x, scales=scales)
    expanded = np.repeat(scales.astype(np.float64), block_size, axis=1)[:, :50]
    np.testing.assert_array_equal(q / expanded, ref)
    codes = fmt.encode(q, scales=scales)
    np.testing.assert_array_equal(fmt.decode(codes), q)
    np.testing.assert_array_equal(codes >> element.bits, NAMED["float32"].encode(expanded))
    with pytest.raises(ValueError):
        fmt.quantize(x)  # float scales come from the model
    with pytest.raises(ValueError):
        fmt.quantize(x, scales=scales[:, :1])


def test_block_names():
    for name in MX:
        assert parse_format(name).name == name
    onnx_int8 = parse_format("int8@32:float32")
    assert onnx_int8 == Block(Int(8), 32, NAMED["float32"]) and onnx_int8.name == "int8@32:float32"
    assert NAMED["mxint8"].element == Fixed(8, 6, narrow=True)
    assert NAMED["mxfp8_e4m3"].bits_per_block == 8 * 32 + 8
