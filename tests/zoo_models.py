"""The float model-zoo topologies shipped in the onnx wheel, quantized by onnxruntime.

``onnx/backend/test/data/light/*.onnx`` are full ImageNet topologies (ResNet-50, SqueezeNet,
ShuffleNet, Inception v1/v2, DenseNet-121, VGG-19, AlexNet, ZFNet-512) whose weights were
replaced by ``ConstantOfShape`` nodes that fill every tensor with one constant. Quantizing
that as it stands gives degenerate (all-equal) weights, so :func:`materialized` first turns
each such node into a seeded random initializer (He-normal for weights, BatchNorm-like
ranges for 1-D parameters). :func:`quantized_zoo_model` then runs onnxruntime's
``quantize_static`` (QDQ by default) on a few batches of random calibration data and caches
the result under ``cache_dir`` keyed by model name and options.

Timing: see ``ZOO_SECONDS`` (measured on 2 cores); the large models take long, so tests pick
a subset (:data:`FAST`) unless asked for all, and ``calibration="weights"`` calibrates on a
single constant batch (activation ranges are then meaningless but the topology and weight
quantization are real, which is what an import test needs).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

LIGHT_DIR = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"

#: short name -> file stem
ZOO = {
    "alexnet": "light_bvlc_alexnet",
    "densenet121": "light_densenet121",
    "inception_v1": "light_inception_v1",
    "inception_v2": "light_inception_v2",
    "resnet50": "light_resnet50",
    "shufflenet": "light_shufflenet",
    "squeezenet": "light_squeezenet",
    "vgg19": "light_vgg19",
    "zfnet512": "light_zfnet512",
}
#: models whose quantization takes a few seconds (filled in from measurements, see report)
FAST = ("squeezenet", "shufflenet", "inception_v1")


def available() -> list[str]:
    return [name for name, stem in ZOO.items() if (LIGHT_DIR / f"{stem}.onnx").exists()]


def _random_tensor(positive: bool, shape: tuple[int, ...],
                   rng: np.random.Generator) -> np.ndarray:
    if len(shape) <= 1:
        n = int(np.prod(shape)) if shape else 1
        if positive:
            return rng.uniform(0.5, 1.5, size=shape).astype(np.float32)
        return rng.normal(scale=0.1, size=n).reshape(shape).astype(np.float32)
    fan_in = int(np.prod(shape[1:]))
    return (rng.normal(size=shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)


def materialized(name: str, seed: int = 0) -> onnx.ModelProto:
    """The zoo model ``name`` with every ``ConstantOfShape`` weight turned into a seeded random
    initializer and only the image left as a graph input."""
    model = onnx.load(str(LIGHT_DIR / f"{ZOO[name]}.onnx"))
    graph = model.graph
    rng = np.random.default_rng(seed)
    inits = {t.name: t for t in graph.initializer}
    # BatchNormalization scale (input 1) and variance (input 4) must stay positive
    positive = {n.input[i] for n in graph.node if n.op_type == "BatchNormalization"
                for i in (1, 4) if i < len(n.input)}
    keep, new_inits = [], []
    for node in graph.node:
        if node.op_type == "ConstantOfShape" and node.input[0] in inits:
            shape = tuple(int(d) for d in numpy_helper.to_array(inits[node.input[0]]))
            new_inits.append(numpy_helper.from_array(
                _random_tensor(node.output[0] in positive, shape, rng), node.output[0]))
        else:
            keep.append(node)
    del graph.node[:]
    graph.node.extend(keep)
    graph.initializer.extend(new_inits)
    used = {i for n in graph.node for i in n.input}
    kept_inits = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept_inits)
    names = {t.name for t in graph.initializer} | set(inits)
    data = [i for i in graph.input if i.name not in names and i.name in used]
    del graph.input[:]
    graph.input.extend(data)
    model.ir_version = max(model.ir_version, 7)  # IR 3 wants initializers listed as inputs
    return model


def input_shape(model: onnx.ModelProto) -> tuple[int, ...]:
    dims = model.graph.input[0].type.tensor_type.shape.dim
    return tuple(max(d.dim_value, 1) for d in dims)


def quantized_zoo_model(name: str, cache_dir: Path, fmt: str = "QDQ", batches: int = 2,
                        calibration: str = "random", per_channel: bool = False,
                        seed: int = 0) -> tuple[Path, float]:
    """(path of the quantized model, seconds spent, 0 when cached)."""
    import os

    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tag = f"{name}-{fmt}-{calibration}{batches}-{'pc13' if per_channel else 'pt'}-{seed}"
    path = cache_dir / f"{tag}.onnx"
    if path.exists():
        return path, 0.0
    start = time.perf_counter()
    model = materialized(name, seed)
    if per_channel:  # the zoo files are opset 9; per-channel Q/DQ (an axis) needs opset 13
        from onnx import version_converter

        model = version_converter.convert_version(model, 13)
    shape = input_shape(model)
    in_name = model.graph.input[0].name
    src = cache_dir / f"{tag}.{os.getpid()}.float.onnx"
    onnx.save(model, str(src))
    rng = np.random.default_rng(seed)
    if calibration == "weights":
        samples = [np.full(shape, 0.5, dtype=np.float32)]
    else:
        samples = [rng.normal(size=shape).astype(np.float32) for _ in range(batches)]

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter([{in_name: s} for s in samples])

        def get_next(self):
            return next(self.items, None)

    tmp = cache_dir / f"{tag}.{os.getpid()}.tmp.onnx"
    quantize_static(str(src), str(tmp), Reader(), quant_format=getattr(QuantFormat, fmt),
                    per_channel=per_channel, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8, reduce_range=True)
    os.replace(tmp, path)
    src.unlink(missing_ok=True)
    return path, time.perf_counter() - start


def zoo_input(model_path: Path, n: int = 1, seed: int = 0) -> np.ndarray:
    model = onnx.load(str(model_path), load_external_data=False)
    return np.random.default_rng(seed).normal(size=(n, *input_shape(model)[1:])).astype(
        np.float32)


__all__ = ["FAST", "ZOO", "available", "helper", "materialized", "quantized_zoo_model",
           "zoo_input"]
