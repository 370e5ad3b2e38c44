"""FINN's benchmark networks through bitloom, as a FINN user would run them, side by side with
FINN's published numbers (a benchmark run, not a test; ``tests/test_finn_zoo.py`` and
``tests/test_imagenet_zoo.py`` check the same models in the suite).

    .venv/bin/python bench/finn_zoo.py [--nets N ...] [--boards B ...] [--stages S ...]
                                       [--resume] [--out docs/results/DATE-finn-zoo.md]

The 14 configurations: bnn_pynq's TFC/SFC/LFC/CNV (11, exported by tests/finn_zoo_models.py)
and resnet18_4w4a, quant_mobilenet_v1_4b and quant_proxylessnas_mobile14_4b (exported by
tests/imagenet_zoo_models.py), random weights (``pretrained=False``; only exactness and size
are measured). Stages, each through the command line where a user would use it:

- ``golden``: ``bitloom.load`` (the 224x224 nets with ``--input-format uint8 --input-scale
  1/255``) against qonnx's ``execute_onnx`` on 16 random inputs (1 for the 224x224 nets);
- ``compile``: ``bitloom compile --board B`` for each board: cycles/frame, frames/s,
  estimated LUT/FF/BRAM36/DSP, or the refusal;
- ``verify``: ``bitloom verify`` (64 frames for TFC/SFC/LFC, 8 for CNV, 1 for MobileNet-v1
  on the ZCU104): bit-exact, measured against planned cycles;
- ``synth``: ``bitloom synth`` (Yosys) for TFC-w1a1, CNV-w1a1 and CNV-w2a2 on the PYNQ-Z2.

Rows stream to ``build/finn-zoo/results.jsonl`` (``--resume`` skips rows already there); the
summary is rewritten after every row.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "bench")]

from boards_cnn import log, machine, run, tool_versions  # noqa: E402

WORK = ROOT / "build" / "finn-zoo"
BOARDS = ("pynq-z2", "ultra96-v2", "zcu104")
BNN = ("tfc_1w1a", "tfc_1w2a", "tfc_2w2a", "sfc_1w1a", "sfc_1w2a", "sfc_2w2a", "lfc_1w1a",
       "lfc_1w2a", "cnv_1w1a", "cnv_1w2a", "cnv_2w2a")
LARGE = ("resnet18_4w4a", "mobilenet_v1_4b", "proxylessnas_mobile14_4b")
IMAGES_224 = ("mobilenet_v1_4b", "proxylessnas_mobile14_4b")
DECLARED = ("--input-format", "uint8", "--input-scale", "1/255")
SYNTH = {("tfc_1w1a", "pynq-z2"), ("cnv_1w1a", "pynq-z2"), ("cnv_2w2a", "pynq-z2")}
#: FINN's published figures on the xc7z020 class (PYNQ-Z1/Z2), frames/s
FINN = {"tfc_1w1a": ("finn-examples bnn-pynq, Pynq-Z1, 100 MHz", 837_019),
        "cnv_1w1a": ("finn-examples bnn-pynq, Pynq-Z1, 100 MHz", 3_020)}
GOALS = {"tfc_1w1a": 12.5e6, "cnv_1w1a": 9_000}


NOTES = """## Reading the numbers

- *Golden.* The bnn-pynq nets end in a float multiplication (the last BatchNorm's scale), so
  they have no output grid ("output step" nan); their golden outputs are compared value for
  value. The ImageNet nets with random weights amplify any one-step difference layer after
  layer: MobileNet-v1's three codes that differ from qonnx (each where qonnx's own float32
  value sits on a rounding boundary, to within 1e-6 of a step) grow into thousands of output
  steps, and the argmax moves. Fed qonnx's codes for its inputs, every layer gives qonnx's
  codes but for those, which is the exactness check (tests/test_imagenet_zoo.py).
- *CNV's first layer* reads 3 channels, so its SIMD is at most 3 and it needs 8,100 cycles per
  frame at any width: CNV stops there on the larger boards.
