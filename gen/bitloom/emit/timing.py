"""Estimated clock rate from the mapped netlist: the longest register-to-register path.

After ``synth_xilinx`` the netlist holds the primitives Vivado would place (LUTs, CARRY
chains, flip-flops, DSP48s, block RAMs), so the logic depth of every path is known; only
placement and routing are not. The walk here times every net bit of a ``write_json`` netlist:

- **Cell delays** are the ones Yosys's own Xilinx cell library carries for ``abc9``
  (``techlibs/xilinx/cells_sim.v`` specify blocks), which cite prjxray-db's measurements of
  an Artix-7 in speed grade -1: a LUT6 is 127-642 ps by input pin, a CARRY4 stage 114 ps
  from carry-in to carry-out, a flip-flop 303 ps from clock to output, a block RAM 2,454 ps
  without its output register (882 with it), a DSP48E1's multiply 2.7-2.8 ns unregistered.
- **Routing** is not in those numbers beyond the slice's own wires (a LUT pin's 127-642 ps
  is several times the LUT's own 0.1 ns in AMD's data sheet: the pin delays carry the
  local routing). Each net between two cells gets an allowance of
  ``ROUTE_PS + FANOUT_PS * log2(fanout)``: 250 ps for a net to one load, about 1.75 ns for
  a net to 1,000 (a clock-enable that reaches every register of a layer is the long one).
  Carry-out to carry-in, a LUT into its slice's MUXF7/8 or carry logic, and a slice's
  logic into its own flip-flop ride dedicated wires and get none. This is an allowance,
  not a measurement: no placed-and-routed design calibrated it.
- **Other families and speed grades** scale every delay by one factor
  (:data:`bitloom.boards.SPEED_FACTORS`): Zynq-7000 -1 is the Artix-7 -1 the delays were
  measured on; UltraScale+ (Zynq MPSoC) is taken as 0.62 of it at -1, 0.55 at -2. These factors are
  estimates, not characterized.

Why not Yosys's ``sta``: it reports one path for the whole design, begins paths at primary
inputs, knows no routing allowance and names no layer; a layer-by-layer figure is what
tells a user which unit to pipeline.

A unit's ports are taken as registered one net away (the FIFOs between layers register
their data; ready and valid cross a unit combinationally and are cut at its ports).
"""

from __future__ import annotations

import json
import math
import re
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: routing allowance of a net to one load, and per doubling of its fanout (ps, xc7 -1)
ROUTE_PS, FANOUT_PS = 250.0, 150.0

_LUT_PIN_PS = (642, 631, 472, 407, 238, 127)  # I0..I5 -> O
_FF_CLK_Q, _FF_SETUP = 303.0, {"D": 0.0, "CE": 109.0, "R": 404.0, "S": 404.0,
                               "CLR": 404.0, "PRE": 404.0}
_FLOPS = re.compile(r"^FD[RSCP]E(_1)?$")
_CLOCKS = frozenset(("C", "CLK", "WCLK", "CLKARDCLK", "CLKBWRCLK", "CLKA", "CLKB", "CLKU"))
#: CARRY4 arcs (cells_sim.v): (input, output bit) -> ps, inputs as "S0", "DI2", "CI", "CYINIT"
_CARRY4_CO = {"CYINIT": (536, 494, 592, 580), "CI": (271, 157, 228, 114),
              "DI0": (379, 465, 540, 526), "DI1": (None, 445, 520, 507),
              "DI2": (None, None, 356, 398), "DI3": (None, None, None, 385),
              "S0": (340, 433, 512, 508), "S1": (None, 469, 548, 528),
              "S2": (None, None, 292, 378), "S3": (None, None, None, 380)}
_CARRY4_O = {"CYINIT": (482, 598, 584, 642), "CI": (222, 334, 239, 313),
             "DI0": (None, 407, 556, 615), "DI1": (None, None, 537, 596),
             "DI2": (None, None, None, 438), "S0": (223, 400, 523, 582),
             "S1": (None, 205, 558, 618), "S2": (None, None, 226, 330),
             "S3": (None, None, None, 227)}
_MUXF = {"MUXF7": {"I0": 217, "I1": 223, "S": 296}, "MUXF8": {"I0": 104, "I1": 94, "S": 273},
         "MUXF9": {"I0": 104, "I1": 94, "S": 273}}
