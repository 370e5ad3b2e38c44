"""Golden model against a reference executor: the acceptance check of exported models.

``check_against_reference`` runs ``bitloom.load(path).run(x)`` and the dialect's reference
(qonnx's ``execute_onnx`` for QONNX; onnxruntime for Q/DQ, QCDQ and QOperator, with
``onnx.reference`` where onnxruntime refuses the file) and asserts identical argmax and a
max abs difference of at most one output quantization step (the output quantizer's scale,
or one accumulator LSB when the model ends in a float Gemm/MatMul with float bias).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

QUANT_OPS = {"Quant", "IntQuant", "BipolarQuant", "Trunc", "DequantizeLinear"}
TRANSPARENT = {"Reshape", "Flatten", "Identity", "Dropout", "MaxPool", "Relu", "Transpose",
               "Squeeze", "Unsqueeze", "Clip", "Concat"}


def _constants(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    values = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    values[node.output[0]] = numpy_helper.to_array(a.t)
                elif a.name in ("value_float", "value_int"):
                    values[node.output[0]] = np.asarray(onnx.helper.get_attribute_value(a))
    return values


def output_step(model: onnx.ModelProto) -> float:
    """The grid step of the model's output (see the module docstring)."""
    consts = _constants(model)
    producers = {o: n for n in model.graph.node for o in n.output}

    def step(name: str, depth: int = 0) -> float | None:
        node = producers.get(name)
        if node is None or depth > 20:
            return None
        if node.op_type in QUANT_OPS and len(node.input) > 1 and node.input[1] in consts:
            return float(np.max(np.abs(consts[node.input[1]].astype(np.float64))))
        if node.op_type == "BipolarQuant":
            return float(np.max(consts[node.input[1]])) * 2
        if node.op_type == "FloatQuant":
            scale = float(np.max(consts[node.input[1]]))
            man = float(consts[node.input[3]])
            bias = float(consts[node.input[4]])
            return scale * 2.0 ** (1 - bias - man)
        if node.op_type in TRANSPARENT:
            return step(node.input[0], depth + 1)
        if node.op_type in ("Gemm", "MatMul", "Conv"):
            a, b = step(node.input[0], depth + 1), step(node.input[1], depth + 1)
            return None if a is None or b is None else a * b
        if node.op_type in ("Add", "Sub"):
            steps = [s for s in (step(i, depth + 1) for i in node.input) if s is not None]
            return min(steps) if steps else None
        return None

    out = step(model.graph.output[0].name)
    if out is None:
        raise AssertionError("cannot tell the output quantization step of this model")
    return out


def run_reference(path: Path | str, form: str, x: np.ndarray) -> tuple[np.ndarray, str]:
    """(reference output, reference name) for ``form`` "qonnx" or any ONNX Q/DQ form."""
    if form == "qonnx":
        from qonnx_models import run_qonnx

        return run_qonnx(onnx.load(str(path)), x), "qonnx.execute_onnx"
    from float_models import run_ort

    try:
        return run_ort(Path(path), x), "onnxruntime"
    except Exception as exc:  # e.g. float8 Q/DQ declared under opset 18
        if "onnxruntime" not in type(exc).__module__.lower() and "Fail" not in type(
                exc).__name__ and "Invalid" not in type(exc).__name__:
            raise
    from onnx.reference import ReferenceEvaluator

    model = onnx.load(str(path))
    for opset in model.opset_import:
        if opset.domain in ("", "ai.onnx"):
            opset.version = max(opset.version, 21)
    ref = ReferenceEvaluator(model)
    name = model.graph.input[0].name
    return np.concatenate([ref.run(None, {name: x[i:i + 1]})[0]
                           for i in range(len(x))]), "onnx.reference"