- *The larger nets* hold 16.8 (MobileNet-v1), 27.2 (ProxylessNAS) and 44.7 (ResNet-18) Mbit
  of weights; block RAM under 80% holds 4.0 (PYNQ-Z2) to 9.2 Mbit (ZCU104). What block RAM
  and LUT ROMs do not hold streams from DDR, again for every output pixel of a convolution:
  116-196 MB per frame, which bounds them to tens of frames/s. The ZCU104's UltraRAM (96
  blocks, 27.6 Mbit) would hold MobileNet-v1's weights, but UltraRAM cannot be initialised by
  the bitstream: it needs weights loaded at run time, which bitloom does not build yet.
- *ProxylessNAS* on the PYNQ-Z2 and Ultra96-V2: its 76 layers' thresholds and line buffers
  alone, fully folded, exceed the block RAM (and, on the PYNQ-Z2, the LUT) ceilings, so it is
  refused by name; the weights are not the reason.
- Estimated resources come from bitloom's cost model (docs/dse.md); the synth rows are
  Yosys's counts (`bitloom synth DIR --json`, run on copies of the compiled folders while the
  verify stage ran; the Yosys times are wall times on the shared machine).
""".splitlines()


def verify_samples(net: str, board: str) -> int | None:
    if net.startswith(("tfc", "sfc", "lfc")) and board == "pynq-z2":
        return 64
    if net.startswith("cnv") and board == "pynq-z2":
        return 8
    if net == "mobilenet_v1_4b" and board == "zcu104":
        return 1
    return None


def model_path(net: str) -> Path:
    if net in LARGE:
        import imagenet_zoo_models as iz

        return iz.cached_export(net)
    import finn_zoo_models as fz

    return fz.cached_export(net)


def declared(net: str) -> tuple[str, ...]:
    return DECLARED if net in LARGE else ()


def golden_row(net: str) -> dict:
    """Golden against qonnx's executor: max difference in output steps, argmax agreement."""
    import numpy as np
    import onnx
    from reference_check import layerwise_against_qonnx, output_step

    import bitloom

    from qonnx_models import run_qonnx

    start = time.monotonic()
    path = model_path(net)
    export_s = time.monotonic() - start
    start = time.monotonic()
    model = bitloom.load(path, *(("uint8", "1/255") if net in LARGE else ()))
    load_s = time.monotonic() - start
    if net in LARGE:
        import imagenet_zoo_models as iz

        x = iz.images(net, 1 if net in IMAGES_224 else 16)
    else:
        import finn_zoo_models as fz

        x = fz.images(net, 16)
    golden = model.run(x)
    reference = run_qonnx(onnx.load(str(path)), x)
    try:
        step = output_step(onnx.load(str(path)))
    except AssertionError:  # bnn_pynq nets end in a float Mul by the last BN scale
        step = float("nan")
    diff = float(np.abs(golden.astype(np.float64) - reference).max())
    row = {"frames": len(x), "export_s": export_s, "load_s": load_s,
           "layers": len(model.layers), "macs": int(sum(ly.macs for ly in model.layers)),
           "max_diff": diff, "step": step,
           "argmax_equal": bool((golden.argmax(1) == reference.argmax(1)).all())}
    if net in LARGE:  # every layer on qonnx's own inputs (see tests/test_imagenet_zoo.py)
        layers = layerwise_against_qonnx(model, path, x[:1])
        row["layerwise"] = {"codes": sum(r["codes"] for r in layers),
                            "differ": sum(r["differ"] for r in layers),
                            "max": max(r["max"] for r in layers),
                            "all_at_float32_boundaries": all(r["all_at_boundaries"]
                                                             for r in layers)}
    return row


def compile_row(net: str, board: str) -> dict:
    out = WORK / f"{net}-{board}"
    status, _, secs = run(["compile", str(model_path(net)), "--board", board, "--out",
                                str(out), *declared(net)], out.with_suffix(".compile.log"))
    row: dict = {"status": status, "compile_s": secs}
    if status != 0:
        row["error"] = out.with_suffix(".compile.log").read_text().split("--- stderr\n")[-1]
        return row
    report = json.loads((out / "report.json").read_text())
    row.update(cycles=report["cycles_per_frame"], fps=report["frames_per_second"],
               clock=report["clock_mhz"], estimated=report["totals"]["estimated"],
               ddr=report["weights_from_ddr"],
               memories=sorted({(ly["weight_memory"] or {}).get("style", "-")
                                for ly in report["layers"]} - {"-"}))
    return row


