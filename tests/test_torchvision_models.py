"""Every torchvision classification model x every built-in policy: right layers, same shapes, function-preserving
at conversion, and trainable (one SGD step moves the attention parameters)."""

import pytest
import torch
import torchvision
from torch import nn

from odconv_surgery import ODConv2d, apply_odconv
from odconv_surgery.passes.fx.hook_order import record_conv_order

# Larger variants of architectures already covered (bottleneck ResNets, inception-style cat blocks) run with -m slow.
HEAVY = {"resnext50_32x4d", "wide_resnet50_2", "densenet121", "inception_v3"}
MODELS = [
    pytest.param(name, marks=pytest.mark.slow) if name in HEAVY else name
    for name in [
        "alexnet", "vgg11", "resnet18", "resnet50", "resnext50_32x4d", "wide_resnet50_2", "mobilenet_v2",
        "mobilenet_v3_small", "mobilenet_v3_large", "mnasnet0_5", "shufflenet_v2_x0_5", "squeezenet1_0",
        "densenet121", "efficientnet_b0", "regnet_y_400mf", "convnext_tiny", "googlenet", "inception_v3",
    ]
]
POLICIES = ["all_but_first", "1x1", "3x3", "last:6", "all"]
SHORTCUT_MARKERS = {"resnet": "downsample", "resnext": "downsample", "wide_resnet": "downsample", "regnet": ".proj."}
# Policies that legitimately select nothing / need blocks these models lack.
EXPECTED_ERRORS = {
    ("alexnet", "1x1"), ("alexnet", "last:6"), ("vgg11", "1x1"), ("vgg11", "last:6"),
    ("resnet18", "1x1"), ("convnext_tiny", "1x1"),
}


def build(name: str) -> nn.Module:
    kwargs = {"num_classes": 10}
    if name in ("googlenet", "inception_v3"):
        kwargs.update(aux_logits=False, init_weights=False)
    torch.manual_seed(0)
    model = getattr(torchvision.models, name)(**kwargs).eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics, so function preservation is a real check
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
            if hasattr(m, "layer_scale"):  # ConvNeXt starts at 1e-6, too small for one SGD step to register
                m.layer_scale.fill_(0.5)
    return model


def is_shortcut(model_name: str, conv_name: str) -> bool:
    return any(model_name.startswith(k) and marker in conv_name for k, marker in SHORTCUT_MARKERS.items())


def expected_selection(model_name: str, policy: str, order: list[str], modules: dict) -> set[str] | None:
    """Oracle written from the policy definitions, on hook-recorded execution order (not the fx analysis)."""
    eligible = [n for n in order if isinstance(modules[n], nn.Conv2d)]
    body = [n for n in eligible[1:] if not is_shortcut(model_name, n)]
    if policy == "all":
        return set(eligible)
    if policy == "all_but_first":
        return set(body)
    if policy == "1x1":
        return {n for n in body if modules[n].kernel_size == (1, 1)}
    if policy == "3x3":
        return {n for n in body if modules[n].kernel_size != (1, 1)}
    return None  # last:6 is checked structurally below


@pytest.mark.parametrize("name", MODELS)
def test_model_under_every_policy(name):
    model = build(name)
    size = {"inception_v3": 75, "alexnet": 64, "vgg11": 32, "googlenet": 48}.get(name, 32)  # smallest valid inputs
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        reference = model(x)
    order = record_conv_order(model, (x,))
    modules = dict(model.named_modules())
    assert order, "the model has convolutions"
    for policy in POLICIES:
        if (name, policy) in EXPECTED_ERRORS:
            with pytest.raises(ValueError, match=r"selects no convolution|policy 'last:k' needs residual"):
                apply_odconv(model, policy)
            continue
        converted, report = apply_odconv(model, policy)
        names = {n for n, m in converted.named_modules() if isinstance(m, ODConv2d)}
        assert set(report.converted) == names
        expected = expected_selection(name, policy, order, modules)
        if expected is not None:
            assert names == expected, f"{policy}: {sorted(names ^ expected)[:5]}"
        else:  # last:6 converts a non-empty suffix of the execution order (shortcuts aside)
            positions = sorted(order.index(n) for n in names)
            tail = [n for n in order[positions[0]:] if not is_shortcut(name, n)]
            assert names == set(tail)
        assert type(converted) is type(model)
        with torch.no_grad():
            out = converted(x)
        assert out.shape == reference.shape
        err = (out - reference).abs().max() / reference.abs().max()
        assert err <= 1e-4, f"{policy}: relative error {err:.2e}"
        if policy in ("all_but_first", "all"):
            _check_training_step(converted, x)


def _check_training_step(model: nn.Module, x: torch.Tensor) -> None:
    model.train()
    attention = {n: p.detach().clone() for n, p in model.named_parameters() if ".attention." in n}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    out = model(torch.cat([x, x.flip(0) * 0.5]))  # batch 4: attention BatchNorm is degenerate at batch 2
    out = out.logits if hasattr(out, "logits") else out
    nn.functional.cross_entropy(out, torch.tensor([1, 2, 3, 4])).backward()
    optimizer.step()
    unchanged = [n for n, p in model.named_parameters() if n in attention and torch.equal(p, attention[n])]
    assert not unchanged, f"attention parameters without update: {unchanged[:5]}"


FAMILY = [
    dict(method="dyconv"), dict(method="condconv"), dict(attentions="spatial,channel", pool_size=3),
    dict(activation="softmax", kernel_num=2), dict(attention_trunk=False, kernel_activation="sigmoid", kernel_num=2),
]
NO_BLOCKS = {"alexnet", "vgg11"}  # CondConv's placement needs blocks


@pytest.mark.parametrize("name", MODELS)
def test_model_under_every_method_and_option(name):
    """Every method preset and the ablation options convert each model function-preservingly and train."""
    model = build(name)
    size = {"inception_v3": 75, "alexnet": 64, "vgg11": 32, "googlenet": 48}.get(name, 32)
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        reference = model(x)
    for settings in FAMILY:
        if settings.get("method") == "condconv" and name in NO_BLOCKS:
            with pytest.raises(ValueError, match="needs the model's blocks|selects no convolution"):
                apply_odconv(model, **settings)
            continue
        converted, report = apply_odconv(model, **settings)
        assert report.converted, settings
        with torch.no_grad():
            out = converted(x)
        err = (out - reference).abs().max() / reference.abs().max()
        assert err <= 1e-4, f"{settings}: relative error {err:.2e}"
        if settings.get("method") != "condconv":  # CondConv converts only the last blocks: checked on the others
            _check_training_step(converted, x)