_SRL_CLK_Q, _LUTRAM_CLK_O = 1472.0, 1153.0
_BRAM_CLK_DO = {False: 2454.0, True: 882.0}  # without / with the output register
_URAM_CLK_DO = 1700.0  # no Yosys figure: an estimate for an unpipelined UltraRAM read


@dataclass
class TimedPath:
    """The longest path ending in one group of endpoints."""

    ps: float
    cells: list[tuple[str, str]] = field(default_factory=list)  # (name, type), start first
    start: str = ""  # the register (or port) the path leaves
    end: str = ""  # the register (or port) it ends in

    @property
    def fmax_mhz(self) -> float:
        return 1e6 / self.ps if self.ps > 0 else math.inf

    def kinds(self) -> dict[str, int]:
        """What the path goes through: LUT levels, carry cells, DSP and RAM stages."""
        count: dict[str, int] = defaultdict(int)
        for _, kind in self.cells:
            count[_kind(kind)] += 1
        return dict(count)

    def describe(self) -> str:
        """A short name for the path: its start, end and what lies between."""
        if not self.cells:
            return "no register-to-register path"
        parts = [f"{n} {k}" for k, n in sorted(self.kinds().items())
                 if k not in ("other", "FF")]
        return f"{self.start} -> {self.end}: " + (", ".join(parts) or "a net")

    def as_json(self) -> dict[str, Any]:
        return {"ps": round(self.ps), "fmax_mhz": round(self.fmax_mhz, 1),
                "through": self.kinds(), "path": self.describe()}


def _kind(cell_type: str) -> str:
    if cell_type.startswith("LUT") or cell_type == "INV":
        return "LUT"
    if cell_type.startswith("CARRY"):
        return "CARRY"
    if cell_type.startswith("DSP"):
        return "DSP"
    if cell_type.startswith(("RAMB", "URAM")):
        return "BRAM"
    if cell_type.startswith(("RAM", "SRL")):
        return "LUTRAM"
    if cell_type.startswith("MUXF"):
        return "MUXF"
    if _FLOPS.match(cell_type):
        return "FF"
    return "other"


def net_names(module: dict[str, Any]) -> dict[int, str]:
    """A readable name per net bit (``acc0[5]``), Yosys's own ``$``-names only where a
    bit has no other."""
    names: dict[int, tuple[bool, str]] = {}
    for name, net in module.get("netnames", {}).items():
        clean = re.sub(r"\$flatten\\|\\", "", name)
        generated = "$" in clean
        bits = net["bits"]
        for i, bit in enumerate(bits):
            if isinstance(bit, int) and (bit not in names or names[bit][0] > generated):
                names[bit] = (generated, clean if len(bits) == 1 else f"{clean}[{i}]")
    return {bit: name for bit, (_, name) in names.items()}


class _Graph:
    """Arcs between net bits of one flattened module, with start and end times."""

    def __init__(self, scale: float) -> None:
        self.scale = scale
        self.arcs: dict[int, list[tuple[int, float, int]]] = defaultdict(list)  # in -> out
        self.starts: dict[int, tuple[float, int]] = {}  # bit -> (arrival, cell)
        self.ends: list[tuple[int, float, int]] = []  # (bit, required, cell)
        self.driver: dict[int, tuple[str, str]] = {}  # bit -> (cell type, port)
        self.loads: dict[int, int] = defaultdict(int)
        self.cells: list[tuple[str, str]] = [("<port>", "port")]
        self.outputs: list[list[Any]] = [[]]  # per cell, its output bits

    def cell(self, name: str, kind: str, outputs: list[Any]) -> int:
        self.cells.append((name, kind))
        self.outputs.append(outputs)
        return len(self.cells) - 1

    def arc(self, src: Any, dst: Any, ps: float, cell: int) -> None:
        if isinstance(src, int) and isinstance(dst, int):
            self.arcs[src].append((dst, ps * self.scale, cell))

    def start(self, bit: Any, ps: float, cell: int) -> None:
        if isinstance(bit, int):
            self.starts[bit] = max(self.starts.get(bit, (0.0, cell)),
                                   (ps * self.scale, cell))

    def end(self, bit: Any, ps: float, cell: int) -> None:
        if isinstance(bit, int):
            self.ends.append((bit, ps * self.scale, cell))


