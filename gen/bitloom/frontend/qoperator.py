"""onnxruntime's QOperator form: integer-in, integer-out operators.

``QGemm`` (com.microsoft) and ``QLinearMatMul`` take quantized tensors with their scales
and zero points and produce a requantized tensor (or, for QGemm without an output scale,
float); ``MatMulInteger`` produces the raw int32 accumulator that later float ops scale.
All of them become the same MatrixVector layer with a per-channel chain as Q/DQ models do;
per-column parameters of B lie along its last axis (B may be batched, rank 3).
"""

from __future__ import annotations

from dataclasses import replace
from fractions import Fraction
from typing import ClassVar

import numpy as np

from bitloom.frontend.importer import (
    Constant,
    Derived,
    QuantConstant,
    Stream,
    Value,
    attributes,
)
from bitloom.frontend.qdq import QDQ_DOMAINS
from bitloom.ir import ROUND_THEN_SHIFT, Affine, Quantizer
from bitloom.ir.elementwise import as_fractions


class QOperatorOps:
    """Handlers for QOperator ops (a mixin of the importer; needs :class:`QdqOps`)."""

    OPS: ClassVar[dict[tuple[frozenset[str], str], str]] = {
        (QDQ_DOMAINS, "QGemm"): "_qlinear_dense",
        (QDQ_DOMAINS, "QLinearMatMul"): "_qlinear_dense",
        (QDQ_DOMAINS, "MatMulInteger"): "_matmul_integer",
        (QDQ_DOMAINS, "QLinearConv"): "_qlinear_conv",
        (QDQ_DOMAINS, "ConvInteger"): "_conv_integer",
        (QDQ_DOMAINS, "QLinearAdd"): "_qlinear_add",
        (QDQ_DOMAINS, "QLinearAveragePool"): "_qlinear_pool",
        (QDQ_DOMAINS, "QLinearGlobalAveragePool"): "_qlinear_pool",
        (QDQ_DOMAINS, "QLinearConcat"): "_qlinear_concat",
    }

    def _operand(self, node, x: Value | None, scale: Value | None, zp: Value | None,
                 unit_scale: bool = False) -> Stream:
        """An integer activation input with the scale/zero point the op states for it."""
        if not isinstance(x, Stream):
            raise self.fail(node, "its input must be a quantized tensor (QuantizeLinear or "
                            "another QLinear op).")
        s = (np.ones(1, np.float32) if unit_scale else
             self._const_input(node, scale, "input scale").astype(np.float32).reshape(-1))
        z = (self._const_input(node, zp, "input zero point").astype(np.int64).reshape(-1)
             if zp is not None else np.zeros(1, dtype=np.int64))
        if s.size != 1 or z.size != 1:
            raise self.fail(node, "activations need a per-tensor scale and zero point.")
        return replace(x, scale=s, zero_point=int(z[0]))

    def _int_weights(self, node, b: Value | None, scale: Value | None, zp: Value | None,
                     axis: int) -> QuantConstant:
        if not isinstance(b, Constant):
            raise self.fail(node, "its weights must be an integer initializer.")
        fake = type("DQ", (), {"attribute": [], "op_type": node.op_type, "name": node.name,
                               "domain": node.domain})
        ins = [b, scale if scale is not None else Constant(np.ones(1, np.float32)), zp]
        scale_v, zero_point, fmt, _ = self._qdq_params(fake, ins, b)
        q = b.value.astype(np.int64)
        values = q - self._along_axis(node, q, zero_point, axis)
        wfmt = fmt if not zero_point.any() else type(fmt).spanning(
            fmt.min_int - int(zero_point.max()), fmt.max_int - int(zero_point.min()))
        return QuantConstant(values, self._along_axis(node, q, scale_v, axis), wfmt)

    def _qlinear_dense(self, node, ins: list[Value | None]) -> Value:
        attrs = attributes(node)
        ins = ins + [None] * (9 - len(ins))
        if attrs.get("transA", 0):
            raise self.fail(node, "transA=1 is not supported.")
        trans_b = bool(attrs.get("transB", 0))
        x = self._operand(node, ins[0], ins[1], ins[2])
        w = self._int_weights(node, ins[3], ins[4], ins[5], axis=0 if trans_b else -1)
        out = self._dense(node, x, w, trans_b)
        n = out.chain.channels
        if node.op_type == "QGemm":
            alpha = attrs.get("alpha", 1.0)
            chain = out.chain.then(Affine(self._exact(node, alpha, n, "alpha"),
                                              [Fraction(0)] * n))
            if ins[6] is not None:  # int32 bias in units of scale_a * scale_b
                bias = self._const_input(node, ins[6], "bias C").astype(np.int64).reshape(-1)
                unit = [Fraction(float(x.scale[0])) * s
                        for s in as_fractions(np.asarray(w.scale, np.float32), n)]
                chain = chain.then(Affine([Fraction(1)] * n, [
                    u * int(c) for u, c in zip(unit, np.broadcast_to(bias, (n,)), strict=True)]))
            out = Derived(out.producer, chain, out.shape)
            y_scale, y_zp = ins[7], ins[8]
        else:
            y_scale, y_zp = ins[6], ins[7]
        if y_scale is None:
            return out
        return self._requantized(node, out, y_scale, y_zp)

    def _requantized(self, node, x: Value, y_scale: Value | None, y_zp: Value | None) -> Value:
        """``x`` quantized with the op's output scale and zero point (QuantizeLinear rules)."""
        fake = type("Q", (), {"attribute": [], "op_type": node.op_type, "name": node.name,
                              "domain": node.domain})
        scale, zero_point, fmt, _ = self._qdq_params(fake, [None, y_scale, y_zp])
        if scale.size != 1 or zero_point.size != 1:
            raise self.fail(node, "outputs need a per-tensor scale and zero point.")
        quantizer = Quantizer(fmt, float(scale.reshape(-1)[0]), int(zero_point.reshape(-1)[0]),
                              "round", ROUND_THEN_SHIFT)
        out = self._quantize(node, x, quantizer, scale)
        return replace(out, codes=True) if isinstance(out, Stream) else out

    def _qlinear_conv(self, node, ins: list[Value | None]) -> Value:
        ins = ins + [None] * (9 - len(ins))
        x = self._operand(node, ins[0], ins[1], ins[2])
        w = self._int_weights(node, ins[3], ins[4], ins[5], axis=0)
        out = self._convolution(node, x, w)
        if ins[8] is not None:  # int32 bias in units of scale_x * scale_w
            m = out.chain.channels
            bias = self._const_input(node, ins[8], "bias B").astype(np.int64).reshape(-1)
            unit = [Fraction(float(x.scale[0])) * s
                    for s in as_fractions(np.asarray(w.scale, np.float32).reshape(-1), m)]
            out = replace(out, chain=out.chain.then(Affine([Fraction(1)] * m, [
                u * int(b) for u, b in zip(unit, np.broadcast_to(bias, (m,)), strict=True)])))
        return self._requantized(node, out, ins[6], ins[7])

    def _conv_integer(self, node, ins: list[Value | None]) -> Derived:
        ins = ins + [None] * (4 - len(ins))
        x = self._operand(node, ins[0], None, ins[2], unit_scale=True)
        return self._convolution(node, x, self._int_weights(node, ins[1], None, ins[3], axis=0))

    def _qlinear_add(self, node, ins: list[Value | None]) -> Value:
        ins = ins + [None] * (8 - len(ins))
        a = self._operand(node, ins[0], ins[1], ins[2])
        b = self._operand(node, ins[3], ins[4], ins[5])
        return self._requantized(node, self._add_streams(node, a, b), ins[6], ins[7])

    def _qlinear_pool(self, node, ins: list[Value | None]) -> Value:
        ins = ins + [None] * (5 - len(ins))
        x = self._operand(node, ins[0], ins[1], ins[2])
        return self._requantized(node, self._average_pool(node, [x]), ins[3], ins[4])

    def _qlinear_concat(self, node, ins: list[Value | None]) -> Value:
        if (len(ins) - 2) % 3 or len(ins) < 5:
            raise self.fail(node, "expects Y_scale, Y_zero_point, then (X, scale, zero point) "
                            "triples.")
        parts = [self._operand(node, *ins[i:i + 3]) for i in range(2, len(ins), 3)]
        return self._requantized(node, self._concat(node, parts), ins[0], ins[1])

    def _matmul_integer(self, node, ins: list[Value | None]) -> Derived:
        ins = ins + [None] * (4 - len(ins))
        x = self._operand(node, ins[0], None, ins[2], unit_scale=True)
        w = self._int_weights(node, ins[1], None, ins[3], axis=-1)
        return self._dense(node, x, w, trans_b=False)
