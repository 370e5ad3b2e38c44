"""Target boards: FPGA part, PS type, clocks and fabric capacity.

One TOML file per board lives in the repository's ``boards/`` folder, which ships as the
data package ``bitloom.boards``. The planner sizes designs against ``Board.resources``,
``bitloom synth`` reports utilization against them, and the board build picks the part,
PS and AXI ports from here, so adding a board is adding a file.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field, replace
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import tomllib

from bitloom.errors import BitloomError

#: Where the board files ship; see :func:`_board_dir` for the source-checkout fallback.
_DATA_PACKAGE = "bitloom.board_files"

#: Capacity keys every board file lists, in the order utilization tables show them.
#: LUT counts all LUTs, LUTMEM the SLICEM LUTs usable as distributed RAM or shift register,
#: CARRY the carry-chain sites (CARRY4 per slice on xc7, CARRY8 per CLB on xcup), BRAM36
#: the 36 Kb block RAMs (a RAMB18 is half of one) and URAM the UltraRAM blocks.
RESOURCE_KEYS = ("LUT", "LUTMEM", "FF", "CARRY", "DSP", "BRAM36", "URAM")

#: The share of a board's peak DDR bandwidth the plan counts on for streamed weights.
DDR_SHARE_FOR_WEIGHTS = 0.5
#: AXI DMA stream widths (PG021); its memory-mapped side is at least 32 bits and never
#: narrower than the stream.
DMA_STREAM_BITS = (8, 16, 32, 64, 128, 256, 512, 1024)

_Kind = type | tuple[type, ...]

#: The PS each Yosys family comes with on the Zynq boards we target.
_PS_OF_FAMILY = {"xc7": "PS7", "xcup": "PS8"}


@dataclass(frozen=True)
class AxiPorts:
    """The PS ports the accelerator attaches to in the board's block design."""

    control: str  # PS master that drives the accelerator's AXI4-Lite registers
    control_base: int  # address the first AXI4-Lite slave gets on that master
    data: tuple[str, ...]  # PS slaves the accelerator's AXI masters move frames through
    data_width: int  # widest data bus those slaves accept, in bits


#: logic delays by family and speed grade against Artix-7 -1, where Yosys's Xilinx cell
#: delays were measured: Zynq-7000 -1 is that fabric; UltraScale+ is taken as 0.62 of it at
#: -1 and 0.55 at -2 (estimates, not characterized; docs/hardware.md)
SPEED_FACTORS = {("xc7", "-1"): 1.0, ("xc7", "-2"): 0.88, ("xc7", "-3"): 0.78,
                 ("xcup", "-1"): 0.62, ("xcup", "-2"): 0.55, ("xcup", "-3"): 0.5}


