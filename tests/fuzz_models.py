"""A seeded mutator of valid quantized ONNX models, for the CLI's "never a traceback" rule.

``mutant(i)`` deterministically picks a seed model and one or more mutations from ``i`` and
returns ``(bytes, description, input_shape)``. Mutations cover the structure (dropped or
dangling inputs, cycles, removed initializers, shuffled nodes, renamed ops and domains,
extra outputs), types and shapes (wrong element types, wrong or symbolic dimensions,
mismatched initializer data), attributes (missing, wrong type, absurd values) and the bytes
of the serialized file (truncation, bit flips, garbage).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from functools import cache
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parent.parent
QONNX = "qonnx.custom_op.general"


# -- seed models -----------------------------------------------------------------------------
def _qonnx_cnn() -> onnx.ModelProto:
    """A tiny QONNX CNN: Quant -> Conv -> Relu -> Quant -> MaxPool -> Flatten -> MatMul."""
    from qonnx_models import Builder

    rng = np.random.default_rng(0)
    b = Builder()
    x = b.quant("inp", 2.0 ** -3, 4, False)
    w = b.quant(b.const(rng.normal(size=(3, 1, 3, 3))), 0.25, 4, True)
    y = b.node("Conv", [x, w], kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[1, 1])
    y = b.quant(b.node("Relu", [y]), 0.5, 4, False)
    y = b.node("MaxPool", [y], kernel_shape=[2, 2], strides=[2, 2])
    y = b.node("Flatten", [y], axis=1)
    w2 = b.quant(b.const(rng.normal(size=(48, 4))), 0.25, 4, True)
    out = b.node("MatMul", [y, w2])
    return b.model("inp", [1, 1, 8, 8], out, [1, 4])


def _qdq_mlp() -> onnx.ModelProto:
    """A hand-written ONNX Q/DQ MLP (what onnxruntime's quantizer writes, minus calibration)."""
    rng = np.random.default_rng(1)
    inits = [numpy_helper.from_array(np.float32(0.05), "xs"),
             numpy_helper.from_array(np.uint8(128), "xz"),
             numpy_helper.from_array(rng.integers(-127, 128, (12, 8)).astype(np.int8), "w"),
             numpy_helper.from_array(np.float32(0.01), "ws"),
             numpy_helper.from_array(np.int8(0), "wz"),
             numpy_helper.from_array(rng.normal(size=8).astype(np.float32), "b"),
             numpy_helper.from_array(np.float32(0.1), "ys"),
             numpy_helper.from_array(np.uint8(0), "yz")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"], name="q0"),
             helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"], name="dq0"),
             helper.make_node("DequantizeLinear", ["w", "ws", "wz"], ["wd"], name="dqw"),
             helper.make_node("MatMul", ["xd", "wd"], ["mm"], name="mm"),
             helper.make_node("Add", ["mm", "b"], ["acc"], name="add"),
             helper.make_node("Relu", ["acc"], ["r"], name="relu"),
             helper.make_node("QuantizeLinear", ["r", "ys", "yz"], ["yq"], name="q1"),
             helper.make_node("DequantizeLinear", ["yq", "ys", "yz"], ["y"], name="dq1")]
    graph = helper.make_graph(nodes, "qdq", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [1, 12])], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT, [1, 8])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])


@cache
def seeds() -> tuple[tuple[str, bytes], ...]:
    from qonnx_models import minifloat_mlp, random_mlp

    models = [("mlp_digits", onnx.load(str(ROOT / "examples" / "mlp_digits.onnx"))),
              ("random_mlp", random_mlp(1)),
              ("random_mlp_bipolar_gemm", random_mlp(2, bipolar_weights=True, gemm=True)),
              ("minifloat_mlp_e3m2", minifloat_mlp(1, 3, 2, sizes=(8, 6, 4))),
              ("qonnx_cnn", _qonnx_cnn()),
              ("qdq_mlp", _qdq_mlp())]
    return tuple((name, m.SerializeToString()) for name, m in models)


def input_shape(model: onnx.ModelProto) -> tuple[int, ...]:
    inits = {t.name for t in model.graph.initializer}
    for i in model.graph.input:
        if i.name not in inits:
            return tuple(max(d.dim_value, 1) for d in i.type.tensor_type.shape.dim)
    return (1, 4)


