"""FINN's bnn-pynq suite (TFC, SFC, LFC, CNV) from ``brevitas_examples``, exported as a FINN
user exports it: each imports (its ``2*x - 1`` preprocessing runs on the host) and its
golden output equals qonnx's executor on 16 random images, value for value."""

from __future__ import annotations

import finn_zoo_models as fz
import numpy as np
import pytest
from reference_check import run_reference

import bitloom

pytest.importorskip("brevitas_examples")


@pytest.mark.parametrize("name", sorted(fz.BNN_PYNQ))
def test_bnn_pynq_golden_equals_qonnx(name):
    path = fz.cached_export(name)
    net = bitloom.load(path)
    assert [s.op_type for s in net.input.steps] == ["Mul", "Sub"]
    x = fz.images(name, 16)
    reference, _ = run_reference(path, "qonnx", x)
    np.testing.assert_array_equal(net.run(x), reference)
