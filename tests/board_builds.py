"""Designs for the board-flow tests, the generated PYNQ driver as a module, and the
accelerator behind the DMAs: frames in the DMA's byte layout through golden or Verilator."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
from pathlib import Path

import numpy as np
import onnx

import bitloom
from bitloom.cli import main
from bitloom.emit.design import Design, load_design
from bitloom.sim.runner import simulate
from bitloom.sim.vectors import from_beats, make_vectors, to_beats

from qonnx_models import random_cnn, random_mlp


@contextlib.contextmanager
def inside(folder: Path):
    """Compile from a relative path, so the generated Verilog (which names its model) is the
    same in every run and Verilator's build cache is reused."""
    cwd = Path.cwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(cwd)


def compile_small(out: Path, board: str) -> Design:
    """A 24-12-6 MLP whose 24-bit input beat needs the DMA's 32-bit stream (a converter)."""
    onnx.save(random_mlp(3, sizes=(24, 12, 6)), str(out.parent / f"{out.name}.onnx"))
    with inside(out.parent):
        assert main(["compile", f"{out.name}.onnx", "--board", board, "--out", out.name,
                     "--target-fps", "2000000"]) == 0
    return load_design(out)


def compile_streamed(out: Path) -> Design:
    """A CNN for the PYNQ-Z2 with every weight streamed from DDR, planned for 50 cycles per
    frame: a 3x3 convolution at its fastest (225 cycles) with 72-bit words, 25 passes per
    frame (16 bytes in memory: a width converter joins two 64-bit DMA beats, a subset
    converter keeps 9 bytes), and a dense layer of 45-bit words, one pass (8 bytes in memory,
    the subset converter keeps 6)."""
    model = random_cnn(1, shape=(4, 5, 5), channels=6, w_bits=3, head="flatten")
    onnx.save(model, str(out.parent / f"{out.name}.onnx"))
    with inside(out.parent):
        bitloom.compile(f"{out.name}.onnx", "pynq-z2", out=out.name, target_cycles=50,
                        weights_memory=("streamed",))
    return load_design(out)


def import_driver(path: Path, name: str):
    """The generated driver as a module (registered first: its dataclasses need that)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def input_beats(driver, frames: np.ndarray, tdata_bits: int) -> list[int]:
    """MM2S frame bytes -> the beats ``s_axis`` sees (the subset converter keeps the low
    ``tdata_bits`` of each DMA beat)."""
    data = np.ascontiguousarray(frames, dtype=np.uint8).tobytes()
    width, mask = driver.IN_BEAT_BYTES, (1 << tdata_bits) - 1
    return [int.from_bytes(data[i:i + width], "little") & mask
            for i in range(0, len(data), width)]


def output_frames(driver, beats: list[int], frames: int) -> np.ndarray:
    """``m_axis`` beats -> the S2MM bytes of each frame, ``(frames, OUT_FRAME_BYTES)``."""
    data = b"".join(b.to_bytes(driver.OUT_BEAT_BYTES, "little") for b in beats)
    return np.frombuffer(data, dtype=np.uint8).reshape(frames, -1)


def frame_values(design: Design, driver, frames: np.ndarray) -> np.ndarray:
    """MM2S frame bytes -> the input values of each frame, channel-last as golden takes them."""
    beats = input_beats(driver, frames, design.report["io"]["input"]["tdata_bits"])
    values = from_beats(beats, design.plan.in_fmt, design.plan.in_elems)
    return values.reshape(len(beats) // driver.IN_BEATS, *design.net.input.stream_shape)


def golden_frames(design: Design, driver, frames: np.ndarray) -> np.ndarray:
    """The golden model in place of the accelerator: MM2S frame bytes -> S2MM bytes."""
    values = frame_values(design, driver, frames)
    last = design.plan.output
    out = to_beats(design.net.trace_values(values)[-1], last.layer.out_fmt, last.out_elems)
    return output_frames(driver, out, len(values))


def verilator_frames(design: Design, driver, frames: np.ndarray, work: Path,
                     sources: list[Path] | None = None) -> np.ndarray:
    """The accelerator's RTL (``sources``, the design's by default) on Verilator in place of
    the board, bit-exact against golden at every layer or the test fails: MM2S frame bytes ->
    S2MM bytes. Weight streams come from the ``weights`` folder beside the sources."""
    values = frame_values(design, driver, frames)
    vectors = make_vectors(design.plan, design.net.trace_values(values), 0.2, 0.2, seed=7)
    assert vectors.in_beats == input_beats(driver, frames,
                                           design.report["io"]["input"]["tdata_bits"])
    result = simulate(sources or design.sources, vectors, work)
    assert result.passed, result.mismatch
    return output_frames(driver, result.outputs, len(values))
