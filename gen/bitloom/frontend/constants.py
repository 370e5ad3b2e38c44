"""Constant expressions: ``Shape`` and standard ops whose inputs are all constants.

Exporters compute reshape targets and the like from shapes and small initializers; those
are evaluated with ONNX's reference implementation as the import reaches them (the
importer redirects any standard-domain node of constant inputs here). ``Shape`` reads the
shape the importer tracks, so it works on activations too.
"""

from __future__ import annotations

import numpy as np
import onnx

from bitloom.frontend.context import ONNX_DOMAINS, ImportContext
from bitloom.frontend.registry import ONNX, Handler, handles
from bitloom.frontend.values import Constant, Derived, FloatInput, QuantConstant, Stream, Value


@handles(ONNX, "Shape", layout="aware", listed=False)
# accepted only where they compute constants (shapes, folded initializers); Concat, Cast,
# Transpose, Squeeze and Unsqueeze of constants are folded too, by the importer's rule
@handles(ONNX, "Constant", "Gather", "Slice", "ConstantOfShape", "Range", layout="aware",
         constant_only=True, listed=False)
def fold_constant(ctx: ImportContext, node: onnx.NodeProto, ins: list[Value | None]) -> Constant:
    """The value of ``node``, whose inputs are constants (or, for Shape, of known shape)."""
    if node.op_type == "Shape":
        v = ins[0]
        shape = (1, *v.shape) if isinstance(v, (Stream, Derived)) else None
        if isinstance(v, FloatInput):
            shape = (1, *v.flat_shape)
        elif isinstance(v, Constant):
            shape = v.value.shape
        elif isinstance(v, QuantConstant):
            shape = v.values.shape
        return Constant(np.array(shape, dtype=np.int64))
    from onnx.reference import ReferenceEvaluator  # slow to import: only when needed

    feeds = {name: v.value for name, v in zip(node.input, ins, strict=True) if name}
    graph = onnx.helper.make_graph(
        [node], "fold",
        [onnx.helper.make_tensor_value_info(n, onnx.TensorProto.UNDEFINED, None)
         for n in feeds],
        [onnx.helper.make_tensor_value_info(node.output[0], onnx.TensorProto.UNDEFINED,
                                            None)],
    )
    opsets = [o for o in ctx.model.opset_import if o.domain in ONNX_DOMAINS]
    folder = onnx.helper.make_model(graph, opset_imports=opsets or None)
    try:
        (result,) = ReferenceEvaluator(folder).run(None, feeds)[:1]
    except Exception as exc:
        raise ctx.fail(node, f"cannot fold this constant expression ({exc}).") from None
    return Constant(np.asarray(result))


#: how the importer runs a node of constant inputs
FOLD = Handler(fold_constant, layout="aware")
