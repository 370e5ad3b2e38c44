"""CNNs quantized by onnxruntime's ``quantize_static`` (QDQ and QOperator; per-tensor and
per-channel; BatchNorm kept or folded by ``quant_pre_process``) against onnxruntime."""

from __future__ import annotations

import ort_models as om
import pytest
from reference_check import check_against_reference

import bitloom
from bitloom.errors import BitloomError

#: QOperator models onnxruntime leaves with BatchNorm/ReLU/GlobalAveragePool in float between
#: DequantizeLinear and QuantizeLinear: an average of unquantized floats has no exact
#: integer form, so bitloom refuses naming the GlobalAveragePool node.
FLOAT_POOL = [f"{kind}_qoperator_{pc}" for kind in ("cnn", "concat", "depthwise", "avgpool")
              for pc in ("pt", "pc")]
MAPPED = [v for v in om.VARIANTS if v not in FLOAT_POOL]


@pytest.mark.parametrize("variant", MAPPED)
def test_ort_cnn_matches_onnxruntime(tmp_path, variant):
    path = om.quantized(variant, tmp_path / f"{variant}.onnx")
    kind = om.VARIANTS[variant][0]
    check_against_reference(path, "qdq", om.input_batch(kind, 16, seed=3))


@pytest.mark.parametrize("variant", FLOAT_POOL)
def test_ort_qoperator_float_pool_is_refused(tmp_path, variant):
    path = om.quantized(variant, tmp_path / f"{variant}.onnx")
    with pytest.raises(BitloomError, match=r"node 'n_GlobalAveragePool_\d+' "
                       r"\(GlobalAveragePool\): GlobalAveragePool of an unquantized tensor "
                       r"cannot be computed exactly"):
        bitloom.load(path)
