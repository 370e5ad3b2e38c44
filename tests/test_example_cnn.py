"""The bundled example CNN (examples/cnn_digits.onnx): loads, classifies the 450 test digits
as examples/README.md states, agrees with qonnx's executor, and `bitloom inspect` shows it.
Fast: golden model and qonnx only, no Verilator."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
CNN = ROOT / "examples" / "cnn_digits.onnx"
#: golden accuracy on the 450 test digits stated in examples/README.md (437/450)
STATED_ACCURACY = 0.9711
MARGIN = 0.005


@pytest.fixture(scope="module")
def cnn_net():
    import bitloom

    return bitloom.load(CNN)


@pytest.fixture(scope="module")
def golden(cnn_net, digits) -> np.ndarray:
    return cnn_net.run(digits[0])


def test_single_file_model():
    import onnx

    model = onnx.load(str(CNN), load_external_data=False)
    assert not (ROOT / "examples" / "cnn_digits.onnx.data").exists()
    assert all(init.data_location != onnx.TensorProto.EXTERNAL
               for init in model.graph.initializer)


def test_golden_accuracy(golden, digits):
    _, y = digits
    assert golden.shape == (450, 10) and golden.dtype == np.float32
    accuracy = float((golden.argmax(1) == y).mean())
    assert accuracy >= STATED_ACCURACY - MARGIN, accuracy


def test_argmax_matches_qonnx(golden, digits):
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx

    x, _ = digits
    model = ModelWrapper(str(CNN))
    inp, out = model.graph.input[0].name, model.graph.output[0].name
    reference = np.concatenate([execute_onnx(model, {inp: image[None]})[out] for image in x])
    same = golden.argmax(1) == reference.argmax(1)
    assert same.all(), f"argmax differs on test images {np.flatnonzero(~same).tolist()}"
    np.testing.assert_allclose(golden, reference, rtol=0, atol=1e-4)


def test_inspect_lists_conv_and_pool_layers():
    proc = subprocess.run([sys.executable, "-m", "bitloom.cli", "inspect", str(CNN)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    for op in ("Conv", "MaxPool", "AveragePool"):
        assert op in proc.stdout, proc.stdout
