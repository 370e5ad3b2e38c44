"""Fit the cost model's coefficients to Yosys and measure its error on held-out layers.

Small float models (dense 32->16 and 3x3 convolution 4->8 channels on 6x6, each followed by
a dense output layer) are quantized to integer, bipolar and minifloat formats, compiled at
a fixed folding and synthesized with Yosys (``synth_xilinx -family xc7``, as ``bitloom
synth`` does; designs already synthesized under ``--work`` are reused). Each layer's
component counts (:func:`bitloom.plan.cost.layer_counts`) and its measured LUT/FF/DSP/BRAM36
are collected; the LUT and FF weights are fitted (non-negative least squares on relative
error) on the layers of the ``train`` cases only and evaluated on the ``test`` cases, which
differ in format, model or folding. ``python -m bitloom.dse.calibrate --out FILE.json``
writes every layer, the fitted weights and the error per family (and FILE.md, a table);
docs/dse.md holds the figures.
"""

from __future__ import annotations

import argparse
import json
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from bitloom.errors import BitloomError

#: the board every calibration case is planned and synthesized for
BOARD = "pynq-z2"


@dataclass(frozen=True)
class Case:
    """One synthesized design: a small float model quantized and compiled at one folding.

    ``split`` says whether its layers fit the cost model's coefficients ("train") or only
    measure it ("test"); the held-out set differs from the training set in format, model or
    folding so that its error is a fair prediction of the error on a new design.
    """

    name: str
    kind: str  # "dense" (32 -> 16 -> 10), "conv" (3x3 conv 4 -> 8 on 6x6, dense -> 10) or
    # "pool" (the conv, max and global average pooling, dense 8 -> 10): see float_model
    weights: str  # a format name, or "bipolar" (int2 quantization written as BipolarQuant)
    acts: str
    target: int  # cycles per frame the plan aims at
    split: str  # "train" or "test"
    model: str | None = None  # an already quantized model (path in the source tree) instead

    @property
    def family(self) -> str:
        """Format family: bipolar weights, minifloat, or int."""
        if self.weights == "bipolar":
            return "bipolar"
        return "int" if self.weights.startswith("int") else "minifloat"


CASES: tuple[Case, ...] = (
    Case("dense-int2", "dense", "int2", "int2", 8, "train"),
    Case("dense-int4", "dense", "int4", "int4", 8, "train"),
    Case("dense-int8", "dense", "int8", "int8", 16, "train"),
    Case("dense-e2m1", "dense", "e2m1", "e2m1", 8, "train"),
    Case("dense-e4m3", "dense", "e4m3", "e4m3", 16, "train"),
    Case("conv-int4", "conv", "int4", "int4", 648, "train"),
    Case("conv-int8", "conv", "int8", "int8", 2592, "train"),
    Case("conv-e3m2", "conv", "e3m2", "e3m2", 1296, "train"),
    Case("dense-int3", "dense", "int3", "int3", 16, "test"),
    Case("conv-int2", "conv", "int2", "int2", 648, "test"),
    Case("dense-e3m2", "dense", "e3m2", "e3m2", 32, "test"),
    Case("conv-e2m1", "conv", "e2m1", "e2m1", 1296, "test"),
    Case("dense-bipolar", "dense", "bipolar", "int4", 16, "test"),
    Case("conv-int6", "conv", "int6", "int6", 1296, "test"),
    Case("dense-int6", "dense", "int6", "int6", 32, "train"),
    Case("conv-bipolar", "conv", "bipolar", "int2", 648, "test"),
    Case("dense-int4-f32", "dense", "int4", "int4", 32, "test"),
    Case("conv-e4m3", "conv", "e4m3", "e4m3", 2592, "test"),
    Case("conv-int4-pe8", "conv", "int4", "int4", 324, "train"),
    Case("dense-int3-pe16", "dense", "int3", "int3", 4, "test"),
    Case("pool-int4", "pool", "int4", "int4", 648, "train"),
    Case("pool-e3m2", "pool", "e3m2", "e3m2", 648, "test"),
    Case("cnn-digits", "conv", "int4", "uint4", 512, "test", "examples/cnn_digits.onnx"),
    Case("mlp-digits", "dense", "int4", "uint4", 64, "test", "examples/mlp_digits.onnx"),
    Case("dense-e5m2", "dense", "e5m2", "e5m2", 32, "test"),
    Case("dense-bipolar-pe", "dense", "bipolar", "int3", 4, "train"),
    Case("conv-bipolar-int4", "conv", "bipolar", "int4", 1296, "test"),
    Case("dense-int5", "dense", "int5", "int5", 16, "test"),
    Case("conv-int3", "conv", "int3", "int3", 648, "test"),
    Case("conv-bipolar-int3", "conv", "bipolar", "int3", 648, "train"),
    Case("mlp-digits-fast", "dense", "int4", "uint4", 4, "test", "examples/mlp_digits.onnx"),
    Case("dense-int4-fast", "dense", "int4", "int4", 2, "train"),
    Case("dense-int4u-fast", "dense", "int4", "uint4", 4, "test"),
    Case("dense-bipolar-int2", "dense", "bipolar", "int2", 16, "train"),
    Case("conv-bipolar-slow", "conv", "bipolar", "int2", 2592, "train"),
)
#: the source tree, where the example models are
ROOT = Path(__file__).resolve().parents[3]


