"""The netlist timing walk (bitloom.emit.timing) on netlists small enough to time by hand."""

from __future__ import annotations

import pytest

from bitloom.boards import load_board
from bitloom.emit.timing import ROUTE_PS, longest_paths


def cell(kind: str, **ports: tuple[str, list]) -> dict:
    return {"type": kind, "parameters": {},
            "port_directions": {p: d for p, (d, _) in ports.items()},
            "connections": {p: bits for p, (_, bits) in ports.items()}}


def ff(d: int, q: int) -> dict:
    return cell("FDRE", C=("input", [1]), CE=("input", ["1"]), R=("input", ["0"]),
                D=("input", [d]), Q=("output", [q]))


def module(cells: dict, netnames: dict | None = None) -> dict:
    return {"modules": {"top": {"ports": {"clk": {"direction": "input", "bits": [1]}},
                                "cells": cells, "netnames": netnames or {}}}}


def test_a_register_to_register_path_adds_cell_delays_and_routing():
    """FF -> LUT6 (pin I0) -> LUT2 (pin I1) -> FF: clock-to-out 303 ps, LUT pins 642 and
    127 ps (Yosys's Xilinx cell delays), a routing allowance on each net between cells,
    none from a LUT of fanout one into its own slice's flip-flop."""
    netlist = module({
        "a": ff(10, 2),
        "l1": cell("LUT6", **{f"I{i}": ("input", [2 if i == 0 else "0"]) for i in range(6)},
                   O=("output", [3])),
        "l2": cell("LUT2", I0=("input", ["0"]), I1=("input", [3]), O=("output", [4])),
        "b": ff(4, 5),
    }, {"acc": {"bits": [5]}, "x": {"bits": [2]}})
    path = longest_paths(netlist, "top", 1.0, lambda name: "all")["all"]
    assert path.ps == pytest.approx(303 + ROUTE_PS + 642 + ROUTE_PS + 127)
    assert path.kinds() == {"FF": 2, "LUT": 2}
    assert path.start == "x" and path.end == "acc"
    assert path.fmax_mhz == pytest.approx(1e6 / path.ps)
    zcu104 = load_board("zcu104")  # an UltraScale+ in speed grade -2
    faster = longest_paths(netlist, "top", zcu104.speed_factor, lambda name: "all")["all"]
    assert faster.ps == pytest.approx(path.ps * 0.55)


def test_a_carry_chain_rides_its_dedicated_wire():
    """Two CARRY4 in a chain: CO[3] into the next CI costs the carry delay, no routing."""
    s = [20, 21, 22, 23]
    netlist = module({
        "a": ff(10, 2),
        "c0": cell("CARRY4", CI=("input", ["0"]), CYINIT=("input", ["0"]),
                   DI=("input", ["0"] * 4), S=("input", [2, "1", "1", "1"]),
                   O=("output", [30, 31, 32, 33]), CO=("output", [40, 41, 42, 43])),
        "c1": cell("CARRY4", CI=("input", [43]), CYINIT=("input", ["0"]),
                   DI=("input", ["0"] * 4), S=("input", s), O=("output", [50, 51, 52, 53]),
                   CO=("output", [60, 61, 62, 63])),
        "b": ff(53, 5),
    })
    path = longest_paths(netlist, "top", 1.0, lambda name: "all")["all"]
    # S[0] -> CO[3] 508 ps, CI -> O[3] 313 ps; the carry sum into a flip-flop: no routing
    assert path.ps == pytest.approx(303 + ROUTE_PS + 508 + 313)
    assert path.kinds()["CARRY"] == 2


def test_endpoints_are_grouped_and_ports_count_as_registers():
    """An input port is a register one net away; paths are kept per group of endpoints."""
    netlist = module({
        "l1": cell("LUT1", I0=("input", [7]), O=("output", [8])),
        "x": ff(8, 9),
        "y": ff(9, 11),
    })
    netlist["modules"]["top"]["ports"]["i"] = {"direction": "input", "bits": [7]}
    paths = longest_paths(netlist, "top", 1.0,
                          lambda name: {"x": "first", "y": "second"}.get(name))
    assert paths["first"].ps == pytest.approx(303 + ROUTE_PS + 127)
    assert paths["second"].ps == pytest.approx(303 + ROUTE_PS)  # flip-flop to flip-flop


@pytest.mark.parametrize("board, factor", [("pynq-z2", 1.0), ("zybo-z7-20", 1.0),
                                           ("ultra96-v2", 0.62), ("kv260", 0.55),
                                           ("zcu104", 0.55)])
def test_every_board_has_a_speed_factor(board, factor):
    assert load_board(board).speed_factor == factor
