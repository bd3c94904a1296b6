"""The layer options behind the paper's ablations and the CondConv / DyConv presets: attention subsets (Table 7),
softmax activations (Table 11), pooled attention input (Table 16), no trunk (CondConv's routing), sigmoid kernel
attention, temperature annealing off (Table 10), and the method presets."""

import itertools

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from helpers.randomise import randomise_attention
from odconv_surgery import ODConv2d, ODLinear, apply_odconv, load, save
from odconv_surgery.cli import main
from odconv_surgery.errors import ODConvError
from odconv_surgery.methods import METHODS
from odconv_surgery.nn.attention import attention_parameter_count
from odconv_surgery.nn.options import LayerOptions
from odconv_surgery.nn.temperature import TemperatureSchedule, set_temperature

SUBSETS = [s for r in range(1, 5) for s in itertools.combinations(("spatial", "channel", "filter", "kernel"), r)]
GEOMETRIES = {
    "dense3x3": dict(in_channels=8, out_channels=16, kernel_size=3, padding=1),
    "depthwise": dict(in_channels=16, out_channels=16, kernel_size=3, groups=16, padding=1, stride=2),
    "pointwise": dict(in_channels=8, out_channels=12, kernel_size=1),
}


def settings_for(subset, **extra):
    return dict(attentions=subset, kernel_num=4 if "kernel" in subset else 1, **extra)


