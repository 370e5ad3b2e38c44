"""QONNX (Brevitas export) -> :class:`~bitloom.ir.Network`.

The graph is walked once in topological order while every tensor is tracked as one of a few
symbolic kinds (:class:`FloatInput`, :class:`Constant`, :class:`QuantConstant`,
:class:`Stream`, :class:`Derived`). Integer layers are created at ``MatMul``/``Gemm``;
every float op after them is folded into a per-channel :class:`~bitloom.ir.Chain`; the next
``Quant`` turns that chain into exact thresholds. What cannot be mapped exactly is refused,
naming the node.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from bitloom.errors import BitloomError
from bitloom.formats import Int, accumulator_format, normalize_rounding, round_exact
from bitloom.frontend.loader import read_model
from bitloom.ir import (
    Affine,
    Chain,
    Clamp,
    InputQuantizer,
    MatrixVector,
    Network,
    OutputDequantizer,
    derive_thresholds,
)
from bitloom.ir.elementwise import as_fractions

QONNX_DOMAINS = {"qonnx.custom_op.general", "onnx.brevitas", "finn.custom_op.general"}
LAYOUT_OPS = {"Reshape", "Flatten"}
PASS_THROUGH_OPS = {"Identity", "Dropout"}
CONSTANT_OPS = {"Constant", "Shape", "Gather", "Unsqueeze", "Squeeze", "Concat", "Cast",
                "Transpose", "Slice", "ConstantOfShape", "Range"}
SUPPORTED = {"Quant", "IntQuant", "BipolarQuant", "MatMul", "Gemm", "Add", "Sub", "Mul", "Div",
             "Relu", "Clip"} | LAYOUT_OPS | PASS_THROUGH_OPS | CONSTANT_OPS


@dataclass
class Constant:
    value: np.ndarray


@dataclass
class QuantConstant:
    """Quantized constant (weights): ``real = scale * values``."""

    values: np.ndarray  # integer values of fmt
    scale: np.ndarray
    fmt: Int


@dataclass
class FloatInput:
    """The float graph input, possibly reshaped on the host before it is quantized."""

    name: str
    shape: tuple[int, ...]
    flat_shape: tuple[int, ...]


@dataclass
class Stream:
    """Integer values flowing in hardware: ``real = scale * (value - zero_point)``."""

    producer: int  # index of the producing layer, -1 for the input quantizer
    fmt: Int
    scale: np.ndarray
    zero_point: int
    shape: tuple[int, ...]


@dataclass
class Derived:
    """A float tensor that is a per-channel monotone function of a layer's accumulator."""

    producer: int
    chain: Chain
    shape: tuple[int, ...]


Value = Constant | QuantConstant | FloatInput | Stream | Derived


def attributes(node: onnx.NodeProto) -> dict:
    """Node attributes as Python values (strings decoded)."""
    out = {}
    for a in node.attribute:
        v = onnx.helper.get_attribute_value(a)
        out[a.name] = v.decode() if isinstance(v, bytes) else v
    return out


def _node_label(node: onnx.NodeProto) -> str:
    return f"node {node.name!r} ({node.op_type})" if node.name else f"a {node.op_type} node"


