"""The larger Brevitas networks (ResNet-18 4w4a, MobileNet-v1 4b), exported as a FINN user
exports them, read with the declared 8-bit image input: every layer of the golden model,
fed the codes qonnx's executor computed for its inputs, gives qonnx's output codes, except
where qonnx's own float32 value lies at a rounding boundary.

End to end, the same networks with random weights amplify one such float32 flip layer after
layer (MobileNet-v1's output moves by thousands of output steps from a single flipped code in
its fifth layer), so the end-to-end figures are measured in bench/finn_zoo.py and reported,
not asserted here.
"""

from __future__ import annotations

import imagenet_zoo_models as iz
import pytest
from reference_check import layerwise_against_qonnx

import bitloom

pytest.importorskip("brevitas_examples")
pytestmark = pytest.mark.slow


@pytest.mark.parametrize("name, frames", [("resnet18_4w4a", 2), ("mobilenet_v1_4b", 1)])
def test_every_layer_equals_qonnx_on_its_inputs(name, frames):
    path = iz.cached_export(name)
    net = bitloom.load(path, input_format="uint8", input_scale="1/255")
    rows = layerwise_against_qonnx(net, path, iz.images(name, frames))
    assert len(rows) == len(net.layers) - 1  # all but the final (float-output) MatMul
    for row in rows:
        assert row["max"] <= 1 and row["all_at_boundaries"], row
    assert sum(r["differ"] for r in rows) <= 1e-4 * sum(r["codes"] for r in rows)


def test_mobilenet_without_a_declared_input_names_the_option():
    path = iz.cached_export("mobilenet_v1_4b")
    with pytest.raises(bitloom.BitloomError, match=r"Conv_0.*not quantized.*--input-format uint8"):
        bitloom.load(path)


def test_proxylessnas_plans_on_the_ultra96_and_is_refused_by_name_on_the_pynq_z2():
    """ProxylessNAS-mobile14 4b: its 75 layers' requantizers chosen by cost (most take a
    scale unit, which leaves the block RAM its threshold tables would fill), it fits the
    Ultra96-V2; on the PYNQ-Z2 its line buffers alone exceed the block RAM ceiling."""
    from bitloom.boards import load_board
    from bitloom.plan import plan_design
    from bitloom.plan.cost import estimate_plan

    path = iz.cached_export("proxylessnas_mobile14_4b")
    net = bitloom.load(path, input_format="uint8", input_scale="1/255")
    board = load_board("ultra96-v2")
    plan = plan_design(net, board)
    est = estimate_plan(plan)
    assert all(est[k] <= 0.8 * board.resources[k] for k in ("DSP", "BRAM36"))
    assert sum(lp.scale is not None for lp in plan.layers) > len(plan.layers) // 2
    with pytest.raises(bitloom.BitloomError, match=r"does not fit pynq-z2.*BRAM36"):
        plan_design(net, load_board("pynq-z2"))
