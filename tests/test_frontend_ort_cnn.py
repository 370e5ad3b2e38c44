"""CNNs quantized by onnxruntime's ``quantize_static`` (QDQ and QOperator; per-tensor and
per-channel; BatchNorm kept or folded by ``quant_pre_process``) against onnxruntime."""

from __future__ import annotations

import ort_models as om
import pytest
from reference_check import check_against_reference

import bitloom
from bitloom.errors import BitloomError

#: QOperator models onnxruntime leaves with BatchNorm/ReLU/GlobalAveragePool in float between
#: DequantizeLinear and QuantizeLinear: the float values follow a rounding (the Conv's own
#: output quantizer), so their average has no exact integer form, and bitloom refuses naming
#: the GlobalAveragePool node and onnxruntime's remedy.
FLOAT_POOL = [f"{kind}_qoperator_{pc}" for kind in ("cnn", "concat", "depthwise", "avgpool")
              for pc in ("pt", "pc")]
#: the same with the BatchNormalizations before a residual Sum (ResNet's QOperator form)
FLOAT_SUM = [f"residual_pool_qoperator_{pc}" for pc in ("pt", "pc")]
MAPPED = [v for v in om.VARIANTS if v not in FLOAT_POOL + FLOAT_SUM]


@pytest.mark.parametrize("variant", MAPPED)
def test_ort_cnn_matches_onnxruntime(tmp_path, variant):
    path = om.quantized(variant, tmp_path / f"{variant}.onnx")
    kind = om.VARIANTS[variant][0]
    check_against_reference(path, "qdq", om.input_batch(kind, 16, seed=3))


@pytest.mark.parametrize("variant", FLOAT_POOL)
def test_ort_qoperator_float_pool_is_refused(tmp_path, variant):
    path = om.quantized(variant, tmp_path / f"{variant}.onnx")
    with pytest.raises(BitloomError, match=r"node 'n_GlobalAveragePool_\d+' "
                       r"\(GlobalAveragePool\): GlobalAveragePool of an unquantized tensor.*"
                       r"no exact integer form.*quant_pre_process"):
        bitloom.load(path)


@pytest.mark.parametrize("variant", FLOAT_SUM)
def test_ort_qoperator_float_sum_is_refused(tmp_path, variant):
    path = om.quantized(variant, tmp_path / f"{variant}.onnx")
    with pytest.raises(BitloomError, match=r"node 'n_Sum_\d+' \(Sum\): Add of two float "
                       r"tensors that are not quantized.*quant_pre_process"):
        bitloom.load(path)


@pytest.mark.verilator
def test_float_island_residual_add_and_pool_is_bit_exact_on_verilator(tmp_path):
    """ResNet-50's tail as onnxruntime's QDQ form leaves it: Sum of two branches of unequal
    scales, Relu and AveragePool in float between DequantizeLinear and QuantizeLinear. The
    Add outputs its exact integers (a shift-free scale requantizer), the pool sums them;
    64 frames with back-pressure, bit-exact against golden."""
    from bitloom.boards import load_board
    from bitloom.emit.design import emit_design
    from bitloom.ir import AddStreams, ScaleRequant
    from bitloom.plan import make_plan
    from bitloom.sim.verify import verify

    path = om.quantized("residual_pool_qdq_pt", tmp_path / "residual_pool.onnx")
    net = bitloom.load(path)
    add = next(ly for ly in net.layers if isinstance(ly, AddStreams))
    assert isinstance(add.requant, ScaleRequant) and add.requant.shift == 0
    assert 1 not in add.multipliers  # the branch scales are unequal
    design = emit_design(make_plan(net, 512), load_board("pynq-z2"), tmp_path / "d", path)
    result = verify(design, samples=64, pause=0.3)
    assert result.bit_exact, result.mismatch


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


@pytest.mark.verilator
def test_real_pixel_average_pool_is_bit_exact_on_verilator(tmp_path):
    """ShuffleNet's and Inception's padded AveragePool with count_include_pad=0, as
    onnxruntime writes it: each output pixel's sum is weighted by its position, 64 frames
    with back-pressure, bit-exact against golden."""
    from bitloom.boards import load_board
    from bitloom.emit.design import emit_design
    from bitloom.plan import make_plan
    from bitloom.sim.verify import verify

    path = om.quantized("avgpool_real_qdq_pt", tmp_path / "avgpool_real.onnx")
    net = bitloom.load(path)
    weighted = [ly for ly in net.layers if getattr(ly, "position_weighted", False)]
    assert [ly.row_weights for ly in weighted] == [(3, 2, 2, 2, 2, 2, 2, 3), (3, 2)]
    design = emit_design(make_plan(net, 512), load_board("pynq-z2"), tmp_path / "d", path)
    result = verify(design, samples=64, pause=0.3)
    assert result.bit_exact, result.mismatch


@pytest.mark.verilator
def test_sigmoid_table_unit_is_bit_exact_on_verilator(tmp_path):
    """A Sigmoid between DequantizeLinear and QuantizeLinear (QLinearSigmoid in the
    QOperator form) is a table unit: 64 frames with back-pressure, bit-exact against
    golden, two lanes reading one table."""
    from bitloom.boards import load_board
    from bitloom.emit.design import emit_design
    from bitloom.ir import Lookup
    from bitloom.plan import make_plan
    from bitloom.sim.verify import verify

    qop = bitloom.load(om.quantized("sigmoid_qoperator_pt", tmp_path / "qop.onnx"))
    assert any(isinstance(ly, Lookup) for ly in qop.layers)
    path = om.quantized("sigmoid_qdq_pt", tmp_path / "sigmoid.onnx")
    net = bitloom.load(path)
    table = next(ly for ly in net.layers if isinstance(ly, Lookup))
    assert table.function == "Sigmoid" and len(set(table.table.tolist())) > 20
    plan = make_plan(net, 128)
    assert next(lp for lp in plan.layers if lp.layer is table).fold.pe > 1
    design = emit_design(plan, load_board("pynq-z2"), tmp_path / "d", path)
    result = verify(design, samples=64, pause=0.3)
    assert result.bit_exact, result.mismatch


@pytest.mark.verilator
@pytest.mark.parametrize("lanes", [1, 4])
def test_channel_shuffle_is_bit_exact_on_verilator(tmp_path, lanes):
    """ShuffleNet's Reshape -> Transpose -> Reshape as onnxruntime's QDQ form writes it is a
    ChannelShuffle unit (banked ping-pong buffer): 64 frames with back-pressure, one lane
    and four, bit-exact against golden."""
    from bitloom.boards import load_board
    from bitloom.emit.design import emit_design
    from bitloom.ir import ChannelShuffle
    from bitloom.plan import make_plan
    from bitloom.sim.verify import verify

    path = om.quantized("shuffle_qdq_pt", tmp_path / "shuffle.onnx")
    net = bitloom.load(path)
    shuffle = next(ly for ly in net.layers if isinstance(ly, ChannelShuffle))
    assert shuffle.groups == 4
    plan = make_plan(net, 1024 // lanes)
    assert next(lp for lp in plan.layers if lp.layer is shuffle).fold.pe == lanes
    design = emit_design(plan, load_board("pynq-z2"), tmp_path / "d", path)
    result = verify(design, samples=64, pause=0.3)
    assert result.bit_exact, result.mismatch
