"""The PYNQ driver with weights streamed from DDR: its weight buffers are the init files in the
byte layout of the block design's DMAs and converters, its transfers send every pass of every
frame, and the whole driver, run against stand-ins for PYNQ's DMA channels around golden or
the RTL on Verilator, gives golden's outputs bit for bit."""

from __future__ import annotations

import math
import random
import shutil
from collections import deque
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from board_builds import compile_streamed, golden_frames, import_driver, verilator_frames

from bitloom.boards import load_board
from bitloom.emit.design import Design, read_mem, write_mem
from bitloom.emit.driver import write_driver
from bitloom.emit.vivado import stream_widths, weight_streams

#: compiles a design in seconds
pytestmark = pytest.mark.slow

#: polls of an S2MM channel waiting for inputs the driver never sends: a deadlock
MAX_POLLS = 100_000


@pytest.fixture(scope="module")
def design(tmp_path_factory) -> Design:
    return compile_streamed(tmp_path_factory.mktemp("streams") / "streamed")


@pytest.fixture(scope="module")
def driver(design, tmp_path_factory):
    path = write_driver(design, tmp_path_factory.mktemp("overlay"))
    return import_driver(path, "bitloom_driver_streams")


def stream_words(stream, data: bytes) -> list[int]:
    """What ``s_axis_w<n>`` receives from the DMA's bytes: a word per ``slot_bytes`` (the width
    converter joins the DMA's beats), its low tdata bytes (the subset converter drops the
    rest, which must be zero padding)."""
    tdata_bytes = math.ceil(stream.bits / 8)
    assert len(data) % stream.slot_bytes == 0
    words = []
    for i in range(0, len(data), stream.slot_bytes):
        slot = data[i:i + stream.slot_bytes]
        assert not any(slot[tdata_bytes:]), f"{stream.layer}: padding is not zero"
        words.append(int.from_bytes(slot[:tdata_bytes], "little"))
        assert words[-1] >> stream.bits == 0
    return words


def init_words(design: Design, stream) -> list[int]:
    """What the testbench feeds per pass: the compiler's init file."""
    return read_mem(design.path / "rtl" / "weights" / stream.file)


class FakeChannel:
    """One channel of a simple-mode AXI DMA as PYNQ drives it: one transfer at a time, from an
    address aligned to its memory-mapped width (no realignment engine), at most the length
    register's bytes. ``start`` takes the bytes; ``finish`` says when the transfer is done."""

    def __init__(self, align: int, max_bytes: int, start: Callable, finish: Callable) -> None:
        self.align, self.max_bytes = align, max_bytes
        self.start, self.finish = start, finish
        self.active = False
        self.error = False

    def transfer(self, buffer: np.ndarray, start: int = 0, nbytes: int = 0) -> None:
        assert not self.active, "transfer() on a busy channel"
        assert start % self.align == 0 and 0 < nbytes <= self.max_bytes, (start, nbytes)
        self.active = True
        self.start(buffer.reshape(-1)[start:start + nbytes])

    @property
    def idle(self) -> bool:
        if self.active and self.finish():
            self.active = False
        return not self.active

    def wait(self) -> None:
        assert self.idle, "wait() before the channel is idle"


