"""Graph normalisation before the import: small ``ModelProto -> ModelProto`` rewrites.

Each pass turns a construct into an equivalent one the handlers already map, so no handler
needs a special case for it (as qonnx's transformations clean a graph before FINN reads
it). A pass returns its input unchanged when there is nothing to rewrite, and a copy
otherwise: the caller's model is never modified.
"""

from __future__ import annotations

from collections.abc import Callable

import onnx

from bitloom.frontend.context import ONNX_DOMAINS, SOURCE_OP


def sum_to_add(model: onnx.ModelProto) -> onnx.ModelProto:
    """``Sum`` of one input is ``Identity``, of two an ``Add`` (same name, inputs, outputs).
    Sums of more inputs stay, for the Sum handler to refuse: a chain of Adds would need a
    quantizer between them."""
    if not any(n.op_type == "Sum" and n.domain in ONNX_DOMAINS and 1 <= len(n.input) <= 2
               for n in model.graph.node):
        return model
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for node in out.graph.node:
        if node.op_type == "Sum" and node.domain in ONNX_DOMAINS and 1 <= len(node.input) <= 2:
            rewritten(node, "Identity" if len(node.input) == 1 else "Add")
    return out


def rewritten(node: onnx.NodeProto, op_type: str) -> None:
    """Make ``node`` an ``op_type``, remembering the op the model has (for messages)."""
    if not any(p.key == SOURCE_OP for p in node.metadata_props):
        node.metadata_props.add(key=SOURCE_OP, value=node.op_type)
    node.op_type = op_type


#: the passes, in order
PASSES: tuple[Callable[[onnx.ModelProto], onnx.ModelProto], ...] = (sum_to_add,)


def normalise(model: onnx.ModelProto) -> onnx.ModelProto:
    for rewrite in PASSES:
        model = rewrite(model)
    return model
