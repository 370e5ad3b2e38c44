"""Post-training quantization of a float ONNX model into QONNX.

Steps: fold BatchNorm (and spell a spatial ReduceMean as GlobalAveragePool), place the
quantizers (:mod:`bitloom.quantize.graph`), run the float
model on the calibration batch, choose per-tensor activation scales and per-channel weight
scales (:mod:`bitloom.quantize.calibrate`), correct each bias for the mean output shift its
weight quantization causes, and write ``Quant``/``FloatQuant`` nodes in front of the float
tensors they quantize. Weights stay float initializers behind a quantizer and biases stay
float, as Brevitas exports them; bitloom's frontend folds both exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import helper

from bitloom.errors import BitloomError
from bitloom.formats import Format, parse_format
from bitloom.frontend.loader import read_model
from bitloom.quantize.calibrate import (
    METHODS,
    act_scale,
    check_calib,
    fake_quant,
    input_batch,
    run_float,
    weight_scales,
)
from bitloom.quantize.graph import FloatGraph, Layer, attrs
from bitloom.quantize.qonnx_ops import (
    QONNX_DOMAIN,
    Spec,
    act_spec,
    quant_node,
    scale_array,
    weight_spec,
)


@dataclass
class WeightRow:
    """One quantized layer, for the summary."""

    node: str
    op: str
    input_fmt: str
    input_scale: float
    fmt: str
    channels: int
    scale_min: float
    scale_max: float
    rel_error: float  # ||Wq - W|| / ||W||
    bias_shift: float | None  # largest |bias correction|, None when not applied


@dataclass
class ActRow:
    """One activation quantizer group (tensors sharing a scale), for the summary."""

    tensors: list[str]
    fmt: str
    clip: float
    scale: float


@dataclass
class Quantized:
    """The QONNX model and what was chosen for it (the CLI prints these as tables)."""

    model: onnx.ModelProto
    weights: list[WeightRow] = field(default_factory=list)
    acts: list[ActRow] = field(default_factory=list)


def _format(fmt: Format | str, what: str) -> Format:
    if isinstance(fmt, Format):
        return fmt
    try:
        return parse_format(fmt)
    except ValueError as exc:
        raise BitloomError(f"{what} format: {exc}") from None


def quantize_model(model: onnx.ModelProto | str | Path, weights: Format | str,
                   acts: Format | str, calib: np.ndarray, method: str = "minmax",
                   per_channel: bool = True, bias_correction: bool = True) -> onnx.ModelProto:
    """Quantize a float model into QONNX that qonnx's executor and bitloom read.

    ``weights``/``acts`` are formats (or their names); ``calib`` is a batch for the model's
    input (axis 0); ``method`` calibrates activations (and, for ``mse``, weights too).
    """
    return quantize(model, weights, acts, calib, method, per_channel, bias_correction).model


def quantize(model: onnx.ModelProto | str | Path, weights: Format | str, acts: Format | str,
             calib: np.ndarray, method: str = "minmax", per_channel: bool = True,
             bias_correction: bool = True) -> Quantized:
    """:func:`quantize_model`, also returning what was chosen per layer (for the CLI)."""
    if method not in METHODS:
        raise BitloomError(f"unknown calibration method {method!r}; use one of "
                           f"{', '.join(METHODS)}.")
    wspec = weight_spec(_format(weights, "weight"))
    act_fmt = _format(acts, "activation")
    act_spec(act_fmt, False)  # refuse an unusable format before any work
    source_model, source = read_model(model)
    g = FloatGraph(source_model, source)
    g.fold_batchnorm()
    g.global_pooling()
    x = check_calib(calib, g.input, source)
    plan = g.plan(input_nonneg=bool(x.min() >= 0))
    needed = list(dict.fromkeys([*plan.points, *(layer.x for layer in plan.layers)]))
    try:
        values = run_float(g.model, x, needed, input_batch(g.input)[1])
    except Exception as exc:  # onnxruntime's errors name the node it failed on
        raise BitloomError(f"{source}: onnxruntime cannot run the float model on the "
                           f"calibration data: {exc}") from None
    result = Quantized(g.model)
    act_q: dict[str, tuple[Spec, float]] = {}
    for members in plan.groups().values():
        spec = act_spec(act_fmt, all(plan.points[t] for t in members))
        flat = np.concatenate([v.ravel() for t in members for v in values[t]])
        clip, scale = act_scale(flat, spec, method)
        act_q.update({t: (spec, scale) for t in members})
        result.acts.append(ActRow(members, spec.label, clip, scale))
    weight_q: dict[str, np.ndarray] = {}  # layer output -> its weight scales
    for layer in plan.layers:
        w = g.inits[layer.w]
        scales = weight_scales(np.moveaxis(w, layer.channel_axis, 0), wspec, per_channel,
                               method == "mse")
        shaped = scale_array(scales, layer.channel_axis, w.ndim)
        wq = fake_quant(w, shaped, wspec.fmt).astype(np.float32)
        shift = None
        if bias_correction:
            shift = _mean_shift(g.model, layer, wq - w, values[layer.x])
            _correct_bias(g, layer, shift)
        weight_q[layer.node.output[0]] = shaped
        rel = float(np.linalg.norm(wq - w) / max(np.linalg.norm(w), 1e-30))
        in_spec, in_scale = act_q[layer.source]
        result.weights.append(WeightRow(
            layer.node.name or layer.node.output[0], layer.node.op_type, in_spec.label,
            in_scale, wspec.label, w.shape[layer.channel_axis], float(scales.min()),
            float(scales.max()), rel, None if shift is None else float(np.max(np.abs(shift)))))
    _emit(g, plan.layers, act_q, weight_q, wspec)
    return result


def _mean_shift(model: onnx.ModelProto, layer: Layer, dw: np.ndarray,
                inputs: list[np.ndarray]) -> np.ndarray:
    """Mean over the calibration data (and positions) of ``op(x, Wq - W)`` per output
    channel: the bias error weight quantization adds (Nagel et al., 2019, bias correction).

    The layer's own op (strides, pads, groups, transposes) runs in onnxruntime, so padding
    and borders count exactly as the model computes them.
    """
    import onnxruntime as ort

    node = helper.make_node(layer.node.op_type, ["x", "w"], ["y"], **{
        k: v for k, v in attrs(layer.node).items() if k != "beta"})
    graph = helper.make_graph(
        [node], "shift", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)],
        [onnx.numpy_helper.from_array(dw.astype(np.float32), "w")])
    opset = [o for o in model.opset_import if o.domain in ("", "ai.onnx")]
    probe = helper.make_model(graph, opset_imports=opset, ir_version=model.ir_version)
    sess = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    total, count = 0.0, 0
    for chunk in inputs:
        y = sess.run(["y"], {"x": chunk})[0].astype(np.float64)
        y = np.moveaxis(y, 1 if layer.node.op_type == "Conv" else -1, -1)
        y = y.reshape(-1, y.shape[-1])
        total, count = total + y.sum(axis=0), count + len(y)
    return total / count


def _correct_bias(g: FloatGraph, layer: Layer, shift: np.ndarray) -> None:
    """Subtract ``shift`` from the layer's bias: a Gemm/Conv bias input, the constant of a
    MatMul's bias Add, or a new bias (a Gemm/Conv input, or an Add after the MatMul)."""
    node = layer.node
    if node.op_type == "MatMul":
        if layer.bias_add is None:
            out = node.output[0]
            node.output[0] = g.fresh(f"{out}_nobias")
            bias = g.add_init(f"{node.name or 'matmul'}_bias", -shift)
            layer.bias_add = helper.make_node("Add", [node.output[0], bias], [out],
                                              name=g.fresh(f"{node.name or 'matmul'}_bias_add"))
            g.inserted[node.output[0]] = layer.bias_add
            return
        add = layer.bias_add
        i = next(k for k, t in enumerate(add.input) if t in g.inits)
        add.input[i] = g.add_init(f"{add.input[i]}_corrected", g.inits[add.input[i]] - shift)
        return
    beta = attrs(node).get("beta", 1.0) if node.op_type == "Gemm" else 1.0
    if beta == 0:  # a Gemm with beta=0 ignores its bias input: nowhere to correct
        return
    step = shift / beta
    if len(node.input) > 2 and node.input[2]:
        node.input[2] = g.add_init(f"{node.input[2]}_corrected", g.inits[node.input[2]] - step)
    else:
        bias = g.add_init(f"{node.name or node.op_type}_bias", -step)
        if len(node.input) > 2:
            node.input[2] = bias
        else:
            node.input.append(bias)


