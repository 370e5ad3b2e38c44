"""AddStreams: ``ka * a + kb * b`` of two streams of one shape (a residual join)."""

from __future__ import annotations

import math
from functools import partial

import numpy as np

from bitloom.emit.hls import (
    Kernel,
    add_requant,
    c_array,
    fmt_type,
    int_literal,
    rom_type,
    tensor_fmt,
)
from bitloom.hw.pointwise import AddUnit
from bitloom.ir import AddStreams
from bitloom.plan.cost import lane_counts
from bitloom.plan.folding import LayerPlan
from bitloom.plan.kind import LayerKind
from bitloom.plan.registry import register


class AddKind(LayerKind):
    layer_type = AddStreams
    joins = True

    def unit_counts(self, lp: LayerPlan) -> dict[str, float]:
        ly, p = lp.layer, lp.fold.pe
        counts = lane_counts(lp)
        ka, kb, _ = ly.channel_terms()
        widest = max(1, *(int(abs(v)).bit_length() for v in (*ka, *kb)))
        counts["acc"] += p * 2 * lp.in_fmt.bits * widest
        if ly.per_channel:  # the per-channel terms: a ROM word per channel chunk
            counts["acc"] += p * ly.acc_fmt.bits
        return counts

    def make_unit(self, lp: LayerPlan):
        return AddUnit(lp.layer, lp.fold.pe), ["a", "b"]

    def hls_call(self, k: Kernel, index: int, prefix: str, srcs: list[str], dst: str) -> None:
        layer = k.net.layers[index]
        a_fmt, b_fmt = (fmt_type(tensor_fmt(k.net, p)) for p in layer.inputs)
        req = add_requant(k, prefix, layer, layer.out_fmt)
        terms = np.stack(layer.channel_terms()).astype(object)
        if not layer.per_channel:
            terms = terms[:, :1]
        word = rom_type(terms)
        literal = partial(int_literal, ctype=word)
        k.params.append({"kind": "add_terms", "name": prefix, "word": word,
                         "count": terms.shape[1], **{
                             key: c_array(row, literal)
                             for key, row in zip(("ka", "kb", "bias"), terms, strict=True)}})
        k.calls.append({"kind": "add", "name": prefix, "channels": layer.in_shape[-1],
                        "elems": math.prod(layer.in_shape), "a_fmt": a_fmt, "b_fmt": b_fmt,
                        "req": req, "a": srcs[0], "b": srcs[1], "dst": dst,
                        "count": terms.shape[1], "relu": str(layer.relu).lower(),
                        "word": word})


register(AddKind())
