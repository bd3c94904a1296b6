"""layer_costs (issue #19, item 2): each converted layer's time in onnxruntime beside the static conv it replaced."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from odconv_surgery import ODConv2d, apply_odconv
from odconv_surgery.deploy.layer_costs import layer_costs
from odconv_surgery.passes.onnx.common import detect_nchwc_block


def test_every_converted_layer_gets_its_cost_beside_the_static_conv():
    if detect_nchwc_block() is None:
        pytest.skip("onnxruntime NCHWc contrib ops not usable here")
    torch.manual_seed(0)
    static = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
        nn.Conv2d(32, 32, 3, padding=1, groups=32), nn.ReLU(),
        nn.Conv2d(32, 12, 1),
    ).eval()
    model, _ = apply_odconv(static, "all_but_first")
    costs = layer_costs(model, torch.randn(1, 3, 32, 32))
    from odconv_surgery.accounting import count_cost

    counted = {layer.name: layer for layer in count_cost(model, (1, 3, 32, 32)).layers}
    assert set(costs) == {n for n, m in model.named_modules() if isinstance(m, ODConv2d)}
    for cost in costs.values():
        assert cost.form in ("kernel", "activations", "columns")
        assert math.isfinite(cost.odconv_us) and cost.static_us > 0
        assert cost.marginal_us == pytest.approx(cost.odconv_us - cost.static_us)
        assert cost.params > 0 and cost.madds > 0
    assert all(costs[n].params == counted[n].params and costs[n].madds == counted[n].madds for n in costs)
    assert all(c.odconv_us > 0 for c in costs.values())  # timed; the marginal's sign is left to benchmarks (noise)


def test_a_converted_linear_is_costed_under_its_own_name():
    import torchvision

    from odconv_surgery import apply_odconv
    from odconv_surgery.accounting import count_cost

    model, _ = apply_odconv(torchvision.models.mobilenet_v2(width_mult=0.5, num_classes=10).eval(), "3x3",
                            include=[r"classifier\.1"])
    x = torch.randn(1, 3, 32, 32)
    costs = layer_costs(model.eval(), x, tune=False)
    counted = {layer.name: layer for layer in count_cost(model, example_input=x).layers}
    assert costs["classifier.1"].params == counted["classifier.1"].params > 0
