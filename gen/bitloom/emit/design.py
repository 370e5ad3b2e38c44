"""Writing a compiled design to disk: Verilog, the AXI wrapper, weight init files, the model
and report.json.

A design folder is self-contained: ``bitloom verify/synth DIR`` re-read ``model.onnx`` and
the folding and weight memory styles recorded in ``report.json``, so they check exactly what
was compiled.

Weights: every weight layer's words go to ``rtl/weights/<layer>.mem`` (``$readmemh`` hex,
one word per line, in step order). A ROM's contents in the core's Verilog are replaced by a
``$readmemh`` of that file (after checking they are the same words), so the weights can be
swapped without regenerating the RTL; streamed layers' files are what the host feeds, listed
in ``rtl/weights/streams.json``.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path

import jinja2
import numpy as np
from amaranth.back import verilog

from bitloom.emit.report import report_dict
from bitloom.errors import BitloomError
from bitloom.hw.core import (
    Core,
    LayerProgress,
    decode_weight_words,
    streamed_layers,
    weight_words,
)
from bitloom.hw.weights import INIT_ATTR, init_file
from bitloom.ir import Network
from bitloom.plan import Plan, make_plan_with
from bitloom.plan.fold import Folding
from bitloom.plan.memory import STREAMED
from bitloom.plan.requantizers import restore_requantizers

CORE = "bitloom_core"
TOP = "bitloom_top"
WEIGHTS = "weights"
STREAMS = "streams.json"
_INIT_ATTR_LINE = re.compile(rf'^\s*\(\* {INIT_ATTR} = "([^"]+)" \*\)$')
_MEM_DECL = re.compile(r"^\s*reg \[(\d+):0\] (\S+) \[(\d+):0\];$")
_MEM_WORD = re.compile(r"^\s*(\S+)\[(\d+)\] = (\d+)'([hbd])([0-9a-fA-F_]+);$")


def bytes_wide(bits: int) -> int:
    """AXI4-Stream data widths are whole bytes."""
    return 8 * ((bits + 7) // 8)


def render_template(name: str, **context) -> str:
    text = resources.files("bitloom.rtl_templates").joinpath(name).read_text()
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, trim_blocks=True,
                             lstrip_blocks=True, keep_trailing_newline=True)
    return env.from_string(text).render(**context)


def write_mem(path: Path, words: list[int], width: int) -> None:
    """``$readmemh`` file: one word per line, ``width`` bits as hex digits."""
    digits = (width + 3) // 4
    path.write_text("".join(f"{w:0{digits}x}\n" for w in words))


def read_mem(path: Path) -> list[int]:
    """Words of a ``$readmemh`` file (comments and blank lines skipped)."""
    words = []
    for line in path.read_text().splitlines():
        line = line.split("//")[0].strip()
        if line:
            words.extend(int(tok.replace("_", ""), 16) for tok in line.split())
    return words


def load_rom_files(verilog_text: str, expected: dict[str, tuple[list[int], int]]) -> str:
    """Replace each weight ROM's inline contents by ``$readmemh`` of its init file.

    ``expected`` maps an init file (relative to ``rtl``) to its words and width; the inline
    contents must be exactly those words, or the RTL and the files would disagree.
    """
    out: list[str] = []
    lines = iter(verilog_text.splitlines())
    found: set[str] = set()
    for line in lines:
        tag = _INIT_ATTR_LINE.match(line)
        if not tag:
            out.append(line)
            continue
        path = tag.group(1)
        while not (decl := _MEM_DECL.match(line := next(lines))):
            out.append(line)  # other attributes (rom_style)
        out.append(line)
        width, name, last = int(decl.group(1)) + 1, decl.group(2), int(decl.group(3))
        words, want_width = expected[path]
        inline = [0] * (last + 1)
        line = next(lines)
        if line.strip() == "initial begin":
            while (line := next(lines)).strip() != "end":
                word = _MEM_WORD.match(line)
                if not word or word.group(1) != name:
                    raise BitloomError(f"cannot read the contents of ROM {name} ({path}) in "
                                       f"the Verilog: {line.strip()!r}")
                base = {"h": 16, "b": 2, "d": 10}[word.group(4)]
                inline[int(word.group(2))] = int(word.group(5).replace("_", ""), base)
            line = None
        if width != want_width or inline != words:
            raise BitloomError(f"{path}: the Verilog ROM ({last + 1} x {width} bits) differs "
                               f"from the weights ({len(words)} x {want_width} bits).")
        indent = line_indent(out[-1])
        out.append(f'{indent}initial $readmemh("{path}", {name}, 0, {last});')
        if line is not None:
            out.append(line)
        found.add(path)
    if found != set(expected):
        raise BitloomError(f"weight ROMs missing from the Verilog: {sorted(set(expected) - found)}")
    return "\n".join(out) + "\n"


def line_indent(line: str) -> str:
    return line[:len(line) - len(line.lstrip())]


def emit_weights(plan: Plan, rtl_dir: Path) -> dict[str, tuple[list[int], int]]:
    """Write every weight layer's init file and the streamed layers' manifest; returns the
    ROMs' files (relative to ``rtl``) with their words and widths."""
    (rtl_dir / WEIGHTS).mkdir(parents=True, exist_ok=True)
    roms, streams = {}, []
    for n, lp in enumerate(plan.layers):
        mem = lp.memory
        if mem is None:
            continue
        words, rel = weight_words(lp), init_file(lp.layer.name)
        if rel in roms or rel in (st["file"] for st in streams):
            raise BitloomError(f"{lp.layer.name}: its weight file {rel} is another layer's "
                               "too; rename one of the layers.")
        if len(words) != mem.depth:
            raise BitloomError(f"{lp.layer.name}: {len(words)} weight words, the plan has "
                               f"{mem.depth}.")
        write_mem(rtl_dir / rel, words, mem.width)
        if mem.style == STREAMED:
            streams.append({"layer": lp.layer.name, "index": n, "file": rel,
                            "port": f"s_axis_w{n}", "words": mem.depth, "width": mem.width,
                            "tdata_bits": bytes_wide(mem.width),
                            "passes_per_frame": mem.passes})
        else:
            roms[rel] = (words, mem.width)
    (rtl_dir / WEIGHTS / STREAMS).write_text(json.dumps(streams, indent=2) + "\n")
    return roms


