"""Golden-model throughput against qonnx's executor on a small CNN (batch of 64).

Run: ``.venv/bin/python bench/golden_vs_qonnx.py`` — prints a table and writes
``docs/results/golden-vs-qonnx.md`` with the machine and date. qonnx's ``execute_onnx``
runs one sample per call (its models have a fixed batch of 1); bitloom's golden model runs
the batch at once on integers. Both are timed on the same inputs after one warm-up, and
their outputs are compared so the speed is of the same answer.
"""

from __future__ import annotations

import platform
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import bitloom  # noqa: E402

from qonnx_models import random_cnn, run_qonnx  # noqa: E402

BATCH = 64


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    rows = []
    for name, kwargs in (("conv-pool-gap-fc", {}), ("residual", {"residual": True}),
                         ("depthwise", {"depthwise": True}), ("16x16 input",
                                                              {"shape": (2, 16, 16)})):
        model = random_cnn(seed=0, **kwargs)
        shape = tuple(d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim)
        x = np.random.default_rng(0).normal(size=(BATCH, *shape[1:])).astype(np.float32)
        net = bitloom.load(model)
        same = np.array_equal(net.run(x), run_qonnx(model, x))
        golden = best_of(lambda net=net, x=x: net.run(x), 5)
        qonnx = best_of(lambda model=model, x=x: run_qonnx(model, x), 2)
        rows.append((name, golden, qonnx, same))
    lines = [
        f"# Golden model vs qonnx execute_onnx ({date.today()})", "",
        f"Machine: {platform.machine()}, {platform.processor() or 'cpu'}, "
        f"Python {platform.python_version()}. Batch {BATCH}, best of 5 (golden) / 2 (qonnx).",
        "", "| model | golden (ms) | qonnx (ms) | speed-up | outputs identical |",
        "|---|---:|---:|---:|---|",
    ]
    for name, g, q, same in rows:
        lines.append(f"| {name} | {g * 1e3:.1f} | {q * 1e3:.1f} | {q / g:.0f}x | "
                     f"{'yes' if same else 'NO'} |")
    text = "\n".join(lines) + "\n"
    print(text)
    out = ROOT / "docs" / "results" / "golden-vs-qonnx.md"
    out.write_text(text)


if __name__ == "__main__":
    main()
