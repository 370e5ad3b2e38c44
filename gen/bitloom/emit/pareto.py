"""The design-space search's Pareto front as report.html and ``bitloom dse`` show it: its
CSV read back into typed rows, and the plot as a standalone SVG written by hand (no plotting
dependency; the same markup embeds in report.html)."""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from html import escape
from pathlib import Path

COLORS = {"int": "#1f77b4", "minifloat": "#e6550d", "mixed": "#7f7f7f"}
PANEL_W, PANEL_H, MARGIN_L, MARGIN_B, MARGIN_T, GAP = 400, 300, 56, 44, 30, 30


def _log_ticks(lo: float, hi: float) -> list[float]:
    """Powers of ten (and 2x, 5x when the range is narrow) within [lo, hi]."""
    ticks = []
    for e in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1):
        steps = (1, 2, 5) if hi / lo < 1000 else (1,)
        ticks += [s * 10 ** e for s in steps if lo <= s * 10 ** e <= hi]
    return ticks


def _label(v: float) -> str:
    return f"{v / 1e6:g}M" if v >= 1e6 else f"{v / 1e3:g}k" if v >= 1e3 else f"{v:g}"


def _panel(rows: Sequence[dict], xkey: str, flag: str, title: str, xlabel: str,
           x0: float, float_acc: float | None) -> list[str]:
    """One scatter panel (log x, linear accuracy y) with its Pareto front as a step line."""
    out = [f'<g transform="translate({x0},0)">',
           f'<text x="{MARGIN_L + PANEL_W / 2}" y="18" text-anchor="middle" '
           f'font-weight="bold">{escape(title)}</text>']
    if not rows:
        return [*out, f'<text x="{MARGIN_L + 20}" y="{PANEL_H / 2}">no point fits</text>', "</g>"]
    xs = [max(float(r[xkey]), 1.0) for r in rows]
    accs = [100 * float(r["accuracy"]) for r in rows]
    if float_acc is not None:
        accs.append(100 * float_acc)
    xlo, xhi = min(xs) / 1.3, max(xs) * 1.3
    ylo = max(0.0, math.floor(min(accs) / 5) * 5 - 2)
    yhi = min(100.0, max(accs) + 2)

    def px(v: float) -> float:
        return MARGIN_L + PANEL_W * (math.log(v) - math.log(xlo)) / (math.log(xhi) - math.log(xlo))

    def py(a: float) -> float:
        return MARGIN_T + PANEL_H * (1 - (a - ylo) / (yhi - ylo))

    bottom = MARGIN_T + PANEL_H
    out.append(f'<rect x="{MARGIN_L}" y="{MARGIN_T}" width="{PANEL_W}" height="{PANEL_H}" '
               'fill="#fff" stroke="#999"/>')
    for t in _log_ticks(xlo, xhi):
        out.append(f'<line x1="{px(t):.1f}" x2="{px(t):.1f}" y1="{MARGIN_T}" y2="{bottom}" '
                   f'stroke="#eee"/><text x="{px(t):.1f}" y="{bottom + 14}" '
                   f'text-anchor="middle">{_label(t)}</text>')
    step = 5 if yhi - ylo > 20 else 2 if yhi - ylo > 6 else 1
    for a in range(math.ceil(ylo / step) * step, int(yhi) + 1, step):
        out.append(f'<line x1="{MARGIN_L}" x2="{MARGIN_L + PANEL_W}" y1="{py(a):.1f}" '
                   f'y2="{py(a):.1f}" stroke="#eee"/><text x="{MARGIN_L - 6}" '
                   f'y="{py(a) + 4:.1f}" text-anchor="end">{a}%</text>')
    out.append(f'<text x="{MARGIN_L + PANEL_W / 2}" y="{bottom + 34}" '
               f'text-anchor="middle">{escape(xlabel)}</text>')
    if float_acc is not None:
        out.append(f'<line x1="{MARGIN_L}" x2="{MARGIN_L + PANEL_W}" y1="{py(100 * float_acc):.1f}"'
                   f' y2="{py(100 * float_acc):.1f}" stroke="#555" stroke-dasharray="4 3"/>'
                   f'<text x="{MARGIN_L + PANEL_W - 4}" y="{py(100 * float_acc) - 4:.1f}" '
                   f'text-anchor="end" fill="#555">float {100 * float_acc:.1f}%</text>')
    front = sorted((r for r in rows if r[flag]), key=lambda r: float(r[xkey]))
    if len(front) > 1:
        pts = " ".join(f"{px(max(float(r[xkey]), 1.0)):.1f},{py(100 * float(r['accuracy'])):.1f}"
                       for r in front)
        out.append(f'<polyline points="{pts}" fill="none" stroke="#333" stroke-width="1"/>')
    for r, x in zip(rows, xs, strict=True):
        color = COLORS.get(r["family"], "#7f7f7f")
        on = r[flag]
        name = r["weights"] if r["weights"] == r["acts"] else f"{r['weights']}/{r['acts']}"
        tip = (f"{name}: {100 * float(r['accuracy']):.2f}%, {_label(float(r[xkey]))} "
               f"{xlabel.split(' ')[0]}, {r['cycles_per_frame']} cycles/frame")
        out.append(f'<circle cx="{px(x):.1f}" cy="{py(100 * float(r["accuracy"])):.1f}" '
                   f'r="{4.5 if on else 3}" fill="{color if on else "none"}" stroke="{color}" '
                   f'opacity="{1 if on else 0.6}"><title>{escape(tip)}</title></circle>')
        if on:
            out.append(f'<text x="{px(x) + 6:.1f}" y="{py(100 * float(r["accuracy"])) - 5:.1f}" '
                       f'fill="{color}">{escape(name)}</text>')
    return [*out, "</g>"]


