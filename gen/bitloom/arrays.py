"""NumPy array files named on the command line (``bitloom run --input``, ``bitloom quantize
--calib``): one reader, so every command reports a missing or unreadable file the same way,
naming it."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bitloom.errors import BitloomError


def load_arrays(path: str, usage: str) -> np.ndarray | dict[str, np.ndarray]:
    """The array of a .npy file, or the named arrays of an .npz file.

    A missing file or one NumPy cannot read is a :class:`BitloomError` naming it; ``usage``
    tells the user what to pass instead."""
    p = Path(path)
    if not p.is_file():
        raise BitloomError(f"{p}: no such file. {usage}")
    try:
        data = np.load(p, allow_pickle=False)
        if isinstance(data, np.lib.npyio.NpzFile):
            with data:
                return {name: data[name] for name in data.files}
        return data
    except Exception as exc:
        raise BitloomError(f"{p}: not a NumPy .npy/.npz file ({exc}).") from None
