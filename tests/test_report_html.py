"""report.html: self-contained, holds report.json's numbers, draws the pipeline and the DSE
plot; rendered in headless Chromium when one is installed."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import xml.dom.minidom
import zlib
from html.parser import HTMLParser
from pathlib import Path

import pytest

from bitloom.cli import main
from bitloom.dse.dse import COLUMNS, write_csv
from bitloom.emit.html import write_report_html

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or (
    "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)


class Page(HTMLParser):
    """Text of every table cell (by table id), the tags seen, any external reference."""

    def __init__(self) -> None:
        super().__init__()
        self.cells: dict[str, list[str]] = {}
        self.tags: list[str] = []
        self.external: list[str] = []
        self._table: str | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        a = dict(attrs)
        for key in ("src", "href"):
            if a.get(key, "").startswith(("http", "//")):
                self.external.append(a[key])
        if tag == "table":
            self._table = a.get("id", "")
            self.cells.setdefault(self._table, [])
        elif tag in ("td", "th") and self._table is not None:
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None and self._table is not None:
            self.cells[self._table].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


@pytest.fixture(scope="module")
def design(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("html") / "mlp"
    assert main(["compile", str(ROOT / "examples" / "mlp_digits.onnx"), "--board", "pynq-z2",
                 "--out", str(out)]) == 0
    write_report_html(out)
    return out


def parse(path: Path) -> Page:
    page = Page()
    page.feed(path.read_text(encoding="utf-8"))
    page.close()
    return page


def test_html_holds_the_report_numbers(design):
    report = json.loads((design / "report.json").read_text())
    page = parse(design / "report.html")
    assert page.tags[0] == "html" and "svg" in page.tags
    assert not page.external  # opens offline
    cells = page.cells["layers"]
    for ly in report["layers"]:
        row = cells[cells.index(ly["name"]):]
        assert row[1] == ly["op"]
        assert row[8].startswith(ly["requant"])
        assert str(ly["cycles_per_frame"]) in row[:18]
        assert str(ly["estimated"]["LUT"]) in row[:18]
        mem = ly["weight_memory"]
        assert f"{mem['style']} {mem['depth']}×{mem['width']}" in row[:18]
    assert str(report["totals"]["estimated"]["LUT"]) in cells
    text = (design / "report.html").read_text()
    assert f">{report['cycles_per_frame']}<" in text
    assert f"{report['frames_per_second']:,.0f}" in text
    assert "pareto" not in page.cells  # no DSE ran


def test_dataflow_svg_has_a_box_and_edge_per_layer(design):
    text = (design / "report.html").read_text()
    start = text.index('<svg xmlns="http://www.w3.org/2000/svg" class="dataflow"')
    svg = xml.dom.minidom.parseString(text[start:text.index("</svg>", start) + 6])
    layers = json.loads((design / "report.json").read_text())["layers"]
    assert len(svg.getElementsByTagName("rect")) == len(layers) + 1  # + the input
    assert len(svg.getElementsByTagName("path")) == 1 + sum(len(ly["inputs"]) for ly in layers)
    names = {t.firstChild.data for t in svg.getElementsByTagName("text")}
    assert {ly["name"] for ly in layers} <= names


def test_measured_resources_and_dse_plot(design, tmp_path):
    """After synth (faked here: the numbers are what matters) and with DIR/dse present."""
    target = tmp_path / "d"
    shutil.copytree(design, target)
    report = json.loads((target / "report.json").read_text())
    for i, ly in enumerate(report["layers"]):
        ly["measured"] = {"LUT": 1000 + i, "FF": 500, "CARRY": 0, "DSP": 0, "BRAM36": 0.5,
                          "URAM": 0}
    report["synth"] = {"resources": {"LUT": 4321, "FF": 1500, "DSP": 0, "BRAM36": 1.5}}
    (target / "report.json").write_text(json.dumps(report))
    (target / "dse").mkdir()
    rows = [{"weights": w, "acts": w, "family": fam, "bits": "4/4", "accuracy": acc,
             "target_cycles": 8, "cycles_per_frame": 8, "fps": 12.5e6, "latency_cycles": 40,
             "LUT": lut, "FF": 100, "DSP": 0, "BRAM36": 0, "utilization": 0.1, "fits": True,
             "fastest_fit": True, "pareto_lut": front, "pareto_fps": front, "folding": "1x1",
             "model": "m.onnx"}
            for w, fam, acc, lut, front in (("int4", "int", 0.9, 2000, True),
                                            ("e2m1", "minifloat", 0.85, 2100, False))]
    write_csv(rows, target / "dse" / "pareto.csv")
    assert set(rows[0]) <= set(COLUMNS)
    page = parse(write_report_html(target))
    cells = page.cells["layers"]
    assert "1002" in cells and "4321" in cells
    assert page.cells["pareto"][8:10] == ["int4", "int4"]  # the front's row, after the header
    assert page.tags.count("svg") == 2


def png_pixels(data: bytes) -> tuple[int, list[bytes]]:
    """Bytes per pixel and unfiltered rows of an 8-bit RGB/RGBA PNG (what Chromium writes)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, b"", b""
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + length]
        header = chunk if kind == b"IHDR" else header
        idat += chunk if kind == b"IDAT" else b""
        pos += 12 + length
    width, height, depth, color = struct.unpack(">IIBB", header[:10])
    assert depth == 8 and color in (2, 6)
    bpp = 3 if color == 2 else 4
    raw, stride, rows, prev = zlib.decompress(idat), width * bpp, [], bytes(width * bpp)
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1:start + 1 + stride])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], prev[i - bpp] if i >= bpp else 0
            p = a + b - c
            pred = (0, a, b, (a + b) // 2,
                    a if abs(p - a) <= min(abs(p - b), abs(p - c)) else
                    b if abs(p - b) <= abs(p - c) else c)[kind]
            line[i] = (line[i] + pred) & 0xFF
        rows.append(prev := bytes(line))
    return bpp, rows


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (no /usr/bin/chromium)")
def test_renders_in_headless_chromium(design, tmp_path):
    shot = tmp_path / "report.png"
    flags = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}"]
    url = (design / "report.html").resolve().as_uri()
    subprocess.run([*flags, f"--screenshot={shot}", "--window-size=1280,1600", url],
                   check=True, capture_output=True, timeout=120)
    # the DOM as Chromium rendered it holds report.json's per-layer numbers
    dom = tmp_path / "dom.html"
    dom.write_text(subprocess.run([*flags, "--dump-dom", url], check=True, capture_output=True,
                                  text=True, timeout=120).stdout, encoding="utf-8")
    report = json.loads((design / "report.json").read_text())
    cells = parse(dom).cells["layers"]
    for ly in report["layers"]:
        row = cells[cells.index(ly["name"]):]
        assert str(ly["cycles_per_frame"]) in row[:17]
        assert str(ly["estimated"]["LUT"]) in row[:17]
    assert shot.stat().st_size > 0
    bpp, rows = png_pixels(shot.read_bytes())
    assert rows and rows[0]
    colors = {r[i:i + bpp] for r in rows[::8] for i in range(0, len(r), 8 * bpp)}
    assert len(colors) > 5  # text, bars and boxes, not one blank colour
