"""Dispatch of ``Network.run`` to an execution engine."""

from __future__ import annotations

import numpy as np

from bitloom.errors import BitloomError
from bitloom.ir import Network

ENGINES = ("golden", "rtl", "hls")


def run_engine(net: Network, x: np.ndarray, engine: str, **options) -> np.ndarray:
    x = np.asarray(x)
    if engine == "golden":
        from bitloom.golden import run_golden

        return run_golden(net, x)
    if engine == "rtl":
        from bitloom.sim.runner import run_rtl

        return run_rtl(net, x, **options)
    if engine == "hls":
        from bitloom.emit.hls_csim import run_hls

        return run_hls(net, x, **options)
    raise BitloomError(f"unknown engine {engine!r}; choose one of: {', '.join(ENGINES)}")
