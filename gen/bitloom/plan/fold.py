"""A layer's parallelism, the one planning decision every stage reads (hardware units,
FIFO sizing, cost, HLS): ``pe`` output channels x ``simd`` inputs per cycle."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Folding:
    """How a layer is laid onto hardware: ``pe`` output channels x ``simd`` inputs per cycle."""

    pe: int
    simd: int


def divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def windowed(layer) -> bool:
    """A layer reading a sliding window (not a whole-map or whole-vector reduction)."""
    window = getattr(layer, "window", None)
    return window is not None and not window.is_global