def bipolar_weights(model: onnx.ModelProto) -> onnx.ModelProto:
    """Rewrite every weight ``Quant`` (one whose input is an initializer) as QONNX
    ``BipolarQuant`` with the same scale: quantize writes no bipolar formats itself."""
    inits = {t.name for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Quant" and node.input[0] in inits:
            node.op_type = "BipolarQuant"
            del node.input[2:]
            del node.attribute[:]
    return model


@dataclass
class Row:
    """One synthesized layer: its component counts, what Yosys measured, and the
    estimates (the model before this calibration, as report.json recorded it, and now)."""

    case: str
    split: str
    layer: str
    op: str
    kind: str  # "dense", "conv", or the op of another layer (pooling)
    family: str
    weights: str
    acts: str
    pe: int
    simd: int
    counts: dict[str, float]
    measured: dict[str, float]
    before: dict[str, float]
    parts: dict[str, dict[str, float]]  # counts per part of the hardware (unit, window, link)
    measured_parts: dict[str, dict[str, float]]  # what Yosys counted in each part's modules
    estimated: dict[str, float] = field(default_factory=dict)

    def error(self, resource: str = "LUT", estimate: str = "estimated") -> float:
        """(estimate - measured) / measured."""
        est = getattr(self, estimate)[resource]
        return (est - self.measured[resource]) / max(self.measured[resource], 1)


def float_model(kind: str, seed: int = 0) -> tuple[onnx.ModelProto, np.ndarray]:
    """A float model of one hidden layer (dense 32->16 or conv 4->8 channels on 6x6) with
    ReLU (for ``pool``, then max and global average pooling), then a dense output layer,
    and a calibration batch for it."""
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
    elif kind == "conv":
        in_shape = [1, 4, 6, 6]
        inits = [init("w0", (8, 4, 3, 3), 36), init("b0", (8,), 8),
                 init("w1", (10, 288), 288), init("b1", (10,), 8)]
        nodes = [helper.make_node("Conv", ["x", "w0", "b0"], ["h"], pads=[1, 1, 1, 1]),
                 helper.make_node("Relu", ["h"], ["r"]),
                 helper.make_node("Flatten", ["r"], ["f"]),
                 helper.make_node("Gemm", ["f", "w1", "b1"], ["y"], transB=1)]
    else:  # "pool": the conv, a 2x2 max pool, a global average pool, dense 8 -> 10
        in_shape = [1, 4, 6, 6]
        inits = [init("w0", (8, 4, 3, 3), 36), init("b0", (8,), 8),
                 init("w1", (10, 8), 8), init("b1", (10,), 8)]
        nodes = [helper.make_node("Conv", ["x", "w0", "b0"], ["h"], pads=[1, 1, 1, 1]),
                 helper.make_node("Relu", ["h"], ["r"]),
                 helper.make_node("MaxPool", ["r"], ["m"], kernel_shape=[2, 2], strides=[2, 2]),
                 helper.make_node("GlobalAveragePool", ["m"], ["g"]),
                 helper.make_node("Flatten", ["g"], ["f"]),
                 helper.make_node("Gemm", ["f", "w1", "b1"], ["y"], transB=1)]
    graph = helper.make_graph(
        nodes, kind, [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    calib = rng.normal(size=(128, *in_shape[1:])).astype(np.float32)
    return model, calib


def synthesize_case(case: Case, work: Path) -> Path:
    """Quantize, plan, emit and synthesize one case unless its directory already holds a
    synthesized report.json (Yosys takes minutes per design); returns that directory."""
    from rich.console import Console

    import bitloom
    from bitloom.quantize import quantize_model

    out = work / case.name
    done = out / "report.json"
    if done.is_file() and "synth" in json.loads(done.read_text()):
        return out
    model, calib = float_model(case.kind)
    if case.model is not None:
        q = onnx.load(ROOT / case.model)
    elif case.weights == "bipolar":
        q = bipolar_weights(quantize_model(model, "int2", case.acts, calib))
    else:
        q = quantize_model(model, case.weights, case.acts, calib)
    out.mkdir(parents=True, exist_ok=True)
    onnx.save(q, out / "q.onnx")
    design = bitloom.compile(out / "q.onnx", BOARD, target_cycles=case.target, out=out)
    with (out / "synth.txt").open("w") as log:  # the case pool runs designs in parallel
        design.synth(Console(file=log), jobs=1)
    return out


def measured_parts(stat_file: Path, layer: str) -> dict[str, dict[str, float]]:
    """Resources per part of ``layer`` from Yosys's ``stat -json`` (hierarchy kept)."""
    from bitloom.emit.synth import layer_part, module_resources

    out: dict[str, dict[str, float]] = {}
    for name, res in module_resources(json.loads(stat_file.read_text()), "xc7").items():
        part = layer_part(name, layer)
        if part is not None:
            total = out.setdefault(part, dict.fromkeys(RESOURCES, 0.0))
            for k in RESOURCES:
                total[k] += res.get(k, 0)
    return out


def case_rows(case: Case, out: Path) -> list[Row]:
    """The rows of a synthesized case, re-planned (the folding must match the design)."""
    import bitloom
    from bitloom.boards import load_board
    from bitloom.plan import plan_design
    from bitloom.plan.cost import layer_counts, layer_parts
    from bitloom.plan.requantizers import REQUANTIZERS

    report = json.loads((out / "report.json").read_text())
    # the requantizers the design was built with (a design from before the choice existed
    # has thresholds wherever a layer requantizes)
    built = [f"{ly['name']}={ly.get('requant', 'thresholds')}" for ly in report["layers"]
             if ly.get("requant", "thresholds") in REQUANTIZERS]
    plan = plan_design(bitloom.load(str(out / "q.onnx")), load_board(BOARD),
                       target_cycles=case.target, requantizers=built)
    rows = []
    for lp, ly in zip(plan.layers, report["layers"], strict=True):
        if not ly.get("weight_memory"):  # built before memory styles: Yosys chose
            lp = replace(lp, memory=None)
        if (lp.layer.name, lp.fold.pe, lp.fold.simd) != (ly["name"], ly["pe"], ly["simd"]):
            raise RuntimeError(f"{case.name}: the plan of {ly['name']} changed since it was "
                               f"synthesized; delete {out} to synthesize it again")
        kind = {"Conv": "conv", "MatMul": "dense"}.get(ly["op"], ly["op"].lower())
        rows.append(Row(case.name, case.split, ly["name"], ly["op"], kind, case.family,
                        case.weights, case.acts, ly["pe"], ly["simd"], layer_counts(lp),
                        {k: float(ly["measured"][k]) for k in RESOURCES},
                        {k: float(ly["estimated"][k]) for k in RESOURCES},
                        layer_parts(lp), measured_parts(out / "synth" / "stat.json",
                                                        ly["name"])))
    return rows


RESOURCES = ("LUT", "FF", "DSP", "BRAM36")
#: relative errors of parts smaller than this many LUTs/FFs count as absolute ones
FIT_FLOOR = 100


def fit(rows: list[Row]) -> dict[str, dict[str, float]]:
    """LUT and FF weights minimizing the squared relative error of every part (unit,
    window, link) of every layer in ``rows`` against the Yosys modules of that part (weights
    kept non-negative: every component costs something or nothing, never less)."""
    try:
        from scipy.optimize import nnls
    except ImportError:
        raise BitloomError("fitting the cost model needs SciPy: pip install "
                           "'bitloom[calibrate]'.") from None

    from bitloom.plan.cost import COEFFICIENTS, FF_COUNTS

    samples = [(counts, r.measured_parts.get(part, dict.fromkeys(RESOURCES, 0.0)))
               for r in rows for part, counts in r.parts.items()]
    out = {}
    for resource in ("LUT", "FF"):
        names = list(COEFFICIENTS[resource])
        keys = names if resource == "LUT" else [FF_COUNTS[n] for n in names]
        scale = [max(m[resource], FIT_FLOOR) for _, m in samples]
        a = np.array([[c.get(k, 0.0) / s for k in keys]
                      for (c, _), s in zip(samples, scale, strict=True)])
        b = np.array([m[resource] / s for (_, m), s in zip(samples, scale, strict=True)])
        used = a.any(axis=0)
        coef = np.zeros(len(keys))
        coef[used] = nnls(a[:, used], b)[0]
        out[resource] = {n: round(float(c), 4) for n, c in zip(names, coef, strict=True)}
    return out


def groups(rows: list[Row]) -> dict[str, list[Row]]:
    """Rows by family, by family and kind (dense/conv), and all."""
    out: dict[str, list[Row]] = {"all": rows}
    for r in rows:
        out.setdefault(r.family, []).append(r)
        out.setdefault(f"{r.family}, {r.kind}", []).append(r)
    return dict(sorted(out.items()))


def summarize(rows: list[Row], estimate: str = "estimated") -> dict[str, dict]:
    """Mean |error| and range per group, for LUTs and FFs (relative) and for DSPs and
    BRAM36 (mean absolute difference, in units)."""
    out = {}
    for name, members in groups(rows).items():
        entry: dict = {"layers": len(members)}
        for res in ("LUT", "FF"):
            errs = [r.error(res, estimate) for r in members]
            entry[res] = {"mean_abs": round(float(np.mean(np.abs(errs))), 4),
                          "min": round(min(errs), 4), "max": round(max(errs), 4)}
        for res in ("DSP", "BRAM36"):
            entry[res] = {"mean_abs_diff": round(float(np.mean(
                [abs(getattr(r, estimate)[res] - r.measured[res]) for r in members])), 3),
                "estimated": sum(getattr(r, estimate)[res] for r in members),
                "measured": sum(r.measured[res] for r in members)}
        out[name] = entry
    return out


def designs(rows: list[Row]) -> dict[str, dict]:
    """Per case, the sums over its layers (what the planner compares with a board)."""
    out: dict[str, dict] = {}
    for r in rows:
        d = out.setdefault(r.case, {"split": r.split, **{k: dict.fromkeys(RESOURCES, 0.0)
                                                        for k in ("estimated", "measured",
                                                                  "before")}})
        for k in ("estimated", "measured", "before"):
            for res in RESOURCES:
                d[k][res] += getattr(r, k)[res]
    return out


def leave_one_case_out(rows: list[Row]) -> list[float]:
    """LUT error of every layer with the weights fitted on all other cases' layers."""
    from bitloom.plan.cost import estimate_counts

    errs = []
    for r in rows:
        coefficients = fit([q for q in rows if q.case != r.case])
        est = estimate_counts(r.counts, coefficients)["LUT"]
        errs.append((est - r.measured["LUT"]) / max(r.measured["LUT"], 1))
    return errs


def markdown(rows: list[Row], result: dict) -> str:
    """The held-out (and training) error table and every layer, for docs."""
    lines = ["# Cost model against Yosys (`python -m bitloom.dse.calibrate`)", "",
             "Generated; LUT/FF: (estimate - Yosys) / Yosys per layer; DSP/BRAM36: mean "
             "absolute difference per layer, and totals estimated/measured. `before`: the "
             "model these designs were compiled with.", ""]
    for split in (s for s in ("test", "train") if s in result):
        title = "Held-out layers (not used in the fit)" if split == "test" else \
            "Training layers (the fit's own data)"
        lines += [f"## {title}", "",
                  r"| group | layers | LUT mean \|err\| (before) | LUT range | FF mean \|err\| "
                  "| DSP est/meas | BRAM36 est/meas |", "|---|---|---|---|---|---|---|"]
        now, before = result[split]["after"], result[split]["before"]
        for name, e in now.items():
            lines.append(
                f"| {name} | {e['layers']} | {e['LUT']['mean_abs']:.0%} "
                f"({before[name]['LUT']['mean_abs']:.0%}) | {e['LUT']['min']:+.0%} .. "
                f"{e['LUT']['max']:+.0%} | {e['FF']['mean_abs']:.0%} | "
                f"{e['DSP']['estimated']:g}/{e['DSP']['measured']:g} | "
                f"{e['BRAM36']['estimated']:g}/{e['BRAM36']['measured']:g} |")
        lines.append("")
    lines += ["## Whole designs (sum over layers)", "",
              "| case | split | LUT est / Yosys | err | before | FF est / Yosys | DSP est / Yosys "
              "| BRAM36 est / Yosys |", "|---|---|---|---|---|---|---|---|"]
    for case, d in result["designs"].items():
        e, m, b = d["estimated"], d["measured"], d["before"]
        lines.append(f"| {case} | {d['split']} | {e['LUT']:g} / {m['LUT']:g} | "
                     f"{(e['LUT'] - m['LUT']) / m['LUT']:+.0%} | "
                     f"{(b['LUT'] - m['LUT']) / m['LUT']:+.0%} | {e['FF']:g} / {m['FF']:g} | "
                     f"{e['DSP']:g} / {m['DSP']:g} | {e['BRAM36']:g} / {m['BRAM36']:g} |")
    lines.append("")
    loo = result["leave_one_case_out"]
    lines += [f"Leave-one-design-out over all {loo['layers']} layers: LUT mean |error| "
              f"{loo['mean_abs']:.0%} ({loo['min']:+.0%} .. {loo['max']:+.0%}).", "",
              "Fitted weights (training layers): " + "; ".join(
                  f"{res}: " + ", ".join(f"{k} {v:g}" for k, v in ws.items())
                  for res, ws in result["coefficients"].items()), "",
              "## Every layer", "",
              "| case | split | layer | PE x SIMD | LUT est / Yosys | err | before | FF est / "
              "Yosys | DSP est / Yosys | BRAM36 est / Yosys |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        e, m = r.estimated, r.measured
        lines.append(f"| {r.case} | {r.split} | {r.layer} | {r.pe} x {r.simd} | "
                     f"{e['LUT']:g} / {m['LUT']:g} | {r.error():+.0%} | "
                     f"{r.error('LUT', 'before'):+.0%} | {e['FF']:g} / {m['FF']:g} | "
                     f"{e['DSP']:g} / {m['DSP']:g} | {e['BRAM36']:g} / {m['BRAM36']:g} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    from bitloom.plan.cost import COEFFICIENTS, estimate_counts

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="JSON file for the rows and summary "
                        "(a markdown table goes next to it, .md)")
    parser.add_argument("--work", default="build/dse-calibration")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--cases", nargs="+", help="case names to run (default: all)")
    parser.add_argument("--no-synth", action="store_true",
                        help="use only the cases synthesized already")
    args = parser.parse_args(argv)
    work = Path(args.work)
    cases = [c for c in CASES if not args.cases or c.name in args.cases]
    if args.no_synth:
        cases = [c for c in cases if (work / c.name / "report.json").is_file()
                 and "synth" in json.loads((work / c.name / "report.json").read_text())]
    else:
        with ProcessPoolExecutor(args.jobs) as pool:
            list(pool.map(synthesize_case, cases, [work] * len(cases)))
    rows = [r for c in cases for r in case_rows(c, work / c.name)]
    train = [r for r in rows if r.split == "train"]
    coefficients = fit(train)
    for r in rows:
        r.estimated = estimate_counts(r.counts, coefficients)
    if coefficients != COEFFICIENTS:
        print("note: plan/cost.py's COEFFICIENTS differ from this fit; paste these:")
    print(json.dumps(coefficients))
    for r in rows:
        print(f"{r.split:5} {r.case:14} {r.layer:6} {r.pe:2}x{r.simd:<2} LUT est "
              f"{r.estimated['LUT']:6.0f} yosys {r.measured['LUT']:6.0f} {r.error():+6.0%} "
              f"(before {r.error('LUT', 'before'):+6.0%})  FF {r.error('FF'):+5.0%}  DSP "
              f"{r.estimated['DSP']:g}/{r.measured['DSP']:g}  BRAM36 "
              f"{r.estimated['BRAM36']:g}/{r.measured['BRAM36']:g}", flush=True)
    loo = leave_one_case_out(rows) if len({r.case for r in rows}) > 1 else [0.0]
    result = {
        "coefficients": coefficients,
        **{split: {"cases": sorted({r.case for r in part}),
                   "after": summarize(part), "before": summarize(part, "before")}
           for split, part in (("test", [r for r in rows if r.split == "test"]),
                                ("train", train)) if part},
        "leave_one_case_out": {"layers": len(loo),
                               "mean_abs": round(float(np.mean(np.abs(loo))), 4),
                               "min": round(min(loo), 4), "max": round(max(loo), 4)},
        "designs": designs(rows),
        "rows": [{**asdict(r), "error": round(r.error(), 4)} for r in rows],
    }
    out = Path(args.out)
    out.write_text(json.dumps(result, indent=1) + "\n")
    out.with_suffix(".md").write_text(markdown(rows, result))
    print("held-out LUT mean |error| per group (before -> after):")
    for name, e in result.get("test", {}).get("after", {}).items():
        print(f"  {name:22} {e['layers']:3} layers  "
              f"{result['test']['before'][name]['LUT']['mean_abs']:6.0%} -> "
              f"{e['LUT']['mean_abs']:5.0%}   FF {e['FF']['mean_abs']:5.0%}")
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except BitloomError as exc:
        print(f"bitloom: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
