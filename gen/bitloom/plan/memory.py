"""Choosing where each layer's weights live: LUTRAM, block RAM, or streamed from the host.

Small memories (at most :data:`LUTRAM_MAX_DEPTH` words or :data:`LUTRAM_MAX_BITS` bits) cost
a few LUTs. The others go to block RAM while the board's budget lasts, those that fill their
tiles best first (a shallow, wide memory wastes most of each tile); when block RAM runs out,
to ROMs built of LUTs while the LUT budget lasts, the cheapest first; what still does not
fit is streamed: the weights then come in on an extra AXI4-Stream input of the accelerator,
one word per step, from the host's DDR, and cost no memory. A user may force a style for
every layer or for named layers.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from bitloom.errors import BitloomError
from bitloom.ir import AnyLayer, MatrixVector, Network, Window
from bitloom.plan.fold import Folding
from bitloom.plan.registry import kind_of

#: LUTs of a ``(depth, width)`` ROM built as logic, as the cost model prices it
RomCost = Callable[[int, int], float]

LUTRAM, BRAM, STREAMED = "lutram", "bram", "streamed"
STYLES = (LUTRAM, BRAM, STREAMED)
LUTRAM_MAX_DEPTH = 64
LUTRAM_MAX_BITS = 4096
#: (depth, width) of one RAMB18's aspect ratios (simple dual port up to 36 bits wide)
RAMB18_SHAPES = ((16384, 1), (8192, 2), (4096, 4), (2048, 9), (1024, 18), (512, 36))


@dataclass(frozen=True)
class WeightMemory:
    """One layer's weight memory: ``depth`` words of ``width`` bits, held as ``style``."""

    style: str
    depth: int
    width: int
    passes: int  # times the words are read per frame (output pixels of a convolution)

    @property
    def bits(self) -> int:
        return self.depth * self.width

    @property
    def bram36(self) -> float:
        return bram36_tiles(self.depth, self.width) if self.style == BRAM else 0.0

    def as_dict(self) -> dict:
        return {"style": self.style, "depth": self.depth, "width": self.width,
                "bits": self.bits, "bram36": self.bram36, "passes_per_frame": self.passes}


def bram36_tiles(depth: int, width: int) -> float:
    """Block RAM tiles (RAMB36 = two RAMB18) of a ``depth`` x ``width`` memory: the fewest
    RAMB18s of one aspect ratio that tile it, counted as halves (a RAMB36's own shapes,
    up to 512 x 72, are two RAMB18s side by side or stacked, so they never need fewer)."""
    halves = min(math.ceil(width / w) * math.ceil(depth / d) for d, w in RAMB18_SHAPES)
    return halves / 2


class WeightGeometry(NamedTuple):
    """A weight memory's shape, as the unit reads it and the planner prices it."""

    depth: int  # words: one per step of the unit
    width: int  # bits of a word: the weights of one step
    passes: int  # reads of all words per frame (output pixels of a windowed layer)


