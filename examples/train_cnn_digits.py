"""Train a small 4-bit Brevitas CNN on the 8x8 scikit-learn digits and export it to QONNX.

This produces the bundled example CNN used by bitloom:

* ``cnn_digits.onnx`` -- the QONNX graph as ``brevitas.export.export_qonnx`` emits it (batch 1,
  input shape ``(1, 1, 8, 8)``), written as one file (no external data).

The test split is ``digits_test.npz``, written by ``train_mlp_digits.py``; this script reads it
and checks that its own split of the digits reproduces it exactly.

Network::

    QuantIdentity 4-bit unsigned input
    -> QuantConv2d(1, 8, 3, padding=1) -> BatchNorm2d(8) -> QuantReLU 4-bit -> MaxPool2d(2)
    -> QuantConv2d(8, 16, 3, padding=1) -> BatchNorm2d(16) -> QuantReLU 4-bit
    -> AdaptiveAvgPool2d(1) -> QuantIdentity 4-bit unsigned -> Flatten -> QuantLinear(16, 10)

Weights are 4-bit signed narrow-range with per-tensor float scales (Brevitas defaults), the
convolutions have no bias (BatchNorm supplies it), the linear layer has a float bias.

Usage, from the repository root, in a venv with ``torch==2.13.0 brevitas scikit-learn onnx
onnxscript qonnx`` and bitloom (the project's ``.venv`` plus scikit-learn; see
``examples/README.md``)::

    python examples/train_cnn_digits.py

Training is seeded and deterministic; it takes well under a minute on two CPU cores.
"""

from __future__ import annotations

import contextlib
import io
import random
import time
import types
import warnings
from pathlib import Path

import brevitas.nn as qnn
import numpy as np
import onnx
import torch
from brevitas.export import export_qonnx
from brevitas.quant import Uint8ActPerTensorFloat
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.core.onnx_exec import execute_onnx
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

HERE = Path(__file__).resolve().parent
ONNX_PATH = HERE / "cnn_digits.onnx"
TEST_NPZ_PATH = HERE / "digits_test.npz"

SEED = 0
BIT_WIDTH = 4
EPOCHS = 40
BATCH_SIZE = 64
LEARNING_RATE = 1e-2


def seed_everything(seed: int) -> None:
    """Make data shuffling, weight init and training deterministic."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)  # same result on any machine; also fastest for a model this small


def load_data() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Return ``(x_train, x_test, y_train, y_test)``; images are ``(N, 1, 8, 8)`` in ``[0, 1]``.

    Same split as ``train_mlp_digits.py``; the test half is read from ``digits_test.npz`` and
    the reproduced split is checked against it.
    """
    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None, :, :]
    y = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.25, random_state=0, stratify=y
    )
    bundled = np.load(TEST_NPZ_PATH)
    if not (np.array_equal(bundled["x"], x_test) and np.array_equal(bundled["y"], y_test)):
        raise SystemExit(f"{TEST_NPZ_PATH.name} differs from the reproduced test split")
    return x_train, bundled["x"], y_train, bundled["y"]


def build_model() -> nn.Sequential:
    """Build the 4-bit quantized CNN taking ``(N, 1, 8, 8)`` inputs and returning 10 logits."""
    def uint4() -> qnn.QuantIdentity:
        return qnn.QuantIdentity(
            act_quant=Uint8ActPerTensorFloat, bit_width=BIT_WIDTH, return_quant_tensor=True
        )

    return nn.Sequential(
        uint4(),
        qnn.QuantConv2d(1, 8, 3, padding=1, bias=False, weight_bit_width=BIT_WIDTH),
        nn.BatchNorm2d(8),
        qnn.QuantReLU(bit_width=BIT_WIDTH, return_quant_tensor=True),
        nn.MaxPool2d(2),
        qnn.QuantConv2d(8, 16, 3, padding=1, bias=False, weight_bit_width=BIT_WIDTH),
        nn.BatchNorm2d(16),
        qnn.QuantReLU(bit_width=BIT_WIDTH, return_quant_tensor=False),
        nn.AdaptiveAvgPool2d(1),
        uint4(),
        nn.Flatten(),
        qnn.QuantLinear(16, 10, bias=True, weight_bit_width=BIT_WIDTH),
    )