def reference_forward(layer: ODConv2d, x: torch.Tensor) -> torch.Tensor:
    """The layer's output from its raw attentions by the paper's Eq. 2, one sample at a time: every attention
    multiplied into every kernel, the kernels summed, one conv per sample. Independent of the layer's forms."""
    raw = layer.attention(x)
    n, cout, cin_g, kh, kw = layer.weight.shape
    outputs = []
    for b in range(x.shape[0]):
        kernels = layer.weight * layer.kernel_scale
        if layer.share_attention:
            if raw.channel is not None:
                channel = raw.channel[b].view(layer.groups, 1, cin_g).expand(layer.groups, cout // layer.groups, cin_g)
                kernels = kernels * channel.reshape(1, cout, cin_g, 1, 1)
            if raw.filter is not None:
                kernels = kernels * raw.filter[b].view(1, cout, 1, 1, 1)
            if raw.spatial is not None:
                kernels = kernels * raw.spatial[b].view(1, 1, 1, kh, kw)
        else:
            if raw.channel is not None:
                channel = raw.channel[b].view(n, layer.groups, 1, cin_g).expand(n, layer.groups, cout // layer.groups, cin_g)
                kernels = kernels * channel.reshape(n, cout, cin_g, 1, 1)
            if raw.filter is not None:
                kernels = kernels * raw.filter[b].view(n, cout, 1, 1, 1)
            if raw.spatial is not None:
                kernels = kernels * raw.spatial[b].view(n, 1, 1, kh, kw)
        if raw.kernel is not None:
            kernels = kernels * raw.kernel[b].view(n, 1, 1, 1, 1)
        y = F.conv2d(x[b : b + 1], kernels.sum(0), layer.bias, layer.stride, layer.padding, layer.dilation, layer.groups)
        outputs.append(y)
    return torch.cat(outputs)


VARIANTS = [
    dict(activation=act, kernel_activation=kact, pool_size=pool, attention_trunk=trunk, share_attention=share)
    for act, kact, pool, trunk, share in itertools.product(("sigmoid", "softmax"), ("softmax", "sigmoid"), (1, 3),
                                                           (True, False), (True, False))
]


@pytest.mark.parametrize("geometry", GEOMETRIES, ids=str)
@pytest.mark.parametrize("subset", SUBSETS, ids=lambda s: "+".join(s))
def test_every_option_is_function_preserving_and_matches_eq2(geometry, subset):
    torch.manual_seed(0)
    conv = nn.Conv2d(bias=True, **GEOMETRIES[geometry]).eval()
    x = torch.randn(3, conv.in_channels, 9, 9)
    for variant in VARIANTS:
        layer = ODConv2d.from_conv(conv, **settings_for(subset, **variant)).eval()
        with torch.no_grad():
            torch.testing.assert_close(layer(x), conv(x), rtol=1e-4, atol=1e-5, msg=f"{variant}: not function-preserving")
            assert layer(x[:0]).shape == (0, conv.out_channels, *conv(x).shape[-2:])
            randomise_attention(layer, scale=1.0)
            torch.testing.assert_close(layer(x), reference_forward(layer, x), rtol=1e-4, atol=1e-5, msg=str(variant))


@pytest.mark.parametrize("subset", SUBSETS, ids=lambda s: "+".join(s))
@pytest.mark.parametrize("variant", VARIANTS[::3], ids=str)
def test_attention_parameter_count_is_what_the_layer_builds(subset, variant):
    for geometry in GEOMETRIES.values():
        geometry = {k: v for k, v in geometry.items() if k not in ("padding", "stride")}
        options = LayerOptions(**settings_for(subset, **variant))
        layer = ODConv2d(**geometry, options=options)
        counted = attention_parameter_count(geometry["in_channels"], geometry["out_channels"],
                                            (geometry["kernel_size"],) * 2, geometry.get("groups", 1), options)
        assert counted == sum(p.numel() for p in layer.attention.parameters())


def test_heads_follow_the_attention_subset_and_the_geometry():
    layer = ODConv2d(8, 16, 3, attentions=("spatial", "filter"))
    assert list(layer.attention.heads()) == ["filter", "spatial"]
    assert list(ODConv2d(8, 8, 3, groups=8, attentions=("filter", "spatial")).attention.heads()) == ["spatial"]
    assert ODConv2d(8, 16, 1, attentions=("spatial",)).attention.heads() == {}  # nothing to attend: a static conv
    condconv = ODConv2d(8, 16, 3, **METHODS["condconv"].settings)
    assert condconv.attention.fc is None and condconv.attention.kernel_fc.in_channels == 8
    pooled = ODConv2d(8, 16, 3, pool_size=3)
    assert pooled.attention.fc.kernel_size == (3, 3)


@pytest.mark.parametrize("bad,match", [
    (dict(attentions=()), "non-empty subset"),
    (dict(attentions=("spatial", "space")), "non-empty subset"),
    (dict(attentions=42), "list of attention types"),
    (dict(kernel_num=4, attentions=("spatial", "channel")), "add 'kernel' to attentions"),
    (dict(attentions=("kernel",)), "set kernel_num > 1"),
    (dict(activation="relu"), "activation must be one of"),
    (dict(kernel_activation="tanh"), "kernel_activation must be one of"),
    (dict(pool_size=0), "pool_size must be >= 1"),
    (dict(attention_trunk="no"), "attention_trunk must be True or False"),
])
def test_bad_options_name_the_fix(bad, match):
    with pytest.raises(ODConvError, match=match):
        LayerOptions(**bad)


def test_attention_types_accept_a_comma_separated_string_in_canonical_order():
    assert LayerOptions(attentions="kernel, spatial", kernel_num=4).attentions == ("spatial", "kernel")


def test_temperature_annealing_off_keeps_temperature_one():
    model = nn.Sequential(ODConv2d(8, 8, 3, padding=1), ODConv2d(8, 8, 3, padding=1, temperature_annealing=False))
    TemperatureSchedule(anneal_steps=10).step(model)
    assert [m.attention.temperature for m in model] == [30.0, 1.0]
    assert set_temperature(model, 5.0) == 1


def test_softmax_kernel_attention_sums_to_one_and_sigmoid_does_not():
    x = torch.randn(4, 8, 6, 6)
    for activation, sums_to_one in (("softmax", True), ("sigmoid", False)):
        layer = ODConv2d(8, 8, 3, kernel_num=4, kernel_activation=activation, activation="softmax").eval()
        randomise_attention(layer)
        att = layer.attention(x)
        assert torch.allclose(att.kernel.sum(1).flatten(), torch.ones(4)) == sums_to_one
        assert torch.allclose(att.channel.sum(1).flatten(), torch.ones(4))  # softmax over the input channels
        assert torch.allclose(att.spatial.flatten(1).sum(1), torch.ones(4))


# ---------------------------------------------------------------------------------------------- method presets
def meta_model(name, **kwargs):
    with torch.device("meta"):
        return getattr(torchvision.models, name)(**kwargs)


def test_methods_set_their_settings_and_placement():
    model = torchvision.models.resnet18()
    dy, report = apply_odconv(model, method="dyconv", init="scratch")
    layers = {name: m for name, m in dy.named_modules() if isinstance(m, ODConv2d)}
    assert "layer2.0.downsample.0" in layers and "conv1" not in layers  # shortcuts converted, stem kept
    assert all(m.kernel_num == 4 and list(m.attention.heads()) == ["kernel"] for m in layers.values())
    cond, _ = apply_odconv(model, method="condconv", init="scratch")
    names = [name for name, m in cond.named_modules() if isinstance(m, ODConv2d)]
    assert names == ["layer3.1.conv1", "layer3.1.conv2", "layer4.0.conv1", "layer4.0.conv2", "layer4.1.conv1", "layer4.1.conv2",
                     "fc.conv"]  # and the classifier: an ODLinear around a 1x1 ODConv2d
    assert isinstance(cond.fc, ODLinear)
    six, _ = apply_odconv(torchvision.models.mobilenet_v2(width_mult=0.5), method="condconv", init="scratch")
    blocks = {name.split(".")[1] for name, m in six.named_modules() if isinstance(m, ODConv2d) and name.startswith("features")}
    assert blocks == {"12", "13", "14", "15", "16", "17"}  # the last 6 blocks, not the head conv features.18
    assert isinstance(six.classifier[1], ODLinear)
    keyword, _ = apply_odconv(model, "3x3", method="dyconv", kernel_num=2, init="scratch")
    assert {m.kernel_num for m in keyword.modules() if isinstance(m, ODConv2d)} == {2}


def test_methods_are_function_preserving_and_survive_save_load(tmp_path):
    model = torchvision.models.resnet18().eval()
    x = torch.randn(2, 3, 64, 64)
    for method in METHODS:
        converted, _ = apply_odconv(model, method=method)
        converted.eval()
        with torch.no_grad():
            torch.testing.assert_close(converted(x), model(x), rtol=1e-4, atol=1e-4)
        randomise_attention(converted)
        save(converted, tmp_path / f"{method}.pt")
        loaded = load(torchvision.models.resnet18(), tmp_path / f"{method}.pt").eval()
        with torch.no_grad():
            torch.testing.assert_close(loaded(x), converted(x))


def test_options_and_a_method_together_are_refused():
    with pytest.raises(ODConvError, match="options= sets every layer setting"):
        apply_odconv(torchvision.models.resnet18(), method="dyconv", options=LayerOptions())
    with pytest.raises(ODConvError, match="method must be one of"):
        apply_odconv(torchvision.models.resnet18(), method="dynconv")


def test_cli_apply_takes_a_method_and_flags_replace_its_settings(tmp_path):
    out = tmp_path / "m.pt"
    assert main(["apply", "resnet18", "--method", "dyconv", "--kernel-num", "2", "--attention-norm", "ln",
                 "-o", str(out), "--image-size", "64", "--quiet"]) == 0
    loaded = load(torchvision.models.resnet18(), out)
    layers = [m for m in loaded.modules() if isinstance(m, ODConv2d)]
    assert len(layers) == 19 and {(m.kernel_num, m.attention_norm, m.attentions) for m in layers} == {(2, "ln", ("kernel",))}


@pytest.mark.parametrize("settings", [dict(method="dyconv"), dict(method="condconv"),
                                      dict(attentions="spatial,filter", activation="softmax", pool_size=2)], ids=str)
def test_fuse_batchnorm_fold_static_and_the_report_serve_every_method(settings):
    from odconv_surgery import fold_static, fuse_batchnorm

    model = torchvision.models.mobilenet_v2(width_mult=0.5, num_classes=10)
    converted, report = apply_odconv(model, **settings)
    assert report.converted and "converted" in report.summary()
    converted.train()
    with torch.no_grad():  # non-trivial BatchNorm statistics and attentions
        for _ in range(3):
            converted(torch.randn(8, 3, 32, 32))
    converted.eval()
    randomise_attention(converted)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        expected = converted(x)
        fused = fuse_batchnorm(converted)
        assert fused
        torch.testing.assert_close(converted(x), expected, rtol=1e-4, atol=1e-4)
    folded, fold_report = fold_static(converted, [x], max_batches=1)
    assert len(fold_report.layers) == len(report.converted)
    assert not any(isinstance(m, ODConv2d) for m in folded.modules())


@pytest.mark.parametrize("name", ["convnext_atto", "mixnet_s", "repvgg_a0", "resnet18"])
def test_timm_models_under_every_method(name):
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, num_classes=10).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        reference = model(x)
    for settings in (dict(method="dyconv"), dict(method="condconv"), dict(attentions="spatial,filter", pool_size=3)):
        try:
            converted, report = apply_odconv(model, **settings)
        except ODConvError as exc:  # CondConv's placement needs blocks: the error names the fix
            assert settings.get("method") == "condconv" and "blocks" in str(exc), exc
            continue
        assert report.converted
        with torch.no_grad():
            torch.testing.assert_close(converted.eval()(x), reference, rtol=1e-4, atol=1e-4, msg=str(settings))
