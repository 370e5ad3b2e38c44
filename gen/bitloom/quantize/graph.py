"""Reading a float ONNX graph for post-training quantization.

BatchNorm is folded into the Conv/Gemm before it (or, standing alone, rewritten as a
per-channel Mul and Add), so calibration and weight quantization see the weights the
hardware will hold. Then one walk in topological order decides where activation quantizers
go: at the input, after every ReLU/Clip, after an Add of two branches, and before any
MatMul/Gemm/Conv, Add or Concat whose input is not already on a quantized grid (ahead of the
Flatten/Reshape in between, where there is one). Concat joins its
branches' quantizers into one group that shares a scale, so the concatenated tensor is on one
grid. What the walk does not know is refused, naming the node.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper, numpy_helper

from bitloom.errors import BitloomError

WEIGHTED = ("MatMul", "Gemm", "Conv")
ACTIVATIONS = ("Relu", "Clip")
#: ops whose output is on the grid of their input (values are only moved or selected)
LAYOUT = ("Flatten", "Reshape", "Identity", "Dropout", "Transpose", "Squeeze", "Unsqueeze")
TRANSPARENT = ("MaxPool", *LAYOUT)
AVERAGING = ("AveragePool", "GlobalAveragePool")
ARITHMETIC = ("Add", "Sub", "Mul", "Div")
#: float ops a classifier may end with (bitloom runs them on the host)
HEADS = ("Softmax", "LogSoftmax")
#: ops whose output depends only on shapes, never on activation values
SHAPE_OPS = ("Shape", "Size")
SUPPORTED = (*WEIGHTED, *ACTIVATIONS, *TRANSPARENT, *AVERAGING, *ARITHMETIC, *HEADS, "Concat",
             "BatchNormalization")


def label(node: onnx.NodeProto) -> str:
    return f"node {node.name!r} ({node.op_type})" if node.name else f"a {node.op_type} node"


def attrs(node: onnx.NodeProto) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


@dataclass
class Layer:
    """A MatMul/Gemm/Conv: ``x`` is its activation input, ``w`` its weight initializer."""

    node: onnx.NodeProto
    x: str
    w: str
    channel_axis: int  # axis of ``w`` that indexes output channels
    source: str = ""  # the quantized tensor ``x`` is read from (``x`` or one before a Flatten)
    bias_add: onnx.NodeProto | None = None  # the Add holding a MatMul's bias, if any


@dataclass
class Plan:
    """Where quantizers go: ``points`` maps each quantized tensor to whether it is
    non-negative by construction; ``group`` maps it to the tensor whose scale it shares."""

    points: dict[str, bool] = field(default_factory=dict)
    group: dict[str, str] = field(default_factory=dict)
    layers: list[Layer] = field(default_factory=list)

    def root(self, t: str) -> str:
        while self.group[t] != t:
            t = self.group[t]
        return t

    def groups(self) -> dict[str, list[str]]:
        """Group root -> its member tensors, in the order the quantizers were placed."""
        out: dict[str, list[str]] = {}
        for t in self.points:
            out.setdefault(self.root(t), []).append(t)
        return out


class FloatGraph:
    """A private copy of the float model, rewritten (BN folding) and planned."""

    def __init__(self, model: onnx.ModelProto, source: str) -> None:
        try:  # ranks for BN rewriting; a copy either way, since the graph is rewritten
            self.model = onnx.shape_inference.infer_shapes(model)
        except Exception:  # shape inference is a convenience; models it rejects still run
            self.model = onnx.ModelProto()
            self.model.CopyFrom(model)
        self.source = source
        g = self.model.graph
        self.inits = {t.name: numpy_helper.to_array(t) for t in g.initializer}
        for node in g.node:
            if node.op_type == "Constant" and node.attribute:
                v = helper.get_attribute_value(node.attribute[0])
                v = numpy_helper.to_array(v) if isinstance(v, onnx.TensorProto) else np.asarray(v)
                self.inits.setdefault(node.output[0], v)
        inputs = [i for i in g.input if i.name not in self.inits]
        if len(inputs) != 1:
            raise BitloomError(f"{source}: the model has {len(inputs)} inputs; quantize "
                               "calibrates models with exactly one input.")
        self.input = inputs[0]
        #: nodes to emit right after the node producing the key (a MatMul's new bias Add)
        self.inserted: dict[str, onnx.NodeProto] = {}
        self.names = {t.name for t in g.initializer} | {n for node in g.node for n in
                                                         (*node.input, *node.output)}
        self.names |= {i.name for i in g.input} | {node.name for node in g.node}

    # -- helpers --------------------------------------------------------------------------
    def fail(self, node: onnx.NodeProto, message: str) -> BitloomError:
        return BitloomError(f"{self.source}: {label(node)}: {message}")

    def fresh(self, base: str) -> str:
        """A tensor/node name not used in the graph yet."""
        name, i = base, 0
        while name in self.names:
            i += 1
            name = f"{base}_{i}"
        self.names.add(name)
        return name

    def add_init(self, base: str, value: np.ndarray) -> str:
        name = self.fresh(base)
        value = np.asarray(value, dtype=np.float32)
        self.model.graph.initializer.append(numpy_helper.from_array(value, name))
        self.inits[name] = value
        return name

    def consumers(self, t: str) -> list[onnx.NodeProto]:
        return [n for n in self.model.graph.node if t in n.input]

    def is_output(self, t: str) -> bool:
        return any(o.name == t for o in self.model.graph.output)

    def producer(self, t: str) -> onnx.NodeProto | None:
        return next((n for n in self.model.graph.node if t in n.output), None)

    def const(self, node: onnx.NodeProto, t: str, what: str) -> np.ndarray:
        if t not in self.inits:
            raise self.fail(node, f"its {what} {t!r} must be a constant initializer.")
        return self.inits[t]

    # -- BatchNorm ------------------------------------------------------------------------
    def fold_batchnorm(self) -> None:
        """Fold every BatchNormalization into the Conv/Gemm producing its input, or rewrite
        it as Mul + Add when there is none (e.g. BN on the model input)."""
        for bn in [n for n in self.model.graph.node if n.op_type == "BatchNormalization"]:
            a = attrs(bn)
            if a.get("training_mode", 0) or len([o for o in bn.output if o]) > 1:
                raise self.fail(bn, "BatchNorm in training mode; export the model in eval mode.")
            gamma, beta, mean, var = (self.const(bn, t, w) for t, w in zip(
                bn.input[1:5], ("scale", "bias", "mean", "variance"), strict=True))
            s = gamma / np.sqrt(var + a.get("epsilon", 1e-5))
            t = beta - mean * s
            prev = self.producer(bn.input[0])
            foldable = (prev is not None and prev.op_type in ("Conv", "Gemm")
                        and prev.input[1] in self.inits and len(self.consumers(bn.input[0])) == 1
                        and not self.is_output(bn.input[0])
                        and not (prev.op_type == "Gemm" and attrs(prev).get("transA", 0)))
            if foldable:
                self._fold_into(prev, s, t)
                prev.output[0] = bn.output[0]
                self.model.graph.node.remove(bn)
            else:
                self._bn_as_affine(bn, s, t)

    def _fold_into(self, prev: onnx.NodeProto, s: np.ndarray, t: np.ndarray) -> None:
        w = self.inits[prev.input[1]]
        a = attrs(prev)
        bias = self.inits[prev.input[2]] if len(prev.input) > 2 and prev.input[2] else 0.0
        if prev.op_type == "Conv":
            w = w * s.reshape(-1, *[1] * (w.ndim - 1))
            new_bias = np.broadcast_to(bias, s.shape) * s + t
        else:  # Gemm: y = alpha * x @ W + beta * C, BN acts on its last axis
            w = w * (s[:, None] if a.get("transB", 0) else s[None, :])
            beta = a.get("beta", 1.0)
            new_bias = np.broadcast_to(bias, s.shape) * s + t / beta
        prev.input[1] = self.add_init(f"{prev.input[1]}_bnfolded", w)
        b = self.add_init(f"{prev.name or prev.op_type}_bnbias", new_bias)
        if len(prev.input) > 2:
            prev.input[2] = b
        else:
            prev.input.append(b)

    def rank(self, t: str) -> int | None:
        """The rank of tensor ``t`` per shape inference, None when unknown."""
        g = self.model.graph
        return next((len(v.type.tensor_type.shape.dim) for v in (*g.value_info, *g.input)
                     if v.name == t and v.type.tensor_type.HasField("shape")), None)

    def _bn_as_affine(self, bn: onnx.NodeProto, s: np.ndarray, t: np.ndarray) -> None:
        rank = self.rank(bn.input[0])
        if rank is None:
            raise self.fail(bn, "the rank of its input is unknown (run shape inference).")
        cshape = (-1, *[1] * (rank - 2))
        mid = self.fresh(f"{bn.output[0]}_scaled")
        i = list(self.model.graph.node).index(bn)
        mul = helper.make_node("Mul", [bn.input[0], self.add_init("bn_scale", s.reshape(cshape))],
                               [mid], name=self.fresh(f"{bn.name}_mul"))
        add = helper.make_node("Add", [mid, self.add_init("bn_shift", t.reshape(cshape))],
                               [bn.output[0]], name=self.fresh(f"{bn.name}_add"))
        self.model.graph.node.remove(bn)
        self.model.graph.node.insert(i, add)
        self.model.graph.node.insert(i, mul)

    # -- global pooling -------------------------------------------------------------------
    def global_pooling(self) -> None:
        """A ReduceMean over all spatial axes (how torch's dynamo exporter writes
        AdaptiveAvgPool2d(1)) becomes GlobalAveragePool (+ Flatten without keepdims): the
        same function, and the op bitloom maps to a pooling layer."""
        for node in list(self.model.graph.node):
            if node.op_type != "ReduceMean":
                continue
            a = attrs(node)
            axes = a.get("axes")
            if axes is None and len(node.input) > 1 and node.input[1]:
                axes = self.inits.get(node.input[1])
            rank = self.rank(node.input[0])
            if axes is None or rank is None or rank < 3:
                continue
            if sorted(int(x) % rank for x in np.ravel(axes)) != list(range(2, rank)):
                continue
            pooled = node.output[0] if a.get("keepdims", 1) else self.fresh(f"{node.output[0]}_gap")
            new = [helper.make_node("GlobalAveragePool", [node.input[0]], [pooled],
                                    name=self.fresh(f"{node.name or 'reduce_mean'}_gap"))]
            if pooled != node.output[0]:
                new.append(helper.make_node("Flatten", [pooled], [node.output[0]], axis=1,
                                            name=self.fresh(f"{node.name or 'reduce_mean'}_flat")))
            at = list(self.model.graph.node).index(node)
            self.model.graph.node.remove(node)
            for n in reversed(new):
                self.model.graph.node.insert(at, n)

    # -- planning -------------------------------------------------------------------------
    def plan(self, input_nonneg: bool) -> Plan:
        """Walk the graph once and place the quantizers (see the module docstring)."""
        plan = Plan()
        kind: dict[str, str] = {t: "const" for t in self.inits}  # const | q (quantized) | f
        root: dict[str, str] = {}
        nonneg: dict[str, bool] = {}

        def place(t: str, nn: bool) -> None:
            plan.points[t] = nn
            plan.group[t] = t
            kind[t], root[t], nonneg[t] = "q", t, nn

        def ensure_quantized(t: str) -> str:
            """Quantize ``t``, or rather the tensor before the layout ops producing it:
            quantizing is elementwise, so that is the same, and hardware quantizes a feature
            map before it is flattened. Returns the tensor carrying the quantizer."""
            if kind[t] == "q":
                return root[t]
            chain = [t]
            while (p := self.producer(t)) is not None and p.op_type in LAYOUT:
                readers = [n for n in self.consumers(p.input[0]) if n.op_type not in SHAPE_OPS]
                if len(readers) != 1 or self.is_output(p.input[0]):
                    break
                t = p.input[0]
                chain.append(t)
            place(t, nonneg[t])
            for c in chain:  # the layout ops' outputs are now on its grid
                kind[c], root[c] = "q", t
            return t

        place(self.input.name, input_nonneg)
        for node in self.model.graph.node:
            ins = [i for i in node.input if i]
            if node.domain not in ("", "ai.onnx"):
                raise self.fail(node, f"domain {node.domain!r} is not a float ONNX op; "
                                "quantize expects an unquantized model.")
            for i in ins:
                if i not in kind:
                    raise self.fail(node, f"input {i!r} is produced by no earlier node.")
            if node.op_type in SHAPE_OPS or all(kind[i] == "const" for i in ins):
                for o in node.output:
                    kind[o] = "const"
                continue
            acts = [i for i in ins if kind[i] != "const"]
            op, out = node.op_type, node.output[0]
            if op in WEIGHTED:
                plan.layers.append(self._layer(node, kind))
                plan.layers[-1].source = ensure_quantized(node.input[0])
                kind[out], nonneg[out] = "f", False
            elif op in ACTIVATIONS:
                low = (self.const(node, node.input[1], "minimum")
                       if len(node.input) > 1 and node.input[1] else attrs(node).get("min"))
                place(out, op == "Relu" or (low is not None and float(np.min(low)) >= 0))
            elif op in TRANSPARENT or op in AVERAGING:
                if acts != [node.input[0]]:
                    raise self.fail(node, "only its first input may be an activation.")
                x = node.input[0]
                kind[out], nonneg[out] = ("f" if op in AVERAGING else kind[x]), nonneg[x]
                if kind[out] == "q":
                    root[out] = root[x]
            elif (op in ARITHMETIC and len(acts) == 1) or op in HEADS:
                kind[out], nonneg[out] = "f", False  # a float affine op (bias, scale), softmax
            elif op == "Add":
                for i in acts:
                    ensure_quantized(i)
                followers = self.consumers(out)
                activated = (len(followers) == 1 and followers[0].op_type in ACTIVATIONS
                             and not self.is_output(out))
                if activated:  # the activation after it re-quantizes
                    kind[out], nonneg[out] = "f", False
                else:
                    place(out, all(nonneg[i] for i in acts))
            elif op == "Concat" and len(acts) == len(ins):
                roots = [plan.root(ensure_quantized(i)) for i in acts]
                first = roots[0]
                for r in roots[1:]:
                    plan.group[plan.root(r)] = first
                kind[out], root[out] = "q", first
                nonneg[out] = all(nonneg[i] for i in acts)
            else:
                raise self.fail(node, "is not supported by bitloom quantize on activations. "
                                f"Supported: {', '.join(SUPPORTED)} (Add/Sub/Mul/Div with a "
                                "constant operand, Add and Concat of activations), and "
                                "constant shape expressions.")
        self._find_biases(plan)
        return plan

    def _layer(self, node: onnx.NodeProto, kind: dict[str, str]) -> Layer:
        a = attrs(node)
        x, w = node.input[0], node.input[1]
        if kind[x] == "const" or w not in self.inits:
            raise self.fail(node, "needs an activation as its first input and a constant "
                            "weight initializer as its second.")
        if node.op_type == "Gemm" and a.get("transA", 0):
            raise self.fail(node, "transA=1 is not supported; export with transA=0.")
        if node.op_type == "Gemm":
            axis = 0 if a.get("transB", 0) else 1
        else:
            axis = 0 if node.op_type == "Conv" else self.inits[w].ndim - 1
        if node.op_type == "MatMul" and self.inits[w].ndim != 2:
            raise self.fail(node, "needs a 2-D weight matrix.")
        return Layer(node, x, w, axis)

    def _find_biases(self, plan: Plan) -> None:
        """A MatMul's bias is the constant of the Add that alone consumes its output."""
        for layer in plan.layers:
            if layer.node.op_type != "MatMul":
                continue
            out = layer.node.output[0]
            followers = self.consumers(out)
            if len(followers) != 1 or followers[0].op_type != "Add" or self.is_output(out):
                continue
            add = followers[0]
            other = [i for i in add.input if i != out]
            n = self.inits[layer.w].shape[1]
            if len(other) == 1 and other[0] in self.inits:
                c = self.inits[other[0]]
                if c.size in (1, n) and (c.ndim == 0 or c.shape[-1] in (1, n)):
                    layer.bias_add = add
