"""Stimulus and expectations as stream beats: the bridge between golden values and wires.

A *beat* is one transfer's payload as a Python int (element 0 in the lowest bits). The
vectors file is JSON with hex strings so beats of any width survive the trip into the
simulator process.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bitloom.formats import Format, Int
from bitloom.formats.bits import pack, unpack
from bitloom.plan import Plan


def wide_integers(fmt: Format) -> bool:
    """Whether ``fmt``'s codes are two's complement integers too wide for int64 (a wide
    accumulator leaving the last layer raw, e.g. a minifloat MLP's Kulisch sum): their beats
    are built from Python integers."""
    return isinstance(fmt, Int) and not fmt.bipolar and fmt.bits > 62


def to_beats(values: np.ndarray, fmt: Format, per_beat: int) -> list[int]:
    """Grid integers ``(frames, ...)`` (channel-last) -> beats, frame after frame."""
    flat = np.asarray(values).reshape(-1)
    if wide_integers(fmt):
        mask = (1 << fmt.bits) - 1
        rows = np.array([int(v) & mask for v in flat], dtype=object).reshape(-1, per_beat)
        return [sum(int(c) << (k * fmt.bits) for k, c in enumerate(row)) for row in rows]
    codes = fmt.encode(fmt.from_grid(flat)).reshape(-1, per_beat)
    return [pack(row, fmt.bits) for row in codes]


def from_beats(beats: list[int], fmt: Format, per_beat: int) -> np.ndarray:
    """Beats -> grid integers, flat, in stream order."""
    if wide_integers(fmt):
        mask, top = (1 << fmt.bits) - 1, 1 << (fmt.bits - 1)
        codes = [(b >> (k * fmt.bits)) & mask for b in beats for k in range(per_beat)]
        return np.array([c - (c & top) * 2 if fmt.signed else c for c in codes], dtype=object)
    codes = [c for b in beats for c in unpack(b, fmt.bits, per_beat)]
    return fmt.to_grid(fmt.decode(np.array(codes, dtype=np.int64)))


#: most cycles a run goes on after its output is complete (see ``Vectors.drain_cycles``)
DRAIN_LIMIT = 20_000


@dataclass
class Vectors:
    """Everything the testbench needs, and nothing it would have to compute."""

    in_beats: list[int]
    in_beats_per_frame: int
    out_beats_per_frame: int
    probes: list[list[int]]  # expected beats at every layer output; the last is the output
    probe_names: list[str]
    fifo_names: list[str]  # bit k of the core's fifo_full port
    frames: int
    in_pause: float
    out_pause: float
    seed: int
    timeout_cycles: int  # generous bound; a run still going then is reported as a stall
    #: cycles the run goes on once the output is complete and every input beat was taken:
    #: a layer may still be producing the end of the last frame that nothing after it reads
    #: (a stride-2 convolution without padding skips the last row and column of its input)
    drain_cycles: int = 0

    def save(self, path: Path) -> None:
        """The testbench's file. Of the expectations it holds only the output: the top
        records every layer's beats and the runner compares them in memory (a large model's
        layers are millions of beats the simulator need not parse)."""
        data = {k: v for k, v in self.__dict__.items()}
        data["in_beats"] = [hex(b) for b in self.in_beats]
        data["probes"] = [[hex(b) for b in self.probes[-1]]]
        path.write_text(json.dumps(data))

    @classmethod
    def load(cls, path: Path) -> Vectors:
        data = json.loads(Path(path).read_text())
        data["in_beats"] = [int(b, 16) for b in data["in_beats"]]
        data["probes"] = [[int(b, 16) for b in p] for p in data["probes"]]
        return cls(**data)


def make_vectors(plan: Plan, trace: list[np.ndarray], in_pause: float, out_pause: float,
                 seed: int) -> Vectors:
    """Beats for a batch whose golden integer values per layer are ``trace``."""
    in_beats = to_beats(trace[0], plan.in_fmt, plan.in_elems)
    probes = [to_beats(values, lp.layer.out_fmt, lp.out_elems)
              for lp, values in zip(plan.layers, trace[1:], strict=True)]
    return Vectors(
        in_beats=in_beats,
        in_beats_per_frame=plan.in_beats,
        out_beats_per_frame=plan.output.out_beats,
        probes=probes,
        probe_names=[lp.layer.name for lp in plan.layers],
        fifo_names=[f"{f.name} ({f.depth} beats, input {f.port} of "
                    f"{plan.layers[f.layer].layer.name})" for f in plan.fifos()],
        frames=int(trace[0].shape[0]),
        in_pause=in_pause,
        out_pause=out_pause,
        seed=seed,
        timeout_cycles=int(20 * (int(trace[0].shape[0]) + 4) * plan.cycles_per_frame
                           / (1 - max(in_pause, out_pause, 0.0) + 1e-9)) + 20_000,
        drain_cycles=min(plan.cycles_per_frame, DRAIN_LIMIT),
    )


def first_mismatch(expected: list[list[int]], got: list[list[int]], names: list[str],
                   beats_per_frame: list[int]) -> str | None:
    """Names the first layer (in stream order) whose output differs, with frame and beat."""
    for name, exp, act, per_frame in zip(names, expected, got, beats_per_frame, strict=True):
        for i, (e, a) in enumerate(zip(exp, act, strict=False)):
            if e != a:
                return (f"layer {name}: first difference in frame {i // per_frame}, output "
                        f"beat {i % per_frame}: expected {e:#x}, hardware gave {a:#x}")
        if len(act) != len(exp):
            return f"layer {name}: produced {len(act)} beats, expected {len(exp)}"
    return None
