"""The onnx wheel's light zoo topologies, quantized by onnxruntime's ``quantize_static`` as
QDQ and as QOperator (per-channel weights, random non-degenerate weights), each imported by
bitloom and compared with onnxruntime on a seeded batch.

Outcomes: ``agrees`` (identical argmax, golden within one output step of onnxruntime),
``beyond one step`` (the distance in output steps, whether the argmax agrees, and a
teacher-forced comparison: every layer fed onnxruntime's own input codes), or
``refused`` with bitloom's message.

Run: ``.venv/bin/python bench/ort_zoo.py [--models resnet50 ...] [--forms QDQ QOperator]
[--frames 4] [--out docs/results/DATE-ort-zoo]``; results are appended as they arrive.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import zoo_models as zm
from reference_check import layer_by_layer, output_step, run_reference

import bitloom
from bitloom.errors import BitloomError


def outcome(path: Path, frames: int) -> dict:
    """Import, run golden and onnxruntime on ``frames`` seeded frames, compare."""
    x = zm.zoo_input(path, frames)
    start = time.time()
    try:
        net = bitloom.load(path)
    except BitloomError as exc:
        return {"outcome": "refused", "detail": str(exc).replace(str(path), "FILE"),
                "seconds": time.time() - start}
    golden = net.run(x)
    reference, _ = run_reference(path, "qdq", x)
    step = output_step(onnx.load(str(path), load_external_data=False))
    steps = float(np.abs(golden.astype(np.float64) - reference).max()) / step
    same = bool((golden.reshape(frames, -1).argmax(1)
                 == reference.reshape(frames, -1).argmax(1)).all())
    agrees = same and steps <= 1 + 1e-4
    detail = f"{steps:.2f} output steps at most; argmax {'same' if same else 'DIFFERS'}"
    if not agrees:  # is golden wrong, or onnxruntime's float32 rounding amplified?
        forced = [r for r in layer_by_layer(path, x[:1]) if r["forced_count"] is not None]
        changed = sum(r["forced_count"] for r in forced)
        total = sum(r["size"] for r in forced)
        detail += (f"; teacher-forced over {len(forced)} layers: {changed} of {total:,} "
                   f"codes differ, by at most {max(r['forced_max'] for r in forced)}")
    return {"outcome": "agrees" if agrees else "beyond one step", "detail": detail,
            "layers": len(net.layers), "seconds": time.time() - start}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--models", nargs="+", default=zm.available())
    ap.add_argument("--forms", nargs="+", default=["QDQ", "QOperator"])
    ap.add_argument("--frames", type=int, default=4)
    ap.add_argument("--out", default=f"docs/results/{time.strftime('%Y-%m-%d')}-ort-zoo")
    args = ap.parse_args()
    logging.disable(logging.WARNING)  # onnxruntime's quantizer warns once per weight
    cache = Path(tempfile.gettempdir()) / "bitloom-bench-zoo"
    jsonl = Path(f"{args.out}.jsonl")
    for name in args.models:
        for form in args.forms:
            start = time.time()
            path, _ = zm.quantized_zoo_model(name, cache, fmt=form, per_channel=True)
            quantized = time.time() - start
            result = {"model": name, "form": form, "quantize_seconds": round(quantized, 1),
                      **outcome(path, args.frames)}
            result["seconds"] = round(result["seconds"], 1)
            print(json.dumps(result), flush=True)
            with jsonl.open("a") as handle:
                handle.write(json.dumps(result) + "\n")
    write_table(jsonl, Path(f"{args.out}.md"), args.frames)


def write_table(jsonl: Path, md: Path, frames: int) -> None:
    """The last result of each (model, form) as a markdown table."""
    latest: dict[tuple[str, str], dict] = {}
    for line in jsonl.read_text().splitlines():
        row = json.loads(line)
        latest[(row["model"], row["form"])] = row
    agree = sum(r["outcome"] == "agrees" for r in latest.values())
    lines = [f"Machine: {platform.node()} ({platform.machine()}), {time.strftime('%Y-%m-%d')}; "
             f"{frames} seeded frames per model; {agree} of {len(latest)} files agree.", "",
             "| model | form | outcome | detail | golden layers | import + run s |",
             "|---|---|---|---|---|---|"]
    for (name, form), row in sorted(latest.items()):
        detail = row["detail"].replace("|", "/").replace("\n", " ")
        lines.append(f"| {name} | {form} | {row['outcome']} | {detail} | "
                     f"{row.get('layers', '')} | {row['seconds']} |")
    md.write_text("\n".join(lines) + "\n")
    print(md.read_text())


if __name__ == "__main__":
    main()
