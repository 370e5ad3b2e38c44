"""The state of one import, shared by every op handler.

Handlers (see :mod:`bitloom.frontend.registry`) read operands from ``values``, append
layers with :meth:`ImportContext.add_layer` and report problems with :meth:`fail` and
:meth:`warn`, which name the node so the user can find it.
"""

from __future__ import annotations

import warnings
from collections.abc import Collection
from fractions import Fraction

import numpy as np
import onnx

from bitloom.errors import BitloomError, BitloomWarning
from bitloom.frontend.values import Constant, QuantConstant, Value
from bitloom.ir import AnyLayer, Chain, InputQuantizer, Quantizer
from bitloom.ir.elementwise import as_fractions
from bitloom.ir.quantizer import ElementQuantizer

ONNX_DOMAINS = ("", "ai.onnx")


#: metadata key a normalisation pass (:mod:`.passes`) sets on a node it rewrote, holding
#: the op type the model has there: errors and layer sources name what the user wrote
SOURCE_OP = "bitloom.source_op"


def source_op(node: onnx.NodeProto) -> str:
    """The op type of ``node`` as the model wrote it."""
    return next((p.value for p in node.metadata_props if p.key == SOURCE_OP), node.op_type)


def node_label(node: onnx.NodeProto) -> str:
    op = source_op(node)
    return f"node {node.name!r} ({op})" if node.name else f"a {op} node"


class ImportContext:
    """Tensors seen so far and the network being built from them."""

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
        # joins of float branches (frontend.float_joins): their accumulator travels on
        self.float_joins: set[int] = set()
        self.graph_input: onnx.ValueInfoProto | None = None
        self._readers: dict[str, list[onnx.NodeProto]] | None = None

    # -- errors ---------------------------------------------------------------------------
    def fail(self, node: onnx.NodeProto, message: str) -> BitloomError:
        return BitloomError(f"{self.source}: {node_label(node)}: {message}")

    def warn(self, node: onnx.NodeProto, message: str) -> None:
        """Warn once per distinct message, naming the first node it concerns."""
        if message not in self.warned:
            self.warned.add(message)
            warnings.warn(f"{self.source}: {node_label(node)}: {message}", BitloomWarning,
                          stacklevel=2)

    # -- the model ------------------------------------------------------------------------
    @property
    def opset(self) -> int:
        return next((o.version for o in self.model.opset_import if o.domain in ONNX_DOMAINS),
                    1)

    def readers(self, names: Collection[str]) -> list[onnx.NodeProto]:
        """The nodes that read any of the tensors ``names``."""
        if self._readers is None:
            self._readers = {}
            for n in self.model.graph.node:
                for tensor in set(n.input):
                    self._readers.setdefault(tensor, []).append(n)
        found: dict[int, onnx.NodeProto] = {}
        for tensor in names:
            for n in self._readers.get(tensor, ()):
                found[id(n)] = n
        return list(found.values())

    def reaches_output(self, name: str, stops: Collection[str]) -> bool:
        """Whether tensor ``name`` reaches a graph output through nodes whose ops are not
        in ``stops``."""
        graph = self.model.graph
        outputs = {o.name for o in graph.output}
        seen, todo = set(), [name]
        while todo:
            tensor = todo.pop()
            if tensor in outputs:
                return True
            if tensor not in seen:
                seen.add(tensor)
                todo += [out for n in graph.node if tensor in n.input
                         and source_op(n) not in stops for out in n.output]
        return False

    def declared_batch(self) -> int | None:
        """The batch size the graph input declares (its axis 0), None when symbolic."""
        dims = self.graph_input.type.tensor_type.shape.dim
        if dims and dims[0].HasField("dim_value") and dims[0].dim_value > 0:
            return int(dims[0].dim_value)
        return None

    # -- the network ----------------------------------------------------------------------
    def add_layer(self, node: onnx.NodeProto, layer: AnyLayer) -> int:
        """Append ``layer`` (created by ``node``) and return its index. Layers read
        per-tensor quantized tensors, so codes the host quantized per axis may not feed one."""
        if -1 in layer.inputs and self.input_quant is not None and isinstance(
                self.input_quant.quantizer, ElementQuantizer):
            raise self.fail(node, "the model input is quantized per axis or blocked, on the "
                            "host; layers read per-tensor quantized tensors, so these codes "
                            "may only reach the graph output. Quantize the input per tensor.")
        self.layers.append(layer)
        self.layer_nodes.append([node.name or source_op(node)])
        self.consumed.update(layer.inputs)
        return len(self.layers) - 1

    # -- constant operands ----------------------------------------------------------------
    def const_input(self, node: onnx.NodeProto, v: Value | None, what: str,
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

    def const_int(self, node: onnx.NodeProto, v: Value | None, what: str, lo: int,
                  hi: int) -> int:
        """A scalar integer operand (a bit width, a zero point) within ``[lo, hi]``."""
        value = self.const_input(node, v, what).reshape(-1)
        if value.size != 1 or float(value[0]) != int(value[0]) or not lo <= int(value[0]) <= hi:
            shown = value.tolist() if value.size <= 8 else f"{value.size} values"
            raise self.fail(node, f"its {what} {shown} is not one integer in [{lo}, {hi}].")
        return int(value[0])

    def channel_values(self, node: onnx.NodeProto, value: np.ndarray, shape: tuple[int, ...],
                       what: str) -> np.ndarray:
        """A constant that is one value, or one per channel of a tensor of per-sample ONNX
        ``shape`` (axis 1 of ``(N, C)`` and ``(N, C, H, W)``, the last axis of a
        ``(N, rows, C)`` matrix, where the hardware streams channels), flattened."""
        value = np.asarray(value)
        full = (1, *shape)
        axis = 1 if len(shape) == 3 else len(shape)
        padded = (1,) * (len(full) - value.ndim) + value.shape
        if value.ndim > len(full) or value.size not in (1, full[axis]) or any(
                d != 1 for i, d in enumerate(padded) if i != axis):
            raise self.fail(node, f"{what} of shape {value.shape} is not per-channel "
                            f"({full[axis]}) for a tensor of shape {full}.")
        return value.reshape(-1)

    def exact(self, node: onnx.NodeProto, values, channels: int, what: str) -> list[Fraction]:
        """Model-given float coefficients as exact rationals, per channel; NaN/inf (e.g. a
        product that overflowed float32) are refused naming the node."""
        flat = np.asarray(values, dtype=np.float64).reshape(-1)
        if not np.all(np.isfinite(flat)):
            raise self.fail(node, f"its {what} is NaN or infinite.")
        if flat.size not in (1, channels):
            raise self.fail(node, f"its {what} has {flat.size} values for {channels} channels.")
        return as_fractions(flat, channels)