def verify_row(net: str, board: str, samples: int) -> dict:
    out = WORK / f"{net}-{board}"
    status, stdout, secs = run(["verify", str(out), "--samples", str(samples)],
                               out.with_suffix(".verify.log"))
    result = json.loads((out / "report.json").read_text()).get("verification", {})
    return {"status": status, "verify_s": secs, "samples": samples, "result": result,
            "stdout": stdout.strip().splitlines()[-1:] }


def synth_row(net: str, board: str) -> dict:
    out = WORK / f"{net}-{board}"
    status, _, secs = run(["synth", str(out), "--json"], out.with_suffix(".synth.log"))
    synth = json.loads((out / "report.json").read_text()).get("synth", {})
    return {"status": status, "synth_s": secs, "resources": synth.get("resources", {})}


def run_stage(net: str, stage: str, board: str | None) -> dict:
    if stage == "golden":
        return golden_row(net)
    if stage == "compile":
        return compile_row(net, board)
    if stage == "verify":
        return verify_row(net, board, verify_samples(net, board))
    return synth_row(net, board)


def summary(rows: list[dict], load: tuple) -> str:
    by = {(r["net"], r["stage"], r.get("board")): r for r in rows}
    lines = [f"# FINN's benchmark networks through bitloom ({date.today().isoformat()})", "",
             f"Machine: {machine()}. Tools: {tool_versions()}. Load average at the start: "
             f"{load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} (a shared machine: other jobs ran "
             "beside it, so wall times are upper bounds). Produced by `bench/finn_zoo.py` "
             "(rows appended as measured, `--resume` across invocations); every figure below "
             "is measured, estimates are labelled.", "",
             "## Import and golden against qonnx's executor", "",
             "| net | layers | MACs/frame | frames | max \\|golden - qonnx\\| | output step "
             "| argmax equal | export s | import s |",
             "|---|---:|---:|---:|---:|---:|---|---:|---:|"]
    for net in (*BNN, *LARGE):
        r = by.get((net, "golden", None))
        if r is None:
            continue
        if "error" in r:
            lines.append(f"| {net} | refused: {r['error'][:160]} |||||||")
            continue
        lines.append(f"| {net} | {r['layers']} | {r['macs']:,} | {r['frames']} | "
                     f"{r['max_diff']:.3g} | {r['step']:.3g} | {r['argmax_equal']} | "
                     f"{r['export_s']:.0f} | {r['load_s']:.1f} |")
    layerwise = [(net, by[(net, "golden", None)]["layerwise"]) for net in LARGE
                 if "layerwise" in by.get((net, "golden", None), {})]
    if layerwise:
        lines += ["", "Every layer fed qonnx's codes for its inputs (one frame): codes that "
                  "differ from qonnx's, and whether each lies at a rounding boundary of "
                  "qonnx's own float32 value (within 1e-4 of a step):", "",
                  "| net | codes | differ | max difference | all at float32 boundaries |",
                  "|---|---:|---:|---:|---|"]
        lines += [f"| {net} | {w['codes']:,} | {w['differ']} | {w['max']} | "
                  f"{w['all_at_float32_boundaries']} |" for net, w in layerwise]
    lines += ["", "## Compile (plan and RTL); resources are the cost model's estimates", "",
              "| net | board | cycles/frame | frames/s | est. LUT | est. FF | est. BRAM36 "
              "| est. DSP | weights | DDR MB/frame | compile s |",
              "|---|---|---:|---:|---:|---:|---:|---:|---|---:|---:|"]
    for net in (*BNN, *LARGE):
        for board in BOARDS:
            r = by.get((net, "compile", board))
            if r is None:
                continue
            if r["status"] != 0:
                message = " ".join(r.get("error", "").split())[:200]
                lines.append(f"| {net} | {board} | refused: {message} ||||||||"
                             f" {r['compile_s']:.0f} |")
                continue
            e = r["estimated"]
            lines.append(f"| {net} | {board} | {r['cycles']:,} | {r['fps']:,.0f} | "
                         f"{e.get('LUT', 0):,.0f} | {e.get('FF', 0):,.0f} | "
                         f"{e.get('BRAM36', 0):g} | {e.get('DSP', 0):g} | "
                         f"{', '.join(r['memories'])} | {r['ddr']['bits_per_frame'] / 8e6:.2f} "
                         f"| {r['compile_s']:.0f} |")
    lines += ["", "## Verify (Verilator, random back-pressure) and synth (Yosys)", "",
              "| net | board | stage | result | wall s |", "|---|---|---|---|---:|"]
    for r in rows:
        if r["stage"] == "verify":
            v = r["result"]
            text = (f"{r['samples']} frames: {'bit-exact' if v.get('bit_exact') else 'MISMATCH'}"
                    f"; cycles/frame measured {v.get('measured_cycles_per_frame')} vs planned "
                    f"{v.get('expected_cycles_per_frame')}") if v else f"exit {r['status']}"
            lines.append(f"| {r['net']} | {r['board']} | verify | {text} | {r['verify_s']:.0f} |")
        elif r["stage"] == "synth":
            res = r["resources"]
            text = ", ".join(f"{k} {res[k]:,.0f}" for k in ("LUT", "FF", "BRAM36", "DSP")
                             if k in res) or f"exit {r['status']}"
            lines.append(f"| {r['net']} | {r['board']} | synth | {text} | {r['synth_s']:.0f} |")
    lines += ["", "## Side by side with FINN (xc7z020 class, 100 MHz)", "",
              "| net | FINN (published) | bitloom PYNQ-Z2 (planned) | goal |", "|---|---|---|---|"]
    for net, (source, fps) in FINN.items():
        r = by.get((net, "compile", "pynq-z2"))
        ours = f"{r['fps']:,.0f} frames/s" if r and r["status"] == 0 else "-"
        lines.append(f"| {net} | {fps:,} frames/s ({source}) | {ours} | "
                     f"{GOALS[net]:,.0f} frames/s |")
    lines += ["", "MLPerf Tiny v0.7 lists FINN's CNV-W1A1 on the PYNQ-Z2 at 661 inferences/s at "
              "system level (with the host's pre- and post-processing), not comparable with "
              "the accelerator's own rate above.", "", *NOTES]
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--nets", nargs="+", default=[*BNN, *LARGE])
    p.add_argument("--boards", nargs="+", default=list(BOARDS))
    p.add_argument("--stages", nargs="+", default=["golden", "compile", "verify", "synth"])
    p.add_argument("--resume", action="store_true")
    p.add_argument("--out", default=str(ROOT / "docs" / "results"
                                        / f"{date.today().isoformat()}-finn-zoo.md"))
    args = p.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    results = WORK / "results.jsonl"
    rows = [json.loads(line) for line in results.read_text().splitlines()] \
        if args.resume and results.exists() else []
    results.write_text("".join(json.dumps(r) + "\n" for r in rows))
    done = {(r["net"], r["stage"], r.get("board")) for r in rows}
    load = os.getloadavg()
    plan = [(net, "golden", None) for net in args.nets]
    plan += [(net, "compile", b) for net in args.nets for b in args.boards]
    plan += [(net, "verify", b) for net in args.nets for b in args.boards
             if verify_samples(net, b)]
    plan += [(net, "synth", b) for net, b in sorted(SYNTH) if net in args.nets]
    for net, stage, board in plan:
        if stage not in args.stages or (net, stage, board) in done:
            continue
        log(f"{net} {stage} {board or ''}")
        if stage in ("verify", "synth") and not (WORK / f"{net}-{board}" / "report.json").exists():
            continue
        try:
            row = run_stage(net, stage, board)
        except Exception as exc:  # a refusal or a crash is a result to report
            row = {"status": -1, "error": f"{type(exc).__name__}: {exc}"}
        row.update(net=net, stage=stage, board=board)
        rows.append(row)
        with results.open("a") as f:
            f.write(json.dumps(row) + "\n")
        Path(args.out).write_text(summary(rows, load))
    Path(args.out).write_text(summary(rows, load))
    log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
