"""Small Brevitas models with seeded weights, calibrated and exported to QONNX and QCDQ.

Every builder returns an ``nn.Module`` in eval mode whose activation scales were set by a
few calibration batches; :func:`export` writes it as QONNX (``Quant``/``BipolarQuant``/
``Trunc``/``FloatQuant``) or as QCDQ (``QuantizeLinear -> Clip -> DequantizeLinear``) and
returns the path. :func:`input_batch` is the seeded input the tests run through both bitloom
and the reference executor.

brevitas' ONNX managers refuse to run without ``onnxoptimizer``, which the dynamo exporter
(the default from torch 2.9) never calls; a pass-through stand-in is installed when it is
missing.
"""

from __future__ import annotations

import types
import warnings
from pathlib import Path

import numpy as np

#: name -> (builder, input shape without the batch axis)
MODELS: dict[str, tuple] = {}

QONNX_FORM = "qonnx"
QCDQ_FORM = "qcdq"
FORMS = (QONNX_FORM, QCDQ_FORM)


def _patch_brevitas() -> None:
    import brevitas.export.onnx.manager as manager

    if manager.opt is None:  # only the TorchScript path runs onnxoptimizer passes
        import onnx

        manager.onnx = onnx
        manager.opt = types.SimpleNamespace(optimize=lambda model, passes: model)


def model(name: str, shape: tuple[int, ...]):
    def register(fn):
        MODELS[name] = (fn, shape)
        return fn
    return register


# -- quantizers -----------------------------------------------------------------------------
def _minifloat(exp_bits: int, man_bits: int):
    """(weight quantizer, activation quantizer) for an OCP-style minifloat eXmY."""
    from brevitas.quant.float_quant_ocp import (
        FpOCPActPerTensorFloat,
        FpOCPWeightPerTensorFloat,
    )

    attrs = {"bit_width": 1 + exp_bits + man_bits, "exponent_bit_width": exp_bits,
             "mantissa_bit_width": man_bits, "saturating": True}
    weight = type(f"Fp{exp_bits}{man_bits}Weight", (FpOCPWeightPerTensorFloat,), dict(attrs))
    act = type(f"Fp{exp_bits}{man_bits}Act", (FpOCPActPerTensorFloat,), dict(attrs))
    return weight, act


class Quants:
    """Keyword arguments for brevitas layers: integer widths, binary weights or minifloat."""

    def __init__(self, bits: int = 4, binary: bool = False,
                 minifloat: tuple[int, int] | None = None) -> None:
        self.bits, self.binary, self.minifloat = bits, binary, minifloat
        if minifloat:
            self.wq, self.aq = _minifloat(*minifloat)

    def weight(self) -> dict:
        if self.minifloat:
            return {"weight_quant": self.wq}
        if self.binary:
            from brevitas.quant import SignedBinaryWeightPerTensorConst

            return {"weight_quant": SignedBinaryWeightPerTensorConst}
        return {"weight_bit_width": self.bits}

    def act(self, signed: bool = False) -> dict:
        if self.minifloat:
            return {"act_quant": self.aq}
        return {"bit_width": max(self.bits, 2)}

    def identity(self, quant_tensor: bool = True):
        import brevitas.nn as qnn

        return qnn.QuantIdentity(return_quant_tensor=quant_tensor, **self.act(signed=True))

    def relu(self, quant_tensor: bool = True):
        import brevitas.nn as qnn

        if self.minifloat:  # a signed minifloat after a float ReLU
            import torch

            return torch.nn.Sequential(torch.nn.ReLU(), qnn.QuantIdentity(
                return_quant_tensor=quant_tensor, **self.act()))
        return qnn.QuantReLU(return_quant_tensor=quant_tensor, **self.act())


