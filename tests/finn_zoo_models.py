"""FINN's benchmark networks as their users get them: built from the Brevitas wheel's
``brevitas_examples`` (``pretrained=False``, seeded random weights: only exactness is
checked), exported with ``export_qonnx`` and cleaned with ``qonnx.util.cleanup``, cached
per Brevitas and torch version."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from brevitas_models import _patch_brevitas, export_cache

#: bnn_pynq name -> per-sample input shape
BNN_PYNQ = {
    **{f"{net}_{bits}": (1, 28, 28) for net in ("tfc", "sfc", "lfc")
       for bits in ("1w1a", "1w2a", "2w2a") if f"{net}_{bits}" != "lfc_2w2a"},
    **{f"cnv_{bits}": (3, 32, 32) for bits in ("1w1a", "1w2a", "2w2a")},
}


def cached_export(name: str, seed: int = 0) -> Path:
    """The cleaned QONNX export of bnn_pynq's ``name`` (written atomically)."""
    path = export_cache("finn-zoo", Path(__file__)) / f"{name}-{seed}.onnx"
    if path.exists():
        return path
    import brevitas_examples.bnn_pynq.models as models
    import torch
    from brevitas.export import export_qonnx
    from qonnx.util.cleanup import cleanup

    _patch_brevitas()
    torch.manual_seed(seed)
    net = getattr(models, name)(pretrained=False).eval()
    raw = path.with_suffix(f".{os.getpid()}.raw.onnx")
    tmp = path.with_suffix(f".{os.getpid()}.tmp.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_qonnx(net, torch.zeros((1, *BNN_PYNQ[name])), str(raw), dynamo=True)
    cleanup(str(raw), out_file=str(tmp))
    os.replace(tmp, path)
    return path


def images(name: str, count: int, seed: int = 0) -> np.ndarray:
    """Inputs in [0, 1), as the bnn_pynq training scripts feed them."""
    return np.random.default_rng(seed).random((count, *BNN_PYNQ[name]), dtype=np.float32)
