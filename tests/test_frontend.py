"""QONNX frontend + golden model against qonnx's executor, and refusals of bad input."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import onnx
import pytest

import bitloom
from bitloom.errors import BitloomError
from bitloom.formats import Int
from bitloom.ir import (
    CLIP_THEN_ROUND,
    ROUND_THEN_SHIFT,
    Affine,
    Chain,
    Clamp,
    Quantizer,
    derive_thresholds,
)

from qonnx_models import Builder, random_mlp, run_qonnx


def test_example_golden_agrees_with_qonnx(example_model, example_net, digits):
    """Acceptance: same argmax on every test image, |diff| <= one output LSB."""
    x, y = digits
    golden = example_net.run(x)
    reference = run_qonnx(onnx.load(example_model), x)
    assert golden.dtype == np.float32 and golden.shape == reference.shape
    np.testing.assert_array_equal(golden.argmax(1), reference.argmax(1))
    affine = example_net.output.chain.ops[0]
    lsb = max(abs(float(a)) for a in affine.a)
    assert np.abs(golden - reference).max() <= lsb
    assert (golden.argmax(1) == y).mean() > 0.9


VARIANTS = {
    "defaults": {},
    "half_up": {"rounding": "HALF_UP"},
    "half_down": {"rounding": "HALF_DOWN"},
    "floor_negative_bn": {"rounding": "FLOOR", "negative_scales": True},
    "ceil": {"rounding": "CEIL", "negative_scales": True},
    "up_down": {"rounding": "UP"},
    "down": {"rounding": "DOWN"},
    "bipolar_weights": {"bipolar_weights": True},
    "signed_clip": {"clip": True, "act_signed": True},
    "gemm_transposed": {"gemm": True},
    "zero_point": {"in_zero_point": 2.0},
    "int8_in_int2_act_narrow": {"in_signed": True, "in_bits": 8, "act_bits": 2,
                                "narrow": True},
    "int16_input": {"in_signed": True, "in_bits": 16, "w_bits": 3, "act_bits": 6},
    "deep": {"sizes": (16, 20, 12, 12, 6)},
}


@pytest.mark.parametrize("variant", VARIANTS)
def test_golden_is_bit_exact_to_qonnx_on_exact_models(variant):
    model = random_mlp(3, **VARIANTS[variant])
    net = bitloom.load(model)
    rng = np.random.default_rng(5)
    x = np.concatenate([rng.uniform(-2, 4, size=(60, 16)),
                        np.round(rng.uniform(-2, 4, size=(20, 16)) * 16) / 16]).astype(np.float32)
    np.testing.assert_array_equal(net.run(x), run_qonnx(model, x))


def test_bipolar_activations_and_brevitas_domain():
    b = Builder()
    x = b.node("BipolarQuant", ["inp", b.const(1.0)], domain="onnx.brevitas")
    w = b.quant(b.const(np.random.default_rng(0).normal(size=(8, 6))), 0.5, 3, True,
                domain="onnx.brevitas")
    y = b.node("BipolarQuant", [b.node("Add", [b.node("MatMul", [x, w]), b.const(0.25)]),
                                b.const(1.0)], domain="onnx.brevitas")
    w2 = b.quant(b.const(np.random.default_rng(1).normal(size=(6, 3))), 0.5, 3, True)
    out = b.node("MatMul", [y, w2])
    model = b.model("inp", [1, 8], out, [1, 3])
    net = bitloom.load(model)
    assert net.layers[0].out_fmt.bipolar and net.layers[1].in_fmt.bipolar
    x = np.random.default_rng(2).normal(size=(50, 8)).astype(np.float32)
    expected = np.sign(np.sign(x) + 0.5) @ net.layers[0].weights * 0.5
    expected = np.where(expected + 0.25 >= 0, 1, -1) @ net.layers[1].weights * 0.5
    np.testing.assert_array_equal(net.run(x), expected.astype(np.float32))


@pytest.mark.parametrize("order", [CLIP_THEN_ROUND, ROUND_THEN_SHIFT])
def test_thresholds_equal_brute_force_for_every_accumulator_value(order):
    rng = np.random.default_rng(0)
    acc_fmt = Int(9, True)
    for trial in range(20):
        a = [Fraction(float(v)) for v in rng.choice([-0.75, -0.1, 0.05, 0.3, 1.5], 4)]
        b = [Fraction(float(v)) for v in rng.uniform(-3, 3, 4)]
        chain = Chain(4).then(Affine(a, b))
        if trial % 2:
            chain = chain.then(Clamp(Fraction(0), None))
        out_fmt = Int(3, signed=bool(trial % 3 == 0))
        quantizer = Quantizer(out_fmt, float(rng.choice([0.125, 0.3, 1.0])),
                              int(rng.integers(-1, 2)), ["round", "floor", "half_up"][trial % 3],
                              order)
        table = derive_thresholds(chain, quantizer, acc_fmt)
        accs = np.arange(acc_fmt.min_int, acc_fmt.max_int + 1)
        got = table.apply(np.repeat(accs[:, None], 4, axis=1))
        for c in range(4):
            want = [quantizer.exact(chain.exact(Fraction(int(v)), c)) for v in accs]
            np.testing.assert_array_equal(got[:, c], want)


def test_external_data_is_read(tmp_path):
    model = random_mlp(4)
    path = tmp_path / "ext.onnx"
    onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
              location="ext.weights", size_threshold=0)
    assert (tmp_path / "ext.weights").exists()
    x = np.random.default_rng(0).uniform(0, 2, size=(5, 16)).astype(np.float32)
    np.testing.assert_array_equal(bitloom.load(path).run(x), bitloom.load(random_mlp(4)).run(x))


def test_missing_external_data_names_the_file(tmp_path):
    path = tmp_path / "ext.onnx"
    onnx.save(random_mlp(4), str(path), save_as_external_data=True,
              location="gone.weights", size_threshold=0)
    (tmp_path / "gone.weights").unlink()
    with pytest.raises(BitloomError, match=r"gone\.weights"):
        bitloom.load(path)


def test_unsupported_ops_are_all_named():
    model = random_mlp(5)
    model.graph.node.insert(0, onnx.helper.make_node("Softsign", ["inp"], ["s"], name="odd1"))
    model.graph.node.insert(0, onnx.helper.make_node("LSTM", ["inp"], ["t"], name="odd2"))
    with pytest.raises(BitloomError) as err:
        bitloom.load(model)
    assert "odd1 (Softsign)" in str(err.value) and "odd2 (LSTM)" in str(err.value)


def test_float_weights_are_refused():
    b = Builder()
    x = b.quant("inp", 0.5, 4, False)
    out = b.node("MatMul", [x, b.const(np.ones((4, 2)))])
    with pytest.raises(BitloomError, match="float"):
        bitloom.load(b.model("inp", [1, 4], out, [1, 2]))


def test_input_shape_is_checked(example_net):
    with pytest.raises(BitloomError, match="shape"):
        example_net.run(np.zeros((2, 64), dtype=np.float32))


def test_dict_input_and_output(example_net, digits):
    x, _ = digits
    out = example_net.run({"input": x[:3]})
    assert list(out) == ["linear_2"] and out["linear_2"].shape == (3, 10)


@pytest.mark.parametrize(("exp_bits", "man_bits", "rounding"), [
    (4, 3, "ROUND"), (3, 2, "ROUND"), (2, 1, "ROUND"), (2, 3, "FLOOR"), (3, 2, "CEIL"),
    (5, 2, "ROUND")])
def test_float_quant_models_are_bit_exact_to_qonnx(exp_bits, man_bits, rounding):
    """QONNX FloatQuant (minifloat) input, weights and activations: golden == qonnx."""
    from qonnx_models import minifloat_mlp

    model = minifloat_mlp(1, exp_bits, man_bits, rounding=rounding)
    net = bitloom.load(model)
    x = np.random.default_rng(0).normal(scale=2, size=(64, 16)).astype(np.float32)
    np.testing.assert_array_equal(net.run(x), run_qonnx(model, x))


def test_non_saturating_float_quant_is_refused():
    from qonnx_models import minifloat_mlp

    model = minifloat_mlp(1, 4, 3)
    fq = [n for n in model.graph.node if n.op_type == "FloatQuant"][-1]
    for a in fq.attribute:
        if a.name == "saturation":
            a.i = 0
    with pytest.raises(BitloomError, match="saturation"):
        bitloom.load(model)


#: a weight and scale whose float32 quotient is exactly the tie 6.5, while the exact quotient
#: lies just above it (found in a Brevitas MobileNet-v1 export's channel 557)
TIE_WEIGHT, TIE_SCALE = 0.040452513843774796, 0.006223463453352451


def test_weights_round_the_float32_quotient_as_qonnx_and_brevitas_do():
    """qonnx, onnxruntime and PyTorch divide in float32: 6.5 rounds half to even, to 6, not
    to the exact quotient's 7 (which made one of MobileNet's thresholds a step off)."""
    assert np.float32(TIE_WEIGHT) / np.float32(TIE_SCALE) == np.float32(6.5)
    assert Fraction(TIE_WEIGHT) / Fraction(float(np.float32(TIE_SCALE))) > Fraction(13, 2)
    b = Builder()
    x = b.quant("inp", 1.0, 8, True)
    w = b.quant(b.const([[TIE_WEIGHT, -TIE_WEIGHT]]), TIE_SCALE, 4, True)
    model = b.model("inp", [1, 1], b.node("MatMul", [x, w]), [1, 2])
    net = bitloom.load(model)
    assert net.layers[0].weights.tolist() == [[6, -6]]
    x = np.array([[1.0], [-3.0], [7.0]], dtype=np.float32)
    # (7 would be 1/6 off; the output's own float32 rounding is 1e-7)
    np.testing.assert_allclose(net.run(x), run_qonnx(model, x), rtol=1e-6)
