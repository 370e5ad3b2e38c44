"""The onnx wheel's model-zoo topologies, quantized by onnxruntime (QDQ): each imports, runs
in golden and agrees with onnxruntime (identical argmax, at most one output quantization step
apart), or is refused with a BitloomError naming what is unsupported; nothing else."""

from __future__ import annotations

import tempfile
from pathlib import Path

import onnx
import pytest
import zoo_models as zm
from reference_check import check_against_reference

from bitloom.errors import BitloomError

#: DenseNet-121, VGG-19, AlexNet and ZFNet-512 are left out because onnxruntime takes 2 to 4
#: minutes to quantize each of them (docs/results/2026-11-23-threshold-derivation.md);
#: Inception v2 is not measured
FAST = ("squeezenet", "shufflenet", "inception_v1", "resnet50")
#: models that import and keep onnxruntime's argmax but are further than one output step
#: from its output (strict: a fix makes the test fail until the entry goes)
#: SqueezeNet: the first difference is at fire2/expand3x3 (tensor r8), 2 of 193,600 codes whose
#: exact value is 152.50000065 steps: golden rounds to 153, onnxruntime's float32 conv to 152;
#: the difference grows through the later layers to 2 output steps (same argmax)
BEYOND_ONE_STEP = {"squeezenet": "golden is 2 output steps (2/255) from onnxruntime, same "
                                 "argmax: onnxruntime's float32 conv rounds near-ties wrongly"}


def _cache() -> Path:
    import onnxruntime

    return Path(tempfile.gettempdir()) / "bitloom-test-models" / (
        f"zoo-{onnx.__version__}-{onnxruntime.__version__}")


@pytest.mark.parametrize("name", [
    pytest.param(n, marks=pytest.mark.xfail(reason=BEYOND_ONE_STEP[n], raises=AssertionError,
                                            strict=True)) if n in BEYOND_ONE_STEP else n
    for n in FAST if n in zm.available()])
def test_zoo_model_matches_onnxruntime_or_is_refused_by_name(name):
    path, _ = zm.quantized_zoo_model(name, _cache())
    try:
        check_against_reference(path, "qdq", zm.zoo_input(path, 1))
    except BitloomError as exc:
        message = str(exc)
        assert str(path) in message
        if "unsupported op(s)" in message:  # every unsupported op type is named
            listed = message.split("unsupported op(s):")[1].split(". bitloom maps")[0]
            assert listed.strip()