def pareto_svg(rows: Sequence[dict], float_acc: float | None = None, title: str = "") -> str:
    """Accuracy vs LUTs (each format at its fastest fitting folding) and accuracy vs
    frames/s (every fitting point); filled, labelled points are Pareto-optimal."""
    width = 2 * (MARGIN_L + PANEL_W) + GAP + 10
    height = MARGIN_T + PANEL_H + MARGIN_B + 24
    fastest = [r for r in rows if r["fastest_fit"]]
    fitting = [r for r in rows if r["fits"]]
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">',
             f"<title>{escape(title or 'design-space exploration')}</title>",
             *_panel(fastest, "LUT", "pareto_lut", "accuracy vs LUTs (fastest fitting folding)",
                     "LUTs (estimated)", 0, float_acc),
             *_panel(fitting, "fps", "pareto_fps", "accuracy vs throughput (fitting points)",
                     "frames/s", MARGIN_L + PANEL_W + GAP, float_acc)]
    y = height - 8
    for i, (fam, color) in enumerate(COLORS.items()):
        parts.append(f'<circle cx="{MARGIN_L + 8 + 110 * i}" cy="{y - 4}" r="4" fill="{color}"/>'
                     f'<text x="{MARGIN_L + 16 + 110 * i}" y="{y}">{fam}</text>')
    parts.append(f'<text x="{MARGIN_L + 340}" y="{y}">filled, labelled: Pareto-optimal</text>')
    return "\n".join([*parts, "</svg>"]) + "\n"


def read_csv(path: Path) -> list[dict]:
    """pareto.csv back into typed rows (what the plot and report.html read)."""
    ints = {"target_cycles", "cycles_per_frame", "latency_cycles"}
    floats = {"accuracy", "fps", "LUT", "FF", "DSP", "BRAM36", "utilization", "measured_LUT"}
    flags = {"fits", "fastest_fit", "pareto_lut", "pareto_fps"}
    rows = []
    with path.open(newline="") as f:
        for raw in csv.DictReader(f):
            row: dict = dict(raw)
            for k in ints:
                row[k] = int(raw[k])
            for k in floats:
                row[k] = float(raw[k]) if raw.get(k) not in (None, "") else None
            for k in flags:
                row[k] = raw[k] == "True"
            rows.append(row)
    return rows