def _add_cell(g: _Graph, name: str, cell: dict[str, Any]) -> None:
    kind, conns = cell["type"], cell["connections"]
    dirs = cell.get("port_directions", {})
    params = cell.get("parameters", {})
    outputs = {p: bits for p, bits in conns.items() if dirs.get(p) == "output"}
    c = g.cell(name, kind, [b for bits in outputs.values() for b in bits])
    inputs = {p: bits for p, bits in conns.items() if dirs.get(p) != "output"
              and p not in _CLOCKS}
    for port, bits in outputs.items():
        for i, bit in enumerate(bits):
            if isinstance(bit, int):
                g.driver[bit] = (kind, f"{port}{i}")
    for bits in inputs.values():
        for bit in bits:
            if isinstance(bit, int):
                g.loads[bit] += 1
    out_bits = [b for bits in outputs.values() for b in bits]
    if kind.startswith("LUT") or kind == "INV":
        size = int(kind[3]) if kind[3:4].isdigit() else 1
        for port, bits in inputs.items():
            pin = int(port[1:]) if port[1:].isdigit() else 0
            # a k-input LUT's pins are the fastest k of a LUT6's (cells_sim.v)
            ps = _LUT_PIN_PS[min(6 - size + pin, 5)]
            for bit in bits:
                for out in out_bits:
                    g.arc(bit, out, ps, c)
    elif kind in _MUXF:
        for port, bits in inputs.items():
            for out in out_bits:
                g.arc(bits[0], out, _MUXF[kind].get(port, 300), c)
    elif kind == "CARRY4":
        _carry4(g, conns, inputs, c)
    elif kind == "CARRY8":
        _carry8(g, conns, inputs, c)
    elif _FLOPS.match(kind):
        for out in out_bits:
            g.start(out, _FF_CLK_Q, c)
        for port, bits in inputs.items():
            g.end(bits[0], _FF_SETUP.get(port, 109), c)
    elif kind.startswith(("SRL", "CFGLUT")):
        for out in out_bits:
            g.start(out, _SRL_CLK_Q, c)
        for port, bits in inputs.items():
            if port == "A" or re.fullmatch(r"A\d", port):
                for i, bit in enumerate(bits):
                    for out in out_bits:
                        g.arc(bit, out, _LUT_PIN_PS[min(i, 5)], c)
            else:
                for bit in bits:
                    g.end(bit, 173, c)
    elif kind.startswith("RAM") and not kind.startswith("RAMB"):
        _lutram(g, kind, inputs, out_bits, c)
    elif kind.startswith("RAMB"):
        registered = {p: bool(_param(params, f"DO{p}_REG")) for p in "AB"}
        for port, bits in outputs.items():
            side = "B" if "B" in port[2:4] or port.startswith("DOB") else "A"
            for bit in bits:
                g.start(bit, _BRAM_CLK_DO[registered[side]], c)
        for port, bits in inputs.items():
            setup = 737 if port.startswith("DI") else 566 if port.startswith("ADDR") else \
                532 if port.startswith("WE") else 360
            for bit in bits:
                g.end(bit, setup, c)
    elif kind.startswith("URAM"):
        for bit in out_bits:
            g.start(bit, _URAM_CLK_DO, c)
        for bits in inputs.values():
            for bit in bits:
                g.end(bit, 600, c)
    elif kind.startswith("DSP48"):
        _dsp(g, params, inputs, outputs, c)
    else:  # a black box (a layer unit synthesized on its own) or a buffer: ports registered
        for bit in out_bits:
            g.start(bit, _FF_CLK_Q, c)
        for bits in inputs.values():
            for bit in bits:
                g.end(bit, 0, c)


def _param(params: dict[str, Any], key: str) -> int:
    value = params.get(key, 0)
    if isinstance(value, str):
        value = value.strip()
        return int(value, 2) if value and set(value) <= {"0", "1"} else 0
    return int(value)


def _carry4(g: _Graph, conns: dict, inputs: dict, c: int) -> None:
    ins = {}
    for port, bits in inputs.items():
        for i, bit in enumerate(bits):
            ins[port if port in ("CI", "CYINIT") else f"{port}{i}"] = bit
    for table, out_port in ((_CARRY4_CO, "CO"), (_CARRY4_O, "O")):
        outs = conns.get(out_port, [])
        for pin, delays in table.items():
            for i, ps in enumerate(delays):
                if ps is not None and i < len(outs) and pin in ins:
                    g.arc(ins[pin], outs[i], ps, c)


