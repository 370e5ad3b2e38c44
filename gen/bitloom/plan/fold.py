"""A layer's parallelism, the one planning decision every stage reads (hardware units,
FIFO sizing, cost, HLS): ``pe`` output channels x ``simd`` inputs per cycle."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Folding:
    """How a layer is laid onto hardware: ``pe`` output channels x ``simd`` inputs per cycle."""

    pe: int
    simd: int
