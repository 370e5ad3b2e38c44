"""Number formats: values, encodings and the exact grids hardware accumulates on.

Families: :class:`Int` (incl. bipolar and ternary), :class:`Fixed`, :class:`Minifloat` (IEEE-like,
OCP fn/fnuz, QONNX FloatQuant, E8M0) and :class:`Block` (OCP MX, ONNX blocked Q/DQ). Named
formats and the name grammar: :func:`parse_format`, tabulated in ``docs/formats.md``.
"""

from bitloom.formats.base import (
    Format,
    Grid,
    accumulator_format,
    accumulator_grid,
    integer_width,
)
from bitloom.formats.block import E8M0, Block
from bitloom.formats.fixed import Fixed
from bitloom.formats.integer import OVERFLOW_MODES, TERNARY, Int
from bitloom.formats.minifloat import SPECIALS, Minifloat, float_quant_format
from bitloom.formats.names import NAMED, parse_format
from bitloom.formats.rounding import ROUNDING_MODES, normalize_rounding, round_exact, round_with

__all__ = [
    "E8M0",
    "NAMED",
    "OVERFLOW_MODES",
    "ROUNDING_MODES",
    "SPECIALS",
    "TERNARY",
    "Block",
    "Fixed",
    "Format",
    "Grid",
    "Int",
    "Minifloat",
    "accumulator_format",
    "accumulator_grid",
    "float_quant_format",
    "integer_width",
    "normalize_rounding",
    "parse_format",
    "round_exact",
    "round_with",
]
