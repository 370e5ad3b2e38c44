"""Hardware units in the Amaranth simulator: fast, with random back-pressure."""

from __future__ import annotations

import numpy as np
import pytest
from streams import beats, simulate

import bitloom
from bitloom.hw.glue import WidthConverter
from bitloom.hw.mvu import MatrixVectorUnit
from bitloom.plan.fold import Folding
from bitloom.sim.vectors import from_beats, to_beats

from qonnx_models import minifloat_mlp, random_mlp


def stream_through(dut, beats_in: list[int], expected_beats: int, seed: int,
                   pause: float = 0.4) -> list[int]:
    """Drive ``dut.i`` and drain ``dut.o`` with random gaps on valid and ready."""
    return beats(simulate(dut, {"i": beats_in}, {"o": expected_beats}, seed, pause)["o"])


@pytest.mark.parametrize(("n_in", "n_out"), [(1, 4), (4, 1), (2, 6), (6, 2)])
def test_width_converter_keeps_every_element_in_order(n_in, n_out):
    bits = 3
    rng = np.random.default_rng(n_in * 10 + n_out)
    elems = rng.integers(0, 2 ** bits, size=12 * max(n_in, n_out))
    from bitloom.formats import Int

    fmt = Int(bits, signed=False)
    dut = WidthConverter(bits, n_in, n_out)
    out = stream_through(dut, to_beats(elems, fmt, n_in), len(elems) // n_out, seed=n_in)
    np.testing.assert_array_equal(from_beats(out, fmt, n_out), elems)


@pytest.mark.parametrize(("fold", "variant"), [
    (Folding(1, 1), {}),
    (Folding(2, 4), {"bipolar_weights": True}),
    (Folding(4, 16), {"negative_scales": True, "rounding": "HALF_UP"}),
    (Folding(3, 8), {"in_signed": True, "in_bits": 8, "act_signed": True, "clip": True}),
    (Folding(2, 4), {"minifloat": (2, 1)}),
    (Folding(1, 8), {"minifloat": (4, 3)}),  # 255 wide thresholds: keep PE small
])
def test_matrix_vector_unit_is_bit_exact(fold, variant):
    if "minifloat" in variant:
        net = bitloom.load(minifloat_mlp(7, *variant["minifloat"], sizes=(16, 12, 4)))
    else:
        net = bitloom.load(random_mlp(7, sizes=(16, 12, 4), **variant))
    layer = net.layers[0]
    rng = np.random.default_rng(1)
    fmt = layer.in_fmt
    levels = fmt.grid_levels()
    values = levels[rng.integers(0, len(levels), size=(5, 16))]
    values[0], values[1] = levels[0], levels[-1]  # corner frames
    expected = layer.golden(values)
    dut = MatrixVectorUnit(layer, fold)
    beats = to_beats(values, fmt, fold.simd)
    out = stream_through(dut, beats, 5 * 12 // fold.pe, seed=fold.pe)
    got = from_beats(out, layer.out_fmt, fold.pe).reshape(expected.shape)
    np.testing.assert_array_equal(got, expected)
