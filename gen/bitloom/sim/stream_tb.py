"""cocotb testbench: stream a batch through the AXI4-Stream top and check it bit-exactly.

Random gaps on ``s_axis_tvalid`` and ``m_axis_tready`` (probabilities from the vectors file)
exercise back-pressure with many frames in flight. Every layer's output is watched through
the core's probe ports; on a mismatch the failure names the first layer that differs.
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
from cocotbext.axi import AxiStreamBus, AxiStreamFrame, AxiStreamSink, AxiStreamSource

from bitloom.emit.design import read_mem
from bitloom.sim.vectors import Vectors, first_mismatch


def pauses(probability: float, rng: random.Random):
    while True:
        yield rng.random() < probability


async def watch(valid, ready, payload, clock, sink: list[int]) -> None:
    """Record every beat that crosses a probe (valid and ready in the same cycle)."""
    while True:
        await RisingEdge(clock)
        if valid.value and ready.value:
            sink.append(int(payload.value))


def weight_streams(weights: Path) -> list[dict]:
    """The streamed layers of the design (``weights/streams.json``; none without it)."""
    manifest = weights / "streams.json"
    return json.loads(manifest.read_text()) if manifest.is_file() else []


async def count_cycles(clock, counter: list[int]) -> None:
    while True:
        await RisingEdge(clock)
        counter[0] += 1


@cocotb.test()
async def stream_batch(dut) -> None:
    vec = Vectors.load(Path(os.environ["BITLOOM_VECTORS"]))
    result_path = Path(os.environ["BITLOOM_RESULT"])
    rng = random.Random(vec.seed)
    cocotb.start_soon(Clock(dut.ap_clk, 10, unit="ns").start())

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

    captured: list[list[int]] = [[] for _ in vec.probes]
    for n, store in enumerate(captured):
        probe = [getattr(dut.core, f"probe{n}__{m}") for m in ("valid", "ready", "payload")]
        cocotb.start_soon(watch(*probe, dut.ap_clk, store))
    cycles = [0]
    cocotb.start_soon(count_cycles(dut.ap_clk, cycles))

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
            frame_done.append(cycles[0])

    # A design that stalls must fail with a diagnosis, not hang the run.
    stalled = False
    full: list[str] = []
    try:
        await with_timeout(receive(), vec.timeout_cycles * 10, "ns")
    except SimTimeoutError:
        stalled = True
        flags = int(dut.core.fifo_full.value)
        full = [name for k, name in enumerate(vec.fifo_names) if flags >> k & 1]
    await ClockCycles(dut.ap_clk, 2)

    result_path.write_text(json.dumps({
        "outputs": [hex(b) for b in outputs],
        "probes": [[hex(b) for b in p] for p in captured],
        "frame_done_cycle": frame_done,
        "stalled_after_cycles": cycles[0] if stalled else None,
        "full_fifos": full,
    }))
    layer_beats = [len(p) // vec.frames for p in vec.probes]
    problem = first_mismatch(vec.probes, captured, vec.probe_names, layer_beats)
    where = (f"full FIFO(s): {'; '.join(full)} — too shallow for the branch it buffers"
             if full else "no FIFO is full")
    assert not stalled, f"no progress after {cycles[0]} cycles; {where}; {problem}"
    assert outputs == vec.probes[-1] and problem is None, problem or "output stream differs"
