"""The layer-kind registry: one :class:`~bitloom.plan.kind.LayerKind` entry per IR layer
class, filled when bitloom is imported (:mod:`bitloom.kinds`), asked by every stage through
:func:`kind_of` instead of switching on layer classes."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bitloom.errors import BitloomError

if TYPE_CHECKING:
    from bitloom.ir import AnyLayer
    from bitloom.plan.kind import LayerKind

KINDS: dict[type, LayerKind] = {}


def register(kind: LayerKind) -> LayerKind:
    """Make ``kind`` the entry of its layer class (one entry per class)."""
    if kind.layer_type in KINDS:
        raise ValueError(f"{kind.layer_type.__name__} is registered twice")
    KINDS[kind.layer_type] = kind
    return kind


def kind_of(layer: AnyLayer) -> LayerKind:
    """The registry entry of ``layer``'s class."""
    kind = KINDS.get(type(layer))
    if kind is None:
        raise BitloomError(
            f"layer {layer.name}: no layer kind is registered for {type(layer).__name__}; "
            "a layer kind needs a module in bitloom/kinds/ (docs/architecture.md).")
    return kind
