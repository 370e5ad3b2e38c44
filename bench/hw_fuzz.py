"""Hardware fuzzer: hundreds of seeded random models through Verilator (a benchmark run, not a
test; ``tests/test_hw_fuzz.py`` runs a seeded subset).

    .venv/bin/python bench/hw_fuzz.py [--count 300] [--start 0] [--jobs 2] [--resume]
                                      [--results FILE.jsonl] [--shrink]
                                      [--out docs/results/DATE-hw-fuzz.md]

Each seed (tests/hw_fuzz_models.py) is a small DAG (conv, depthwise, max pool, requantize
chains, residual adds with shared or separate quantizers, concatenations; integers of 2-8
bits, binary weights, OCP minifloats), exported by Brevitas as QONNX or QCDQ or quantized
by onnxruntime as QDQ. It goes through golden against the reference executor, then
``bitloom compile`` with a random folding, board and weight memory and ``bitloom verify``
(random back-pressure, every layer checked, cycles per frame within 5% of the plan).

Results stream to ``--results`` (``build/hw-fuzz/results.jsonl``) as they arrive
(``--resume`` skips the seeds already there, so a run can be stopped and continued, and the
summary rewritten from the file alone); every worker's own output goes to
``build/hw-fuzz/worker.log``. The
summary (counts per stage and per source, every failure with its message, shrunk with
``--shrink``) is written to ``--out`` with the machine and date.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import sys
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

WORK = ROOT / "build" / "hw-fuzz"


def _quiet_worker(log: str) -> None:
    """Send this worker's stdout/stderr (exporter and Verilator chatter) to the log."""
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    os.dup2(fd, 1)
    os.dup2(fd, 2)


def one(seed: int, shrink: bool) -> dict:
    import shutil

    from hw_fuzz_models import random_spec
    from hw_fuzz_run import run_spec, shrunk

    work = WORK / f"seed{seed}"
    outcome = run_spec(random_spec(seed), work)
    row = outcome.as_dict()
    row["source"] = f"{outcome.spec.source}/{outcome.spec.form}"
    if outcome.failed and shrink:
        row["shrunk"] = repr(shrunk(outcome, work / "shrink"))
    if not outcome.failed:
        shutil.rmtree(work, ignore_errors=True)
    return row


