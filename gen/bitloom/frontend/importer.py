"""The import driver: one walk over a normalised graph, one handler per node.

The graph is walked once in topological order while every tensor is tracked as one of a few
symbolic kinds (:mod:`bitloom.frontend.values`). Integer layers are created at
``MatMul``/``Gemm``/``Conv``; every float op after them is folded into a per-channel
:class:`~bitloom.ir.Chain`; the next quantizer turns that chain into exact thresholds. What
cannot be mapped exactly is refused, naming the node. The driver checks each node's
signature, picks its handler from :mod:`bitloom.frontend.registry` (or evaluates it when its
inputs are constants), lets element-wise handlers see through a transposed activation, and
at the end checks that the layers form one network from the input to the output.
"""

from __future__ import annotations

from dataclasses import replace
from fractions import Fraction

import numpy as np
import onnx
from onnx import numpy_helper

from bitloom.errors import BitloomError
from bitloom.formats import Format

# the handler modules register themselves in the registry when imported
from bitloom.frontend import (  # noqa: F401
    constants,
    elementwise,
    host,
    joins,
    layout,
    linear,
    qdq,
    qonnx,
    qoperator,
    spatial,
    tables,
)
from bitloom.frontend.constants import FOLD
from bitloom.frontend.context import ONNX_DOMAINS, ImportContext, source_op
from bitloom.frontend.loader import DeclaredInput, declared_input
from bitloom.frontend.passes import normalise
from bitloom.frontend.qdq import ONNX_FLOAT_FORMATS, ONNX_INT_FORMATS
from bitloom.frontend.registry import Handler, handler_for, host_handler_for, supported_ops
from bitloom.frontend.values import (
    Constant,
    Derived,
    FloatInput,
    HostResult,
    Stream,
    Value,
    channel_last,
    full_perm,
    untransposed,
)
from bitloom.ir import (
    CLIP_THEN_ROUND,
    ROUND_THEN_SHIFT,
    Affine,
    Chain,
    HostOp,
    InputQuantizer,
    Network,
    OutputDequantizer,
    Quantizer,
)
from bitloom.ir.elementwise import as_fractions

#: attribute types of the non-standard ops bitloom reads
ATTRIBUTE_TYPES = {
    "signed": onnx.AttributeProto.INT, "narrow": onnx.AttributeProto.INT,
    "rounding_mode": onnx.AttributeProto.STRING, "saturation": onnx.AttributeProto.INT,
    "has_inf": onnx.AttributeProto.INT, "has_nan": onnx.AttributeProto.INT,
    "transA": onnx.AttributeProto.INT, "transB": onnx.AttributeProto.INT,
    "alpha": onnx.AttributeProto.FLOAT,
    "out_dtype": onnx.AttributeProto.STRING, "out_scale": onnx.AttributeProto.FLOAT,
    "out_bias": onnx.AttributeProto.FLOAT, "data_layout": onnx.AttributeProto.STRING,
}


def read_initializer(tensor: onnx.TensorProto, source: str) -> np.ndarray:
    """An initializer as a numpy array; a malformed one (unknown element type, data that
    does not match its dims or type) is the user's file's fault."""
    try:
        return numpy_helper.to_array(tensor)
    except (ValueError, KeyError, TypeError, IndexError, OverflowError) as exc:
        detail = f"{type(exc).__name__}: {exc}" if isinstance(exc, KeyError) else str(exc)
        raise BitloomError(
            f"{source}: initializer {tensor.name!r} (element type {tensor.data_type}, dims "
            f"{list(tensor.dims)}) is malformed: {detail}. Its data does not match its type "
            "and shape; re-export the model.") from None


def _type_name(code: int) -> str:
    kinds = onnx.AttributeProto.AttributeType
    return kinds.Name(code) if code in kinds.values() else f"<unknown type {code}>"


