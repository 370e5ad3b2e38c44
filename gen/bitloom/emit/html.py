"""report.html: the design folder's report.json as a page a person wants to read.

Self-contained (inline CSS and SVG, no script, no network), so it opens offline and can
be mailed around: per-layer table, resource bars against the board, throughput and
latency, the dataflow pipeline as a picture, and the DSE plot when DIR/dse holds a sweep.
"""

from __future__ import annotations

import json
from html import escape
from importlib import resources
from pathlib import Path

import jinja2
from markupsafe import Markup

from bitloom.emit.pareto import pareto_svg, read_csv
from bitloom.errors import BitloomError

TEMPLATE = "report.html.j2"
BARS = ("LUT", "LUTMEM", "FF", "CARRY", "DSP", "BRAM36", "URAM")
BOX_W, BOX_H, COL_GAP, ROW_GAP, PAD = 150, 58, 46, 18, 12


def depths(layers: list[dict]) -> dict[str, int]:
    """Column of each layer in the pipeline picture: its longest path from the input."""
    col: dict[str, int] = {"input": 0}
    for ly in layers:  # report.json lists layers in topological order
        col[ly["name"]] = 1 + max((col.get(p, 0) for p in ly["inputs"]), default=0)
    return col


def dataflow_svg(layers: list[dict]) -> str:
    """The layer DAG: one box per layer (op, folding, cycles; darker = closer to the
    bottleneck) and an arrow per ``inputs`` edge, columns by depth."""
    col = depths(layers)
    rows: dict[int, int] = {0: 1}
    pos: dict[str, tuple[float, float]] = {}

    def place(name: str) -> None:
        c = col[name]
        r = rows.get(c, 0)
        rows[c] = r + 1
        pos[name] = (PAD + c * (BOX_W + COL_GAP), PAD + r * (BOX_H + ROW_GAP))

    pos["input"] = (PAD, PAD)
    for ly in layers:
        place(ly["name"])
    width = PAD * 2 + (max(col.values()) + 1) * (BOX_W + COL_GAP) - COL_GAP
    height = PAD * 2 + max(rows.values()) * (BOX_H + ROW_GAP) - ROW_GAP
    slowest = max((ly["cycles_per_frame"] for ly in layers), default=1)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="dataflow" width="{width}" '
           f'height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" '
           'font-size="11"><title>dataflow pipeline</title>',
           '<defs><marker id="arrow" viewBox="0 0 8 8" refX="8" refY="4" markerWidth="7" '
           'markerHeight="7" orient="auto"><path d="M0,0 L8,4 L0,8 z" fill="#555"/></marker>'
           '</defs>']
    for ly in layers:
        x2, y2 = pos[ly["name"]]
        for src in ly["inputs"]:
            x1, y1 = pos.get(src, pos["input"])
            out.append(f'<path d="M{x1 + BOX_W},{y1 + BOX_H / 2} C{x1 + BOX_W + COL_GAP / 2},'
                       f'{y1 + BOX_H / 2} {x2 - COL_GAP / 2},{y2 + BOX_H / 2} {x2},'
                       f'{y2 + BOX_H / 2}" fill="none" stroke="#555" '
                       'marker-end="url(#arrow)"/>')
    x, y = pos["input"]
    out.append(f'<rect x="{x}" y="{y}" width="{BOX_W}" height="{BOX_H}" rx="6" fill="#eee" '
               f'stroke="#888"/><text x="{x + BOX_W / 2}" y="{y + BOX_H / 2 + 4}" '
               'text-anchor="middle" font-weight="bold">input</text>')
    for ly in layers:
        x, y = pos[ly["name"]]
        share = ly["cycles_per_frame"] / slowest
        fill = f"hsl(210, 70%, {92 - 40 * share:.0f}%)"
        ink = "#fff" if share > 0.8 else "#000"
        lines = [(ly["name"], "bold"), (f'{ly["op"]}  {ly["pe"]}x{ly["simd"]}', "normal"),
                 (f'{ly["cycles_per_frame"]:,} cycles', "normal")]
        out.append(f'<g><title>{escape(ly["name"])}: {escape(ly["op"])}, '
                   f'{ly["cycles_per_frame"]} cycles/frame</title>'
                   f'<rect x="{x}" y="{y}" width="{BOX_W}" height="{BOX_H}" rx="6" '
                   f'fill="{fill}" stroke="#345"/>')
        for i, (text, weight) in enumerate(lines):
            out.append(f'<text x="{x + BOX_W / 2}" y="{y + 17 + 15 * i}" text-anchor="middle" '
                       f'font-weight="{weight}" fill="{ink}">{escape(text)}</text>')
        out.append("</g>")
    return "\n".join([*out, "</svg>"])


def resource_bars(report: dict, capacity: dict[str, float]) -> list[dict]:
    """Estimated (and measured, after synth) totals against the board, one row each."""
    est = report.get("totals", {}).get("estimated", {})
    measured = report.get("synth", {}).get("resources", {})
    bars = []
    for key in BARS:
        cap = capacity.get(key, 0)
        if not cap or (key not in est and key not in measured):
            continue
        row = {"resource": key, "capacity": cap}
        for kind, src in (("estimated", est), ("measured", measured)):
            if key in src:
                row[kind] = src[key]
                row[f"{kind}_pct"] = 100 * src[key] / cap
        bars.append(row)
    return bars


def dse_section(design_dir: Path) -> dict | None:
    """The DSE plot and its Pareto rows, when ``bitloom dse ... --out DIR/dse`` ran."""
    csv_path = design_dir / "dse" / "pareto.csv"
    if not csv_path.is_file():
        return None
    rows = read_csv(csv_path)
    meta_path = design_dir / "dse" / "dse.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    front = sorted((r for r in rows if r["pareto_lut"]), key=lambda r: -r["accuracy"])
    return {"svg": Markup(pareto_svg(rows, meta.get("float_accuracy"))), "front": front,
            "meta": meta}


def render_report_html(report: dict, design_dir: Path) -> str:
    """The page for ``report`` (the content of design_dir/report.json)."""
    from bitloom.boards import load_board

    try:
        board = load_board(report["board"])
        capacity, title = board.resources, board.title
    except BitloomError:  # a board file that is not at hand any more: no bars
        capacity, title = {}, report["board"]
    layers = report["layers"]
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=True,
                             trim_blocks=True, lstrip_blocks=True)
    text = resources.files("bitloom.rtl_templates").joinpath(TEMPLATE).read_text()
    clock = float(report["clock_mhz"])
    return env.from_string(text).render(
        r=report, board_title=title, layers=layers,
        slowest=max((ly["cycles_per_frame"] for ly in layers), default=0),
        measured=any("measured" in ly for ly in layers),
        latency_us=report["latency_cycles_estimate"] / clock,
        frame_us=report["cycles_per_frame"] / clock,
        bars=resource_bars(report, capacity),
        dataflow=Markup(dataflow_svg(layers)), dse=dse_section(design_dir),
    )


def write_report_html(design_dir: str | Path) -> Path:
    """Write DIR/report.html from DIR/report.json (and DIR/dse/pareto.csv when present)."""
    design_dir = Path(design_dir)
    path = design_dir / "report.json"
    try:
        report = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise BitloomError(f"{path}: cannot read the report ({exc}); compile again.") from None
    out = design_dir / "report.html"
    out.write_text(render_report_html(report, design_dir), encoding="utf-8")
    return out
