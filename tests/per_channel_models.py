"""Models whose activations are quantized with one scale per channel (QONNX ``Quant`` with a
``(1, C, 1, 1)`` scale, Brevitas' ``scaling_per_output_channel=True``), for
test_per_channel_activations.

``graph(name)`` builds small QONNX graphs by hand (quick: no torch); ``brevitas_export(name)``
exports small Brevitas networks through ``export_qonnx`` and qonnx's cleanup, cached like
tests/brevitas_models.py's exports. Input shapes: ``GRAPH_INPUT`` and ``BREVITAS_MODELS``.
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from pathlib import Path

import numpy as np
import onnx

from qonnx_models import Builder

#: per-sample input shape of every hand-built graph
GRAPH_INPUT = (2, 6, 6)
CHANNELS = 4
#: scales with no integer ratio between them (as Brevitas calibrates them)
SCALES = np.array([0.11, 0.07, 0.31, 0.05], dtype=np.float32)
#: power-of-two scales: a layer mixing channels folds their ratios into its weights
PO2_SCALES = np.array([2.0**-2, 2.0**-3, 2.0**-1, 2.0**-2], dtype=np.float32)


def _per_channel(scales: np.ndarray) -> np.ndarray:
    return scales.reshape(1, -1, 1, 1)


def _weights(b: Builder, rng: np.random.Generator, shape: tuple[int, ...]) -> str:
    """4-bit narrow weights with a per-output-channel scale (axis 0 of a conv's, the
    columns of a MatMul's)."""
    per_output = (1, shape[1]) if len(shape) == 2 else (shape[0], *(1,) * (len(shape) - 1))
    scale = rng.uniform(0.05, 0.2, size=per_output)
    return b.quant(b.const(rng.normal(0, 0.3, size=shape)), scale.astype(np.float32), 4,
                   True, narrow=True)


def _conv(b: Builder, rng: np.random.Generator, x: str, cin: int, cout: int, k: int = 3,
          group: int = 1) -> str:
    """A padded convolution with a per-channel bias."""
    pads = [k // 2] * 4
    w = _weights(b, rng, (cout, cin // group, k, k))
    return b.node("Conv", [x, w, b.const(rng.normal(0, 0.2, size=cout))], group=group,
                  kernel_shape=[k, k], pads=pads)


def _stem(b: Builder, rng: np.random.Generator, cout: int = CHANNELS) -> str:
    """Quantized input, a 3x3 conv and a ReLU: a fresh accumulator's float output."""
    x = b.quant("inp", 2.0**-3, 8, True)
    return b.node("Relu", [_conv(b, rng, x, GRAPH_INPUT[0], cout)])


def _uint4(b: Builder, x: str, scales: np.ndarray) -> str:
    return b.quant(x, _per_channel(scales) if scales.size > 1 else scales, 4, False)


def _model(b: Builder, y: str, out_shape: list[int]) -> onnx.ModelProto:
    return b.model("inp", [1, *GRAPH_INPUT], y, out_shape)


def graph(name: str, seed: int = 0) -> onnx.ModelProto:
    """The hand-built graph ``name`` (a key of :data:`GRAPHS`)."""
    return GRAPHS[name](Builder(), np.random.default_rng(seed))


def _depthwise(b: Builder, rng: np.random.Generator) -> onnx.ModelProto:
    """conv -> ReLU -> per-channel Quant -> depthwise conv -> ReLU -> Quant -> 1x1 conv:
    MobileNet's pattern."""
    y = _uint4(b, _stem(b, rng), SCALES)
    y = _uint4(b, b.node("Relu", [_conv(b, rng, y, CHANNELS, CHANNELS, group=CHANNELS)]),
               np.float32([0.25]))
    return _model(b, _conv(b, rng, y, CHANNELS, 3, k=1), [1, 3, 6, 6])


def _minifloat(b: Builder, rng: np.random.Generator) -> onnx.ModelProto:
    """A per-channel FloatQuant (e2m1 with subnormals) read by a depthwise conv."""
    y = b.float_quant(_stem(b, rng), _per_channel(SCALES / 4), 2, 1)
    return _model(b, _conv(b, rng, y, CHANNELS, CHANNELS, group=CHANNELS), [1, 4, 6, 6])


def _pools(b: Builder, rng: np.random.Generator) -> onnx.ModelProto:
    """Per-channel codes through MaxPool and AveragePool, requantized per tensor."""
    y = _uint4(b, _stem(b, rng), SCALES)
    y = b.node("MaxPool", [y], kernel_shape=[2, 2], strides=[2, 2])
    y = b.node("AveragePool", [y], kernel_shape=[2, 2], strides=[1, 1])
    y = b.node("Flatten", [b.quant(y, 2.0**-4, 4, False)])
    return _model(b, b.node("MatMul", [y, _weights(b, rng, (CHANNELS * 4, 5))]), [1, 5])


def _reopened(b: Builder, rng: np.random.Generator) -> onnx.ModelProto:
    """Float ops on a fresh per-channel quantizer's output, then another per-channel one."""
    y = _uint4(b, _stem(b, rng), SCALES)
    y = b.node("Mul", [y, b.const(_per_channel(np.float32([1.5, 0.5, 2.0, 1.25])))])
    y = b.node("Relu", [b.node("Add", [y, b.const(_per_channel(np.float32([-.1, .2, 0, .3])))])])
    y = _uint4(b, y, SCALES[::-1].copy())
    return _model(b, _conv(b, rng, y, CHANNELS, CHANNELS, group=CHANNELS), [1, 4, 6, 6])


def _concat(b: Builder, rng: np.random.Generator, requantized: bool) -> onnx.ModelProto:
    """Two branches quantized per channel with their own scales, concatenated, read by a
    depthwise conv (each channel keeps its scale) or first requantized per tensor."""
    x = b.quant("inp", 2.0**-3, 8, True)
    branches = [_uint4(b, b.node("Relu", [_conv(b, rng, x, GRAPH_INPUT[0], 2)]), s)
                for s in (SCALES[:2], SCALES[2:])]
    y = b.node("Concat", branches, axis=1)
    if requantized:
        y = _uint4(b, y, np.float32([0.125]))
    return _model(b, _conv(b, rng, y, CHANNELS, CHANNELS, group=CHANNELS), [1, 4, 6, 6])


def _transposed(b: Builder, rng: np.random.Generator) -> onnx.ModelProto:
    """The per-channel quantizer of a NHWC view: its scale lies along the last axis."""
    y = b.node("Transpose", [_conv(b, rng, b.quant("inp", 2.0**-3, 8, True), 2, CHANNELS)],
               perm=[0, 2, 3, 1])
    y = b.quant(b.node("Relu", [y]), SCALES.reshape(1, 1, 1, -1), 4, False)
    y = b.node("Transpose", [y], perm=[0, 3, 1, 2])
    return _model(b, _conv(b, rng, y, CHANNELS, CHANNELS, group=CHANNELS), [1, 4, 6, 6])


def _requantized_stream(b: Builder, rng: np.random.Generator) -> onnx.ModelProto:
    """A per-channel quantizer of a quantized stream (the model input): a thresholding
    layer of its own."""
    y = b.quant(b.quant("inp", 2.0**-3, 8, True), _per_channel(np.float32([0.09, 0.3])), 4,
                True)
    return _model(b, _conv(b, rng, y, 2, 2, group=2), [1, 2, 6, 6])


def _flattened(b: Builder, rng: np.random.Generator, scales: np.ndarray) -> onnx.ModelProto:
    """Per-channel codes flattened into a MatMul, which mixes channels."""
    y = b.node("Flatten", [_uint4(b, _stem(b, rng), scales)])
    return _model(b, b.node("MatMul", [y, _weights(b, rng, (CHANNELS * 36, 5))]), [1, 5])


def _dense(b: Builder, rng: np.random.Generator, scales: np.ndarray) -> onnx.ModelProto:
    """Per-channel codes read by a 1x1 conv that mixes channels."""
    y = _uint4(b, _stem(b, rng), scales)
    return _model(b, _conv(b, rng, y, CHANNELS, 3, k=1), [1, 3, 6, 6])


def _added(b: Builder, rng: np.random.Generator, same: bool) -> onnx.ModelProto:
    """A residual Add of two per-channel quantized branches: exact when their scales have
    one ratio in every channel (here: the same quantizer scales), else refused."""
    x = b.quant("inp", 2.0**-3, 8, True)
    left = _uint4(b, b.node("Relu", [_conv(b, rng, x, 2, CHANNELS)]), SCALES)
    right = _uint4(b, b.node("Relu", [_conv(b, rng, x, 2, CHANNELS)]),
                   SCALES if same else SCALES[::-1].copy())
    y = _uint4(b, b.node("Add", [left, right]), np.float32([0.25]))
    return _model(b, _conv(b, rng, y, CHANNELS, CHANNELS, group=CHANNELS), [1, 4, 6, 6])


def _at_output(b: Builder, rng: np.random.Generator) -> onnx.ModelProto:
    y = b.node("MaxPool", [_uint4(b, _stem(b, rng), SCALES)], kernel_shape=[2, 2],
               strides=[2, 2])
    return _model(b, y, [1, 4, 3, 3])


def _on_input(b: Builder, rng: np.random.Generator) -> onnx.ModelProto:
    y = b.quant("inp", _per_channel(np.float32([0.1, 0.3])), 8, True)
    return _model(b, _conv(b, rng, y, 2, 2, group=2), [1, 2, 6, 6])


def _along_width(b: Builder, rng: np.random.Generator) -> onnx.ModelProto:
    y = b.quant(_stem(b, rng), np.linspace(0.05, 0.3, 6, dtype=np.float32).reshape(1, 1, 1, 6),
                4, False)
    return _model(b, _conv(b, rng, y, CHANNELS, CHANNELS, group=CHANNELS), [1, 4, 6, 6])


GRAPHS = {
    "depthwise": _depthwise,
    "minifloat": _minifloat,
    "pools": _pools,
    "reopened": _reopened,
    "concat": lambda b, rng: _concat(b, rng, requantized=False),
    "concat_requantized": lambda b, rng: _concat(b, rng, requantized=True),
    "transposed": _transposed,
    "requantized_stream": _requantized_stream,
    "flattened_po2": lambda b, rng: _flattened(b, rng, PO2_SCALES),
    "dense_po2": lambda b, rng: _dense(b, rng, PO2_SCALES),
    "added_alike": lambda b, rng: _added(b, rng, same=True),
    "added": lambda b, rng: _added(b, rng, same=False),  # per-channel multipliers
    # refused
    "dense": lambda b, rng: _dense(b, rng, SCALES),
    "flattened": lambda b, rng: _flattened(b, rng, SCALES),
    "at_output": _at_output,
    "on_input": _on_input,
    "along_width": _along_width,
}
ACCEPTED = ("depthwise", "minifloat", "pools", "reopened", "concat", "concat_requantized",
            "transposed", "requantized_stream", "flattened_po2", "dense_po2", "added_alike",
            "added")


# -- Brevitas ---------------------------------------------------------------------------------
#: name -> per-sample input shape
BREVITAS_MODELS = {"mobilenet_block": (3, 8, 8), "concat_block": (3, 8, 8),
                   "po2_dense": (3, 8, 8), "dense": (3, 8, 8)}


def quant_relu_per_channel(channels: int, bits: int = 4, po2: bool = False,
                           quant_tensor: bool = True):
    """Brevitas' per-channel QuantReLU, as brevitas_examples' MobileNet builds it (and with
    power-of-two scales, as FINN's fixed-point quantizers have them)."""
    import brevitas.nn as qnn
    from brevitas.quant import Uint8ActPerTensorFixedPoint, Uint8ActPerTensorFloat

    return qnn.QuantReLU(
        act_quant=Uint8ActPerTensorFixedPoint if po2 else Uint8ActPerTensorFloat,
        bit_width=bits, scaling_per_output_channel=True,
        per_channel_broadcastable_shape=(1, channels, 1, 1),
        scaling_stats_permute_dims=(1, 0, 2, 3), return_quant_tensor=quant_tensor)


def _brevitas_module(name: str, seed: int):
    import brevitas.nn as qnn
    import torch
    from brevitas.quant import Int8WeightPerChannelFloat
    from brevitas_models import _bn

    rng = np.random.default_rng(seed)
    wq = {"weight_quant": Int8WeightPerChannelFloat, "weight_bit_width": 4, "bias": False}

    def block(cin: int, cout: int, k: int, act, groups: int = 1) -> list:
        return [qnn.QuantConv2d(cin, cout, k, padding=k // 2, groups=groups, **wq),
                _bn(cout, rng), act]

    def per_tensor():
        return qnn.QuantReLU(bit_width=4, return_quant_tensor=True)

    def head(channels: int) -> list:
        return [torch.nn.AdaptiveAvgPool2d(1),
                qnn.QuantIdentity(bit_width=8, return_quant_tensor=True),
                torch.nn.Flatten(), qnn.QuantLinear(channels, 10, bias=True, weight_bit_width=4)]

    stem = [qnn.QuantIdentity(bit_width=8, return_quant_tensor=True)]
    if name == "mobilenet_block":  # per-channel ReLUs read by depthwise convs and pools
        layers = [*stem, *block(3, 8, 3, quant_relu_per_channel(8)),
                  *block(8, 8, 3, per_tensor(), groups=8),
                  *block(8, 16, 1, quant_relu_per_channel(16)), torch.nn.MaxPool2d(2),
                  *block(16, 16, 3, quant_relu_per_channel(16), groups=16), *head(16)]
        return torch.nn.Sequential(*layers)
    if name in ("po2_dense", "dense"):  # a per-channel ReLU read by a conv mixing channels
        act = quant_relu_per_channel(8, po2=name == "po2_dense")
        return torch.nn.Sequential(*stem, *block(3, 8, 3, act),
                                   *block(8, 8, 3, per_tensor()), *head(8))

    plain = {"quant_tensor": False}  # concatenated as float tensors

    class ConcatBlock(torch.nn.Module):
        """Two per-channel quantized branches, concatenated into a depthwise conv."""

        def __init__(self) -> None:
            super().__init__()
            self.inp = stem[0]
            self.left = torch.nn.Sequential(*block(3, 4, 3, quant_relu_per_channel(4, **plain)))
            self.right = torch.nn.Sequential(*block(3, 4, 1, quant_relu_per_channel(4, **plain)))
            self.tail = torch.nn.Sequential(*block(8, 8, 3, per_tensor(), groups=8), *head(8))

        def forward(self, x):
            x = self.inp(x)
            return self.tail(torch.cat([self.left(x), self.right(x)], dim=1))

    return ConcatBlock()


def brevitas_input(name: str, n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, *BREVITAS_MODELS[name])).astype(
        np.float32)


def brevitas_export(name: str, seed: int = 0) -> Path:
    """The Brevitas model ``name``, calibrated, exported with ``export_qonnx`` (dynamo) and
    cleaned up by qonnx; cached across runs (written atomically)."""
    import brevitas_models as bm

    path = bm.export_cache("per-channel", Path(__file__)) / f"{name}-{seed}.onnx"
    if path.exists():
        return path
    import torch
    from brevitas.export import export_qonnx
    from brevitas.graph.calibrate import calibration_mode
    from qonnx.util.cleanup import cleanup

    bm._patch_brevitas()
    torch.manual_seed(seed)
    net = _brevitas_module(name, seed)
    net.eval()
    with torch.no_grad(), calibration_mode(net):
        for i in range(4):
            net(torch.from_numpy(brevitas_input(name, 16, 1000 + i)))
    net.eval()
    raw = path.with_suffix(f".{os.getpid()}.raw.onnx")
    tmp = path.with_suffix(f".{os.getpid()}.tmp.onnx")
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        export_qonnx(net, torch.from_numpy(brevitas_input(name, 1, 7)), export_path=str(raw),
                     dynamo=True)
    cleanup(str(raw), out_file=str(tmp))
    raw.unlink()
    os.replace(tmp, path)
    return path

