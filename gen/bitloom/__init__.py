"""bitloom: quantized ONNX -> verified FPGA accelerator.

``net = bitloom.load("model.onnx")`` reads a model; ``net.run(x, engine="golden"|"rtl")``
executes it; ``net.summary()`` describes its layers and formats.
``design = bitloom.compile("model.onnx", "pynq-z2", out="build/d")`` plans and emits the
accelerator; ``design.verify()``, ``.synth()``, ``.build()`` and ``.run(x)`` go on from there.
"""

from __future__ import annotations

from pathlib import Path

import onnx

from bitloom import (
    engines,  # noqa: F401  (registers the engines of Network.run)
    kinds,  # noqa: F401  (registers every layer kind with the planner)
)
from bitloom.errors import BitloomError
from bitloom.frontend import load_model
from bitloom.ir import Network
from bitloom.pipeline import Design, compile, declare, open_design
from bitloom.version import __version__


def load(source: str | Path | onnx.ModelProto, input_format: str | None = None,
         input_scale: str | float | None = None) -> Network:
    """Read a quantized ONNX model into bitloom's IR (raises :class:`BitloomError`).

    A model whose first compute layer reads its float input (MobileNet's first convolution
    reads the image) needs to be told how inputs arrive: ``input_format="uint8",
    input_scale="1/255"`` says each value is an 8-bit code times 1/255, which the host
    rounds to (as images already are)."""
    return load_model(source, declare(input_format, input_scale))


__all__ = ["BitloomError", "Design", "Network", "__version__", "compile", "load", "open_design"]
