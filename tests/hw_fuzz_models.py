"""Seeded random small DAG models for the hardware fuzzer (``tests/test_hw_fuzz.py``,
``bench/hw_fuzz.py``).

A :class:`Spec` is a plain description: a stem, a list of :class:`Block` s (conv,
depthwise, max pool, requantize chains, residual adds with a shared or separate quantizers,
concatenations) and a classifier head, each with its own activation and weight format
(integers of 2-8 bits, binary weights, OCP minifloats). The same spec is built

- with Brevitas, calibrated and exported as QONNX or QCDQ (``source="brevitas"``), or
- as a float ONNX graph quantized by onnxruntime's ``quantize_static`` to QDQ
  (``source="ort"``) to QDQ or QOperator (which keeps BatchNormalization after each
  DequantizeLinear: residual adds become float joins); formats are onnxruntime's
  uint8/int8, requantize blocks are skipped.

:func:`shrink` makes a failing spec smaller while it still fails, so a failure can become a
regression test of a few layers.
"""

from __future__ import annotations

import contextlib
import io
import random
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

BLOCK_KINDS = ("conv", "depthwise", "maxpool", "requant", "residual", "concat")
#: onnxruntime models only: a 3x3 average over real pixels (count_include_pad=0), a conv
#: whose float output goes through a Sigmoid (a table unit), ShuffleNet's channel shuffle,
#: a squeeze-excitation block (the map times a Sigmoid of its channel means)
ORT_KINDS = ("avgpool", "sigmoid", "shuffle", "se")
RESIDUALS = ("shared", "nested", "separate")
#: 8-bit activations (255 thresholds a channel: the largest units) one draw in six
INT_ACTS = ("uint2", "uint3", "uint4", "uint4", "uint5", "uint6", "uint8", "int2", "int3",
            "int4", "int6", "int8")
INT_WEIGHTS = ("int2", "int3", "int4", "int6", "int8", "int4pc", "int8pc")
MINIFLOATS = {"e4m3": (4, 3), "e3m2": (3, 2), "e2m1": (2, 1)}


@dataclass(frozen=True)
class Block:
    kind: str  # one of BLOCK_KINDS
    channels: int = 0  # output channels of conv, residual, concat (its halves summed)
    act: str = "uint4"  # the block's output format: INT_ACTS or a MINIFLOATS key
    weight: str = "int4"  # INT_WEIGHTS, "binary" or a MINIFLOATS key
    variant: str = ""  # residual: RESIDUALS; conv: "k1" / "k3"; requant: the second format
    bn: bool = True


@dataclass(frozen=True)
class Spec:
    seed: int
    source: str  # "brevitas" or "ort"
    form: str  # "qonnx", "qcdq" (brevitas) or "qdq", "qoperator" (ort)
    in_shape: tuple[int, int, int]  # C, H, W
    in_act: str
    blocks: tuple[Block, ...]
    classes: int = 4
    per_channel: bool = False  # ort: per-channel weight scales
    options: dict = field(default_factory=dict, compare=False)

    def describe(self) -> str:
        parts = [f"{b.kind}{'/' + b.variant if b.variant else ''}[{b.channels} {b.act} "
                 f"w={b.weight}]" for b in self.blocks]
        return (f"seed {self.seed} {self.source}/{self.form} in {self.in_shape} {self.in_act}: "
                + " -> ".join(parts))


#: what the fuzzer found, shrunk: the smallest spec that failed, and why
REGRESSIONS = {
    # two padded 3x3 convolutions on a 2x2 map each wait for the whole map: the skip FIFO
    # needs more than a frame, and a window buffer of just the map made the two convs wait
    # for each other (535 cycles per frame against 432 planned)
    "residual-pair-on-2x2": Spec(
        4, "ort", "qdq", (3, 4, 4), "int4",
        (Block("residual", 3, "uint4", "int2", "separate"), Block("maxpool"),
         Block("residual", 3, "uint8", "int8pc", "nested"))),
}


