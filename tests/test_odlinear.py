"""ODLinear: a Linear converted through the 1x1 ODConv2d it holds. Selection (only condconv and include= convert a
Linear), the function-preserving init, save/load, fold_static, accounting, fuse_batchnorm and ONNX export."""

import json

import pytest
import torch
from torch import nn

from helpers.randomise import randomise_attention
from odconv_surgery import (
    METHODS,
    EmptySelectionError,
    InvalidValueError,
    ODConv2d,
    ODLinear,
    apply_odconv,
    fold_static,
    fuse_batchnorm,
    get_recipe,
    list_candidates,
    load,
    param_groups,
    save,
)
from odconv_surgery.accounting import count_cost


class Block(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 1, bias=False)

    def forward(self, x):
        return x + self.conv2(torch.relu(self.bn(self.conv1(x))))


class MlpHeadNet(nn.Module):
    """Two residual blocks and a two-Linear head on the pooled features."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.blocks = nn.Sequential(Block(8), Block(8))
        self.hidden = nn.Linear(8, 12)
        self.classifier = nn.Linear(12, 5)

    def forward(self, x):
        x = self.blocks(torch.relu(self.stem(x))).mean((2, 3))
        return self.classifier(torch.relu(self.hidden(x)))


def net() -> MlpHeadNet:
    torch.manual_seed(0)
    model = MlpHeadNet().eval()
    with torch.no_grad():
        model.blocks[0].bn.running_mean.uniform_(-0.5, 0.5)
        model.blocks[0].bn.running_var.uniform_(0.5, 2)
    return model


@pytest.mark.parametrize("method", sorted(METHODS))
def test_from_linear_preserves_the_function(method):
    linear = nn.Linear(24, 7).eval()
    layer = ODLinear.from_linear(linear, options=METHODS[method].options())
    assert isinstance(layer.conv, ODConv2d) and (layer.in_features, layer.out_features) == (24, 7)
    x = torch.randn(4, 24)
    with torch.no_grad():
        assert torch.allclose(layer(x), linear(x), atol=1e-5)
        assert layer(x[:0]).shape == (0, 7)
    attention = {id(p) for p in layer.conv.attention.parameters()}
    assert any(id(p) in attention for group in param_groups(layer, lr=1.0) if group["lr"] < 1.0 for p in group["params"])


def test_other_input_ranks_are_refused_naming_the_fix():
    layer = ODLinear(6, 3, kernel_num=2)
    for shape in [(2, 5, 6), (6,)]:
        with pytest.raises(InvalidValueError, match=r"2-D \(N, 6\) input.*Flatten.*exclude="):
            layer(torch.randn(shape))
    with pytest.raises(TypeError, match="expects an nn.Linear"):
        ODLinear.from_linear(nn.Conv2d(6, 3, 1))


@pytest.mark.parametrize("policy", ["all_but_first", "all", "1x1", "3x3", "last:1", "all_but_stem"])
def test_existing_policies_leave_linears_static_and_say_why(policy):
    converted, report = apply_odconv(net(), policy)
    assert not any(isinstance(m, ODLinear) for m in converted.modules())
    for name in ("hidden", "classifier"):
        assert "places convolutions only" in report.skipped[name]
    assert report.summary().count("0/2 Linear") == 1


def test_condconv_converts_the_classifier_only():
    model = net()
    converted, report = apply_odconv(model, method="condconv")
    assert isinstance(converted.classifier, ODLinear) and converted.classifier.conv.kernel_num == 8
    assert isinstance(converted.hidden, nn.Linear) and "before the classifier" in report.skipped["hidden"]
    assert {"blocks.0.conv1", "blocks.1.conv2", "classifier"} <= set(report.converted)
    x = torch.randn(3, 3, 8, 8)
    with torch.no_grad():
        assert torch.allclose(converted(x), model(x), atol=1e-5)
    table = list_candidates(model, policies=["condconv", "all"], print_table=False)
    cells = next(line for line in table.splitlines() if " classifier " in line).split()
    assert cells[3] == "-" and cells[7:9] == ["x", "."] and "include=" in cells[-1]  # no kernel; condconv, not all


def test_include_naming_a_linear_converts_it():
    converted, report = apply_odconv(net(), None, include="hidden", kernel_num=2)
    assert isinstance(converted.hidden, ODLinear) and report.converted == ["hidden"]
    converted, _ = apply_odconv(net(), None, include=nn.Linear)
    assert isinstance(converted.hidden, ODLinear) and isinstance(converted.classifier, ODLinear)
    _, report = apply_odconv(net(), None, include=1)  # a kernel size selects convolutions, never a Linear
    assert report.converted == ["blocks.0.conv2", "blocks.1.conv2"]


def test_frozen_and_tied_linears():
    model = net()
    model.hidden.requires_grad_(False)
    converted, report = apply_odconv(model, None, include="hidden")
    assert not any(p.requires_grad for p in converted.hidden.parameters())
    assert "frozen" in next(row.reason for row in report.layers if row.name == "hidden")

    class Tied(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(5, 4)
            self.conv = nn.Conv2d(4, 4, 1)
            self.out = nn.Linear(4, 5, bias=False)
            self.out.weight = self.embed.weight

        def forward(self, tokens):
            x = self.embed(tokens)[:, :, None, None]
            return self.out(self.conv(x).flatten(1))

    with pytest.raises(EmptySelectionError, match="tied to embed"):
        apply_odconv(Tied(), None, include="out")


def test_save_and_load_rebuild_the_odlinear(tmp_path):
    model = net()
    converted, _ = apply_odconv(model, method="condconv")
    randomise_attention(converted)
    path = save(converted, tmp_path / "condconv.pt")
    loaded = load(net(), path)
    assert isinstance(loaded.classifier, ODLinear)
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(loaded(x), converted(x))


def test_fold_static_turns_an_odlinear_back_into_a_linear(tmp_path):
    converted, _ = apply_odconv(net(), None, include="classifier", kernel_num=4)
    x = torch.randn(6, 3, 8, 8)
    with torch.no_grad():
        before = converted(x)
    _, report = fold_static(converted, [x], layers=["classifier"])
    assert type(converted.classifier) is nn.Linear and report.layers[0].name == "classifier"
    assert report.layers[0].relative_error < 1e-5  # constant attentions at conversion: the fold is exact
    with torch.no_grad():
        assert torch.allclose(converted(x), before, atol=1e-5)
    assert get_recipe(converted).folded == ["classifier"]
    reloaded = load(net(), save(converted, tmp_path / "folded.pt"))
    with torch.no_grad():
        assert torch.allclose(reloaded(x), before, atol=1e-5)

    dynamic, _ = apply_odconv(net(), None, include="classifier", kernel_num=4)
    randomise_attention(dynamic, scale=2.0)
    _, report = fold_static(dynamic, [x])
    assert report.layers[0].relative_error > 1e-4  # input-dependent routing: the fold is approximate, and says so


def test_accounting_counts_an_odlinear_as_its_one_by_one_conv():
    n, c_in, c_out = 8, 12, 5
    converted, _ = apply_odconv(net(), method="condconv")
    cost = count_cost(converted, (1, 3, 8, 8)).layer("classifier")
    assert cost.kind == "odlinear" and cost.geometry == f"{c_in}->{c_out} n={n}"
    assert cost.params == n * c_out * c_in + c_out + (c_in + 1) * n  # bank, bias, routing Linear(C_in, n)
    assert cost.static_madds == c_out * c_in  # the matmul of the aggregated kernel
    assert cost.extra_madds == c_in + c_in * n + n * c_out * c_in  # pooling, routing, n |W| aggregation


@pytest.mark.parametrize("method", ["odconv", "condconv"])
def test_fuse_batchnorm_leaves_an_odlinear_working(method):
    converted, _ = apply_odconv(net(), None, method=method, include=["classifier", r"blocks\.0\.conv1"])
    randomise_attention(converted)
    x = torch.randn(3, 3, 8, 8)
    with torch.no_grad():
        before = converted(x)
        fuse_batchnorm(converted)
        assert torch.allclose(converted(x), before, atol=1e-5)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in converted.classifier.modules())


@pytest.mark.parametrize("method", ["odconv", "condconv"])
def test_odlinear_exports_with_parity_at_every_batch(method):
    pytest.importorskip("onnxruntime")
    from odconv_surgery import check_parity, export_onnx

    converted, _ = apply_odconv(net(), None, method=method, include=["classifier", "hidden"], kernel_num=2)
    randomise_attention(converted)
    x = torch.randn(2, 3, 8, 8)
    proto = export_onnx(converted, None, x, target="portable")
    check_parity(converted, proto, x, batches=(0, 1, 3))
    marked = json.loads({p.key: p.value for p in proto.metadata_props}["odconv.layers"])
    assert marked == ["hidden.conv", "classifier.conv"]  # every method goes through the marker and the fused forms
