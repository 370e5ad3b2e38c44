"""The command line: useful output, and exit 2 with a clear message for bad input."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnx
import pytest

from qonnx_models import random_mlp


def bitloom(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bitloom.cli", *args], capture_output=True,
                          text=True, timeout=300)


def assert_user_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    for needle in needles:
        assert needle in proc.stderr, proc.stderr


def test_inspect_lists_layers_and_formats(example_model):
    proc = bitloom("inspect", str(example_model))
    assert proc.returncode == 0, proc.stderr
    for text in ("mvu0", "64 -> 32", "uint4", "int4n", "int14", "total MACs per frame: 3392"):
        assert text in proc.stdout


def test_run_golden_writes_outputs(example_model, example_net, digits, tmp_path):
    x, _ = digits
    np.save(tmp_path / "x.npy", x[:20])
    proc = bitloom("run", str(example_model), "--input", str(tmp_path / "x.npy"),
                   "--output", str(tmp_path / "y.npy"))
    assert proc.returncode == 0, proc.stderr
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), example_net.run(x[:20]))


def test_not_onnx(tmp_path):
    path = tmp_path / "notes.onnx"
    path.write_text("this is not a model\n")
    assert_user_error(bitloom("inspect", str(path)), str(path), "not a readable ONNX model")


def test_truncated_model(example_model, tmp_path):
    path = tmp_path / "cut.onnx"
    path.write_bytes(example_model.read_bytes()[:5000])
    assert_user_error(bitloom("inspect", str(path)), str(path), "truncated")


def test_missing_file(tmp_path):
    assert_user_error(bitloom("inspect", str(tmp_path / "nope.onnx")), "no such file")


def test_unsupported_op_is_named(tmp_path):
    model = random_mlp(2)
    relu = next(n for n in model.graph.node if n.op_type == "Relu")
    relu.op_type, relu.name = "Softplus", "my_softplus"
    path = tmp_path / "softplus.onnx"
    onnx.save(model, str(path))
    assert_user_error(bitloom("inspect", str(path)), "my_softplus", "Softplus")


@pytest.mark.parametrize("content", ["shape", "text"])
def test_bad_run_input(example_model, tmp_path, content):
    inp = tmp_path / "x.npy"
    if content == "shape":
        np.save(inp, np.zeros((3, 64), dtype=np.float32))
    else:
        inp.write_text("1,2,3")
    proc = bitloom("run", str(example_model), "--input", str(inp), "--output",
                   str(tmp_path / "y.npy"))
    assert_user_error(proc, str(inp) if content == "text" else "shape")


def test_unknown_board_lists_the_known_ones(example_model, tmp_path):
    proc = bitloom("compile", str(example_model), "--board", "de10-nano", "--out",
                   str(tmp_path / "d"))
    assert_user_error(proc, "de10-nano", "pynq-z2")


def test_verify_needs_a_design_folder(tmp_path):
    assert_user_error(bitloom("verify", str(tmp_path)), "not a bitloom design folder")


def test_impossible_target_fps(example_model, tmp_path):
    proc = bitloom("compile", str(example_model), "--board", "pynq-z2", "--out",
                   str(tmp_path / "d"), "--target-fps", "1e12")
    assert_user_error(proc, "frames/s")


def test_model_too_large_for_the_board_is_refused_naming_the_resource(tmp_path):
    path = tmp_path / "big.onnx"
    onnx.save(random_mlp(0, sizes=(1024, 1024, 10), w_bits=8, act_bits=8, in_bits=8), str(path))
    proc = bitloom("compile", str(path), "--board", "pynq-z2", "--out", str(tmp_path / "d"),
                   "--max-utilization", "1")
    assert_user_error(proc, "does not fit", "LUT above 1%", "--max-utilization")
    for bad in ("0", "101"):
        proc = bitloom("compile", str(path), "--board", "pynq-z2", "--out",
                       str(tmp_path / "d"), "--max-utilization", bad)
        assert_user_error(proc, "--max-utilization", "percentage")


def test_weights_beyond_block_ram_stream_from_ddr_at_its_rate(tmp_path):
    """8 Mbit of weights do not fit the PYNQ-Z2's 5 Mbit of block RAM, nor its LUTs: they
    stream from DDR, and the frame rate is what the weights' 64-bit HP port delivers (half of
    the DDR's 2.1 GB/s would allow more)."""
    import json

    path = tmp_path / "big.onnx"
    onnx.save(random_mlp(0, sizes=(1024, 1024, 10), w_bits=8, act_bits=8, in_bits=8), str(path))
    out = tmp_path / "d"
    proc = bitloom("compile", str(path), "--board", "pynq-z2", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "streamed weights: 1.05 MB per frame from DDR" in " ".join(proc.stdout.split())
    report = json.loads((out / "report.json").read_text())
    assert report["layers"][0]["weight_memory"]["style"] == "streamed"
    ddr = report["weights_from_ddr"]
    assert ddr["bits_per_frame"] == 1024 * 1024 * 8
    assert ddr["cycles_per_frame"] > -(-1024 * 1024 * 8 // (0.5 * 2.1e9 * 8 / 100e6))
    assert ddr["cycles_per_frame"] == 1024 * 1024 * 8 // 64 > report["cycles_per_frame"]
    assert report["frames_per_second"] == pytest.approx(100e6 / ddr["cycles_per_frame"])


def test_a_larger_model_is_folded_to_fit(tmp_path):
    import json

    path = tmp_path / "mid.onnx"
    onnx.save(random_mlp(1, sizes=(256, 256, 10), w_bits=8, act_bits=8, in_bits=8), str(path))
    out = tmp_path / "d"
    proc = bitloom("compile", str(path), "--board", "pynq-z2", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["layers"][0]["pe"] * report["layers"][0]["simd"] < 256 * 256  # folded
    # a log (not a terminal) shows each step, and the layer table whole, not cut to 80 columns
    for text in ("planning 2 layers for pynq-z2", "elaborated layer 1/2 (mvu0)", "requant",
                 "cycles"):
        assert text in proc.stdout, proc.stdout
    assert "…" not in proc.stdout
    for resource, ceiling in (("LUT", 0.7 * 53200), ("BRAM36", 0.8 * 140)):
        assert report["totals"]["estimated"][resource] <= ceiling
