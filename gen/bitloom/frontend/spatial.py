"""Convolutional layers: Conv (incl. depthwise), BatchNorm, pooling, residual Add, Concat.

Feature maps are ``(C, H, W)`` per sample in ONNX and stream channel-last in hardware; the
IR layers (:mod:`bitloom.ir.layers`) use the hardware order. Pooling and element-wise ops
are exact on the integer values because they sit where the model quantizes: max pooling
commutes with every non-decreasing quantizer, average pooling is a sum whose division joins
the next requantization, and a residual Add brings both branches onto one integer grid.
"""

from __future__ import annotations

from dataclasses import replace
from fractions import Fraction
from math import gcd, lcm
from typing import ClassVar

import numpy as np

from bitloom.formats import Int
from bitloom.frontend.importer import (
    ONNX_DOMAINS,
    Derived,
    PendingConcat,
    QuantConstant,
    Stream,
    Value,
    attributes,
    channel_last,
)
from bitloom.ir import (
    AddStreams,
    Affine,
    Chain,
    Concat,
    DepthwiseConv,
    MatrixVector,
    MaxPool,
    SumPool,
    Window,
)
from bitloom.ir.elementwise import as_fractions

ONNX = frozenset(ONNX_DOMAINS)
#: a residual Add whose branch scales need integer multipliers above this is refused
MAX_ADD_MULTIPLIER = 2**32


