"""Benchmark (not a test): quantize 10**7 float32 values with every format family.

    .venv/bin/python bench/bench_formats.py [--n 10000000] [--repeat 3] [--out FILE.md]

Prints (and with ``--out`` writes) a Markdown table: best-of-``repeat`` wall time of
``fmt.quantize(x)`` per format, the throughput, and for ml_dtypes-backed formats the time of
the ml_dtypes cast ``x.astype(dtype).astype(float64)`` that computes the same values.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import time
from collections.abc import Callable

import ml_dtypes
import numpy as np

from bitloom.formats import NAMED, Block, parse_format

FORMATS = ["int8", "uint4", "ternary", "bipolar", "fixed8.4", "ufixed16.12", "float8_e4m3fn",
           "float8_e4m3fnuz", "float8_e5m2", "float8_e5m2fnuz", "float6_e3m2fn",
           "float6_e2m3fn", "float4_e2m1fn", "float8_e8m0fnu", "bfloat16", "e4m3_fn",
           "e4m3_max448", "e5m2_ieee_nosat", "mxfp8_e4m3", "mxfp8_e5m2", "mxfp6_e3m2",
           "mxfp6_e2m3", "mxfp4", "mxint8", "int8@32:float32"]


def _best(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def _machine() -> list[str]:
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return [f"- date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}",
            f"- nproc: {os.cpu_count()}", f"- CPU: {cpu}",
            f"- python {platform.python_version()}, numpy {np.__version__}, "
            f"ml_dtypes {ml_dtypes.__version__}"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10**7)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    # magnitudes over 2**-16 .. 2**16 so every format sees underflow, its range and overflow
    x = (rng.standard_normal(args.n) * np.exp2(rng.uniform(-16, 16, args.n))).astype(np.float32)
    rows = ["| format | quantize (s) | Mvalues/s | ml_dtypes cast (s) |", "|---|---:|---:|---:|"]
    for name in FORMATS:
        fmt = parse_format(name)
        if isinstance(fmt, Block) and name not in NAMED:  # model-supplied float32 scales
            scales = rng.uniform(0.01, 1, -(-args.n // fmt.block_size)).astype(np.float32)
            t = _best(lambda fmt=fmt, s=scales: fmt.quantize(x, scales=s), args.repeat)
        else:
            t = _best(lambda fmt=fmt: fmt.quantize(x), args.repeat)
        cast = ""
        if name.startswith(("float", "bfloat")):
            dtype = getattr(ml_dtypes, name)
            cast = f"{_best(lambda d=dtype: x.astype(d).astype(np.float64), args.repeat):.3f}"
        rows.append(f"| {name} | {t:.3f} | {args.n / t / 1e6:.1f} | {cast} |")
        print(rows[-1], flush=True)
    report = "\n".join([f"Quantizing {args.n} float32 values, best of {args.repeat}.", "",
                        *_machine(), "", *rows, ""])
    print(report)
    if args.out:
        with open(args.out, "w") as f:
            f.write(report)


if __name__ == "__main__":
    main()
