"""Train a small 4-bit Brevitas MLP on the 8x8 scikit-learn digits and export it to QONNX.

This produces the bundled example model used by bitloom:

* ``mlp_digits.onnx`` -- the raw QONNX graph exactly as ``brevitas.export.export_qonnx``
  emits it (batch 1, input shape ``(1, 1, 8, 8)``, no post-processing);
* ``digits_test.npz`` -- the held-out test split, arrays ``x`` ``(N, 1, 8, 8)`` float32 in
  ``[0, 1]`` and ``y`` ``(N,)`` int64.

Network: Flatten -> 4-bit unsigned input quantizer -> QuantLinear(64, 32) -> QuantReLU ->
QuantLinear(32, 32) -> QuantReLU -> QuantLinear(32, 10). All weights and activations are 4-bit
with per-tensor float scales (Brevitas defaults); biases stay in floating point.

Usage, from the repository root, in a venv with ``torch==2.13.0 brevitas scikit-learn onnx
onnxscript onnxoptimizer qonnx`` (see ``examples/README.md``)::

    python examples/train_mlp_digits.py

Training is seeded and deterministic; it takes well under a minute on two CPU cores.
"""

from __future__ import annotations

import random
from pathlib import Path

import brevitas.nn as qnn
import numpy as np
import torch
from brevitas.export import export_qonnx
from brevitas.quant import Uint8ActPerTensorFloat
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.core.onnx_exec import execute_onnx
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

HERE = Path(__file__).resolve().parent
ONNX_PATH = HERE / "mlp_digits.onnx"
TEST_NPZ_PATH = HERE / "digits_test.npz"

SEED = 0
BIT_WIDTH = 4
HIDDEN = 32
EPOCHS = 60
BATCH_SIZE = 64
LEARNING_RATE = 1e-2


def seed_everything(seed: int) -> None:
    """Make data shuffling, weight init and training deterministic."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)


def load_data() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Return ``(x_train, x_test, y_train, y_test)``; images are ``(N, 1, 8, 8)`` in ``[0, 1]``."""
    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None, :, :]
    y = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.25, random_state=0, stratify=y
    )
    return x_train, x_test, y_train, y_test


def build_model() -> nn.Sequential:
    """Build the 4-bit quantized MLP taking ``(N, 1, 8, 8)`` inputs and returning 10 logits."""
    return nn.Sequential(
        nn.Flatten(),
        qnn.QuantIdentity(
            act_quant=Uint8ActPerTensorFloat, bit_width=BIT_WIDTH, return_quant_tensor=True
        ),
        qnn.QuantLinear(64, HIDDEN, bias=True, weight_bit_width=BIT_WIDTH),
        qnn.QuantReLU(bit_width=BIT_WIDTH, return_quant_tensor=True),
        qnn.QuantLinear(HIDDEN, HIDDEN, bias=True, weight_bit_width=BIT_WIDTH),
        qnn.QuantReLU(bit_width=BIT_WIDTH, return_quant_tensor=True),
        qnn.QuantLinear(HIDDEN, 10, bias=True, weight_bit_width=BIT_WIDTH),
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
def torch_accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    """Accuracy of the (fake-quantized) torch model."""
    model.eval()
    logits = model(torch.from_numpy(x))
    return float((logits.argmax(dim=1).numpy() == y).mean())


def onnx_accuracy(path: Path, x: np.ndarray, y: np.ndarray) -> float:
    """Accuracy of the exported QONNX graph, executed image by image with qonnx."""
    model = ModelWrapper(str(path))
    in_name = model.graph.input[0].name
    out_name = model.graph.output[0].name
    correct = 0
    for image, label in zip(x, y, strict=True):
        out = execute_onnx(model, {in_name: image[None]})[out_name]
        correct += int(np.argmax(out) == label)
    return correct / len(y)


def main() -> None:
    """Train, export and cross-check the example model."""
    seed_everything(SEED)
    x_train, x_test, y_train, y_test = load_data()
    print(f"train {x_train.shape}  test {x_test.shape}")

    model = build_model()
    train(model, x_train, y_train)
    acc_torch = torch_accuracy(model, x_test, y_test)
    print(f"torch (quantized) test accuracy: {acc_torch:.4f}")

    model.eval()
    # external_data=False: keep the weights inside the .onnx (torch's dynamo exporter would
    # otherwise also leave a stale ``mlp_digits.onnx.data`` sidecar next to it).
    export_qonnx(
        model, input_t=torch.zeros(1, 1, 8, 8), export_path=str(ONNX_PATH), external_data=False
    )
    np.savez(TEST_NPZ_PATH, x=x_test, y=y_test)
    print(
        f"wrote {ONNX_PATH.name} ({ONNX_PATH.stat().st_size} B), "
        f"{TEST_NPZ_PATH.name} ({TEST_NPZ_PATH.stat().st_size} B)"
    )

    acc_onnx = onnx_accuracy(ONNX_PATH, x_test, y_test)
    print(f"qonnx execute_onnx test accuracy: {acc_onnx:.4f}")


if __name__ == "__main__":
    main()
