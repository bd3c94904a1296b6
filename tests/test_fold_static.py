"""fold_static (issue #19, item 1): converted layers back into plain convolutions with their mean aggregated kernel."""

from __future__ import annotations

import copy

import pytest
import torch
import torchvision
from torch import nn

from odconv_surgery import ODConv2d, apply_odconv, fold_static, get_recipe, load, save
from odconv_surgery.deploy.export import export_onnx
from odconv_surgery.deploy.runtime import check_parity
from odconv_surgery.errors import EmptySelectionError, InvalidValueError
from odconv_surgery.calibration import per_sample_kernels

from helpers.onnx_models import randomise


def small_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1, groups=16), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 24, 1), nn.ReLU(),
        nn.Conv2d(24, 24, 3, stride=2, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(24, 5),
    ).eval()


def converted(kernel_num: int = 1) -> nn.Module:
    model, _ = apply_odconv(small_model(), "all_but_first", kernel_num=kernel_num, init="scratch", seed=1)
    with torch.no_grad():  # non-trivial BN statistics, so folding a BN is not the identity
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_var.uniform_(0.5, 2.0)
                m.running_mean.normal_(0, 0.2)
    return randomise(model, scale=0.5)


def data(n: int = 3, batch: int = 4):
    g = torch.Generator().manual_seed(5)
    return [(torch.randn(batch, 3, 12, 12, generator=g), torch.zeros(batch)) for _ in range(n)]


@pytest.mark.parametrize("kernel_num", [1, 3])
def test_per_sample_kernel_reproduces_the_layer(kernel_num):
    layer = next(m for m in converted(kernel_num).modules() if isinstance(m, ODConv2d) and m.kernel_size == (3, 3) and m.groups == 1)
    x = torch.randn(3, layer.in_channels, 8, 8)
    kernels = per_sample_kernels(layer, x)
    with torch.no_grad():
        expected = layer(x)
        by_sample = torch.cat([nn.functional.conv2d(x[b:b + 1], kernels[b], layer.bias, layer.stride, layer.padding,
                                                    layer.dilation, layer.groups) for b in range(3)])
    torch.testing.assert_close(by_sample, expected, rtol=1e-5, atol=1e-5)


def test_constant_attention_folds_exactly():
    model = converted(3)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, ODConv2d):
                for head in m.attention.heads().values():
                    head.weight.zero_()  # heads ignore the input: every attention is a constant
    reference = copy.deepcopy(model)
    folded, report = fold_static(model, data())
    assert not any(isinstance(m, ODConv2d) for m in folded.modules())
    assert max(layer.relative_error for layer in report.layers) < 1e-5
    x = torch.randn(2, 3, 12, 12)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), reference(x), rtol=1e-4, atol=1e-5)


def test_reported_error_is_the_measured_output_change():
    model = converted(1)
    name = next(n for n, m in model.named_modules() if isinstance(m, ODConv2d) and m.groups == 1 and m.kernel_size == (3, 3))
    layer = dict(model.named_modules())[name]
    batches = data()
    captured = []
    handle = layer.register_forward_hook(lambda m, a, out: captured.append((a[0].detach(), out.detach())))
    with torch.no_grad():
        for x, _ in batches:
            model(x)
    handle.remove()
    folded, report = fold_static(model, batches, layers=[name])
    (entry,) = report.layers
    conv = dict(folded.named_modules())[name]
    assert type(conv) is nn.Conv2d
    with torch.no_grad():
        diff = max((conv(x) - y).abs().max().item() for x, y in captured)
    scale = max(y.abs().max().item() for _, y in captured)
    assert entry.relative_error == pytest.approx(diff / scale, rel=1e-6)
    assert entry.relative_error > 1e-4  # randomised attentions: the fold is not exact
    assert entry.samples == 12
    assert sum(isinstance(m, ODConv2d) for m in folded.modules()) == 2  # the others are left alone


def test_folded_model_exports_and_round_trips(tmp_path):
    model = converted(1)
    name = next(n for n, m in model.named_modules() if isinstance(m, ODConv2d))
    folded, _ = fold_static(model, data(), layers=[name])
    recipe = get_recipe(folded)
    assert recipe.folded == [name] and name not in recipe.layers
    x = torch.randn(1, 3, 12, 12)
    check_parity(folded, export_onnx(folded, None, x, target="portable"), x, batches=(1, 2))
    save(folded, tmp_path / "m.pt")
    loaded = load(small_model(), tmp_path / "m.pt")
    assert type(dict(loaded.named_modules())[name]) is nn.Conv2d
    assert get_recipe(loaded).folded == [name]
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), folded(x))


def test_bad_arguments():
    with pytest.raises(EmptySelectionError, match="no ODConv2d layer"):
        fold_static(small_model(), data())
    model = converted(1)
    with pytest.raises(InvalidValueError, match="not ODConv2d layers"):
        fold_static(model, data(), layers=["nope"])
    with pytest.raises(InvalidValueError, match="calibration data is empty"):
        fold_static(model, [])
    with pytest.raises(InvalidValueError, match="max_batches"):
        fold_static(model, data(), max_batches=0)


def test_dynamism_is_zero_for_constant_attention_and_matches_its_definition():
    from odconv_surgery.folding import kernel_dynamism

    model = converted(3)
    batches = data()
    dyn = kernel_dynamism(model, batches)
    assert set(dyn) == {n for n, m in model.named_modules() if isinstance(m, ODConv2d)}
    name = next(iter(dyn))
    layer = dict(model.named_modules())[name]
    inputs = []
    handle = layer.register_forward_hook(lambda m, a, out: inputs.append(a[0].detach()))
    with torch.no_grad():
        for x, _ in batches:
            model(x)
        handle.remove()
        kernels = torch.cat([per_sample_kernels(layer, x) for x in inputs]).double().flatten(1)
    mean = kernels.mean(0)
    expected = ((kernels - mean).pow(2).sum(1).mean().sqrt() / mean.norm()).item()
    assert dyn[name] == pytest.approx(expected, rel=1e-6) and dyn[name] > 0
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, ODConv2d):
                for head in m.attention.heads().values():
                    head.weight.zero_()
    assert max(kernel_dynamism(model, batches).values()) < 1e-6


def test_folded_layer_is_an_ordinary_conv_for_batchnorm_folding():
    from odconv_surgery import fuse_batchnorm

    model = converted(1)
    folded, _ = fold_static(model, data(), layers=["3"])
    x = torch.randn(2, 3, 12, 12)
    with torch.no_grad():
        before = folded(x)
        fused = copy.deepcopy(folded)
        pairs = fuse_batchnorm(fused)
        torch.testing.assert_close(fused(x), before, rtol=1e-4, atol=1e-5)
    assert ("3", "4") in pairs  # the folded depthwise layer's BN folds into it like any conv's
