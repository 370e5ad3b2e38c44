"""What keeps ``bitloom compile`` fast on large layers, checked on the netlist rather than the
clock (timings are benchmarks, never assertions): a value read by many lanes is emitted once
(Amaranth copies an expression into every place that uses it), weight words are packed the
way :func:`bitloom.formats.bits.pack` defines, and the core reports each layer it
elaborates without changing the Verilog."""

from __future__ import annotations

import re

import numpy as np
import pytest
from amaranth.back import rtlil, verilog
from test_hw_cnn import acc_format, random_codes

import bitloom
from bitloom.errors import BitloomError
from bitloom.formats import Int, parse_format
from bitloom.formats.bits import pack, unpack
from bitloom.hw.core import Core
from bitloom.hw.mvu import MatrixVectorUnit
from bitloom.hw.pe import DotProductUnit
from bitloom.hw.weights import pack_rows, unpack_rows
from bitloom.ir import MatrixVector
from bitloom.plan import make_plan
from bitloom.plan.fold import Folding
from bitloom.plan.products import dsp_packing

from qonnx_models import random_mlp


def cells(elaboratable, kind: str) -> list[str]:
    """The RTLIL cells of one kind (``$mux``, ``$mul``, ...), with their parameters."""
    text = rtlil.convert(elaboratable)
    return re.findall(rf"cell \{kind} .*?\n  end", text, flags=re.S)


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 7, 8, 9, 16])
@pytest.mark.parametrize("fields", [1, 3, 8, 100])
def test_pack_rows_is_pack_for_every_row(bits, fields):
    codes = np.random.default_rng(bits * fields).integers(0, 1 << bits, size=(6, fields))
    words = pack_rows("fc", codes, bits)
    assert words == [pack(row, bits) for row in codes]
    np.testing.assert_array_equal(unpack_rows(words, bits, fields), codes)
    assert unpack_rows(words, bits, fields).tolist() == [unpack(w, bits, fields) for w in words]


def test_unpack_rows_ignores_bits_above_the_fields_like_unpack():
    assert unpack_rows([0b1_1011], 2, 2).tolist() == [unpack(0b1_1011, 2, 2)]


def test_a_code_wider_than_its_field_is_refused_by_layer():
    with pytest.raises(BitloomError, match="fc: weight code 4 does not fit 2 bits"):
        pack_rows("fc", np.array([[1, 4]]), 2)


def test_the_activation_select_is_one_mux_for_all_lanes():
    """The MVU picks its input beat (stream or buffer) once; every lane slices the result
    (a mux per lane made TFC-w1a1's Verilog hold 7,400 copies of a 784-bit mux)."""
    rng = np.random.default_rng(0)
    fmt = Int(1, True)  # bipolar
    k, n = 32, 8
    layer = MatrixVector("fc", (-1,), (k,), acc_fmt=acc_format(fmt, fmt, k),
                         weights=random_codes(rng, fmt, (k, n)), in_fmt=fmt, w_fmt=fmt)
    unit = MatrixVectorUnit(layer, Folding(pe=4, simd=16))
    beat_muxes = [c for c in cells(unit, "$mux") if re.search(r"WIDTH 16\b", c)]
    assert len(beat_muxes) == 1


@pytest.mark.parametrize(("family", "pes", "simd"), [("xcup", 4, 3), ("xc7", 4, 5)])
def test_packed_dsp_products_are_emitted_once_per_multiplier(family, pes, simd):
    """A packed sum is cut into one field per PE; each field reads the same multipliers."""
    fmt = Int(8, True)
    ways = dsp_packing(fmt, fmt, family, pes, simd).ways
    assert ways > 1
    unit = DotProductUnit(fmt, fmt, simd, pes, dsp=family)
    assert len(cells(unit, "$mul")) == -(-pes // ways) * simd


@pytest.mark.parametrize(("w_name", "a_name", "kind"),
                         [("e2m1", "e2m1", "$shift"), ("e4m3", "e4m3", "$mul")])
def test_a_product_negated_by_its_sign_is_computed_once(w_name, a_name, kind):
    """Sign-magnitude products (a magnitude table read, or a significand multiply) are
    negated where the signs differ: one per lane, not one per arm of the mux."""
    simd = 6
    unit = DotProductUnit(parse_format(w_name), parse_format(a_name), simd, 1)
    assert len(cells(unit, kind)) == simd


def test_the_core_reports_every_layer_and_its_verilog_does_not_change():
    net = bitloom.load(random_mlp(seed=3))
    plan = make_plan(net, target_cycles=8)
    seen: list[tuple[int, int, str]] = []
    with_progress = verilog.convert(Core(plan, lambda *step: seen.append(step)),
                                    name="bitloom_core", emit_src=False)
    layers = [lp.layer.name for lp in plan.layers]
    assert seen == [(k, len(layers), name) for k, name in enumerate(layers, 1)]
    assert with_progress == verilog.convert(Core(plan), name="bitloom_core", emit_src=False)
