"""apply_odconv on hand-written models: what is converted, what is kept, and the errors users get."""

import copy

import pytest
import torch
from torch import nn

from odconv_surgery import (
    EmptySelectionError,
    ODConv2d,
    UntraceableModelError,
    apply_odconv,
    available_policies,
    list_candidates,
    register_policy,
)


class Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + (x if self.down is None else self.down(x)))


class TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.blocks = nn.Sequential(Block(16, 16), Block(16, 32, 2), Block(32, 32))
        self.head = nn.Conv2d(32, 64, 1)
        self.side = nn.Conv1d(4, 4, 3)  # not called: reported, never converted
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        x = self.head(self.blocks(torch.relu(self.stem(x))))
        return self.fc(x.mean((2, 3)))

    def embed(self, x):
        return self.blocks(self.stem(x))


def converted_names(model):
    return sorted(n for n, m in model.named_modules() if isinstance(m, ODConv2d))


def test_all_but_first_keeps_stem_and_projection_shortcut_static():
    model, report = apply_odconv(TinyNet())
    assert converted_names(model) == sorted(
        ["blocks.0.conv1", "blocks.0.conv2", "blocks.1.conv1", "blocks.1.conv2", "blocks.2.conv1", "blocks.2.conv2", "head"]
    )
    assert report.skipped["stem"].startswith("first conv")
    assert "projection shortcut" in report.skipped["blocks.1.down.0"]
    assert report.skipped["side"] == "never called in forward"
    assert report.params_after > report.params_before


def test_model_identity_is_kept():
    original = TinyNet().eval()
    model, _ = apply_odconv(original)
    assert type(model) is TinyNet and hasattr(model, "embed") and not model.training
    assert converted_names(original) == []  # inplace=False leaves the input untouched
    same_keys = {k for k in original.state_dict() if not k.startswith(("blocks.0.conv", "blocks.1.conv", "blocks.2.conv", "head."))}
    new_state = model.state_dict()
    for key in same_keys:
        assert torch.equal(new_state[key], original.state_dict()[key]), key
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        ref = original(x)
        assert (model(x) - ref).abs().max() <= 1e-4 * ref.abs().max()
    inplace, _ = apply_odconv(original, inplace=True)
    assert inplace is original


@pytest.mark.parametrize(
    "policy,expected",
    [
        ("1x1", ["head"]),
        ("3x3", ["blocks.0.conv1", "blocks.0.conv2", "blocks.1.conv1", "blocks.1.conv2", "blocks.2.conv1", "blocks.2.conv2"]),
        ("last:1", ["blocks.2.conv1", "blocks.2.conv2", "head"]),
        ("last:2", ["blocks.1.conv1", "blocks.1.conv2", "blocks.2.conv1", "blocks.2.conv2", "head"]),
        ("all", ["blocks.0.conv1", "blocks.0.conv2", "blocks.1.conv1", "blocks.1.conv2", "blocks.1.down.0", "blocks.2.conv1", "blocks.2.conv2", "head", "stem"]),
    ],
)
def test_builtin_policies(policy, expected):
    model, _ = apply_odconv(TinyNet(), policy)
    assert converted_names(model) == sorted(expected)


def test_include_exclude_and_overrides():
    model, report = apply_odconv(
        TinyNet(),
        "all_but_first",
        include=r"blocks\.1\.down\.0",
        exclude=[1, lambda name, m: name.startswith("blocks.2")],  # 1 == kernel size 1x1
        overrides={r"blocks\.0\.conv1": {"kernel_num": 4}, r"blocks\.0\.conv2": None},
    )
    assert converted_names(model) == ["blocks.0.conv1", "blocks.1.conv1", "blocks.1.conv2"]
    assert model.blocks[0].conv1.kernel_num == 4 and model.blocks[1].conv1.kernel_num == 1
    assert "override" in report.skipped["blocks.0.conv2"]
    assert model.odconv_recipe.layers["blocks.0.conv1"]["kernel_num"] == 4
    only, _ = apply_odconv(TinyNet(), None, include=nn.Conv2d, exclude="stem")
    assert "stem" not in converted_names(only) and "blocks.1.down.0" in converted_names(only)


def test_custom_policy_by_name_and_callable():
    register_policy("wide_only", lambda layer, analysis: layer.out_channels >= 32, overwrite=True)
    assert "wide_only" in available_policies()
    model, _ = apply_odconv(TinyNet(), "wide_only")
    assert "blocks.0.conv1" not in converted_names(model) and "head" in converted_names(model)
    model, report = apply_odconv(TinyNet(), lambda layer, analysis: (layer.name == "head", "just the head"))
    assert converted_names(model) == ["head"] and report.policy.startswith("custom:")


