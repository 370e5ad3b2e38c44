"""bitloom: quantized ONNX -> verified FPGA accelerator.

``net = bitloom.load("model.onnx")`` reads a model; ``net.run(x, engine="golden"|"rtl")``
executes it; ``net.summary()`` describes its layers and formats.
"""

from __future__ import annotations

from pathlib import Path

import onnx

from bitloom.errors import BitloomError
from bitloom.ir import Network

__version__ = "0.1.0"


def load(source: str | Path | onnx.ModelProto) -> Network:
    """Read a quantized ONNX model into bitloom's IR (raises :class:`BitloomError`)."""
    from bitloom.frontend import load_model

    return load_model(source)


__all__ = ["BitloomError", "Network", "load"]