class SpatialOps:
    """Handlers for CNN ops (a mixin of the importer)."""

    OPS: ClassVar[dict[tuple[frozenset[str], str], str]] = {
        (ONNX, "Conv"): "_conv",
        (ONNX, "BatchNormalization"): "_batch_norm",
        (ONNX, "MaxPool"): "_max_pool",
        (ONNX, "AveragePool"): "_average_pool",
        (ONNX, "GlobalAveragePool"): "_average_pool",
        (ONNX, "ReduceMean"): "_average_pool",
        (ONNX, "Concat"): "_concat",
    }

    # -- geometry ---------------------------------------------------------------------------
    def _window(self, node, x_shape: tuple[int, ...], kernel: tuple[int, int],
                pad_value: int) -> Window:
        """The sliding window of a Conv/Pool node over a ``(C, H, W)`` input."""
        attrs = attributes(node)
        if len(x_shape) != 3:
            raise self.fail(node, f"expected a (C, H, W) feature map, got shape {x_shape}.")
        in_hw = (x_shape[1], x_shape[2])
        stride = tuple(attrs.get("strides", (1, 1)))
        dilation = tuple(attrs.get("dilations", (1, 1)))
        if len(stride) != 2 or len(dilation) != 2 or len(kernel) != 2:
            raise self.fail(node, "only 2-D windows are supported.")
        if min(stride) < 1 or min(dilation) < 1 or min(kernel) < 1:
            raise self.fail(node, f"kernel {list(kernel)}, strides {list(stride)} and "
                            f"dilations {list(dilation)} must all be positive.")
        auto = attrs.get("auto_pad", "NOTSET")
        if auto in ("NOTSET", ""):
            pads = tuple(attrs.get("pads", (0, 0, 0, 0)))
            if len(pads) != 4 or min(pads) < 0:
                raise self.fail(node, f"pads {list(pads)}: expected 4 non-negative values.")
            pads = (pads[0], pads[1], pads[2], pads[3])
        elif auto == "VALID":
            pads = (0, 0, 0, 0)
        elif auto in ("SAME_UPPER", "SAME_LOWER"):
            begin, end = [], []
            for size, k, s, d in zip(in_hw, kernel, stride, dilation, strict=True):
                total = max((-(-size // s) - 1) * s + (k - 1) * d + 1 - size, 0)
                small, large = total // 2, total - total // 2
                begin.append(small if auto == "SAME_UPPER" else large)
                end.append(large if auto == "SAME_UPPER" else small)
            pads = (begin[0], begin[1], end[0], end[1])
        else:
            raise self.fail(node, f"auto_pad={auto!r} is not an ONNX padding mode.")
        window = Window(in_hw, (int(kernel[0]), int(kernel[1])),
                        (int(stride[0]), int(stride[1])), tuple(int(p) for p in pads),
                        (int(dilation[0]), int(dilation[1])), pad_value)
        if attrs.get("ceil_mode", 0):
            ceil_hw = tuple(-(-(size + p0 + p1 - d * (k - 1) - 1) // s) + 1
                            for size, p0, p1, k, s, d in zip(in_hw, pads[:2], pads[2:],
                                                             window.kernel, stride, dilation,
                                                             strict=True))
            if ceil_hw != window.out_hw:
                raise self.fail(node, "ceil_mode=1 with partial windows is not supported.")
        if min(window.out_hw) < 1:
            raise self.fail(node, f"the window does not fit the input {in_hw}.")
        return window

    def _pad_of(self, node, x: Stream) -> int:
        """The grid integer of real zero: what zero padding holds in the quantized domain."""
        if x.zero_point and x.fmt.grid().frac_bits:
            raise self.fail(node, "a zero point on a non-integer input is not supported.")
        return x.zero_point

    def _padded_window(self, node, x: Stream, kernel: tuple[int, ...]) -> Window:
        """The window of ``node``, padded with the value of real zero, which must be one of
        the input format's values (a zero point may lie outside, e.g. after a
        MultiThreshold's out_bias)."""
        window = self._window(node, x.shape, kernel, self._pad_of(node, x))
        grid = x.fmt.grid()
        if any(window.pads) and not grid.lo <= x.zero_point <= grid.hi:
            raise self.fail(node, f"its input's real zero is value {x.zero_point}, outside "
                            f"{x.fmt.name}: zero padding cannot be represented.")
        return window

    # -- Conv -------------------------------------------------------------------------------
    def _conv(self, node, ins: list[Value | None]) -> Derived:
        x = ins[0]
        if not isinstance(x, Stream):
            raise self.fail(node, "its input is not quantized; put a quantizer before it.")
        out = self._convolution(node, x, self._weights_of(node, ins[1]))
        if len(ins) > 2 and ins[2] is not None:
            m = out.chain.channels
            bias = self._const_input(node, ins[2], "bias B").reshape(-1)
            if bias.size != m:
                raise self.fail(node, "bias B must have one value per output channel.")
            out = replace(out, chain=out.chain.then(
                Affine([Fraction(1)] * m, self._exact(node, bias, m, "bias B"))))
        return out

    def _convolution(self, node, x: Stream, w: QuantConstant) -> Derived:
        """A Conv layer (group 1) or a depthwise one (group = C = M), without bias."""
        if w.values.ndim != 4:
            raise self.fail(node, f"weights of rank {w.values.ndim}: only 2-D convolutions "
                            "(4-D weights) are supported.")
        m, c_per_group, kh, kw = w.values.shape
        c = x.shape[0] if len(x.shape) == 3 else -1
        group = int(attributes(node).get("group", 1))
        window = self._padded_window(node, x, (kh, kw))
        wscale = np.asarray(w.scale, dtype=np.float32)
        if wscale.size not in (1, m) or (wscale.size == m and wscale.reshape(-1).size != m):
            raise self.fail(node, "weight scales must be per-tensor or per output channel.")
        if wscale.ndim and wscale.size == m and wscale.shape[0] != m:
            raise self.fail(node, "weight scales must be per output channel (axis 0).")
        scales = as_fractions(wscale.reshape(-1), m)
        shape = (m, *window.out_hw)
        if group < 1 or c % group or m % group or c_per_group * group != c:
            raise self.fail(node, f"group={group}: weights expect {c_per_group} input channels "
                            f"per group, the input has {c} channels and {m} outputs.")
        depthwise = group == c == m and group > 1
        if group > 1 and not depthwise:
            # a grouped convolution is an ordinary one whose weights are zero across groups
            dense = np.zeros((m, c, kh, kw), dtype=np.int64)
            mg = m // group
            for g in range(group):
                dense[g * mg:(g + 1) * mg, g * c_per_group:(g + 1) * c_per_group] = \
                    w.values[g * mg:(g + 1) * mg]
            w = replace(w, values=dense)
        if not depthwise:
            values = w.values.transpose(2, 3, 1, 0).reshape(kh * kw * c, m)  # (kh, kw, c) rows
            out = self._weighted(
                node, x, values, scales, w.fmt, shape,
                lambda index, acc: MatrixVector(
                    f"conv{index}", (x.producer,), channel_last(x.shape), acc_fmt=acc,
                    weights=values.astype(np.int64), in_fmt=x.fmt, w_fmt=w.fmt,
                    window=window))
        else:
            values = w.values[:, 0].transpose(1, 2, 0).reshape(kh * kw, c)
            out = self._weighted(
                node, x, values, scales, w.fmt, shape,
                lambda index, acc: DepthwiseConv(
                    f"dwconv{index}", (x.producer,), channel_last(x.shape), acc_fmt=acc,
                    weights=values.astype(np.int64), in_fmt=x.fmt, w_fmt=w.fmt,
                    window=window))
        return out

    # -- BatchNormalization -----------------------------------------------------------------
    def _batch_norm(self, node, ins: list[Value | None]) -> Derived:
        """Inference BatchNorm folds into the layer's per-channel chain."""
        x = ins[0]
        if isinstance(x, Stream):
            x = self._reopen(node, x)
        if not isinstance(x, Derived):
            raise self.fail(node, "BatchNormalization must follow a Conv/MatMul or a "
                            "quantizer here.")
        if len(node.output) > 1 and any(node.output[1:]):
            raise self.fail(node, "training-mode BatchNormalization is not supported.")
        gamma, beta, mean, var = (
            self._const_input(node, v, what).astype(np.float64).reshape(-1)
            for v, what in zip(ins[1:5], ("scale", "B", "mean", "var"), strict=True))
        eps = float(np.float32(attributes(node).get("epsilon", 1e-5)))
        n = x.chain.channels
        if not all(v.size in (1, n) for v in (gamma, beta, mean, var)):
            raise self.fail(node, f"parameters must have one value per channel ({n}).")
        a = gamma / np.sqrt(var + eps)
        if np.any(var + eps <= 0):
            raise self.fail(node, "its variance plus epsilon must be positive.")
        return replace(x, chain=x.chain.then(Affine(
            self._exact(node, a, n, "scale / sqrt(var + epsilon)"),
            self._exact(node, beta - a * mean, n, "folded shift"))))

    # -- pooling ----------------------------------------------------------------------------
    def _max_pool(self, node, ins: list[Value | None]) -> Stream | Derived:
        x = ins[0]
        if len(node.output) > 1 and any(node.output[1:]):
            raise self.fail(node, "MaxPool's Indices output is not supported.")
        kernel = tuple(attributes(node).get("kernel_shape", ()))
        if isinstance(x, Derived):  # pooled after the quantizer that follows
            window = self._window(node, x.shape, kernel, 0)
            return replace(x, shape=(x.shape[0], *window.out_hw),
                           max_pools=(*x.max_pools, window))
        if not isinstance(x, Stream):
            raise self.fail(node, "MaxPool of this tensor is not supported; quantize it first.")
        window = self._window(node, x.shape, kernel, x.fmt.grid().lo)
        index = self._add_layer(node, MaxPool(f"maxpool{len(self.layers)}", (x.producer,),
                                              channel_last(x.shape), fmt=x.fmt, window=window))
        return replace(x, producer=index, shape=(x.shape[0], *window.out_hw))

    def _average_pool(self, node, ins: list[Value | None]) -> Derived:
        """AveragePool, GlobalAveragePool and ReduceMean over H, W: a sum pool whose
        division by the window size joins the chain (and so the next requantization)."""
        x, op, attrs = ins[0], node.op_type.removeprefix("QLinear"), attributes(node)
        if not isinstance(x, Stream):
            raise self.fail(node, f"{op} of an unquantized tensor cannot be computed exactly; "
                            "quantize the tensor before pooling.")
        if attrs.get("channels_last", 0):
            raise self.fail(node, "channels_last=1 is not supported; use NCHW.")
        if len(x.shape) != 3:
            raise self.fail(node, f"{op} needs a (C, H, W) feature map, got {x.shape}.")
        c, h, w = x.shape
        keep = True
        if op == "AveragePool":
            kernel = tuple(attrs.get("kernel_shape", ()))
            window = self._padded_window(node, x, kernel)
            if any(window.pads) and not attrs.get("count_include_pad", 0):
                raise self.fail(node, "padded AveragePool with count_include_pad=0 divides by "
                                "a varying count; export with count_include_pad=1 or no pads.")
        else:
            if op == "ReduceMean":
                axes = attrs.get("axes")
                if axes is None and len(ins) > 1 and ins[1] is not None:
                    axes = self._const_input(node, ins[1], "axes").reshape(-1).tolist()
                if sorted(int(a) % 4 for a in (axes or [])) != [2, 3]:
                    raise self.fail(node, f"ReduceMean over axes {axes}: only the spatial "
                                    "axes (2, 3) are supported.")
                keep = bool(attrs.get("keepdims", 1))
            window = self._window(node, x.shape, (h, w), 0)
        grid = x.fmt.grid()
        size = window.size
        acc = Int.spanning(min(0, grid.lo * size), max(0, grid.hi * size))
        index = self._add_layer(node, SumPool(
            f"avgpool{len(self.layers)}", (x.producer,), channel_last(x.shape), acc_fmt=acc,
            in_fmt=x.fmt, window=window))
        s = as_fractions(x.scale, 1)[0]
        step = s / 2 ** grid.frac_bits / size
        chain = Chain(c).then(Affine([step] * c, [-s * x.zero_point] * c))
        shape = (c, *window.out_hw) if keep else (c,)
        return Derived(index, chain, shape)

    # -- joining branches -------------------------------------------------------------------
    def _add_streams(self, node, a: Stream, b: Stream) -> Derived:
        """``sa*(a - za) + sb*(b - zb)`` as ``u * (ka*a + kb*b) + const`` with integers
        ``ka``, ``kb``: exact for any two scales whose ratio is a modest rational."""
        if a.shape != b.shape or a.order is not None or b.order is not None:
            raise self.fail(node, f"Add of tensors of shapes {a.shape} and {b.shape}: only "
                            "equal shapes (no broadcasting) are supported.")
        if a.scale.size != 1 or b.scale.size != 1:
            raise self.fail(node, "both inputs of an Add need per-tensor scales.")
        sa, sb = (as_fractions(v.scale, 1)[0] for v in (a, b))
        ua, ub = (s / 2 ** v.fmt.grid().frac_bits for s, v in ((sa, a), (sb, b)))
        unit = Fraction(gcd(ua.numerator, ub.numerator), lcm(ua.denominator, ub.denominator))
        ka, kb = int(ua / unit), int(ub / unit)
        if max(abs(ka), abs(kb)) > MAX_ADD_MULTIPLIER:
            raise self.fail(node, f"the branch scales {float(sa):g} and {float(sb):g} have no "
                            "small integer ratio; quantize both branches with one shared "
                            "quantizer (or power-of-two scales).")
        ga, gb = a.fmt.grid(), b.fmt.grid()
        lo = min(ka * ga.lo, ka * ga.hi) + min(kb * gb.lo, kb * gb.hi)
        hi = max(ka * ga.lo, ka * ga.hi) + max(kb * gb.lo, kb * gb.hi)
        shape = channel_last(a.shape)
        index = self._add_layer(node, AddStreams(
            f"add{len(self.layers)}", (a.producer, b.producer), shape,
            acc_fmt=Int.spanning(lo, hi), in_fmts=(a.fmt, b.fmt), multipliers=(ka, kb)))
        c = shape[-1]
        offset = -(sa * a.zero_point + sb * b.zero_point)
        return Derived(index, Chain(c).then(Affine([unit] * c, [offset] * c)), a.shape)

    def _concat(self, node, ins: list[Value | None]) -> Stream | PendingConcat:
        xs = [v for v in ins if v is not None]
        if not all(isinstance(v, Stream) for v in xs):
            raise self.fail(node, "Concat of unquantized tensors is not supported; quantize "
                            "every branch.")
        first = xs[0]
        axis = int(attributes(node).get("axis", 1)) % (len(first.shape) + 1)
        if axis != 1:
            raise self.fail(node, f"Concat along axis {axis}: only channels (axis 1) are "
                            "supported.")
        for v in xs[1:]:
            if v.shape[1:] != first.shape[1:] or v.order is not None:
                raise self.fail(node, "Concat inputs must agree in every axis but channels.")
        if all(v.fmt == first.fmt and v.zero_point == first.zero_point
               and np.array_equal(v.scale, first.scale) for v in xs[1:]):
            return self._concat_layer(node, xs)
        shape = (sum(v.shape[0] for v in xs), *first.shape[1:])
        return PendingConcat(xs, shape)

    def _concat_layer(self, node, xs: list[Stream]) -> Stream:
        """Channel concatenation of branches quantized alike."""
        first = xs[0]
        if any(v.fmt != first.fmt or v.zero_point != first.zero_point
               or not np.array_equal(v.scale, first.scale) for v in xs[1:]):
            raise self.fail(node, "Concat of branches quantized differently needs a quantizer "
                            "right after it (or one shared quantizer on every branch).")
        if len(first.shape) == 2:  # matrices travel flattened, row after row: rows append
            channels = tuple(int(np.prod(v.shape)) for v in xs)
            in_shape = (channels[0],)
        else:
            channels = tuple(v.shape[0] for v in xs)
            in_shape = channel_last(first.shape)
        index = self._add_layer(node, Concat(
            f"concat{len(self.layers)}", tuple(v.producer for v in xs), in_shape,
            fmt=first.fmt, channels=channels))
        return replace(first, producer=index,
                       shape=(sum(v.shape[0] for v in xs), *first.shape[1:]))
