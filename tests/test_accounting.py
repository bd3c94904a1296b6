"""MAdds / params accounting: parity with the paper's Tables 1 and 2, and Eq. 3/4 with groups."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from odconv_surgery.accounting import compare_costs, count_cost, format_count, odconv_extra_madds
from odconv_surgery.nn.odconv import ODConv2d


def swap_all_but_first(model: nn.Module, kernel_num: int) -> nn.Module:
    """Hand-made 'all_but_first' swap (independent of the surgery module)."""
    convs = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    for name, conv in convs[1:]:
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, attr, ODConv2d.from_conv(conv, kernel_num=kernel_num, init="scratch"))
    return model


def _costs(arch: str, kernel_num: int):
    # Full-size models on the meta device: no memory, no compute, fast.
    with torch.device("meta"):
        base = count_cost(getattr(torchvision.models, arch)())
        conv = count_cost(swap_all_but_first(getattr(torchvision.models, arch)(), kernel_num))
    return base, conv


@pytest.mark.parametrize(
    "arch, base_paper, one_paper, four_paper",
    [
        ("mobilenet_v2", 300.8e6, 311.8e6, 327.1e6),  # Table 1
        ("resnet18", 1.814e9, 1.838e9, 1.916e9),  # Table 2
    ],
)
def test_madds_match_paper(arch, base_paper, one_paper, four_paper):
    base, one = _costs(arch, 1)
    _, four = _costs(arch, 4)
    assert base.madds == pytest.approx(base_paper, rel=0.02)
    assert one.madds == pytest.approx(one_paper, rel=0.02)
    assert four.madds == pytest.approx(four_paper, rel=0.02)
    # Much tighter in practice: the extra MAdds themselves land within 3% of the paper's differences.
    assert one.madds - base.madds == pytest.approx(one_paper - base_paper, rel=0.03, abs=0.6e6)
    assert four.madds - base.madds == pytest.approx(four_paper - base_paper, rel=0.03, abs=0.6e6)
    assert one.static_madds == base.madds  # the aggregated convolution costs what the static one did


def test_resnet50_extra_madds_match_paper():
    # torchvision's resnet50 is v1.5 (static 4.09G vs the paper's 3.858G): compare only the extra, +58M for 1x.
    base, one = _costs("resnet50", 1)
    assert one.madds - base.madds == pytest.approx(58e6, rel=0.03)


def test_params_match_paper_mobilenet_v2():
    base, one = _costs("mobilenet_v2", 1)
    _, four = _costs("mobilenet_v2", 4)
    assert base.params == pytest.approx(3.50e6, rel=0.01)
    assert one.params == pytest.approx(4.94e6, rel=0.01)
    assert four.params == pytest.approx(11.52e6, rel=0.01)


def test_eq3_eq4_dense_layer_by_hand():
    conv = nn.Conv2d(64, 128, 3, padding=1)
    for n in (1, 4):
        layer = ODConv2d.from_conv(conv, kernel_num=n)
        a, h, w, k2, cin, cout = layer.attention.hidden_channels, 10, 10, 9, 64, 128
        if n == 1:
            expected = h * w * cin + a * (2 * cin + cout + k2) + k2 * cin * (1 + 2 * cout)
        else:
            expected = h * w * cin + a * (2 * cin + cout + k2 + n) + k2 * cin * (1 + cout + 2 * n * cout)
        assert odconv_extra_madds(layer, (h, w)) == expected


def test_groups_are_accounted():
    dense = ODConv2d(32, 32, 3, padding=1)
    grouped = ODConv2d(32, 32, 3, padding=1, groups=4)
    depthwise = ODConv2d(32, 32, 3, padding=1, groups=32)
    assert depthwise.attention.filter_fc is None
    e_dense, e_grouped, e_dw = (odconv_extra_madds(m, (8, 8)) for m in (dense, grouped, depthwise))
    a = dense.attention.hidden_channels
    agg_dense = 9 * 32 * (1 + 2 * 32)
    assert e_dense - e_grouped == agg_dense - 9 * 8 * (1 + 2 * 32)
    # depthwise: kernel depth 1 and no filter head
    assert e_dw == 8 * 8 * 32 + a * (32 + 32 + 9) + 9 * 1 * (1 + 2 * 32)

    model = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), depthwise)
    cost = count_cost(model, (1, 3, 8, 8))
    layer = cost.layer("1")
    assert layer.kind == "odconv"
    assert layer.static_madds == 8 * 8 * 9 * 32  # depthwise: k^2 * C_out per pixel
    assert layer.extra_madds == e_dw


def test_pointwise_single_kernel_has_no_spatial_or_kernel_head():
    layer = ODConv2d(16, 24, 1)
    a = layer.attention.hidden_channels
    assert odconv_extra_madds(layer, (4, 4)) == 4 * 4 * 16 + a * (16 + 16 + 24) + 16 * (1 + 2 * 24)


def test_per_layer_sums_and_mode_restored():
    model = torchvision.models.mobilenet_v2(width_mult=0.5, num_classes=10)
    swap_all_but_first(model, 1)
    model.train()
    cost = count_cost(model, (1, 3, 32, 32))
    assert model.training and all(m.training for m in model.modules())
    assert cost.params == sum(p.numel() for p in model.parameters())
    assert cost.extra_madds == sum(layer.extra_madds for layer in cost.layers)
    assert cost.static_madds == sum(layer.static_madds for layer in cost.layers)  # only conv + linear counted
    assert cost.layers[0].kind == "conv" and cost.layers[-1].kind == "linear"
    assert "odconv" in cost.table()
    # batch > 1 gives per-sample numbers
    cost4 = count_cost(model, example_input=torch.zeros(4, 3, 32, 32))
    assert cost4.madds == cost.madds


def test_compare_costs_table():
    base = torchvision.models.resnet18(num_classes=10)
    before = count_cost(base, (1, 3, 32, 32))
    after = count_cost(swap_all_but_first(base, 1), (1, 3, 32, 32))
    table = compare_costs(before, after)
    assert "| layer1.0.conv1 | conv | odconv |" in table
    assert "**total**" in table
    assert format_count(1.8382e9) == "1.838G" and format_count(311.75e6) == "311.8M" and format_count(4.94e6) == "4.94M"


def test_bad_input_shape_names_the_fix():
    with pytest.raises(ValueError, match="batch dimension"):
        count_cost(nn.Conv2d(3, 4, 3), (3,))


@pytest.mark.parametrize("arch,kwargs,settings,paper", [
    ("resnet18", {}, dict(method="dyconv"), 1.861e9),  # Table 2
    ("mobilenet_v2", {}, dict(method="dyconv"), 317.1e6),  # Table 1
    ("mobilenet_v2", {"width_mult": 0.5}, dict(method="dyconv"), 103.2e6),  # Table 1
    ("resnet18", {}, dict(attentions="spatial", reduction=0.25), 1.827e9),  # Table 7, one attention each
    ("resnet18", {}, dict(attentions="channel", reduction=0.25), 1.827e9),
    ("resnet18", {}, dict(attentions="filter", reduction=0.25), 1.827e9),
    ("resnet18", {}, dict(attentions="spatial,channel,filter", reduction=0.25), 1.839e9),  # Table 7 / 16
    ("resnet18", {}, dict(pool_size=3, reduction=0.25), 1.842e9),  # Table 16 (1.8406G: 0.08 % under)
])
def test_family_madds_match_paper(arch, kwargs, settings, paper):
    from odconv_surgery import apply_odconv

    with torch.device("meta"):
        converted, _ = apply_odconv(getattr(torchvision.models, arch)(**kwargs), init="scratch", **settings)
        madds = count_cost(converted).madds
    assert madds == pytest.approx(paper, rel=1e-3)
