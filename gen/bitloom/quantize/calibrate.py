"""Calibration: run the float model on the calibration batch, then choose scales.

The float model runs in onnxruntime with the tensors we need added as graph outputs (on a
copy), in chunks of the batch size the model declares, so models exported with a fixed batch
of 1 calibrate as they are. Scales are symmetric (zero point 0): bitloom's frontend and
hardware have no zero-point datapath for weights, and ReLU outputs need none.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

from bitloom.errors import BitloomError
from bitloom.formats import Format
from bitloom.quantize.qonnx_ops import Spec

METHODS = ("minmax", "percentile", "mse")
PERCENTILE = 99.99
#: clipping ratios the MSE searches try, as fractions of the observed maximum
ACT_RATIOS = np.linspace(0.02, 1.0, 50)
WEIGHT_RATIOS = np.linspace(0.1, 1.0, 46)
#: values kept (evenly strided) for the MSE search of one activation group
MSE_SAMPLES = 1 << 16
CHUNK = 256


def input_batch(info: onnx.ValueInfoProto) -> tuple[list[int | None], int]:
    """The input's dims (None where symbolic) and the batch size to run it with."""
    dims = [d.dim_value if d.HasField("dim_value") else None
            for d in info.type.tensor_type.shape.dim]
    return dims, (dims[0] or CHUNK) if dims else CHUNK


def check_calib(calib: np.ndarray, info: onnx.ValueInfoProto, source: str,
                what: str = "calibration") -> np.ndarray:
    """The ``what`` batch as float32, or a BitloomError saying what shape was expected."""
    dims, batch = input_batch(info)
    want = "(N, " + ", ".join(str(d or "?") for d in dims[1:]) + ")"
    calib = np.asarray(calib)
    if not np.issubdtype(calib.dtype, np.number):
        raise BitloomError(f"{source}: the {what} data holds {calib.dtype}; expected "
                           f"numbers of shape {want} for input {info.name!r}.")
    if calib.ndim != len(dims) or any(d and d != s for d, s in zip(dims[1:], calib.shape[1:],
                                                                   strict=False)):
        raise BitloomError(f"{source}: the {what} data has shape {calib.shape}, but "
                           f"input {info.name!r} takes {want}, batched along axis 0.")
    if len(calib) == 0 or (dims[0] and len(calib) % batch):
        raise BitloomError(f"{source}: {len(calib)} {what} samples; input "
                           f"{info.name!r} has a fixed batch of {batch}, so pass a non-zero "
                           f"multiple of {batch}.")
    if not np.all(np.isfinite(calib)):
        raise BitloomError(f"{source}: the {what} data holds NaN or infinite values.")
    return calib.astype(np.float32)


def run_float(model: onnx.ModelProto, x: np.ndarray, tensors: list[str],
              batch: int) -> dict[str, list[np.ndarray]]:
    """Every tensor in ``tensors`` (graph input included), one array per chunk of ``x``."""
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    inp = next(i.name for i in probe.graph.input
               if i.name not in {t.name for t in probe.graph.initializer})
    present = {o.name for o in probe.graph.output}
    for t in tensors:
        if t not in present and t != inp:
            probe.graph.output.append(helper.make_tensor_value_info(t, TensorProto.FLOAT, None))
    names = [o.name for o in probe.graph.output]
    options = ort.SessionOptions()
    options.log_severity_level = 3
    sess = ort.InferenceSession(probe.SerializeToString(), options,
                                providers=["CPUExecutionProvider"])
    out: dict[str, list[np.ndarray]] = {t: [] for t in tensors}
    for start in range(0, len(x), batch):
        chunk = x[start:start + batch]
        values = dict(zip(names, sess.run(names, {inp: chunk}), strict=True))
        values[inp] = chunk
        for t in tensors:
            out[t].append(values[t])
    return out


def fake_quant(x: np.ndarray, scale: np.ndarray | float, fmt: Format) -> np.ndarray:
    """``x`` through a quantizer of ``scale`` and ``fmt`` (the value QONNX's op computes)."""
    return fmt.quantize(np.asarray(x, np.float64) / scale) * scale


def _mse_clip(values: np.ndarray, fmt: Format, ratios: np.ndarray) -> float:
    top = float(np.max(np.abs(values)))
    errors = [np.mean((fake_quant(values, r * top / fmt.max, fmt) - values) ** 2)
              for r in ratios]
    return float(ratios[int(np.argmin(errors))] * top)


def act_scale(values: np.ndarray, spec: Spec, method: str) -> tuple[float, float]:
    """``(clip, scale)`` of a per-tensor activation quantizer: ``clip`` maps to the format's
    largest value. Fixed point has no scale to choose (its binary point is the format's)."""
    fmt = spec.fmt
    if spec.fixed_scale is not None:
        return fmt.max * spec.fixed_scale, spec.fixed_scale
    mag = np.abs(values.ravel()) if fmt.min < 0 else np.maximum(values.ravel(), 0)
    if method == "minmax":
        clip = float(np.max(mag, initial=0.0))
    elif method == "percentile":
        clip = float(np.percentile(mag, PERCENTILE)) if mag.size else 0.0
    else:
        step = max(1, mag.size // MSE_SAMPLES)
        sample = values.ravel()[::step].astype(np.float64)
        clip = _mse_clip(sample, fmt, ACT_RATIOS) if mag.size and mag.max() > 0 else 0.0
    scale = np.float32(clip / fmt.max) if clip > 0 else np.float32(1.0)
    return clip, float(scale)


def weight_scales(w: np.ndarray, spec: Spec, per_channel: bool, mse: bool) -> np.ndarray:
    """Scales of ``w`` (output channels on axis 0), per channel or one for the tensor.

    Max |w| maps to the format's largest value; with ``mse`` each channel instead takes the
    clipping ratio that minimizes its squared quantization error.
    """
    fmt = spec.fmt
    if spec.fixed_scale is not None:
        return np.full(len(w) if per_channel else 1, spec.fixed_scale, np.float32)
    rows = w.reshape(len(w), -1) if per_channel else w.reshape(1, -1)
    rows = rows.astype(np.float64)
    top = np.max(np.abs(rows), axis=1)
    top = np.where(top > 0, top, fmt.max)  # an all-zero channel: any scale works
    if not mse:
        return (top / fmt.max).astype(np.float32)
    errors = np.stack([np.sum((fake_quant(rows, (r * top / fmt.max)[:, None], fmt) - rows) ** 2,
                              axis=1) for r in WEIGHT_RATIOS])
    best = WEIGHT_RATIOS[np.argmin(errors, axis=0)]
    return (best * top / fmt.max).astype(np.float32)
