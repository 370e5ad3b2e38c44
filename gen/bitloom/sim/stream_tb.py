"""cocotb testbench: stream a batch through the AXI4-Stream top and check it bit-exactly.

Random gaps on ``s_axis_tvalid`` and ``m_axis_tready`` (probabilities from the vectors file)
exercise back-pressure with many frames in flight. Every layer's output beats are written to
``probe<n>.hex`` by the top itself (compiled in with ``BITLOOM_PROBES``); the runner reads
them after the simulation to name the first layer that differs.
Streamed weights are fed from the design's ``weights/*.mem`` files (listed in
``weights/streams.json``), each file once per pass, with the same random gaps as the input.
"""

from __future__ import annotations

import json
import logging
import os
import random
from pathlib import Path

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge, SimTimeoutError, with_timeout
from cocotb.utils import get_sim_time
from cocotbext.axi import AxiStreamBus, AxiStreamFrame, AxiStreamSink, AxiStreamSource

from bitloom.emit.design import read_mem
from bitloom.sim.vectors import Vectors


def pauses(probability: float, rng: random.Random):
    while True:
        yield rng.random() < probability


def weight_streams(weights: Path) -> list[dict]:
    """The streamed layers of the design (``weights/streams.json``; none without it)."""
    manifest = weights / "streams.json"
    return json.loads(manifest.read_text()) if manifest.is_file() else []


#: the clock period in ns (the simulated frequency is irrelevant; cycles are what is counted)
PERIOD_NS = 10


@cocotb.test()
async def stream_batch(dut) -> None:
    vec = Vectors.load(Path(os.environ["BITLOOM_VECTORS"]))
    result_path = Path(os.environ["BITLOOM_RESULT"])
    rng = random.Random(vec.seed)
    cocotb.start_soon(Clock(dut.ap_clk, PERIOD_NS, unit="ns").start())

    in_bytes = len(dut.s_axis_tdata) // 8
    source = AxiStreamSource(AxiStreamBus.from_prefix(dut, "s_axis"), dut.ap_clk,
                             dut.ap_rst_n, reset_active_level=False)
    sink = AxiStreamSink(AxiStreamBus.from_prefix(dut, "m_axis"), dut.ap_clk,
                         dut.ap_rst_n, reset_active_level=False)
    source.log.setLevel(logging.WARNING)
    sink.log.setLevel(logging.WARNING)
    if vec.in_pause > 0:
        source.set_pause_generator(pauses(vec.in_pause, rng))
    if vec.out_pause > 0:
        sink.set_pause_generator(pauses(vec.out_pause, rng))

    dut.ap_rst_n.value = 0
    await ClockCycles(dut.ap_clk, 4)
    dut.ap_rst_n.value = 1
    await RisingEdge(dut.ap_clk)
    start = get_sim_time("ns")

    def cycles() -> int:
        return int(get_sim_time("ns") - start) // PERIOD_NS

    for stream in weight_streams(Path(os.environ.get("BITLOOM_WEIGHTS", "."))):
        feed = AxiStreamSource(AxiStreamBus.from_prefix(dut, stream["port"]), dut.ap_clk,
                               dut.ap_rst_n, reset_active_level=False)
        feed.log.setLevel(logging.WARNING)
        if vec.in_pause > 0:
            feed.set_pause_generator(pauses(vec.in_pause, rng))
        width = len(getattr(dut, f"{stream['port']}_tdata")) // 8
        words = read_mem(Path(os.environ["BITLOOM_WEIGHTS"]).parent / stream["file"])
        frame = b"".join(w.to_bytes(width, "little") for w in words) * stream["passes_per_frame"]
        for _ in range(vec.frames):
            await feed.send(AxiStreamFrame(frame))

    per_frame = vec.in_beats_per_frame
    for f in range(vec.frames):
        beats = vec.in_beats[f * per_frame:(f + 1) * per_frame]
        data = b"".join(b.to_bytes(in_bytes, "little") for b in beats)
        await source.send(AxiStreamFrame(data))

    out_bytes = len(dut.m_axis_tdata) // 8
    outputs: list[int] = []
    frame_done: list[int] = []

    async def receive() -> None:
        for _ in range(vec.frames):
            frame = await sink.recv()
            data = bytes(frame.tdata)
            outputs.extend(int.from_bytes(data[i:i + out_bytes], "little")
                           for i in range(0, len(data), out_bytes))
            frame_done.append(cycles())

    # A design that stalls must fail with a diagnosis, not hang the run.
    stalled = False
    full: list[str] = []
    try:
        await with_timeout(receive(), vec.timeout_cycles * PERIOD_NS, "ns")
    except SimTimeoutError:
        stalled = True
        flags = int(dut.core.fifo_full.value)
        full = [name for k, name in enumerate(vec.fifo_names) if flags >> k & 1]
    await ClockCycles(dut.ap_clk, 2)

    result_path.write_text(json.dumps({
        "outputs": [hex(b) for b in outputs],
        "frame_done_cycle": frame_done,
        "stalled_after_cycles": cycles() if stalled else None,
        "full_fifos": full,
    }))
    where = (f"full FIFO(s): {'; '.join(full)} — too shallow for the branch it buffers"
             if full else "no FIFO is full")
    assert not stalled, f"no progress after {cycles()} cycles; {where}"
    assert outputs == vec.probes[-1], "output stream differs (the runner names the layer)"