# -- random specs ------------------------------------------------------------------------------

def _act(rng: random.Random, form: str, minifloat_ok: bool) -> str:
    if minifloat_ok and rng.random() < 0.2:
        return "e4m3" if form == "qcdq" else rng.choice(list(MINIFLOATS))
    return rng.choice(INT_ACTS)


def _weight(rng: random.Random, form: str, act: str) -> str:
    if act in MINIFLOATS:  # minifloat layers keep minifloat weights (brevitas' OCP quantizers)
        return act
    if form == "qonnx" and rng.random() < 0.1:
        return "binary"
    return rng.choice(INT_WEIGHTS)


def random_spec(seed: int) -> Spec:
    """A seeded random model: 2-4 blocks on a small map."""
    rng = random.Random(seed)
    source = "ort" if rng.random() < 0.2 else "brevitas"
    form = rng.choice(("qdq", "qoperator")) if source == "ort" else \
        rng.choice(("qonnx", "qcdq"))
    size = rng.choice((4, 6, 8))
    in_shape = (rng.choice((1, 2, 3)), size, size)
    blocks: list[Block] = []
    channels, hw = in_shape[0], size
    for _ in range(rng.randint(2, 4)):
        kinds = [k for k in BLOCK_KINDS if not (k == "maxpool" and (hw % 2 or hw < 4))
                 and not (k == "requant" and source == "ort")]
        if source == "ort":  # after a first block: on the float input they stay on the host
            kinds += [k for k in ORT_KINDS if blocks and (k != "shuffle" or channels % 2 == 0)]
        kind = rng.choice(kinds)
        act = _act(rng, form, source == "brevitas")
        weight = _weight(rng, form, act)
        if kind == "maxpool":
            blocks.append(Block("maxpool"))
            hw //= 2
            continue
        if kind in ("avgpool", "shuffle", "se"):
            blocks.append(Block(kind))
            continue
        if kind == "requant":
            second = _act(rng, form, True) if rng.random() < 0.5 else ""
            blocks.append(Block("requant", act=act, variant=second))
            continue
        if kind == "depthwise":
            blocks.append(Block("depthwise", act=act, weight=weight, bn=rng.random() < 0.7))
            continue
        out = rng.choice((2, 3, 4, 6))
        if kind in ("conv", "sigmoid"):
            blocks.append(Block(kind, out, act, weight, rng.choice(("k1", "k3")),
                                rng.random() < 0.7))
        elif kind == "residual":
            out = channels if rng.random() < 0.5 else out
            blocks.append(Block("residual", out, act, weight, rng.choice(RESIDUALS)))
        else:
            blocks.append(Block("concat", max(out, 2), act, weight))
        channels = out if kind != "concat" else max(out, 2)
    return Spec(seed, source, form, in_shape, rng.choice(("int4", "int8", "int3")),
                tuple(blocks), per_channel=rng.random() < 0.5)


# -- brevitas --------------------------------------------------------------------------------

def _int_bits(name: str) -> tuple[int, bool]:
    """(bits, signed) of "int4", "uint3", "int4pc"."""
    signed = not name.startswith("u")
    return int(name.lstrip("u").removeprefix("int").removesuffix("pc")), signed


def _act_quant(name: str, relu: bool):
    """A brevitas activation quantizer module producing format ``name``."""
    import brevitas.nn as qnn
    import torch
    from brevitas_models import _minifloat

    if name in MINIFLOATS:
        _, aq = _minifloat(*MINIFLOATS[name])
        q = qnn.QuantIdentity(act_quant=aq, return_quant_tensor=False)
        return torch.nn.Sequential(torch.nn.ReLU(), q) if relu else q
    bits, signed = _int_bits(name)
    if signed or not relu:
        return qnn.QuantIdentity(bit_width=bits, return_quant_tensor=False)
    return qnn.QuantReLU(bit_width=bits, return_quant_tensor=False)


