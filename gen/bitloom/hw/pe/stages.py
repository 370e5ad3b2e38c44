"""Pipeline registers inside a dot product, placed by level.

A dot product is a stack of levels: level 0 is the products (the multipliers' outputs), level
``j`` the ``j``-th row of adders. :class:`Stages` registers the values leaving the levels it
was asked for, so one description serves both the combinational unit (no module, no levels)
and any pipeline depth; the unit first counts the levels, then spreads the registers evenly.
"""

from __future__ import annotations

from collections.abc import Iterable

from amaranth import Const, Module, Mux, Signal
from amaranth.hdl import Value


class Stages:
    """Registers after the given levels (in ``m.d.sync``, advancing while ``en`` is high,
    as a unit's whole pipeline stalls together); records how deep the datapath is."""

    def __init__(self, m: Module | None = None, levels: Iterable[int] = (),
                 en: Value | None = None) -> None:
        self.m, self.en = m, en
        self.levels = frozenset(levels)
        if self.levels and m is None:
            raise ValueError("pipeline registers need a module")
        self.deepest = 0

    def at(self, level: int, values: list[Value | int], keep: bool = False
           ) -> list[Value | int]:
        """``values`` leaving ``level``: registered there if asked, passed through otherwise
        (constants always pass: they have no timing to keep in step).

        ``keep`` puts unregistered values on wires Yosys must keep (when there is a module):
        its ``alumacc`` pass would otherwise merge a whole adder tree into one ``$macc``,
        which ``synth_xilinx`` maps to a carry-save tree of LUT full adders; kept wires leave
        one carry-chain adder per sum, about one LUT per result bit.
        """
        self.deepest = max(self.deepest, level)
        if level in self.levels:
            return [v if isinstance(v, int | Const) else self.register(level, v)
                    for v in values]
        if keep and self.m is not None:
            return [v if isinstance(v, int | Const) else self.wire(level, v) for v in values]
        return values

    def share(self, value: Value, name: str) -> Value:
        """``value`` on a plain wire (when there is a module), for a value read several times:
        Amaranth copies an expression into every place that uses it, so a packed sum cut
        into fields would be emitted, multipliers and all, once per field. Nothing is kept,
        unlike :meth:`wire`: Yosys sees the same logic."""
        if self.m is None or isinstance(value, Const | Signal):
            return value
        shared = Signal(value.shape(), name=name)
        self.m.d.comb += shared.eq(value)
        return shared

    def register(self, level: int, value: Value) -> Signal:
        reg = Signal(value.shape(), name=f"stage{level}")
        self.m.d.sync += reg.eq(value if self.en is None else Mux(self.en, value, reg))
        return reg

    def wire(self, level: int, value: Value) -> Signal:
        kept = Signal(value.shape(), name=f"sum{level}", attrs={"keep": 1})
        self.m.d.comb += kept.eq(value)
        return kept


def spread(depth: int, levels: int) -> list[int]:
    """``depth`` of the levels ``0..levels-1``, evenly apart (the products' level first).

    Even spacing balances the logic between registers (at most one register per level).
    """
    if depth < 0:
        raise ValueError(f"pipeline depth must be >= 0, got {depth}")
    if depth > levels:
        raise ValueError(f"a dot product of {levels} levels takes at most {levels} registers")
    return sorted({(i * levels) // depth for i in range(depth)}) if depth else []
