"""Frontends: quantized ONNX dialects -> :class:`~bitloom.ir.Network`.

One importer walks the graph; each dialect contributes its quantization ops as a mixin
(QONNX ``Quant``/``BipolarQuant``; ONNX ``QuantizeLinear``/``DequantizeLinear``;
onnxruntime's QOperator ``QGemm``/``QLinearMatMul``/``MatMulInteger``); the CNN layers
(Conv, pooling, residual Add, Concat) are one more mixin.
"""

from __future__ import annotations

from pathlib import Path

import onnx

from bitloom.frontend.importer import Importer
from bitloom.frontend.loader import read_model
from bitloom.frontend.qdq import QdqOps
from bitloom.frontend.qonnx import QonnxOps
from bitloom.frontend.qoperator import QOperatorOps
from bitloom.frontend.spatial import SpatialOps
from bitloom.ir import Network


class ModelImporter(QonnxOps, QOperatorOps, QdqOps, SpatialOps, Importer):
    """The importer with every dialect bitloom reads."""


def load_model(source: str | Path | onnx.ModelProto) -> Network:
    model, name = read_model(source)
    return ModelImporter(model, name).run()


__all__ = ["ModelImporter", "load_model", "read_model"]
