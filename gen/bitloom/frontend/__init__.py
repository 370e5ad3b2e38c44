"""Frontends: quantized ONNX dialects -> :class:`~bitloom.ir.Network`.

A model is read (:mod:`.loader`), normalised by small graph rewrites (:mod:`.passes`) and
walked once by :class:`ModelImporter`, which hands each node to the handler registered for
its ``(domain, op_type)`` (:mod:`.registry`).
Handlers are grouped by theme: QONNX quantizers (:mod:`.qonnx`), ONNX Q/DQ (:mod:`.qdq`),
onnxruntime's QOperator ops (:mod:`.qoperator`), weighted layers (:mod:`.linear`), pooling
(:mod:`.spatial`), residual Add and Concat (:mod:`.joins`), element-wise float ops
(:mod:`.elementwise`), layout ops (:mod:`.layout`), host-side output ops (:mod:`.host`) and
constant expressions (:mod:`.constants`).
"""

from __future__ import annotations

from pathlib import Path

import onnx

from bitloom.frontend.importer import ModelImporter
from bitloom.frontend.loader import DeclaredInput, read_model
from bitloom.ir import Network


def load_model(source: str | Path | onnx.ModelProto,
               declared: DeclaredInput | None = None) -> Network:
    """``source`` as a Network; a float input arrives as ``declared`` says, or as the
    model's metadata declares (see :class:`DeclaredInput`)."""
    model, name = read_model(source)
    return ModelImporter(model, name, declared).run()


__all__ = ["DeclaredInput", "ModelImporter", "load_model", "read_model"]
