"""Activations quantized with one scale per channel (QONNX ``Quant`` with a ``(1, C, 1, 1)``
scale, Brevitas' ``scaling_per_output_channel=True``, as MobileNet-v1 has them).

Where what reads them absorbs the scales exactly (the quantizer's own thresholds, depthwise
convolutions, pooling, per-channel float ops, another quantizer, Concat, a Transpose,
layers mixing channels when the scales are integer multiples of one unit), golden equals
qonnx's executor (same argmax, at most one output step apart); anywhere else the model is
refused naming the node and op. The Brevitas models and the hardware are slow.
"""

from __future__ import annotations

import subprocess
import sys
from fractions import Fraction

import numpy as np
import onnx
import per_channel_models as pcm
import pytest
from reference_check import check_against_reference

import bitloom
from bitloom.errors import BitloomError
from bitloom.formats import Int
from bitloom.ir import Affine, Chain, Clamp, Quantizer, derive_thresholds
from bitloom.ir.elementwise import Requantize


def _saved(tmp_path, name: str) -> str:
    path = tmp_path / f"{name}.onnx"
    onnx.save(pcm.graph(name), path)
    return str(path)


def _inputs(n: int = 16, seed: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, *pcm.GRAPH_INPUT)).astype(np.float32)


@pytest.mark.parametrize("name", pcm.ACCEPTED)
def test_golden_matches_qonnx(tmp_path, name):
    check_against_reference(_saved(tmp_path, name), "qonnx", _inputs())


def test_depthwise_absorbs_the_scales_without_a_layer_of_its_own(tmp_path):
    """The per-channel quantizer is the first conv's thresholds, and the depthwise conv reads
    its codes directly: no requantizing layer in between."""
    net = bitloom.load(_saved(tmp_path, "depthwise"))
    assert [ly.kind for ly in net.layers] == ["Conv", "DepthwiseConv", "Conv"]
    assert all(ly.requant is not None for ly in net.layers[:2])


def test_concat_keeps_each_channels_scale(tmp_path):
    """Branches with their own per-channel scales meet in one Concat layer that the
    depthwise conv reads as it is; a per-tensor quantizer after the Concat requantizes
    each branch instead."""
    kinds = [ly.kind for ly in bitloom.load(_saved(tmp_path, "concat")).layers]
    assert kinds == ["Conv", "Conv", "Concat", "DepthwiseConv"]
    kinds = [ly.kind for ly in bitloom.load(_saved(tmp_path, "concat_requantized")).layers]
    assert kinds.count("Requantize") == 2 and kinds[-2:] == ["Concat", "DepthwiseConv"]


@pytest.mark.parametrize("name", ["dense_po2", "flattened_po2"])
def test_power_of_two_scales_fold_into_the_weights(tmp_path, name):
    """A layer mixing channels whose input scales are 2**-3 times (2, 1, 4, 2): the
    multipliers join its 4-bit weights, which grow wider."""
    net = bitloom.load(_saved(tmp_path, name))
    mixing = net.layers[1]
    assert mixing.w_fmt.bits > 4 and np.abs(mixing.weights).max() > 7, mixing.w_fmt


REFUSALS = {
    "dense": ("(Conv)", "per-channel input scale", "sums inputs of 4 different scales",
              "scaling_per_output_channel=False"),
    "flattened": ("(MatMul)", "per-channel input scale", "sums inputs of 4 different scales"),
    "at_output": ("(Quant)", "per channel", "graph output"),
    "on_input": ("(Quant)", "per-channel scale on the model input"),
    "along_width": ("(Quant)", "its scale of shape (1, 1, 1, 6) is not per-channel (4)"),
}


@pytest.mark.parametrize("name", list(REFUSALS))
def test_refused_by_name(tmp_path, name):
    with pytest.raises(BitloomError) as info:
        bitloom.load(_saved(tmp_path, name))
    message = str(info.value)
    assert "node 'n_" in message, message
    for fragment in REFUSALS[name]:
        assert fragment in message, message


def test_cli_refuses_a_conv_mixing_per_channel_scales(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "bitloom.cli", "inspect",
                           _saved(tmp_path, "dense")], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert "(Conv): per-channel input scale" in proc.stderr, proc.stderr


def _relu_chain(rng: np.random.Generator, channels: int) -> Chain:
    """BatchNorm-like scales and shifts, a ReLU, as between a conv and its quantizer."""
    a = [Fraction(float(v)) for v in rng.uniform(0.01, 0.2, channels).astype(np.float32)]
    b = [Fraction(float(v)) for v in rng.normal(0, 1, channels).astype(np.float32)]
    return Chain(channels).then(Affine(a, b)).then(Clamp(Fraction(0), None))


def test_per_channel_thresholds_equal_one_quantizer_per_channel():
    """Dividing by each channel's scale, then quantizing at unit scale (how the frontend
    derives a per-channel quantizer's thresholds) gives each channel's own table."""
    rng = np.random.default_rng(0)
    channels, acc = 6, Int(12, signed=True)
    chain = _relu_chain(rng, channels)
    scales = rng.uniform(0.02, 0.4, channels).astype(np.float32)
    divide = Affine([1 / Fraction(float(s)) for s in scales], [Fraction(0)] * channels)
    joint = derive_thresholds(chain.then(divide), Quantizer(Int(4, False), 1.0), acc)
    for c, scale in enumerate(scales):
        one = Chain(1, [Affine([op.a[c]], [op.b[c]]) if isinstance(op, Affine) else op
                        for op in chain.ops])
        alone = derive_thresholds(one, Quantizer(Int(4, False), float(scale)), acc)
        np.testing.assert_array_equal(joint.table[c], alone.table[0])


def test_a_wide_intermediate_quantizer_is_narrowed_to_what_reaches_it():
    """QONNX Trunc requantizes onto an input grid of 18 bits (MobileNet's final pool): the
    composed table covers the values the accumulator reaches, equal to brute force."""
    channels, acc = 3, Int(10, signed=False)
    step = Fraction(float(np.float32(0.0667 / 49)))
    grid = Quantizer(Int(18, signed=True), float(step))
    chain = Chain(channels).then(Affine([step] * channels, [Fraction(0)] * channels))
    chain = chain.then(Requantize(grid)).then(
        Affine([Fraction(1)] * channels, [Fraction(0)] * channels))
    out = Quantizer(Int(4, False), 64.0, rounding="FLOOR")
    table = derive_thresholds(chain, out, acc)
    values = np.arange(acc.min_int, acc.max_int + 1)
    expected = [[out.exact(chain.exact(Fraction(int(v)), c)) for c in range(channels)]
                for v in values]
    got = table.apply(np.repeat(values[:, None], channels, axis=1))
    np.testing.assert_array_equal(got, np.array(expected))


# -- Brevitas ----------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("name", ["mobilenet_block", "concat_block", "po2_dense"])
def test_brevitas_per_channel_relu_matches_qonnx(name):
    path = pcm.brevitas_export(name)
    check_against_reference(path, "qonnx", pcm.brevitas_input(name, 16, 3))


@pytest.mark.slow
def test_brevitas_per_channel_relu_before_a_dense_conv_is_refused():
    with pytest.raises(BitloomError, match=r"\(Conv\): per-channel input scale"):
        bitloom.load(pcm.brevitas_export("dense"))


@pytest.mark.slow
@pytest.mark.verilator
def test_mobilenet_block_hardware_is_bit_exact(tmp_path):
    design = bitloom.compile(pcm.brevitas_export("mobilenet_block"), "pynq-z2",
                             out=tmp_path / "design")
    result = design.verify(samples=32)
    assert result.bit_exact, result.mismatch
