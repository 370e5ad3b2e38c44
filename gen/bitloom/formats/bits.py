"""Words of equal-width fields, element 0 in the lowest bits.

Why one place: stream beats, weight and threshold memory words and ROM constants all use
this layout; packing and unpacking sharing one definition cannot drift apart. Words are
Python ints, so any width works.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np


def pack(values: np.ndarray | Iterable[int], bits: int) -> int:
    """``values`` as one word, ``bits`` each (two's complement: masked), element 0 lowest.

    An array is flattened; any other iterable is taken as it is, so Python ints wider than
    64 bits never pass through a NumPy dtype."""
    flat = values.reshape(-1).tolist() if isinstance(values, np.ndarray) else values
    mask = (1 << bits) - 1
    word = 0
    for i, v in enumerate(flat):
        word |= (int(v) & mask) << (i * bits)
    return word


def unpack(word: int, bits: int, count: int) -> list[int]:
    """The ``count`` unsigned ``bits``-wide fields of ``word``, element 0 first."""
    mask = (1 << bits) - 1
    return [(word >> (i * bits)) & mask for i in range(count)]
