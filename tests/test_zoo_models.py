"""The onnx wheel's model-zoo topologies, quantized by onnxruntime (QDQ): each imports and
runs in golden, or is refused with a BitloomError naming what is unsupported; nothing else."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnx
import pytest
import zoo_models as zm

import bitloom
from bitloom.errors import BitloomError

#: ResNet-50 imports (Sum maps to Add) but deriving its exact threshold tables takes minutes
#: (every entry is settled in rational arithmetic because onnxruntime's Conv -> Q -> DQ ->
#: BatchNorm chains hold an intermediate quantizer), too slow for the suite
FAST = ("squeezenet", "shufflenet", "inception_v1")


def _cache() -> Path:
    import onnxruntime

    return Path(tempfile.gettempdir()) / "bitloom-test-models" / (
        f"zoo-{onnx.__version__}-{onnxruntime.__version__}")


@pytest.mark.parametrize("name", [n for n in FAST if n in zm.available()])
def test_zoo_model_runs_or_is_refused_by_name(name):
    path, _ = zm.quantized_zoo_model(name, _cache())
    try:
        net = bitloom.load(path)
    except BitloomError as exc:
        message = str(exc)
        assert str(path) in message
        if "unsupported op(s)" in message:  # every unsupported op type is named
            listed = message.split("unsupported op(s):")[1].split(". bitloom maps")[0]
            assert listed.strip()
        return
    x = zm.zoo_input(path, 1)
    y = net.run(x)
    assert y.dtype == np.float32 and np.all(np.isfinite(y))