def check_weight_files(plan: Plan, rtl_dir: Path) -> None:
    """Read every weight init file back, decode it and compare with the model's weights: a
    truncated, reordered or swapped file is an error naming the layer and the first weight."""
    for lp in plan.layers:
        if lp.memory is None:
            continue
        path = rtl_dir / init_file(lp.layer.name)
        if not path.is_file():
            raise BitloomError(f"{lp.layer.name}: weight file {path} is missing.")
        words = read_mem(path)
        if len(words) != lp.memory.depth or any(w >> lp.memory.width for w in words):
            raise BitloomError(f"{path}: {len(words)} words, expected {lp.memory.depth} words "
                               f"of {lp.memory.width} bits for layer {lp.layer.name}.")
        got, want = decode_weight_words(lp, words), lp.layer.weights
        if not (got == want).all():
            where = tuple(int(i) for i in np.argwhere(got != want)[0])
            raise BitloomError(f"{path}: layer {lp.layer.name}'s weight at {where} is "
                               f"{got[where]} in the file but {want[where]} in the model.")


def emit_rtl(plan: Plan, rtl_dir: Path, on_layer: LayerProgress | None = None) -> list[Path]:
    """``bitloom_core.v`` (Amaranth), ``bitloom_top.v`` (AXI4-Stream wrapper) and the
    weight init files (``weights/``); ``on_layer`` is told of each layer elaborated (see
    :data:`~bitloom.hw.core.LayerProgress`)."""
    from bitloom.version import __version__

    rtl_dir.mkdir(parents=True, exist_ok=True)
    roms = emit_weights(plan, rtl_dir)
    core_v = rtl_dir / f"{CORE}.v"
    core_v.write_text(load_rom_files(
        verilog.convert(Core(plan, on_layer), name=CORE, emit_src=False), roms))
    check_weight_files(plan, rtl_dir)
    last = plan.output
    in_payload = plan.in_elems * plan.in_fmt.bits
    top_v = rtl_dir / f"{TOP}.v"
    top_v.write_text(render_template(
        "axis_top.v.j2", top=TOP, core=CORE, version=__version__, source=Path(plan.net.source).name,
        in_beats=plan.in_beats, in_elems=plan.in_elems, in_bits=plan.in_fmt.bits,
        in_payload=in_payload, in_width=bytes_wide(in_payload),
        out_beats=last.out_beats, out_elems=last.out_elems, out_bits=last.layer.out_fmt.bits,
        out_payload=last.out_beat_bits, out_width=bytes_wide(last.out_beat_bits),
        beat_bits=max(1, (last.out_beats - 1).bit_length()), probes=len(plan.layers),
        weight_streams=[{"port": f"s_axis_w{n}", "core": f"w{n}", "layer": lp.layer.name,
                         "payload": lp.memory.width, "width": bytes_wide(lp.memory.width)}
                        for n, lp in streamed_layers(plan)],
    ))
    return [top_v, core_v]


