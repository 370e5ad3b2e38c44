"""Board files: the shipped boards load with their datasheet capacities, bad files are refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from bitloom.boards import RESOURCE_KEYS, Board, list_boards, load_board
from bitloom.errors import BitloomError

# part, ps, LUT, FF, DSP, BRAM36, URAM, LUTMEM as Vivado reports them for each device
FACTS = {
    "pynq-z2": ("xc7z020clg400-1", "PS7", 53200, 106400, 220, 140, 0, 17400),
    "zybo-z7-20": ("xc7z020clg400-1", "PS7", 53200, 106400, 220, 140, 0, 17400),
    "ultra96-v2": ("xczu3eg-sbva484-1-i", "PS8", 70560, 141120, 360, 216, 0, 28800),
    "kv260": ("xck26-sfvc784-2LV-c", "PS8", 117120, 234240, 1248, 144, 64, 57600),
    "zcu104": ("xczu7ev-ffvc1156-2-e", "PS8", 230400, 460800, 1728, 312, 96, 101760),
}

GOOD = """\
title = "My board"
part = "xc7z020clg400-1"
family = "xc7"
package = "clg400"
speed_grade = "-1"
ps = "PS7"
default_clock_mhz = 100
pl_clocks_mhz = [100, 125]
ddr_gbytes_per_s = 2.1

[resources]
LUT = 53200
LUTMEM = 17400
FF = 106400
CARRY = 13300
DSP = 220
BRAM36 = 140
URAM = 0

[axi]
control = "M_AXI_GP0"
control_base = 0x43C0_0000
data = ["S_AXI_HP0"]
data_width = 64
"""


def test_list_boards() -> None:
    assert list_boards() == sorted(FACTS)


@pytest.mark.parametrize("name", sorted(FACTS))
def test_board_facts(name: str) -> None:
    part, ps, lut, ff, dsp, bram, uram, lutmem = FACTS[name]
    board = load_board(name)
    assert board.name == name
    assert board.part == part
    assert board.ps == ps
    assert board.family == ("xc7" if ps == "PS7" else "xcup")
    assert part.startswith("xc") and f"{board.package}{board.speed_grade}" in part
    assert board.resources == {
        "LUT": lut,
        "LUTMEM": lutmem,
        "FF": ff,
        "CARRY": lut // 4 if ps == "PS7" else lut // 8,  # one CARRY4 per slice, CARRY8 per CLB
        "DSP": dsp,
        "BRAM36": bram,
        "URAM": uram,
    }
    assert tuple(board.resources) == RESOURCE_KEYS
    assert board.default_clock_mhz == 100.0
    assert board.default_clock_mhz in board.pl_clocks_mhz
    assert board.axi.data_width == (64 if ps == "PS7" else 128)
    assert board.axi.control == ("M_AXI_GP0" if ps == "PS7" else "M_AXI_HPM0_FPD")


def test_board_is_frozen_and_hashable() -> None:
    board = load_board("pynq-z2")
    assert isinstance(board, Board)
    with pytest.raises(AttributeError):
        board.part = "xc7z010clg400-1"  # type: ignore[misc]
    assert hash(board) == hash(load_board("pynq-z2"))


def test_unknown_board_lists_known_ones() -> None:
    with pytest.raises(BitloomError) as info:
        load_board("de10-nano")
    message = str(info.value)
    assert "de10-nano" in message
    for name in FACTS:
        assert name in message


def test_board_from_path(tmp_path: Path) -> None:
    path = tmp_path / "my-board.toml"
    path.write_text(GOOD)
    board = load_board(str(path))
    assert board.name == "my-board"
    assert board.pl_clocks_mhz == (100.0, 125.0)
    assert board.axi.control_base == 0x43C0_0000


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        (('family = "xc7"', 'family = "ecp5"'), "family"),
        (('ps = "PS7"', 'ps = "PS8"'), "PS7"),
        (('part = "xc7z020clg400-1"', 'part = "xc7z020clg484-1"'), "does not match"),
        (("default_clock_mhz = 100", "default_clock_mhz = 150"), "pl_clocks_mhz"),
        (("pl_clocks_mhz = [100, 125]", 'pl_clocks_mhz = ["fast"]'), "pl_clocks_mhz"),
        (("URAM = 0\n", ""), "[resources]"),
        (("DSP = 220", "DSP = -1"), "negative"),
        (("DSP = 220", 'DSP = "many"'), "resources.DSP"),
        (('title = "My board"\n', ""), "title"),
        (('data = ["S_AXI_HP0"]', "data = [0]"), "axi.data"),
        (("[axi]", "[axi"), "TOML"),
    ],
)
def test_bad_board_file(tmp_path: Path, change: tuple[str, str], complaint: str) -> None:
    old, new = change
    assert old in GOOD
    path = tmp_path / "bad.toml"
    path.write_text(GOOD.replace(old, new))
    with pytest.raises(BitloomError, match=r"bad\.toml") as info:
        load_board(str(path))
    assert complaint in str(info.value)


def test_missing_board_file(tmp_path: Path) -> None:
    with pytest.raises(BitloomError, match="does not exist"):
        load_board(str(tmp_path / "nowhere.toml"))
