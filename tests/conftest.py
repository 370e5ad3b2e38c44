"""Shared fixtures: the bundled example and the qonnx model builders."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).parent))

EXAMPLE = ROOT / "examples" / "mlp_digits.onnx"

#: modules whose tests take seconds each without Verilator or Yosys (exports, reference
#: executors, Amaranth simulations of whole units, the zoo, a browser): left out of
#: ``make test-fast``, run by ``make test``
SLOW_MODULES = {
    "test_brevitas_export", "test_build_flows", "test_dse", "test_example_cnn",
    "test_fifo_depths", "test_finn_zoo", "test_frontend", "test_frontend_cnn",
    "test_frontend_multithreshold", "test_frontend_ort_cnn", "test_fuzz", "test_hw_cnn",
    "test_hw_fuzz", "test_hw_units", "test_onnx_node_tests", "test_pe", "test_pe_dsp",
    "test_pipeline", "test_quantize", "test_report_html", "test_threshold_derivation",
    "test_zoo_models",
}
#: single slow tests in otherwise quick modules
SLOW_TESTS = {"test_cli.py::test_a_larger_model_is_folded_to_fit"}


def pytest_collection_modifyitems(items) -> None:
    for item in items:
        module = item.path.stem
        if module in SLOW_MODULES or f"{item.path.name}::{item.originalname}" in SLOW_TESTS:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def example_model() -> Path:
    return EXAMPLE


@pytest.fixture(scope="session")
def digits() -> tuple[np.ndarray, np.ndarray]:
    data = np.load(ROOT / "examples" / "digits_test.npz")
    return data["x"], data["y"]


@pytest.fixture(scope="session")
def example_net():
    import bitloom

    return bitloom.load(EXAMPLE)