def _bn(channels: int, rng: np.random.Generator):
    import torch

    bn = torch.nn.BatchNorm2d(channels)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor(rng.uniform(0.5, 1.5, channels), dtype=torch.float32))
        bn.bias.copy_(torch.tensor(rng.normal(0, 0.2, channels), dtype=torch.float32))
        bn.running_mean.copy_(torch.tensor(rng.normal(0, 0.3, channels), dtype=torch.float32))
        bn.running_var.copy_(torch.tensor(rng.uniform(0.5, 2.0, channels),
                                          dtype=torch.float32))
    return bn


def _conv(q: Quants, cin: int, cout: int, k: int, stride: int = 1, padding: int = 0,
          groups: int = 1):
    import brevitas.nn as qnn

    return qnn.QuantConv2d(cin, cout, k, stride=stride, padding=padding, groups=groups,
                           bias=False, **q.weight())


def _linear(q: Quants, k: int, n: int):
    import brevitas.nn as qnn

    return qnn.QuantLinear(k, n, bias=True, **q.weight())


def _global_pool(q: Quants, channels: int, pool: str, size: int):
    """Global average pooling: a float AdaptiveAvgPool2d then a QuantIdentity, or brevitas'
    TruncAvgPool2d (exported as QONNX ``Trunc``)."""
    import brevitas.nn as qnn
    import torch

    if pool == "trunc":
        return torch.nn.Sequential(qnn.TruncAvgPool2d(size, return_quant_tensor=False))
    return torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), q.identity())


# -- models ---------------------------------------------------------------------------------
@model("mlp", (16,))
def mlp(q: Quants, seed: int, **_):
    import torch

    return torch.nn.Sequential(q.identity(), _linear(q, 16, 12), q.relu(),
                               _linear(q, 12, 10), q.relu(), _linear(q, 10, 6))


@model("cnn", (1, 8, 8))
def cnn(q: Quants, seed: int, pool: str = "float", **_):
    import torch

    rng = np.random.default_rng(seed)
    return torch.nn.Sequential(
        q.identity(),
        _conv(q, 1, 4, 3, padding=1), _bn(4, rng), q.relu(),
        torch.nn.MaxPool2d(2),
        _conv(q, 4, 8, 3, stride=2), _bn(8, rng), q.relu(),
        _global_pool(q, 8, pool, 1),
        torch.nn.Flatten(), _linear(q, 8, 5))


