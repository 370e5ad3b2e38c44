"""ShuffleNet's channel shuffle: per pixel, output channel ``k`` is input channel
``(k % G) * N + k // G`` (``C = G * N`` channels).

Why banks: a beat carries ``p`` consecutive channels in and ``p`` consecutive channels out,
and the ``p`` channels an output beat needs were written by different input beats. With
``p`` dividing both ``G`` and ``N``, the bank ``(s // N + s) % p`` of source channel ``s``
differs across the ``p`` channels of any input beat and of any output beat, so ``p``
single-port memories (one write, one read port each) serve a beat per cycle; two barrel
rotations route lanes to banks and back.

A pixel is read only once all of it is written, so the memories hold two pixels (ping-pong):
one beat per cycle in steady state, a latency of one pixel.
"""

from __future__ import annotations

import numpy as np
from amaranth import Array, Cat, Module, Mux, Signal, unsigned
from amaranth.lib import memory, stream, wiring
from amaranth.lib.wiring import In, Out

from bitloom.ir import ChannelShuffle


class ChannelShuffleUnit(wiring.Component):
    """Ports ``i`` and ``o``, ``simd`` channels per beat (``simd`` divides the groups and the
    channels per group)."""

    def __init__(self, layer: ChannelShuffle, simd: int) -> None:
        channels, groups = layer.in_shape[-1], layer.groups
        per_group = channels // groups
        if groups % simd or per_group % simd:
            raise ValueError(f"SIMD {simd} must divide the {groups} groups and the "
                             f"{per_group} channels of a group")
        self.layer, self.simd = layer, simd
        self.channels, self.groups, self.per_group = channels, groups, per_group
        self.bits = layer.fmt.bits
        super().__init__({
            "i": In(stream.Signature(unsigned(simd * self.bits))),
            "o": Out(stream.Signature(unsigned(simd * self.bits))),
        })

    @property
    def cycles_per_frame(self) -> int:
        return int(np.prod(self.layer.in_shape)) // self.simd

    def elaborate(self, platform) -> Module:
        m = Module()
        p, bits = self.simd, self.bits
        beats = self.channels // p  # beats per pixel
        banks = [memory.Memory(shape=unsigned(bits), depth=2 * beats, init=[])
                 for _ in range(p)]
        for b, bank in enumerate(banks):
            m.submodules[f"bank{b}"] = bank
        filled = Signal(2)  # per half: a whole pixel is waiting to be read

        # -- write: input beat t of a pixel, channels t*p .. t*p + p - 1 (group grp) --------
        w_half, w_beat = Signal(), Signal(range(beats))
        w_grp, w_in_grp = Signal(range(self.groups)), Signal(range(self.per_group // p))
        take = Signal()
        m.d.comb += [self.i.ready.eq(~filled.bit_select(w_half, 1)),
                     take.eq(self.i.valid & self.i.ready)]
        lanes = [self.i.payload.word_select(s, bits) for s in range(p)]
        for b, bank in enumerate(banks):
            port = bank.write_port()
            source = Array(lanes)[(b + p * self.groups - w_grp) % p] if p > 1 else lanes[0]
            m.d.comb += [port.addr.eq(w_half * beats + w_beat),
                         port.data.eq(source), port.en.eq(take)]
        last_write = w_beat == beats - 1
        with m.If(take):
            m.d.sync += [w_beat.eq(Mux(last_write, 0, w_beat + 1)),
                         w_in_grp.eq(Mux(w_in_grp == self.per_group // p - 1, 0,
                                         w_in_grp + 1))]
            with m.If(w_in_grp == self.per_group // p - 1):
                m.d.sync += w_grp.eq(Mux(w_grp == self.groups - 1, 0, w_grp + 1))
            with m.If(last_write):
                m.d.sync += w_half.eq(~w_half)

        # -- read: output beat u, channels u*p + j from source (G0 + j) * N + q -------------
        en = Signal()
        m.d.comb += en.eq(~self.o.valid | self.o.ready)
        r_half, r_beat = Signal(), Signal(range(beats))
        r_q = Signal(range(self.per_group))  # (u * p) // G
        r_slot = Signal(range(self.groups // p))  # G0 / p, G0 = (u * p) % G
        issue = Signal()
        m.d.comb += issue.eq(en & filled.bit_select(r_half, 1))
        a_valid, a_rot = Signal(), Signal(range(p))
        with m.If(en):
            m.d.sync += [a_valid.eq(issue), a_rot.eq(r_q % p)]
        data = []
        for b, bank in enumerate(banks):
            port = bank.read_port(domain="sync")
            lane = (b + p * self.per_group - r_q) % p  # the output lane this bank serves
            within = (r_slot * p + lane) * (self.per_group // p) + r_q // p
            m.d.comb += [port.en.eq(en),
                         port.addr.eq(r_half * beats + within)]
            data.append(port.data)
        out = [Array(data)[(j + a_rot) % p] if p > 1 else data[0] for j in range(p)]
        m.d.comb += [self.o.valid.eq(a_valid), self.o.payload.eq(Cat(*out))]
        last_read = r_beat == beats - 1
        with m.If(issue):
            m.d.sync += [r_beat.eq(Mux(last_read, 0, r_beat + 1)),
                         r_slot.eq(Mux(r_slot == self.groups // p - 1, 0, r_slot + 1))]
            with m.If(r_slot == self.groups // p - 1):
                m.d.sync += r_q.eq(Mux(r_q == self.per_group - 1, 0, r_q + 1))
            with m.If(last_read):
                m.d.sync += r_half.eq(~r_half)

        # -- the halves: set when a pixel is written, cleared when it has been read ---------
        set_bits = Mux(take & last_write, Cat(~w_half, w_half), 0)
        clear_bits = Mux(issue & last_read, Cat(~r_half, r_half), 0)
        m.d.sync += filled.eq((filled | set_bits) & ~clear_bits)
        return m
