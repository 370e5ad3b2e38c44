"""CNNs quantized by onnxruntime's ``quantize_static`` (QDQ and QOperator; per-tensor and
per-channel; BatchNorm kept or folded by ``quant_pre_process``) against onnxruntime."""

from __future__ import annotations

import numpy as np
import ort_models as om
import pytest
from reference_check import check_against_reference

import bitloom
from bitloom.errors import BitloomError

MAPPED = list(om.VARIANTS)
#: frames of the Verilator checks of the newer pieces: several in flight, with back-pressure
#: (the bench's hardware fuzzer runs them at random foldings and boards too)
FRAMES = 16


def exact_scales(net) -> list[str]:
    """``--requantizer`` specs giving every layer that has an exact scale unit that unit:
    a model with 255 threshold compares a lane takes Verilator minutes to build."""
    from bitloom.ir import Thresholds
    from bitloom.plan.requantizers import scale_fit

    return [f"{ly.name}=scale" for ly in net.layers
            if isinstance(getattr(ly, "requant", None), Thresholds)
            and not isinstance(scale_fit(ly.requant, ly.acc_fmt), str)]


@pytest.mark.parametrize("variant", MAPPED)
def test_ort_cnn_matches_onnxruntime(tmp_path, variant):
    path = om.quantized(variant, tmp_path / f"{variant}.onnx")
    kind = om.VARIANTS[variant][0]
    check_against_reference(path, "qdq", om.input_batch(kind, 16, seed=3))


def test_float_joins_carry_the_skip_in_fixed_point(tmp_path):
    """ResNet's QOperator form: each branch's BatchNormalization stays after its
    DequantizeLinear and the skip runs on in float through the next Sum. The joins
    multiply per channel, the first ReLU'd sum travels on as a wide accumulator (a
    thresholding layer quantizes it for the next block), and the second join reads it
    exactly (a power-of-two multiplier)."""
    from bitloom.ir import AddStreams, ScaleRequant, Thresholding
    from bitloom.ir.scale_requant import fit_scale

    net = bitloom.load(om.quantized("residual_chain_qoperator_pc", tmp_path / "chain.onnx"))
    first, second = (ly for ly in net.layers if isinstance(ly, AddStreams))
    assert first.per_channel and first.relu and first.requant is None
    assert 30 < first.acc_fmt.bits <= 48
    readers = [ly for ly in net.layers if net.layers.index(first) in ly.inputs]
    assert second in readers and any(isinstance(ly, Thresholding) for ly in readers)
    wide = second.multipliers[second.inputs.index(net.layers.index(first))]
    assert all(k & (k - 1) == 0 for k in np.atleast_1d(wide))  # powers of two: exact
    quantizer = next(ly for ly in readers if isinstance(ly, Thresholding))
    # the half-unit offset keeps ties off the grid: a multiply-and-shift exists (ties to even
    # at evenly spaced points would leave only 255 wide thresholds a channel)
    assert isinstance(fit_scale(quantizer.requant, quantizer.acc_fmt), ScaleRequant)