def _shared_quant(name: str, fixed_point: bool = False):
    """A quantizer used on several tensors (the same scale on each): for a residual add,
    brevitas' unsigned act quantizer as in the ResNet examples; ``fixed_point``: a
    power-of-two scale, so two separate quantizers add on one integer grid."""
    import brevitas.nn as qnn
    from brevitas.quant import (
        Int8ActPerTensorFixedPoint,
        Uint8ActPerTensorFixedPoint,
        Uint8ActPerTensorFloat,
    )

    if name in MINIFLOATS:
        return _act_quant(name, relu=False)
    bits, signed = _int_bits(name)
    if fixed_point:
        quant = Int8ActPerTensorFixedPoint if signed else Uint8ActPerTensorFixedPoint
    else:
        quant = None if signed else Uint8ActPerTensorFloat
    kw = {"act_quant": quant} if quant is not None else {}
    return qnn.QuantIdentity(bit_width=bits, return_quant_tensor=False, **kw)


def _weight_kw(name: str) -> dict:
    from brevitas.quant import Int8WeightPerChannelFloat, SignedBinaryWeightPerTensorConst
    from brevitas_models import _minifloat

    if name in MINIFLOATS:
        return {"weight_quant": _minifloat(*MINIFLOATS[name])[0]}
    if name == "binary":
        return {"weight_quant": SignedBinaryWeightPerTensorConst}
    bits, _ = _int_bits(name)
    if name.endswith("pc"):
        return {"weight_quant": Int8WeightPerChannelFloat, "weight_bit_width": bits}
    return {"weight_bit_width": bits}


def _conv(cin: int, cout: int, k: int, weight: str, groups: int = 1):
    import brevitas.nn as qnn

    return qnn.QuantConv2d(cin, cout, k, padding=k // 2, groups=groups, bias=False,
                           **_weight_kw(weight))


def _maybe_bn(channels: int, on: bool, rng: np.random.Generator):
    import torch
    from brevitas_models import _bn

    return _bn(channels, rng) if on else torch.nn.Identity()


