"""First-order resource estimates per layer, used to fit a design to a board.

These are deliberately simple formulas (LUTs per product bit, per adder-tree bit, per
threshold bit); ``bitloom synth`` measures the truth and report.json shows both, so the
estimate's error is always visible. Constants were fitted to Yosys ``synth_xilinx -family
xc7`` runs of the example MLP at 64 and 16 cycles per frame; on those six layers the
estimate is within -22%..+29% of Yosys (docs/results/2026-11-23-digits-mlp.md). Weight
ROMs are not modelled well yet; that is the next refinement.
"""

from __future__ import annotations

import math

LUT_PER_PRODUCT_BIT = 2.2  # a x b-bit LUT multiplier incl. partial-product adders
LUT_PER_SUM_BIT = 0.5  # per bit per adder in the tree and the accumulator
LUT_PER_COMPARE_BIT = 1.7  # threshold comparators and their count adder
BRAM36_BITS = 36 * 1024
LUTRAM_MAX_BITS = 4096  # memories up to this size are cheaper as distributed RAM


def memory_cost(depth: int, width: int) -> dict[str, float]:
    bits = depth * width
    if bits <= LUTRAM_MAX_BITS or depth < 64:
        return {"LUT": math.ceil(width / 2) * math.ceil(depth / 64), "BRAM36": 0}
    return {"LUT": 0, "BRAM36": math.ceil(width / 72) * math.ceil(depth / 512)}


def estimate_layer(lp) -> dict[str, float]:
    """LUT/FF/DSP/BRAM36 estimate of one planned MatrixVector layer."""
    ly, fold = lp.layer, lp.fold
    wb, ib, acc = ly.w_fmt.bits, ly.in_fmt.bits, ly.acc_fmt.bits
    lanes = fold.pe * fold.simd
    prod = wb + ib
    luts = lanes * wb * ib * LUT_PER_PRODUCT_BIT
    luts += fold.pe * max(fold.simd - 1, 0) * (prod + math.log2(max(fold.simd, 2))) \
        * LUT_PER_SUM_BIT
    luts += fold.pe * acc * LUT_PER_SUM_BIT
    ffs = fold.pe * acc + fold.simd * ib * 2 + fold.pe * ly.out_fmt.bits + 32
    weights = memory_cost(lp.cycles, lanes * wb)
    buffer = memory_cost(ly.in_features // fold.simd, fold.simd * ib)
    bram = weights["BRAM36"] + buffer["BRAM36"]
    luts += weights["LUT"] + buffer["LUT"]
    if ly.requant is not None:
        levels = ly.requant.table.shape[1]
        luts += fold.pe * levels * (acc + 1) * LUT_PER_COMPARE_BIT
        luts += memory_cost(ly.out_features // fold.pe, fold.pe * levels * (acc + 1))["LUT"]
    fifo = memory_cost(lp.fifo_depth, lp.in_beat_bits)
    return {"LUT": round(luts + fifo["LUT"]), "FF": round(ffs), "DSP": 0,
            "BRAM36": bram + fifo["BRAM36"]}


def estimate_plan(plan) -> dict[str, float]:
    total: dict[str, float] = {}
    for lp in plan.layers:
        for k, v in estimate_layer(lp).items():
            total[k] = total.get(k, 0) + v
    return total
