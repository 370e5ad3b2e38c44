"""Resource estimates per layer (LUT, FF, DSP, BRAM36), used to fit a design to a board.

Every layer is split into physical components, each described by a count a designer would
write down (products, adder-tree bits, threshold-compare bits, bits of constant tables,
bits of LUT RAM, control blocks), and its LUTs (FFs) are a weighted sum of those counts:

- **products**, as the PE strategy of the format pair builds them (:mod:`bitloom.hw.pe.dot`):
  narrow pairs look their partial products up in tables whose every bit is one LUT6
  (``lookup``: the tables' bits per lane, a bipolar weight's select or XNOR likewise);
  other fabric multipliers cost the LUTs per MAC that ``bitloom bench pe`` measured for
  the pair (``mac``; ``docs/results/pe_costs.json``, read at run time; unmeasured pairs are
  interpolated within their family). Integer products whose result has at least
  :data:`DSP_MIN_PRODUCT_BITS` bits are what ``synth_xilinx`` puts in DSP48s: one DSP per
  lane (or per packed group), and only the adder tree stays in LUTs.
- **adder trees**: the bits of every adder of every tree (``tree``), one tree per partial
  product and PE, widening by a bit per row from the product's width.
- **accumulators**: one per PE.
- **thresholds**: ``levels`` comparators per lane (``compare``: the count of them, whose
  hits a popcount sums) and their bits: against a constant when one channel per lane makes
  the table constant (``const_compare``), else against a ROM word (``compare_bits``, the
  ROM's ``table`` sites apart); only table bits that differ between words vary.
- **scale requantizers** (:class:`~bitloom.ir.ScaleRequant`): the multiplier in DSP48s, as
  ``mul2dsp`` tiles it (25 x 18 signed, so 24 x 17 bits a tile), and the bits of the
  adders, clip compares and (minifloat outputs) normalizing shifter after it (``scale``);
  or, a fabric multiplier, one adder per partial product; the per-channel constants are a
  ROM like a threshold table's.
- **memories**: weight and threshold ROMs as logic (:func:`rom_sites` LUT6s per bit), or
  block RAM when Yosys's own cost rule prefers it (:func:`memory_cost`), or as the plan's
  memory style says (:mod:`bitloom.plan.memory`); input buffers, line buffers and FIFOs as
  LUT RAM or block RAM by the sizes measured.
- **control**: counters, handshakes and width converters, a constant per layer, and one per
  sliding window.

The weights (:data:`COEFFICIENTS`) are fitted by ``python -m bitloom.dse.calibrate`` on
a training set of synthesized layers and checked there on held-out layers of other formats,
models and foldings (docs/dse.md, "How far the cost model is from Yosys").
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Mapping
from pathlib import Path

from bitloom.formats import Format, Int, Minifloat, accumulator_grid, integer_width
from bitloom.ir import ScaleRequant
from bitloom.ir.scale_requant import csd_digits
from bitloom.plan.memory import bram36_tiles
from bitloom.plan.products import dsp_packing, is_bipolar, sliceable, table_layout
from bitloom.plan.registry import kind_of

#: where ``bitloom bench pe`` writes its table (a source checkout; absent from a wheel)
PE_COSTS = Path(__file__).resolve().parents[3] / "docs" / "results" / "pe_costs.json"
#: synth_xilinx maps a ``$mul`` to a DSP48 from this result width up (mul2dsp's Y minimum)
DSP_MIN_PRODUCT_BITS = 9
#: memory_libmap's costs (Yosys xilinx memory libraries): a ROM built as logic costs a LUT6
#: per 64 bits, a RAMB18 129 and a RAMB36 257, and Yosys takes the cheaper
ROM_BITS_PER_COST = 64
BRAM18_COST, BRAM36_COST = 129, 257
#: an UltraRAM tile's one aspect ratio (URAM288)
URAM_DEPTH, URAM_WIDTH = 4096, 72
#: deepest ROM that Yosys merges into the LUTs it feeds (table products, compares) rather
#: than building a mux tree of its own; 8 had the lowest leave-one-design-out error over the
#: calibration's training designs among 4, 8, 16, 32 and 64
SHALLOW_ROM_DEPTH = 8
#: a simple-dual-port RAM (FIFO, line buffer) went to block RAM when deeper than this and
#: larger than FIFO_BRAM_MIN_BITS in every design measured (38 x 24 and 74 x 16 did, 130 x 4
#: did not); single-port buffers stayed LUT RAM up to the largest measured, 144 x 16
FIFO_BRAM_MIN_DEPTH, FIFO_BRAM_MIN_BITS = 32, 768
BUFFER_BRAM_MIN_BITS = 16 * 1024
#: Yosys kept the registered output word of threshold ROMs of 16 words (and not those of
#: 2-8 words, whose read register it moved to the address) in every design measured
REGISTERED_TABLE_MIN_DEPTH = 16

#: LUT and FF weights of each component count, fitted by ``bitloom.dse.calibrate``; "scale"
#: (not in its training designs yet) is the least-squares weight over the 14 Yosys rows of
#: ``bench/requantizers.py``, multipliers in DSPs and in LUTs
#: (docs/results/2026-12-07-requantizers-fabric.md)
COEFFICIENTS: dict[str, dict[str, float]] = {
    "LUT": {"mac": 0.8018, "lookup": 1.8422, "tree": 0.0559, "acc": 0.0, "compare": 1.8116,
            "compare_bits": 0.7764, "const_compare": 0.0, "table": 1.1959, "rom": 2.8144,
            "rom_shallow": 0.6285, "ram": 0.782, "control": 44.2522, "window": 191.4126,
            "fifo": 30.3598, "scale": 0.71},
    "FF": {"mac": 0.0342, "acc": 0.0, "compare": 1.2089, "table": 0.8521, "beat": 2.1592,
           "control": 34.9727, "window": 39.7032, "fifo": 20.6329, "scale": 1.0},
}

#: the count behind each FF weight (each LUT weight multiplies the count of its own name)
FF_COUNTS = {"mac": "ff_mac", "acc": "ff_acc", "compare": "ff_compare", "table": "ff_table",
             "beat": "beat", "control": "control", "window": "window", "fifo": "fifo",
             "scale": "ff_scale"}


def format_key(fmt: Format) -> tuple:
    """What identifies a format for the product cost: family and field widths."""
    if isinstance(fmt, Minifloat):
        return ("minifloat", fmt.exp_bits, fmt.man_bits)
    if isinstance(fmt, Int) and fmt.bipolar:
        return ("bipolar",)
    return ("int", fmt.bits)


def pair_size(w: tuple, a: tuple) -> tuple[str, float]:
    """A pair's family and size measure, within which LUTs per MAC grow about linearly:
    the product's bits (integers), the other operand's bits (bipolar), or the mantissa
    product plus the exponents' shift ranges (minifloats; an integer counts as a minifloat
    with one exponent value)."""
    if w == a == ("bipolar",):
        return "bipolar2", 1.0
    if ("bipolar",) in (w, a):
        other = a if w == ("bipolar",) else w
        return "bipolar", float(other[1] if other[0] == "int" else 1 + other[1] + other[2])
    if w[0] == a[0] == "int":
        return "int", float(w[1] * a[1])

    def mantissa_and_range(k: tuple) -> tuple[int, int]:
        return (k[2] + 1, 2 ** k[1]) if k[0] == "minifloat" else (k[1], 1)

    (mw, rw), (ma, ra) = mantissa_and_range(w), mantissa_and_range(a)
    return "minifloat", float(mw * ma + rw + ra)


def pe_table(path: Path = PE_COSTS) -> dict[tuple, tuple[float, float]]:
    """LUTs and FFs per MAC of the fabric (no-DSP) xc7 rows of ``bitloom bench pe``, read
    again whenever the file changes (it is regenerated as the PE datapaths improve)."""
    if not path.is_file():
        return {}
    return _read_pe_table(path, path.stat().st_mtime_ns)


@functools.lru_cache(maxsize=4)
def _read_pe_table(path: Path, mtime_ns: int) -> dict[tuple, tuple[float, float]]:
    from bitloom.formats import parse_format

    table = {}
    for row in json.loads(path.read_text())["costs"]:
        if row["family"] == "xc7" and not row["dsp_allowed"]:
            macs = row["simd"] * row["pes"]
            key = tuple(format_key(parse_format(row[k])) for k in ("weight", "activation"))
            table[key] = (row["lut"] / macs, row["ff"] / macs)
    return table


def per_mac(w_fmt: Format, a_fmt: Format, path: Path = PE_COSTS) -> tuple[float, float]:
    """LUTs and FFs per MAC of a fabric dot product: measured for the pair, else a line
    through the measured pairs of its family (through the origin with one point), else
    (no table: an installed wheel) 2.5 LUT and 0.5 FF per product bit, about bench-pe's
    int8 x int8 row."""
    table = pe_table(path)
    w, a = format_key(w_fmt), format_key(a_fmt)
    for key in ((w, a), (a, w)):
        if key in table:
            return table[key]
    family, size = pair_size(w, a)
    points = [(s, cost) for k, cost in table.items()
              for f, s in (pair_size(*k),) if f == family]
    if not points:
        return 2.5 * size, 0.5 * size
    estimate = []
    for i in range(2):
        xs = [p[0] for p in points]
        ys = [p[1][i] for p in points]
        if len(set(xs)) < 2:
            estimate.append(ys[0] * size / xs[0])
            continue
        mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
        slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / \
            sum((x - mx) ** 2 for x in xs)
        estimate.append(max(my + slope * (size - mx), 0.1 * size))
    return estimate[0], estimate[1]


def dsp_product(w_fmt: Format, a_fmt: Format) -> bool:
    """Whether synth_xilinx maps this product to a DSP48: plain integer multiplies (not
    bipolar, not the sliced LUT-ROM products of narrow operands) of >= 9 result bits."""
    if not (isinstance(w_fmt, Int) and isinstance(a_fmt, Int)) or w_fmt.bipolar or \
            a_fmt.bipolar or sliceable(w_fmt, a_fmt):
        return False
    return w_fmt.bits + a_fmt.bits >= DSP_MIN_PRODUCT_BITS


def tree_bits(terms: int, width: int) -> int:
    """Bits of the adders of a balanced tree over ``terms`` inputs of ``width`` bits, each
    row one bit wider (:func:`bitloom.hw.pe.dot.adder_tree`)."""
    bits = 0
    while terms > 1:
        width += 1
        bits += (terms // 2) * width
        terms -= terms // 2
    return bits


@functools.lru_cache(maxsize=256)
def datapath(w_fmt: Format, a_fmt: Format) -> tuple[int, tuple[int, ...], tuple[int, ...]]:
    """What one lane of the pair's fabric dot product is made of, as
    :func:`bitloom.hw.pe.dot.lut_dot_product` builds it: LUT bits looked up per lane (0 for a
    multiplier), the widths of the adder trees each PE sums over its lanes, and of the trees
    all PEs share (a bipolar x integer unit's sum of all activations)."""
    if is_bipolar(w_fmt) and is_bipolar(a_fmt):
        return 1, (1,), ()  # XNOR, popcount
    if is_bipolar(w_fmt) or is_bipolar(a_fmt):
        other = a_fmt if is_bipolar(w_fmt) else w_fmt
        return other.bits, (other.bits,), (other.bits,)  # kept values; all values
    parts = table_layout(w_fmt, a_fmt)
    if parts is None:
        grid = accumulator_grid(w_fmt, a_fmt, 1)
        return 0, (Int.spanning(grid.lo, grid.hi).bits,), ()
    looked, widths = 0, []
    for part in parts:
        lo = 0 if part.negative else min(part.table)
        entries = [x - lo for x in part.table]
        width = integer_width(min(min(entries), 0), max(max(entries), 0))
        looked += width + (width + 1 if part.negative else 0)  # the negation's adder
        widths.append(width + bool(part.negative))
    return looked, tuple(widths), ()


def product_counts(lp) -> dict[str, float]:
    """LUT and FF counts of a matrix-vector layer's products and adder trees."""
    fold, w_fmt, a_fmt = lp.fold, lp.layer.w_fmt, lp.in_fmt
    lanes = fold.pe * fold.simd
    looked, trees, shared = datapath(w_fmt, a_fmt)
    ff = per_mac(w_fmt, a_fmt)[1]
    counts = {"tree": fold.pe * sum(tree_bits(fold.simd, w) for w in trees)
              + sum(tree_bits(fold.simd, w) for w in shared), "ff_mac": lanes * ff}
    if dsp_product(w_fmt, a_fmt):
        counts["DSP"] = dsp_count(lp)
    elif looked:
        counts["lookup"] = lanes * looked
    else:
        counts["mac"] = lanes * per_mac(w_fmt, a_fmt)[0]
    return counts


def dsp_count(lp) -> int:
    """DSP48s of a matrix-vector layer's products: one per product as synth_xilinx maps
    them, or one per ``ways`` PEs per lane when the plan packs them
    (:func:`~bitloom.plan.products.dsp_packing`)."""
    fold = lp.fold
    if lp.dsp is None:
        return fold.pe * fold.simd
    ways = dsp_packing(lp.layer.w_fmt, lp.in_fmt, lp.dsp, fold.pe, fold.simd).ways
    return math.ceil(fold.pe / ways) * fold.simd


def memory_cost(depth: int, width: int, kind: str = "rom",
                ultra: bool = False) -> dict[str, float]:
    """Counts of one ``depth x width`` memory of ``kind`` "rom" (constants), "buffer"
    (single-port RAM) or "fifo" (simple dual-port RAM): ``BRAM36`` when Yosys would take
    block RAM (by its own cost rule for ROMs, by the measured sizes for RAMs), or ``URAM``
    tiles instead for a RAM placed in UltraRAM (``ultra``), else LUT6 sites,
    ``width x ceil(depth / 64)``, counted as ``rom`` or ``ram``."""
    if depth <= 0 or width <= 0 or (depth == 1 and kind == "rom"):
        return {}  # a single word of constants is wiring
    if depth == 1:
        return {"beat": width}  # a single word of RAM is a register
    bits = depth * width
    tiles = bram36_tiles(depth, width)
    if kind == "rom":
        bram = bits / ROM_BITS_PER_COST > (BRAM18_COST if tiles == 0.5 else BRAM36_COST * tiles)
    elif kind == "fifo":
        bram = depth > FIFO_BRAM_MIN_DEPTH and bits > FIFO_BRAM_MIN_BITS
    else:
        bram = bits > BUFFER_BRAM_MIN_BITS
    if bram and ultra and kind != "rom":
        return {"URAM": uram_tiles(depth, width)}
    if bram:
        return {"BRAM36": tiles}
    if kind == "rom":
        return rom_counts(depth, width)
    return {"ram": width * math.ceil(depth / 64)}


def uram_tiles(depth: int, width: int) -> int:
    """UltraRAM tiles (URAM288: 4096 words of 72 bits, one aspect ratio) of a ``depth`` x
    ``width`` RAM, as Vivado builds it: words side by side, tiles cascaded in depth. (Yosys
    may pack several narrow words into one URAM word and need fewer.)"""
    return math.ceil(width / URAM_WIDTH) * math.ceil(depth / URAM_DEPTH)


def rom_counts(depth: int, width: int) -> dict[str, float]:
    """LUT6 sites of a ROM built as logic: ``rom_shallow`` for one of at most
    :data:`SHALLOW_ROM_DEPTH` words, which merges into the LUTs it feeds, ``rom`` for a
    deeper one."""
    key = "rom_shallow" if depth <= SHALLOW_ROM_DEPTH else "rom"
    return {key: width * rom_sites(depth)}


def rom_sites(depth: int) -> float:
    """LUT6s per output bit of a ``depth``-word ROM built as logic: a function of its
    ``a = ceil(log2 depth)`` address bits, ``a / 6`` of a LUT6 up to 64 words (two narrow
    functions share a LUT6) and ``depth / 64`` LUT6s plus their mux tree beyond, which
    grows with the address width too."""
    address = max(math.ceil(math.log2(depth)), 1)
    return address / 6 * max(depth / 64, 1)


def weight_memory(lp, depth: int, width: int) -> dict[str, float]:
    """Counts of a layer's weights in the memory style the plan chose for them
    (:mod:`bitloom.plan.memory`): block RAM, a ROM built as logic, or a stream (one word
    register per step); without a chosen style, what Yosys picks by itself."""
    memory = getattr(lp, "memory", None)
    if memory is None:
        return memory_cost(depth, width)
    if memory.style == "bram":
        return {"BRAM36": memory.bram36}
    if memory.style == "streamed":
        return {"beat": width}
    return rom_counts(depth, width) if depth > 1 else {}


def varying_bits(table, lanes: int, tbits: int) -> int:
    """Bits of the threshold ROM's words (``lanes`` channels' tables each) that differ
    between words: the others are constants that Yosys folds into the compare logic."""
    import numpy as np

    groups = table.shape[0] // lanes
    if groups <= 1:
        return 0
    mask = (1 << tbits) - 1
    if tbits > 62:  # beyond int64: Python integers
        words = [[int(v) & mask for v in row] for row in
                 np.asarray(table, dtype=object).reshape(groups, -1)]
        diff = [0] * len(words[0])
        for row in words[1:]:
            diff = [d | (v ^ v0) for d, v, v0 in zip(diff, row, words[0], strict=True)]
        return sum(d.bit_count() for d in diff)
    words = np.asarray(table, dtype=np.int64).reshape(groups, -1) & mask
    diff = np.bitwise_or.reduce(words ^ words[0], axis=0)
    return int(sum(int(d).bit_count() for d in diff))


def threshold_counts(req, acc_bits: int, lanes: int) -> dict[str, float]:
    """Compare bits and table of ``lanes`` banks of ``levels`` threshold comparators.

    The table is a ROM indexed by the neuron fold; its bits that are the same in every word
    (all of them with one channel per lane) are constants, and a compare bit against a
    constant costs a fraction of one against a ROM bit, so the two are counted apart.
    """
    if req is None:
        return {}
    levels = req.table.shape[1]
    # thresholds span far fewer bits than a wide (minifloat) accumulator: above their span
    # every compare only asks whether the accumulator is beyond it, once per lane
    span = max(int(req.table.min()).bit_length(), int(req.table.max()).bit_length()) + 1
    tbits = min(acc_bits + 1, span)
    total = lanes * levels * tbits
    varying = varying_bits(req.table, lanes, tbits)
    groups = max(req.channels // lanes, 1)
    # a ROM whose output register Yosys keeps is logic of its own; a shallower one's
    # register moves to the address and its bits merge into the compares' LUTs
    table = memory_cost(groups, varying) if varying and \
        groups >= REGISTERED_TABLE_MIN_DEPTH else {}
    return {"table": table.get("rom", 0.0) + table.get("rom_shallow", 0.0),
            "BRAM36": table.get("BRAM36", 0.0),
            "compare": lanes * levels, "compare_bits": varying,
            "const_compare": total - varying + lanes * (acc_bits + 1 - tbits),
            "ff_compare": lanes * levels,
            "ff_table": varying if groups >= REGISTERED_TABLE_MIN_DEPTH else 0}


#: bits a DSP48E1 tile of ``mul2dsp`` takes of each signed operand (25 x 18, one sign)
DSP_TILE_BITS = (24, 17)


def scale_counts(req, acc_bits: int, lanes: int) -> dict[str, float]:
    """Multiplier tiles, adder/compare/shifter bits and constant ROM of ``lanes`` scale
    requantizers (:mod:`bitloom.hw.scale`); a fabric multiplier counts one adder per partial
    product (a per-channel multiplier's bits, a constant's signed digits) and registers its
    product, which a DSP48's P register holds otherwise."""
    m_bits = req.multiplier_bits
    constant = "multiplier" not in req.varying()
    shift_only = constant and int(req.multiplier[0]) & (int(req.multiplier[0]) - 1) == 0
    y_bits = acc_bits + m_bits + 1
    if req.lut_multiplier:
        tiles = 0
        terms = len(csd_digits(int(req.multiplier[0]))) if constant else m_bits
        product = y_bits * max(terms, 1)  # terms - 1 adders, and the offset's
    else:
        tiles = 0 if shift_only else math.ceil((acc_bits - 1) / DSP_TILE_BITS[0]) * \
            math.ceil((m_bits - 1) / DSP_TILE_BITS[1])
        product = y_bits * max(tiles - 1, 0) if tiles else y_bits  # a DSP adds B itself
    per_lane = product + 2 * (y_bits if req.rounds_to_levels else y_bits - req.shift)
    if req.rounds_to_levels:  # leading-one detection and the shift it drives
        per_lane += y_bits * max(y_bits - 1, 1).bit_length()
    varying = sum(req.field_bits(f) for f in req.varying())
    groups = max(req.channels // lanes, 1)
    table = memory_cost(groups, lanes * varying) if varying and groups > 1 else {}
    return {"DSP": lanes * tiles, "scale": lanes * per_lane,
            "table": table.get("rom", 0.0) + table.get("rom_shallow", 0.0),
            "BRAM36": table.get("BRAM36", 0.0),
            "ff_table": lanes * varying if groups >= REGISTERED_TABLE_MIN_DEPTH else 0,
            "ff_scale": lanes * y_bits if tiles != 1 else 0}


def requant_counts(req, acc_bits: int, lanes: int) -> dict[str, float]:
    """The component counts of ``lanes`` requantizers of either kind (None: none)."""
    if isinstance(req, ScaleRequant):
        return scale_counts(req, acc_bits, lanes)
    return threshold_counts(req, acc_bits, lanes)


def window_memory(window, channels: int, lanes: int, bits: int,
                  ultra: bool = False) -> dict[str, float]:
    """The sliding-window line buffer: the kernel's rows (plus stride) of the map."""
    w = window.in_hw[1]
    rows = window.dilation[0] * (window.kernel[0] - 1) + window.stride[0]
    return memory_cost(rows * w * channels // lanes, lanes * bits, "fifo", ultra)


def add(total: dict[str, float], counts: Mapping[str, float]) -> None:
    for k, v in counts.items():
        total[k] = total.get(k, 0.0) + v


def accumulator_bits(lp) -> int:
    """Bits of the layer's accumulator (its input's bits where it has none)."""
    acc = getattr(lp.layer, "acc_fmt", None)
    return acc.bits if acc is not None else lp.in_fmt.bits


def lane_counts(lp) -> dict[str, float]:
    """The accumulators and thresholds of a layer of one lane count (``PE = SIMD``)."""
    ly, p, ib = lp.layer, lp.fold.pe, lp.in_fmt.bits
    acc_bits = accumulator_bits(lp)
    counts = {"acc": p * acc_bits, "ff_acc": p * (acc_bits + ly.out_fmt.bits + ib)}
    add(counts, requant_counts(lp.requant, acc_bits, p))
    return counts


def layer_parts(lp) -> dict[str, dict[str, float]]:
    """The physical component counts of one planned layer (the model's features), per
    part of the hardware: ``unit`` (the compute unit with its weights, input buffer and
    thresholds: the layer kind's :meth:`~bitloom.plan.kind.LayerKind.unit_counts`),
    ``window`` (the sliding-window generator) and ``link`` (its input FIFOs and width
    converter).

    LUT counts: ``mac`` (fabric multipliers at bench-pe rates), ``lookup`` (table bits of
    table products), ``tree`` (adder bits, all the LUT logic of DSP products), ``acc``,
    ``compare``/``compare_bits``/``const_compare`` (thresholds), ``table`` (threshold ROM
    sites), ``rom`` (weight ROM sites), ``ram`` (LUT RAM sites), ``control``, ``window``,
    ``fifo``; FF counts: ``ff_mac``, ``ff_acc``, ``ff_compare``, ``ff_table``, ``beat``
    (stream register bits) and the same ``control``/``window``/``fifo``; and the resources
    counted directly: ``DSP``, ``BRAM36``.
    """
    ly = lp.layer
    kind = kind_of(ly)
    unit: dict[str, float] = {"control": 1.0, "beat": lp.out_beat_bits}
    add(unit, kind.unit_counts(lp))
    parts = {"unit": unit}
    window = kind.window_buffer(ly)
    if window is not None:
        parts["window"] = {"window": 1.0, "beat": lp.in_beat_bits,
                           **window_memory(window, ly.in_shape[-1], lp.fold.simd,
                                           lp.in_fmt.bits, "window" in lp.ultra)}
    link: dict[str, float] = {}
    for d in lp.fifo_depths:
        if d:
            add(link, {"fifo": 1.0, "beat": lp.in_beat_bits,
                       **memory_cost(d, lp.in_beat_bits, "fifo", "link" in lp.ultra)})
    if link:
        parts["link"] = link
    return parts


def layer_counts(lp) -> dict[str, float]:
    """All component counts of one planned layer (:func:`layer_parts` summed)."""
    total: dict[str, float] = {}
    for part in layer_parts(lp).values():
        add(total, part)
    return total


def estimate_counts(counts: Mapping[str, float],
                    coefficients: Mapping[str, Mapping[str, float]] = COEFFICIENTS
                    ) -> dict[str, float]:
    """LUT/FF/DSP/BRAM36 (and URAM, where used) from component counts and the fitted
    weights."""
    lut = sum(w * counts.get(k, 0.0) for k, w in coefficients["LUT"].items())
    ff = sum(w * counts.get(FF_COUNTS[k], 0.0) for k, w in coefficients["FF"].items())
    est = {"LUT": round(lut), "FF": round(ff), "DSP": round(counts.get("DSP", 0)),
           "BRAM36": counts.get("BRAM36", 0.0)}
    if counts.get("URAM"):
        est["URAM"] = counts["URAM"]
    return est


def estimate_layer(lp) -> dict[str, float]:
    """LUT/FF/DSP/BRAM36 estimate of one planned layer."""
    return estimate_counts(layer_counts(lp))


def estimate_plan(plan) -> dict[str, float]:
    total: dict[str, float] = {}
    for lp in plan.layers:
        for k, v in estimate_layer(lp).items():
            total[k] = total.get(k, 0) + v
    return total
