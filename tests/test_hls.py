"""The HLS backend: generated C++ kernels, C-simulated with g++, against the golden model.

Every model here is built in the test (QONNX with power-of-two scales), so nothing depends
on files outside the repository; compiled test benches are cached by source hash, so a
rerun costs only the simulations.
"""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest

import bitloom
from bitloom.emit.hls import emit_hls, run_vitis_hls, source_files, write_sources
from bitloom.emit.hls_csim import CXXFLAGS, ap_types_dir, build, compile_command, hls_values

from qonnx_models import Builder, minifloat_mlp, random_mlp

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="needs g++")

FRAMES = 64


# -- CNNs built in QONNX ---------------------------------------------------------------------
class Cnn(Builder):
    """A QONNX builder of small CNNs whose activations are ints or one minifloat format."""

    def __init__(self, seed: int, minifloat: tuple[int, int] | None = None,
                 w_bits: int = 4) -> None:
        super().__init__()
        self.rng = np.random.default_rng(seed)
        self.minifloat, self.w_bits = minifloat, w_bits

    def act(self, x: str, signed: bool = False, scale: float = 2.0**-2) -> str:
        if self.minifloat:
            return self.float_quant(x, scale, *self.minifloat)
        return self.quant(x, scale, 4, signed)

    def conv(self, x: str, cin: int, cout: int, k: int = 3, stride: int = 1, pad: int = 1,
             group: int = 1, relu: bool = True, signed_out: bool = False) -> str:
        w = self.rng.normal(size=(cout, cin // group, k, k)).astype(np.float32)
        if self.minifloat:
            wq = self.float_quant(self.const(w), 2.0**-1, *self.minifloat)
        else:
            wq = self.quant(self.const(w * 2), 2.0**-1, self.w_bits, True, narrow=True)
        y = self.node("Conv", [x, wq], kernel_shape=[k, k], strides=[stride, stride],
                      pads=[pad] * 4, group=group)
        bias = self.rng.integers(-8, 8, size=(1, cout, 1, 1)).astype(np.float32) / 8
        y = self.node("Add", [y, self.const(bias)])
        if relu:
            y = self.node("Relu", [y])
        return self.act(y, signed=signed_out, scale=2.0 ** -int(self.rng.integers(0, 2)))

    def head(self, x: str, channels: int, classes: int = 5):
        x = self.act(self.node("GlobalAveragePool", [x]))
        x = self.node("Flatten", [x], axis=1)
        w = self.quant(self.const(self.rng.normal(size=(channels, classes)) * 2), 2.0**-1,
                       self.w_bits, True, narrow=True)
        return self.node("MatMul", [x, w]), classes


def cnn_model(kind: str, seed: int = 0, minifloat: tuple[int, int] | None = None):
    """``cnn``: conv 3x3 (pad 1) -> maxpool 2 -> conv 3x3 stride 2 (pad 1) -> global average
    pool -> dense; ``residual``: a two-conv branch added to its input; ``depthwise``: a
    depthwise 3x3 then a pointwise conv; ``concat``: two convs concatenated, then maxpool."""
    b = Cnn(seed, minifloat)
    cin = 2 if kind == "depthwise" else 1
    x = b.act("inp", signed=True)
    if kind == "cnn":
        x = b.conv(x, cin, 4)
        x = b.node("MaxPool", [x], kernel_shape=[2, 2], strides=[2, 2])
        x = b.conv(x, 4, 6, stride=2)
        channels = 6
    elif kind == "residual":
        x = b.conv(x, cin, 4)
        y = b.conv(b.conv(x, 4, 4), 4, 4, relu=False, signed_out=True)
        shared = 2.0**-1
        x = b.act(b.node("Relu", [b.node("Add", [b.act(x, True, shared),
                                                  b.act(y, True, shared)])]))
        channels = 4
    elif kind == "depthwise":
        x = b.conv(x, cin, cin, group=cin)
        x = b.conv(x, cin, 6, k=1, pad=0)
        channels = 6
    elif kind == "concat":
        left = b.node("Relu", [b.node("Conv", [x, b.quant(b.const(
            b.rng.normal(size=(3, cin, 3, 3)) * 2), 0.5, 4, True, narrow=True)],
            kernel_shape=[3, 3], pads=[1, 1, 1, 1])])
        right = b.node("Relu", [b.node("Conv", [x, b.quant(b.const(
            b.rng.normal(size=(2, cin, 1, 1)) * 2), 0.5, 4, True, narrow=True)],
            kernel_shape=[1, 1])])
        x = b.node("Concat", [b.act(left), b.act(right)], axis=1)
        x = b.node("MaxPool", [x], kernel_shape=[2, 2], strides=[2, 2])
        channels = 5
    else:
        raise ValueError(kind)
    y, classes = b.head(x, channels)
    return b.model("inp", [1, cin, 8, 8], y, [1, classes])


# -- helpers ---------------------------------------------------------------------------------
def assert_hls_equals_golden(net, x: np.ndarray) -> None:
    """Bit-exact on the last layer's integers and on the float outputs."""
    values = net.input.apply(x)
    golden = net.trace_values(values)[-1]
    got = hls_values(net, values)
    assert got.shape == golden.shape
    np.testing.assert_array_equal(got, golden)
    np.testing.assert_array_equal(net.run(x, engine="hls"), net.run(x))


def batch(net, scale: float = 1.5, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(scale=scale, size=(FRAMES, *net.input.shape)).astype(np.float32)


# -- acceptance ------------------------------------------------------------------------------
@pytest.mark.parametrize("variant", [
    {"in_bits": 4, "w_bits": 4, "act_bits": 4},
    {"in_bits": 8, "in_signed": True, "w_bits": 8, "act_bits": 8, "act_signed": True,
     "clip": True, "rounding": "HALF_UP"},
    {"in_bits": 2, "w_bits": 2, "act_bits": 2, "narrow": True, "negative_scales": True},
    {"bipolar_weights": True, "act_bits": 3},
], ids=["int4", "int8", "int2", "bipolar"])
def test_int_mlp(variant):
    net = bitloom.load(random_mlp(5, sizes=(16, 12, 8, 6), **variant))
    assert_hls_equals_golden(net, batch(net))


@pytest.mark.parametrize(("exp_bits", "man_bits"), [(4, 3), (3, 2), (2, 1), (5, 2)],
                         ids=["e4m3", "e3m2", "e2m1", "e5m2"])
def test_minifloat_mlp(exp_bits, man_bits):
    """Exact Kulisch accumulation of decoded minifloat products, thresholds back; E5M2's
    accumulators (71 bits) and thresholds go beyond 64 bits."""
    net = bitloom.load(minifloat_mlp(2, exp_bits, man_bits, sizes=(16, 10, 6)))
    assert_hls_equals_golden(net, batch(net, scale=2.0))


@pytest.mark.parametrize("kind", ["cnn", "residual", "depthwise", "concat"])
def test_int_cnn(kind):
    """Conv 3x3 stride 1 and 2 with padding, maxpool, global average pool, residual add,
    depthwise conv and concat, each in the layer kinds the frontend makes of them."""
    net = bitloom.load(cnn_model(kind))
    kinds = {ly.kind for ly in net.layers}
    expected = {"cnn": {"Conv", "MaxPool", "AveragePool"}, "residual": {"Add"},
                "depthwise": {"DepthwiseConv"}, "concat": {"Concat", "MaxPool"}}[kind]
    assert expected <= kinds, kinds
    assert_hls_equals_golden(net, batch(net))


def test_minifloat_cnn():
    """An E4M3 CNN: minifloat windows (codes on the streams), maxpool on decoded values."""
    net = bitloom.load(cnn_model("cnn", seed=1, minifloat=(4, 3)))
    assert_hls_equals_golden(net, batch(net))


# -- the generated files ---------------------------------------------------------------------
def test_engine_builds_reject_warnings():
    """Every kernel the tests above compiled passed -Wall -Wextra -Werror, with ap_types as a
    system include (so only their own headers' warnings are theirs)."""
    assert {"-Wall", "-Wextra", "-Werror"} <= set(CXXFLAGS)
    cmd = compile_command("g++", ap_types_dir(), ap_types_dir() / "tb")
    assert cmd[cmd.index("-isystem") + 1] == str(ap_types_dir())


def test_emit_hls_folder_and_test_bench(tmp_path):
    """emit_hls writes a self-contained folder whose test bench checks golden vectors, and a
    Vitis HLS Tcl that runs the full flow; without Vitis the scripts are left ready."""
    net = bitloom.load(cnn_model("concat"))
    hls_dir = emit_hls(net, tmp_path, frames=8)
    for name in ("kernel.cpp", "kernel.h", "params.h", "tb.cpp", "bitloom.h", "inputs.txt",
                 "expected.txt", "run_hls.tcl"):
        assert (hls_dir / name).is_file(), name
    tcl = (hls_dir / "run_hls.tcl").read_text()
    for command in ("open_project", "set_top bitloom_top", "add_files", "csim_design",
                    "csynth_design", "cosim_design", "export_design -format ip_catalog"):
        assert command in tcl
    binary = build(source_files(hls_dir), hls_dir)  # the same kernel as test_int_cnn's
    ok = subprocess.run([str(binary), "inputs.txt", "out.txt", "expected.txt"], cwd=hls_dir,
                        capture_output=True, text=True, check=False)
    assert ok.returncode == 0 and "8 frames match" in ok.stdout, ok.stderr
    expected = (hls_dir / "expected.txt").read_text().splitlines()
    expected[3] = " ".join(str(int(v) + 1) for v in expected[3].split())
    (hls_dir / "wrong.txt").write_text("\n".join(expected) + "\n")
    bad = subprocess.run([str(binary), "inputs.txt", "out.txt", "wrong.txt"], cwd=hls_dir,
                         capture_output=True, text=True, check=False)
    assert bad.returncode == 1 and "frame 3 differs" in bad.stderr
    if shutil.which("vitis_hls") is None:
        assert "vitis_hls is not on PATH" in run_vitis_hls(hls_dir)


def test_plan_sets_the_folding(tmp_path):
    """With a plan (as `compile --backend hls` passes), matrix-vector units fold like it."""
    from bitloom.plan import make_plan

    net = bitloom.load(random_mlp(5, sizes=(16, 12, 8, 6)))
    plan = make_plan(net, 16)
    write_sources(net, tmp_path, plan)
    kernel = (tmp_path / "kernel.cpp").read_text()
    for lp in plan.layers:
        k, n = lp.layer.in_features, lp.layer.out_features
        assert f"matrix_vector<{k}, {n}, {lp.fold.pe}, {lp.fold.simd}," in kernel


def test_unsupported_format_is_a_user_error():
    from bitloom.emit.hls import fmt_type
    from bitloom.errors import BitloomError
    from bitloom.formats import Block, Minifloat

    with pytest.raises(BitloomError, match="HLS backend does not support"):
        fmt_type(Block(Minifloat(4, 3)))


@pytest.mark.parametrize("model", ["int8-mlp", "e4m3-mlp", "e5m2-mlp",
                                   pytest.param("uint16-ort-mlp", marks=pytest.mark.slow),
                                   "residual-cnn"])
def test_scale_requantizers_equal_golden(model, tmp_path):
    """Every layer through the plan's scale requantizer (multiply, add, shift; minifloat
    levels by binary search, ties to even), against the golden thresholds."""
    from float_models import float_mlp, ort_quantize

    from bitloom.ir import ScaleRequant
    from bitloom.plan import make_plan
    from bitloom.plan.requantizers import scale_fit, with_requantizers

    if model == "int8-mlp":
        source = random_mlp(5, sizes=(16, 12, 8, 6), in_bits=8, in_signed=True, w_bits=8,
                            act_bits=8, act_signed=True, clip=True, rounding="HALF_UP")
    elif model in ("e4m3-mlp", "e5m2-mlp"):
        exp_bits, man_bits = int(model[1]), int(model[3])
        source = minifloat_mlp(2, exp_bits, man_bits, sizes=(16, 10, 6))
    elif model == "residual-cnn":
        source = cnn_model("residual")
    else:
        calib = np.random.default_rng(0).normal(size=(64, 16)).astype(np.float32)
        source = ort_quantize(float_mlp(0, (16, 32, 24, 8)), calib, tmp_path / "u16.onnx",
                              per_channel=True, activation="QUInt16")
    net = bitloom.load(source)
    plan = make_plan(net, 64)
    exact = [f"{lp.layer.name}=scale" for lp in plan.layers if lp.layer.requant is not None
             and isinstance(scale_fit(lp.layer.requant, lp.layer.acc_fmt), ScaleRequant)]
    plan = with_requantizers(plan, exact)
    scaled = [lp for lp in plan.layers if lp.scale is not None]
    assert scaled, "no layer took a scale requantizer"
    values = net.input.apply(batch(net, scale=2.0))
    np.testing.assert_array_equal(hls_values(net, values, plan=plan),
                                  net.trace_values(values)[-1])


def test_real_pixel_average_pool(tmp_path):
    """AveragePool with count_include_pad=0 (onnxruntime's QDQ form of ShuffleNet's): the
    position-weighted sum step equals golden."""
    import ort_models as om

    net = bitloom.load(om.quantized("avgpool_real_qdq_pc", tmp_path / "m.onnx"))
    assert any(getattr(ly, "position_weighted", False) for ly in net.layers)
    assert_hls_equals_golden(net, om.input_batch("avgpool_real", FRAMES, seed=4))


def test_sigmoid_table_unit(tmp_path):
    """A Sigmoid table unit (onnxruntime's QDQ form) equals golden in the HLS kernel."""
    import ort_models as om

    from bitloom.ir import Lookup

    net = bitloom.load(om.quantized("sigmoid_qdq_pc", tmp_path / "m.onnx"))
    assert any(isinstance(ly, Lookup) for ly in net.layers)
    assert_hls_equals_golden(net, om.input_batch("sigmoid", FRAMES, seed=4))


def test_channel_shuffle(tmp_path):
    """ShuffleNet's channel shuffle (onnxruntime's QDQ form) equals golden in HLS."""
    import ort_models as om

    from bitloom.ir import ChannelShuffle

    net = bitloom.load(om.quantized("shuffle_qdq_pt", tmp_path / "m.onnx"))
    assert any(isinstance(ly, ChannelShuffle) for ly in net.layers)
    assert_hls_equals_golden(net, om.input_batch("shuffle", FRAMES, seed=4))


@pytest.mark.parametrize("variant", ["se_qdq_pc", "residual_chain_qoperator_pc"])
def test_squeeze_excitation_and_float_joins(tmp_path, variant):
    """A map times a vector computed from it (ChannelScale), and float joins (per-channel
    multipliers and bias, a ReLU, the wide accumulator read by the next join), equal golden
    in HLS."""
    import ort_models as om

    net = bitloom.load(om.quantized(variant, tmp_path / "m.onnx"))
    kind = om.VARIANTS[variant][0]
    assert_hls_equals_golden(net, om.input_batch(kind, FRAMES, seed=4))
