"""Real Brevitas exports (QONNX and QCDQ, torch's dynamo and TorchScript exporters) through
the golden model, against qonnx's executor (QONNX) and onnxruntime (QCDQ): identical
argmax, at most one output quantization step apart (see reference_check)."""

from __future__ import annotations

import brevitas_models as bm
import pytest
from reference_check import check_against_reference, last_layer_codes, run_reference


def _cases() -> list[tuple[str, str, str]]:
    cases = []
    for bits in ("int2", "int4", "int8"):
        for model in ("mlp", "cnn"):
            cases += [(f"{model}_{bits}", "qonnx", "dynamo"), (f"{model}_{bits}", "qcdq",
                                                              "dynamo")]
    for kind in ("binary", "e4m3", "e3m2", "e2m1"):
        cases += [(f"mlp_{kind}", "qonnx", "dynamo"), (f"cnn_{kind}", "qonnx", "dynamo")]
    cases += [
        ("cnn_int4_truncpool", "qcdq", "dynamo"),
        ("residual_int2", "qcdq", "dynamo"), ("residual_int4", "qonnx", "dynamo"),
        ("residual_int8", "qcdq", "dynamo"), ("residual_binary", "qonnx", "dynamo"),
        ("residual_e2m1", "qonnx", "dynamo"),
        ("depthwise_int4", "qonnx", "dynamo"), ("depthwise_int8", "qcdq", "dynamo"),
        ("depthwise_e3m2", "qonnx", "dynamo"),
        ("concat_int4", "qonnx", "dynamo"), ("concat_int2", "qcdq", "dynamo"),
        ("concat_binary", "qonnx", "dynamo"),
        # TorchScript writes another graph (Constant nodes, GlobalAveragePool, Flatten)
        ("mlp_int4", "qonnx", "torchscript"), ("mlp_int4", "qcdq", "torchscript"),
        ("cnn_int4", "qonnx", "torchscript"), ("cnn_int4", "qcdq", "torchscript"),
        ("residual_int4", "qcdq", "torchscript"), ("concat_int4", "qonnx", "torchscript"),
        # QONNX Trunc (brevitas TruncAvgPool2d), v2 under dynamo, v1 under TorchScript
        ("cnn_int4_truncpool", "qonnx", "dynamo"), ("residual_int4_truncpool", "qonnx",
                                                    "dynamo"),
        ("depthwise_int4_truncpool", "qonnx", "dynamo"),
        ("cnn_int4_truncpool", "qonnx", "torchscript"),
        # float8 QCDQ (declared under opset 18: onnx.reference is the reference)
        ("mlp_e4m3", "qcdq", "dynamo"), ("cnn_e4m3", "qcdq", "dynamo"),
        ("residual_e4m3", "qcdq", "dynamo"), ("depthwise_e4m3", "qcdq", "dynamo"),
        ("concat_e4m3", "qcdq", "dynamo"),
    ]
    return cases


CASES = _cases()


@pytest.mark.parametrize(("variant", "form", "exporter"), CASES,
                         ids=["-".join(c) for c in CASES])
def test_golden_matches_reference(variant, form, exporter):
    assert bm.exportable(variant, form, exporter)
    path = bm.cached_export(variant, form, exporter)
    check_against_reference(path, form, bm.input_batch(variant, 16, seed=3))


TIES = [("residual_int4_truncpool", "qcdq", "dynamo"),
        ("depthwise_int4_truncpool", "qcdq", "dynamo")]


@pytest.mark.parametrize(("variant", "form", "exporter"), TIES, ids=["-".join(c) for c in TIES])
def test_truncpool_8x8_qcdq_within_one_lsb_of_onnxruntime(variant, form, exporter):
    """TruncAvgPool over an 8x8 window in QCDQ: onnxruntime averages in float32 and rounds
    exact ties of the pooled activation either way; bitloom is exact. So: identical argmax,
    and the quantized activation feeding the last layer at most one LSB from onnxruntime's
    (the output itself may then differ by several output steps)."""
    path = bm.cached_export(variant, form, exporter)
    x = bm.input_batch(variant, 16, seed=3)
    golden, reference = last_layer_codes(path, x)
    assert golden.shape == reference.shape
    assert int(abs(golden - reference).max()) <= 1
    import bitloom

    out = bitloom.load(path).run(x)
    ref, _ = run_reference(path, form, x)
    assert (out.reshape(len(x), -1).argmax(1) == ref.reshape(len(x), -1).argmax(1)).all()


def test_brevitas_refuses_what_it_cannot_export_as_qcdq(tmp_path):
    """The combinations left out above are brevitas' limits, not bitloom's."""
    assert not bm.exportable("mlp_binary", "qcdq")
    with pytest.raises(AssertionError, match="Binary quant not supported"):
        bm.export("mlp_binary", "qcdq", tmp_path / "b.onnx")
