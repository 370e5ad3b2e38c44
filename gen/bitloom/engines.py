"""Dispatch of ``Network.run`` to an execution engine."""

from __future__ import annotations

import numpy as np

from bitloom.errors import BitloomError
from bitloom.ir import Network

ENGINES = ("golden", "rtl", "hls")


def require_layers(net: Network) -> None:
    """Hardware needs at least one layer; a quantize/dequantize-only model has none."""
    if not net.layers:
        raise BitloomError(f"{net.source}: the model has no layer (quantize/dequantize only); "
                           "there is nothing to build in hardware. Run it with --engine golden.")


def run_engine(net: Network, x: np.ndarray, engine: str, **options) -> np.ndarray:
    x = np.asarray(x)
    if engine == "golden":
        from bitloom.golden import run_golden

        return run_golden(net, x)
    if engine in ENGINES:
        require_layers(net)
    if engine == "rtl":
        from bitloom.sim.runner import run_rtl

        return run_rtl(net, x, **options)
    if engine == "hls":
        from bitloom.emit.hls_csim import run_hls

        return run_hls(net, x, **options)
    raise BitloomError(f"unknown engine {engine!r}; choose one of: {', '.join(ENGINES)}")
