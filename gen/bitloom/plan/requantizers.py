"""Each layer's requantizer: its exact threshold table, or a scale unit proven equal to it.

Why per layer and by cost: thresholds cost a comparator per output level (cheap for a few
bits, 255 per lane for 8 and 65,535 for 16), a scale unit a multiplier whose width the
exactness proof decides (:func:`bitloom.ir.fit_scale`), and a few adders. The multiplier is
DSP48s (``scale``) or fabric adders (``scale-lut``: cheap when it is a constant of few
signed digits, and what is left when the DSPs are spent). The planner prices all three with
the cost model and takes the cheapest, a DSP (a BRAM36) counting as the LUTs the board has
per DSP (per BRAM36); then, while the plan's DSPs exceed their budget, it moves the layers
that give up a DSP for the fewest LUTs to their best DSP-free requantizer.
``--requantizer [LAYER=]KIND`` fixes a layer's kind. Outputs wider than
:data:`MAX_THRESHOLD_BITS` have no threshold hardware.
"""

from __future__ import annotations

import hashlib
import os
import pickle
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from bitloom.cache import cache_root
from bitloom.errors import BitloomError
from bitloom.ir import ScaleRequant, Thresholds, fit_scale, scale_requant
from bitloom.ir.scale_requant import agrees
from bitloom.plan.cost import estimate_counts, estimate_plan, requant_counts
from bitloom.plan.memory import parse_overrides

REQUANTIZERS = ("thresholds", "scale", "scale-lut")
#: widest output a threshold table is built in hardware for (2**8 - 1 comparators a lane)
MAX_THRESHOLD_BITS = 8
#: a DSP's and a BRAM36's worth in LUTs where no board says (the xc7z020's ratios)
DEFAULT_LUTS_PER_DSP, DEFAULT_LUTS_PER_BRAM = 242.0, 380.0

_fits: dict[int, tuple[Thresholds, ScaleRequant | str]] = {}
#: tables whose fit is kept: a network's layers, not every model a DSE worker has seen
MAX_KEPT_FITS = 512


def scale_fit(th: Thresholds, acc_fmt) -> ScaleRequant | str:
    """:func:`fit_scale` of a layer's table, once per table (plans are made many times),
    and once per machine (:func:`stored_fit`)."""
    hit = _fits.get(id(th))
    if hit is None or hit[0] is not th:
        if len(_fits) >= MAX_KEPT_FITS:
            del _fits[next(iter(_fits))]  # the oldest
        hit = _fits[id(th)] = (th, stored_fit(th, acc_fmt))
    return hit[1]


def stored_fit(th: Thresholds, acc_fmt) -> ScaleRequant | str:
    """:func:`fit_scale`, kept in the user's cache under a digest of the table and of the
    fitting code. Why: a 16-bit layer's fit takes tens of seconds and every command that
    reopens a design (verify, build, synth) needs it again. A stored fit is proven again
    (:func:`~bitloom.ir.scale_requant.agrees`, a fraction of the fit's time) before use."""
    path = cache_root() / "scale-fits" / f"{fit_digest(th, acc_fmt)}.pickle"
    try:
        stored = pickle.loads(path.read_bytes())
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError):
        stored = None
    if isinstance(stored, str) or (isinstance(stored, ScaleRequant) and
                                   agrees(stored, th, acc_fmt)):
        return stored
    fit = fit_scale(th, acc_fmt)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".{os.getpid()}.tmp")
    partial.write_bytes(pickle.dumps(fit))
    partial.replace(path)  # atomic: a parallel reader sees all of it or none
    return fit


def fit_digest(th: Thresholds, acc_fmt) -> str:
    """What a fit depends on: the table, its directions and formats, and the fitting code."""
    digest = hashlib.sha256(Path(scale_requant.__file__).read_bytes())
    digest.update(repr((th.out_fmt, acc_fmt, th.table.shape)).encode())
    table = th.table
    if table.dtype == object:
        digest.update(",".join(map(str, table.ravel().tolist())).encode())
    else:
        digest.update(np.ascontiguousarray(table, dtype=np.int64).tobytes())
    digest.update(np.ascontiguousarray(th.increasing, dtype=bool).tobytes())
    return digest.hexdigest()[:32]


def parse_requantizers(specs: Sequence[str]) -> tuple[str | None, dict[str, str]]:
    """``--requantizer`` values: ``KIND`` for every layer and/or ``LAYER=KIND``."""
    return parse_overrides(specs, "--requantizer", REQUANTIZERS, "kind")


def requantizer_name(req) -> str:
    """What report.json and the tables call a layer's requantizer."""
    if isinstance(req, ScaleRequant):
        return "scale-lut" if req.lut_multiplier else "scale"
    return "thresholds" if isinstance(req, Thresholds) else "none"


def _price(req, acc_bits: int, lanes: int, rates: tuple[float, float]) -> float:
    est = estimate_counts(requant_counts(req, acc_bits, lanes))
    return est["LUT"] + rates[0] * est["DSP"] + rates[1] * est["BRAM36"]


