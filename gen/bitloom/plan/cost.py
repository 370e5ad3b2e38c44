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

from bitloom.ir import AddStreams, DepthwiseConv, MatrixVector

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


def threshold_cost(req, acc_bits: int, lanes: int, channels: int) -> float:
    """LUTs of ``lanes`` threshold comparators banks and their table memory."""
    if req is None:
        return 0.0
    levels = req.table.shape[1]
    return lanes * levels * (acc_bits + 1) * LUT_PER_COMPARE_BIT + \
        memory_cost(channels // lanes, lanes * levels * (acc_bits + 1))["LUT"]


def window_buffer(window, channels: int, lanes: int, bits: int) -> dict[str, float]:
    """The sliding-window line buffer: the kernel's rows (plus stride) of the map."""
    h, w = window.in_hw
    rows = window.dilation[0] * (window.kernel[0] - 1) + window.stride[0]
    return memory_cost(min(rows * w, h * w) * channels // lanes, lanes * bits)


def estimate_layer(lp) -> dict[str, float]:
    """LUT/FF/DSP/BRAM36 estimate of one planned layer."""
    ly, fold = lp.layer, lp.fold
    in_fmt = lp.in_fmt
    ib = in_fmt.bits
    mems: list[dict[str, float]] = []
    acc = getattr(ly, "acc_fmt", None)
    acc_bits = acc.bits if acc is not None else ib
    if isinstance(ly, MatrixVector):
        wb = ly.w_fmt.bits
        lanes = fold.pe * fold.simd
        luts = lanes * wb * ib * LUT_PER_PRODUCT_BIT
        luts += fold.pe * max(fold.simd - 1, 0) * (wb + ib + math.log2(max(fold.simd, 2))) \
            * LUT_PER_SUM_BIT
        luts += fold.pe * acc_bits * LUT_PER_SUM_BIT
        mems.append(memory_cost(lp.cycles // ly.pixels, lanes * wb))  # weights
        mems.append(memory_cost(ly.in_features // fold.simd, fold.simd * ib))  # input buffer
        if ly.window is not None:
            mems.append(window_buffer(ly.window, ly.in_shape[-1], fold.simd, ib))
        luts += threshold_cost(ly.requant, acc_bits, fold.pe, ly.out_features)
        ffs = fold.pe * acc_bits + fold.simd * ib * 2 + fold.pe * ly.out_fmt.bits + 32
    else:
        p = fold.pe
        channels = ly.out_shape[-1]
        luts = p * acc_bits * LUT_PER_SUM_BIT  # accumulate / compare / add per lane
        if isinstance(ly, DepthwiseConv):
            luts += p * ly.w_fmt.bits * ib * LUT_PER_PRODUCT_BIT
            mems.append(memory_cost(ly.window.size * channels // p, p * ly.w_fmt.bits))
        if isinstance(ly, AddStreams):
            luts += p * 2 * ib * max(1, max(ly.multipliers).bit_length()) * LUT_PER_SUM_BIT
        window = getattr(ly, "window", None)
        if window is not None and not (window.kernel == window.in_hw and not any(window.pads)):
            mems.append(window_buffer(window, ly.in_shape[-1], p, ib))
        luts += threshold_cost(getattr(ly, "requant", None), acc_bits, p, channels)
        ffs = p * (acc_bits + ly.out_fmt.bits + ib) + 32
    for d in lp.fifo_depths:
        mems.append(memory_cost(d, lp.in_beat_bits))
    luts += sum(mem["LUT"] for mem in mems)
    return {"LUT": round(luts), "FF": round(ffs), "DSP": 0,
            "BRAM36": sum(mem["BRAM36"] for mem in mems)}


def estimate_plan(plan) -> dict[str, float]:
    total: dict[str, float] = {}
    for lp in plan.layers:
        for k, v in estimate_layer(lp).items():
            total[k] = total.get(k, 0) + v
    return total
