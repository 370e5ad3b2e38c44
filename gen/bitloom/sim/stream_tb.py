"""cocotb testbench: stream a batch through the AXI4-Stream top and check it bit-exactly.

Random gaps on ``s_axis_tvalid`` and ``m_axis_tready`` (probabilities from the vectors file)
exercise back-pressure with many frames in flight. Every layer's output beats are written to
``probe<n>.hex`` by the top itself (compiled in with ``BITLOOM_PROBES``); the runner reads
them after the simulation to name the first layer that differs. Streamed weights are fed
from the design's ``weights/*.mem`` files (listed in ``weights/streams.json``), each file
once per pass, with the same random gaps as the input.

The ports are driven by one coroutine that wakes once per clock edge and moves whole beats
(precomputed integers): a large network needs millions of cycles, and a generic bus model
that handles every byte of every beat would dominate the run.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge

from bitloom.emit.design import read_mem
from bitloom.sim.vectors import Vectors


class Source:
    """Drives beats into one AXI4-Stream input of the top. A beat once shown stays until
    it is taken (AXI4-Stream's rule); between beats, a gap is inserted with probability
    ``gap``. ``beats`` are sent ``repeat`` times over."""

    def __init__(self, dut, prefix: str, beats: list[int], repeat: int, gap: float,
                 rng: random.Random) -> None:
        self.data = getattr(dut, f"{prefix}_tdata")
        self.valid = getattr(dut, f"{prefix}_tvalid")
        self.ready = getattr(dut, f"{prefix}_tready")
        getattr(dut, f"{prefix}_tlast").value = 0
        self.beats, self.total = beats, len(beats) * repeat
        self.gap, self.rng = gap, rng
        self.sent, self.showing = 0, False
        self.valid.value = 0

    def step(self) -> None:
        """After a rising edge: count the beat taken at it, then show the next one."""
        if self.showing:
            if not self.ready.value:
                return
            self.sent += 1
        show = self.sent < self.total and not (self.gap and self.rng.random() < self.gap)
        if show:
            self.data.value = self.beats[self.sent % len(self.beats)]
        if show != self.showing:
            self.valid.value = int(show)
            self.showing = show


class Sink:
    """Takes beats from the top's output, ready with probability ``1 - gap`` each cycle;
    notes the cycle each frame completes and whether ``tlast`` marks exactly frame ends."""

    def __init__(self, dut, per_frame: int, gap: float, rng: random.Random) -> None:
        self.data, self.valid = dut.m_axis_tdata, dut.m_axis_tvalid
        self.ready, self.last = dut.m_axis_tready, dut.m_axis_tlast
        self.per_frame, self.gap, self.rng = per_frame, gap, rng
        self.beats: list[int] = []
        self.frame_done: list[int] = []
        self.misplaced_last: int | None = None  # the first beat whose tlast is wrong
        self.accepting = False
        self.ready.value = 0

    def step(self, cycle: int) -> None:
        """After a rising edge: record the beat taken at it, then choose ready."""
        if self.accepting and self.valid.value:
            self.beats.append(int(self.data.value))
            frame_end = len(self.beats) % self.per_frame == 0
            if bool(self.last.value) != frame_end and self.misplaced_last is None:
                self.misplaced_last = len(self.beats) - 1
            if frame_end:
                self.frame_done.append(cycle)
        accept = not (self.gap and self.rng.random() < self.gap)
        if accept != self.accepting:
            self.ready.value = int(accept)
            self.accepting = accept


def weight_streams(weights: Path) -> list[dict]:
    """The streamed layers of the design (``weights/streams.json``; none without it)."""
    manifest = weights / "streams.json"
    return json.loads(manifest.read_text()) if manifest.is_file() else []


@cocotb.test()
async def stream_batch(dut) -> None:
    vec = Vectors.load(Path(os.environ["BITLOOM_VECTORS"]))
    result_path = Path(os.environ["BITLOOM_RESULT"])
    weights = Path(os.environ.get("BITLOOM_WEIGHTS", "."))
    rng = random.Random(vec.seed)
    cocotb.start_soon(Clock(dut.ap_clk, 10, unit="ns").start())

    sources = [Source(dut, "s_axis", vec.in_beats, 1, vec.in_pause, rng)]
    for stream in weight_streams(weights):
        words = read_mem(weights.parent / stream["file"])
        sources.append(Source(dut, stream["port"], words,
                              stream["passes_per_frame"] * vec.frames, vec.in_pause, rng))
    sink = Sink(dut, vec.out_beats_per_frame, vec.out_pause, rng)

    dut.ap_rst_n.value = 0
    await ClockCycles(dut.ap_clk, 4)
    dut.ap_rst_n.value = 1
    await RisingEdge(dut.ap_clk)

    # A design that stalls must fail with a diagnosis, not hang the run.
    expected = vec.out_beats_per_frame * vec.frames
    edge, cycle = RisingEdge(dut.ap_clk), 0
    while len(sink.beats) < expected and cycle < vec.timeout_cycles:
        for source in sources:
            source.step()
        sink.step(cycle)
        await edge
        cycle += 1
    stalled = len(sink.beats) < expected
    if not stalled:  # the layers still finishing what the output did not need
        drain = 0
        while drain < vec.drain_cycles and cycle < vec.timeout_cycles:
            for source in sources:
                source.step()
            sink.step(cycle)
            await edge
            cycle += 1
            if all(source.sent >= source.total for source in sources):
                drain += 1
    flags = int(dut.core.fifo_full.value) if stalled else 0
    full = [name for k, name in enumerate(vec.fifo_names) if flags >> k & 1]
    await ClockCycles(dut.ap_clk, 2)

    result_path.write_text(json.dumps({
        "outputs": [hex(b) for b in sink.beats],
        "frame_done_cycle": sink.frame_done,
        "stalled_after_cycles": cycle if stalled else None,
        "full_fifos": full,
        "misplaced_tlast_beat": sink.misplaced_last,
    }))
    where = (f"full FIFO(s): {'; '.join(full)} — too shallow for the branch it buffers"
             if full else "no FIFO is full")
    assert not stalled, f"no progress after {cycle} cycles; {where}"
    assert sink.beats == vec.probes[-1], "output stream differs (the runner names the layer)"
    assert sink.misplaced_last is None, f"m_axis_tlast is wrong on beat {sink.misplaced_last}"