def _dsps(req, acc_bits: int, lanes: int) -> float:
    return estimate_counts(requant_counts(req, acc_bits, lanes))["DSP"] if req else 0.0


def options(lp, want: str | None) -> list[ScaleRequant | None]:
    """The requantizers ``lp`` may take (None: its thresholds), given the kind asked for."""
    layer = lp.layer
    th = getattr(layer, "requant", None)
    if not isinstance(th, Thresholds):
        return [None]
    wide = th.out_fmt.bits > MAX_THRESHOLD_BITS
    if want == "thresholds" and not wide:
        return [None]
    fit = scale_fit(th, layer.acc_fmt)
    if isinstance(fit, str):
        if wide:
            raise BitloomError(
                f"layer {layer.name}: its {th.out_fmt.name} output needs a scale requantizer "
                f"({2 ** th.out_fmt.bits - 1} thresholds a channel are not built), and "
                f"none is exact: {fit}. Quantize its output to {MAX_THRESHOLD_BITS} bits "
                "or fewer.")
        if want is not None:
            raise BitloomError(f"layer {layer.name}: --requantizer {want}: no scale "
                               f"requantizer is exact here ({fit}); use thresholds.")
        return [None]
    fabric = replace(fit, lut_multiplier=True)
    if want is not None:
        return [fabric if want == "scale-lut" else fit]
    return [fit, fabric] + ([] if wide else [None])


def cheapest(lp, candidates: list, rates: tuple[float, float]):
    """The candidate of least price (a layer's thresholds when it is None)."""
    if len(candidates) == 1:
        return candidates[0]
    acc_bits, lanes = lp.layer.acc_fmt.bits, lp.fold.pe
    return min(candidates, key=lambda req: _price(req or lp.layer.requant, acc_bits, lanes,
                                                  rates))


def choose(lp, default: str | None, per_layer: dict[str, str],
           rates: tuple[float, float] = (DEFAULT_LUTS_PER_DSP, DEFAULT_LUTS_PER_BRAM)
           ) -> ScaleRequant | None:
    """The scale unit a planned layer uses instead of its thresholds, or None."""
    return cheapest(lp, options(lp, per_layer.get(lp.layer.name, default)), rates)


def within_dsps(plan, budget: float, free: set[str], rates: tuple[float, float]) -> None:
    """While ``plan``'s DSPs exceed ``budget``, move the layer in ``free`` that gives up its
    scale unit's DSPs for the fewest LUTs (per DSP) to its cheapest DSP-free requantizer.
    A layer's move does not change another's price, so the moves are ranked once."""
    over = estimate_plan(plan).get("DSP", 0.0) - budget
    if over <= 0:
        return
    no_dsp = (1e9, rates[1])  # a DSP priced out of reach
    moves = []
    for lp in plan.layers:
        if lp.scale is None or lp.layer.name not in free:
            continue
        acc_bits, lanes = lp.layer.acc_fmt.bits, lp.fold.pe
        used = _dsps(lp.scale, acc_bits, lanes)
        other = cheapest(lp, options(lp, None), no_dsp)
        saved = used - _dsps(other, acc_bits, lanes)
        if used <= 0 or saved <= 0:
            continue
        extra = _price(other or lp.layer.requant, acc_bits, lanes, (0.0, rates[1])) - \
            _price(lp.scale, acc_bits, lanes, (0.0, rates[1]))
        moves.append((extra / used, lp.layer.name, lp, other, saved))
    for _, _, lp, other, saved in sorted(moves, key=lambda m: m[:2]):
        if over <= 0:
            return
        lp.scale = other
        over -= saved


def with_requantizers(plan, specs: Sequence[str] = (), board=None,
                      dsp_budget: float | None = None):
    """``plan`` with each layer's requantizer chosen (see the module docstring), DSPs and
    block RAM priced at ``board``'s ratios to its LUTs, and the plan's DSPs brought within
    ``dsp_budget`` where the layers left to the cost can give them up."""
    default, per_layer = parse_requantizers(specs)
    names = {lp.layer.name for lp in plan.layers}
    unknown = sorted(set(per_layer) - names)
    if unknown:
        raise BitloomError(f"--requantizer names no layer {', '.join(unknown)}; the layers "
                           f"are {', '.join(sorted(names))}.")
    res = board.resources if board is not None else {}
    rates = (res["LUT"] / res["DSP"] if res.get("DSP") else DEFAULT_LUTS_PER_DSP,
             res["LUT"] / res["BRAM36"] if res.get("BRAM36") else DEFAULT_LUTS_PER_BRAM)
    for lp in plan.layers:
        lp.scale = choose(lp, default, per_layer, rates)
    if dsp_budget is not None and default is None:
        within_dsps(plan, dsp_budget, names - set(per_layer), rates)
    return plan


def restore_requantizers(plan, kinds: Sequence[str | None]):
    """``plan`` with the requantizers a report.json recorded (``scale`` where it says so)."""
    for lp, kind in zip(plan.layers, kinds, strict=True):
        if kind in ("scale", "scale-lut"):
            lp.scale = choose(lp, kind, {})
    return plan