def brevitas_module(spec: Spec):
    """The spec as a torch module of brevitas layers (not yet calibrated)."""
    import brevitas.nn as qnn
    import torch

    rng = np.random.default_rng(spec.seed)

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inp = _act_quant(spec.in_act, relu=False)
            self.steps = torch.nn.ModuleList()
            self.kinds: list[Block] = []
            channels = spec.in_shape[0]
            for b in spec.blocks:
                self.steps.append(self._block(b, channels, rng))
                self.kinds.append(b)
                channels = b.channels if b.kind not in ("maxpool", "requant", "depthwise") \
                    else channels
            self.pool = torch.nn.AdaptiveAvgPool2d(1)
            self.head_q = _act_quant("int4", relu=False)
            self.fc = qnn.QuantLinear(channels, spec.classes, bias=True, weight_bit_width=4)

        @staticmethod
        def _block(b: Block, cin: int, rng) -> torch.nn.Module:
            m = torch.nn.Module()
            if b.kind == "conv":
                k = 1 if b.variant == "k1" else 3
                m.body = torch.nn.Sequential(_conv(cin, b.channels, k, b.weight),
                                             _maybe_bn(b.channels, b.bn, rng),
                                             _act_quant(b.act, relu=True))
            elif b.kind == "depthwise":
                m.body = torch.nn.Sequential(_conv(cin, cin, 3, b.weight, groups=cin),
                                             _maybe_bn(cin, b.bn, rng),
                                             _act_quant(b.act, relu=True))
            elif b.kind == "maxpool":
                m.body = torch.nn.MaxPool2d(2)
            elif b.kind == "requant":
                chain = [_act_quant(b.act, relu=False)]
                if b.variant:
                    chain.append(_act_quant(b.variant, relu=False))
                m.body = torch.nn.Sequential(*chain)
            elif b.kind == "residual":
                c = b.channels
                m.proj = _conv(cin, c, 1, b.weight) if c != cin else torch.nn.Identity()
                m.proj_q = _act_quant(b.act, relu=True) if c != cin else torch.nn.Identity()
                # "nested" is q(q(b) + q(a)) with b already quantized: requantize of a
                # requantize on one branch, one quantizer on both sides and after the add
                tail = _act_quant(b.act, relu=True) if b.variant == "nested" else \
                    torch.nn.Identity()
                m.branch = torch.nn.Sequential(_conv(c, c, 3, b.weight), _maybe_bn(c, True, rng),
                                               _act_quant(b.act, relu=True),
                                               _conv(c, c, 3, b.weight), _maybe_bn(c, True, rng),
                                               tail)
                fixed = b.variant == "separate"
                m.qa = _shared_quant(b.act, fixed)
                m.qb = _shared_quant(b.act, fixed) if fixed else m.qa
                m.after = m.qa if b.variant == "nested" else _act_quant(b.act, relu=True)
            else:  # concat: a 3x3 and a 1x1 branch under one quantizer
                left = b.channels // 2
                m.left = torch.nn.Sequential(_conv(cin, left, 3, b.weight),
                                             _maybe_bn(left, True, rng))
                m.right = torch.nn.Sequential(_conv(cin, b.channels - left, 1, b.weight),
                                              _maybe_bn(b.channels - left, True, rng))
                m.q = _act_quant(b.act, relu=True)
            return m

        def forward(self, x):
            x = self.inp(x)
            for step, b in zip(self.steps, self.kinds, strict=True):
                if b.kind == "residual":
                    x = step.proj_q(step.proj(x))
                    x = step.after(step.qa(step.branch(x)) + step.qb(x))
                elif b.kind == "concat":
                    x = torch.cat([step.q(step.left(x)), step.q(step.right(x))], dim=1)
                else:
                    x = step.body(x)
            y = self.head_q(self.pool(x))
            return self.fc(torch.flatten(y, 1))

    return Net()


def export_brevitas(spec: Spec, path: Path) -> Path:
    import torch
    from brevitas.export import export_onnx_qcdq, export_qonnx
    from brevitas.graph.calibrate import calibration_mode
    from brevitas_models import _patch_brevitas

    _patch_brevitas()
    torch.manual_seed(spec.seed)
    net = brevitas_module(spec).eval()
    with torch.no_grad(), calibration_mode(net):
        for i in range(3):
            net(torch.from_numpy(input_batch(spec, 16, seed=1000 + i)))
    net.eval()
    fn = export_qonnx if spec.form == "qonnx" else export_onnx_qcdq
    raw = path.with_suffix(".raw.onnx")
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
            contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        fn(net, torch.from_numpy(input_batch(spec, 1, seed=7)), export_path=str(raw),
           dynamo=True)
    return _inline(raw, path)


def _inline(src: Path, dst: Path) -> Path:
    """One self-contained file (the exporters write external data beside it)."""
    import onnx

    onnx.save(onnx.load(str(src)), str(dst))
    return dst


# -- onnxruntime ------------------------------------------------------------------------------