@pytest.mark.verilator
def test_float_islands_tables_and_shuffles_are_bit_exact_on_verilator(tmp_path):
    """Every new piece of the zoo CNNs in one design, as onnxruntime's QDQ form writes them,
    64 frames with back-pressure, bit-exact against golden (a mismatch names its layer):
    ResNet-50's float island (Sum of two branches of unequal scales, Relu, AveragePool: the
    Add outputs its exact integers), ShuffleNet's and Inception's AveragePool with
    count_include_pad=0 (position weights), a Sigmoid table unit, ShuffleNet's channel
    shuffle at four lanes, and DenseNet's BatchNormalization after a Concat."""
    from bitloom.boards import load_board
    from bitloom.emit.design import emit_design
    from bitloom.ir import (
        AddStreams,
        ChannelShuffle,
        Concat,
        Lookup,
        ScaleRequant,
        SumPool,
        Thresholding,
    )
    from bitloom.plan import make_plan
    from bitloom.plan.requantizers import with_requantizers
    from bitloom.sim.verify import verify

    path = om.quantized("pieces_qdq_pt", tmp_path / "pieces.onnx")
    net = bitloom.load(path)
    add = next(ly for ly in net.layers if isinstance(ly, AddStreams))
    assert isinstance(add.requant, ScaleRequant) and add.requant.shift == 0
    assert 1 not in add.multipliers  # the branch scales are unequal
    pool = net.layers[net.layers.index(add) + 1]
    assert isinstance(pool, SumPool) and pool.row_weights == (3, 2, 2, 2, 2, 2, 2, 3)
    table = next(ly for ly in net.layers if isinstance(ly, Lookup))
    assert table.function == "Sigmoid" and len(set(table.table.tolist())) > 20
    concat = next(i for i, ly in enumerate(net.layers) if isinstance(ly, Concat))
    assert isinstance(net.layers[concat + 1], Thresholding)
    plan = with_requantizers(make_plan(net, 256))  # as compile chooses them
    lanes = {type(lp.layer): lp.fold.pe for lp in plan.layers}
    assert lanes[ChannelShuffle] == 4 and lanes[Lookup] > 1 and lanes[AddStreams] > 1
    design = emit_design(plan, load_board("pynq-z2"), tmp_path / "d", path)
    result = verify(design, samples=64, pause=0.3)
    assert result.bit_exact, result.mismatch


@pytest.mark.verilator
@pytest.mark.parametrize("variant", ["residual_chain_qoperator_pc", "cnn_qoperator_pc"])
def test_float_joins_are_bit_exact_on_verilator(tmp_path, variant):
    """The chain of float joins (per-channel multipliers and bias from a ROM, a ReLU, the
    wide accumulator read by the next join and by a thresholding layer), and a pool of a
    float output after its quantizer (BatchNormalization, ReLU, GlobalAveragePool in
    fixed point), FRAMES frames with back-pressure, bit-exact against golden, every
    layer that has an exact scale unit using it (thresholds on a wide accumulator:
    test_hw_cnn; 255 compares a lane make a model that takes Verilator minutes to build)."""
    from bitloom.boards import load_board
    from bitloom.emit.design import emit_design
    from bitloom.plan import make_plan
    from bitloom.plan.requantizers import with_requantizers
    from bitloom.sim.verify import verify

    path = om.quantized(variant, tmp_path / "m.onnx")
    net = bitloom.load(path)
    plan = with_requantizers(make_plan(net, 64), exact_scales(net))
    design = emit_design(plan, load_board("pynq-z2"), tmp_path / "design", path)
    result = verify(design, samples=FRAMES, pause=0.3)
    assert result.bit_exact, result.mismatch


@pytest.mark.verilator
def test_squeeze_excitation_is_bit_exact_on_verilator(tmp_path):
    """A map times a Sigmoid of its own channel means (onnxruntime's QDQ form of a
    squeeze-excitation block): the ChannelScale unit loads the vector, then scales the map
    that waited a frame in its FIFO; FRAMES frames with back-pressure, bit-exact, and the
    measured cycles per frame as planned."""
    from bitloom.boards import load_board
    from bitloom.emit.design import emit_design
    from bitloom.ir import ChannelScale
    from bitloom.plan import make_plan
    from bitloom.plan.requantizers import with_requantizers
    from bitloom.sim.verify import verify

    path = om.quantized("se_qdq_pc", tmp_path / "se.onnx")
    net = bitloom.load(path)
    assert sum(isinstance(ly, ChannelScale) for ly in net.layers) == 1
    plan = with_requantizers(make_plan(net, 256), exact_scales(net))
    design = emit_design(plan, load_board("pynq-z2"), tmp_path / "design", path)
    result = verify(design, samples=FRAMES, pause=0.3)
    assert result.bit_exact, result.mismatch
    assert result.measured_cycles_per_frame <= 1.05 * result.expected_cycles_per_frame


