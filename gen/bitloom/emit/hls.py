"""HLS C++ for a network: one streaming kernel per model, for Vitis HLS and for g++ C-sim.

``emit_hls(net, out_dir)`` writes ``out_dir/hls/``: the header library of ``bitloom.hls``,
``params.h`` (weights, thresholds and output levels as exact integers, window geometry),
``kernel.cpp`` (the top function: one call per layer, a FIFO between every pair, fan-outs
where the DAG branches), ``tb.cpp`` (reads input codes, writes output values, compares with
expected values when given), golden vectors and ``run_hls.tcl`` for Vitis HLS.

Streams carry *codes* of each tensor's format (what the wires would carry: 8 bits for an
E4M3 activation, not its 19-bit grid integer); every layer decodes them to grid integers and
computes exactly, so the kernel is bit-exact against the golden model by construction.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import jinja2
import numpy as np

from bitloom.errors import BitloomError
from bitloom.formats import Fixed, Format, Int, Minifloat, integer_width
from bitloom.ir import Network, ScaleRequant, Thresholds, Window
from bitloom.ir.stimulus import stimulus
from bitloom.plan.registry import kind_of

if TYPE_CHECKING:
    from bitloom.plan import Plan

TOP = "bitloom_top"
HEADERS = ("bitloom.h", "bitloom_formats.h", "bitloom_layers.h", "bitloom_stream.h")
SOURCES = ("params.h", "kernel.h", "kernel.cpp", "tb.cpp")
SPECIALS_CODE = {"finite": "bitloom::FINITE", "fn": "bitloom::FN", "fnuz": "bitloom::FNUZ",
                 "ieee": "bitloom::IEEE"}
MAX_SIMD, MAX_PE = 8, 4  # default folding: enough to show the structure, small to simulate
PER_LINE = 16


def render(name: str, **context) -> str:
    text = resources.files("bitloom.hls").joinpath(name).read_text()
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, trim_blocks=True,
                             lstrip_blocks=True, keep_trailing_newline=True)
    return env.from_string(text).render(**context)


# -- formats and literals ----------------------------------------------------------------
def fmt_type(fmt: Format) -> str:
    """The C++ traits type of ``fmt`` (hls/bitloom_formats.h)."""
    if isinstance(fmt, Int) and fmt.bipolar:
        return "bitloom::bipolar_format"
    if isinstance(fmt, Int | Fixed):
        return f"bitloom::int_format<{fmt.bits}, {str(fmt.signed).lower()}>"
    if isinstance(fmt, Minifloat):
        return (f"bitloom::minifloat<{fmt.exp_bits}, {fmt.man_bits}, {fmt.bias}, "
                f"{str(fmt.subnormals).lower()}, {SPECIALS_CODE[fmt.specials]}, "
                f"{str(fmt.signed).lower()}>")
    raise BitloomError(f"the HLS backend does not support the {fmt.name} format yet "
                       "(integers, fixed point and minifloats are supported).")


def holds_grid(fmt: Format) -> bool:
    """Whether the code type of ``fmt`` is its grid integer (so literals are plain values)."""
    return isinstance(fmt, Int | Fixed) and not (isinstance(fmt, Int) and fmt.bipolar)


def code_literals(fmt: Format, grid: np.ndarray) -> np.ndarray:
    """Grid integers -> what the C++ arrays hold: the value itself for integers and fixed
    point (readable weights), the code otherwise."""
    grid = np.asarray(grid, dtype=np.int64)
    if holds_grid(fmt):
        return grid
    return fmt.encode(fmt.from_grid(grid))


def rom_type(values: np.ndarray) -> str:
    """The constant-table word (hls/bitloom_formats.h ``rom_word``) holding ``values``."""
    flat = [int(v) for v in np.asarray(values, dtype=object).reshape(-1)] or [0]
    lo, hi = min(flat), max(flat)
    width = integer_width(lo, hi) if lo >= 0 else max(2, integer_width(lo, hi))
    return f"bitloom::rom_word<{width}, {str(lo < 0).lower()}>::type"


def int_literal(v: int, ctype: str) -> str:
    """A C++ initializer for integer ``v`` in a table of ``ctype`` words: a plain literal
    within 64 bits, a decimal string (ap_int's constructor) beyond."""
    v = int(v)
    if -(2**63) < v < 2**63:
        return f"{v}LL" if abs(v) >= 2**31 else str(v)
    if v == -(2**63):
        return "(-9223372036854775807LL - 1)"
    return f'{ctype}("{v}", 10)'


def c_array(values: np.ndarray, literal=str, indent: str = "    ") -> str:
    """A nested brace initializer for a 1-D or 2-D array."""
    values = np.asarray(values, dtype=object)
    if values.ndim == 1:
        items = [literal(v) for v in values]
        rows = [", ".join(items[i:i + PER_LINE]) for i in range(0, len(items), PER_LINE)]
        return "{" + f",\n{indent} ".join(rows) + "}"
    inner = [c_array(row, literal, indent + " ") for row in values]
    return "{" + f",\n{indent}".join(inner) + "}"


def acc_type(fmt: Int) -> str:
    return f"ap_int<{fmt.bits}>" if fmt.signed else f"ap_uint<{fmt.bits}>"


def largest_divisor(n: int, cap: int) -> int:
    return max(d for d in range(1, min(n, cap) + 1) if n % d == 0)


def identifier(name: str, taken: set[str]) -> str:
    """A C identifier from a layer name, unique within the kernel."""
    ident = re.sub(r"\W", "_", name) or "layer"
    if ident[0].isdigit():
        ident = f"l_{ident}"
    base, n = ident, 1
    while ident in taken:
        n += 1
        ident = f"{base}_{n}"
    taken.add(ident)
    return ident


# -- the kernel as data for the templates -----------------------------------------------------
@dataclass
class Stream:
    name: str
    ctype: str
    depth: int = 2


@dataclass
class Kernel:
    """Everything the templates render: types, constants, streams and calls in order."""

    net: Network
    folds: dict[int, tuple[int, int]] = field(default_factory=dict)  # layer -> (PE, SIMD)
    params: list[dict] = field(default_factory=list)  # constants: params.h.j2 renders them
    streams: list[Stream] = field(default_factory=list)
    calls: list[dict] = field(default_factory=list)  # layer calls: kernel.cpp.j2 renders them
    names: set[str] = field(default_factory=set)

    def stream(self, name: str, ctype: str, depth: int = 2) -> str:
        name = identifier(name, self.names)
        self.streams.append(Stream(name, ctype, depth))
        return name


def tensor_fmt(net: Network, producer: int) -> Format:
    return net.input.fmt if producer < 0 else net.layers[producer].out_fmt


def tensor_elems(net: Network, producer: int) -> int:
    shape = net.input.stream_shape if producer < 0 else net.layers[producer].out_shape
    return int(np.prod(shape))


def window_in_stream_order(w: Window) -> bool:
    """A window whose im2col order is the input's own stream order needs no line buffer:
    1x1 with unit stride, or one window covering the whole unpadded map (global pooling)."""
    if any(w.pads) or w.dilation != (1, 1):
        return False
    return (w.kernel == (1, 1) and w.stride == (1, 1)) or w.kernel == w.in_hw


def add_window(k: Kernel, prefix: str, w: Window, channels: int, fmt: Format, src: str) -> str:
    """The sliding-window generator feeding a window layer; returns the stream of windows."""
    if window_in_stream_order(w):
        return src
    if not w.pads_with_a_value_of(fmt):
        raise BitloomError(f"layer {prefix}: its padding value {w.pad_value} is not a value of "
                           f"its input format {fmt.name}, which the HLS streams carry.")
    k.params.append({"kind": "window", "name": prefix, "w": w, "channels": channels})
    pad = int(code_literals(fmt, np.array([w.pad_value]))[0])
    dst = k.stream(f"{prefix}_windows", f"{fmt_type(fmt)}::code_t")
    k.calls.append({"kind": "window", "name": prefix, "fmt": fmt_type(fmt), "pad": pad,
                    "src": src, "dst": dst})
    return dst


def add_requant(k: Kernel, prefix: str, layer, out_fmt: Format) -> str:
    """The requantizer struct of an accumulating layer (thresholds, a scale unit, or the raw
    accumulator)."""
    k.params.append({"kind": "acc", "name": prefix, "type": acc_type(layer.acc_fmt)})
    req: Thresholds | ScaleRequant | None = layer.requant
    if req is None:
        return f"bitloom::accumulator_out<{fmt_type(out_fmt)} >"
    if isinstance(req, ScaleRequant):
        k.params.append(scale_param(prefix, req, layer.acc_fmt, out_fmt))
        return f"{prefix}_requant"
    channels = layer.out_shape[-1]
    table = np.broadcast_to(np.asarray(req.table, dtype=object), (channels, req.table.shape[1]))
    increasing = np.broadcast_to(np.asarray(req.increasing, dtype=bool), (channels,))
    thr = rom_type(table)
    level_codes = code_literals(out_fmt, out_fmt.grid_levels())
    k.params.append({
        "kind": "thresholds", "name": prefix, "code": f"{fmt_type(out_fmt)}::code_t",
        "channels": channels, "levels": table.shape[1], "word": thr,
        "table": c_array(table, lambda v: int_literal(v, thr)),
        "increasing": c_array(increasing, lambda v: "true" if v else "false"),
        "level_word": rom_type(level_codes), "level_codes": c_array(level_codes)})
    return f"{prefix}_requant"


def scale_param(prefix: str, req: ScaleRequant, acc_fmt: Int, out_fmt: Format) -> dict:
    """The constants and call of a scale requantizer (hls/bitloom_layers.h ``scale_to_*``):
    ``y`` as wide as the hardware's (:mod:`bitloom.hw.scale`), and the clip bounds shifted."""
    y_bits = max(acc_fmt.bits + req.multiplier_bits + 1 + max(req.offset_bits - 1, 0),
                 req.lo_bits_shifted + 1, req.hi_bits_shifted + 1)
    lim = np.concatenate([req.lo, req.hi])
    param = {
        "kind": "scale", "name": prefix, "code": f"{fmt_type(out_fmt)}::code_t",
        "channels": req.channels, "shift": req.shift, "y_bits": y_bits,
        "ties": str(req.ties_to_even).lower(), "m_bits": req.multiplier_bits,
        "b_bits": req.offset_bits, "levels": 0,
        "m_word": rom_type(req.multiplier), "b_word": rom_type(req.offset),
        "lim_word": rom_type(lim)}
    for name, values, word in (("multiplier", req.multiplier, "m_word"),
                               ("offset", req.offset, "b_word"), ("lo", req.lo, "lim_word"),
                               ("hi", req.hi, "lim_word")):
        param[name] = c_array(values, lambda v, w=param[word]: int_literal(v, w))
    if req.rounds_to_levels:
        mids, levels = req.midpoints(), out_fmt.grid_levels()
        level_codes = code_literals(out_fmt, levels)
        mid_word = rom_type(mids)
        param.update({
            "levels": len(levels), "log2_levels": max(len(levels) - 1, 1).bit_length(),
            "mid_word": mid_word, "mids": c_array(mids, lambda v: int_literal(v, mid_word)),
            "level_word": rom_type(level_codes), "level_codes": c_array(level_codes),
            "even": c_array(req.even_levels(), lambda v: "true" if v else "false")})
    return param


def weights_param(prefix: str, fmt: Format, weights: np.ndarray, member: bool) -> dict:
    """A weight table (codes of ``fmt``); ``member``: as the static ``table`` of a struct
    named after the layer (what a window_reduce step reads), else a plain array."""
    words = code_literals(fmt, weights)
    return {"kind": "weights", "name": prefix, "word": rom_type(words), "member": member,
            "rows": words.shape[0], "cols": words.shape[1], "array": c_array(words)}


def build_kernel(net: Network, plan: Plan | None = None) -> Kernel:
    """Streams and calls of the whole DAG, in the network's topological order; matrix-vector
    units fold like ``plan`` (a :class:`bitloom.plan.Plan`) where its PE and SIMD divide the
    matrix (the largest divisors below them otherwise), else at most 4 x 8; each layer
    requantizes as the plan chose (thresholds without a plan)."""
    if not net.layers:
        raise BitloomError("the model has no layers to build in HLS.")
    folds = {} if plan is None else {i: (lp.fold.pe, lp.fold.simd)
                                      for i, lp in enumerate(plan.layers)}
    if plan is not None:  # the plan's requantizers (a scale unit equals the thresholds)
        net = replace(net, layers=[replace(lp.layer, requant=lp.scale) if lp.scale else ly
                                   for ly, lp in zip(net.layers, plan.layers, strict=True)])
    k = Kernel(net, folds)
    k.names.update({"in", "out", TOP})
    last = len(net.layers) - 1
    inputs: dict[int, list[str]] = {}  # producer -> one stream per consumer use, in order

    def provide(producer: int, stream: str) -> None:
        uses = sum(ly.inputs.count(producer) for ly in net.layers)
        if uses <= 1:
            inputs[producer] = [stream]
            return
        code = f"{fmt_type(tensor_fmt(net, producer))}::code_t"
        elems = tensor_elems(net, producer)
        copies: list[str] = []
        src = stream
        for j in range(uses - 1):  # a chain of two-way fan-outs; branches buffer a frame
            a = k.stream(f"{stream}_use{j}", code, depth=elems)
            b = (k.stream(f"{stream}_use{j + 1}", code, depth=elems) if j == uses - 2
                 else k.stream(f"{stream}_rest{j}", code))
            k.calls.append({"kind": "fan_out", "elems": elems, "code": code, "src": src,
                            "a": a, "b": b})
            copies.append(a)
            src = b
        inputs[producer] = [*copies, src]

    provide(-1, "in")
    for i, layer in enumerate(net.layers):
        srcs = [inputs[p].pop(0) for p in layer.inputs]
        dst = "out" if i == last else k.stream(
            f"{layer.name}_out", f"{fmt_type(layer.out_fmt)}::code_t")
        prefix = identifier(layer.name, k.names)
        kind_of(layer).hls_call(k, i, prefix, srcs, dst)
        if i != last:
            provide(i, dst)
    return k


# -- files -----------------------------------------------------------------------------------
def source_files(hls_dir: Path) -> list[Path]:
    """What the C simulation compiles, in a folder written by :func:`write_sources`."""
    return [hls_dir / n for n in (*HEADERS, *SOURCES)]


def write_sources(net: Network, hls_dir: Path, plan: Plan | None = None) -> list[Path]:
    """The headers, params, kernel and test bench: everything the C simulation compiles."""
    hls_dir.mkdir(parents=True, exist_ok=True)
    for name in HEADERS:
        (hls_dir / name).write_text(resources.files("bitloom.hls").joinpath(name).read_text())
    k = build_kernel(net, plan)
    context = {
        "top": TOP, "source": net.source, "params": k.params, "streams": k.streams,
        "calls": k.calls, "in_fmt": fmt_type(net.input.fmt),
        "out_fmt": fmt_type(net.layers[-1].out_fmt), "in_elems": tensor_elems(net, -1),
        "out_elems": tensor_elems(net, len(net.layers) - 1),
    }
    for name in SOURCES:
        (hls_dir / name).write_text(render(f"{name}.j2", **context))
    return source_files(hls_dir)


def stimulus_frames(net: Network, frames: int, seed: int) -> np.ndarray:
    """Input grid integers for the test bench's golden vectors (corner frames, then random
    levels), shaped like :meth:`Network.trace_values` wants."""
    shape = net.input.stream_shape
    flat = stimulus(net.input.fmt, int(np.prod(shape)), frames, seed)
    return flat.reshape((len(flat), *shape))


def write_codes(path: Path, fmt: Format, values: np.ndarray) -> None:
    """One frame per line: the codes of grid integers ``values`` (frames first)."""
    codes = fmt.encode(fmt.from_grid(values)).reshape(len(values), -1)
    path.write_text("".join(" ".join(map(str, row)) + "\n" for row in codes.tolist()))


def write_values(path: Path, values: np.ndarray) -> None:
    rows = np.asarray(values, dtype=object).reshape(len(values), -1)
    path.write_text("".join(" ".join(str(int(v)) for v in row) + "\n" for row in rows))


def emit_hls(net: Network, out_dir: Path | str, plan: Plan | None = None,
             part: str = "xc7z020clg400-1", clock_ns: float = 10.0, frames: int = 16,
             seed: int = 0) -> Path:
    """Write ``out_dir/hls`` (sources, golden vectors, Vitis HLS Tcl); returns that folder.

    ``plan`` (e.g. ``plan_for_board``) sets the PE x SIMD folding; ``part`` defaults to the
    PYNQ-Z2's Zynq-7020 and ``clock_ns`` to 100 MHz. The test bench checks ``frames`` frames
    of stimulus against the golden model, in g++ or in Vitis' csim and cosim.
    """
    hls_dir = Path(out_dir) / "hls"
    write_sources(net, hls_dir, plan)
    x = stimulus_frames(net, frames, seed)
    write_codes(hls_dir / "inputs.txt", net.input.fmt, x)
    write_values(hls_dir / "expected.txt", net.trace_values(x)[-1])
    (hls_dir / "run_hls.tcl").write_text(render(
        "run_hls.tcl.j2", top=TOP, part=part, clock_ns=clock_ns, source=net.source))
    return hls_dir


def run_vitis_hls(hls_dir: Path) -> str:
    """Run ``run_hls.tcl`` (csim, csynth, cosim, IP export) where Vitis HLS is installed;
    otherwise say so and leave the scripts ready. Returns a one-line account."""
    import subprocess

    exe = shutil.which("vitis_hls")
    if exe is None:
        return (f"vitis_hls is not on PATH: the scripts are ready in {hls_dir}; run "
                f"`vitis_hls -f run_hls.tcl` there where Vitis HLS is installed.")
    log = hls_dir / "vitis_hls.log"
    with open(log, "w") as handle:
        done = subprocess.run([exe, "-f", "run_hls.tcl"], cwd=hls_dir, stdout=handle,
                              stderr=subprocess.STDOUT, check=False)
    if done.returncode != 0:
        raise BitloomError(f"Vitis HLS failed (exit {done.returncode}); see {log}.")
    return f"Vitis HLS: csim, csynth, cosim and IP export done; log {log}"