def matrix_weight_geometry(layer: MatrixVector, fold: Folding) -> WeightGeometry:
    """A matrix-vector unit's: ``PE x SIMD`` weights per step, ``SF x NF`` steps, again for
    every output pixel."""
    steps = (layer.in_features // fold.simd) * (layer.out_features // fold.pe)
    return WeightGeometry(steps, fold.pe * fold.simd * layer.w_fmt.bits, layer.pixels)


def tap_weight_geometry(window: Window, channels: int, lanes: int, bits: int) -> WeightGeometry:
    """A per-channel tap reducer's (depthwise): ``lanes`` weights of ``bits`` per step, one
    step per (tap, channel chunk), again for every output pixel."""
    return WeightGeometry(window.size * channels // lanes, lanes * bits,
                          math.prod(window.out_hw))


def weight_geometry(layer: AnyLayer, fold: Folding) -> tuple[int, int, int] | None:
    """``(depth, width, passes)`` of a layer's weight memory, or None if it has no weights."""
    return kind_of(layer).weight_geometry(layer, fold)


def parse_overrides(specs: Sequence[str], option: str = "--weights-memory",
                    choices: Sequence[str] = STYLES,
                    noun: str = "style") -> tuple[str | None, dict[str, str]]:
    """Per-layer option values (``--weights-memory`` by default): ``VALUE`` (every layer)
    and/or ``LAYER=VALUE``, each one of ``choices``."""
    default, per_layer = None, {}
    for spec in specs:
        name, _, style = spec.rpartition("=")
        if style not in choices:
            raise BitloomError(f"{option} {spec!r}: unknown {noun} {style!r}; choose one of "
                               f"{', '.join(choices)} (optionally LAYER={noun.upper()}).")
        if name:
            per_layer[name] = style
        else:
            default = style
    return default, per_layer


def choose_memories(net: Network, folds: Sequence[Folding], bram36_budget: float | None = None,
                    styles: Sequence[str | None] | dict[str, str] | None = None,
                    default: str | None = None, rom_lut_budget: float = 0.0,
                    rom_cost: RomCost | None = None) -> list[WeightMemory | None]:
    """Per layer, its weight memory (None for a layer without weights).

    ``styles`` forces a style per layer (a list in layer order, or a dict by layer name),
    ``default`` for every other weight layer; the rest are chosen automatically within
    ``bram36_budget`` tiles (no limit if None), then as ROMs of LUTs within
    ``rom_lut_budget`` LUTs, as ``rom_cost(depth, width)`` prices them (none without it).
    """
    names = [ly.name for ly in net.layers]
    if isinstance(styles, dict):
        for name, style in styles.items():
            if name not in names:
                raise BitloomError(f"--weights-memory {name}={style}: no layer {name!r}; the "
                                   f"layers are {', '.join(names)}.")
            if weight_geometry(net.layers[names.index(name)], Folding(1, 1)) is None:
                raise BitloomError(f"--weights-memory {name}={style}: layer {name} has no "
                                   "weights.")
        styles = [styles.get(name) for name in names]
    styles = list(styles or [None] * len(names))
    geometry = [weight_geometry(ly, f) for ly, f in zip(net.layers, folds, strict=True)]
    chosen: list[str | None] = []
    for ly, geo, style in zip(net.layers, geometry, styles, strict=True):
        style = style or default
        if style is not None and style not in STYLES:
            raise BitloomError(f"{ly.name}: unknown weight memory style {style!r}; choose one "
                               f"of {', '.join(STYLES)}.")
        if geo is None:
            style = None
        elif style is None and (geo[0] <= LUTRAM_MAX_DEPTH or geo[0] * geo[1] <= LUTRAM_MAX_BITS):
            style = LUTRAM
        chosen.append(style)
    used = sum(bram36_tiles(g[0], g[1]) for g, s in zip(geometry, chosen, strict=True)
               if s == BRAM)
    open_ = [i for i, (g, s) in enumerate(zip(geometry, chosen, strict=True))
             if g is not None and s is None]
    for i in sorted(open_, key=lambda i: (-bram36_fill(*geometry[i][:2]), geometry[i][:2])):
        tiles = bram36_tiles(*geometry[i][:2])
        if bram36_budget is None or used + tiles <= bram36_budget:
            chosen[i], used = BRAM, used + tiles
    luts = 0.0
    for i in sorted((i for i in open_ if chosen[i] is None),
                    key=lambda i: (geometry[i][0] * geometry[i][1], geometry[i][:2])):
        cost = math.inf if rom_cost is None else rom_cost(*geometry[i][:2])
        if luts + cost <= rom_lut_budget:
            chosen[i], luts = LUTRAM, luts + cost
        else:
            chosen[i] = STREAMED
    return [None if s is None else WeightMemory(s, *g)  # type: ignore[misc]
            for g, s in zip(geometry, chosen, strict=True)]


def bram36_fill(depth: int, width: int) -> float:
    """The share of its block RAM tiles' bits a ``depth`` x ``width`` memory uses."""
    return depth * width / (bram36_tiles(depth, width) * 36 * 1024)


def with_memories(plan, bram36_budget: float | None = None,
                  styles: Sequence[str | None] | dict[str, str] | None = None,
                  default: str | None = None, rom_lut_budget: float = 0.0,
                  rom_cost: RomCost | None = None):
    """``plan`` with its weight memories chosen again (see :func:`choose_memories`)."""
    from dataclasses import replace

    folds = [lp.fold for lp in plan.layers]
    memories = choose_memories(plan.net, folds, bram36_budget, styles, default, rom_lut_budget,
                               rom_cost)
    layers = [replace(lp, memory=mem) for lp, mem in zip(plan.layers, memories, strict=True)]
    return replace(plan, layers=layers)