class Shared(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.conv = nn.Conv2d(8, 8, 3, padding=1)
        self.alias = self.conv  # the same module under two names

    def forward(self, x):
        return self.alias(self.conv(self.stem(x)))


def test_shared_module_is_converted_once_under_every_alias():
    model, report = apply_odconv(Shared().eval())
    assert isinstance(model.conv, ODConv2d) and model.conv is model.alias
    row = next(r for r in report.layers if r.name == "conv")
    assert row.aliases == ["alias"]


class DataDependent(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 8, 3, padding=1)
        self.c = nn.Conv2d(8, 8, 1)

    def forward(self, x):
        x = self.a(x)
        if x.sum() > -1e9:  # data-dependent control flow: torch.fx cannot trace it
            x = self.c(self.b(x))
        return x


def test_untraceable_model_needs_example_inputs_then_uses_hooks():
    with pytest.raises(UntraceableModelError, match="example_inputs"):
        apply_odconv(DataDependent())
    with pytest.warns(UserWarning, match="forward hooks"):
        model, report = apply_odconv(DataDependent(), example_inputs=(torch.randn(2, 3, 8, 8),))
    assert report.tracing == "hooks" and converted_names(model) == ["b", "c"]


def test_data_parallel_is_unwrapped():
    model, _ = apply_odconv(nn.DataParallel(TinyNet()))
    assert type(model) is TinyNet and "head" in converted_names(model)


class Mixed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv1d(3, 3, 3, padding=1)
        self.c2 = nn.Conv2d(3, 8, 3, padding=1)
        self.c2b = nn.Conv2d(8, 8, 3, padding=1)
        self.c3 = nn.Conv3d(8, 8, 1)
        self.up = nn.ConvTranspose2d(8, 8, 2, stride=2)

    def forward(self, x):
        x = self.c2b(self.c2(x + self.c1(x.flatten(2)).view_as(x)))
        return self.up(self.c3(x.unsqueeze(2)).squeeze(2))


def test_other_conv_kinds_are_left_alone_with_a_reason():
    model, report = apply_odconv(Mixed(), "all")
    assert converted_names(model) == ["c2", "c2b"]
    for name in ("c1", "c3", "up"):
        assert "not a 2-D convolution" in report.skipped[name]
    model.eval()(torch.randn(1, 3, 4, 4))


def test_bad_input_errors_name_the_fix():
    with pytest.raises(TypeError, match="nn.Module"):
        apply_odconv("resnet18")
    with pytest.raises(ValueError, match="unknown placement policy.*all_but_first"):
        apply_odconv(TinyNet(), "all-but-first")
    with pytest.raises(EmptySelectionError, match="Conv names: stem"):
        apply_odconv(TinyNet(), include=r"layer4\..*")
    with pytest.raises(ValueError, match="selects no convolution"):
        apply_odconv(nn.Sequential(nn.Conv2d(3, 3, 3)))  # only a stem
    with pytest.raises(ValueError, match="asks for 9 blocks"):
        apply_odconv(TinyNet(), "last:9")
    with pytest.raises(ValueError, match="needs an integer"):
        apply_odconv(TinyNet(), "last:six")
    with pytest.raises(ValueError, match="needs residual"):
        apply_odconv(nn.Sequential(nn.Conv2d(3, 3, 3), nn.Conv2d(3, 3, 3)), "last:1")


def test_training_step_changes_attention_parameters():
    model, _ = apply_odconv(TinyNet(), kernel_num=2)
    model.train()
    attention = {n: p.detach().clone() for n, p in model.named_parameters() if ".attention." in n}
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loss = nn.functional.cross_entropy(model(torch.randn(4, 3, 16, 16)), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    opt.step()
    changed = [n for n, p in model.named_parameters() if n in attention and not torch.equal(p, attention[n])]
    assert sorted(changed) == sorted(attention)


def test_list_candidates_prints_policy_columns(capsys):
    table = list_candidates(TinyNet())
    assert "all_but_first" in table and "last:6" in table and "projection shortcut" in table
    assert capsys.readouterr().out.strip() == table.strip()
    assert converted_names(TinyNet()) == []


def test_frozen_convs_stay_frozen_attention_included():
    model = TinyNet()
    model.requires_grad_(False)
    model.blocks[2].conv2.bias = nn.Parameter(torch.zeros(32))  # a trainable bias on a frozen weight keeps its flag
    converted, report = apply_odconv(model)
    trainable = [n for n, p in converted.named_parameters() if p.requires_grad]
    assert trainable == ["blocks.2.conv2.bias"]
    assert all("frozen" in row.reason for row in report.layers if row.converted)


def test_partly_frozen_model_freezes_only_the_frozen_convs():
    model = TinyNet()
    model.blocks[0].requires_grad_(False)  # a frozen early stage, as in fine-tuning
    converted, report = apply_odconv(model)
    flags = {n: {p.requires_grad for p in m.parameters()} for n, m in converted.named_modules() if isinstance(m, ODConv2d)}
    assert {n for n, f in flags.items() if f == {False}} == {"blocks.0.conv1", "blocks.0.conv2"}
    assert {n for n, f in flags.items() if f == {True}} == set(flags) - {"blocks.0.conv1", "blocks.0.conv2"}
    assert [r.name for r in report.layers if "frozen" in r.reason] == ["blocks.0.conv1", "blocks.0.conv2"]
    converted.requires_grad_(True)  # unfreezing later makes a normal, fully trainable ODConv model
    assert all(p.requires_grad for p in converted.parameters())
    _, static = apply_odconv(model, exclude=lambda name, m: not m.weight.requires_grad)  # the README's opt-out
    assert "blocks.0.conv1" in static.skipped and "blocks.1.conv1" in static.converted


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_conversion_on_cuda_is_the_cpu_conversion(dtype):
    """Layers are created on their conv's device and dtype, with the same values as a CPU conversion (seeded)."""
    torch.manual_seed(0)
    cpu_model = TinyNet().eval()
    gpu_model = copy.deepcopy(cpu_model).to("cuda", dtype)
    cpu_model, _ = apply_odconv(cpu_model, "all_but_first", kernel_num=2, seed=3)
    gpu_model, _ = apply_odconv(gpu_model, "all_but_first", kernel_num=2, seed=3)
    for (name, a), (_, b) in zip(cpu_model.state_dict().items(), gpu_model.state_dict().items()):
        assert b.device.type == "cuda" and (b.dtype == dtype or not b.is_floating_point()), name
        torch.testing.assert_close(b.cpu(), a.to(b.dtype), msg=name)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(gpu_model(x.to("cuda", dtype)).float().cpu(), cpu_model(x), atol=5e-2 if dtype != torch.float32 else 1e-4, rtol=5e-2 if dtype != torch.float32 else 1e-4)
