"""QONNX's quantizers (``Quant``/``IntQuant``, ``BipolarQuant``), as Brevitas exports them.

``Quant(x, scale, zero_point, bit_width)`` clips ``x / scale + zero_point`` to the integer
range, then rounds with ``rounding_mode``; its output is the dequantized float. On a
constant it yields quantized weights; on the graph input, the host-side input quantizer; on
a layer's float output, that layer's thresholds.
"""

from __future__ import annotations

from dataclasses import replace
from typing import ClassVar

import numpy as np

from bitloom.formats import Format, Int, normalize_rounding
from bitloom.formats.minifloat import float_quant_format
from bitloom.frontend.importer import (
    Constant,
    Derived,
    QuantConstant,
    Value,
    attributes,
)
from bitloom.ir import CLIP_THEN_ROUND, ROUND_THEN_SHIFT, Quantizer
from bitloom.ir.elementwise import Requantize

QONNX_DOMAINS = frozenset({"qonnx.custom_op.general", "onnx.brevitas", "finn.custom_op.general"})


class QonnxOps:
    """Handlers for QONNX's quantization ops (a mixin of the importer)."""

    OPS: ClassVar[dict[tuple[frozenset[str], str], str]] = {
        (QONNX_DOMAINS, "Quant"): "_qonnx_quant",
        (QONNX_DOMAINS, "IntQuant"): "_qonnx_quant",
        (QONNX_DOMAINS, "BipolarQuant"): "_qonnx_quant",
        (QONNX_DOMAINS, "FloatQuant"): "_qonnx_float_quant",
        (QONNX_DOMAINS, "Trunc"): "_qonnx_trunc",
    }

    def _qonnx_trunc(self, node, ins: list[Value | None]) -> Value:
        """``Trunc`` (v1: x, scale, zp, in_bits, out_bits; v2: x, scale, zp, in_bits,
        out_scale, out_bits): round onto the input grid, then drop low bits with
        ``rounding_mode`` (FLOOR by default) — two nested quantizers in one chain."""
        attrs = attributes(node)
        x = ins[0]
        if not isinstance(x, Derived):
            raise self.fail(node, "Trunc must follow a layer's float output (e.g. an "
                            "AveragePool); Trunc of this tensor is not supported.")
        version = next((o.version for o in self.model.opset_import if o.domain == node.domain),
                       1)
        v2 = version >= 2  # as qonnx's executor picks the implementation
        if len(ins) != (6 if v2 else 5):
            raise self.fail(node, f"Trunc of opset {version} ({'v2' if v2 else 'v1'}) takes "
                            f"{6 if v2 else 5} inputs, this node has {len(ins)}.")
        consts = [self._const_input(node, v, what).astype(np.float64).reshape(-1)
                  for v, what in zip(ins[1:], ("scale", "zero point", "input bit width",
                                               *(("output scale",) if v2 else ()),
                                               "output bit width"), strict=False)]
        if any(c.size != 1 for c in consts):
            raise self.fail(node, "Trunc parameters must be scalars.")
        scale, zp, in_bits, out_bits = (float(consts[0][0]), consts[1][0], consts[2][0],
                                         consts[-1][0])
        if scale <= 0 or (v2 and not consts[3][0] > 0):
            raise self.fail(node, "its scales must be positive.")
        if zp != int(zp) or abs(zp) > 2**32 or out_bits not in range(1, 17) or \
                in_bits not in range(1, 33):
            raise self.fail(node, "Trunc needs an integer zero point, 1..32 input bits and "
                            "1..16 output bits.")
        in_bits, out_bits = int(in_bits), int(out_bits)
        try:
            rounding = normalize_rounding(str(attrs.get("rounding_mode", "FLOOR")))
        except ValueError as exc:
            raise self.fail(node, str(exc)) from None
        if v2:  # qonnx: trunc_scale = 2**round(log2(out_scale / scale))
            out_scale = float(np.float32(consts[3][0]))
            shift = round(float(np.log2(out_scale / scale)))
            fmt = Int(out_bits, bool(attrs.get("signed", 1)), bool(attrs.get("narrow", 0)))
            order = CLIP_THEN_ROUND
        else:  # v1 drops in_bits - out_bits and does not clamp
            shift, out_scale = in_bits - out_bits, scale
            fmt, order = Int(out_bits + 1, True), ROUND_THEN_SHIFT
        step = 2.0 ** shift
        if (zp / step) != int(zp / step):
            raise self.fail(node, "the zero point does not survive the truncation exactly.")
        grid = Quantizer(Int(min(in_bits + 8, 62), True), scale, int(zp), "round",
                         ROUND_THEN_SHIFT)
        chain = x.chain.then(Requantize(grid))  # the integer on the input grid
        out = self._quantize(node, replace(x, chain=chain),
                             Quantizer(fmt, step, 0, rounding, order), np.array([step]))
        zero = int(zp / step) if v2 else int(zp)
        return replace(out, scale=np.array([out_scale], dtype=np.float64), zero_point=zero)

    def _qonnx_float_quant(self, node, ins: list[Value | None]) -> Value:
        """``FloatQuant(x, scale, exponent_bitwidth, mantissa_bitwidth, exponent_bias,
        max_val)``: a minifloat per QONNX's reference ``float_quant``."""
        attrs = attributes(node)
        ins = ins + [None] * (6 - len(ins))
        scale = self._const_input(node, ins[1], "scale").astype(np.float32)
        if np.any(scale <= 0) or not np.all(np.isfinite(scale)):
            raise self.fail(node, "its scale must be positive and finite.")
        params = [self._const_int(node, v, what, lo, hi) for v, what, lo, hi in
                  ((ins[2], "exponent bit width", 0, 8), (ins[3], "mantissa bit width", 0, 16),
                   (ins[4], "exponent bias", -256, 256))]
        max_val = None
        if ins[5] is not None:
            max_val = self._const_input(node, ins[5], "max_val").reshape(-1)
            if max_val.size != 1 or not max_val[0] > 0:
                raise self.fail(node, "its max_val must be one positive value.")
            max_val = float(max_val[0])
        if not attrs.get("saturation", 1):
            raise self.fail(node, "non-saturating FloatQuant (overflow to inf/NaN) cannot be "
                            "mapped to hardware; export with saturation=1.")
        try:
            fmt = float_quant_format(params[0], params[1], params[2], max_val,
                                     bool(attrs.get("has_inf", 0)),
                                     bool(attrs.get("has_nan", 0)), True)
            rounding = normalize_rounding(str(attrs.get("rounding_mode", "ROUND")))
        except ValueError as exc:
            raise self.fail(node, str(exc)) from None
        x = ins[0]
        if isinstance(x, Constant):
            return self._qonnx_weights(x.value.astype(np.float32), scale, fmt, rounding)
        if scale.size != 1:
            raise self.fail(node, "activation quantizers need a per-tensor scale.")
        quantizer = Quantizer(fmt, float(scale.reshape(-1)[0]), 0, rounding, CLIP_THEN_ROUND)
        return self._quantize(node, x, quantizer, scale)

    def _qonnx_quant(self, node, ins: list[Value | None]) -> Value:
        attrs = attributes(node)
        scale = self._const_input(node, ins[1], "scale").astype(np.float32)
        if np.any(scale <= 0) or not np.all(np.isfinite(scale)):
            raise self.fail(node, "its scale must be positive and finite.")
        if node.op_type == "BipolarQuant":
            fmt, zero_point, rounding = Int(1, signed=True), 0, "round"
        else:
            bits = self._const_int(node, ins[3], "bit width", 1, 16)
            zero_point = self._const_int(node, ins[2], "zero point", -2**16, 2**16)
            try:
                rounding = normalize_rounding(str(attrs.get("rounding_mode", "ROUND")))
            except ValueError as exc:
                raise self.fail(node, str(exc)) from None
            fmt = Int(bits, bool(attrs.get("signed", 1)), bool(attrs.get("narrow", 0)))
        x = ins[0]
        if isinstance(x, Constant):
            if zero_point != 0:
                raise self.fail(node, "weights with a non-zero zero point are not supported.")
            return self._qonnx_weights(x.value.astype(np.float32), scale, fmt, rounding)
        if scale.size != 1:
            raise self.fail(node, "activation quantizers need a per-tensor scale.")
        quantizer = Quantizer(fmt, float(scale.reshape(-1)[0]), zero_point, rounding,
                              CLIP_THEN_ROUND)
        return self._quantize(node, x, quantizer, scale)

    @staticmethod
    def _qonnx_weights(w: np.ndarray, scale: np.ndarray, fmt: Format, rounding: str):
        """Weights are few: quantize each exactly (clip, then round, as QONNX does) to grid
        integers."""
        s = np.broadcast_to(scale, w.shape)
        values = np.empty(w.shape, dtype=np.int64)
        for step in np.unique(s):  # one vectorized exact quantizer per distinct scale
            mask = s == step
            values[mask] = Quantizer(fmt, float(step), 0, rounding,
                                     CLIP_THEN_ROUND).apply_exactly(w[mask])
        return QuantConstant(values, scale, fmt)
