"""Processing elements on Verilator (cocotb), bit-exact against the formats' golden code.

Every unit below sits side by side in ONE Verilator model (one build, cached by design hash)
and runs from one vector stream (:mod:`bitloom.sim.word_tb`):

- dot products, SIMD 16, exhaustive over every operand pair for the formats of <= 4 bits
  (each lane sees every pair: lane ``i`` of cycle ``c`` takes pair ``(c + i*s) mod P``) and
  for float8_e4m3fn x float8_e4m3fn (each of the 65,536 code pairs once, NaN codes as the
  quantizers never produce them excluded);
- randomized >= 10**5 products with corners forced (max, min, +-0, the subnormal limits, the
  smallest normal, whole vectors of extremes) for the wider pairs, DSP-packed PEs included;
- requantizers: every 12-bit accumulator per rounding mode, order and format, and 10**5
  random wide accumulators; minifloat codes also checked against ml_dtypes' RNE casts.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from amaranth import Cat, Module, signed
from amaranth.back import verilog
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from bitloom.formats import ROUNDING_MODES, Format, Int, Minifloat, parse_format
from bitloom.formats.bits import pack
from bitloom.hw.pe import DotProductUnit
from bitloom.hw.pe.requant import MinifloatRequantizer, ScaleRequantizer
from bitloom.ir.quantizer import CLIP_THEN_ROUND, ROUND_THEN_SHIFT, Quantizer

SIMD = 16
RANDOM_PRODUCTS = 10**5
RANDOM_CYCLES = RANDOM_PRODUCTS // SIMD
rng = np.random.default_rng(2026)


@dataclass
class Member:
    """Units of one kind side by side: per cycle one input word (unit 0 lowest, each unit's
    ``inputs`` ports in order) and the raw output word expected ``latency`` cycles later."""

    name: str
    units: list[wiring.Component]
    inputs: list[str]
    output: str
    words: list[int]
    expected: list[int]
    latency: int

    def width(self, port: str) -> int:
        return len(getattr(self.units[0], port)) * len(self.units)

    @property
    def in_width(self) -> int:
        return sum(self.width(p) for p in self.inputs)


class Batch(wiring.Component):
    def __init__(self, members: list[Member]) -> None:
        self.members = members
        super().__init__({"inp": In(sum(m.in_width for m in members)),
                          "out": Out(sum(m.width(m.output) for m in members))})

    def elaborate(self, platform) -> Module:
        m = Module()
        start, outs = 0, []
        for member in self.members:
            for u, unit in enumerate(member.units):
                m.submodules[f"{member.name}_{u}"] = unit
                for port in member.inputs:
                    sig = getattr(unit, port)
                    m.d.comb += sig.eq(self.inp[start:start + len(sig)])
                    start += len(sig)
            outs += [getattr(unit, member.output) for unit in member.units]
        m.d.comb += self.out.eq(Cat(*outs))
        return m


def pack_rows(fields: np.ndarray, width: int) -> list[int]:
    """One Python int per row of ``fields`` (field 0 lowest)."""
    return [pack(row, width) for row in fields]


def grid(fmt: Format, codes: np.ndarray) -> np.ndarray:
    """Golden grid integers of codes, as Python ints (products may pass 64 bits)."""
    return fmt.to_grid(fmt.decode(codes)).astype(object)


def finite_codes(fmt: Format) -> np.ndarray:
    codes = np.arange(2**fmt.bits)
    with np.errstate(invalid="ignore"):
        return codes[np.isfinite(fmt.decode(codes).astype(np.float64))]


def corner_codes(fmt: Format) -> np.ndarray:
    """max, min, zero(s), +-smallest step, and for minifloats the subnormal/normal border."""
    codes = finite_codes(fmt)
    values = fmt.decode(codes).astype(np.float64)
    positive = values[values > 0]
    picks = {codes[values.argmax()], codes[values.argmin()], *codes[values == 0]}
    if len(positive):
        for v in (positive.min(), -positive.min()):
            picks.update(codes[values == v])
    if isinstance(fmt, Minifloat):
        for mag in ((1 << fmt.man_bits) - 1, 1 << fmt.man_bits):
            picks.update({mag, mag | (1 << (fmt.bits - 1))} if fmt.signed else {mag})
    return np.array(sorted(set(picks) & set(codes.tolist())))


def dot_member(name: str, w_fmt: Format, a_fmt: Format, w_codes: np.ndarray,
               a_codes: np.ndarray, dsp: str | None = None, pipeline: int = 1) -> Member:
    """``w_codes[cycle, pe, lane]``, ``a_codes[cycle, lane]``."""
    cycles, pes, simd = w_codes.shape
    unit = DotProductUnit(w_fmt, a_fmt, simd, pes, dsp, pipeline)
    words = [w | a << (pes * simd * w_fmt.bits) for w, a in
             zip(pack_rows(w_codes.reshape(cycles, -1), w_fmt.bits),
                 pack_rows(a_codes, a_fmt.bits), strict=True)]
    sums = np.einsum("cpl,cl->cp", grid(w_fmt, w_codes), grid(a_fmt, a_codes))
    return Member(name, [unit], ["w", "a"], "dot", words,
                  pack_rows(sums, unit.shape.width), unit.latency)


def exhaustive(w_fmt: Format, a_fmt: Format, every_lane: bool = True,
               pipeline: int = 1) -> Member:
    pairs = np.array(list(itertools.product(finite_codes(w_fmt), finite_codes(a_fmt))))
    count = len(pairs)
    stride = -(-count // SIMD)
    cycles = count if every_lane else stride
    index = (np.arange(cycles)[:, None] + stride * np.arange(SIMD)[None, :]) % count
    return dot_member(f"x{w_fmt.name}_{a_fmt.name}", w_fmt, a_fmt, pairs[index, 0][:, None],
                      pairs[index, 1], pipeline=pipeline)


def random_codes(fmt: Format, shape: tuple[int, ...]) -> np.ndarray:
    """Uniform finite codes, a quarter of them replaced by corners."""
    codes = rng.choice(finite_codes(fmt), shape)
    return np.where(rng.random(shape) < 0.25, rng.choice(corner_codes(fmt), shape), codes)


def randomized(w_fmt: Format, a_fmt: Format, pes: int = 1, dsp: str | None = None,
               pipeline: int = 1) -> Member:
    cycles = -(-RANDOM_CYCLES // pes)
    w = random_codes(w_fmt, (cycles, pes, SIMD))
    a = random_codes(a_fmt, (cycles, SIMD))
    w_values, a_values = w_fmt.decode(finite_codes(w_fmt)), a_fmt.decode(finite_codes(a_fmt))
    w_max, w_min = (finite_codes(w_fmt)[f(w_values)] for f in (np.argmax, np.argmin))
    a_max, a_min = (finite_codes(a_fmt)[f(a_values)] for f in (np.argmax, np.argmin))
    for c, (wc, ac) in enumerate([(w_max, a_max), (w_min, a_max), (w_min, a_min),
                                  (w_max, a_min)]):  # the extreme sums
        w[c], a[c] = wc, ac
    assert w.size >= RANDOM_PRODUCTS
    return dot_member(f"r{w_fmt.name}_{a_fmt.name}_{dsp}", w_fmt, a_fmt, w, a, dsp, pipeline)


F = parse_format
E2M1, E1M2, E3M0, UE2M2 = F("float4_e2m1fn"), F("e1m2"), F("e3m0"), F("ue2m2")
E4M3, E5M2, E3M4 = F("float8_e4m3fn"), F("float8_e5m2"), F("e3m4")
SMALL_PAIRS = [
    (Int(2), Int(2)), (Int(2, False), Int(2, False)), (Int(3), Int(3)),
    (Int(3, False), Int(3, False)), (Int(3), Int(2, False)), (Int(4), Int(4)),
    (Int(4, False), Int(4, False)), (Int(4), Int(4, False)), (Int(4, False), Int(2)),
    (Int(1), Int(1)), (Int(1), Int(4, False)), (Int(4), Int(1)),
    (E2M1, E2M1), (E1M2, E1M2), (E3M0, E3M0), (UE2M2, UE2M2), (E2M1, E1M2),
    (Int(4), E2M1), (E2M1, Int(4, False)), (E2M1, Int(2)), (E3M0, Int(3)),
]
RANDOM_PAIRS = [(Int(8), Int(8), 1, None), (E5M2, E5M2, 1, None), (E3M4, E3M4, 1, None),
                (Int(16), Int(8), 1, None), (Int(8), Int(8, False), 2, "xcup"),
                (Int(4), Int(4), 3, "xc7"), (Int(4), Int(4), 4, "xcup"),
                (E4M3, Int(8), 1, None)]


def scale_member(name: str, acc_bits: int, lsb: Fraction, q: Quantizer, accs: np.ndarray,
                 copies: int, pipeline: int) -> Member:
    units = [ScaleRequantizer(signed(acc_bits), lsb, q, pipeline=pipeline)
             for _ in range(copies)]
    accs = accs.reshape(-1, copies)
    fmt = q.fmt
    golden = [[q.exact(Fraction(int(a)) * lsb) for a in row] for row in accs]
    codes = fmt.encode(np.array(golden, dtype=np.int64))
    return Member(name, units, ["acc"], "code", pack_rows(accs, acc_bits),
                  pack_rows(codes, fmt.bits), pipeline)


def minifloat_golden(fmt: Minifloat, accs: np.ndarray, frac: int, rounding: str) -> np.ndarray:
    return fmt.encode(fmt.quantize(np.ldexp(accs.astype(np.float64), -frac), rounding))


def minifloat_member(name: str, acc_bits: int, frac: int, fmt: Minifloat, rounding: str,
                     accs: np.ndarray, copies: int, pipeline: int) -> Member:
    units = [MinifloatRequantizer(signed(acc_bits), frac, fmt, rounding, pipeline)
             for _ in range(copies)]
    accs = accs.reshape(-1, copies)
    codes = minifloat_golden(fmt, accs, frac, rounding)
    return Member(name, units, ["acc"], "code", pack_rows(accs, acc_bits),
                  pack_rows(codes, fmt.bits), pipeline)


ALL12 = np.arange(-2048, 2048)
MINIFLOATS = [E4M3, E5M2, E2M1, F("float6_e3m2fn"), F("float8_e4m3fnuz"),
              replace(E4M3, saturating=True), Minifloat(3, 2, signed=False)]


def wide_accumulators(bits: int, count: int) -> np.ndarray:
    """Random ``bits``-bit accumulators, spread over every magnitude, extremes included."""
    mags = rng.integers(0, bits - 1, count)
    accs = rng.integers(0, 1 << 62, count) >> (62 - mags)
    accs = np.where(rng.random(count) < 0.5, -accs, accs)
    accs[:4] = [-(1 << (bits - 1)), (1 << (bits - 1)) - 1, 0, -1]
    return accs


def requant_members() -> list[Member]:
    members = []
    lsb = Fraction(3, 64)
    for rounding, order in itertools.product(ROUNDING_MODES, (CLIP_THEN_ROUND,
                                                               ROUND_THEN_SHIFT)):
        q = Quantizer(Int(8), 0.25, zero_point=3, rounding=rounding, order=order)
        members.append(scale_member(f"s{rounding}_{order}", 12, lsb, q, ALL12, 1,
                                    int(rounding == "round")))
    q16 = Quantizer(Int(16), 2.0**-6, zero_point=-5, rounding="half_even")
    members.append(scale_member("s16", 32, Fraction(1, 8), q16,
                                wide_accumulators(32, RANDOM_CYCLES), 1, 1))
    for k, fmt in enumerate(MINIFLOATS):
        frac = [-3, 0, 6, 12][k % 4]
        members.append(minifloat_member(f"m{k}", 12, frac, fmt, "round", ALL12, 1, k % 2))
    for k, fmt in enumerate(MINIFLOATS[:5]):
        frac = fmt.man_bits + fmt.bias + 2  # the smallest subnormal is 8 LSBs: ties, sticky
        members.append(minifloat_member(f"w{k}", 40, frac, fmt, "round",
                                        wide_accumulators(40, RANDOM_CYCLES), 1, 0))
    for rounding in ("floor", "ceil", "up", "down", "half_up", "half_down"):
        members.append(minifloat_member(f"d{rounding}", 12, 7, F("float6_e3m2fn"), rounding,
                                        ALL12, 1, 0))
    return members


def all_members() -> list[Member]:
    members = [exhaustive(w, a, pipeline=k % 3) for k, (w, a) in enumerate(SMALL_PAIRS)]
    members.append(exhaustive(E4M3, E4M3, every_lane=False, pipeline=2))
    members += [randomized(w, a, pes, dsp) for w, a, pes, dsp in RANDOM_PAIRS]
    return members + requant_members()


def run_batch(members: list[Member], work: Path) -> list[int]:
    """Build (cached) and run the batch; the output samples, one per cycle."""
    from cocotb_tools.runner import get_runner

    from bitloom.sim.runner import TOP, build

    cycles = max(len(m.words) for m in members) + max(m.latency for m in members)
    words = np.zeros(cycles, dtype=object)
    offset = 0
    for m in members:
        n = len(m.words)
        words += np.array([m.words[c % n] for c in range(cycles)], dtype=object) << offset
        offset += m.in_width
    work.mkdir(parents=True, exist_ok=True)
    source = work / "batch.v"
    source.write_text(verilog.convert(Batch(members), name=TOP, emit_src=False))
    build_dir = build([source.resolve()])
    (work / "words.json").write_text(json.dumps([format(int(w), "x") for w in words]))
    samples = work / "samples.json"
    get_runner("verilator").test(
        test_module="bitloom.sim.word_tb", hdl_toplevel=TOP, hdl_toplevel_lang="verilog",
        build_dir=str(build_dir), test_dir=str(work), results_xml=str(work / "results.xml"),
        log_file=str(work / "sim.log"),
        extra_env={"BITLOOM_WORDS": str(work / "words.json"), "BITLOOM_SAMPLES": str(samples)})
    return [int(s, 16) for s in json.loads(samples.read_text())]


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    members = all_members()
    samples = run_batch(members, tmp_path_factory.mktemp("pe_verilator"))
    results, offset = {}, 0
    for m in members:
        width = m.width(m.output)
        got = [(s >> offset) & ((1 << width) - 1) for s in samples]
        skip = max(m.latency - 1, 0)
        results[m.name] = (m, got[skip:skip + len(m.words)])
        offset += width
    return results


def check(batch, *prefixes: str, unless: str = "\0") -> int:
    """Assert every cycle of the members named ``prefix...`` (not containing ``unless``);
    returns how many cycles were checked."""
    checked = 0
    for name, (m, got) in batch.items():
        if name.startswith(prefixes) and unless not in name:
            bad = [i for i, (g, e) in enumerate(zip(got, m.expected, strict=True)) if g != e]
            assert not bad, f"{name}: {len(bad)} of {len(got)} cycles differ, first {bad[0]}"
            checked += len(got)
    assert checked
    return checked


@pytest.mark.verilator
def test_small_formats_every_operand_pair_in_every_lane(batch):
    pairs = sum(len(finite_codes(w)) * len(finite_codes(a)) for w, a in SMALL_PAIRS)
    assert check(batch, "x", unless="float8") == pairs  # one cycle per pair, SIMD lanes each


@pytest.mark.verilator
def test_e4m3_every_operand_pair(batch):
    m, _ = batch["xfloat8_e4m3fn_float8_e4m3fn"]
    assert len(m.words) * SIMD >= len(finite_codes(E4M3)) ** 2
    check(batch, "xfloat8")


@pytest.mark.verilator
def test_wide_pairs_random_with_corners(batch):
    products = sum(len(m.words) * m.units[0].pes * SIMD
                   for name, (m, _) in batch.items() if name.startswith("r"))
    assert products >= len(RANDOM_PAIRS) * RANDOM_PRODUCTS
    check(batch, "r")


@pytest.mark.verilator
def test_scale_requantizers(batch):
    assert check(batch, "s") >= 2 * len(ROUNDING_MODES) * len(ALL12)


@pytest.mark.verilator
def test_minifloat_requantizers(batch):
    assert check(batch, "m", "w", "d") >= (len(MINIFLOATS) + 6) * len(ALL12)


@pytest.mark.parametrize("fmt", MINIFLOATS[:5], ids=lambda f: f.name)
def test_minifloat_golden_is_ml_dtypes_rne(fmt):
    """The golden codes the hardware is held to are ml_dtypes' own RNE casts (float64 in,
    exact for accumulators of <= 53 bits)."""
    import ml_dtypes

    frac = fmt.man_bits + fmt.bias + 2
    accs = np.concatenate([ALL12, wide_accumulators(40, 20_000)])
    values = np.ldexp(accs.astype(np.float64), -frac)
    ours = minifloat_golden(fmt, accs, frac, "round")
    theirs = values.astype(getattr(ml_dtypes, fmt.name)).view(np.uint8) & ((1 << fmt.bits) - 1)
    assert np.array_equal(ours, theirs)

