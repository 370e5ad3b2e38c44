"""Frontends: quantized ONNX dialects -> :class:`~bitloom.ir.Network`."""

from bitloom.frontend.loader import read_model
from bitloom.frontend.qonnx import load_qonnx

__all__ = ["load_qonnx", "read_model"]