def test_inspect_describes_islands_tables_and_shuffles(tmp_path, capsys):
    """bitloom inspect on the model of every new piece: exact integers, the table, the
    shuffle, each described (it raised on the island's requantizer before)."""
    from bitloom.cli import main

    path = om.quantized("pieces_qdq_pt", tmp_path / "pieces.onnx")
    assert main(["inspect", str(path)]) == 0
    text = capsys.readouterr().out
    assert "no shift: exact" in text and "table of 256 (Sigmoid)" in text
    assert "ChannelShuffle" in text and "Lookup" in text


def test_batchnorm_after_a_quantizer_is_a_cheaper_layer_of_its_own(tmp_path, monkeypatch):
    """onnxruntime's QDQ form keeps Conv -> Q -> DQ -> BatchNormalization -> Q: two
    roundings in a row. Composed into the Conv, they need 255 thresholds a channel on the
    wide accumulator (no single scale is exact); as a thresholding layer of its own after the
    Conv's quantizer, each rounding is one small requantizer. The split design must be the
    cheaper one (exactness against onnxruntime: test_ort_cnn_matches_onnxruntime)."""
    from bitloom.boards import load_board
    from bitloom.frontend import quantize
    from bitloom.ir import MatrixVector, Thresholding
    from bitloom.plan.cost import estimate_plan
    from bitloom.plan.folding import make_plan
    from bitloom.plan.requantizers import with_requantizers

    path = om.quantized("cnn_qdq_pc", tmp_path / "cnn.onnx")
    board = load_board("pynq-z2")

    def cost(net) -> float:
        est = estimate_plan(with_requantizers(make_plan(net, 4096), board=board))
        return est["LUT"] + 380 * est.get("BRAM36", 0) + 242 * est.get("DSP", 0)

    split = bitloom.load(path)
    convs = [n for n, ly in enumerate(split.layers) if isinstance(ly, MatrixVector)]
    after = [ly for ly in split.layers if ly.inputs and ly.inputs[0] in convs[:2]]
    assert [type(ly) for ly in after] == [Thresholding, Thresholding]
    monkeypatch.setattr(quantize, "MAX_COMPOSED_BITS", 16)
    composed = bitloom.load(path)
    assert len(composed.layers) == len(split.layers) - 2
    assert cost(split) < cost(composed), (cost(split), cost(composed))


def test_per_channel_quantizer_after_a_float_channel_shuffle_is_refused(tmp_path):
    """The shuffle of a float output becomes a ChannelShuffle layer after the quantizer only
    when one scale serves every channel: a per-channel QuantizeLinear there is refused by
    name (as per-channel activation quantizers are in QDQ models generally)."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    path = om.quantized("shuffle_bn_qoperator_pt", tmp_path / "shuffle.onnx")
    model = onnx.load(path)
    graph = model.graph
    shuffled = next(n for n in graph.node if n.op_type == "Reshape" and any(
        n.output[0] in m.input for m in graph.node if m.op_type == "QuantizeLinear"))
    q = next(m for m in graph.node if m.op_type == "QuantizeLinear"
             and m.input[0] == shuffled.output[0])
    inits = {i.name: i for i in graph.initializer}
    scale = float(numpy_helper.to_array(inits[q.input[1]]))
    zero = numpy_helper.to_array(inits[q.input[2]])
    for name, value in ((q.input[1], np.linspace(scale, 2 * scale, 16, dtype=np.float32)),
                        (q.input[2], np.full(16, zero, dtype=zero.dtype))):
        inits[name].CopyFrom(numpy_helper.from_array(value, name))
    q.attribute.append(onnx.helper.make_attribute("axis", 1))
    bad = tmp_path / "per_channel.onnx"
    onnx.save(model, bad)
    with pytest.raises(BitloomError, match=rf"node '{q.name}' \(QuantizeLinear\): per-axis "
                       r"\(axis 1, 16 scales\) quantization of an activation"):
        bitloom.load(bad)
