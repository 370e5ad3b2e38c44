"""The golden model: exact integer execution of the IR, the reference for every backend."""

from __future__ import annotations

import numpy as np

from bitloom.ir import Network


def run_golden(net: Network, x: np.ndarray) -> np.ndarray:
    """Float32 outputs for a batch, as the ONNX model would return them."""
    return net.output.apply(net.trace(x)[-1])


__all__ = ["run_golden"]
