"""The onnx wheel's nine model-zoo topologies, quantized by onnxruntime (QDQ and QOperator,
per-channel weights, random non-degenerate weights): each file has one expected outcome,
asserted exactly.

- ``agrees``: golden imports, runs, and is at most one output step from onnxruntime with
  the same argmax on a seeded batch.
- ``drifts``: golden is further than one step from onnxruntime, and every layer computed
  from onnxruntime's own codes of its inputs (teacher-forced) equals onnxruntime's codes
  except for one code at a few values in a hundred thousand: onnxruntime's float32
  arithmetic (accumulation order, an average landing exactly on a tie) puts those values
  on the other side of a rounding boundary, and a deep network with random weights
  amplifies them. Golden computes the model's exact rational meaning.
- ``refused``: a BitloomError naming the file, the node and the reason.

A model whose outcome changes fails until the table changes. DenseNet-121, Inception v2,
VGG-19, AlexNet and ZFNet-512 take 10-100 s each to quantize or run: they run with
``BITLOOM_ZOO=all`` (``make test-zoo``). Results: docs/results/*-ort-zoo.md.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import onnx
import pytest
import zoo_models as zm
from reference_check import check_against_reference, layer_by_layer

from bitloom.errors import BitloomError

LRN = ("(LRN)", "sum of squares over neighbouring channels")
#: (model, form) -> outcome, or the refusal's phrases
EXPECTED: dict[tuple[str, str], str | tuple[str, ...]] = {
    ("squeezenet", "QDQ"): "agrees",
    ("squeezenet", "QOperator"): "agrees",
    ("resnet50", "QDQ"): "agrees",
    ("resnet50", "QOperator"): "agrees",
    ("shufflenet", "QDQ"): "drifts",
    ("shufflenet", "QOperator"): "drifts",
    ("inception_v1", "QDQ"): LRN,
    ("inception_v1", "QOperator"): LRN,
    ("densenet121", "QDQ"): "agrees",
    ("densenet121", "QOperator"): "agrees",
    ("inception_v2", "QDQ"): "agrees",
    ("inception_v2", "QOperator"): "agrees",
    ("vgg19", "QDQ"): "drifts",
    ("vgg19", "QOperator"): "drifts",
    ("alexnet", "QDQ"): LRN,
    ("alexnet", "QOperator"): LRN,
    ("zfnet512", "QDQ"): LRN,
    ("zfnet512", "QOperator"): LRN,
}
#: quick enough for every run (a few seconds to half a minute each)
EVERY_RUN = {"squeezenet", "resnet50", "shufflenet", "inception_v1"}
#: teacher-forced: at most this share of a model's compared values may differ (by one code)
FORCED_SHARE = 1e-4


def _cache() -> Path:
    import onnxruntime

    return Path(tempfile.gettempdir()) / "bitloom-test-models" / (
        f"zoo-{onnx.__version__}-{onnxruntime.__version__}")


def _cases():
    for (name, form), outcome in EXPECTED.items():
        marks = [] if name in EVERY_RUN else [
            pytest.mark.skipif(os.environ.get("BITLOOM_ZOO") != "all",
                               reason="a large model: BITLOOM_ZOO=all (make test-zoo)")]
        if name in zm.available():
            yield pytest.param(name, form, outcome, marks=marks, id=f"{name}-{form}")


@pytest.mark.parametrize(("name", "form", "outcome"), list(_cases()))
def test_zoo_model_has_its_expected_outcome(name, form, outcome):
    path, _ = zm.quantized_zoo_model(name, _cache(), fmt=form, per_channel=True)
    x = zm.zoo_input(path, 2)
    if outcome == "agrees":
        check_against_reference(path, "qdq", x)
    elif outcome == "drifts":
        with pytest.raises(AssertionError):  # it is no longer "agrees": update the table
            check_against_reference(path, "qdq", x)
        rows = layer_by_layer(path, x[:1])
        forced = [r for r in rows if r["forced_count"] is not None]
        assert len(forced) > len(rows) // 2
        assert max(r["forced_max"] for r in forced) <= 1
        share = sum(r["forced_count"] for r in forced) / sum(r["size"] for r in forced)
        assert share <= FORCED_SHARE, share
    else:
        with pytest.raises(BitloomError) as refused:
            check_against_reference(path, "qdq", x)
        message = str(refused.value)
        assert str(path) in message
        for phrase in outcome:
            assert phrase in message, message
