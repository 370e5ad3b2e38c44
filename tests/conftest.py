"""Shared fixtures: the bundled example and the qonnx model builders."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).parent))

EXAMPLE = ROOT / "examples" / "mlp_digits.onnx"


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