def train(model: nn.Module, x: np.ndarray, y: np.ndarray) -> None:
    """Train ``model`` in place with Adam and cross-entropy."""
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=EPOCHS)
    loss_fn = nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(SEED)
    model.train()
    for epoch in range(EPOCHS):
        perm = torch.randperm(len(xt), generator=generator)
        total = 0.0
        for start in range(0, len(xt), BATCH_SIZE):
            idx = perm[start : start + BATCH_SIZE]
            optimizer.zero_grad()
            loss = loss_fn(model(xt[idx]), yt[idx])
            loss.backward()
            optimizer.step()
            total += loss.item() * len(idx)
        scheduler.step()
        if (epoch + 1) % 10 == 0:
            print(f"epoch {epoch + 1:3d}  loss {total / len(xt):.4f}")


@torch.no_grad()
def torch_logits(model: nn.Module, x: np.ndarray) -> np.ndarray:
    """Logits of the (fake-quantized) torch model."""
    model.eval()
    out = model(torch.from_numpy(x))
    return (out.value if hasattr(out, "value") else out).numpy()


def qonnx_logits(path: Path, x: np.ndarray) -> np.ndarray:
    """Logits of the exported QONNX graph, executed image by image with qonnx."""
    model = ModelWrapper(str(path))
    in_name = model.graph.input[0].name
    out_name = model.graph.output[0].name
    return np.concatenate([execute_onnx(model, {in_name: image[None]})[out_name] for image in x])


def export(model: nn.Module, path: Path) -> None:
    """Export ``model`` as QONNX to ``path`` as a single file (weights inside the .onnx)."""
    import brevitas.export.onnx.manager as manager

    if manager.opt is None:  # brevitas wants onnxoptimizer, which the dynamo path never uses
        manager.onnx = onnx
        manager.opt = types.SimpleNamespace(optimize=lambda model, passes: model)
    model.eval()
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        export_qonnx(
            model, input_t=torch.zeros(1, 1, 8, 8), export_path=str(path), external_data=False
        )
    sidecar = path.with_name(path.name + ".data")
    if sidecar.exists():  # re-save self-contained and drop a stale sidecar
        onnx.save(onnx.load(str(path)), str(path), save_as_external_data=False)
        sidecar.unlink()


def main() -> None:
    """Train, export and cross-check the example CNN."""
    import bitloom

    start = time.monotonic()
    seed_everything(SEED)
    x_train, x_test, y_train, y_test = load_data()
    print(f"train {x_train.shape}  test {x_test.shape}")

    model = build_model()
    train(model, x_train, y_train)
    acc_torch = float((torch_logits(model, x_test).argmax(1) == y_test).mean())
    print(f"torch (QAT, fake-quantized) test accuracy: {acc_torch:.4f}")

    export(model, ONNX_PATH)
    print(f"wrote {ONNX_PATH.name} ({ONNX_PATH.stat().st_size} B)")

    golden = bitloom.load(str(ONNX_PATH)).run(x_test)
    reference = qonnx_logits(ONNX_PATH, x_test)
    acc_golden = float((golden.argmax(1) == y_test).mean())
    acc_qonnx = float((reference.argmax(1) == y_test).mean())
    print(f"bitloom golden test accuracy:     {acc_golden:.4f}")
    print(f"qonnx execute_onnx test accuracy: {acc_qonnx:.4f}")
    print(f"max |golden - qonnx|: {np.abs(golden - reference).max():.3g}")
    same = golden.argmax(1) == reference.argmax(1)
    assert same.all(), f"golden and qonnx argmax differ on {np.flatnonzero(~same).tolist()}"
    print(f"golden == qonnx argmax on all {len(x_test)} test images; "
          f"{time.monotonic() - start:.1f} s")


if __name__ == "__main__":
    main()