class QonnxImporter:
    """One pass over a QONNX graph; see the module docstring."""

    def __init__(self, model: onnx.ModelProto, source: str) -> None:
        self.model = model
        self.source = source
        self.values: dict[str, Value] = {}
        self.layers: list[MatrixVector] = []
        self.input_quant: InputQuantizer | None = None
        self.layer_nodes: list[list[str]] = []

    # -- errors ---------------------------------------------------------------------------
    def fail(self, node: onnx.NodeProto, message: str) -> BitloomError:
        return BitloomError(f"{self.source}: {_node_label(node)}: {message}")

    # -- driver ---------------------------------------------------------------------------
    def check_supported(self) -> None:
        unsupported = [
            n for n in self.model.graph.node
            if n.op_type not in SUPPORTED
            or (n.domain not in ("", "ai.onnx") and n.domain not in QONNX_DOMAINS)
        ]
        if unsupported:
            listing = "; ".join(
                f"{n.name or '?'} ({n.op_type}{', domain ' + n.domain if n.domain else ''})"
                for n in unsupported
            )
            raise BitloomError(
                f"{self.source}: unsupported op(s): {listing}. bitloom maps Quant/IntQuant, "
                "BipolarQuant, MatMul, Gemm, Add, Sub, Mul, Div, Relu, Clip, Reshape, "
                "Flatten, Identity and shape constants; remove or replace the others."
            )

    def run(self) -> Network:
        graph = self.model.graph
        self.check_supported()
        initializers = {t.name for t in graph.initializer}
        for t in graph.initializer:
            self.values[t.name] = Constant(numpy_helper.to_array(t))
        inputs = [i for i in graph.input if i.name not in initializers]
        if len(inputs) != 1 or len(graph.output) != 1:
            raise BitloomError(
                f"{self.source}: the model has {len(inputs)} inputs and {len(graph.output)} "
                "outputs; this version of bitloom compiles models with exactly one of each."
            )
        graph_input = inputs[0]
        shape = self._static_shape(graph_input)
        self.values[graph_input.name] = FloatInput(graph_input.name, shape[1:], shape[1:])
        for node in graph.node:
            self._visit(node)
        return self._finish(graph.output[0].name)

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
    def _visit(self, node: onnx.NodeProto) -> None:
        ins = [self.values.get(name) if name else None for name in node.input]
        for name, v in zip(node.input, ins, strict=True):
            if name and v is None:
                raise self.fail(node, f"input {name!r} is produced by no node we know.")
        op = node.op_type
        if op in ("Quant", "IntQuant", "BipolarQuant"):
            out = self._quant(node, ins)
        elif all(isinstance(v, Constant) or v is None for v in ins) or op == "Shape":
            out = self._fold_constant(node, ins)
        elif op in ("MatMul", "Gemm"):
            out = self._matmul(node, ins)
        elif op in ("Add", "Sub", "Mul", "Div"):
            out = self._arith(node, ins)
        elif op in ("Relu", "Clip"):
            out = self._clamp(node, ins)
        elif op == "Transpose" and isinstance(ins[0], QuantConstant):
            out = self._transpose_weights(node, ins[0])
        elif op in LAYOUT_OPS:
            out = self._layout(node, ins)
        elif op in PASS_THROUGH_OPS:
            out = ins[0]
        else:
            raise self.fail(node, f"{op} on a non-constant tensor is not supported yet.")
        self.values[node.output[0]] = out
        if isinstance(out, (Stream, Derived)) and out.producer >= 0:
            self.layer_nodes[out.producer].append(node.name or op)

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

    def _const_input(self, node: onnx.NodeProto, v: Value | None, what: str) -> np.ndarray:
        if not isinstance(v, Constant):
            raise self.fail(node, f"its {what} must be a constant initializer.")
        return v.value

    def _quant(self, node: onnx.NodeProto, ins: list[Value | None]) -> Value:
        attrs = attributes(node)
        scale = self._const_input(node, ins[1], "scale").astype(np.float32)
        if np.any(scale <= 0) or not np.all(np.isfinite(scale)):
            raise self.fail(node, "its scale must be positive and finite.")
        if node.op_type == "BipolarQuant":
            fmt, zero_point, rounding = Int(1, signed=True), 0, "round"
        else:
            zp = self._const_input(node, ins[2], "zero point")
            bits = self._const_input(node, ins[3], "bit width")
            if bits.size != 1 or float(bits) != int(bits) or not 1 <= int(bits) <= 16:
                raise self.fail(node, f"bit width {bits} is not an integer in 1..16.")
            if zp.size != 1 or float(zp) != int(zp):
                raise self.fail(node, "only a single integer zero point is supported.")
            zero_point = int(zp)
            try:
                rounding = normalize_rounding(str(attrs.get("rounding_mode", "ROUND")))
            except ValueError as exc:
                raise self.fail(node, str(exc)) from None
            fmt = Int(int(bits), bool(attrs.get("signed", 1)), bool(attrs.get("narrow", 0)))
        x = ins[0]
        if isinstance(x, Constant):
            return self._quantize_weights(node, x.value, scale, zero_point, fmt, rounding)
        if scale.size != 1 and not isinstance(x, Derived):
            raise self.fail(node, "activation quantizers need a per-tensor scale.")
        if isinstance(x, FloatInput):
            if self.input_quant is not None:
                raise self.fail(node, "the model input is quantized twice.")
            self.input_quant = InputQuantizer(
                x.name, x.shape, x.flat_shape, fmt, float(scale.reshape(-1)[0]), zero_point,
                rounding,
            )
            return Stream(-1, fmt, scale.reshape(-1), zero_point, x.flat_shape)
        if isinstance(x, Derived):
            return self._requantize(node, x, scale, zero_point, fmt, rounding)
        raise self.fail(node, "re-quantizing an already quantized tensor is not supported yet.")

    def _quantize_weights(self, node, w, scale, zero_point, fmt: Int, rounding) -> QuantConstant:
        if zero_point != 0:
            raise self.fail(node, "weights with a non-zero zero point are not supported.")
        w = w.astype(np.float32)
        if fmt.bipolar:
            values = np.where(w >= 0, 1, -1).astype(np.int64)
        else:
            # Weights are few: quantize each exactly (clip, then round, as QONNX does).
            s = np.broadcast_to(scale, w.shape)
            values = np.empty(w.shape, dtype=np.int64)
            for idx in np.ndindex(w.shape):
                t = Fraction(float(w[idx])) / Fraction(float(s[idx]))
                t = min(max(t, Fraction(fmt.min_int)), Fraction(fmt.max_int))
                values[idx] = round_exact(t, rounding)
        return QuantConstant(values, scale, fmt)

    def _requantize(self, node, x: Derived, scale, zero_point, fmt: Int, rounding) -> Stream:
        layer = self.layers[x.producer]
        if layer.requant is not None:
            raise self.fail(node, "a layer output is quantized twice.")
        if scale.size != 1:
            raise self.fail(node, "per-channel activation scales are not supported yet.")
        s = Fraction(float(scale.reshape(-1)[0]))
        lo, hi = Fraction(fmt.min_int), Fraction(fmt.max_int)

        def quantize(v: Fraction, c: int) -> int:
            if fmt.bipolar:
                return 1 if v >= 0 else -1
            return round_exact(min(max(v / s + zero_point, lo), hi), rounding)

        layer.requant = derive_thresholds(x.chain, quantize, layer.acc_fmt, fmt)
        return Stream(x.producer, fmt, scale.reshape(-1), zero_point, x.shape)

    def _transpose_weights(self, node, w: QuantConstant) -> QuantConstant:
        perm = attributes(node).get("perm") or list(range(w.values.ndim))[::-1]
        scale = np.asarray(w.scale)
        if scale.ndim == w.values.ndim:
            scale = scale.transpose(perm)
        elif scale.size != 1:
            raise self.fail(node, "cannot transpose weights with this scale shape.")
        return QuantConstant(w.values.transpose(perm), scale, w.fmt)

    def _weights_of(self, node, v: Value | None) -> QuantConstant:
        if isinstance(v, QuantConstant):
            return v
        if isinstance(v, Constant):
            raise self.fail(node, "its weights are float; quantize them (e.g. a QONNX Quant).")
        raise self.fail(node, "multiplying two activation tensors is not supported.")

    def _matmul(self, node, ins: list[Value | None]) -> Derived:
        attrs = attributes(node)
        x = ins[0]
        if not isinstance(x, Stream):
            raise self.fail(node, "its input is not quantized; put a Quant node before it.")
        if len(x.shape) != 1:
            raise self.fail(node, f"input of per-sample shape {x.shape}: only vectors map.")
        if x.scale.size != 1:
            raise self.fail(node, "the input needs a per-tensor scale.")
        if attrs.get("transA", 0):
            raise self.fail(node, "transA=1 is not supported.")
        w = self._weights_of(node, ins[1])
        values, wscale = w.values, np.asarray(w.scale, dtype=np.float32)
        if values.ndim != 2:
            raise self.fail(node, f"weights of rank {values.ndim}: expected a 2-D matrix.")
        if attrs.get("transB", 0):
            values = values.T
            wscale = wscale.T if wscale.ndim == 2 else wscale
        k, n = values.shape
        if k != x.shape[0]:
            raise self.fail(node, f"weights have {k} rows for an input of {x.shape[0]}.")
        if wscale.size not in (1, n) or (wscale.ndim == 2 and wscale.shape[0] != 1):
            raise self.fail(node, "weight scales must be per-tensor or per output channel.")
        a = [Fraction(float(x.scale[0])) * s for s in as_fractions(wscale, n)]
        colsum = values.sum(axis=0)
        b = [-ai * x.zero_point * int(cs) for ai, cs in zip(a, colsum, strict=True)]
        chain = Chain(n).then(Affine(a, b))
        if node.op_type == "Gemm":
            alpha, beta = attrs.get("alpha", 1.0), attrs.get("beta", 1.0)
            chain = chain.then(Affine(as_fractions(alpha, n), [Fraction(0)] * n))
            if len(ins) > 2 and ins[2] is not None:
                bias = self._const_input(node, ins[2], "bias C")
                if bias.size not in (1, n):
                    raise self.fail(node, "bias C must be per output channel.")
                shift = as_fractions(np.float32(beta) * bias, n)
                chain = chain.then(Affine([Fraction(1)] * n, shift))
        index = len(self.layers)
        acc = accumulator_format(w.fmt, x.fmt, k)
        name = f"mvu{index}"
        self.layers.append(MatrixVector(name, values.astype(np.int64), x.fmt, w.fmt, acc))
        self.layer_nodes.append([node.name or node.op_type])
        return Derived(index, chain, (n,))

    def _per_channel(self, node, c: np.ndarray, x: Derived) -> list[Fraction]:
        c = np.asarray(c, dtype=np.float32)
        n = x.chain.channels
        if c.size not in (1, n) or (c.size == n and c.shape[-1:] != (n,)):
            raise self.fail(node, f"constant of shape {c.shape} is not per-channel ({n}).")
        return as_fractions(c, n)

    def _arith(self, node, ins: list[Value | None]) -> Derived:
        op = node.op_type
        x, c = ins
        swapped = False
        if isinstance(x, Constant) and isinstance(c, Derived):
            x, c, swapped = c, x, True
        if not (isinstance(x, Derived) and isinstance(c, Constant)):
            if isinstance(x, Stream) or isinstance(c, Stream):
                raise self.fail(node, f"{op} on a quantized tensor needs a Quant after the "
                                "float op; adding two branches is not supported yet.")
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

    def _clamp(self, node, ins: list[Value | None]) -> Derived:
        x = ins[0]
        if not isinstance(x, Derived):
            raise self.fail(node, f"{node.op_type} must follow a MatMul/Gemm here.")
        if node.op_type == "Relu":
            return Derived(x.producer, x.chain.then(Clamp(Fraction(0), None)), x.shape)
        attrs = attributes(node)
        lo = attrs.get("min")
        hi = attrs.get("max")
        if len(ins) > 1 and ins[1] is not None:
            lo = float(self._const_input(node, ins[1], "min"))
        if len(ins) > 2 and ins[2] is not None:
            hi = float(self._const_input(node, ins[2], "max"))
        clamp = Clamp(None if lo is None else Fraction(float(lo)),
                      None if hi is None else Fraction(float(hi)))
        return Derived(x.producer, x.chain.then(clamp), x.shape)

    def _layout(self, node, ins: list[Value | None]) -> Value:
        x = ins[0]
        old = x.flat_shape if isinstance(x, FloatInput) else x.shape
        if node.op_type == "Flatten":
            attrs = attributes(node)
            if attrs.get("axis", 1) != 1:
                raise self.fail(node, "only Flatten(axis=1) keeps the batch axis.")
            new = (int(np.prod(old)),)
        else:
            target = [int(v) for v in self._const_input(node, ins[1], "shape")]
            if not target or target[0] not in (1, -1, 0):
                raise self.fail(node, f"reshape to {target} would mix samples of a batch.")
            try:
                new = np.empty((1, *old)).reshape([1, *target[1:]] if target[0] != -1
                                                  else [-1, *target[1:]]).shape[1:]
            except ValueError:
                raise self.fail(node, f"cannot reshape {old} to {target}.") from None
        if isinstance(x, FloatInput):
            return FloatInput(x.name, x.shape, tuple(new))
        if isinstance(x, (Stream, Derived)):
            if len(new) != 1 and tuple(new) != old:
                raise self.fail(node, f"reshape of a layer output to {new} is not supported.")
            return type(x)(**{**x.__dict__, "shape": tuple(new)})
        raise self.fail(node, "reshape of this tensor is not supported.")

    # -- the end ------------------------------------------------------------------------------
    def _finish(self, output_name: str) -> Network:
        out = self.values.get(output_name)
        if self.input_quant is None or not self.layers:
            raise BitloomError(
                f"{self.source}: found no quantized layer. bitloom needs a quantized model "
                "(QONNX Quant nodes on the input and the weights); export one with Brevitas."
            )
        if not isinstance(out, Derived) or out.producer != len(self.layers) - 1:
            raise BitloomError(
                f"{self.source}: the output {output_name!r} must be the float result of the "
                "last MatMul/Gemm (with bias, scales or ReLU); other outputs are not supported."
            )
        for i, layer in enumerate(self.layers[:-1]):
            if layer.requant is None:
                raise BitloomError(
                    f"{self.source}: layer {i} ({', '.join(self.layer_nodes[i])}) feeds "
                    "another layer without a Quant in between; quantize its output."
                )
        for i, layer in enumerate(self.layers):
            layer.source_nodes = self.layer_nodes[i]
        return Network(
            self.source, self.input_quant, self.layers,
            OutputDequantizer(output_name, out.shape, out.chain),
        )


def load_qonnx(source: str | Path | onnx.ModelProto) -> Network:
    model, name = read_model(source)
    return QonnxImporter(model, name).run()

