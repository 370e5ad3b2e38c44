"""Layout ops: ``Reshape``, ``Flatten``, ``Squeeze``, ``Unsqueeze`` and ``Transpose``.

They move no data in hardware: a stream keeps its channel-last order and the importer
records the ONNX view of it instead (``order`` for a flattened feature map, ``perm`` for a
transposed one), so the weights that read the view are permuted, or the host transposes
at the graph output. Weights are transposed here; the model input is transposed and
reshaped by the host before it quantizes.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import onnx

from bitloom.frontend.context import ImportContext
from bitloom.frontend.host import checked_host_shape
from bitloom.frontend.quantize import add_shuffle
from bitloom.frontend.registry import ONNX, handles
from bitloom.frontend.values import (
    Derived,
    FloatInput,
    HostResult,
    QuantConstant,
    ShuffledDerived,
    Stream,
    Value,
    attributes,
    channel_last,
    full_perm,
    untransposed,
)
from bitloom.ir import HostOp, Quantizer


@handles(ONNX, "Reshape", "Flatten", "Squeeze", "Unsqueeze", layout="aware", reads_host=True)
def reshape(ctx: ImportContext, node: onnx.NodeProto, ins: list[Value | None]) -> Value:
    """A new per-sample shape for the model input, a stream, a layer's float output or
    (on the host) the result of a host-side op."""
    x, op, attrs = ins[0], node.op_type, attributes(node)
    if not isinstance(x, (FloatInput, Stream, Derived, HostResult)):
        raise ctx.fail(node, f"{op} of this tensor is not supported.")
    if isinstance(x, HostResult):
        old = tuple(checked_host_shape(ctx, node, x.base, x.ops)[1:])
    else:
        old = x.flat_shape if isinstance(x, FloatInput) else x.shape
    if op == "Flatten":
        if attrs.get("axis", 1) != 1:
            raise ctx.fail(node, "only Flatten(axis=1) keeps the batch axis.")
        new = (int(np.prod(old)),)
    elif op == "Reshape":
        shape_in = ctx.const_input(node, ins[1], "shape")
        if shape_in.dtype.kind not in "iu":
            raise ctx.fail(node, f"its shape is of type {shape_in.dtype}; expected int64.")
        target = [int(v) for v in shape_in.reshape(-1)]
        if not target or target[0] not in (1, -1, 0):
            raise ctx.fail(node, f"reshape to {target} would mix samples of a batch.")
        try:
            new = np.empty((1, *old)).reshape([1, *target[1:]] if target[0] != -1
                                              else [-1, *target[1:]]).shape[1:]
        except ValueError:
            raise ctx.fail(node, f"cannot reshape {old} to {target}.") from None
    else:  # Squeeze / Unsqueeze: axes from the attribute (opset < 13) or the 2nd input
        axes = attrs.get("axes")
        if axes is None and len(ins) > 1 and ins[1] is not None:
            axes = ctx.const_input(node, ins[1], "axes").reshape(-1)
            if axes.dtype.kind not in "iu":
                raise ctx.fail(node, f"its axes are of type {axes.dtype}; expected int64.")
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
            raise ctx.fail(node, f"cannot {op.lower()} axes {axes} of {old}.") from None
        if 0 in [a % full.ndim for a in axes] if op == "Squeeze" else 0 in axes:
            raise ctx.fail(node, f"{op} of the batch axis is not supported.")
    new = tuple(int(d) for d in new)
    if isinstance(x, HostResult):
        return HostResult(x.base, [*x.ops, HostOp("Reshape", shape=new)])
    return _reshaped(ctx, node, x, new)


def _reshaped(ctx: ImportContext, node: onnx.NodeProto, x: FloatInput | Stream | Derived,
              new: tuple[int, ...]) -> Value:
    """``x`` with a new per-sample ONNX shape; the hardware order must survive it."""
    if isinstance(x, FloatInput):
        _require_scalar_steps(ctx, node, x)
        return replace(x, flat_shape=new)
    if x.perm:
        if len(x.perm) == 4:
            return _channel_shuffle(ctx, node, x, new)
        return _flatten_transposed(ctx, node, x, new)
    old = x.shape
    if len(old) == 3 and len(new) == 4 and new[0] * new[1] == old[0] and new[2:] == old[1:]:
        one_scale = (isinstance(x, Stream) and x.scale.size == 1 and x.order is None) or \
            (isinstance(x, Derived) and not x.max_pools and not x.perm)
        if not one_scale:
            raise ctx.fail(node, f"splitting the channels of {old} into groups {new[:2]} "
                           "(a channel shuffle) needs a feature map with one scale; "
                           "quantize before the shuffle.")
        return replace(x, shape=new)  # a channel shuffle's first step
    if channel_last(old) == channel_last(new) or (len(old) == len(new) == 1):
        return replace(x, shape=new)
    spatial = int(np.prod(old[1:])) if len(old) == 3 else 1
    if len(old) == 3 and len(new) == 1 and spatial == 1:
        return replace(x, shape=new)  # (C, 1, 1) -> (C,): same order
    if len(old) == 3 and len(new) == 1 and isinstance(x, Stream) and x.order is None:
        c, h, w = old  # hardware element i is ONNX element order[i]
        order = np.arange(c * h * w).reshape(c, h, w).transpose(1, 2, 0).reshape(-1)
        return replace(x, shape=new, order=order, scale=_per_element(x, old))
    if len(new) == 3 and new[1:] == (1, 1) and len(old) == 1 and getattr(x, "order",
                                                                         None) is None:
        return replace(x, shape=new)
    what = "a quantized feature map" if isinstance(x, Stream) else \
        "a feature map before its quantizer"
    raise ctx.fail(node, f"reshaping {what} from {old} to {new} is not supported; "
                   "flatten after quantizing, or reshape only (C, H, W) -> (C*H*W,).")


def _channel_shuffle(ctx: ImportContext, node: onnx.NodeProto, x: Stream | Derived,
                     new: tuple[int, ...]) -> Stream | ShuffledDerived:
    """The last step of ShuffleNet's channel shuffle: channels split into ``(G, C/G)``,
    the two axes swapped, and merged again, which is a ChannelShuffle layer (after the
    quantizer, for a layer's float output)."""
    groups, per_group, h, w = untransposed(x.shape, x.perm)
    if x.perm != (1, 0, 2, 3) or new != (groups * per_group, h, w):
        raise ctx.fail(node, f"reshaping a transposed feature map (perm "
                       f"{full_perm(x.perm)}) to {new} is not supported; only a channel "
                       "shuffle (channels split in groups, the two swapped, merged back) is.")
    if isinstance(x, Derived):
        return ShuffledDerived(replace(x, shape=new, perm=None), groups)
    index = add_shuffle(ctx, node, x, groups)
    return replace(x, producer=index, shape=new, perm=None)


def _flatten_transposed(ctx: ImportContext, node: onnx.NodeProto, x: Stream | Derived,
                        new: tuple[int, ...]) -> Value:
    """A transposed feature map flattened to a vector: the weights that read it are
    permuted (``order``); a NHWC view flattens in the hardware's own order."""
    base = untransposed(x.shape, x.perm)
    if len(new) != 1 or (isinstance(x, Stream) and x.order is not None):
        raise ctx.fail(node, f"reshaping a transposed feature map (perm "
                       f"{full_perm(x.perm)}) to {new} is not supported; only flattening "
                       "it to a vector is.")
    ids = np.arange(int(np.prod(base))).reshape(base)
    position = np.empty(ids.size, dtype=np.int64)  # ONNX index of each element
    position[ids.transpose(x.perm).reshape(-1)] = np.arange(ids.size)
    hardware = ids.transpose(1, 2, 0) if ids.ndim == 3 else ids  # channel-last
    order = position[hardware.reshape(-1)]
    stream = {"scale": _per_element(x, base)} if isinstance(x, Stream) else {}
    if np.array_equal(order, np.arange(order.size)):
        return replace(x, shape=new, perm=None, **stream, **({"order": None} if stream else {}))
    if isinstance(x, Derived):
        raise ctx.fail(node, "flattening a transposed feature map before its quantizer "
                       "is not supported; quantize it first.")
    return replace(x, shape=new, perm=None, order=order, **stream)


def _per_element(x: Stream, shape: tuple[int, ...]) -> np.ndarray:
    """The scale of ``x`` (ONNX ``shape``) once flattened: per channel, it becomes one per
    element of the hardware's channel-last order, where channels run fastest."""
    if x.scale.size == 1:
        return x.scale
    return np.tile(x.scale, int(np.prod(shape)) // x.scale.size)


@handles(ONNX, "Transpose", layout="aware", reads_host=True)
def transpose(ctx: ImportContext, node: onnx.NodeProto, ins: list[Value | None]) -> Value:
    """Weights are transposed here; an activation keeps its hardware order and records
    the view (``perm``) that the ONNX graph continues with."""
    w, perm = ins[0], attributes(node).get("perm")
    if isinstance(w, HostResult):
        rank = len(checked_host_shape(ctx, node, w.base, w.ops))
        if perm is None or sorted(perm) != list(range(rank)):
            raise ctx.fail(node, f"perm {perm} is not a permutation of {rank} axes.")
        return HostResult(w.base, [*w.ops, HostOp("Transpose", perm=tuple(perm))])
    if isinstance(w, FloatInput):
        return _transpose_input(ctx, node, w, perm)
    iq = ctx.input_quant
    if isinstance(w, Stream) and w.producer == -1 and iq is not None and \
            isinstance(iq.quantizer, Quantizer) and w.shape == iq.flat_shape and \
            w.perm is None and w.order is None and \
            all(step.constant.size == 1 for step in iq.steps) and \
            sum(node.input[0] in n.input for n in ctx.model.graph.node) == 1:
        # the quantized model input, read only here: per-tensor quantization commutes
        # with the Transpose, so the host does it first
        moved = _transpose_input(ctx, node, FloatInput(iq.name, iq.shape, iq.flat_shape,
                                                       iq.perm, iq.steps), perm)
        ctx.input_quant = replace(iq, flat_shape=moved.flat_shape, perm=moved.perm)
        return replace(w, shape=moved.flat_shape)
    if isinstance(w, (Stream, Derived)):
        return _transpose_activation(ctx, node, w, perm)
    if not isinstance(w, QuantConstant):
        raise ctx.fail(node, "Transpose of this tensor is not supported.")
    perm = perm or list(range(w.values.ndim))[::-1]
    if sorted(perm) != list(range(w.values.ndim)):
        raise ctx.fail(node, f"perm {list(perm)} is not a permutation of the "
                       f"{w.values.ndim} axes of its input {w.values.shape}.")
    scale = np.asarray(w.scale)
    if scale.ndim == w.values.ndim:
        scale = scale.transpose(perm)
    elif scale.size != 1:
        raise ctx.fail(node, "cannot transpose weights with this scale shape.")
    return QuantConstant(w.values.transpose(perm), scale, w.fmt)


def _transpose_input(ctx: ImportContext, node: onnx.NodeProto, x: FloatInput,
                     perm: list[int] | None) -> FloatInput:
    """A Transpose of the float model input (e.g. NHWC -> NCHW at the top of a converted
    model) is done by the host before it quantizes, composed with earlier ones."""
    _require_scalar_steps(ctx, node, x)
    rank = len(x.flat_shape) + 1
    perm = _sample_perm(ctx, node, list(range(rank))[::-1] if perm is None else list(perm),
                        rank, f"the model input {[1, *x.flat_shape]}")
    base = x.perm or tuple(range(len(x.shape)))
    if tuple(x.shape[a] for a in base) != x.flat_shape:
        raise ctx.fail(node, f"Transpose (perm {perm}) of the model input after a "
                       "reshape is not supported; transpose it before reshaping.")
    sample = [a - 1 for a in perm[1:]]
    return FloatInput(x.name, x.shape, tuple(x.flat_shape[a] for a in sample),
                      tuple(base[a] for a in sample), x.steps)


def _sample_perm(ctx: ImportContext, node: onnx.NodeProto, perm: list[int], rank: int,
                 tensor: str) -> list[int]:
    """``perm`` checked as a permutation of the ``rank`` axes of ``tensor`` that keeps the
    batch axis."""
    if sorted(perm) != list(range(rank)):
        raise ctx.fail(node, f"perm {perm} is not a permutation of the {rank} axes of "
                       f"{tensor}.")
    if perm[0] != 0:
        raise ctx.fail(node, f"Transpose with perm {perm} moves the batch axis; only "
                       "per-sample axes may be permuted.")
    return perm


def _require_scalar_steps(ctx: ImportContext, node: onnx.NodeProto, x: FloatInput) -> None:
    """The host reshapes and transposes the input before its float preprocessing, which is
    the same only for scalar constants."""
    if not x.scalar_steps:
        raise ctx.fail(node, f"{node.op_type} of the model input after float preprocessing "
                       "with a per-element constant is not supported; reshape or transpose "
                       "the input first.")


def _transpose_activation(ctx: ImportContext, node: onnx.NodeProto, x: Stream | Derived,
                          perm: list[int] | None) -> Stream | Derived:
    """A per-sample transpose of an activation: only its view (``perm``) changes."""
    rank = len(x.shape) + 1
    perm = _sample_perm(ctx, node, list(perm) if perm else list(range(rank))[::-1],
                        rank, f"its input {[1, *x.shape]}")
    view = x.perm or tuple(range(rank - 1))
    new = tuple(view[a - 1] for a in perm[1:])
    shape = tuple(x.shape[a - 1] for a in perm[1:])
    return replace(x, shape=shape, perm=None if new == tuple(sorted(new)) else new)

