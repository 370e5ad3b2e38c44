"""The matrix-vector unit: PE x SIMD folded dot products, exact accumulation, thresholds.

Schedule (FINN's): a frame is ``K`` input elements arriving ``SIMD`` per beat and ``N``
outputs leaving ``PE`` per beat. For each of ``NF = N/PE`` neuron folds the unit walks the
``SF = K/SIMD`` synapse folds; during the first neuron fold it takes the input from the
stream and keeps it in a small buffer for the others. One step per cycle, so a frame takes
``NF * SF`` cycles.

Pipeline (every register advances together when the output register can move):

    issue: counters, weight/buffer addresses -> dot: SIMD products per PE, adder tree
    (``pipeline`` registers among its levels, for a faster clock), accumulate -> requant:
    threshold compares (or the raw accumulator), shared with every unit in
    :mod:`~bitloom.hw.thresholds` -> output register

Weights: one word (``PE * SIMD`` codes) per step, from a ROM (``lutram``/``bram``, see
:mod:`bitloom.hw.weights`) or from the ``w`` stream (``streamed``: the words in step order,
again for every output pixel).
"""

from __future__ import annotations

import numpy as np
from amaranth import Module, Mux, Signal, unsigned
from amaranth.lib import memory, stream, wiring
from amaranth.lib.wiring import In, Out

from bitloom.formats import Format
from bitloom.hw.pe import dot_products
from bitloom.hw.pe.stages import Stages
from bitloom.hw.thresholds import acc_shape, drive_output, requantize
from bitloom.hw.weights import pack_rows, unpack_rows, weight_codes, weight_source
from bitloom.ir import MatrixVector
from bitloom.plan.clock import register_levels
from bitloom.plan.fold import Folding
from bitloom.plan.memory import STREAMED, matrix_weight_geometry


def weight_words(weights: np.ndarray, fold: Folding, w_fmt: Format, name: str = "") -> list[int]:
    """Weight memory contents: word ``nf * SF + sf`` holds ``W[sf*SIMD + s, nf*PE + p]``
    at element ``p * SIMD + s``."""
    k, n = weights.shape
    sf_count, nf_count = k // fold.simd, n // fold.pe
    codes = weight_codes(name, weights, w_fmt)
    blocks = codes.reshape(sf_count, fold.simd, nf_count, fold.pe)  # [sf, s, nf, p]
    steps = blocks.transpose(2, 0, 3, 1)  # [nf, sf, p, s]
    return pack_rows(name, steps.reshape(nf_count * sf_count, -1), w_fmt.bits)


def unpack_weight_words(words: list[int], shape: tuple[int, int], fold: Folding,
                        w_fmt: Format) -> np.ndarray:
    """The inverse of :func:`weight_words`: memory words -> the ``(K, N)`` weight codes."""
    k, n = shape
    sf_count, nf_count = k // fold.simd, n // fold.pe
    fields = unpack_rows(words, w_fmt.bits, fold.pe * fold.simd)
    blocks = fields.reshape(nf_count, sf_count, fold.pe, fold.simd)  # [nf, sf, p, s]
    return blocks.transpose(1, 3, 0, 2).reshape(k, n)  # [sf, s, nf, p]


