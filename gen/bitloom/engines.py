"""The execution engines behind ``Network.run``, registered with the IR when bitloom is
imported (the facade imports this module). The simulators are imported when first used:
they bring Amaranth, cocotb and a C++ toolchain, which ``import bitloom`` should not."""

from __future__ import annotations

import numpy as np

from bitloom.boards import load_board
from bitloom.golden import run_golden
from bitloom.ir import Network
from bitloom.ir.graph import ENGINES
from bitloom.plan import plan_design


def _golden(net: Network, x: np.ndarray, **options) -> np.ndarray:
    return run_golden(net, x)


def _rtl(net: Network, x: np.ndarray, plan=None, board: str = "pynq-z2",
         **options) -> np.ndarray:
    """The batch through Verilator, on ``plan`` or the design ``bitloom.compile`` plans for
    ``board``."""
    from bitloom.sim.runner import run_rtl

    plan = plan or plan_design(net, load_board(board))
    return run_rtl(net, x, plan, **options)


def _hls(net: Network, x: np.ndarray, **options) -> np.ndarray:
    from bitloom.emit.hls_csim import run_hls

    return run_hls(net, x, **options)


ENGINES.update(golden=_golden, rtl=_rtl, hls=_hls)
