"""The larger Brevitas networks a FINN user brings: ``resnet18_4w4a`` (bnn_pynq, CIFAR-10),
``quant_mobilenet_v1_4b`` and ``quant_proxylessnas_mobile14_4b`` (imagenet_classification),
built with ``pretrained=False``, exported with ``export_qonnx`` and cleaned with qonnx's
``cleanup``, cached per Brevitas and torch version.

Random weights alone leave MobileNet and ProxylessNAS degenerate (BatchNorm at identity,
activation scales at their initial value: every activation past a few layers is zero, and
any comparison is then trivially equal), so two train-mode passes on random images first set
the BatchNorm statistics and the activation scales, as a calibration would.

ResNet-18 exports with the TorchScript exporter (``dynamo=False``): under the dynamo
exporter Brevitas stops creating QuantTensors, and ``QuantBasicBlock.forward`` asserts that
its residual operands are QuantTensors (Xilinx/brevitas#1608).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from brevitas_models import _patch_brevitas, export_cache

#: name -> (builder module, builder, per-sample input shape, dynamo exporter, calibration passes)
NETS = {
    "resnet18_4w4a": ("brevitas_examples.bnn_pynq.models", "resnet18_4w4a", (3, 32, 32),
                      False, 0),
    "mobilenet_v1_4b": ("brevitas_examples.imagenet_classification.models",
                        "quant_mobilenet_v1_4b", (3, 224, 224), True, 2),
    "proxylessnas_mobile14_4b": ("brevitas_examples.imagenet_classification.models",
                                 "quant_proxylessnas_mobile14_4b", (3, 224, 224), True, 2),
}


def calibrate(net, shape: tuple[int, ...], passes: int, batch: int = 8) -> None:
    """``passes`` train-mode forward passes on random images in [0, 1): cumulative BatchNorm
    statistics and the activation quantizers' statistics-based scales."""
    import torch

    generator = torch.Generator().manual_seed(0)
    for module in net.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None
    net.train()
    with torch.no_grad():
        for _ in range(passes):
            net(torch.rand((batch, *shape), generator=generator))


def cached_export(name: str, seed: int = 0) -> Path:
    """The cleaned QONNX export of ``name`` (written atomically)."""
    path = export_cache("imagenet-zoo", Path(__file__)) / f"{name}-{seed}.onnx"
    if path.exists():
        return path
    import importlib

    import torch
    from brevitas.export import export_qonnx
    from qonnx.util.cleanup import cleanup

    module, builder, shape, dynamo, passes = NETS[name]
    _patch_brevitas()
    torch.manual_seed(seed)
    net = getattr(importlib.import_module(module), builder)(pretrained=False)
    calibrate(net, shape, passes)
    net.eval()
    raw = path.with_suffix(f".{os.getpid()}.raw.onnx")
    tmp = path.with_suffix(f".{os.getpid()}.tmp.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_qonnx(net, torch.zeros((1, *shape)), str(raw), dynamo=dynamo)
    cleanup(str(raw), out_file=str(tmp))
    os.replace(tmp, path)
    for leftover in raw.parent.glob(raw.name + "*"):
        leftover.unlink()
    return path


def images(name: str, count: int, seed: int = 0) -> np.ndarray:
    """8-bit images, as floats in [0, 1] on the 1/255 grid the declared input reads."""
    shape = NETS[name][2]
    codes = np.random.default_rng(seed).integers(0, 256, size=(count, *shape))
    return (codes / 255).astype(np.float32)