# -- mutations on the model ------------------------------------------------------------------
def _node(m: onnx.ModelProto, rng) -> onnx.NodeProto:
    return m.graph.node[int(rng.integers(len(m.graph.node)))]


def drop_input(m, rng):
    n = _node(m, rng)
    if not n.input:
        return "no-op (node without inputs)"
    k = int(rng.integers(len(n.input)))
    name = n.input[k]
    if rng.random() < 0.5:
        del n.input[k]
        return f"dropped input {k} ({name}) of {n.op_type} {n.name}"
    n.input[k] = ""
    return f"blanked optional-style input {k} ({name}) of {n.op_type} {n.name}"


def dangling_input(m, rng):
    n = _node(m, rng)
    k = int(rng.integers(max(len(n.input), 1)))
    if n.input:
        n.input[k] = "no_such_tensor"
    else:
        n.input.append("no_such_tensor")
    return f"input {k} of {n.op_type} {n.name} -> no_such_tensor"


def cycle(m, rng):
    nodes = m.graph.node
    if len(nodes) < 2:
        return "no-op"
    i = int(rng.integers(len(nodes) - 1))
    j = int(rng.integers(i, len(nodes)))
    if nodes[i].input:
        nodes[i].input[0] = nodes[j].output[0]
    return f"input 0 of node {i} ({nodes[i].op_type}) <- output of node {j} ({nodes[j].op_type})"


def self_loop(m, rng):
    n = _node(m, rng)
    if n.input:
        n.input[0] = n.output[0]
    return f"{n.op_type} {n.name} consumes its own output"


def shuffle_nodes(m, rng):
    nodes = list(m.graph.node)
    rng.shuffle(nodes)
    del m.graph.node[:]
    m.graph.node.extend(nodes)
    return "nodes shuffled (not topological)"


def remove_node(m, rng):
    k = int(rng.integers(len(m.graph.node)))
    op = m.graph.node[k].op_type
    del m.graph.node[k]
    return f"removed node {k} ({op})"


def duplicate_node(m, rng):
    n = _node(m, rng)
    m.graph.node.append(copy.deepcopy(n))
    return f"duplicated {n.op_type} {n.name} (two producers of {list(n.output)})"


def remove_initializer(m, rng):
    if not m.graph.initializer:
        return "no-op"
    k = int(rng.integers(len(m.graph.initializer)))
    name = m.graph.initializer[k].name
    del m.graph.initializer[k]
    return f"removed initializer {name}"


def rename_op(m, rng):
    n = _node(m, rng)
    old = n.op_type
    n.op_type = str(rng.choice(["Conv", "Gemm", "Quant", "FloatQuant", "BipolarQuant", "Trunc",
                                "QuantizeLinear", "DequantizeLinear", "QLinearConv",
                                "MatMulInteger", "Relu", "Softmax", "LSTM", "Foo", "",
                                "MaxPool", "Concat", "Add", "Reshape", "MultiThreshold",
                                "GlobalAveragePool", "Transpose", "Loop", "If"]))
    return f"op {old} -> {n.op_type!r} ({n.name})"


def rename_domain(m, rng):
    n = _node(m, rng)
    old = n.domain
    n.domain = str(rng.choice(["", "ai.onnx", "qonnx.custom_op.general", "onnx.brevitas",
                               "finn.custom_op.general", "com.microsoft", "bogus.domain"]))
    return f"domain of {n.op_type} {old!r} -> {n.domain!r}"


def opset(m, rng):
    op = m.opset_import[int(rng.integers(len(m.opset_import)))]
    old = op.version
    op.version = int(rng.choice([1, 7, 9, 10, 13, 18, 19, 21, 23, 25, 99, -1, 0]))
    if rng.random() < 0.2:
        del m.opset_import[:]
        return "removed every opset import"
    return f"opset {op.domain or 'ai.onnx'} {old} -> {op.version}"


def wrong_elem_type(m, rng):
    t = int(rng.choice([TensorProto.INT8, TensorProto.UINT8, TensorProto.DOUBLE,
                        TensorProto.FLOAT16, TensorProto.STRING, TensorProto.BOOL,
                        TensorProto.INT64, TensorProto.BFLOAT16, TensorProto.COMPLEX64,
                        TensorProto.FLOAT8E4M3FN, TensorProto.UNDEFINED, 99]))
    target = rng.integers(3)
    if target == 0:
        info = m.graph.input[0]
    elif target == 1:
        info = m.graph.output[0]
    else:
        if not m.graph.initializer:
            return "no-op"
        init = m.graph.initializer[int(rng.integers(len(m.graph.initializer)))]
        old = init.data_type
        init.data_type = t
        return f"initializer {init.name} type {old} -> {t} (data left as is)"
    info.type.tensor_type.elem_type = t
    return f"elem type of {info.name} -> {t}"


