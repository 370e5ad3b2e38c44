"""Weight memories: where a layer's weights live, and the checks that none is truncated.

Three styles, chosen per layer by :mod:`bitloom.plan.memory`:

- ``lutram``: a ROM in distributed logic (LUTs), for small memories;
- ``bram``: a ROM in block RAM;
- ``streamed``: no memory; the words arrive on the unit's ``w`` stream in step order, one
  per step, again for every pass (FINN's "external" weights), fed by the host's DMA.

A ROM carries Verilog attributes for its style (:data:`ROM_ATTRS`) and :data:`INIT_ATTR`
naming its init file; the emitter replaces the inline contents by ``$readmemh`` of that file
(see :mod:`bitloom.emit.design`).
"""

from __future__ import annotations

import re

import numpy as np
from amaranth import Module, Signal, unsigned
from amaranth.hdl import Value
from amaranth.lib import memory

from bitloom.errors import BitloomError
from bitloom.formats import Format
from bitloom.plan.memory import BRAM, LUTRAM, STREAMED, STYLES

#: Verilog attributes per ROM style. ``rom_style`` is what Vivado reads for a ROM. Yosys
#: reads ``ram_style`` first, and has no distributed mapping for a ROM (it stops with "no
#: valid mapping" on ``rom_style = "distributed"``): its LUT ROM is ``"logic"``.
ROM_ATTRS = {LUTRAM: {"rom_style": "distributed", "ram_style": "logic"},
             BRAM: {"rom_style": "block", "ram_style": "block"}}
#: attribute naming a ROM's init file, relative to the ``rtl`` folder
INIT_ATTR = "bitloom_init"


def init_file(layer: str) -> str:
    """The init file of a layer's weights, relative to the ``rtl`` folder."""
    return f"weights/{re.sub(r'[^A-Za-z0-9_.-]', '_', layer)}.mem"


def weight_codes(layer: str, weights: np.ndarray, w_fmt: Format) -> np.ndarray:
    """The codes of ``weights`` (grid integers) in ``w_fmt``; a weight the format does not
    hold is an error naming the layer and the weight, never a wrapped code."""
    values = np.asarray(weights)
    try:
        codes = w_fmt.encode(w_fmt.from_grid(values))
        bad = (w_fmt.to_grid(w_fmt.decode(codes)) != values) | (codes < 0) | \
            (codes >= 1 << w_fmt.bits)
    except ValueError:  # the format rejects a weight on its own: find the first
        bad = ~np.vectorize(lambda v: _fits(v, w_fmt), otypes=[bool])(values)
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        raise BitloomError(
            f"{layer}: weight {w_fmt.from_grid(values[where])} at index {where} does not fit "
            f"its {w_fmt.bits}-bit weight format {w_fmt.name}; it would be truncated in the "
            "weight memory.")
    return codes


def _fits(value: float, w_fmt: Format) -> bool:
    try:
        code = w_fmt.encode(w_fmt.from_grid(np.array([value])))
        return bool(w_fmt.to_grid(w_fmt.decode(code))[0] == value)
    except ValueError:
        return False


def pack_rows(layer: str, codes: np.ndarray, bits: int) -> list[int]:
    """Each row of ``codes`` (``(rows, fields)``) packed into one word, ``bits`` per code,
    field 0 lowest (:func:`~bitloom.formats.bits.pack`'s layout); a code wider than
    ``bits`` is an error, not a silent mask.

    Vectorized: a large layer has millions of codes, which a loop per code would take
    seconds to pack."""
    codes = np.asarray(codes, dtype=np.int64)
    bad = (codes < 0) | (codes >= 1 << bits)
    if bad.any():
        raise BitloomError(f"{layer}: weight code {codes[bad][0]} does not fit {bits} bits.")
    rows = codes.shape[0]
    fields = (codes.reshape(rows, -1, 1) >> np.arange(bits)) & 1  # [row, field, bit]
    octets = np.packbits(fields.astype(np.uint8).reshape(rows, -1), axis=1,
                         bitorder="little")
    return [int.from_bytes(row.tobytes(), "little") for row in octets]


def unpack_rows(words: list[int], bits: int, count: int) -> np.ndarray:
    """The inverse of :func:`pack_rows`: ``(len(words), count)`` unsigned codes."""
    octets, mask = (count * bits + 7) // 8, (1 << count * bits) - 1
    raw = np.frombuffer(b"".join((w & mask).to_bytes(octets, "little") for w in words),
                        dtype=np.uint8).reshape(len(words), octets)
    fields = np.unpackbits(raw, axis=1, count=count * bits, bitorder="little")
    weights = np.int64(1) << np.arange(bits, dtype=np.int64)
    return fields.reshape(len(words), count, bits).astype(np.int64) @ weights


def weight_source(m: Module, name: str, unit, words: list[int], step: Value, en: Value,
                  issue: Value) -> Value:
    """The weight word of the step issued in the previous enabled cycle (the pipeline's
    stage after issue), from ``unit``'s ROM or its ``w`` stream.

    ``name`` is the layer's; ``unit`` has ``style``, ``weight_bits``, ``steps`` and
    (streamed) the ``w`` port;
    ``step`` is the ROM address, ``issue`` the cycle a step is issued (takes a streamed word).
    """
    if len(words) != unit.steps:
        raise BitloomError(f"{name}: {len(words)} weight words for "
                           f"{unit.steps} steps.")
    if unit.style == STREAMED:
        word = Signal(unit.weight_bits)
        m.d.comb += unit.w.ready.eq(issue)
        with m.If(en):
            m.d.sync += word.eq(unit.w.payload)
        return word
    if unit.style not in ROM_ATTRS:
        raise BitloomError(f"{name}: unknown weight memory style {unit.style!r}; "
                           f"choose one of {', '.join(STYLES)}.")
    if any(not 0 <= w < 1 << unit.weight_bits for w in words):
        raise BitloomError(f"{name}: a weight word does not fit "
                           f"{unit.weight_bits} bits.")
    m.submodules.weights = rom = memory.Memory(
        shape=unsigned(unit.weight_bits), depth=unit.steps, init=words,
        attrs={**ROM_ATTRS[unit.style], INIT_ATTR: init_file(name)})
    rd = rom.read_port()
    m.d.comb += [rd.addr.eq(step), rd.en.eq(en)]
    return rd.data
