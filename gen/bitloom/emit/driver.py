"""The PYNQ driver of a design: ``DIR/build/overlay/bitloom_driver.py``.

PYNQ images have numpy but not bitloom, so the driver carries everything the host does
around the accelerator: the input quantizer (bitloom's rounding functions and ``Quantizer``
copied verbatim, so the driver cannot drift from the compiler that generated it), beat
packing, unpacking and the final per-channel affine step. Those are plain functions; only
the transport class imports ``pynq``, so tests run the same code against Verilator.

Layers whose weights stream from DDR have a DMA each in the block design; the driver loads
their init files (copied to ``DIR/build/overlay/weights``) at start-up in the byte layout
those DMAs read and sends them once per pass of every frame, beside the frames.
"""

from __future__ import annotations

import ast
import inspect
import math
import shutil
import textwrap
from pathlib import Path

from bitloom.boards import load_board
from bitloom.emit.design import WEIGHTS, Design, render_template
from bitloom.emit.vivado import (
    DMA_CELL,
    DMA_LENGTH_WIDTH,
    OVERLAY,
    StreamWidths,
    WeightStream,
    stream_widths,
    weight_streams,
)
from bitloom.errors import BitloomError
from bitloom.formats import Int
from bitloom.formats import rounding as rounding_module
from bitloom.ir import Affine, Network
from bitloom.ir import quantizer as quantizer_module

DRIVER = "bitloom_driver.py"
#: Frames per DMA batch when memory is not the limit.
MAX_BATCH = 1024
#: Widest output code whose bits the driver can sum in int64.
MAX_OUT_BITS = 62


def output_affine(net: Network) -> tuple[list[float], list[float]]:
    """Per-channel ``a`` and ``b`` of the host's last step, in float64 as bitloom evaluates it.

    The driver embeds one affine map; anything else on the host (a clip after the scale, say)
    would need bitloom's chain evaluator on the board, so it is refused here.
    """
    chain = net.output.chain
    if not chain.ops:
        return [1.0] * chain.channels, [0.0] * chain.channels
    if len(chain.ops) == 1 and isinstance(chain.ops[0], Affine):
        op = chain.ops[0]
        return [float(v) for v in op.a], [float(v) for v in op.b]
    raise BitloomError(
        f"{net.source}: the model's output goes through {chain.describe()} on the host after "
        "the last layer; the PYNQ driver embeds only a per-channel scale and bias. Let the "
        "model end in a MatMul/Gemm (+ bias, scale) or a quantizer, or post-process the "
        "driver's integer outputs yourself.")


def _items(values: list) -> str:
    """Python literals, comma-separated and wrapped to 100 columns, indented by 4."""
    return textwrap.fill(", ".join(map(repr, values)) + ",", width=96, initial_indent="    ",
                         subsequent_indent="    ", break_long_words=False,
                         break_on_hyphens=False)


def _module_body(module) -> str:
    """A module's code without its docstring and bitloom imports: what the driver copies.

    Its other imports (standard library, numpy) travel with it; the driver defines the
    ``Int`` the quantizer names, so whole modules travel and new helpers in them travel too.
    """
    source = inspect.getsource(module)
    lines = source.splitlines()
    tree = ast.parse(source)

    def foreign_import(node: ast.stmt) -> bool:
        if isinstance(node, ast.ImportFrom):
            return node.module not in ("__future__",) and not node.module.startswith("bitloom")
        return isinstance(node, ast.Import) and not any(
            a.name.startswith("bitloom") for a in node.names)

    imports = [ast.unparse(node) for node in tree.body if foreign_import(node)]
    body = [node for node in tree.body
            if not isinstance(node, ast.Import | ast.ImportFrom)
            and not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant))]
    text = "\n".join(imports) + "\n\n" if imports else ""
    for previous, node in zip([None, *body], body, strict=False):
        if previous is not None:
            blocks = (ast.FunctionDef, ast.ClassDef)
            text += "\n\n\n" if isinstance(previous, blocks) or isinstance(node, blocks) else "\n"
        text += "\n".join(lines[_first_line(node) - 1:node.end_lineno])
    return text


def _first_line(node: ast.stmt) -> int:
    """Where a statement starts, decorators included."""
    decorators = getattr(node, "decorator_list", [])
    return min([node.lineno, *(d.lineno for d in decorators)])


