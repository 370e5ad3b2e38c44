"""``bitloom quantize FLOAT.onnx --format FMT --calib DATA.npz -o Q.onnx``.

Prints what was chosen per layer and, when labels ``y`` come with the data, the float and
quantized accuracy, so a user sees at once whether a format is good enough.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import onnx
from rich.table import Table

from bitloom.arrays import load_arrays
from bitloom.console import make_console
from bitloom.errors import BitloomError
from bitloom.frontend.loader import read_model
from bitloom.quantize.calibrate import METHODS, check_calib, input_batch, run_float
from bitloom.quantize.core import Quantized, quantize

console = make_console()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of the ``quantize`` subcommand."""
    parser.add_argument("model", metavar="FLOAT.onnx",
                        help="float ONNX model (MatMul/Gemm/Conv, ReLU, pooling, ...)")
    parser.add_argument("--format", metavar="FMT", help="format of weights and activations "
                        "(int8, int4, fixed8.4, float8_e4m3fn, e3m2, ...)")
    parser.add_argument("--weights", metavar="FMT", help="weight format (overrides --format)")
    parser.add_argument("--acts", metavar="FMT", help="activation format (overrides --format)")
    parser.add_argument("--calib", required=True, metavar="DATA.npz",
                        help=".npz with calibration inputs `x` (and optional labels `y`)")
    parser.add_argument("--eval", metavar="DATA.npz", help=".npz with `x` and `y` to measure "
                        "accuracy on (default: the calibration data, when it has `y`)")
    parser.add_argument("-o", "--output", required=True, metavar="Q.onnx",
                        help="QONNX model to write")
    parser.add_argument("--method", choices=METHODS, default="minmax",
                        help="activation calibration (mse also searches weight clipping)")
    parser.add_argument("--per-tensor", action="store_true",
                        help="one weight scale per layer instead of one per output channel")
    parser.add_argument("--no-bias-correction", action="store_true",
                        help="keep biases as trained")


def load_npz(path: str) -> tuple[np.ndarray, np.ndarray | None]:
    """``x`` and, if present, ``y`` from an .npz, with errors naming the file."""
    p = Path(path)
    data = load_arrays(path, "Pass an .npz holding an array `x`.")
    if not isinstance(data, dict) or "x" not in data:
        held = ", ".join(data) if isinstance(data, dict) else "one array"
        raise BitloomError(f"{p}: expected an .npz with an array named `x` (and optionally "
                           f"`y`); it holds {held}.")
    x, y = data["x"], data.get("y")
    if y is not None and len(y) != len(x):
        raise BitloomError(f"{p}: `x` has {len(x)} samples but `y` has {len(y)}.")
    return x, y


def run_quantized(model: onnx.ModelProto, x: np.ndarray) -> tuple[np.ndarray | None, str]:
    """The quantized model's outputs and what computed them: bitloom's exact golden model,
    else qonnx's (slow) executor when installed, else None and the reason."""
    import bitloom

    try:
        return bitloom.load(model).run(x), "bitloom golden"
    except Exception as exc:  # the model is written already; accuracy is only a report
        reason = str(exc) if isinstance(exc, BitloomError) else f"{type(exc).__name__}: {exc}"
    try:
        from qonnx.core.modelwrapper import ModelWrapper
        from qonnx.core.onnx_exec import execute_onnx
    except ImportError:
        return None, f"bitloom cannot load the quantized model ({reason}) and qonnx is not " \
            "installed"
    wrapped = ModelWrapper(model)
    inp, out = model.graph.input[0].name, model.graph.output[0].name
    batch = input_batch(model.graph.input[0])[1]
    ys = [execute_onnx(wrapped, {inp: x[i:i + batch]})[out] for i in range(0, len(x), batch)]
    return np.concatenate(ys), f"qonnx executor (bitloom: {reason})"


def summary(result: Quantized) -> list[Table]:
    """Per-layer (input and weight quantization, bias correction) and per-activation-group
    tables; ``w error`` is ||Wq - W|| / ||W||, ``bias corr.`` the largest bias change."""
    layers = Table(title="layers", title_justify="left")
    for col in ("layer", "op", "input", "in scale", "weights", "ch", "weight scales",
                "w error", "bias corr."):
        layers.add_column(col, justify="left" if col in ("layer", "op", "input", "weights")
                          else "right")
    for r in result.weights:
        layers.add_row(r.node, r.op, r.input_fmt, f"{r.input_scale:.3g}", r.fmt,
                       str(r.channels), f"{r.scale_min:.3g}..{r.scale_max:.3g}",
                       f"{r.rel_error:.2%}",
                       "off" if r.bias_shift is None else f"{r.bias_shift:.2g}")
    acts = Table(title="activations", title_justify="left")
    for col in ("tensor", "format", "clip", "scale"):
        acts.add_column(col, justify="left" if col in ("tensor", "format") else "right")
    for a in result.acts:
        acts.add_row(", ".join(a.tensors), a.fmt, f"{a.clip:.4g}", f"{a.scale:.4g}")
    return [layers, acts]


def command(args: argparse.Namespace) -> int:
    """Run ``bitloom quantize``; user mistakes raise :class:`BitloomError`."""
    weights = args.weights or args.format
    acts = args.acts or args.format
    if weights is None or acts is None:
        raise BitloomError("quantize needs --format FMT, or both --weights FMT and --acts FMT.")
    x, y = load_npz(args.calib)
    calib = x
    if args.eval:
        x, y = load_npz(args.eval)
    result = quantize(args.model, weights, acts, calib, args.method, not args.per_tensor,
                      not args.no_bias_correction)
    try:
        onnx.save(result.model, args.output)
    except OSError as exc:
        raise BitloomError(f"cannot write {args.output}: {exc.strerror}.") from None
    for table in summary(result):
        console.print(table)
    if y is None:
        console.print(f"wrote {args.output}; no labels `y` given, so accuracy is not measured.",
                      markup=False, soft_wrap=True)
        return 0
    model, source = read_model(args.model)
    graph_input = next(i for i in model.graph.input
                       if i.name not in {t.name for t in model.graph.initializer})
    x = check_calib(x, graph_input, source, "evaluation")
    out = model.graph.output[0].name
    ref = np.concatenate(run_float(model, x, [out], input_batch(graph_input)[1])[out])
    got, engine = run_quantized(result.model, x)
    acc_float = float(np.mean(ref.argmax(-1) == y))
    quantized = (f"quantized not measured: {engine}" if got is None else
                 f"quantized {np.mean(got.argmax(-1) == y):.2%} ({engine})")
    console.print(f"wrote {args.output}; accuracy on {len(y)} samples: float {acc_float:.2%}, "
                  f"{quantized}.", markup=False, soft_wrap=True)
    return 0
