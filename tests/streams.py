"""The one stream driver of the Amaranth-simulator tests: every input port fed with random
gaps on valid, every output port drained with random ready, so back-pressure reaches every
handshake a unit has."""

from __future__ import annotations

import random

from amaranth.sim import Simulator


def producer(port, beats: list[int], pause: float = 0.0, rng: random.Random | None = None):
    """A testbench offering ``beats`` on ``port``, idling before each with probability
    ``pause`` drawn from ``rng`` (no pause: one beat per cycle while ``ready``)."""
    async def run(ctx):
        for beat in beats:
            while pause and rng.random() < pause:
                await ctx.tick()
            ctx.set(port.payload, beat)
            ctx.set(port.valid, 1)
            while not (await ctx.tick().sample(port.ready))[2]:
                pass
            ctx.set(port.valid, 0)
    return run


def simulate(dut, inputs: dict[str, list[int]], outputs: dict[str, int], seed: int,
             pause: float = 0.3, max_cycles: int = 30_000) -> dict[str, list[tuple[int, int]]]:
    """Drive the input ports with random gaps, drain the outputs with random ready; returns
    per output port its ``(cycle, beat)`` transfers (stops at the expected counts)."""
    received: dict[str, list[tuple[int, int]]] = {name: [] for name in outputs}

    def consumer(port, rng: random.Random):
        async def run(ctx):
            while True:
                ctx.set(port.ready, rng.random() >= pause)
                await ctx.tick()
        return run

    def monitor(name: str, port, count: int):
        async def run(ctx):
            cycle = 0
            async for _, _, valid, ready, payload in ctx.tick().sample(
                    port.valid, port.ready, port.payload):
                if valid and ready:
                    received[name].append((cycle, payload))
                cycle += 1
                if len(received[name]) >= count or cycle >= max_cycles:
                    return
        return run

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    for n, (name, beats) in enumerate(inputs.items()):
        sim.add_testbench(producer(getattr(dut, name), beats, pause, random.Random(seed + n)),
                          background=True)
    for n, (name, count) in enumerate(outputs.items()):
        port = getattr(dut, name)
        sim.add_testbench(consumer(port, random.Random(seed + 100 + n)), background=True)
        sim.add_testbench(monitor(name, port, count))
    sim.run()
    for name, count in outputs.items():
        assert len(received[name]) == count, f"{name}: {len(received[name])} of {count} beats"
    return received


def beats(transfers: list[tuple[int, int]]) -> list[int]:
    """The payloads of ``(cycle, beat)`` transfers."""
    return [b for _, b in transfers]