def check_against_reference(path: Path | str, form: str, x: np.ndarray) -> dict:
    """Assert the acceptance criterion; returns a few numbers for reports."""
    import bitloom

    golden = bitloom.load(path).run(x)
    reference, ref_name = run_reference(path, form, x)
    assert golden.dtype == np.float32
    assert golden.shape == reference.shape, (golden.shape, reference.shape)
    step = output_step(onnx.load(str(path)))
    diff = float(np.abs(golden.astype(np.float64) - reference).max())
    slack = 1e-5 * float(np.abs(reference).max()) + 1e-7  # float32 summation order
    assert diff <= step + slack, (
        f"max |golden - {ref_name}| = {diff:.6g} > one output step {step:.6g}")
    # the same argmax; where outputs tie (equal up to float32 summation order), either one
    flat = reference.reshape(len(x), -1)
    picked = flat[np.arange(len(x)), golden.reshape(len(x), -1).argmax(1)]
    assert np.all(picked >= flat.max(1) - slack), f"argmax differs from {ref_name}"
    return {"reference": ref_name, "max_diff": diff, "step": step}


def last_layer_codes(path: Path | str, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(golden, onnxruntime) integer codes of the quantized activation that feeds the model's
    last MatMul/Gemm/Conv, both as ``(N, -1)`` in ONNX (NCHW) element order.

    onnxruntime computes with the codes as an extra graph output, graph optimizations
    disabled (as :func:`run_reference` does)."""
    import onnxruntime as ort

    import bitloom

    model = onnx.load(str(path))
    producers = {o: n for n in model.graph.node for o in n.output}
    last = [n for n in model.graph.node if n.op_type in ("MatMul", "Gemm", "Conv")][-1]
    name = last.input[0]
    while producers[name].op_type in ("Flatten", "Reshape", "Identity"):
        name = producers[name].input[0]
    dq = producers[name]
    assert dq.op_type == "DequantizeLinear", dq.op_type
    codes_name = dq.input[0]
    inferred = onnx.shape_inference.infer_shapes(model)
    info = next(v for v in inferred.graph.value_info if v.name == codes_name)
    model.graph.output.append(info)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), options,
                                providers=["CPUExecutionProvider"])
    feed = sess.get_inputs()[0].name
    ref = np.concatenate([sess.run([codes_name], {feed: x[i:i + 1]})[0]
                          for i in range(len(x))]).astype(np.int64)

    net = bitloom.load(path)
    values = net.trace(x)
    golden = net.values_of(net.layers[-1].inputs[0], values)
    if golden.ndim == 4:  # channel-last feature map -> NCHW
        golden = golden.transpose(0, 3, 1, 2)
    return golden.reshape(len(x), -1), ref.reshape(len(x), -1)


def layerwise_against_qonnx(net, path: Path | str, x: np.ndarray) -> list[dict]:
    """:func:`layerwise_frame` for every frame of ``x``, the rows summed per layer."""
    total: dict[str, dict] = {}
    for i in range(len(x)):
        for row in layerwise_frame(net, path, x[i:i + 1]):
            seen = total.setdefault(row["layer"], {**row, "codes": 0, "differ": 0})
            seen["codes"] += row["codes"]
            seen["differ"] += row["differ"]
            seen["max"] = max(seen["max"], row["max"])
            seen["widest_margin"] = max(seen["widest_margin"], row["widest_margin"])
            seen["all_at_boundaries"] &= row["all_at_boundaries"]
    return list(total.values())


def layerwise_frame(net, path: Path | str, x: np.ndarray) -> list[dict]:
    """Every layer of ``net`` fed the codes qonnx's executor computed for its inputs, against
    the codes qonnx computed for its output (teacher forcing).

    End to end, a deep network with random weights amplifies any one-step difference (a
    float32 rounding of the executor next to a quantizer's boundary) layer after layer, so
    only this per-layer check can tell an exact model from a wrong one. A layer's output is
    the output of the last ``Quant``/``Trunc`` among its ONNX nodes; a layer without one is
    not compared. Each row: the layer, the codes compared, how many differ and by how much,
    and whether every differing code lies within ``1e-4`` steps of a rounding boundary in
    qonnx's own float32 value (a float32 flip, not a semantic difference)."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx

    model = onnx.load(str(path))
    consts = _constants(model)
    nodes = {n.name: n for n in model.graph.node}
    context = execute_onnx(ModelWrapper(model), {model.graph.input[0].name: x},
                           return_full_exec_context=True)

    def codes(node: onnx.NodeProto, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
        """(codes, distance of the pre-quantizer value to its nearest rounding boundary)."""
        def const(k: int) -> np.ndarray:
            return consts[node.input[k]].astype(np.float64)

        pre = context[node.input[0]].astype(np.float64)
        if node.op_type == "Trunc":  # v2: (x, scale, zero point, in bits, out scale, out bits)
            scale = const(4) if len(node.input) == 6 else const(1) * 2 ** (const(3) - const(4))
            zero, boundary = 0.0, 0.0  # rounded down (Brevitas' TruncAvgPool floors)
        else:
            scale, zero, boundary = const(1), const(2), 0.5
        grid = np.round(context[node.output[0]].astype(np.float64) / scale + zero)
        scaled = pre / scale + zero
        margin = np.abs(np.abs(scaled - np.floor(scaled)) - boundary)
        if boundary == 0.0:
            margin = np.minimum(margin, 1 - margin)
        if grid.ndim == 4:  # NCHW -> the hardware's NHWC
            grid, margin = grid.transpose(0, 2, 3, 1), margin.transpose(0, 2, 3, 1)
        return grid.astype(np.int64).reshape(shape), margin.reshape(shape)

    outputs: dict[int, np.ndarray] = {-1: net.input.apply(x).astype(np.int64)}
    rows = []
    for i, layer in enumerate(net.layers):
        ours = layer.golden(*(outputs.get(p) for p in layer.inputs)) \
            if all(p in outputs for p in layer.inputs) else None
        quants = [nodes[s] for s in layer.source_nodes
                  if s in nodes and nodes[s].op_type in ("Quant", "Trunc")]
        if ours is None or not quants or quants[-1].input[1] not in consts:
            continue
        theirs, margin = codes(quants[-1], ours.shape)
        outputs[i] = theirs
        differ = ours != theirs
        rows.append({"layer": layer.name, "codes": int(ours.size), "differ": int(differ.sum()),
                     "max": int(np.abs(ours - theirs).max()),
                     "widest_margin": float(margin[differ].max(initial=0.0)),
                     "all_at_boundaries": bool((margin[differ] < 1e-4).all())})
    return rows


def layer_by_layer(path: Path | str, x: np.ndarray) -> list[dict]:
    """Every layer with an ONNX tensor of codes (``Layer.onnx_tensor``) against
    onnxruntime's, twice: free-running (golden's own inputs) and teacher-forced (golden's
    layer applied to onnxruntime's codes of its inputs, where they all have one). Rows of
    ``{"layer", "free_max", "free_count", "forced_max", "forced_count", "size"}``, the
    counts being the values that differ; ``forced_*`` is None without onnxruntime inputs.

    What it tells: a layer whose teacher-forced output differs only by one code at a few
    values computes what the model means; onnxruntime's float32 arithmetic puts those
    values on the other side of a rounding boundary, and a deep network amplifies them."""
    import onnxruntime as ort

    import bitloom

    net = bitloom.load(path)
    model = onnx.load(str(path))
    tensors = sorted({ly.onnx_tensor for ly in net.layers if ly.onnx_tensor})
    for name in tensors:
        model.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), options,
                                providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    runs = [sess.run(None, {model.graph.input[0].name: x[i:i + 1]}) for i in range(len(x))]
    ref = {n: np.concatenate([r[k] for r in runs]) for k, n in enumerate(names)}
    trace = net.trace(x)

    def codes(index: int) -> np.ndarray | None:
        if index < 0:
            return trace[0]
        name = net.layers[index].onnx_tensor
        if not name:
            return None
        r = ref[name].astype(np.int64)
        r = r.transpose(0, 2, 3, 1) if r.ndim == 4 else r
        return r.reshape(trace[index + 1].shape)

    rows = []
    for i, layer in enumerate(net.layers):
        want = codes(i)
        if want is None:
            continue
        free = np.abs(trace[i + 1] - want)
        ins = [codes(p) for p in layer.inputs]
        row = {"layer": layer.name, "size": int(want.size), "free_max": int(free.max()),
               "free_count": int((free > 0).sum()), "forced_max": None, "forced_count": None}
        if all(v is not None for v in ins):
            forced = np.abs(layer.golden(*ins) - want)
            row.update(forced_max=int(forced.max()), forced_count=int((forced > 0).sum()))
        rows.append(row)
    return rows
