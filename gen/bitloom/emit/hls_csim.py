"""The "hls" engine: the generated kernel C-simulated with g++ against the open ap_types.

The test bench binary is built once per distinct kernel (a hash of the generated sources,
the compiler and its flags) under ``$BITLOOM_CACHE/hls`` (default ``~/.cache/bitloom/hls``),
so running another batch through the same model costs only the simulation.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from bitloom.cache import cache_root, locked
from bitloom.errors import BitloomError
from bitloom.ir import Network

# Any warning in our headers or generated code is a bitloom bug, so it fails the build.
CXXFLAGS = ["-std=c++17", "-O2", "-Wall", "-Wextra", "-Werror"]


class HlsCompileError(RuntimeError):
    """The generated C++ did not compile: a bug in bitloom, never the user's mistake."""


def ap_types_dir() -> Path:
    """The open ``ap_types`` headers that the hls4ml wheel carries."""
    from importlib.util import find_spec

    spec = find_spec("hls4ml")
    if spec is None or spec.origin is None:
        raise BitloomError("the HLS engine compiles against the open ap_types headers, which "
                           "come with hls4ml: pip install hls4ml")
    path = Path(spec.origin).parent / "templates" / "vivado" / "ap_types"
    if not (path / "ap_int.h").exists():
        raise BitloomError(f"hls4ml is installed but carries no ap_types headers at {path}.")
    return path


def compiler() -> str:
    cxx = shutil.which("g++")
    if cxx is None:
        raise BitloomError("the HLS engine needs g++ (C++17) on PATH to C-simulate kernels.")
    return cxx


def compile_command(cxx: str, hls_dir: Path, binary: Path) -> list[str]:
    """ap_types as a system include: their own warnings are not ours to fix (-Werror)."""
    return [cxx, *CXXFLAGS, "-isystem", str(ap_types_dir()), "-I", str(hls_dir),
            str(hls_dir / "kernel.cpp"), str(hls_dir / "tb.cpp"), "-o", str(binary)]


def build(sources: list[Path], hls_dir: Path) -> Path:
    """The test bench binary for these sources, compiled once and cached."""
    cxx = compiler()
    version = subprocess.run([cxx, "--version"], capture_output=True, text=True,
                             check=False).stdout
    h = hashlib.sha256(f"{version}{' '.join(CXXFLAGS)}{ap_types_dir()}".encode())
    for src in sources:
        h.update(src.name.encode() + b"\0" + src.read_bytes())
    key = h.hexdigest()[:20]
    binary = cache_root() / "hls" / key / "tb"
    with locked(binary.parent.with_suffix(".lock")):
        if binary.exists():
            return binary
        binary.parent.mkdir(parents=True, exist_ok=True)
        partial = binary.with_suffix(".partial")
        done = subprocess.run(compile_command(cxx, hls_dir, partial), capture_output=True,
                              text=True, check=False)
        if done.returncode != 0:
            raise HlsCompileError(f"g++ failed on the generated HLS kernel in {hls_dir} "
                                  f"(a bitloom bug):\n{done.stderr[-6000:]}")
        partial.rename(binary)
    return binary


def parse_values(text: str, frames: int) -> np.ndarray:
    """The test bench's output lines -> grid integers ``(frames, elements)``; Python ints
    where a wide (minifloat) accumulator leaves int64, like the golden model."""
    rows = [[int(t) for t in line.split()] for line in text.splitlines()]
    if len(rows) != frames:
        raise HlsCompileError(f"the HLS test bench wrote {len(rows)} of {frames} frames")
    wide = any(abs(v) >= 2**63 for row in rows for v in row)
    return np.array(rows, dtype=object if wide else np.int64)


def hls_values(net: Network, values: np.ndarray, work_dir: Path | None = None,
               plan=None) -> np.ndarray:
    """Integer values of the last layer for quantized input ``values``, from the C-simulated
    kernel (folded and requantized as ``plan`` says, when given), shaped like the last entry
    of :meth:`Network.trace_values`."""
    from bitloom.emit.hls import write_codes, write_sources

    values = np.asarray(values, dtype=np.int64)
    with tempfile.TemporaryDirectory(prefix="bitloom-hls-") as tmp:
        base = Path(work_dir or tmp)
        hls_dir = base / "hls"
        binary = build(write_sources(net, hls_dir, plan), hls_dir)
        write_codes(base / "inputs.txt", net.input.fmt, values)
        outputs = base / "outputs.txt"
        done = subprocess.run([str(binary), str(base / "inputs.txt"), str(outputs)],
                              capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise HlsCompileError(f"the HLS C simulation failed (exit {done.returncode}):\n"
                                  f"{done.stderr[-3000:]}")
        flat = parse_values(outputs.read_text(), len(values))
    probe = net.trace_values(values[:1])[-1]  # the golden model's shape for the last layer
    return flat.reshape((len(values), *probe.shape[1:]))


def run_hls(net: Network, x: np.ndarray, work_dir: Path | None = None) -> np.ndarray:
    """``Network.run(engine="hls")``: float32 outputs exactly as the golden engine's."""
    return net.output.apply(hls_values(net, net.input.apply(x), work_dir))