@dataclass(frozen=True)
class Board:
    """One board as the compiler sees it; capacities are Vivado's "Available" counts."""

    name: str
    title: str
    part: str
    family: str  # Yosys `synth_xilinx -family`: "xc7" or "xcup"
    package: str
    speed_grade: str
    ps: str  # "PS7" (Zynq-7000) or "PS8" (Zynq UltraScale+)
    default_clock_mhz: float
    pl_clocks_mhz: tuple[float, ...]
    ddr_gbytes_per_s: float  # peak bandwidth of the PS's DDR
    resources: dict[str, float] = field(hash=False)
    axi: AxiPorts

    def weight_dma(self, word_bits: int) -> tuple[int, int]:
        """``(dma_bits, slot_bits)`` of a weight stream of ``word_bits``-bit words: the DMA
        is as wide as the word (in bytes) up to the PS port's width, which delivers no more
        per cycle; a wider word takes whole DMA beats, so it occupies ``slot_bits`` in memory
        and ``slot_bits / dma_bits`` cycles on the port."""
        tdata = 8 * -(-word_bits // 8)
        dma = next(bits for bits in DMA_STREAM_BITS if bits >= min(tdata, self.axi.data_width))
        return dma, -(-tdata // dma) * dma

    def at_clock(self, clock_mhz: float) -> Board:
        """This board with its fabric clocked at ``clock_mhz``, one of the clocks its PS
        can give the fabric (``pl_clocks_mhz``)."""
        if not any(abs(clock_mhz - c) < 1e-3 for c in self.pl_clocks_mhz):
            raise BitloomError(
                f"--clock {clock_mhz:g}: {self.name}'s processing system gives the fabric "
                f"{', '.join(f'{c:g}' for c in self.pl_clocks_mhz)} MHz; choose one of them.")
        return replace(self, default_clock_mhz=float(clock_mhz))

    @property
    def speed_factor(self) -> float:
        """Every logic delay of this part relative to an Artix-7 in speed grade -1 (the
        timing estimate's reference, :mod:`bitloom.emit.timing`): an estimate."""
        grade = self.speed_grade[:2]
        return SPEED_FACTORS.get((self.family, grade), SPEED_FACTORS[(self.family, "-1")])

    def ddr_bits_per_cycle(self, clock_mhz: float) -> float:
        """DDR bits per fabric cycle that streamed weights may count on: a share
        (:data:`DDR_SHARE_FOR_WEIGHTS`) of the peak, since refresh, page misses and the
        frames' own DMA take the rest."""
        return DDR_SHARE_FOR_WEIGHTS * self.ddr_gbytes_per_s * 8e9 / (clock_mhz * 1e6)


def _board_dir() -> Traversable:
    """The folder of board files: the ``bitloom.board_files`` data package once installed,
    the repository's ``boards/`` folder when run from a checkout with ``PYTHONPATH=gen``."""
    try:
        spec = importlib.util.find_spec(_DATA_PACKAGE)
    except ModuleNotFoundError:
        spec = None
    if spec is not None:
        return resources.files(_DATA_PACKAGE)
    return Path(__file__).resolve().parents[2] / "boards"


def list_boards() -> list[str]:
    """Names `load_board` accepts, sorted."""
    return sorted(
        entry.name.removesuffix(".toml")
        for entry in _board_dir().iterdir()
        if entry.name.endswith(".toml")
    )


def load_board(name: str) -> Board:
    """The board called ``name`` (e.g. ``"pynq-z2"``), or one described by a ``.toml`` path."""
    if name.endswith(".toml"):
        path = Path(name)
        if not path.is_file():
            raise BitloomError(f"board file {name} does not exist")
        return _parse(path.stem, path.read_text(encoding="utf-8"), str(path))
    entry = _board_dir() / f"{name}.toml"
    if not entry.is_file():
        known = ", ".join(list_boards())
        raise BitloomError(
            f"unknown board {name!r}; known boards: {known}. "
            "A board file of your own can be given as a path ending in .toml."
        )
    return _parse(name, entry.read_text(encoding="utf-8"), f"board file {name}.toml")


def _parse(name: str, text: str, where: str) -> Board:
    """Validate a board file so mistakes surface here, not deep inside a build."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise BitloomError(f"{where} is not valid TOML: {exc}") from exc

    def get(table: dict[str, Any], key: str, kind: _Kind, prefix: str = "") -> Any:
        value = table.get(key)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise BitloomError(f"{where}: `{prefix}{key}` is missing or not a {_kind_name(kind)}")
        return value

    family = get(data, "family", str)
    if family not in _PS_OF_FAMILY:
        raise BitloomError(f"{where}: family {family!r} is not one of {sorted(_PS_OF_FAMILY)}")
    ps = get(data, "ps", str)
    if ps != _PS_OF_FAMILY[family]:
        raise BitloomError(f"{where}: family {family} comes with {_PS_OF_FAMILY[family]}, not {ps}")
    part, package, speed = (get(data, key, str) for key in ("part", "package", "speed_grade"))
    if f"{package}{speed}" not in part:
        raise BitloomError(f"{where}: part {part} does not match package {package}{speed}")

    clocks = get(data, "pl_clocks_mhz", list)
    if not clocks or not all(_is_number(c) and c > 0 for c in clocks):
        raise BitloomError(f"{where}: `pl_clocks_mhz` must be a non-empty list of positive numbers")
    clocks = tuple(float(c) for c in clocks)
    default_clock = float(get(data, "default_clock_mhz", (int, float)))
    if default_clock not in clocks:
        raise BitloomError(f"{where}: default_clock_mhz {default_clock} is not in pl_clocks_mhz")

    ddr = get(data, "ddr_gbytes_per_s", (int, float))
    if ddr <= 0:
        raise BitloomError(f"{where}: `ddr_gbytes_per_s` must be positive")

    table = get(data, "resources", dict)
    if set(table) != set(RESOURCE_KEYS):
        raise BitloomError(f"{where}: [resources] must list exactly {', '.join(RESOURCE_KEYS)}")
    capacity = {key: get(table, key, (int, float), "resources.") for key in RESOURCE_KEYS}
    if any(value < 0 for value in capacity.values()):
        raise BitloomError(f"{where}: [resources] counts cannot be negative")

    axi = get(data, "axi", dict)
    if not all(isinstance(port, str) for port in axi.get("data", ())):
        raise BitloomError(f"{where}: `axi.data` must list PS port names")
    ports = AxiPorts(
        control=get(axi, "control", str, "axi."),
        control_base=get(axi, "control_base", int, "axi."),
        data=tuple(get(axi, "data", list, "axi.")),
        data_width=get(axi, "data_width", int, "axi."),
    )
    return Board(
        name=name,
        title=get(data, "title", str),
        part=part,
        family=family,
        package=package,
        speed_grade=speed,
        ps=ps,
        default_clock_mhz=default_clock,
        pl_clocks_mhz=clocks,
        ddr_gbytes_per_s=float(ddr),
        resources=capacity,
        axi=ports,
    )


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _kind_name(kind: _Kind) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    names = {str: "string", int: "integer", float: "number", list: "list", dict: "table"}
    return " or ".join(names[k] for k in kinds)