def _emit(g: FloatGraph, layers: list[Layer], act_q: dict[str, tuple[Spec, float]],
          weight_q: dict[str, np.ndarray], wspec: Spec) -> None:
    """Rewrite the graph: a quantizer after each planned tensor (its consumers read the
    quantized copy), one in front of each weight, unused initializers dropped."""
    renamed = {t: g.fresh(f"{t}_q") for t in act_q}

    def const(base: str, value: float) -> str:
        return g.add_init(base, np.float32(value))

    def act_quant(t: str) -> onnx.NodeProto:
        spec, scale = act_q[t]
        return quant_node(t, renamed[t], const(f"{t}_scale", scale), spec,
                          g.fresh(f"{t}_quant"), const)

    by_output = {layer.node.output[0]: layer for layer in layers}
    nodes = [act_quant(g.input.name)] if g.input.name in act_q else []
    for node in g.model.graph.node:
        for i, t in enumerate(node.input):
            node.input[i] = renamed.get(t, t)
        outputs = list(node.output)
        layer = by_output.get(node.output[0])
        if layer is not None:
            w = node.input[1]
            q = g.fresh(f"{w}_q")
            nodes.append(quant_node(w, q, g.add_init(f"{w}_scale", weight_q[node.output[0]]),
                                    wspec,
                                    g.fresh(f"{node.name or node.op_type}_weight_quant"), const))
            node.input[1] = q
        nodes.append(node)
        if node.output[0] in g.inserted:
            nodes.append(g.inserted[node.output[0]])
            outputs = list(g.inserted[node.output[0]].output)
        nodes.extend(act_quant(t) for t in outputs if t in act_q)
    del g.model.graph.node[:]
    g.model.graph.node.extend(nodes)
    used = {t for n in nodes for t in n.input} | {i.name for i in g.model.graph.input}
    keep = [t for t in g.model.graph.initializer if t.name in used]
    del g.model.graph.initializer[:]
    g.model.graph.initializer.extend(keep)
    if not any(o.domain == QONNX_DOMAIN for o in g.model.opset_import):
        g.model.opset_import.append(helper.make_opsetid(QONNX_DOMAIN, 1))
