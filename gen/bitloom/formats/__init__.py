"""Number formats: values, encodings and the exact grids hardware accumulates on."""

from bitloom.formats.base import Format, Grid, accumulator_format, integer_width
from bitloom.formats.integer import Int
from bitloom.formats.rounding import ROUNDING_MODES, normalize_rounding, round_exact, round_with

__all__ = [
    "ROUNDING_MODES",
    "Format",
    "Grid",
    "Int",
    "accumulator_format",
    "integer_width",
    "normalize_rounding",
    "parse_format",
    "round_exact",
    "round_with",
]


def parse_format(name: str) -> Format:
    """Format from its short name: ``int4``, ``uint8``, ``int8n`` (narrow), ``bipolar``."""
    import re

    n = name.strip().lower()
    if n == "bipolar":
        return Int(1, signed=True)
    m = re.fullmatch(r"(u?)int(\d+)(n?)", n)
    if m and 1 <= int(m.group(2)) <= 16:
        return Int(int(m.group(2)), signed=not m.group(1), narrow=bool(m.group(3)))
    raise ValueError(f"unknown format {name!r}; examples: int4, uint8, int8n, bipolar")