class ModelImporter:
    """Reads one model (normalised by :mod:`bitloom.frontend.passes`) into a Network."""

    def __init__(self, model: onnx.ModelProto, source: str,
                 declared: DeclaredInput | None = None) -> None:
        self.declared = declared or declared_input(model)
        self.ctx = ImportContext(normalise(model), source)

    def run(self) -> Network:
        ctx = self.ctx
        graph = ctx.model.graph
        self.check_supported()
        initializers = {t.name for t in graph.initializer}
        for t in graph.initializer:
            ctx.values[t.name] = Constant(read_initializer(t, ctx.source), t.data_type)
        inputs = [i for i in graph.input if i.name not in initializers]
        if len(inputs) != 1 or len(graph.output) != 1:
            raise BitloomError(
                f"{ctx.source}: the model has {len(inputs)} inputs and {len(graph.output)} "
                "outputs; this version of bitloom compiles models with exactly one of each."
            )
        ctx.graph_input = inputs[0]
        shape = self._static_shape(ctx.graph_input)
        ctx.values[ctx.graph_input.name] = self._graph_input(ctx.graph_input, shape[1:])
        for node in graph.node:
            self._visit(node)
        return self._finish(graph.output[0].name)

    def check_supported(self) -> None:
        unsupported = [n for n in self.ctx.model.graph.node if handler_for(n) is None]
        if unsupported:
            listing = "; ".join(
                f"{n.name or '?'} ({n.op_type}{', domain ' + n.domain if n.domain else ''})"
                for n in unsupported
            )
            raise BitloomError(
                f"{self.ctx.source}: unsupported op(s): {listing}. bitloom maps "
                f"{', '.join(supported_ops())} and constant shape expressions; remove or "
                "replace the others."
            )

    # -- the graph input ------------------------------------------------------------------
    def _graph_input(self, info: onnx.ValueInfoProto, shape: tuple[int, ...]) -> Value:
        """A float graph input, or one that already holds quantized codes (e.g. uint8
        feeding a QLinearMatMul, float8 feeding a DequantizeLinear): the latter is the
        input quantizer's output with scale 1 and zero point 0, and the op that reads it
        states the codes' real scale and zero point (as QOperator ops and DequantizeLinear
        do for any quantized tensor). Float inputs of the model are then exactly the codes;
        the host's quantizer is the identity on them and saturates anything else."""
        elem = info.type.tensor_type.elem_type
        fmt = ONNX_INT_FORMATS.get(elem) or ONNX_FLOAT_FORMATS.get(elem)
        if self.declared is not None:
            return self._declared_input(info, shape, fmt)
        if fmt is None:
            return FloatInput(info.name, shape, shape)
        quantizer = Quantizer(fmt, 1.0, 0, "round", ROUND_THEN_SHIFT)
        self.ctx.input_quant = InputQuantizer(info.name, shape, shape, quantizer)
        return Stream(-1, fmt, np.array([1.0]), 0, shape, codes=True)

    def _declared_input(self, info: onnx.ValueInfoProto, shape: tuple[int, ...],
                        codes: Format | None) -> Stream:
        """A float input declared to arrive as codes of a format (``--input-format``): the
        host rounds each value to that grid, so the first layer reads integers."""
        if codes is not None:
            raise BitloomError(f"{self.ctx.source}: input {info.name!r} already holds "
                               f"{codes.name} codes; --input-format is for a float input.")
        declared = self.declared
        quantizer = Quantizer(declared.fmt, declared.scale, 0, "round", CLIP_THEN_ROUND)
        self.ctx.input_quant = InputQuantizer(info.name, shape, shape, quantizer)
        return Stream(-1, declared.fmt, np.array([declared.scale]), 0, shape)

    def _static_shape(self, info: onnx.ValueInfoProto) -> tuple[int, ...]:
        dims = info.type.tensor_type.shape.dim
        shape = []
        for i, d in enumerate(dims):
            if d.HasField("dim_value"):
                shape.append(d.dim_value)
            elif i == 0:
                shape.append(1)  # a symbolic batch axis
            else:
                raise BitloomError(
                    f"{self.ctx.source}: input {info.name!r} has a dynamic dimension {i} "
                    f"({d.dim_param or '?'}); export the model with fixed shapes."
                )
        if not shape:
            raise BitloomError(f"{self.ctx.source}: input {info.name!r} has no shape.")
        return tuple(shape)

    # -- one node -------------------------------------------------------------------------
    def _check_signature(self, node: onnx.NodeProto, handler: Handler) -> None:
        """Inputs the op requires are present and attributes have their declared types (per
        the ONNX schema of the model's opset; the handler's input count and a small table
        for QONNX/contrib ops)."""
        ctx = self.ctx
        schema = None
        if node.domain in ONNX_DOMAINS:
            try:
                schema = onnx.defs.get_schema(node.op_type, max(ctx.opset, 1), "")
            except onnx.defs.SchemaError:
                schema = None
        if not node.output or not node.output[0]:
            raise ctx.fail(node, "it has no output.")
        if schema is not None:
            single = onnx.defs.OpSchema.FormalParameterOption.Single
            variadic = onnx.defs.OpSchema.FormalParameterOption.Variadic
            for i, formal in enumerate(schema.inputs):
                if formal.option == single and (i >= len(node.input) or not node.input[i]):
                    raise ctx.fail(node, f"input {i} ({formal.name}) is missing; "
                                   f"{node.op_type} requires it.")
            if schema.inputs and schema.inputs[-1].option == variadic:
                if len(node.input) < schema.min_input:
                    raise ctx.fail(node, f"it has {len(node.input)} inputs; {node.op_type} "
                                   f"needs at least {schema.min_input}.")
            elif len(node.input) > len(schema.inputs):
                raise ctx.fail(node, f"it has {len(node.input)} inputs; {node.op_type} takes "
                               f"at most {len(schema.inputs)}.")
            types = {name: int(a.type.value) for name, a in schema.attributes.items()}
        else:
            for i in range(handler.inputs):
                if i >= len(node.input) or not node.input[i]:
                    raise ctx.fail(node, f"input {i} is missing; {node.op_type} requires "
                                   f"{handler.inputs} inputs.")
            types = ATTRIBUTE_TYPES
        for a in node.attribute:
            want = types.get(a.name)
            if want is not None and a.type != onnx.AttributeProto.UNDEFINED and a.type != want:
                raise ctx.fail(node, f"attribute {a.name!r} is of type {_type_name(a.type)}, "
                               f"the op expects {_type_name(want)}.")

    def _visit(self, node: onnx.NodeProto) -> None:
        ctx = self.ctx
        handler = handler_for(node)
        self._check_signature(node, handler)
        ins = [ctx.values.get(name) if name else None for name in node.input]
        for name, v in zip(node.input, ins, strict=True):
            if name and v is None:
                raise ctx.fail(node, f"input {name!r} is produced by no node we know.")
        op = source_op(node)
        if node.domain in ONNX_DOMAINS and handler.folds(ins) and all(
                isinstance(v, Constant) or v is None for v in ins):
            handler = FOLD
        elif handler.constant_only:
            raise ctx.fail(node, f"{op} on a non-constant tensor is not supported yet.")
        if isinstance(ins[0] if ins else None, HostResult):
            handler = host_handler_for(node) or handler
        if not handler.reads_host and any(isinstance(v, HostResult) for v in ins):
            raise ctx.fail(node, "only Softmax/ArgMax-like ops may follow a host-side output "
                           "op; bitloom runs them on the host at the graph output.")
        perms = {v.perm for v in ins if isinstance(v, (Stream, Derived)) and v.perm}
        if perms and handler.layout != "aware":
            out = self._through_transpose(node, handler, ins, perms)
        else:
            out = handler.run(ctx, node, ins)
        ctx.values[node.output[0]] = out
        if isinstance(out, (Stream, Derived)) and out.producer >= 0:
            names = ctx.layer_nodes[out.producer]
            if names[-1] != (node.name or op):
                names.append(node.name or op)

    def _through_transpose(self, node: onnx.NodeProto, handler: Handler,
                           ins: list[Value | None], perms: set[tuple[int, ...]]) -> Value:
        """An element-wise op on a transposed activation: computed on the untransposed
        one (where the hardware order is), the result transposed back."""
        ctx, op = self.ctx, source_op(node)
        perm = next(iter(perms))
        scalars = all(v is None or (isinstance(v, Constant) and v.value.size == 1)
                      for v in ins[1:])
        if not (handler.layout == "elementwise" or (handler.layout == "per_tensor" and
                                                    scalars)) or len(perms) > 1:
            raise ctx.fail(node, f"{op} of a transposed activation (perm "
                           f"{full_perm(perm)}) is not supported; bitloom maps "
                           "Transposes that cancel around element-wise ops and "
                           "MultiThreshold, that precede a Flatten/Reshape into "
                           "MatMul/Gemm, or that sit at the graph output.")
        out = handler.run(ctx, node, [self._untransposed(node, v, perm) for v in ins])
        if not isinstance(out, (Stream, Derived)):
            raise ctx.fail(node, f"{op} of a transposed activation (perm "
                           f"{full_perm(perm)}) gives a tensor bitloom cannot keep "
                           "transposed; transpose it back first.")
        return replace(out, shape=tuple(out.shape[a] for a in perm), perm=perm)

    def _untransposed(self, node: onnx.NodeProto, v: Value | None,
                      perm: tuple[int, ...]) -> Value | None:
        """``v`` as an element-wise op on the untransposed activation sees it: that activation
        itself, or a constant transposed back so it broadcasts alike."""
        if isinstance(v, (Stream, Derived)):
            return replace(v, shape=untransposed(v.shape, perm), perm=None)
        if not isinstance(v, Constant) or v.value.size == 1:
            return v
        rank = len(perm) + 1
        if v.value.ndim > rank:
            raise self.ctx.fail(node, f"constant of shape {list(v.value.shape)} does not "
                                "broadcast against the transposed activation of rank "
                                f"{rank}.")
        value = v.value.reshape((1,) * (rank - v.value.ndim) + v.value.shape)
        inverse = [perm.index(a) for a in range(len(perm))]
        return replace(v, value=value.transpose(full_perm(tuple(inverse))))

    # -- the end ------------------------------------------------------------------------------
    def _finish(self, output_name: str) -> Network:
        ctx = self.ctx
        out = ctx.values.get(output_name)
        host_ops: list[HostOp] = []
        if isinstance(out, HostResult):
            out, host_ops = out.base, out.ops
        if isinstance(out, (Stream, Derived)) and out.perm:  # transposed back on the host
            host_ops = [HostOp("Transpose", perm=full_perm(out.perm)), *host_ops]
            out = replace(out, shape=untransposed(out.shape, out.perm), perm=None)
        if ctx.input_quant is None or not (
                ctx.layers or (isinstance(out, (Stream, Derived)) and out.producer == -1)):
            raise BitloomError(
                f"{ctx.source}: found no quantized layer. bitloom needs a quantized model "
                "(QONNX Quant nodes on the input and the weights); export one with Brevitas."
            )
        last = len(ctx.layers) - 1
        if isinstance(out, Stream) and out.producer == last and out.order is None:
            out = self._dequantized_output(out)
        elif not isinstance(out, Derived) or out.producer != last or out.max_pools:
            raise BitloomError(
                f"{ctx.source}: the output {output_name!r} must be the result of the last "
                "layer (MatMul/Gemm/Conv/pool/Add, with bias, scales or ReLU, or quantized); "
                "other outputs are not supported."
            )
        self._check_connected()
        for i, layer in enumerate(ctx.layers):
            layer.source_nodes = ctx.layer_nodes[i]
        for name, value in ctx.values.items():  # the last in graph order: after any reopen
            if isinstance(value, Stream) and value.codes and value.producer >= 0 and \
                    value.order is None and not value.perm and \
                    channel_last(value.shape) == ctx.layers[value.producer].out_shape:
                ctx.layers[value.producer].onnx_tensor = name
        return Network(
            ctx.source, ctx.input_quant, ctx.layers,
            OutputDequantizer(output_name, out.shape, out.chain, host_ops),
        )

    def _dequantized_output(self, out: Stream) -> Derived:
        """A quantized output: the host dequantizes ``(value - zero_point) * scale``, or
        returns the codes where the graph output is of the quantized type itself."""
        elem = self.ctx.model.graph.output[0].type.tensor_type.elem_type
        codes = elem not in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16,
                             onnx.TensorProto.DOUBLE, onnx.TensorProto.BFLOAT16,
                             onnx.TensorProto.UNDEFINED)
        s = Fraction(1) if codes else as_fractions(out.scale, 1)[0]
        zero = 0 if codes else out.zero_point
        step = s / 2 ** out.fmt.grid().frac_bits
        n = channel_last(out.shape)[-1] if out.shape else 1
        return Derived(out.producer, Chain(n).then(Affine([step] * n, [-s * zero] * n)),
                       out.shape)

    def _check_connected(self) -> None:
        """Every layer reaches the output, and one read by another layer is quantized."""
        ctx = self.ctx
        last = len(ctx.layers) - 1
        for i, layer in enumerate(ctx.layers):
            if i != last and i not in ctx.consumed:
                raise BitloomError(
                    f"{ctx.source}: layer {i} ({', '.join(ctx.layer_nodes[i])}) does not "
                    "reach the graph output; remove the dead branch."
                )
            if i in ctx.consumed and getattr(layer, "acc_fmt", None) is not None and \
                    layer.requant is None and i not in ctx.float_joins:
                raise BitloomError(
                    f"{ctx.source}: layer {i} ({', '.join(ctx.layer_nodes[i])}) feeds "
                    "another layer without a Quant in between; quantize its output."
                )