def _carry8(g: _Graph, conns: dict, inputs: dict, c: int) -> None:
    """No Yosys figures for CARRY8: CARRY4's entry delays with its per-bit carry delay
    (114 ps over four bits) carried on to eight bits."""
    co, o = conns.get("CO", []), conns.get("O", [])
    for port, bits in inputs.items():
        for j, bit in enumerate(bits):
            first = 0 if port in ("CI", "CI_TOP") else j
            entry = 271 if port.startswith("CI") else 380
            for i in range(first, len(co)):
                g.arc(bit, co[i], entry + 29 * (i - first), c)
            for i in range(first, len(o)):
                g.arc(bit, o[i], (222 if port.startswith("CI") else 223) + 29 * (i - first)
                      + (0 if i == first else 100), c)


def _lutram(g: _Graph, kind: str, inputs: dict, out_bits: list, c: int) -> None:
    """Distributed RAM: a read is a LUT from its address (one more mux level past 64
    words), a write ends at the clock."""
    deep = 300 if any(d in kind for d in ("128", "256", "512")) else 0
    for port, bits in inputs.items():
        read = port.startswith(("ADDR", "DPRA", "A")) and not port.startswith("ADDRD_W")
        for i, bit in enumerate(bits):
            if read:
                for out in out_bits:
                    g.arc(bit, out, _LUT_PIN_PS[min(i, 5)] + deep, c)
            g.end(bit, 654 if port.startswith("WE") else 453 if port.startswith("D")
                  else 245, c)
    for bit in out_bits:
        g.start(bit, _LUTRAM_CLK_O, c)


def _dsp(g: _Graph, params: dict, inputs: dict, outputs: dict, c: int) -> None:
    """DSP48E1 figures of cells_sim.v (E2 taken as equal): each input either meets its
    first register (setup) or passes the multiplier to an unregistered P."""
    reg = {k: _param(params, f"{k}REG") for k in ("A", "B", "C", "D", "M", "P", "AD")}
    mult = str(params.get("USE_MULT", "MULTIPLY")).strip() != "NONE"
    any_reg = any(reg.values())
    required = {"A": 254 if reg["A"] else 1416 if reg["M"] and mult else 2739,
                "B": 324 if reg["B"] else 1285 if reg["M"] and mult else 2608,
                "C": 168 if reg["C"] else 1244, "D": 248 if reg["D"] else 2310}
    comb = {"A": 2823 if mult else 1523, "B": 2690 if mult else 1509, "C": 1325, "D": 3806}
    registered_in = {"A": reg["A"] or reg["M"] or reg["P"], "B": reg["B"] or reg["M"] or
                     reg["P"], "C": reg["C"] or reg["P"], "D": reg["D"] or reg["AD"] or
                     reg["M"] or reg["P"]}
    arrival = 329 if reg["P"] else 1671 if reg["M"] else 2952 if reg["A"] else \
        2813 if reg["B"] else 0
    out_bits = [b for bits in outputs.values() for b in bits]
    for port, bits in inputs.items():
        key = port[0] if port in ("A", "B", "C", "D") else None
        for bit in bits:
            if key is None:  # control, cascade and clock-enable inputs
                if any_reg:
                    g.end(bit, 500, c)
                else:
                    for out in out_bits:
                        g.arc(bit, out, 1500, c)
            elif registered_in[key]:
                g.end(bit, required[key], c)
            else:
                for out in out_bits:
                    g.arc(bit, out, comb[key], c)
    if any_reg:
        for bit in out_bits:
            g.start(bit, arrival, c)


def _route_ps(g: _Graph, bit: int, sink_kind: str, sink_port: str) -> float:
    """The routing allowance of net ``bit`` into one sink: none on a slice's own wires
    (carry-out to carry-in; a LUT into its MUXF7/8; a LUT of fanout one into its slice's
    carry logic, or a LUT, carry sum or mux of fanout one into its slice's flip-flop)."""
    fanout = max(g.loads.get(bit, 1), 1)
    driver = g.driver.get(bit)
    if driver is not None:
        kind, port = driver
        if kind.startswith("CARRY") and port.startswith("CO") and sink_port == "CI":
            return 0.0
        if sink_kind.startswith("MUXF") and kind.startswith(("LUT", "MUXF")):
            return 0.0
        if fanout == 1 and kind.startswith("LUT") and sink_kind.startswith("CARRY") and \
                sink_port in ("S", "DI"):
            return 0.0
        if fanout == 1 and _FLOPS.match(sink_kind) and sink_port == "D" and (
                kind.startswith(("LUT", "MUXF")) or (kind.startswith("CARRY") and
                                                     port.startswith("O"))):
            return 0.0
    return (ROUTE_PS + FANOUT_PS * math.log2(fanout)) * g.scale


