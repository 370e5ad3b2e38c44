"""cocotb testbench for a batch of units behind one input and one output word.

The top (``bitloom_top``) has ports ``clk``, ``rst``, ``inp`` and ``out``. Word ``k`` of the
vectors file is driven at a falling edge and ``out`` is sampled at the next falling edge,
after exactly one rising edge: sample ``k`` is a combinational unit's answer to word ``k``,
and a unit with ``L >= 1`` registers shows there its answer to word ``k + 1 - L``. The caller
aligns and checks the samples; this bench only moves words (one Python call per cycle, so
many units side by side cost no more than one).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge


@cocotb.test()
async def drive_words(dut) -> None:
    words = [int(w, 16) for w in json.loads(Path(os.environ["BITLOOM_WORDS"]).read_text())]
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.rst.value = 0
    dut.inp.value = 0
    await FallingEdge(dut.clk)
    samples = []
    for word in words:
        dut.inp.value = word
        await FallingEdge(dut.clk)
        samples.append(format(int(dut.out.value), "x"))
    Path(os.environ["BITLOOM_SAMPLES"]).write_text(json.dumps(samples))
