"""Writing a compiled design to disk: Verilog, the AXI wrapper, the model and report.json.

A design folder is self-contained: ``bitloom verify/synth DIR`` re-read ``model.onnx`` and
the folding recorded in ``report.json``, so they check exactly what was compiled.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import jinja2
from amaranth.back import verilog

from bitloom.errors import BitloomError
from bitloom.hw.core import Core
from bitloom.hw.mvu import Folding
from bitloom.ir import Network
from bitloom.plan import Plan, make_plan_with
from bitloom.report import report_dict

CORE = "bitloom_core"
TOP = "bitloom_top"


def bytes_wide(bits: int) -> int:
    """AXI4-Stream data widths are whole bytes."""
    return 8 * ((bits + 7) // 8)


def render_template(name: str, **context) -> str:
    text = resources.files("bitloom.rtl_templates").joinpath(name).read_text()
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, trim_blocks=True,
                             lstrip_blocks=True, keep_trailing_newline=True)
    return env.from_string(text).render(**context)


def emit_rtl(plan: Plan, rtl_dir: Path) -> list[Path]:
    """``bitloom_core.v`` (Amaranth) and ``bitloom_top.v`` (AXI4-Stream wrapper)."""
    from bitloom import __version__

    rtl_dir.mkdir(parents=True, exist_ok=True)
    core_v = rtl_dir / f"{CORE}.v"
    core_v.write_text(verilog.convert(Core(plan), name=CORE, emit_src=False))
    last = plan.output
    in_payload = plan.in_elems * plan.in_fmt.bits
    top_v = rtl_dir / f"{TOP}.v"
    top_v.write_text(render_template(
        "axis_top.v.j2", top=TOP, core=CORE, version=__version__, source=plan.net.source,
        in_beats=plan.in_beats, in_elems=plan.in_elems, in_bits=plan.in_fmt.bits,
        in_payload=in_payload, in_width=bytes_wide(in_payload),
        out_beats=last.out_beats, out_elems=last.out_elems, out_bits=last.layer.out_fmt.bits,
        out_payload=last.out_beat_bits, out_width=bytes_wide(last.out_beat_bits),
        beat_bits=max(1, (last.out_beats - 1).bit_length()),
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


def emit_design(plan: Plan, board, out_dir: Path, model_path: str | Path) -> Design:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "sim").mkdir(exist_ok=True)
    shutil.copyfile(model_path, out_dir / "model.onnx")
    emit_rtl(plan, out_dir / "rtl")
    design = Design(out_dir, plan.net, plan, report_dict(plan, board))
    design.save_report()
    return design


def load_design(path: str | Path) -> Design:
    """Re-open a folder written by ``bitloom compile``."""
    from bitloom import load

    path = Path(path)
    report_path = path / "report.json"
    if not report_path.is_file() or not (path / "model.onnx").is_file():
        raise BitloomError(f"{path}: not a bitloom design folder (no report.json/model.onnx); "
                           "create one with `bitloom compile MODEL --board B --out DIR`.")
    try:
        report = json.loads(report_path.read_text())
        folds = [Folding(ly["pe"], ly["simd"]) for ly in report["layers"]]
        depths = [tuple(ly["fifo_depths"]) for ly in report["layers"]]
        clock = float(report["clock_mhz"])
        in_elems = int(report["io"]["input"]["elements_per_beat"])
    except (KeyError, ValueError, TypeError) as exc:
        raise BitloomError(f"{report_path}: damaged report ({exc}); compile again.") from None
    net = load(path / "model.onnx")
    plan = make_plan_with(net, folds, depths, clock, in_elems)
    return Design(path, net, plan, report)