def wrong_shape(m, rng):
    info = m.graph.input[0] if rng.random() < 0.7 else m.graph.output[0]
    dims = info.type.tensor_type.shape.dim
    choice = int(rng.integers(6))
    if choice == 0 and len(dims) > 0:
        k = int(rng.integers(len(dims)))
        dims[k].dim_value = int(rng.choice([0, 1, 3, 1000, 2**31]))
        return f"{info.name} dim {k} -> {dims[k].dim_value}"
    if choice == 1 and len(dims) > 0:
        k = int(rng.integers(len(dims)))
        dims[k].dim_param = "N"
        return f"{info.name} dim {k} symbolic"
    if choice == 2:
        dims.add().dim_value = 2
        return f"{info.name} extra dim"
    if choice == 3 and len(dims) > 0:
        del dims[-1]
        return f"{info.name} dropped last dim"
    if choice == 4:
        info.type.tensor_type.ClearField("shape")
        return f"{info.name} shape removed"
    info.type.ClearField("tensor_type")
    return f"{info.name} type removed"


def wrong_initializer(m, rng):
    if not m.graph.initializer:
        return "no-op"
    init = m.graph.initializer[int(rng.integers(len(m.graph.initializer)))]
    try:
        arr = numpy_helper.to_array(init)
    except Exception:
        return "no-op (unreadable initializer)"
    choice = int(rng.integers(7))
    if choice == 0 and arr.size > 1:
        new = arr.reshape(-1)[: arr.size // 2]
        what = "half the elements"
    elif choice == 1:
        new = np.zeros((*arr.shape, 2), dtype=arr.dtype)
        what = "an extra axis"
    elif choice == 2 and arr.dtype.kind == "f":
        new = np.full(arr.shape, float(rng.choice([0.0, -1.0, np.nan, np.inf, -np.inf, 1e30,
                                                   1e-45])), dtype=arr.dtype)
        what = f"all {new.reshape(-1)[0] if new.size else '-'}"
    elif choice == 3:
        new = arr.astype(rng.choice([np.float64, np.int32, np.int8, np.float16]))
        what = f"dtype {new.dtype}"
    elif choice == 4:
        init.dims.append(3)
        return f"initializer {init.name} dims say one more axis than its data"
    elif choice == 5:
        init.ClearField("raw_data")
        init.ClearField("float_data")
        init.ClearField("int32_data")
        init.ClearField("int64_data")
        return f"initializer {init.name} data removed"
    else:
        init.data_location = TensorProto.EXTERNAL
        del init.external_data[:]
        e = init.external_data.add()
        e.key, e.value = "location", str(rng.choice(["missing.bin", "../../etc/passwd",
                                                     "/dev/zero", ""]))
        return f"initializer {init.name} points to external data {e.value!r}"
    name = init.name
    init.CopyFrom(numpy_helper.from_array(np.asarray(new), name))
    return f"initializer {name} -> {what}"


ATTR_VALUES = [-1, 0, 1, 7, 2**40, 0.5, -3.5, "BOGUS", "", "ROUND", [1, 2, 3], [0, 0], [-1],
               [0.5, 0.25], ["a", "b"], [3, 3], [1, 1, 1, 1], [2, 2], [-5, 0, 9, 1]]


def _attr_value(rng):
    return ATTR_VALUES[int(rng.integers(len(ATTR_VALUES)))]


def bad_attribute(m, rng):
    n = _node(m, rng)
    choice = int(rng.integers(3))
    if choice == 0 and n.attribute:
        k = int(rng.integers(len(n.attribute)))
        name = n.attribute[k].name
        del n.attribute[k]
        return f"removed attribute {name} of {n.op_type}"
    name = str(rng.choice(["signed", "narrow", "rounding_mode", "perm", "transB", "transA",
                           "axis", "kernel_shape", "pads", "strides", "group", "dilations",
                           "alpha", "beta", "to", "saturation", "has_inf", "block_size",
                           "auto_pad", "ceil_mode", "keepdims", "axes", "allowzero",
                           "output_dtype", "max_val", "extra"]))
    value = _attr_value(rng)
    for k, a in enumerate(n.attribute):
        if a.name == name:
            del n.attribute[k]
            break
    try:
        n.attribute.append(helper.make_attribute(name, value))
    except Exception:
        n.attribute.append(helper.make_attribute(name, "junk"))
    return f"attribute {name}={value!r} on {n.op_type} {n.name}"


def extra_output(m, rng):
    n = _node(m, rng)
    choice = int(rng.integers(3))
    if choice == 0:
        m.graph.output.append(helper.make_tensor_value_info(n.output[0], TensorProto.FLOAT,
                                                            None))
        return f"graph output added: {n.output[0]}"
    if choice == 1:
        del m.graph.output[:]
        return "graph outputs removed"
    m.graph.input.append(helper.make_tensor_value_info("extra_in", TensorProto.FLOAT, [1, 4]))
    return "second graph input"


def swap_io_names(m, rng):
    n = _node(m, rng)
    if n.input and n.output:
        n.input[0], n.output[0] = n.output[0], n.input[0]
    return f"swapped input/output names of {n.op_type} {n.name}"


def empty_graph(m, rng):
    choice = int(rng.integers(3))
    if choice == 0:
        del m.graph.node[:]
        return "all nodes removed"
    if choice == 1:
        del m.graph.input[:]
        return "graph inputs removed"
    m.ClearField("graph")
    return "graph removed"


MODEL_MUTATIONS: list[Callable] = [
    drop_input, dangling_input, cycle, self_loop, shuffle_nodes, remove_node, duplicate_node,
    remove_initializer, rename_op, rename_domain, opset, wrong_elem_type, wrong_shape,
    wrong_initializer, bad_attribute, bad_attribute, wrong_initializer, extra_output,
    swap_io_names, empty_graph]


# -- mutations on the bytes -------------------------------------------------------------------
def truncate(data: bytes, rng) -> tuple[bytes, str]:
    k = int(rng.integers(0, max(len(data), 1)))
    return data[:k], f"truncated to {k} of {len(data)} bytes"


def flip(data: bytes, rng) -> tuple[bytes, str]:
    buf = bytearray(data)
    count = int(rng.choice([1, 2, 8, 64]))
    for _ in range(count):
        k = int(rng.integers(len(buf)))
        buf[k] ^= 1 << int(rng.integers(8))
    return bytes(buf), f"{count} bit flips"


def garbage(data: bytes, rng) -> tuple[bytes, str]:
    choice = int(rng.integers(4))
    if choice == 0:
        return b"", "empty file"
    if choice == 1:
        return rng.bytes(int(rng.integers(1, 4096))), "random bytes"
    if choice == 2:
        return b"ir_version: 8\ngraph { }\n", "text-format protobuf"
    k = int(rng.integers(len(data)))
    return data[:k] + rng.bytes(int(rng.integers(1, 64))) + data[k:], "random bytes inserted"


BYTE_MUTATIONS = [truncate, flip, garbage]


def mutant(index: int) -> tuple[bytes, str, tuple[int, ...]]:
    """The ``index``-th mutated model: (file bytes, description, input shape of its seed)."""
    rng = np.random.default_rng(10_000 + index)
    name, data = seeds()[int(rng.integers(len(seeds())))]
    model = onnx.ModelProto.FromString(data)
    shape = input_shape(model)
    if rng.random() < 0.25:
        mutation = BYTE_MUTATIONS[int(rng.integers(len(BYTE_MUTATIONS)))]
        out, what = mutation(data, rng)
        return out, f"{name}: {what}", shape
    steps = []
    for _ in range(int(rng.choice([1, 1, 1, 2, 3]))):
        mutation = MODEL_MUTATIONS[int(rng.integers(len(MODEL_MUTATIONS)))]
        if not model.graph.node and mutation not in (opset, empty_graph):
            break
        try:
            steps.append(mutation(model, rng))
        except (IndexError, ValueError) as exc:  # nothing left to mutate this way
            steps.append(f"{mutation.__name__} skipped ({type(exc).__name__})")
    try:
        out = model.SerializeToString()
    except Exception as exc:  # a mutation produced something protobuf will not write
        return data[: len(data) // 2], f"{name}: unserializable ({exc}); truncated", shape
    return out, f"{name}: " + "; ".join(str(s) for s in steps), shape