class MatrixVectorUnit(wiring.Component):
    """Streams ``K``-vectors in and ``N``-vectors out, computing one MatrixVector layer."""

    def __init__(self, layer: MatrixVector, fold: Folding, style: str = "lutram",
                 dsp: str | None = None, pipeline: int = 0) -> None:
        k, n = layer.weights.shape
        if k % fold.simd or n % fold.pe:
            raise ValueError(f"{layer.name}: SIMD {fold.simd} must divide {k}, PE {fold.pe} {n}")
        self.layer, self.fold, self.style, self.dsp = layer, fold, style, dsp
        self.pipeline = pipeline
        self.sf_count, self.nf_count = k // fold.simd, n // fold.pe
        self.steps, self.weight_bits, _ = matrix_weight_geometry(layer, fold)
        members = {
            "i": In(stream.Signature(unsigned(fold.simd * layer.in_fmt.bits))),
            "o": Out(stream.Signature(unsigned(fold.pe * layer.out_fmt.bits))),
        }
        if style == STREAMED:
            members["w"] = In(stream.Signature(unsigned(self.weight_bits)))
        super().__init__(members)

    @property
    def weight_words(self) -> list[int]:
        """The weight memory's contents (or the streamed words of one pass), step order."""
        return weight_words(self.layer.weights, self.fold, self.layer.w_fmt, self.layer.name)

    @property
    def cycles_per_frame(self) -> int:
        return self.sf_count * self.nf_count

    def elaborate(self, platform) -> Module:
        m = Module()
        layer, fold = self.layer, self.fold
        sf_n, nf_n = self.sf_count, self.nf_count
        in_fmt, w_fmt, acc_fmt = layer.in_fmt, layer.w_fmt, layer.acc_fmt

        en = Signal()  # the whole pipeline advances together
        m.d.comb += en.eq(~self.o.valid | self.o.ready)

        # -- issue ------------------------------------------------------------------------
        sf = Signal(range(sf_n))
        nf = Signal(range(nf_n))
        step = Signal(range(sf_n * nf_n))
        from_input = nf == 0
        issue = Signal()
        w_ok = self.w.valid if self.style == STREAMED else 1  # a streamed weight is here
        m.d.comb += [
            self.i.ready.eq(en & from_input & w_ok),
            issue.eq(en & (~from_input | self.i.valid) & w_ok),
        ]
        with m.If(issue):
            m.d.sync += [
                sf.eq(Mux(sf == sf_n - 1, 0, sf + 1)),
                step.eq(Mux(step == sf_n * nf_n - 1, 0, step + 1)),
            ]
            with m.If(sf == sf_n - 1):
                m.d.sync += nf.eq(Mux(nf == nf_n - 1, 0, nf + 1))

        w_word = weight_source(m, layer.name, self, self.weight_words, step, en, issue)
        m.submodules.inbuf = bmem = memory.Memory(
            shape=unsigned(fold.simd * in_fmt.bits), depth=sf_n, init=[])
        b_rd, b_wr = bmem.read_port(), bmem.write_port()
        m.d.comb += [
            b_rd.addr.eq(sf), b_rd.en.eq(en),
            b_wr.addr.eq(sf), b_wr.data.eq(self.i.payload), b_wr.en.eq(issue & from_input),
        ]
        a_valid, a_first, a_last, a_from_input = Signal(), Signal(), Signal(), Signal()
        a_nf = Signal(range(nf_n))
        a_data = Signal(len(self.i.payload))
        with m.If(en):
            m.d.sync += [
                a_valid.eq(issue), a_first.eq(sf == 0), a_last.eq(sf == sf_n - 1),
                a_from_input.eq(from_input), a_nf.eq(nf), a_data.eq(self.i.payload),
            ]

        # -- dot products and accumulation -------------------------------------------------
        # a signal, not an expression: every lane slices it, and Amaranth copies an
        # expression into each place it is used (a SIMD-wide mux per lane)
        x = Signal(len(a_data))
        m.d.comb += x.eq(Mux(a_from_input, a_data, b_rd.data))
        xs = [x.word_select(s, in_fmt.bits) for s in range(fold.simd)]
        accs = [Signal(acc_shape(acc_fmt), name=f"acc{p}") for p in range(fold.pe)]
        b_valid = Signal()
        w_rows = [[w_word.word_select(p * fold.simd + s, w_fmt.bits) for s in range(fold.simd)]
                  for p in range(fold.pe)]
        # Stages keeps the adder tree's sums, so Yosys builds one carry-chain adder per sum
        # (docs/pe.md), and registers ``pipeline`` of its levels for a faster clock, the
        # accumulation counted as the last level; they advance with the rest of the
        # pipeline, the step's flags beside them
        levels = dot_levels(w_fmt, in_fmt, fold, self.dsp) + 1 if self.pipeline else 1
        stages = Stages(m, register_levels(self.pipeline, levels), en=en)
        dots = dot_products(w_rows, xs, w_fmt, in_fmt, dsp=self.dsp, stages=stages)
        d_valid, d_first, d_last, d_nf = (delayed(m, s, self.pipeline, en)
                                          for s in (a_valid, a_first, a_last, a_nf))
        for acc, dot in zip(accs, dots, strict=True):
            with m.If(en & d_valid):
                m.d.sync += acc.eq(Mux(d_first, 0, acc) + dot)
        with m.If(en):
            m.d.sync += b_valid.eq(d_valid & d_last)

        # -- requantization into the output register ---------------------------------------
        result, r_valid = requantize(m, "thresholds", accs, layer.requant, acc_fmt, d_nf, en,
                                     b_valid)
        drive_output(m, self.o, en, result, r_valid)
        return m


def dot_levels(w_fmt: Format, a_fmt: Format, fold: Folding, dsp: str | None) -> int:
    """Levels of :func:`dot_products` at ``fold`` (a dry run into a module that is thrown
    away: without one the builder writes wide sums as one nested expression, which
    Amaranth cannot walk at hundreds of lanes): where pipeline registers may go."""
    scratch = Module()
    scratch._MustUse__silence = True  # built to be counted, never elaborated
    counting = Stages(scratch)
    rows = [[Signal(w_fmt.bits) for _ in range(fold.simd)] for _ in range(fold.pe)]
    dot_products(rows, [Signal(a_fmt.bits) for _ in range(fold.simd)], w_fmt, a_fmt,
                 dsp=dsp, stages=counting)
    return counting.deepest + 1


def delayed(m: Module, signal: Signal, depth: int, en: Signal) -> Signal:
    """``signal`` ``depth`` enabled cycles later (a shift register advancing with ``en``)."""
    for k in range(depth):
        later = Signal.like(signal, name=f"{signal.name}_d{k + 1}")
        with m.If(en):
            m.d.sync += later.eq(signal)
        signal = later
    return signal
