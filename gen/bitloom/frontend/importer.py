"""The dialect-independent part of reading a quantized ONNX graph into the IR.

The graph is walked once in topological order while every tensor is tracked as one of a few
symbolic kinds (:class:`FloatInput`, :class:`Constant`, :class:`QuantConstant`,
:class:`Stream`, :class:`Derived`). Integer layers are created at ``MatMul``/``Gemm``;
every float op after them is folded into a per-channel :class:`~bitloom.ir.Chain`; the next
quantizer turns that chain into exact thresholds. What cannot be mapped exactly is refused,
naming the node. Dialects (QONNX, ONNX Q/DQ, QOperator) add their quantization ops as
mixins with an ``OPS`` table (see :mod:`bitloom.frontend.qonnx`).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import ClassVar

import numpy as np
import onnx
from onnx import numpy_helper

from bitloom.errors import BitloomError, BitloomWarning
from bitloom.formats import Format, Int, accumulator_grid
from bitloom.ir import (
    ROUND_THEN_SHIFT,
    Affine,
    AnyLayer,
    Chain,
    Clamp,
    HostOp,
    InputQuantizer,
    MatrixVector,
    MaxPool,
    Network,
    OutputDequantizer,
    Quantizer,
    Thresholding,
    Thresholds,
    Window,
    derive_thresholds,
)
from bitloom.ir.elementwise import Requantize, as_fractions

ONNX_DOMAINS = ("", "ai.onnx")
#: op type -> handler method, for ops of the standard domain every dialect shares
CORE_OPS = {
    "MatMul": "_matmul", "Gemm": "_matmul",
    "Add": "_arith", "Sub": "_arith", "Mul": "_arith", "Div": "_arith",
    "Relu": "_clamp", "Clip": "_clamp",
    "Reshape": "_layout", "Flatten": "_layout", "Squeeze": "_layout", "Unsqueeze": "_layout",
    "Identity": "_pass_through", "Dropout": "_pass_through",
    "Transpose": "_transpose",
    "Cast": "_cast",
    "Sum": "_sum",
    "Softmax": "_host_op", "LogSoftmax": "_host_op", "ArgMax": "_host_op",
    "ArgMin": "_host_op", "TopK": "_host_op",
}
#: handlers that read a transposed activation (``perm``) themselves
LAYOUT_AWARE = {"_transpose", "_layout", "_multithreshold", "_fold_constant", "_host_op",
                "_host_qdq"}
#: handlers indifferent to the layout of their one activation: they see the untransposed
#: tensor (constants transposed alike) and their result gets the transpose back
ELEMENTWISE = {"_clamp", "_pass_through", "_cast", "_arith", "_sum", "_qonnx_quant",
               "_qonnx_float_quant"}
#: handlers that are element-wise when their parameters (inputs after the first) are scalars
PER_TENSOR = {"_quantize_linear", "_dequantize_linear"}
#: standard-domain ops that are never constant-folded: they turn constants into weights
NOT_FOLDED = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"}
#: ops accepted only where they compute constants (shapes, folded initializers)
CONSTANT_OPS = {"Constant", "Shape", "Gather", "Unsqueeze", "Squeeze", "Concat", "Cast",
                "Slice", "ConstantOfShape", "Range", "Transpose"}
#: inputs every (non-standard) op bitloom reads requires; standard ops use their ONNX schema
REQUIRED_INPUTS = {"Quant": 4, "IntQuant": 4, "BipolarQuant": 2, "FloatQuant": 2, "Trunc": 2,
                   "QGemm": 6, "MultiThreshold": 2}
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


@dataclass
class Constant:
    value: np.ndarray
    onnx_type: int | None = None  # the initializer's element type, where known
    code_range: tuple[int, int] | None = None  # integer codes clipped to this range (QCDQ)
    fmt: Format | None = None  # grid integers of this format (weights a QuantizeLinear made)


@dataclass
class QuantConstant:
    """Quantized constant (weights): ``real = scale * fmt.from_grid(values)``."""

    values: np.ndarray  # grid integers of fmt
    scale: np.ndarray
    fmt: Format

    def dequantized(self) -> np.ndarray:
        """The float32 tensor the model computes from it (ONNX rounds once, in float32)."""
        return (self.fmt.from_grid(self.values) * self.scale.astype(np.float64)).astype(
            np.float32)


@dataclass
class FloatInput:
    """The float graph input, possibly transposed (``perm``, per-sample axes) and then
    reshaped (to ``flat_shape``) on the host before it is quantized."""

    name: str
    shape: tuple[int, ...]
    flat_shape: tuple[int, ...]
    perm: tuple[int, ...] | None = None


@dataclass
class Stream:
    """Grid integers flowing in hardware: ``real = scale * (fmt.from_grid(n) - zero_point)``.

    ``shape`` is the per-sample ONNX shape (``(C, H, W)`` for a feature map, which the
    hardware streams channel-last). A feature map flattened to a vector keeps the hardware's
    element order; ``order[i]`` is then the ONNX index of hardware element ``i``. A
    transposed feature map keeps its hardware order too: ``perm`` (per-sample axes) says
    which view of the ``(C, H, W)`` tensor the ONNX graph holds, and ``shape`` is that view.
    """

    producer: int  # index of the producing layer, -1 for the input quantizer
    fmt: Format
    scale: np.ndarray
    zero_point: int
    shape: tuple[int, ...]
    order: np.ndarray | None = None
    perm: tuple[int, ...] | None = None
    codes: bool = False  # an integer-typed ONNX tensor (QuantizeLinear's output), not reals


@dataclass
class Derived:
    """A float tensor that is a per-channel monotone function of a layer's accumulator.

    ``max_pools`` are MaxPools applied to it before its quantizer: max commutes with every
    non-decreasing function, so they become MaxPool layers right after the quantizer.
    """

    producer: int
    chain: Chain
    shape: tuple[int, ...]
    max_pools: tuple[Window, ...] = ()
    perm: tuple[int, ...] | None = None  # as in Stream


@dataclass
class HostResult:
    """Float ops at the graph output (Softmax, ArgMax) that the host computes."""

    base: Stream | Derived
    ops: list[HostOp]


@dataclass
class PendingConcat:
    """A Concat of branches quantized differently: each branch is moved onto the quantizer
    that follows (a thresholding layer where its scale differs), then concatenated."""

    parts: list[Stream]
    shape: tuple[int, ...]


Value = Constant | QuantConstant | FloatInput | Stream | Derived | HostResult | PendingConcat


@dataclass
class HostQuantize(HostOp):
    """ONNX QuantizeLinear (round half to even of ``x / scale`` in float32, plus the zero
    point, saturated to ``[lo, hi]``) or DequantizeLinear (``(q - zero_point) * scale``)
    that the host applies after a host-side op; codes are returned as float32 values."""

    scale: float = 1.0
    zero_point: int = 0
    lo: int = 0
    hi: int = 255

    def apply(self, y: np.ndarray) -> np.ndarray:
        y = np.asarray(y, dtype=np.float32)
        s = np.float32(self.scale)
        if self.op_type == "QuantizeLinear":
            q = np.rint(y / s).astype(np.float64) + self.zero_point
            return np.clip(q, self.lo, self.hi).astype(np.float32)
        return ((y.astype(np.float64) - self.zero_point).astype(np.float32) * s).astype(
            np.float32)

    def describe(self) -> str:
        return f"{self.op_type}(scale={self.scale:g}, zero_point={self.zero_point})"


def untransposed(shape: tuple[int, ...], perm: tuple[int, ...] | None) -> tuple[int, ...]:
    """The per-sample shape before a per-sample transpose ``perm`` gave ``shape``."""
    if not perm:
        return shape
    out = [0] * len(shape)
    for i, axis in enumerate(perm):
        out[axis] = shape[i]
    return tuple(out)


def full_perm(perm: tuple[int, ...]) -> list[int]:
    """A per-sample permutation as the ONNX ``perm`` attribute (batch axis first)."""
    return [0, *(a + 1 for a in perm)]


def host_shape(base: Stream | Derived, ops: list[HostOp]) -> list[int]:
    """The shape (batch axis 1) of ``base`` after the host-side ``ops``."""
    shape = [1, *base.shape]
    for op in ops:
        if (op.op_type in ("ArgMax", "ArgMin") and op.keepdims) or op.op_type == "TopK":
            shape[op.axis] = op.k if op.op_type == "TopK" else 1
        elif op.op_type in ("ArgMax", "ArgMin"):
            del shape[op.axis]
        elif op.op_type == "Transpose":
            shape = [shape[a] for a in op.perm]
    return shape


def channel_last(shape: tuple[int, ...]) -> tuple[int, ...]:
    """The hardware (stream) shape of a per-sample ONNX shape."""
    return (*shape[1:], shape[0]) if len(shape) == 3 else shape


def attributes(node: onnx.NodeProto) -> dict:
    """Node attributes as Python values (strings decoded)."""
    out = {}
    for a in node.attribute:
        v = onnx.helper.get_attribute_value(a)
        out[a.name] = v.decode() if isinstance(v, bytes) else v
    return out


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


def _node_label(node: onnx.NodeProto) -> str:
    return f"node {node.name!r} ({node.op_type})" if node.name else f"a {node.op_type} node"


class Importer:
    """One pass over a graph; see the module docstring. Dialect mixins add ``OPS``
    (``{(domain_set, op_type): method_name}``) for their quantization ops."""

    OPS: ClassVar[dict[tuple[frozenset[str], str], str]] = {}

    def __init__(self, model: onnx.ModelProto, source: str) -> None:
        self.model = model
        self.source = source
        self.values: dict[str, Value] = {}
        self.layers: list[AnyLayer] = []
        self.input_quant: InputQuantizer | None = None
        self.layer_nodes: list[list[str]] = []
        self.consumed: set[int] = set()  # producers read by some layer
        self.warned: set[str] = set()
        # per layer with thresholds: the chain and quantizer they were derived from
        self.requant_sources: dict[int, tuple[Chain, Quantizer]] = {}

    # -- errors ---------------------------------------------------------------------------
    def fail(self, node: onnx.NodeProto, message: str) -> BitloomError:
        return BitloomError(f"{self.source}: {_node_label(node)}: {message}")

    def warn(self, node: onnx.NodeProto, message: str) -> None:
        """Warn once per distinct message, naming the first node it concerns."""
        if message not in self.warned:
            self.warned.add(message)
            warnings.warn(f"{self.source}: {_node_label(node)}: {message}", BitloomWarning,
                          stacklevel=2)

    @property
    def opset(self) -> int:
        return next((o.version for o in self.model.opset_import if o.domain in ONNX_DOMAINS),
                    1)

    # -- driver ---------------------------------------------------------------------------
    @classmethod
    def dialect_ops(cls) -> dict[tuple[frozenset[str], str], str]:
        table: dict[tuple[frozenset[str], str], str] = {}
        for klass in reversed(cls.__mro__):
            table.update(getattr(klass, "OPS", {}))
        return table

    def handler(self, node: onnx.NodeProto) -> str | None:
        """The method handling ``node``, or None when bitloom does not support it."""
        for (domains, op), method in self.dialect_ops().items():
            if node.op_type == op and node.domain in domains:
                return method
        if node.domain in ONNX_DOMAINS:
            if node.op_type in CORE_OPS:
                return CORE_OPS[node.op_type]
            if node.op_type in CONSTANT_OPS:
                return "_fold_constant"
        return None

    def check_supported(self) -> None:
        unsupported = [n for n in self.model.graph.node if self.handler(n) is None]
        if unsupported:
            listing = "; ".join(
                f"{n.name or '?'} ({n.op_type}{', domain ' + n.domain if n.domain else ''})"
                for n in unsupported
            )
            known = sorted({op for _, op in self.dialect_ops()} | set(CORE_OPS))
            raise BitloomError(
                f"{self.source}: unsupported op(s): {listing}. bitloom maps "
                f"{', '.join(known)} and constant shape expressions; remove or replace the "
                "others."
            )

    def run(self) -> Network:
        graph = self.model.graph
        self.check_supported()
        initializers = {t.name for t in graph.initializer}
        for t in graph.initializer:
            self.values[t.name] = Constant(read_initializer(t, self.source), t.data_type)
        inputs = [i for i in graph.input if i.name not in initializers]
        if len(inputs) != 1 or len(graph.output) != 1:
            raise BitloomError(
                f"{self.source}: the model has {len(inputs)} inputs and {len(graph.output)} "
                "outputs; this version of bitloom compiles models with exactly one of each."
            )
        graph_input = self.graph_input = inputs[0]
        shape = self._static_shape(graph_input)
        self.values[graph_input.name] = self._graph_input(graph_input, shape[1:])
        for node in graph.node:
            self._visit(node)
        return self._finish(graph.output[0].name)

    def _graph_input(self, info: onnx.ValueInfoProto, shape: tuple[int, ...]) -> Value:
        """A float graph input, or one that already holds quantized codes (e.g. uint8
        feeding a QLinearMatMul, float8 feeding a DequantizeLinear): the latter is the
        input quantizer's output with scale 1 and zero point 0, and the op that reads it
        states the codes' real scale and zero point (as ``_operand`` and DequantizeLinear
        do for any quantized tensor). Float inputs of the model are then exactly the codes;
        the host's quantizer is the identity on them and saturates anything else."""
        from bitloom.frontend.qdq import ONNX_FLOAT_FORMATS, ONNX_INT_FORMATS

        elem = info.type.tensor_type.elem_type
        fmt = ONNX_INT_FORMATS.get(elem) or ONNX_FLOAT_FORMATS.get(elem)
        if fmt is None:
            return FloatInput(info.name, shape, shape)
        quantizer = Quantizer(fmt, 1.0, 0, "round", ROUND_THEN_SHIFT)
        self.input_quant = InputQuantizer(info.name, shape, shape, quantizer)
        return Stream(-1, fmt, np.array([1.0]), 0, shape, codes=True)

    def declared_batch(self) -> int | None:
        """The batch size the graph input declares (its axis 0), None when symbolic."""
        dims = self.graph_input.type.tensor_type.shape.dim
        if dims and dims[0].HasField("dim_value") and dims[0].dim_value > 0:
            return int(dims[0].dim_value)
        return None

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
                    f"{self.source}: input {info.name!r} has a dynamic dimension {i} "
                    f"({d.dim_param or '?'}); export the model with fixed shapes."
                )
        if not shape:
            raise BitloomError(f"{self.source}: input {info.name!r} has no shape.")
        return tuple(shape)

    # -- per-op handlers --------------------------------------------------------------------
    def _schema(self, node: onnx.NodeProto) -> onnx.defs.OpSchema | None:
        if node.domain not in ONNX_DOMAINS:
            return None
        try:
            return onnx.defs.get_schema(node.op_type, max(self.opset, 1), "")
        except onnx.defs.SchemaError:
            return None

    def _check_signature(self, node: onnx.NodeProto) -> None:
        """Inputs the op requires are present and attributes have their declared types (per
        the ONNX schema of the model's opset; a small table for QONNX/contrib ops)."""
        schema = self._schema(node)
        if not node.output or not node.output[0]:
            raise self.fail(node, "it has no output.")
        if schema is not None:
            single = onnx.defs.OpSchema.FormalParameterOption.Single
            variadic = onnx.defs.OpSchema.FormalParameterOption.Variadic
            for i, formal in enumerate(schema.inputs):
                if formal.option == single and (i >= len(node.input) or not node.input[i]):
                    raise self.fail(node, f"input {i} ({formal.name}) is missing; "
                                    f"{node.op_type} requires it.")
            if schema.inputs and schema.inputs[-1].option == variadic:
                if len(node.input) < schema.min_input:
                    raise self.fail(node, f"it has {len(node.input)} inputs; {node.op_type} "
                                    f"needs at least {schema.min_input}.")
            elif len(node.input) > len(schema.inputs):
                raise self.fail(node, f"it has {len(node.input)} inputs; {node.op_type} takes "
                                f"at most {len(schema.inputs)}.")
            types = {name: int(a.type.value) for name, a in schema.attributes.items()}
        else:
            required = REQUIRED_INPUTS.get(node.op_type, 1)
            for i in range(required):
                if i >= len(node.input) or not node.input[i]:
                    raise self.fail(node, f"input {i} is missing; {node.op_type} requires "
                                    f"{required} inputs.")
            types = ATTRIBUTE_TYPES
        for a in node.attribute:
            want = types.get(a.name)
            if want is not None and a.type != onnx.AttributeProto.UNDEFINED and a.type != want:
                raise self.fail(node, f"attribute {a.name!r} is of type {_type_name(a.type)}, "
                                f"the op expects {_type_name(want)}.")

    def _visit(self, node: onnx.NodeProto) -> None:
        self._check_signature(node)
        ins = [self.values.get(name) if name else None for name in node.input]
        for name, v in zip(node.input, ins, strict=True):
            if name and v is None:
                raise self.fail(node, f"input {name!r} is produced by no node we know.")
        op = node.op_type
        method = self.handler(node)
        foldable = node.domain in ONNX_DOMAINS and op not in NOT_FOLDED and not (
            op == "Clip" and self._integer_clip(ins))
        if foldable and (all(isinstance(v, Constant) or v is None for v in ins) or op == "Shape"):
            method = "_fold_constant"
        elif method == "_fold_constant":
            raise self.fail(node, f"{op} on a non-constant tensor is not supported yet.")
        if op in ("QuantizeLinear", "DequantizeLinear") and isinstance(ins[0], HostResult):
            method = "_host_qdq"
        if method not in ("_host_op", "_host_qdq", "_transpose") and any(
                isinstance(v, HostResult) for v in ins):
            raise self.fail(node, "only Softmax/ArgMax-like ops may follow a host-side output "
                            "op; bitloom runs them on the host at the graph output.")
        perms = {v.perm for v in ins if isinstance(v, (Stream, Derived)) and v.perm}
        if perms and method not in LAYOUT_AWARE:
            perm = next(iter(perms))
            scalars = all(v is None or (isinstance(v, Constant) and v.value.size == 1)
                          for v in ins[1:])
            if not (method in ELEMENTWISE or (method in PER_TENSOR and scalars)) or \
                    len(perms) > 1:
                raise self.fail(node, f"{op} of a transposed activation (perm "
                                f"{full_perm(perm)}) is not supported; bitloom maps "
                                "Transposes that cancel around element-wise ops and "
                                "MultiThreshold, that precede a Flatten/Reshape into "
                                "MatMul/Gemm, or that sit at the graph output.")
            out = getattr(self, method)(node, [self._untransposed(node, v, perm) for v in ins])
            if not isinstance(out, (Stream, Derived)):
                raise self.fail(node, f"{op} of a transposed activation (perm "
                                f"{full_perm(perm)}) gives a tensor bitloom cannot keep "
                                "transposed; transpose it back first.")
            out = replace(out, shape=tuple(out.shape[a] for a in perm), perm=perm)
        else:
            out = getattr(self, method)(node, ins)
        self.values[node.output[0]] = out
        if isinstance(out, (Stream, Derived)) and out.producer >= 0:
            names = self.layer_nodes[out.producer]
            if names[-1] != (node.name or op):
                names.append(node.name or op)

    def _untransposed(self, node, v: Value | None, perm: tuple[int, ...]) -> Value | None:
        """``v`` as an element-wise op on the untransposed activation sees it: that activation
        itself, or a constant transposed back so it broadcasts alike."""
        if isinstance(v, (Stream, Derived)):
            return replace(v, shape=untransposed(v.shape, perm), perm=None)
        if not isinstance(v, Constant) or v.value.size == 1:
            return v
        rank = len(perm) + 1
        if v.value.ndim > rank:
            raise self.fail(node, f"constant of shape {list(v.value.shape)} does not broadcast "
                            f"against the transposed activation of rank {rank}.")
        value = v.value.reshape((1,) * (rank - v.value.ndim) + v.value.shape)
        inverse = [perm.index(a) for a in range(len(perm))]
        return replace(v, value=value.transpose(full_perm(tuple(inverse))))

    def _fold_constant(self, node: onnx.NodeProto, ins: list[Value | None]) -> Constant:
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
        from onnx.reference import ReferenceEvaluator

        feeds = {name: v.value for name, v in zip(node.input, ins, strict=True) if name}
        graph = onnx.helper.make_graph(
            [node], "fold",
            [onnx.helper.make_tensor_value_info(n, onnx.TensorProto.UNDEFINED, None)
             for n in feeds],
            [onnx.helper.make_tensor_value_info(node.output[0], onnx.TensorProto.UNDEFINED,
                                                None)],
        )
        opsets = [o for o in self.model.opset_import if o.domain in ("", "ai.onnx")]
        folder = onnx.helper.make_model(graph, opset_imports=opsets or None)
        try:
            (result,) = ReferenceEvaluator(folder).run(None, feeds)[:1]
        except Exception as exc:
            raise self.fail(node, f"cannot fold this constant expression ({exc}).") from None
        return Constant(np.asarray(result))

    def _const_input(self, node: onnx.NodeProto, v: Value | None, what: str,
                     allow_inf: bool = False) -> np.ndarray:
        """A constant operand; NaN (and, unless allowed, infinity) is refused here, before
        it reaches exact arithmetic."""
        if isinstance(v, QuantConstant):  # e.g. an int32 bias behind a DequantizeLinear
            return v.dequantized()
        if not isinstance(v, Constant):
            raise self.fail(node, f"its {what} must be a constant initializer.")
        value = np.asarray(v.value)
        if value.dtype.kind == "f" or value.dtype.kind == "V":
            try:
                wide = value.astype(np.float64)
            except (TypeError, ValueError):
                raise self.fail(node, f"its {what} has element type {value.dtype}, which "
                                "bitloom cannot read as a number.") from None
            bad = np.isnan(wide) if allow_inf else ~np.isfinite(wide)
            if bad.any():
                raise self.fail(node, f"its {what} holds NaN or infinite values.")
        elif value.dtype.kind not in "iub":
            raise self.fail(node, f"its {what} has element type {value.dtype}; expected "
                            "numbers.")
        return value

    def _exact(self, node: onnx.NodeProto, values, channels: int, what: str) -> list[Fraction]:
        """Model-given float coefficients as exact rationals, per channel; NaN/inf (e.g. a
        product that overflowed float32) are refused naming the node."""
        flat = np.asarray(values, dtype=np.float64).reshape(-1)
        if not np.all(np.isfinite(flat)):
            raise self.fail(node, f"its {what} is NaN or infinite.")
        if flat.size not in (1, channels):
            raise self.fail(node, f"its {what} has {flat.size} values for {channels} channels.")
        return as_fractions(flat, channels)

    def _const_int(self, node: onnx.NodeProto, v: Value | None, what: str, lo: int,
                   hi: int) -> int:
        """A scalar integer operand (a bit width, a zero point) within ``[lo, hi]``."""
        value = self._const_input(node, v, what).reshape(-1)
        if value.size != 1 or float(value[0]) != int(value[0]) or not lo <= int(value[0]) <= hi:
            shown = value.tolist() if value.size <= 8 else f"{value.size} values"
            raise self.fail(node, f"its {what} {shown} is not one integer in [{lo}, {hi}].")
        return int(value[0])

    # -- quantization, shared by the dialects ------------------------------------------------
    #: thresholds grow as 2**bits per channel; wider requantization needs a
    #: scale-round-clip unit, which the hardware does not have yet
    MAX_THRESHOLD_BITS = 8

    def _quantize(self, node, x: Value, quantizer: Quantizer, per_tensor_scale) -> Value:
        """A quantizer applied to ``x``: input quantizer, requantization or (weights) folded."""
        if isinstance(x, Stream) and x.fmt == quantizer.fmt and x.scale.size == 1 and \
                float(x.scale[0]) == quantizer.scale and x.zero_point == quantizer.zero_point:
            return x  # values already on this grid and in range: the quantizer is the identity
        if isinstance(x, PendingConcat):
            return self._concat_layer(node, [self._quantize(node, p, quantizer, per_tensor_scale)
                                             for p in x.parts])
        if isinstance(x, FloatInput):
            if self.input_quant is not None:
                raise self.fail(node, "the model input is quantized twice.")
            self.input_quant = InputQuantizer(x.name, x.shape, x.flat_shape, quantizer, x.perm)
            return Stream(-1, quantizer.fmt, np.array([quantizer.scale]),
                          quantizer.zero_point, x.flat_shape)
        return self._requantize(
            node, x, quantizer.fmt, lambda chain, acc: derive_thresholds(chain, quantizer, acc),
            quantizer.scale, quantizer.zero_point, quantizer)

    def _requantize(self, node, x: Value, fmt: Format,
                    table_for: Callable[[Chain, Int], Thresholds], scale: float,
                    zero_point: int, quantizer: Quantizer | None = None) -> Stream:
        """Thresholds ``table_for(chain, acc_fmt)`` on ``x``: the requantization of the layer
        computing ``x``, or a thresholding layer of its own on a quantized stream. The
        result holds ``fmt`` values, real ``scale * (value - zero_point)``; ``quantizer`` is
        the ONNX quantizer it implements, if any (float ops may then reopen it)."""
        if isinstance(x, PendingConcat):
            return self._concat_layer(node, [
                self._requantize(node, p, fmt, table_for, scale, zero_point, quantizer)
                for p in x.parts])
        if isinstance(x, Derived):
            if x.producer < 0:
                raise self.fail(node, "a per-channel float view of the model input cannot be "
                                "quantized again; quantize the input per tensor.")
            layer = self.layers[x.producer]
            if layer.requant is not None:
                raise self.fail(node, "a layer output is quantized twice.")
            if fmt.bits > self.MAX_THRESHOLD_BITS:
                raise self.fail(node, f"requantizing a layer output to {fmt} is not "
                                f"supported yet (at most {self.MAX_THRESHOLD_BITS} bits); "
                                "quantize activations to 8 bits or fewer.")
            layer.requant = table_for(x.chain, layer.acc_fmt)
            if quantizer is not None:
                self.requant_sources[x.producer] = (x.chain, quantizer)
            out = Stream(x.producer, fmt, np.array([scale]), zero_point, x.shape)
            if x.max_pools:
                if any(x.chain.direction(c) < 0 for c in range(x.chain.channels)):
                    raise self.fail(node, "a MaxPool before this quantizer does not commute "
                                    "with the decreasing float ops between them.")
                for window in x.max_pools:
                    in_shape = (*window.in_hw, x.chain.channels)
                    window = replace(window, pad_value=fmt.grid().lo)
                    index = self._add_layer(node, MaxPool(
                        f"maxpool{len(self.layers)}", (out.producer,), in_shape,
                        fmt=fmt, window=window))
                    out = replace(out, producer=index)
            return out
        if isinstance(x, Stream):  # onto another scale or format: a thresholding layer
            if x.scale.size != 1:
                raise self.fail(node, "re-quantizing needs a per-tensor input scale.")
            grid = x.fmt.grid()
            shape = channel_last(x.shape)
            index = self._add_layer(node, Thresholding(
                f"requant{len(self.layers)}", (x.producer,), shape,
                acc_fmt=Int.spanning(grid.lo, grid.hi), in_fmt=x.fmt))
            s = as_fractions(x.scale, 1)[0]
            n = shape[-1]
            chain = Chain(n).then(Affine([s / 2 ** grid.frac_bits] * n, [-s * x.zero_point] * n))
            out = self._requantize(node, Derived(index, chain, x.shape), fmt, table_for,
                                   scale, zero_point, quantizer)
            return replace(out, order=x.order)  # element-wise: the stream order stays
        raise self.fail(node, "this quantizer's input is not a tensor bitloom can quantize.")

    def _reopen(self, node, x: Stream) -> Derived:
        """Float math on a layer's quantized output: that quantizer joins the chain, and the
        layer's thresholds will come from the next quantizer instead."""
        if x.producer < 0:
            raise self.fail(node, f"{node.op_type} on the quantized model input is not "
                            "supported; apply it before the input quantizer.")
        if x.producer not in self.requant_sources or x.producer in self.consumed:
            raise self.fail(node, f"{node.op_type} on a quantized tensor that is not the fresh "
                            "output of a layer with an accumulator; put a quantizer after it.")
        chain, quantizer = self.requant_sources.pop(x.producer)
        self.layers[x.producer].requant = None
        n, s = chain.channels, as_fractions(x.scale, 1)[0]
        step = s / 2 ** x.fmt.grid().frac_bits
        chain = chain.then(Requantize(quantizer)).then(Affine([step] * n,
                                                              [-s * x.zero_point] * n))
        return Derived(x.producer, chain, x.shape)

    def _rescaled(self, node, x: Stream, op: str, k: Fraction) -> Stream:
        """A quantized stream times, or plus, a scalar (as after FINN's MultiThreshold):
        the same values with another scale or zero point, when those stay exact."""
        s = as_fractions(x.scale, 1)[0]
        if op in ("Mul", "Div"):
            if k <= 0:
                raise self.fail(node, f"{op} of a quantized stream by {float(k):g}: only "
                                "positive factors keep it a stream.")
            scale = s * k if op == "Mul" else s / k
            if Fraction(float(np.float32(scale))) != scale:
                raise self.fail(node, f"the scale {float(s):g} {op} {float(k):g} is not "
                                "exactly a float32; use power-of-two factors.")
            return replace(x, scale=np.array([float(scale)]))
        shift = (k if op == "Add" else -k) / s
        if shift.denominator != 1 or x.fmt.grid().frac_bits:
            raise self.fail(node, f"{op} of {float(k):g} to a quantized stream of scale "
                            f"{float(s):g} is not a whole number of steps; it cannot stay exact.")
        return replace(x, zero_point=x.zero_point - int(shift))

    def _cast(self, node, ins: list[Value | None]) -> Value:
        """Casting an integer accumulator to float is exact while it fits float32's 24-bit
        significand (or float64's 53)."""
        x, to = ins[0], attributes(node).get("to")
        limits = {onnx.TensorProto.FLOAT: 24, onnx.TensorProto.DOUBLE: 53}
        if isinstance(x, Derived) and to in limits and x.producer >= 0:
            if self.layers[x.producer].acc_fmt.bits - 1 > limits[to]:
                raise self.fail(node, "the accumulator is too wide to cast to float exactly.")
            return x
        raise self.fail(node, "Cast is supported from an integer accumulator to float only.")

    def _pass_through(self, node, ins: list[Value | None]) -> Value:
        return ins[0]

    def _transpose(self, node, ins: list[Value | None]) -> Value:
        """Weights are transposed here; an activation keeps its hardware order and records
        the view (``perm``) that the ONNX graph continues with."""
        w, perm = ins[0], attributes(node).get("perm")
        if isinstance(w, HostResult):
            rank = len(self._host_shape(node, w.base, w.ops))
            if perm is None or sorted(perm) != list(range(rank)):
                raise self.fail(node, f"perm {perm} is not a permutation of {rank} axes.")
            return HostResult(w.base, [*w.ops, HostOp("Transpose", perm=tuple(perm))])
        if isinstance(w, FloatInput):
            return self._transpose_input(node, w, perm)
        iq = self.input_quant
        if isinstance(w, Stream) and w.producer == -1 and iq is not None and \
                isinstance(iq.quantizer, Quantizer) and w.shape == iq.flat_shape and \
                w.perm is None and w.order is None and \
                sum(node.input[0] in n.input for n in self.model.graph.node) == 1:
            # the quantized model input, read only here: per-tensor quantization commutes
            # with the Transpose, so the host does it first
            moved = self._transpose_input(node, FloatInput(iq.name, iq.shape, iq.flat_shape,
                                                           iq.perm), perm)
            self.input_quant = replace(iq, flat_shape=moved.flat_shape, perm=moved.perm)
            return replace(w, shape=moved.flat_shape)
        if isinstance(w, (Stream, Derived)):
            return self._transpose_activation(node, w, perm)
        if not isinstance(w, QuantConstant):
            raise self.fail(node, "Transpose of this tensor is not supported.")
        perm = perm or list(range(w.values.ndim))[::-1]
        if sorted(perm) != list(range(w.values.ndim)):
            raise self.fail(node, f"perm {list(perm)} is not a permutation of the "
                            f"{w.values.ndim} axes of its input {w.values.shape}.")
        scale = np.asarray(w.scale)
        if scale.ndim == w.values.ndim:
            scale = scale.transpose(perm)
        elif scale.size != 1:
            raise self.fail(node, "cannot transpose weights with this scale shape.")
        return QuantConstant(w.values.transpose(perm), scale, w.fmt)

    def _transpose_activation(self, node, x: Stream | Derived, perm) -> Stream | Derived:
        rank = len(x.shape) + 1
        perm = list(perm) if perm else list(range(rank))[::-1]
        if sorted(perm) != list(range(rank)):
            raise self.fail(node, f"perm {perm} is not a permutation of the {rank} axes of "
                            f"its input {[1, *x.shape]}.")
        if perm[0] != 0:
            raise self.fail(node, f"Transpose with perm {perm} moves the batch axis; only "
                            "per-sample axes may be permuted.")
        view = x.perm or tuple(range(rank - 1))
        new = tuple(view[a - 1] for a in perm[1:])
        shape = tuple(x.shape[a - 1] for a in perm[1:])
        return replace(x, shape=shape, perm=None if new == tuple(sorted(new)) else new)

    def _weights_of(self, node, v: Value | None) -> QuantConstant:
        if isinstance(v, QuantConstant):
            return v
        if isinstance(v, Constant):
            raise self.fail(node, "its weights are float; quantize them (e.g. a QONNX Quant).")
        raise self.fail(node, "multiplying two activation tensors is not supported.")

    def _matmul(self, node, ins: list[Value | None]) -> Derived:
        attrs = attributes(node)
        if attrs.get("transA", 0):
            raise self.fail(node, "transA=1 is not supported.")
        w = self._weights_of(node, ins[1])
        x = self._dense(node, ins[0], w, bool(attrs.get("transB", 0)))
        n = x.chain.channels
        if node.op_type == "Gemm":
            alpha, beta = attrs.get("alpha", 1.0), attrs.get("beta", 1.0)
            chain = x.chain.then(Affine(self._exact(node, alpha, n, "alpha"), [Fraction(0)] * n))
            if len(ins) > 2 and ins[2] is not None:
                bias = self._const_input(node, ins[2], "bias C")
                if bias.size not in (1, n):
                    raise self.fail(node, "bias C must be per output channel.")
                shift = self._exact(node, np.float32(beta) * bias, n, "bias C times beta")
                chain = chain.then(Affine([Fraction(1)] * n, shift))
            x = Derived(x.producer, chain, x.shape)
        return x

    def _dense(self, node, x: Value | None, w: QuantConstant, trans_b: bool) -> Derived:
        """A new MatrixVector layer; its float output is ``scale_x * scale_w * (acc - zp)``.
        A per-sample ``(rows, K)`` input (a rank-3 A of MatMul) is ``rows`` vectors, each
        multiplied by the matrix, or by its sample's own matrix (see :meth:`_matrices`)."""
        if not isinstance(x, Stream):
            raise self.fail(node, "its input is not quantized; put a quantizer before it.")
        matrix = node.op_type not in ("Gemm", "QGemm")  # MatMul broadcasts a rank-3 A
        if len(x.shape) not in ((1, 2) if matrix else (1,)):
            raise self.fail(node, f"input of per-sample shape {x.shape}: only vectors"
                            f"{' and (rows, K) matrices' if matrix else ''} map onto "
                            f"{node.op_type}; flatten the tensor first.")
        values, wscale = self._matrices(node, x, w)
        if trans_b:
            values = values.T
            wscale = wscale.T if wscale.ndim == 2 else wscale
        k, n = values.shape[-2:]
        if k != x.shape[-1]:
            raise self.fail(node, f"weights have {k} rows for an input of {x.shape[-1]}.")
        if wscale.size not in (1, n) or (wscale.ndim == 2 and wscale.shape[0] != 1):
            raise self.fail(node, "weight scales must be per-tensor or per output channel.")
        if x.order is not None:  # the input is a flattened feature map, streamed channel-last
            values = values[x.order]
        rows = x.shape[0] if len(x.shape) == 2 else 1
        per_sample = values.ndim == 3
        return self._weighted(
            node, x, values, as_fractions(wscale, n), w.fmt, (*x.shape[:-1], n),
            lambda index, acc: MatrixVector(
                f"mvu{index}", (x.producer,), x.shape if rows > 1 else x.shape[-1:], acc_fmt=acc,
                weights=values.astype(np.int64), in_fmt=x.fmt, w_fmt=w.fmt, rows=rows,
                in_zero_point=x.zero_point if per_sample else 0),
            zero_in_layer=per_sample)

    def _matrices(self, node, x: Stream, w: QuantConstant) -> tuple[np.ndarray, np.ndarray]:
        """The weights as one ``(K, N)`` matrix, or ``(G, K, N)``, one per sample, and their
        scale. ONNX MatMul broadcasts a rank-3 B against a rank-3 A along axis 0, which
        bitloom streams as independent samples: a leading axis of 1 is one matrix for all,
        one of the model's batch size a matrix per sample; other batched Bs mix samples."""
        values, wscale = w.values, np.asarray(w.scale, dtype=np.float32)
        if values.ndim == 3 and len(x.shape) == 2:
            groups = values.shape[0]
            if wscale.ndim == 3:
                if wscale.shape[0] != 1:
                    raise self.fail(node, f"weight scales of shape {wscale.shape} vary along "
                                    "B's leading axis; only per-tensor or per-column scales "
                                    "are supported.")
                wscale = wscale[0]
            if groups == 1:
                return values[0], wscale
            batch = self.declared_batch()
            if batch != groups:
                declared = "leaves it symbolic" if batch is None else f"declares {batch}"
                raise self.fail(node, f"B of shape {values.shape} holds one matrix per index "
                                "of axis 0, the batch axis, for a batch of exactly "
                                f"{groups} samples; input {self.graph_input.name!r} "
                                f"{declared}. Export the model with a fixed batch size of "
                                f"{groups} (or one matrix for every sample).")
            return values, wscale
        if values.ndim != 2:
            raise self.fail(node, f"B of shape {values.shape} does not map onto a streamed "
                            f"layer for an input of per-sample shape {x.shape} (batch axis "
                            "0): bitloom maps a 2-D B, or for a rank-3 input a rank-3 B with "
                            "one matrix for every sample or one per sample.")
        return values, wscale

    def _weighted(self, node, x: Stream, values: np.ndarray, wscale: list[Fraction],
                  w_fmt: Format, shape: tuple[int, ...], make,
                  zero_in_layer: bool = False) -> Derived:
        """A layer summing ``values[k, c] * x[k]`` over ``k`` (dense, conv and depthwise):
        its float output is ``scale_x * scale_w[c] * (acc - zp * colsum[c])``, or with
        ``zero_in_layer`` (the layer subtracts the input's zero point) ``scale_x *
        scale_w[c] * acc``."""
        if x.scale.size != 1:
            raise self.fail(node, "the input needs a per-tensor scale.")
        # acc counts units of the product grid: 2**-(frac_w + frac_x)
        unit = Fraction(1, 2 ** (w_fmt.grid().frac_bits + x.fmt.grid().frac_bits))
        a = [Fraction(float(x.scale[0])) * s * unit for s in wscale]
        if x.zero_point and x.fmt.grid().frac_bits:
            raise self.fail(node, "a zero point on a non-integer input is not supported.")
        in_fmt = x.fmt
        if zero_in_layer:
            b = [Fraction(0)] * len(a)
            if x.zero_point:  # the product's operand is x - zp
                grid = x.fmt.grid()
                in_fmt = Int.spanning(int(grid.lo) - x.zero_point, int(grid.hi) - x.zero_point)
        else:
            colsum = values.sum(axis=0)
            b = [-ai * x.zero_point * int(cs) for ai, cs in zip(a, colsum, strict=True)]
        grid = accumulator_grid(w_fmt, in_fmt, values.shape[-2])
        index = self._add_layer(node, make(len(self.layers), Int.spanning(grid.lo, grid.hi)))
        return Derived(index, Chain(len(a)).then(Affine(a, b)), shape)

    def _add_layer(self, node, layer: AnyLayer) -> int:
        """Append ``layer`` (created by ``node``) and return its index."""
        self.layers.append(layer)
        self.layer_nodes.append([node.name or node.op_type])
        self.consumed.update(layer.inputs)
        return len(self.layers) - 1

    def _per_channel(self, node, c: np.ndarray, x: Derived) -> list[Fraction]:
        """A constant that broadcasts per channel of the chain as rationals: axis 1 of
        ``(N, C)`` and ``(N, C, H, W)``, the last axis of a ``(N, rows, C)`` matrix."""
        c = np.asarray(c, dtype=np.float32)
        n, full = x.chain.channels, (1, *x.shape)
        axis = 1 if len(x.shape) == 3 else len(x.shape)  # where channel_last puts channels
        shape = (1,) * (len(full) - c.ndim) + c.shape
        if c.ndim > len(full) or c.size not in (1, n) or any(
                d != 1 for i, d in enumerate(shape) if i != axis):
            raise self.fail(node, f"constant of shape {c.shape} is not per-channel ({n}) for a "
                            f"tensor of shape {full}.")
        return self._exact(node, c, n, "constant")

    def _arith(self, node, ins: list[Value | None], op: str | None = None) -> Derived:
        op = op or node.op_type
        if any(isinstance(v, Stream) and v.codes for v in ins):
            raise self.fail(node, f"{op} of quantized codes (an integer tensor, e.g. a "
                            "QuantizeLinear's output): ONNX computes it in wrapping integer "
                            "arithmetic, which bitloom does not map; apply it to the "
                            "DequantizeLinear's float output instead.")
        x, c = (Constant(v.dequantized()) if isinstance(v, QuantConstant) else v for v in ins)
        if op == "Add" and isinstance(x, Stream) and isinstance(c, Stream):
            return self._add_streams(node, x, c)
        if isinstance(c, Stream) and isinstance(x, Constant) and op in ("Add", "Mul"):
            x, c = c, x  # commutative: the stream first
        if isinstance(x, Stream) and isinstance(c, Constant) and c.value.size == 1 and not (
                x.producer in self.requant_sources and x.producer not in self.consumed):
            return self._rescaled(node, x, op, Fraction(float(c.value.reshape(-1)[0])))
        if isinstance(x, Stream) and isinstance(c, Constant):
            x = self._reopen(node, x)
        elif isinstance(c, Stream) and isinstance(x, Constant):
            c = self._reopen(node, c)
        swapped = False
        if isinstance(x, Constant) and isinstance(c, Derived):
            x, c, swapped = c, x, True
        if not (isinstance(x, Derived) and isinstance(c, Constant)):
            if isinstance(x, Stream) or isinstance(c, Stream):
                raise self.fail(node, f"{op} of these tensors is not supported: an Add of two "
                                "branches needs both quantized; other ops need one constant.")
            raise self.fail(node, f"{op} of these operands cannot be folded exactly.")
        k = self._per_channel(node, c.value, x)
        n = x.chain.channels
        one, zero = [Fraction(1)] * n, [Fraction(0)] * n
        if op == "Add":
            step = Affine(one, k)
        elif op == "Sub":
            step = Affine([Fraction(-1)] * n, k) if swapped else Affine(one, [-v for v in k])
        elif op == "Mul":
            step = Affine(k, zero)
        else:
            if swapped:
                raise self.fail(node, "dividing a constant by a tensor is not monotone-exact.")
            if any(v == 0 for v in k):
                raise self.fail(node, "division by zero.")
            step = Affine([1 / v for v in k], zero)
        return Derived(x.producer, x.chain.then(step), x.shape)

    @staticmethod
    def _integer_clip(ins: list[Value | None]) -> bool:
        """A Clip with integer bounds clips quantized codes (Brevitas' QCDQ pattern)."""
        bounds = [v for v in ins[1:] if v is not None]
        return bool(bounds) and all(isinstance(v, Constant) and v.value.dtype.kind in "iu"
                                    for v in bounds)

    def _clip_codes(self, node, ins: list[Value | None]) -> Value:
        """``QuantizeLinear -> Clip -> DequantizeLinear``: the Clip narrows the format."""
        x = ins[0]
        info = np.iinfo(ins[1].value.dtype if ins[1] is not None else ins[2].value.dtype)
        lo = int(ins[1].value) if ins[1] is not None else info.min
        hi = int(ins[2].value) if len(ins) > 2 and ins[2] is not None else info.max
        if isinstance(x, Constant):
            return Constant(np.clip(x.value, lo, hi), x.onnx_type, (lo, hi))
        if not isinstance(x, Stream) or not isinstance(x.fmt, Int):
            raise self.fail(node, "an integer Clip must follow a QuantizeLinear.")
        fmt = next((f for bits in range(1, 17) for signed in (True, False)
                    for narrow in (False, True)
                    if (f := Int(bits, signed, narrow)).min_int == lo and f.max_int == hi
                    and not f.bipolar), None)
        if fmt is None:
            raise self.fail(node, f"Clip to [{lo}, {hi}] is not the range of an integer format.")
        if x.producer < 0 and self.input_quant is not None and -1 not in self.consumed:
            q = self.input_quant.quantizer
            self.input_quant.quantizer = Quantizer(fmt, q.scale, q.zero_point, q.rounding,
                                                   q.order)
        elif x.producer in self.requant_sources and x.producer not in self.consumed:
            chain, q = self.requant_sources[x.producer]
            q = Quantizer(fmt, q.scale, q.zero_point, q.rounding, q.order)
            self.layers[x.producer].requant = derive_thresholds(
                chain, q, self.layers[x.producer].acc_fmt)
            self.requant_sources[x.producer] = (chain, q)
        else:
            raise self.fail(node, "an integer Clip must directly follow a QuantizeLinear.")
        return replace(x, fmt=fmt)

    def _clamp(self, node, ins: list[Value | None]) -> Derived:
        x = ins[0]
        if node.op_type == "Clip" and self._integer_clip(ins):
            return self._clip_codes(node, ins)
        if isinstance(x, Stream):
            x = self._reopen(node, x)
        if not isinstance(x, Derived):
            raise self.fail(node, f"{node.op_type} must follow a layer (MatMul, Conv, pool, "
                            "Add) or a quantizer here.")
        if node.op_type == "Relu":
            return Derived(x.producer, x.chain.then(Clamp(Fraction(0), None)), x.shape)
        attrs = attributes(node)
        lo = attrs.get("min")
        hi = attrs.get("max")
        for i, what in ((1, "min"), (2, "max")):
            if len(ins) > i and ins[i] is not None:
                bound = self._const_input(node, ins[i], what, allow_inf=True).reshape(-1)
                if bound.size != 1:
                    raise self.fail(node, f"its {what} must be a single value.")
                lo, hi = (float(bound[0]), hi) if i == 1 else (lo, float(bound[0]))
        if any(v is not None and not np.isfinite(v) and v == (np.inf if k == 0 else -np.inf)
               for k, v in enumerate((lo, hi))) or (lo is not None and np.isnan(lo)) or (
                hi is not None and np.isnan(hi)):
            raise self.fail(node, f"Clip to [{lo}, {hi}] is empty.")
        lo = None if lo is None or lo == -np.inf else lo
        hi = None if hi is None or hi == np.inf else hi
        clamp = Clamp(None if lo is None else Fraction(float(lo)),
                      None if hi is None else Fraction(float(hi)))
        return Derived(x.producer, x.chain.then(clamp), x.shape)

    def _layout(self, node, ins: list[Value | None]) -> Value:
        x, op, attrs = ins[0], node.op_type, attributes(node)
        if not isinstance(x, (FloatInput, Stream, Derived)):
            raise self.fail(node, f"{op} of this tensor is not supported.")
        old = x.flat_shape if isinstance(x, FloatInput) else x.shape
        if op == "Flatten":
            if attrs.get("axis", 1) != 1:
                raise self.fail(node, "only Flatten(axis=1) keeps the batch axis.")
            new = (int(np.prod(old)),)
        elif op == "Reshape":
            shape_in = self._const_input(node, ins[1], "shape")
            if shape_in.dtype.kind not in "iu":
                raise self.fail(node, f"its shape is of type {shape_in.dtype}; expected int64.")
            target = [int(v) for v in shape_in.reshape(-1)]
            if not target or target[0] not in (1, -1, 0):
                raise self.fail(node, f"reshape to {target} would mix samples of a batch.")
            try:
                new = np.empty((1, *old)).reshape([1, *target[1:]] if target[0] != -1
                                                  else [-1, *target[1:]]).shape[1:]
            except ValueError:
                raise self.fail(node, f"cannot reshape {old} to {target}.") from None
        else:  # Squeeze / Unsqueeze: axes from the attribute (opset < 13) or the 2nd input
            axes = attrs.get("axes")
            if axes is None and len(ins) > 1 and ins[1] is not None:
                axes = self._const_input(node, ins[1], "axes").reshape(-1)
                if axes.dtype.kind not in "iu":
                    raise self.fail(node, f"its axes are of type {axes.dtype}; expected int64.")
                axes = [int(v) for v in axes]
            full = np.empty((1, *old))
            try:
                if op == "Squeeze":
                    axes = axes if axes is not None else [i for i, d in enumerate(full.shape)
                                                          if d == 1 and i > 0]
                    new = np.squeeze(full, axis=tuple(axes)).shape[1:]
                else:
                    new = np.expand_dims(full, axis=tuple(axes)).shape[1:]
            except (ValueError, TypeError, np.exceptions.AxisError):
                raise self.fail(node, f"cannot {op.lower()} axes {axes} of {old}.") from None
            if 0 in [a % full.ndim for a in axes] if op == "Squeeze" else 0 in axes:
                raise self.fail(node, f"{op} of the batch axis is not supported.")
        return self._reshaped(node, x, tuple(int(d) for d in new))

    def _transpose_input(self, node, x: FloatInput, perm: list[int] | None) -> FloatInput:
        """A Transpose of the float model input (e.g. NHWC -> NCHW at the top of a converted
        model) is done by the host before it quantizes, composed with earlier ones."""
        rank = len(x.flat_shape) + 1
        perm = list(range(rank))[::-1] if perm is None else list(perm)
        if sorted(perm) != list(range(rank)):
            raise self.fail(node, f"perm {perm} is not a permutation of the {rank} axes of "
                            f"the model input {[1, *x.flat_shape]}.")
        if perm[0] != 0:
            raise self.fail(node, f"Transpose with perm {perm} moves the batch axis; only "
                            "per-sample axes may be permuted.")
        base = x.perm or tuple(range(len(x.shape)))
        if tuple(x.shape[a] for a in base) != x.flat_shape:
            raise self.fail(node, f"Transpose (perm {perm}) of the model input after a "
                            "reshape is not supported; transpose it before reshaping.")
        sample = [a - 1 for a in perm[1:]]
        return FloatInput(x.name, x.shape, tuple(x.flat_shape[a] for a in sample),
                          tuple(base[a] for a in sample))

    def _reshaped(self, node, x: FloatInput | Stream | Derived, new: tuple[int, ...]) -> Value:
        """``x`` with a new per-sample ONNX shape; the hardware order must survive it."""
        if isinstance(x, FloatInput):
            return FloatInput(x.name, x.shape, new, x.perm)
        if x.perm:
            return self._flatten_transposed(node, x, new)
        old = x.shape
        if channel_last(old) == channel_last(new) or (len(old) == len(new) == 1):
            return replace(x, shape=new)
        spatial = int(np.prod(old[1:])) if len(old) == 3 else 1
        if len(old) == 3 and len(new) == 1 and spatial == 1:
            return replace(x, shape=new)  # (C, 1, 1) -> (C,): same order
        if len(old) == 3 and len(new) == 1 and isinstance(x, Stream) and x.order is None:
            c, h, w = old  # hardware element i is ONNX element order[i]
            order = np.arange(c * h * w).reshape(c, h, w).transpose(1, 2, 0).reshape(-1)
            return replace(x, shape=new, order=order)
        if len(new) == 3 and new[1:] == (1, 1) and len(old) == 1 and getattr(x, "order",
                                                                              None) is None:
            return replace(x, shape=new)
        what = "a quantized feature map" if isinstance(x, Stream) else \
            "a feature map before its quantizer"
        raise self.fail(node, f"reshaping {what} from {old} to {new} is not supported; "
                        "flatten after quantizing, or reshape only (C, H, W) -> (C*H*W,).")

    def _flatten_transposed(self, node, x: Stream | Derived, new: tuple[int, ...]) -> Value:
        """A transposed feature map flattened to a vector: the weights that read it are
        permuted (``order``); a NHWC view flattens in the hardware's own order."""
        base = untransposed(x.shape, x.perm)
        if len(new) != 1 or (isinstance(x, Stream) and x.order is not None):
            raise self.fail(node, f"reshaping a transposed feature map (perm "
                            f"{full_perm(x.perm)}) to {new} is not supported; only flattening "
                            "it to a vector is.")
        ids = np.arange(int(np.prod(base))).reshape(base)
        position = np.empty(ids.size, dtype=np.int64)  # ONNX index of each element
        position[ids.transpose(x.perm).reshape(-1)] = np.arange(ids.size)
        hardware = ids.transpose(1, 2, 0) if ids.ndim == 3 else ids  # channel-last
        order = position[hardware.reshape(-1)]
        if np.array_equal(order, np.arange(order.size)):
            return replace(x, shape=new, perm=None, **({"order": None}
                                                        if isinstance(x, Stream) else {}))
        if isinstance(x, Derived):
            raise self.fail(node, "flattening a transposed feature map before its quantizer "
                            "is not supported; quantize it first.")
        return replace(x, shape=new, perm=None, order=order)

    def _host_qdq(self, node, ins: list[Value | None]) -> HostResult:
        """QuantizeLinear/DequantizeLinear after a host-side op (onnxruntime quantizes the
        Softmax output): computed on the host in float32 exactly as ONNX does."""
        x = ins[0]
        scale, zero_point, fmt, _ = self._qdq_params(node, ins)
        if scale.size != 1 or zero_point.size != 1:
            raise self.fail(node, "a host-side Q/DQ needs a per-tensor scale and zero point.")
        if not isinstance(fmt, Int):
            raise self.fail(node, f"a host-side Q/DQ to {fmt.name} is not supported; only "
                            "integer types.")
        step = HostQuantize(node.op_type, scale=float(scale.reshape(-1)[0]),
                            zero_point=int(zero_point.reshape(-1)[0]), lo=fmt.min_int,
                            hi=fmt.max_int)
        return HostResult(x.base, [*x.ops, step])

    def _sum(self, node, ins: list[Value | None]) -> Value:
        """``Sum`` of one input is the input; of two, an ``Add``."""
        if len(ins) == 1:
            return ins[0]
        if len(ins) != 2:
            raise self.fail(node, f"Sum of {len(ins)} inputs is not supported; only one or two "
                            "(write a chain of quantized Adds).")
        return self._arith(node, ins, "Add")

    def _host_op(self, node, ins: list[Value | None]) -> HostResult:
        """Softmax/ArgMax after the last layer: computed by the host in float32."""
        x, attrs, op = ins[0], attributes(node), node.op_type
        if isinstance(x, HostResult):
            base, ops = x.base, list(x.ops)
        elif isinstance(x, (Stream, Derived)) and x.producer >= 0:
            base, ops = x, []
        else:
            raise self.fail(node, f"{op} is supported only at the graph output, after the "
                            "last layer.")
        if op in ("Softmax", "LogSoftmax"):
            ops.append(HostOp(op, int(attrs.get("axis", -1 if self.opset >= 13 else 1))))
        elif op == "TopK":
            return self._top_k(node, base, ops)
        else:
            if attrs.get("select_last_index", 0):
                raise self.fail(node, "select_last_index=1 is not supported.")
            ops.append(HostOp(op, int(attrs.get("axis", 0)), bool(attrs.get("keepdims", 1))))
        return HostResult(base, ops)

    def _host_shape(self, node, base: Stream | Derived, ops: list[HostOp]) -> list[int]:
        try:
            return host_shape(base, ops)
        except IndexError:
            raise self.fail(node, "an op before it on the host has an axis out of range."
                            ) from None

    def _top_k(self, node, base: Stream | Derived, ops: list[HostOp]) -> HostResult:
        """TopK on the host: values (output 0) and indices (output 1) as onnxruntime gives
        them, equal values in ascending index order."""
        attrs = attributes(node)
        shape = self._host_shape(node, base, ops)
        rank, axis = len(shape), int(attrs.get("axis", -1))
        if not -rank <= axis < rank or axis % rank == 0:
            raise self.fail(node, f"TopK along axis {axis} of a rank-{rank} tensor: only a "
                            "per-sample axis is supported.")
        if len(node.input) > 1 and node.input[1]:
            k = self._const_int(node, self.values.get(node.input[1]), "K", 1, 2**31)
        else:
            k = int(attrs.get("k", 0))
        if not 1 <= k <= shape[axis]:
            raise self.fail(node, f"K={k} is not between 1 and the {shape[axis]} elements of "
                            f"axis {axis}.")
        if not attrs.get("sorted", 1) and k > 1:
            self.warn(node, "sorted=0 leaves the order of the K results to the runtime; "
                      "bitloom returns them sorted (onnxruntime's order differs).")
        results = [HostResult(base, [*ops, HostOp("TopK", axis, k=k,
                                                  largest=bool(attrs.get("largest", 1)),
                                                  output=i)]) for i in (0, 1)]
        if len(node.output) > 1 and node.output[1]:
            self.values[node.output[1]] = results[1]
        return results[0]

    # -- the end ------------------------------------------------------------------------------
    def _finish(self, output_name: str) -> Network:
        out = self.values.get(output_name)
        host_ops: list[HostOp] = []
        if isinstance(out, HostResult):
            out, host_ops = out.base, out.ops
        if isinstance(out, (Stream, Derived)) and out.perm:  # transposed back on the host
            host_ops = [HostOp("Transpose", perm=full_perm(out.perm)), *host_ops]
            out = replace(out, shape=untransposed(out.shape, out.perm), perm=None)
        if self.input_quant is None or not (
                self.layers or (isinstance(out, (Stream, Derived)) and out.producer == -1)):
            raise BitloomError(
                f"{self.source}: found no quantized layer. bitloom needs a quantized model "
                "(QONNX Quant nodes on the input and the weights); export one with Brevitas."
            )
        last = len(self.layers) - 1
        if isinstance(out, Stream) and out.producer == last and out.order is None:
            # a quantized output: the host dequantizes (value - zero_point) * scale, or
            # returns the codes where the graph output is of the quantized type itself
            elem = self.model.graph.output[0].type.tensor_type.elem_type
            codes = elem not in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16,
                                 onnx.TensorProto.DOUBLE, onnx.TensorProto.BFLOAT16,
                                 onnx.TensorProto.UNDEFINED)
            s = Fraction(1) if codes else as_fractions(out.scale, 1)[0]
            zero = 0 if codes else out.zero_point
            step = s / 2 ** out.fmt.grid().frac_bits
            n = channel_last(out.shape)[-1] if out.shape else 1
            out = Derived(out.producer,
                          Chain(n).then(Affine([step] * n, [-s * zero] * n)), out.shape)
        elif not isinstance(out, Derived) or out.producer != last or out.max_pools:
            raise BitloomError(
                f"{self.source}: the output {output_name!r} must be the result of the last "
                "layer (MatMul/Gemm/Conv/pool/Add, with bias, scales or ReLU, or quantized); "
                "other outputs are not supported."
            )
        for i, layer in enumerate(self.layers):
            if i != last and i not in self.consumed:
                raise BitloomError(
                    f"{self.source}: layer {i} ({', '.join(self.layer_nodes[i])}) does not "
                    "reach the graph output; remove the dead branch."
                )
            if i in self.consumed and getattr(layer, "acc_fmt", None) is not None and \
                    layer.requant is None:
                raise BitloomError(
                    f"{self.source}: layer {i} ({', '.join(self.layer_nodes[i])}) feeds "
                    "another layer without a Quant in between; quantize its output."
                )
        for i, layer in enumerate(self.layers):
            layer.source_nodes = self.layer_nodes[i]
        return Network(
            self.source, self.input_quant, self.layers,
            OutputDequantizer(output_name, out.shape, out.chain, host_ops),
        )