def summary(rows: list[dict], seconds: float, jobs: int) -> str:
    stages = Counter(r["stage"] for r in rows)
    verified = [r for r in rows if r["stage"] in ("ok", "rtl", "cycles", "error", "reference")]
    lines = [
        f"# Hardware fuzzer: {len(rows)} random models ({datetime.date.today()})",
        "",
        f"Machine: {platform.node()}, {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}; {jobs} jobs; wall {seconds / 60:.1f} min "
        f"this run (rows from earlier runs kept with --resume).",
        "",
        "Command: `.venv/bin/python bench/hw_fuzz.py " + " ".join(sys.argv[1:]) + "`",
        "",
        "Stages: `export` the exporter could not write the model (not bitloom); `refused` "
        "bitloom refused it by name (load or plan); `rtl` Verilator differs from golden; "
        "`cycles` measured cycles per frame more than 5% from the plan; `error` anything "
        "else (a hang included); `reference` the hardware equals golden at the planned rate "
        "but golden differs from the reference executor; `ok` all of it holds.",
        "",
        "| stage | models |",
        "|---|---|",
        *[f"| {stage} | {stages[stage]} |" for stage in
          ("ok", "rtl", "cycles", "reference", "error", "refused", "export")],
        "",
        f"Through Verilator: {len(verified)}; hardware mismatches: {stages['rtl']}; cycles "
        f"off: {stages['cycles']}; errors (hangs included): {stages['error']}; golden off "
        f"its reference: {stages['reference']}.",
        "",
        "| source | models | ok | failed | refused/export |",
        "|---|---|---|---|---|",
    ]
    for source in sorted({r["source"] for r in rows}):
        mine = [r for r in rows if r["source"] == source]
        bad = sum(r["stage"] in ("rtl", "cycles", "reference", "error") for r in mine)
        ok = sum(r["stage"] == "ok" for r in mine)
        lines.append(f"| {source} | {len(mine)} | {ok} | {bad} | {len(mine) - ok - bad} |")
    cycles = [r for r in verified if r["planned"] and r["measured"]]
    if cycles:
        worst = max(cycles, key=lambda r: abs(r["measured"] / r["planned"] - 1))
        lines += ["", f"Largest cycles-per-frame deviation among verified models: "
                      f"{(worst['measured'] / worst['planned'] - 1):+.1%} (seed {worst['seed']})."]
    seconds_each = sorted(r["seconds"] for r in rows)
    if seconds_each:
        lines += [f"Per model: median {seconds_each[len(seconds_each) // 2]:.0f} s, max "
                  f"{seconds_each[-1]:.0f} s (export, reference, Verilator build and two "
                  "simulations)."]
    failures = [r for r in rows if r["stage"] in ("rtl", "cycles", "reference", "error")]
    lines += ["", "## Failures", ""]
    lines += [f"- seed {r['seed']} `{r['stage']}`: {r['model']} ({r['board']}): "
              f"{r['detail'].splitlines()[-1] if r['detail'] else ''}"
              + (f"; shrunk to `{r['shrunk']}`" if r.get("shrunk") else "")
              for r in failures] or ["None."]
    refused = Counter(r["detail"].split(":")[-1].strip()[:120] for r in rows
                      if r["stage"] in ("refused", "export"))
    lines += ["", "## Refusals (no verdict on the hardware)", ""]
    lines += [f"- {n} x {reason}" for reason, n in refused.most_common()] or ["None."]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--results", type=Path, default=WORK / "results.jsonl")
    parser.add_argument("--shrink", action="store_true")
    parser.add_argument("--source", choices=("brevitas", "ort"),
                        help="only the seeds whose model comes from this exporter")
    parser.add_argument("--out", type=Path,
                        default=ROOT / "docs" / "results" / f"{datetime.date.today()}-hw-fuzz.md")
    args = parser.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    results = args.results
    rows: list[dict] = []
    if args.resume and results.exists():
        rows = [json.loads(line) for line in results.read_text().splitlines() if line]
    elif results.exists():
        results.unlink()
    done = {r["seed"] for r in rows}
    from hw_fuzz_models import random_spec

    seeds = [s for s in range(args.start, args.start + args.count) if s not in done
             and (args.source is None or random_spec(s).source == args.source)]
    start = time.monotonic()
    log = str(WORK / "worker.log")
    with ProcessPoolExecutor(args.jobs, initializer=_quiet_worker, initargs=(log,)) as pool, \
            results.open("a") as out:
        futures = {pool.submit(one, seed, args.shrink): seed for seed in seeds}
        for n, future in enumerate(as_completed(futures), 1):
            try:
                row = future.result()
            except Exception as exc:  # a worker that died: recorded, the run goes on
                seed = futures[future]
                row = {"seed": seed, "model": "", "stage": "error", "source": "?",
                       "detail": f"{type(exc).__name__}: {exc}", "layers": 0, "board": "",
                       "planned": None, "measured": None, "seconds": 0.0}
            rows.append(row)
            out.write(json.dumps(row) + "\n")
            out.flush()
            with contextlib.suppress(Exception):
                print(f"[{n}/{len(seeds)}] seed {row['seed']} {row['stage']} "
                      f"({row['seconds']:.0f} s) {row['model'][:90]}", flush=True)
    rows.sort(key=lambda r: r["seed"])
    args.out.write_text(summary(rows, time.monotonic() - start, args.jobs))
    print(f"wrote {args.out}")
    return 1 if any(r["stage"] in ("rtl", "cycles", "reference", "error") for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
