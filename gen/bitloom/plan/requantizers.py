"""Each layer's requantizer: its exact threshold table, or a scale unit proven equal to it.

Why per layer and by cost: thresholds cost a comparator per output level (cheap for a few
bits, 255 per lane for 8 and 65,535 for 16), a scale unit a multiplier (DSP48s) whose width
the exactness proof decides (:func:`bitloom.ir.fit_scale`), and a few adders. The planner
prices both with the cost model and takes the cheaper, a DSP (a BRAM36) counting as the
LUTs the board has per DSP (per BRAM36), unless ``--requantizer [LAYER=]thresholds|scale``
says otherwise. Outputs wider than :data:`MAX_THRESHOLD_BITS` have no threshold hardware.
"""

from __future__ import annotations

from collections.abc import Sequence

from bitloom.errors import BitloomError
from bitloom.ir import ScaleRequant, Thresholds, fit_scale
from bitloom.plan.cost import estimate_counts, requant_counts
from bitloom.plan.memory import parse_overrides

REQUANTIZERS = ("thresholds", "scale")
#: widest output a threshold table is built in hardware for (2**8 - 1 comparators a lane)
MAX_THRESHOLD_BITS = 8
#: a DSP's and a BRAM36's worth in LUTs where no board says (the xc7z020's ratios)
DEFAULT_LUTS_PER_DSP, DEFAULT_LUTS_PER_BRAM = 242.0, 380.0

_fits: dict[int, tuple[Thresholds, ScaleRequant | str]] = {}


def scale_fit(th: Thresholds, acc_fmt) -> ScaleRequant | str:
    """:func:`fit_scale` of a layer's table, once per table (plans are made many times)."""
    hit = _fits.get(id(th))
    if hit is None or hit[0] is not th:
        hit = _fits[id(th)] = (th, fit_scale(th, acc_fmt))
    return hit[1]


def parse_requantizers(specs: Sequence[str]) -> tuple[str | None, dict[str, str]]:
    """``--requantizer`` values: ``KIND`` for every layer and/or ``LAYER=KIND``."""
    return parse_overrides(specs, "--requantizer", REQUANTIZERS, "kind")


def requantizer_name(req) -> str:
    """What report.json and the tables call a layer's requantizer."""
    if isinstance(req, ScaleRequant):
        return "scale"
    return "thresholds" if isinstance(req, Thresholds) else "none"


def _price(req, acc_bits: int, lanes: int, rates: tuple[float, float]) -> float:
    est = estimate_counts(requant_counts(req, acc_bits, lanes))
    return est["LUT"] + rates[0] * est["DSP"] + rates[1] * est["BRAM36"]


def choose(lp, default: str | None, per_layer: dict[str, str],
           rates: tuple[float, float] = (DEFAULT_LUTS_PER_DSP, DEFAULT_LUTS_PER_BRAM)
           ) -> ScaleRequant | None:
    """The scale unit a planned layer uses instead of its thresholds, or None."""
    layer = lp.layer
    th = getattr(layer, "requant", None)
    if not isinstance(th, Thresholds):
        return None
    want = per_layer.get(layer.name, default)
    wide = th.out_fmt.bits > MAX_THRESHOLD_BITS
    if want == "thresholds" and not wide:
        return None
    fit = scale_fit(th, layer.acc_fmt)
    if isinstance(fit, str):
        if wide:
            raise BitloomError(
                f"layer {layer.name}: its {th.out_fmt.name} output needs a scale requantizer "
                f"({2 ** th.out_fmt.bits - 1} thresholds a channel are not built), and "
                f"none is exact: {fit}. Quantize its output to {MAX_THRESHOLD_BITS} bits "
                "or fewer.")
        if want == "scale":
            raise BitloomError(f"layer {layer.name}: --requantizer scale: no scale "
                               f"requantizer is exact here ({fit}); use thresholds.")
        return None
    if want == "scale" or wide:
        return fit
    acc_bits, lanes = layer.acc_fmt.bits, lp.fold.pe
    cheaper = _price(fit, acc_bits, lanes, rates) < _price(th, acc_bits, lanes, rates)
    return fit if cheaper else None


def with_requantizers(plan, specs: Sequence[str] = (), board=None):
    """``plan`` with each layer's requantizer chosen (see the module docstring), DSPs and
    block RAM priced at ``board``'s ratios to its LUTs."""
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
    return plan


def restore_requantizers(plan, kinds: Sequence[str | None]):
    """``plan`` with the requantizers a report.json recorded (``scale`` where it says so)."""
    for lp, kind in zip(plan.layers, kinds, strict=True):
        if kind == "scale":
            lp.scale = choose(lp, "scale", {})
    return plan
