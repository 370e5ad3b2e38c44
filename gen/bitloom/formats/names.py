"""Format names: the table of named formats and the grammar of spelled ones.

The table and the grammar are documented (one table) in ``docs/formats.md``. Every format's
``name`` parses back to an equal format: named formats print their table name, the rest
print their spelling.
"""

from __future__ import annotations

import re

from bitloom.formats.base import Format
from bitloom.formats.block import E8M0, Block
from bitloom.formats.fixed import Fixed
from bitloom.formats.integer import TERNARY, Int
from bitloom.formats.minifloat import SPECIALS, Minifloat


def _ml(exp_bits: int, man_bits: int, specials: str, bias: int | None = None) -> Minifloat:
    """An ml_dtypes type: quantize behaves like its cast (non-saturating)."""
    return Minifloat(exp_bits, man_bits, bias, specials=specials, saturating=False)


# Element formats of OCP MX: the OFP8 encodings, saturating as MX conversion does.
_MX_E4M3 = Minifloat(4, 3, specials="fn")
_MX_E5M2 = Minifloat(5, 2, specials="ieee")

NAMED: dict[str, Format] = {
    "bipolar": Int(1, signed=True),
    "ternary": TERNARY,
    # ml_dtypes spellings
    "float8_e4m3fn": _ml(4, 3, "fn"),
    "float8_e4m3fnuz": _ml(4, 3, "fnuz", bias=8),
    "float8_e5m2": _ml(5, 2, "ieee"),
    "float8_e5m2fnuz": _ml(5, 2, "fnuz", bias=16),
    "float8_e4m3": _ml(4, 3, "ieee"),
    "float8_e3m4": _ml(3, 4, "ieee"),
    "float8_e4m3b11fnuz": _ml(4, 3, "fnuz", bias=11),
    "float6_e3m2fn": Minifloat(3, 2),
    "float6_e2m3fn": Minifloat(2, 3),
    "float4_e2m1fn": Minifloat(2, 1),
    "float8_e8m0fnu": E8M0,
    "bfloat16": _ml(8, 7, "ieee"),
    "float16": _ml(5, 10, "ieee"),
    "float32": _ml(8, 23, "ieee"),
    # OCP MX
    "mxfp8_e4m3": Block(_MX_E4M3),
    "mxfp8_e5m2": Block(_MX_E5M2),
    "mxfp6_e3m2": Block(Minifloat(3, 2)),
    "mxfp6_e2m3": Block(Minifloat(2, 3)),
    "mxfp4": Block(Minifloat(2, 1)),
    "mxint8": Block(Fixed(8, 6, narrow=True)),
}

_BY_FORMAT = {fmt: name for name, fmt in reversed(NAMED.items())}


def canonical_name(fmt: Format) -> str | None:
    """The table name of ``fmt``, or None when it has none."""
    return _BY_FORMAT.get(fmt)


_MODIFIER = re.compile(r"b(-?\d+)|(" + "|".join(SPECIALS) + r")|(nosub)|(nosat)|max(.+)")


def _minifloat(signed: str, e: str, m: str, modifiers: str) -> Minifloat:
    kw: dict = {"signed": not signed}
    for mod in filter(None, modifiers.split("_")):
        hit = _MODIFIER.fullmatch(mod)
        if hit is None:
            raise ValueError(f"unknown minifloat modifier {mod!r}")
        bias, specials, nosub, nosat, max_val = hit.groups()
        if bias is not None:
            kw["bias"] = int(bias)
        if specials:
            kw["specials"] = specials
        if nosub:
            kw["subnormals"] = False
        if nosat:
            kw["saturating"] = False
        if max_val is not None:
            kw["max_val"] = float(max_val)
    return Minifloat(int(e), int(m), **kw)


def parse_format(name: str) -> Format:
    """Format from its name: a table name, ``int4``/``uint8``/``int8n``, ``fixed8.4``,
    ``ufixed8.8``, ``e3m2`` (with ``_``-modifiers) or a block ``ELEMENT@SIZE:SCALE``."""
    n = name.strip().lower()
    if n in NAMED:
        return NAMED[n]
    if m := re.fullmatch(r"(.+)@(\d+):(.+)", n):
        return Block(parse_format(m.group(1)), int(m.group(2)), parse_format(m.group(3)))
    if (m := re.fullmatch(r"(u?)int(\d+)(n?)", n)) and 1 <= int(m.group(2)) <= 16:
        return Int(int(m.group(2)), signed=not m.group(1), narrow=bool(m.group(3)))
    if m := re.fullmatch(r"(u?)fixed(\d+)\.(-?\d+)(n?)", n):
        return Fixed(int(m.group(2)), int(m.group(3)), not m.group(1), bool(m.group(4)))
    if m := re.fullmatch(r"(u?)e(\d+)m(\d+)((?:_[a-z0-9.+-]+)*)", n):
        return _minifloat(*m.groups())
    raise ValueError(
        f"unknown format {name!r}; examples: int4, uint8, int8n, bipolar, ternary, fixed8.4, "
        "e4m3_fn, float8_e4m3fn, mxfp4 (see docs/formats.md)"
    )