class FakeBoard:
    """The overlay's DMAs around a stand-in for the accelerator, ``compute(frames, words, n)``
    (MM2S frame bytes and each streamed layer's words -> S2MM bytes of ``n`` frames).

    MM2S channels take their bytes at once and finish a few polls later; the S2MM channel
    finishes a frame only once that frame and every layer's weights for it have arrived, as
    the hardware would, so a driver that waits for outputs before sending weights deadlocks
    (and fails after MAX_POLLS).
    """

    def __init__(self, design: Design, driver, compute: Callable, seed: int = 0) -> None:
        self.driver, self.compute = driver, compute
        self.rng = random.Random(seed)
        self.frames = bytearray()
        self.weights = {s.layer: bytearray() for s in driver.WEIGHT_STREAMS}
        self.sent = {s.layer: bytearray() for s in driver.WEIGHT_STREAMS}  # all, for checks
        self.outputs: deque[bytes] = deque()
        widths = stream_widths(design.report)
        mm = {w.layer: w.mm_bits // 8 for w in weight_streams(design, load_board("pynq-z2"))}
        self.frame_dma = SimpleNamespace(
            sendchannel=self.sender(widths.input_mm_bits // 8, self.frames.extend),
            recvchannel=self.receiver(widths.output_mm_bits // 8))
        self.weight_dmas = [SimpleNamespace(sendchannel=self.sender(
            mm[s.layer], self.weights[s.layer].extend, self.sent[s.layer].extend))
            for s in driver.WEIGHT_STREAMS]

    def sender(self, align: int, *sinks: Callable) -> FakeChannel:
        countdown = [0]

        def start(data: np.ndarray) -> None:
            for sink in sinks:
                sink(data.tobytes())
            countdown[0] = self.rng.randrange(3)

        def finish() -> bool:
            countdown[0] -= 1
            return countdown[0] < 0

        return FakeChannel(align, self.driver.DMA_MAX_BYTES, start, finish)

    def receiver(self, align: int) -> FakeChannel:
        pending, polls = [], [0]

        def finish() -> bool:
            self.run()
            if not self.outputs:
                polls[0] += 1
                assert polls[0] < MAX_POLLS, "deadlock: outputs wait for inputs never sent"
                return False
            out = pending.pop()
            out[:] = np.frombuffer(self.outputs.popleft(), dtype=np.uint8)[:len(out)]
            return True

        return FakeChannel(align, self.driver.DMA_MAX_BYTES, pending.append, finish)

    def run(self) -> None:
        """Compute the frames that have arrived, once their weights have too."""
        d = self.driver
        n = len(self.frames) // d.IN_FRAME_BYTES
        need = {s.layer: n * s.passes_per_frame * s.pass_bytes for s in d.WEIGHT_STREAMS}
        if n == 0 or any(len(self.weights[layer]) < size for layer, size in need.items()):
            return
        frames = np.frombuffer(bytes(self.frames[:n * d.IN_FRAME_BYTES]), dtype=np.uint8)
        del self.frames[:n * d.IN_FRAME_BYTES]
        words = {}
        for s in d.WEIGHT_STREAMS:
            words[s.layer] = stream_words(s, bytes(self.weights[s.layer][:need[s.layer]]))
            del self.weights[s.layer][:need[s.layer]]
        self.outputs.extend(bytes(row) for row in self.compute(frames, words, n))


def board_run(design: Design, driver, compute: Callable, x: np.ndarray, batch: int,
              buffer_bytes: int):
    """``Accelerator.run(x)`` through DmaTransport on a FakeBoard; returns outputs and board."""
    board = FakeBoard(design, driver, compute)
    allocate = lambda shape, dtype: np.zeros(shape, dtype)  # noqa: E731
    transport = driver.DmaTransport(board.frame_dma, board.weight_dmas, allocate, batch,
                                    weight_buffer_bytes=buffer_bytes)
    return driver.Accelerator(transport=transport).run(x), board


def checked_words(design: Design, driver, words: dict[str, list[int]], n: int) -> None:
    """Each layer's words for ``n`` frames are the testbench's: its init file, once per pass."""
    for s in driver.WEIGHT_STREAMS:
        assert words[s.layer] == init_words(design, s) * (n * s.passes_per_frame), s.layer


def inputs(n: int) -> np.ndarray:
    return np.random.default_rng(4).uniform(-1, 2, size=(n, 4, 5, 5)).astype(np.float32)


# -- the weight buffers and their transfers ---------------------------------------------------
def test_weight_buffers_are_the_init_files_in_the_dma_layout(design, driver):
    streams = {s.layer: s for s in driver.WEIGHT_STREAMS}
    assert [(s.dma_name, s.words, s.bits, s.slot_bytes, s.passes_per_frame)
            for s in streams.values()] == [("bitloom_wdma0", 9, 72, 16, 25),
                                           ("bitloom_wdma2", 50, 45, 8, 1)]
    for w in weight_streams(design, load_board("pynq-z2")):
        stream = streams[w.layer]
        assert (stream.dma_name, stream.slot_bytes) == (w.cell, w.slot_bits // 8)
        data = driver.weight_pass(stream, str(Path(driver.__file__).parent / "weights"))
        assert data.dtype == np.uint8 and data.size == stream.pass_bytes
        assert stream_words(stream, data.tobytes()) == init_words(design, stream)


@pytest.mark.parametrize("max_bytes", [None, 300])
def test_weight_transfers_send_every_pass_of_every_frame(driver, monkeypatch, max_bytes):
    """Whole words from an aligned start inside the buffer, the passes of the frames in order,
    also when the DMA's length register (here shrunk to 300 bytes) splits a pass."""
    if max_bytes:
        monkeypatch.setattr(driver, "DMA_MAX_BYTES", max_bytes)
    for stream in driver.WEIGHT_STREAMS:
        for frames, passes in ((1, 1), (3, 4), (5, 7), (2, 2 * stream.passes_per_frame)):
            transfers = driver.weight_transfers(stream, frames, passes)
            buffer = np.arange(passes * stream.pass_bytes) % stream.pass_bytes
            sent = np.concatenate([buffer[start:start + nbytes] for start, nbytes in transfers])
            assert np.array_equal(sent, np.tile(np.arange(stream.pass_bytes),
                                                frames * stream.passes_per_frame))
            for start, nbytes in transfers:
                assert start % driver.MM_ALIGN_BYTES == 0 and nbytes % stream.slot_bytes == 0
                assert nbytes <= driver.DMA_MAX_BYTES and start + nbytes <= buffer.size
    stream = driver.WEIGHT_STREAMS[0]
    assert driver.buffer_passes(stream, 4, 10 * stream.pass_bytes) == 10
    assert driver.buffer_passes(stream, 4, 1 << 30) == 4 * stream.passes_per_frame
    assert driver.buffer_passes(stream, 4, 1) == 1


def test_a_damaged_weight_file_is_named(driver, tmp_path):
    stream = driver.WEIGHT_STREAMS[1]
    folder = Path(driver.__file__).parent / "weights"
    lines = (folder / stream.file).read_text().splitlines()
    for text, message in (("\n".join(lines[:-1]), "49 words, layer mvu2 reads 50"),
                          ("\n".join(["zz", *lines[1:]]), "'zz' is not a hex word"),
                          ("\n".join([f"{1 << 45:x}", *lines[1:]]), "does not fit in 45 bits")):
        (tmp_path / stream.file).write_text(text)
        with pytest.raises(ValueError, match=message):
            driver.weight_pass(stream, str(tmp_path))


# -- the driver end to end --------------------------------------------------------------------
def test_driver_streams_weights_beside_the_frames_through_golden(design, driver):
    """Batches of 3 frames with buffers of 10 conv passes: the conv's 75 passes per batch go
    in 8 transfers, the dense layer's 3 in one; the S2MM waits for all of them."""
    def golden(frames: np.ndarray, words: dict[str, list[int]], n: int) -> np.ndarray:
        checked_words(design, driver, words, n)
        return golden_frames(design, driver, frames)

    x = inputs(7)
    conv = driver.WEIGHT_STREAMS[0]
    y, board = board_run(design, driver, golden, x, 3, 10 * conv.pass_bytes)
    np.testing.assert_array_equal(y, design.net.run(x))
    for s in driver.WEIGHT_STREAMS:  # everything sent was consumed: the streams stay in step
        assert len(board.sent[s.layer]) == 7 * s.passes_per_frame * s.pass_bytes
        assert not board.weights[s.layer]


@pytest.mark.verilator
def test_driver_weight_streams_through_verilator_equal_golden(design, driver, tmp_path):
    """The driver's weight bytes, decoded as the block design's converters do, are the words
    the testbench feeds (each init file once per pass of every frame); written back as the
    init files of a copy of the RTL, they stream into the Verilator model beside the driver's
    frames, and the outputs equal golden's."""
    rtl = tmp_path / "rtl"
    shutil.copytree(design.path / "rtl", rtl)  # same Verilog: the Verilator build is reused
    runs = []

    def verilator(frames: np.ndarray, words: dict[str, list[int]], n: int) -> np.ndarray:
        checked_words(design, driver, words, n)
        for s in driver.WEIGHT_STREAMS:
            write_mem(rtl / "weights" / s.file, words[s.layer][:s.words], s.bits)
        runs.append(n)
        return verilator_frames(design, driver, frames, tmp_path / f"sim{len(runs)}",
                                [rtl / src.name for src in design.sources])

    x = inputs(5)
    conv = driver.WEIGHT_STREAMS[0]
    y, _ = board_run(design, driver, verilator, x, 3, 10 * conv.pass_bytes)
    assert runs == [3, 2]
    golden = design.net.run(x)
    assert y.dtype == golden.dtype == np.float32
    np.testing.assert_array_equal(y, golden)