def longest_paths(netlist: dict[str, Any], top: str, scale: float,
                  group: Callable[[str], str | None]) -> dict[str, TimedPath]:
    """The longest path ending in each group of endpoint cells (``group`` maps a cell name
    to its group, None to leave it out) of the flattened module ``top``, every delay
    times ``scale`` (:attr:`bitloom.boards.Board.speed_factor`)."""
    module = netlist["modules"][top]
    g = _Graph(scale)
    sink_of: dict[tuple[int, int], tuple[str, str]] = {}
    for name, cell in module["cells"].items():
        _add_cell(g, name, cell)
        index = len(g.cells) - 1
        for port, bits in cell["connections"].items():
            for bit in bits:
                if isinstance(bit, int):
                    sink_of[(bit, index)] = (cell["type"], port)
    for port in module["ports"].values():
        for bit in port["bits"]:
            if port["direction"] == "input":
                g.start(bit, _FF_CLK_Q, 0)
            else:
                g.end(bit, 0, 0)
    return _walk(g, sink_of, group, net_names(module))


def _walk(g: _Graph, sink_of: dict, group: Callable[[str], str | None],
          names: dict[int, str]) -> dict[str, TimedPath]:
    """Arrival times in topological order (Kahn), then the worst endpoint of each group."""
    indegree: dict[int, int] = defaultdict(int)
    for dsts in g.arcs.values():
        for dst, _, _ in dsts:
            indegree[dst] += 1
    arrival: dict[int, float] = {b: t for b, (t, _) in g.starts.items()}
    came_from: dict[int, tuple[int | None, int]] = {b: (None, c) for b, (_, c) in
                                                    g.starts.items()}
    ready = deque(b for b in set(g.arcs) | set(g.starts) if indegree[b] == 0)
    while ready:
        bit = ready.popleft()
        for dst, ps, cell in g.arcs.get(bit, ()):
            if bit in arrival:
                kind, port = sink_of.get((bit, cell), ("", ""))
                t = arrival[bit] + _route_ps(g, bit, kind, port) + ps
                if t > arrival.get(dst, -math.inf):
                    arrival[dst], came_from[dst] = t, (bit, cell)
            indegree[dst] -= 1
            if indegree[dst] == 0:
                ready.append(dst)
    worst: dict[str, tuple[float, int, int]] = {}
    for bit, required, cell in g.ends:
        if bit not in arrival:
            continue
        name = g.cells[cell][0] if cell else "<port>"
        key = group(name) if cell else group("")
        if key is None:
            continue
        kind, port = sink_of.get((bit, cell), ("", ""))
        total = arrival[bit] + _route_ps(g, bit, kind, port) + required
        if key not in worst or total > worst[key][0]:
            worst[key] = (total, bit, cell)
    paths = {}
    for key, (ps, bit, cell) in worst.items():
        cells, first = _trace(g, came_from, bit, cell)
        written = next((b for b in g.outputs[cell] if isinstance(b, int)), bit)
        paths[key] = TimedPath(ps, cells, names.get(first, "a port"),
                               names.get(written if cell else bit, "a port"))
    return paths


def _trace(g: _Graph, came_from: dict, bit: int, end_cell: int
           ) -> tuple[list[tuple[str, str]], int]:
    """The cells of the path into ``bit`` (start first), and the bit it starts from."""
    cells = [g.cells[end_cell]]
    seen = set()
    first = bit
    while bit is not None and bit not in seen:
        seen.add(bit)
        first = bit
        prev, cell = came_from.get(bit, (None, 0))
        cells.append(g.cells[cell])
        bit = prev
    return cells[::-1], first


def read_netlist(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def cell_scope(name: str) -> list[str]:
    """The instance path of a flattened cell (``$flatten\\core.\\conv2.\\mvu.$abc$..``
    -> ``["core", "conv2", "mvu"]``; a cell of the top module itself -> ``[]``)."""
    return re.findall(r"\\([^.\\$]+)\.", name.removeprefix("$flatten"))