def driver_context(design: Design, widths: StreamWidths,
                   streams: list[WeightStream]) -> dict:
    """Everything the template needs, checked against the plan so a stale report is caught."""
    from bitloom.version import __version__

    net, plan, io = design.net, design.plan, design.report["io"]
    last = plan.output
    in_fmt, out_fmt = net.input.fmt, last.layer.out_fmt
    quantizer = net.input.quantizer
    if not isinstance(in_fmt, Int) or not isinstance(out_fmt, Int):
        raise BitloomError(f"the PYNQ driver handles integer stream formats; this design "
                           f"streams {in_fmt.name} in and {out_fmt.name} out.")
    if (io["input"]["element_bits"], io["input"]["elements_per_beat"],
            io["input"]["beats_per_frame"]) != (in_fmt.bits, plan.in_elems, plan.in_beats) or (
            io["output"]["element_bits"], io["output"]["elements_per_beat"],
            io["output"]["beats_per_frame"]) != (out_fmt.bits, last.out_elems, last.out_beats):
        raise BitloomError(f"{design.path}/report.json does not describe the streams of its "
                           "model any more; compile the design again.")
    if out_fmt.bits > MAX_OUT_BITS:
        raise BitloomError(f"output codes of {out_fmt.bits} bits are wider than the driver's "
                           f"{MAX_OUT_BITS}-bit limit.")
    a, b = output_affine(net)
    channels = last.layer.out_shape[-1]
    if len(last.layer.out_shape) != 1 or len(a) != channels or \
            math.prod(net.output.shape) != channels:
        raise BitloomError(f"the output {net.output.name!r} of shape {net.output.shape} does "
                           f"not match the {channels} channels of the last layer.")
    in_frame = plan.in_beats * widths.input_bits // 8
    out_frame = last.out_beats * widths.output_bits // 8
    align = widths.output_mm_bits // 8
    board = load_board(design.report["board"])
    return {
        "version": __version__,
        "model": Path(str(design.report.get("model") or net.source)).name,
        "board_title": board.title,
        "dma_name": DMA_CELL,
        "input_name": net.input.name,
        "input_shape": repr(tuple(net.input.shape)),
        "input_shape_text": ", ".join(map(str, net.input.shape)),
        "flat_shape": repr(tuple(net.input.flat_shape)),
        "perm": repr(tuple(net.input.perm) if net.input.perm else None),
        "host_steps": repr([(step.op_type, step.constant.astype(float).reshape(-1).tolist(),
                             step.constant.shape, step.constant_first)
                            for step in net.input.steps]),
        "in_bits": in_fmt.bits,
        "in_signed": in_fmt.signed,
        "in_narrow": in_fmt.narrow,
        "in_min": in_fmt.min_int,
        "in_max": in_fmt.max_int,
        "in_scale": repr(float(quantizer.scale)),
        "in_zero_point": repr(int(quantizer.zero_point)),
        "in_rounding": quantizer.rounding,
        "in_order": quantizer.order,
        "in_per_beat": plan.in_elems,
        "in_beats": plan.in_beats,
        "in_beat_bytes": widths.input_bits // 8,
        "output_name": net.output.name,
        "output_shape": repr(tuple(net.output.shape)),
        "output_shape_text": ", ".join(map(str, net.output.shape)),
        "out_bits": out_fmt.bits,
        "out_signed": out_fmt.signed,
        "out_bipolar": out_fmt.bipolar,
        "out_per_beat": last.out_elems,
        "out_beats": last.out_beats,
        "out_beat_bytes": widths.output_bits // 8,
        "out_slot_bytes": -(-out_frame // align) * align,
        "out_a": _items(a),
        "out_b": _items(b),
        "default_batch": max(1, min(MAX_BATCH, ((1 << DMA_LENGTH_WIDTH) - 1) // in_frame)),
        "length_width": DMA_LENGTH_WIDTH,
        "weight_streams": [{"layer": w.layer, "dma_name": w.cell, "file": Path(w.file).name,
                            "words": w.words, "bits": w.width, "slot_bytes": w.slot_bits // 8,
                            "passes_per_frame": w.passes_per_frame} for w in streams],
        "rounding_source": _module_body(rounding_module),
        "quantizer_source": _module_body(quantizer_module),
    }


def write_driver(design: Design, overlay_dir: Path | None = None) -> Path:
    """Write the driver into ``DIR/build/overlay`` (beside bitloom.bit/.hwh), and the streamed
    layers' init files into its ``weights`` folder, which the driver loads; return its path."""
    overlay_dir = overlay_dir or design.path / "build" / OVERLAY
    streams = weight_streams(design, load_board(design.report["board"]))
    text = render_template("pynq_driver.py.j2",
                           **driver_context(design, stream_widths(design.report), streams))
    weights = overlay_dir / WEIGHTS
    shutil.rmtree(weights, ignore_errors=True)  # no stale files of an earlier compile
    if streams:
        weights.mkdir(parents=True)
        for w in streams:
            shutil.copyfile(design.path / "rtl" / w.file, weights / Path(w.file).name)
    overlay_dir.mkdir(parents=True, exist_ok=True)
    path = overlay_dir / DRIVER
    path.write_text(text)
    return path
