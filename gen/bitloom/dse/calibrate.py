"""How far the first-order cost model is from Yosys, on layers it was not fitted to.

``plan/cost.py`` was fitted to the example MLP's six layers. Here small float models
(dense and 3x3 convolution, each followed by a dense output layer) are quantized to int2,
int4, int8 and minifloats, compiled at a fixed folding and synthesized with Yosys
(``synth_xilinx -family xc7``, as ``bitloom synth`` does); every layer's estimate is set
against its measured LUTs. ``python -m bitloom.dse.calibrate --out FILE.json`` runs it;
docs/dse.md holds the figures.
"""

from __future__ import annotations

import argparse
import json
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

#: (name, kind, weights/activations format, target cycles per frame)
CASES: tuple[tuple[str, str, str, int], ...] = (
    ("dense-int2", "dense", "int2", 8),
    ("dense-int4", "dense", "int4", 8),
    ("dense-int8", "dense", "int8", 16),
    ("dense-e2m1", "dense", "e2m1", 8),
    ("dense-e4m3", "dense", "e4m3", 16),
    ("conv-int4", "conv", "int4", 648),
    ("conv-int8", "conv", "int8", 2592),
    ("conv-e3m2", "conv", "e3m2", 1296),
)


@dataclass
class LayerError:
    """One synthesized layer: the estimate against Yosys."""

    case: str
    layer: str
    op: str
    fmt: str
    family: str  # "int" or "minifloat"
    pe: int
    simd: int
    estimated_lut: float
    measured_lut: float
    measured_dsp: float  # the cost model assumes none; Yosys maps wide products to DSP48s

    @property
    def error(self) -> float:
        """(estimate - measured) / measured."""
        return (self.estimated_lut - self.measured_lut) / max(self.measured_lut, 1)


def float_model(kind: str, seed: int = 0) -> tuple[onnx.ModelProto, np.ndarray]:
    """A float model of one hidden layer (dense 32->16 or conv 4->8 channels on 6x6) with
    ReLU, then a dense output layer, and a calibration batch for it."""
    rng = np.random.default_rng(seed)

    def init(name: str, shape: tuple[int, ...], fan_in: int) -> onnx.TensorProto:
        return numpy_helper.from_array(
            (rng.normal(size=shape) / np.sqrt(fan_in)).astype(np.float32), name)

    if kind == "dense":
        in_shape = [1, 32]
        inits = [init("w0", (16, 32), 32), init("b0", (16,), 8), init("w1", (10, 16), 16),
                 init("b1", (10,), 8)]
        nodes = [helper.make_node("Gemm", ["x", "w0", "b0"], ["h"], transB=1),
                 helper.make_node("Relu", ["h"], ["r"]),
                 helper.make_node("Gemm", ["r", "w1", "b1"], ["y"], transB=1)]
    else:
        in_shape = [1, 4, 6, 6]
        inits = [init("w0", (8, 4, 3, 3), 36), init("b0", (8,), 8),
                 init("w1", (10, 288), 288), init("b1", (10,), 8)]
        nodes = [helper.make_node("Conv", ["x", "w0", "b0"], ["h"], pads=[1, 1, 1, 1]),
                 helper.make_node("Relu", ["h"], ["r"]),
                 helper.make_node("Flatten", ["r"], ["f"]),
                 helper.make_node("Gemm", ["f", "w1", "b1"], ["y"], transB=1)]
    graph = helper.make_graph(
        nodes, kind, [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    calib = rng.normal(size=(128, *in_shape[1:])).astype(np.float32)
    return model, calib


def measure_case(case: tuple[str, str, str, int], work: Path) -> list[LayerError]:
    """Quantize, plan, emit and synthesize one case; one row per layer."""
    from rich.console import Console

    import bitloom
    from bitloom.boards import load_board
    from bitloom.emit.design import emit_design
    from bitloom.flows import synthesize_design
    from bitloom.plan.folding import make_plan
    from bitloom.quantize import quantize_model

    name, kind, fmt, target = case
    out = work / name
    done = out / "report.json"
    report = json.loads(done.read_text()) if done.is_file() else {}
    if "synth" not in report:  # synthesized already: Yosys takes minutes per case
        model, calib = float_model(kind)
        q = quantize_model(model, fmt, fmt, calib)
        out.mkdir(parents=True, exist_ok=True)
        onnx.save(q, out / "q.onnx")
        board = load_board("pynq-z2")
        plan = make_plan(bitloom.load(q), target, board.default_clock_mhz)
        design = emit_design(plan, board, out, out / "q.onnx")
        with (out / "synth.txt").open("w") as log:
            synthesize_design(design, Console(file=log))
        report = design.report
    family = "int" if fmt.startswith("int") else "minifloat"
    return [LayerError(name, ly["name"], ly["op"], fmt, family, ly["pe"], ly["simd"],
                       ly["estimated"]["LUT"], ly["measured"]["LUT"], ly["measured"]["DSP"])
            for ly in report["layers"]]


def summarize(rows: list[LayerError]) -> dict[str, dict[str, float]]:
    """Mean absolute and extreme relative LUT errors per format family (and overall), also
    over the layers Yosys built without DSPs (the only kind the cost model describes)."""
    out = {}
    for family in ("int", "minifloat", "all"):
        for suffix, keep in (("", lambda r: True), (" without DSP", lambda r: not r.measured_dsp)):
            errs = [r.error for r in rows if family in ("all", r.family) and keep(r)]
            if errs:
                out[family + suffix] = {
                    "layers": len(errs), "mean_abs": round(float(np.mean(np.abs(errs))), 4),
                    "min": round(min(errs), 4), "max": round(max(errs), 4)}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="JSON file for the rows and summary")
    parser.add_argument("--work", default="build/dse-calibration")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--cases", nargs="+", help="case names to run (default: all)")
    args = parser.parse_args(argv)
    cases = [c for c in CASES if not args.cases or c[0] in args.cases]
    rows: list[LayerError] = []
    with ProcessPoolExecutor(args.jobs) as pool:
        for result in pool.map(measure_case, cases, [Path(args.work)] * len(cases)):
            rows += result
            for r in result:
                print(f"{r.case:12} {r.layer:8} {r.op:8} est {r.estimated_lut:7.0f} "
                      f"yosys {r.measured_lut:7.0f} {r.error:+.0%} DSP {r.measured_dsp:g}",
                      flush=True)
    summary = summarize(rows)
    Path(args.out).write_text(json.dumps(
        {"rows": [{**asdict(r), "error": round(r.error, 4)} for r in rows],
         "summary": summary}, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
