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


@pytest.mark.verilator
def test_batch_norm_after_a_concat_is_bit_exact_on_verilator(tmp_path):
    """DenseNet's pattern as onnxruntime writes it (DequantizeLinear after a Concat, then
    BatchNormalization, ReLU, QuantizeLinear): a thresholding layer of its own computes it,
    64 frames with back-pressure, bit-exact against golden."""
    from bitloom.boards import load_board
    from bitloom.emit.design import emit_design
    from bitloom.plan import make_plan
    from bitloom.sim.verify import verify

    path = om.quantized("concat_bn_qdq_pc", tmp_path / "concat_bn.onnx")
    net = bitloom.load(path)
    kinds = [ly.kind for ly in net.layers]
    assert kinds[kinds.index("Concat") + 1] == "Requantize"
    design = emit_design(make_plan(net, 256), load_board("pynq-z2"), tmp_path / "d", path)
    result = verify(design, samples=64, pause=0.3)
    assert result.bit_exact, result.mismatch
