"""Design-space exploration: which weight/activation format and folding for a board.

Every format pair is quantized (``bitloom quantize``'s ``quantize_model``), its accuracy
measured on the exact golden model, and every distinct folding the planner offers costed
with the first-order cost model (no synthesis: a whole sweep costs seconds per format, not
hours). Two Pareto fronts answer the user's question: accuracy against LUTs at each
format's fastest folding that fits the board, and accuracy against frames per second over
every fitting point.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

import bitloom
from bitloom.boards import load_board
from bitloom.errors import BitloomError
from bitloom.formats import Minifloat, parse_format
from bitloom.plan import plan_design
from bitloom.plan.cost import estimate_plan
from bitloom.plan.folding import candidate_targets
from bitloom.quantize import quantize_model

#: INT 3..8 and minifloats (sign, exponent, mantissa; subnormals, no specials) of 3..8 bits:
#: for each width the exponent/mantissa splits the minifloat literature compares.
DEFAULT_FORMATS: tuple[str, ...] = (
    "int3", "int4", "int5", "int6", "int7", "int8",
    "e1m1", "e2m1", "e1m2", "e2m2", "e3m1", "e2m3", "e3m2", "e3m3", "e4m2", "e4m3", "e3m4",
    "e5m2",
)

#: Columns of pareto.csv, in order.
COLUMNS: tuple[str, ...] = (
    "weights", "acts", "family", "bits", "accuracy", "target_cycles", "cycles_per_frame",
    "fps", "latency_cycles", "LUT", "FF", "DSP", "BRAM36", "utilization", "fits",
    "fastest_fit", "pareto_lut", "pareto_fps", "measured_LUT", "folding", "model",
)

RESOURCES = ("LUT", "FF", "DSP", "BRAM36")


@dataclass(frozen=True)
class Task:
    """One format pair to evaluate in a worker process."""
    model: str
    weights: str
    acts: str
    calib: np.ndarray
    x: np.ndarray
    y: np.ndarray
    board: str
    targets: tuple[int, ...] | None
    method: str
    budget: float
    models_dir: str
    requantizers: tuple[str, ...] = ()


def family(weights: str, acts: str) -> str:
    """"int", "minifloat" or "mixed", for colouring and per-family summaries."""
    kinds = {"minifloat" if isinstance(parse_format(f), Minifloat) else "int"
             for f in (weights, acts)}
    return kinds.pop() if len(kinds) == 1 else "mixed"


def evaluate(task: Task) -> list[dict]:
    """Quantize, measure accuracy, then cost the cheapest plan of every distinct speed the
    targets reach: one row per folding."""
    board = load_board(task.board)
    q = quantize_model(task.model, task.weights, task.acts, task.calib, method=task.method)
    path = Path(task.models_dir) / f"{task.weights}-{task.acts}.onnx"
    onnx.save(q, path)
    net = bitloom.load(q)
    accuracy = float(np.mean(net.run(task.x).argmax(-1) == task.y))
    # A target the slowest layer cannot meet leaves the others faster than they need be:
    # re-planning at the cycles actually reached gives the cheapest plan of that speed.
    # Every point is the design `bitloom compile` would build at that speed.
    reached = {plan_design(net, board, target_cycles=t,
                           requantizers=task.requantizers).cycles_per_frame
               for t in task.targets or candidate_targets(net)}
    best: dict[int, dict] = {}
    for target in sorted(reached):
        plan = plan_design(net, board, target_cycles=target, requantizers=task.requantizers)
        est = estimate_plan(plan)
        cycles = plan.cycles_per_frame
        util = max(est.get(k, 0) / board.resources[k] for k in RESOURCES
                   if board.resources.get(k))
        best[cycles] = {
            "weights": task.weights, "acts": task.acts,
            "family": family(task.weights, task.acts),
            "bits": f"{parse_format(task.weights).bits}/{parse_format(task.acts).bits}",
            "accuracy": round(accuracy, 5), "target_cycles": target,
            "cycles_per_frame": cycles, "fps": round(plan.frames_per_second, 1),
            "latency_cycles": plan.latency_cycles,
            **{k: est.get(k, 0) for k in RESOURCES},
            "utilization": round(util, 4), "fits": util <= task.budget,
            "folding": " ".join(f"{lp.fold.pe}x{lp.fold.simd}" for lp in plan.layers),
            "model": str(path),
        }
    return sorted(best.values(), key=lambda r: r["cycles_per_frame"])


def pareto(points: Sequence[tuple[float, float]]) -> list[bool]:
    """True for the points no other point beats in both coordinates (both maximized):
    ``q`` dominates ``p`` when it is at least as good in both and better in one."""
    return [not any(q[0] >= p[0] and q[1] >= p[1] and q != p for q in points)
            for p in points]


def mark_fronts(rows: list[dict]) -> None:
    """Set ``fastest_fit``, ``pareto_lut`` and ``pareto_fps`` on every row."""
    fastest: dict[tuple[str, str], dict] = {}
    for r in rows:
        r["fastest_fit"] = r["pareto_lut"] = r["pareto_fps"] = False
        key = (r["weights"], r["acts"])
        if r["fits"] and (key not in fastest or
                          (r["cycles_per_frame"], r["LUT"]) <
                          (fastest[key]["cycles_per_frame"], fastest[key]["LUT"])):
            fastest[key] = r
    for r in fastest.values():
        r["fastest_fit"] = True
    chosen = list(fastest.values())
    for r, flag in zip(chosen, pareto([(r["accuracy"], -r["LUT"]) for r in chosen]),
                       strict=True):
        r["pareto_lut"] = flag
    fitting = [r for r in rows if r["fits"]]
    for r, flag in zip(fitting, pareto([(r["accuracy"], r["fps"]) for r in fitting]),
                       strict=True):
        r["pareto_fps"] = flag


def format_pairs(formats: Iterable[str], weights: Iterable[str] | None = None,
                 acts: Iterable[str] | None = None, cross: bool = False) -> list[tuple[str, str]]:
    """The (weights, activations) pairs to sweep: the same format for both (the default),
    every pair (``cross``), or the product of explicit ``weights`` and ``acts`` lists."""
    formats = list(formats)
    if weights or acts:
        pairs = [(w, a) for w in (weights or formats) for a in (acts or formats)]
    elif cross:
        pairs = [(w, a) for w in formats for a in formats]
    else:
        pairs = [(f, f) for f in formats]
    for name in sorted({f for pair in pairs for f in pair}):
        try:
            parse_format(name)  # a typo fails here, before any worker starts
        except ValueError as exc:
            raise BitloomError(str(exc)) from None
    return pairs


def sweep(model: str, calib: np.ndarray, x: np.ndarray, y: np.ndarray, board: str,
          pairs: Sequence[tuple[str, str]], out_dir: Path, *, targets: Sequence[int] | None = None,
          method: str = "mse", budget: float = 0.5, jobs: int = 1,
          on_done: Callable[[tuple[str, str], str | None], None] | None = None,
          requantizers: Sequence[str] = ()) -> tuple[list[dict], list[str]]:
    """Evaluate every pair in ``jobs`` processes; returns the rows (fronts marked) and one
    message per pair that could not be quantized or compiled. ``on_done`` is called as each
    pair finishes (with its error, if any), for a progress bar."""
    models_dir = out_dir / "models"
    models_dir.mkdir(parents=True, exist_ok=True)
    tasks = [Task(model, w, a, calib, x, y, board, tuple(targets) if targets else None,
                  method, budget, str(models_dir), tuple(requantizers)) for w, a in pairs]
    rows: list[dict] = []
    failures: list[str] = []
    with ProcessPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = {pool.submit(evaluate, t): (t.weights, t.acts) for t in tasks}
        for future in as_completed(futures):
            pair = futures[future]
            try:
                rows += future.result()
                error = None
            except BitloomError as exc:
                error = f"weights {pair[0]}, activations {pair[1]}: {exc}"
                failures.append(error)
            if on_done:
                on_done(pair, error)
    order = {pair: i for i, pair in enumerate(pairs)}
    rows.sort(key=lambda r: (order[(r["weights"], r["acts"])], r["cycles_per_frame"]))
    mark_fronts(rows)
    return rows, failures


def write_csv(rows: Sequence[dict], path: Path) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for r in rows:
            writer.writerow({k: r.get(k, "") for k in COLUMNS})


def synthesize_points(rows: list[dict], k: int, board: str, out_dir: Path, console) -> None:
    """Compile and synthesize the ``k`` most accurate points of the LUT front with Yosys;
    their ``measured_LUT`` is filled in."""
    front = sorted((r for r in rows if r["pareto_lut"]), key=lambda r: -r["accuracy"])[:k]
    for r in front:
        design = bitloom.compile(r["model"], board, target_cycles=r["target_cycles"],
                                 out=out_dir / "synth" / f"{r['weights']}-{r['acts']}")
        measured = design.synth(console)
        r["measured_LUT"] = measured["resources"]["LUT"]