def float_onnx(spec: Spec):
    """The spec as a float ONNX graph (formats are left to the quantizer)."""
    from ort_models import Graph

    g = Graph(spec.seed)
    x, channels, hw = "input", spec.in_shape[0], spec.in_shape[1]
    for b in spec.blocks:
        if b.kind in ("conv", "sigmoid"):
            k = 1 if b.variant == "k1" else 3
            x = g.conv(x, channels, b.channels, k, pad=k // 2, bn=b.bn,
                       relu=b.kind == "conv")
            if b.kind == "sigmoid":
                x = g.node("Sigmoid", [x])
        elif b.kind == "avgpool":
            x = g.node("AveragePool", [x], kernel_shape=[3, 3], pads=[1] * 4)
        elif b.kind == "shuffle":
            x = g.shuffle(x, 2, channels, hw)
        elif b.kind == "se":
            s = g.conv(g.node("GlobalAveragePool", [x]), channels, max(channels // 2, 1), 1,
                       bn=False)
            s = g.conv(s, max(channels // 2, 1), channels, 1, bn=False, relu=False)
            x = g.node("Mul", [x, g.node("Sigmoid", [s])])
        elif b.kind == "depthwise":
            x = g.conv(x, channels, channels, 3, pad=1, groups=channels, bn=b.bn)
        elif b.kind == "maxpool":
            x = g.node("MaxPool", [x], kernel_shape=[2, 2], strides=[2, 2])
            hw //= 2
        elif b.kind == "residual":
            c = b.channels
            if c != channels:
                x = g.conv(x, channels, c, 1)
            y = g.conv(g.conv(x, c, c, 3, pad=1), c, c, 3, pad=1, relu=False)
            x = g.node("Relu", [g.node("Add", [y, x])])
        elif b.kind == "concat":
            left = b.channels // 2
            x = g.node("Concat", [g.conv(x, channels, left, 3, pad=1),
                                  g.conv(x, channels, b.channels - left, 1)], axis=1)
        if b.kind not in ("maxpool", "requant", "depthwise", "avgpool", "shuffle", "se"):
            channels = b.channels
    return g.model(spec.in_shape, g.head(x, channels, spec.classes), spec.classes)


def export_ort(spec: Spec, path: Path) -> Path:
    from float_models import ort_quantize

    return ort_quantize(float_onnx(spec), input_batch(spec, 32, seed=100 + spec.seed), path,
                        fmt="QOperator" if spec.form == "qoperator" else "QDQ",
                        per_channel=spec.per_channel, reduce_range=True)


def export(spec: Spec, path: Path | str) -> Path:
    """Write the spec's quantized model to ``path``."""
    path = Path(path)
    return export_ort(spec, path) if spec.source == "ort" else export_brevitas(spec, path)


def input_batch(spec: Spec, n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, *spec.in_shape)).astype(np.float32)


# -- shrinking ---------------------------------------------------------------------------------

def smaller(spec: Spec):
    """Candidate specs one simplification away, the biggest cuts first."""
    blocks = spec.blocks
    for i in range(len(blocks)):
        yield replace(spec, blocks=blocks[:i] + blocks[i + 1:])
    for i, b in enumerate(blocks):
        simple = {"act": "uint4" if b.act != "uint4" else b.act,
                  "weight": "int4" if b.weight not in ("int4",) else b.weight,
                  "variant": "" if b.kind == "requant" else b.variant, "bn": False}
        for key, value in simple.items():
            if getattr(b, key) != value and not (key == "bn" and b.kind not in (
                    "conv", "depthwise")):
                yield replace(spec, blocks=(*blocks[:i], replace(b, **{key: value}),
                                            *blocks[i + 1:]))
    if spec.in_shape[0] > 1:
        yield replace(spec, in_shape=(1, *spec.in_shape[1:]))


def shrink(spec: Spec, fails, budget: int = 40) -> Spec:
    """The smallest spec reached by :func:`smaller` steps for which ``fails(spec)`` holds
    (greedy, at most ``budget`` tries)."""
    tries = 0
    progress = True
    while progress and tries < budget:
        progress = False
        for candidate in smaller(spec):
            tries += 1
            if _valid(candidate) and fails(candidate):
                spec, progress = candidate, True
                break
            if tries >= budget:
                break
    return spec


def _valid(spec: Spec) -> bool:
    """Channel counts and map sizes still chain after a block was cut."""
    channels, hw = spec.in_shape[0], spec.in_shape[1]
    for b in spec.blocks:
        if b.kind == "maxpool":
            if hw % 2 or hw < 2:
                return False
            hw //= 2
        if b.kind == "shuffle" and channels % 2:
            return False
        if b.channels:
            channels = b.channels
    return bool(spec.blocks)