def _residual_module(q: Quants, seed: int, pool: str):
    import torch

    rng = np.random.default_rng(seed)

    class Residual(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inp = q.identity()
            self.stem = torch.nn.Sequential(_conv(q, 1, 4, 3, padding=1), _bn(4, rng),
                                            q.relu(quant_tensor=False))
            self.branch = torch.nn.Sequential(
                _conv(q, 4, 4, 3, padding=1), _bn(4, rng), q.relu(),
                _conv(q, 4, 4, 3, padding=1), _bn(4, rng))
            self.shared = q.identity(quant_tensor=False)  # both addends on one scale
            self.after = q.relu()
            self.head = torch.nn.Sequential(_global_pool(q, 4, pool, 8), torch.nn.Flatten(),
                                            _linear(q, 4, 5))

        def forward(self, x):
            x = self.stem(self.inp(x))
            a = self.shared(self.branch(x))
            b = self.shared(x)
            y = self.after(a + b)
            return self.head(y)

    return Residual()


@model("residual", (1, 8, 8))
def residual(q: Quants, seed: int, pool: str = "float", **_):
    return _residual_module(q, seed, pool)


@model("depthwise", (4, 8, 8))
def depthwise(q: Quants, seed: int, pool: str = "float", **_):
    import torch

    rng = np.random.default_rng(seed)
    return torch.nn.Sequential(
        q.identity(),
        _conv(q, 4, 4, 3, padding=1, groups=4), _bn(4, rng), q.relu(),
        _conv(q, 4, 8, 1), _bn(8, rng), q.relu(),
        _global_pool(q, 8, pool, 8), torch.nn.Flatten(), _linear(q, 8, 5))


@model("concat", (1, 8, 8))
def concat(q: Quants, seed: int, pool: str = "float", **_):
    import torch

    rng = np.random.default_rng(seed)

    class Concat(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inp = q.identity()
            self.left = torch.nn.Sequential(_conv(q, 1, 4, 3, padding=1), _bn(4, rng))
            self.right = torch.nn.Sequential(_conv(q, 1, 4, 1), _bn(4, rng))
            self.shared = q.relu(quant_tensor=False)  # one quantizer: both halves share scale
            self.head = torch.nn.Sequential(
                torch.nn.MaxPool2d(2), _global_pool(q, 8, pool, 4), torch.nn.Flatten(),
                _linear(q, 8, 5))

        def forward(self, x):
            x = self.inp(x)
            y = torch.cat([self.shared(self.left(x)), self.shared(self.right(x))], dim=1)
            return self.head(y)

    return Concat()


@model("shared_quant_residual", (1, 8, 8))
def shared_quant_residual(q: Quants, seed: int, **_):
    """The residual block Brevitas users write for an add on one scale: one unsigned
    quantizer used on both addends and after the add, a requantize of a requantize on the
    branch (a Thresholding whose table saturates), 4-bit per-channel weights."""
    import brevitas.nn as qnn
    import torch
    from brevitas.quant import Int8WeightPerChannelFloat, Uint8ActPerTensorFloat

    rng = np.random.default_rng(seed)
    w = {"weight_quant": Int8WeightPerChannelFloat, "weight_bit_width": q.bits, "bias": False}
    uint = {"bit_width": q.bits, "act_quant": Uint8ActPerTensorFloat,
            "return_quant_tensor": True}

    class Block(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inp = qnn.QuantIdentity(bit_width=q.bits, return_quant_tensor=True)
            self.c0 = qnn.QuantConv2d(1, 8, 3, padding=1, **w)
            self.bn = _bn(8, rng)
            self.r0 = qnn.QuantReLU(bit_width=q.bits, return_quant_tensor=True)
            self.c1 = qnn.QuantConv2d(8, 8, 3, padding=1, **w)
            self.r1 = qnn.QuantReLU(**uint)
            self.q = qnn.QuantIdentity(**uint)  # used three times
            self.pool = torch.nn.MaxPool2d(2)
            self.c2 = qnn.QuantConv2d(8, 16, 3, padding=1, **w)
            self.r2 = qnn.QuantReLU(bit_width=q.bits, return_quant_tensor=True)
            self.gap = torch.nn.AdaptiveAvgPool2d(1)
            self.qi = qnn.QuantIdentity(bit_width=q.bits, return_quant_tensor=True)
            self.fc = qnn.QuantLinear(16, 10, bias=True, weight_bit_width=q.bits)

        def forward(self, x):
            a = self.r0(self.bn(self.c0(self.inp(x))))
            b = self.r1(self.c1(a))
            y = self.q(self.q(b) + self.q(a))
            y = self.qi(self.gap(self.r2(self.c2(self.pool(y)))))
            return self.fc(torch.flatten(y, 1))

    return Block()


# -- building, calibrating, exporting --------------------------------------------------------
#: the variants the tests run: name -> (model, Quants kwargs, builder kwargs)
INT_BITS = (2, 4, 8)
MINIFLOATS = {"e4m3": (4, 3), "e3m2": (3, 2), "e2m1": (2, 1)}


def variants(models=("mlp", "cnn", "residual", "depthwise", "concat")) -> dict[str, tuple]:
    out: dict[str, tuple] = {}
    for m in models:
        for bits in INT_BITS:
            out[f"{m}_int{bits}"] = (m, {"bits": bits}, {})
        out[f"{m}_binary"] = (m, {"bits": 4, "binary": True}, {})
        for fmt, (e, mm) in MINIFLOATS.items():
            out[f"{m}_{fmt}"] = (m, {"minifloat": (e, mm)}, {})
        if m not in ("mlp", "concat"):  # brevitas: "Zero-point export not supported for
            # TruncQuant" after a concat
            out[f"{m}_int4_truncpool"] = (m, {"bits": 4}, {"pool": "trunc"})
    return out


VARIANTS = variants()
VARIANTS["shared_quant_residual_int4"] = ("shared_quant_residual", {"bits": 4}, {})


def input_batch(name: str, n: int = 16, seed: int = 0) -> np.ndarray:
    """A seeded float32 input batch for model ``name`` (a key of MODELS or VARIANTS)."""
    base = VARIANTS[name][0] if name in VARIANTS else name
    shape = MODELS[base][1]
    return np.random.default_rng(seed).normal(size=(n, *shape)).astype(np.float32)


def build(variant: str, seed: int = 0, calibration_batches: int = 4):
    """The calibrated brevitas module (eval mode) of ``variant`` (a key of VARIANTS)."""
    import torch
    from brevitas.graph.calibrate import calibration_mode

    base, qkw, kw = VARIANTS[variant]
    torch.manual_seed(seed)
    net = MODELS[base][0](Quants(**qkw), seed, **kw)
    net.eval()
    with torch.no_grad(), calibration_mode(net):
        for i in range(calibration_batches):
            net(torch.from_numpy(input_batch(base, 16, seed=1000 + i)))
    net.eval()
    return net


def exportable(variant: str, form: str, exporter: str = "dynamo") -> bool:
    """Whether brevitas 0.13 can export ``variant`` as ``form``: its QCDQ export has no
    binary quantizer ("Binary quant not supported") and no minifloat but FP8 ("Only OCP/FNUZ
    Standard are supported for FP8 export"), and FP8 QCDQ only through dynamo."""
    _, qkw, _ = VARIANTS[variant]
    if form == QCDQ_FORM:
        if qkw.get("binary"):
            return False
        if qkw.get("minifloat"):
            return qkw["minifloat"] == (4, 3) and exporter == "dynamo"
    return True


def export(variant: str, form: str, path: Path | str, seed: int = 0,
           exporter: str = "dynamo") -> Path:
    """Build ``variant`` and export it as ``form`` ("qonnx" or "qcdq") to ``path`` with
    torch's ``exporter`` ("dynamo", the default since torch 2.9, or "torchscript")."""
    import contextlib
    import io

    import torch
    from brevitas.export import export_onnx_qcdq, export_qonnx

    _patch_brevitas()
    path = Path(path)
    net = build(variant, seed)
    base = VARIANTS[variant][0]
    x = torch.from_numpy(input_batch(base, 1, seed=7))
    fn = {QONNX_FORM: export_qonnx, QCDQ_FORM: export_onnx_qcdq}[form]
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        fn(net, x, export_path=str(path), dynamo=exporter == "dynamo")
    return path


def export_cache(name: str, source: Path) -> Path:
    """A folder of exports cached across runs, keyed by ``source`` (the file that builds
    them) and the brevitas/torch versions."""
    import hashlib
    import tempfile

    import brevitas
    import torch

    key = hashlib.sha256(source.read_bytes() + brevitas.__version__.encode()
                         + torch.__version__.encode()).hexdigest()[:16]
    path = Path(tempfile.gettempdir()) / "bitloom-test-models" / f"{name}-{key}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def cached_export(variant: str, form: str, exporter: str = "dynamo", seed: int = 0) -> Path:
    """:func:`export`, reusing an earlier identical export (written atomically, so parallel
    test workers may race safely)."""
    import os

    path = export_cache("brevitas", Path(__file__)) / f"{variant}-{form}-{exporter}-{seed}.onnx"
    if not path.exists():
        tmp = path.with_suffix(f".{os.getpid()}.tmp.onnx")
        export(variant, form, tmp, seed, exporter)
        os.replace(tmp, path)
    return path


def torch_output(variant: str, x: np.ndarray, seed: int = 0) -> np.ndarray:
    """What brevitas itself computes (fake-quantized float), for diagnostics."""
    import torch

    net = build(variant, seed)
    with torch.no_grad():
        y = net(torch.from_numpy(x))
    return (y.value if hasattr(y, "value") else y).numpy()
