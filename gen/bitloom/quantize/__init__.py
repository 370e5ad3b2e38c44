"""Post-training quantization of float ONNX models into QONNX (``bitloom quantize``).

``quantize_model(model, weights, acts, calib)`` returns an ordinary QONNX model (``Quant`` for
integers and fixed point, ``FloatQuant`` for minifloats) that qonnx's executor runs and
bitloom compiles; ``add_arguments``/``command`` are the CLI subcommand. See docs/quantize.md.
"""

from bitloom.quantize.cli import add_arguments, command
from bitloom.quantize.core import Quantized, quantize, quantize_model

__all__ = ["Quantized", "add_arguments", "command", "quantize", "quantize_model"]
