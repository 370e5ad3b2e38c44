"""Input frames for checking hardware against golden: the corners of the input format
first (lowest, highest, alternating, zero), then seeded random levels."""

from __future__ import annotations

import numpy as np

from bitloom.formats import Format


def stimulus(fmt: Format, features: int, samples: int, seed: int) -> np.ndarray:
    """Grid integers of input frames: corner frames (lowest, highest, alternating, zero)
    then random ones."""
    rng = np.random.default_rng(seed)
    levels = fmt.grid_levels()
    lo, hi = int(levels[0]), int(levels[-1])
    corners = [np.full(features, lo), np.full(features, hi),
               np.where(np.arange(features) % 2 == 0, lo, hi)]
    if lo < 0 < hi and 0 in levels:
        corners.append(np.zeros(features))
    random = levels[rng.integers(0, len(levels), size=(max(samples, 0), features))]
    frames = np.concatenate([np.stack(corners), random])[:max(samples, len(corners))]
    return frames.astype(np.int64)
