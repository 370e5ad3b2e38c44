"""A declared input format (``--input-format``/``--input-scale``, ``bitloom.load(...,
input_format=, input_scale=)``): for a model whose first compute layer reads the float input,
as MobileNet's first convolution reads the image."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest

import bitloom
from bitloom.errors import BitloomError

from qonnx_models import random_cnn, run_qonnx


def conv_on_the_float_input(seed: int = 0) -> onnx.ModelProto:
    """``random_cnn`` without its input quantizer (int4, scale 1/8): the first convolution
    reads the float input directly."""
    model = random_cnn(seed, shape=(2, 7, 7))
    graph = model.graph
    first = next(n for n in graph.node if n.op_type == "Quant" and n.input[0] == "inp")
    for node in graph.node:
        node.input[:] = ["inp" if i == first.output[0] else i for i in node.input]
    graph.node.remove(first)
    return model


def on_the_grid(count: int, seed: int = 0) -> np.ndarray:
    """Inputs that are int4 codes times 1/8, the declared format's grid, corners included."""
    x = np.random.default_rng(seed).integers(-8, 8, size=(count, 2, 7, 7))
    x[0], x[1] = -8, 7
    return (x / 8).astype(np.float32)


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bitloom.cli", *args], capture_output=True,
                          text=True, timeout=300)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("declared") / "conv_first.onnx"
    onnx.save(conv_on_the_float_input(), str(path))
    return path


def test_without_a_declaration_the_float_input_is_refused_naming_the_option(model_path):
    proc = cli("inspect", str(model_path))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "not quantized" in proc.stderr and "--input-format" in proc.stderr, proc.stderr


def test_declared_golden_equals_qonnx_on_the_grid(model_path):
    """Power-of-two scales keep qonnx's float32 arithmetic exact: equal to the bit."""
    net = bitloom.load(model_path, input_format="int4", input_scale="1/8")
    x = on_the_grid(16)
    np.testing.assert_array_equal(net.run(x), run_qonnx(onnx.load(str(model_path)), x))
    assert net.input.quantizer.scale == 0.125 and net.input.fmt.name == "int4"


def test_run_and_inspect_take_the_declaration(model_path, tmp_path):
    x = on_the_grid(8, seed=1)
    np.save(tmp_path / "x.npy", x)
    proc = cli("run", str(model_path), "--input", str(tmp_path / "x.npy"), "--output",
               str(tmp_path / "y.npy"), "--input-format", "int4", "--input-scale", "0.125")
    assert proc.returncode == 0, proc.stderr
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"),
                                  run_qonnx(onnx.load(str(model_path)), x))
    proc = cli("inspect", str(model_path), "--input-format", "int4", "--input-scale", "1/8")
    assert proc.returncode == 0 and "int4" in proc.stdout, proc.stderr


def test_the_design_folder_keeps_the_declaration(model_path, tmp_path):
    """``open_design`` (so ``verify``, ``synth``, ``build``) reads the declaration back from
    the folder's copy of the model."""
    design = bitloom.compile(model_path, "pynq-z2", out=tmp_path / "d", input_format="int4",
                             input_scale="1/8")
    again = bitloom.open_design(tmp_path / "d")
    assert again.net.input.quantizer == design.net.input.quantizer
    assert json.loads((tmp_path / "d" / "report.json").read_text())["io"]["input"][
        "format"] == "int4"
    x = on_the_grid(4, seed=2)
    np.testing.assert_array_equal(again.net.run(x), design.net.run(x))
    assert bitloom.load(tmp_path / "d" / "model.onnx").input.quantizer.scale == 0.125


@pytest.mark.verilator
def test_declared_input_hardware_is_bit_exact(model_path, tmp_path):
    bitloom.compile(model_path, "pynq-z2", out=tmp_path / "d", input_format="int4",
                    input_scale="1/8")
    result = bitloom.open_design(tmp_path / "d").verify(samples=16)
    assert result.bit_exact, result.mismatch
    assert abs(result.cycle_error) <= 0.05, result.as_dict()


@pytest.mark.parametrize("args, needle", [
    (("--input-format", "int4", "--input-scale", "0"), "positive number or a fraction"),
    (("--input-format", "int4", "--input-scale", "1/0"), "positive number or a fraction"),
    (("--input-format", "int4", "--input-scale", "abc"), "positive number or a fraction"),
    (("--input-format", "e4m3"), "integer format"),
    (("--input-format", "int99"), "unknown format"),
    (("--input-scale", "1/8"), "needs --input-format"),
])
def test_bad_declarations_are_refused(model_path, args, needle):
    proc = cli("inspect", str(model_path), *args)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert needle in proc.stderr, proc.stderr


def test_a_declaration_on_an_integer_input_is_refused(tmp_path):
    model = conv_on_the_float_input()
    model.graph.input[0].type.tensor_type.elem_type = onnx.TensorProto.INT8
    with pytest.raises(BitloomError, match="already holds int8 codes"):
        bitloom.load(model, input_format="int4", input_scale="1/8")