@dataclass
class Design:
    """A compiled design folder."""

    path: Path
    net: Network
    plan: Plan
    report: dict

    @property
    def sources(self) -> list[Path]:
        return [self.path / "rtl" / f"{TOP}.v", self.path / "rtl" / f"{CORE}.v"]

    def save_report(self) -> None:
        (self.path / "report.json").write_text(json.dumps(self.report, indent=2) + "\n")


def emit_design(plan: Plan, board, out_dir: Path, model_path: str | Path,
                on_layer: LayerProgress | None = None) -> Design:
    """Write the design folder: the model, the RTL (``on_layer`` as for :func:`emit_rtl`)
    and report.json."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "sim").mkdir(exist_ok=True)
    shutil.copyfile(model_path, out_dir / "model.onnx")
    emit_rtl(plan, out_dir / "rtl", on_layer)
    design = Design(out_dir, plan.net, plan, report_dict(plan, board))
    design.save_report()
    return design


def load_design(path: str | Path) -> Design:
    """Re-open a folder written by ``bitloom compile``."""
    from bitloom.frontend import load_model

    path = Path(path)
    report_path = path / "report.json"
    if not report_path.is_file() or not (path / "model.onnx").is_file():
        raise BitloomError(f"{path}: not a bitloom design folder (no report.json/model.onnx); "
                           "create one with `bitloom compile MODEL --board B --out DIR`.")
    try:
        report = json.loads(report_path.read_text())
        folds = [Folding(ly["pe"], ly["simd"]) for ly in report["layers"]]
        styles = [(ly.get("weight_memory") or {}).get("style") for ly in report["layers"]]
        dsps = [ly.get("dsp") for ly in report["layers"]]
        requants = [ly.get("requant") for ly in report["layers"]]
        depths = [tuple(ly["fifo_depths"]) for ly in report["layers"]]
        ultra = [tuple(ly.get("ultraram", ())) for ly in report["layers"]]
        pipelines = [int(ly.get("pipeline", 0)) for ly in report["layers"]]
        clock = float(report["clock_mhz"])
        in_elems = int(report["io"]["input"]["elements_per_beat"])
    except (KeyError, ValueError, TypeError) as exc:
        raise BitloomError(f"{report_path}: damaged report ({exc}); compile again.") from None
    net = load_model(path / "model.onnx")
    plan = restore_requantizers(
        make_plan_with(net, folds, depths, clock, in_elems, styles, dsps), requants)
    plan = replace(plan, layers=[replace(lp, ultra=parts, pipeline=depth) for lp, parts, depth
                                 in zip(plan.layers, ultra, pipelines, strict=True)])
    return Design(path, net, plan, report)
