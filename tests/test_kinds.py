"""The layer-kind registry: every IR layer class has exactly one entry, and a layer class
without one is refused by name instead of falling through a stage."""

from __future__ import annotations

import typing
from dataclasses import dataclass

import pytest

from bitloom.errors import BitloomError
from bitloom.ir import AnyLayer, Thresholding
from bitloom.ir.layers import Layer
from bitloom.plan.kind import LayerKind
from bitloom.plan.registry import KINDS, kind_of, register


def test_every_ir_layer_class_has_one_registered_kind():
    assert set(typing.get_args(AnyLayer)) == set(KINDS)
    assert all(isinstance(kind, LayerKind) and kind.layer_type is cls
               for cls, kind in KINDS.items())


@dataclass
class Unknown(Layer):
    kind = "unknown"


def test_an_unregistered_layer_class_is_refused_by_name():
    with pytest.raises(BitloomError, match=r"layer u1: no layer kind is registered for Unknown"):
        kind_of(Unknown("u1", (-1,), (4,)))


def test_a_class_registers_once():
    class Again(LayerKind):
        layer_type = Thresholding

    with pytest.raises(ValueError, match="registered twice"):
        register(Again())
