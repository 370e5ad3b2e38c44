"""Run a combinational component on many input vectors in the Amaranth simulator, fast.

Python-level ``ctx.set``/``ctx.get`` dominate a simulator testbench, so ``copies`` instances
sit side by side behind one wide signal per port: each step feeds ``copies`` cases at once.
Exhaustive and 10**5-vector tests stay within seconds this way.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from amaranth import Cat, Module, Signal, Value
from amaranth.lib import wiring
from amaranth.sim import Simulator

from bitloom.formats.bits import pack, unpack


def simulate(make: Callable[[], wiring.Component], inputs: dict[str, Sequence[int]],
             outputs: Sequence[str], copies: int = 64, latency: int = 0) -> dict[str, list[int]]:
    """Raw (unsigned) output port values for each case of raw input port values, read
    ``latency`` clock cycles after the inputs are applied (a pipelined unit)."""
    cases = len(next(iter(inputs.values())))
    copies = max(1, min(copies, cases))
    m = Module()
    units = [make() for _ in range(copies)]
    wide_in, wide_out, widths = {}, {}, {}
    for name in inputs:
        widths[name] = len(Value.cast(getattr(units[0], name)))
        wide_in[name] = Signal(widths[name] * copies, name=f"in_{name}")
    for name in outputs:
        widths[name] = len(Value.cast(getattr(units[0], name)))
        wide_out[name] = Signal(widths[name] * copies, name=f"out_{name}")
    for i, unit in enumerate(units):
        m.submodules[f"unit{i}"] = unit
        for name, sig in wide_in.items():
            m.d.comb += Value.cast(getattr(unit, name)).eq(sig.word_select(i, widths[name]))
    for name, sig in wide_out.items():
        m.d.comb += sig.eq(Cat(*[Value.cast(getattr(u, name)) for u in units]))
    results: dict[str, list[int]] = {name: [] for name in outputs}

    async def bench(ctx) -> None:
        for start in range(0, cases, copies):
            stop = min(start + copies, cases)
            for name, sig in wide_in.items():
                ctx.set(sig, pack(inputs[name][start:stop], widths[name]))
            for _ in range(latency):
                await ctx.tick()
            for name, sig in wide_out.items():
                results[name] += unpack(ctx.get(sig), widths[name], stop - start)

    sim = Simulator(m)
    if latency:
        sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return results
