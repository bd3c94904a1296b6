"""Projection-shortcut labels and blocks on patterns from reparameterisable and converted models (issue 22, item 8):
parallel branches summed (MobileOne, RepVGG), a conv whose output feeds both the residual and the identity path
(no BatchNorm after it), and a flat model whose joins sit between top-level modules (onnx2torch GraphModules)."""

import torch
from torch import fx, nn

from odconv_surgery import apply_odconv
from odconv_surgery.passes.fx.candidates import analyse_model


class ParallelBranches(nn.Module):
    """MobileOne / RepVGG training form: ``bn(a(x)) + bn(b(x)) + bn(c(x)) + bn(x)``."""

    def __init__(self, channels: int, kernels=(3, 3, 3, 1), identity: bool = True) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Sequential(nn.Conv2d(channels, channels, k, padding=k // 2, bias=False), nn.BatchNorm2d(channels))
            for k in kernels
        )
        self.skip = nn.BatchNorm2d(channels) if identity else None

    def forward(self, x):
        out = self.branches[0](x)
        for branch in self.branches[1:]:
            out = out + branch(x)
        if self.skip is not None:
            out = out + self.skip(x)
        return torch.relu(out)


class MobileOneLike(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.stage = nn.Sequential(ParallelBranches(8), ParallelBranches(8, (3, 3, 3, 3), identity=False))
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        return self.head(self.stage(self.stem(x)))


class ForkAtConv(nn.Module):
    """``y = conv0(x); y + conv2(relu(conv1(y)))``: conv0 (no BatchNorm after it) is the fork, on the main path."""

    def __init__(self) -> None:
        super().__init__()
        self.conv0 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv1 = nn.Conv2d(8, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.conv3 = nn.Conv2d(8, 8, 1)

    def forward(self, x):
        y = self.conv0(x)
        y = y + self.conv2(torch.relu(self.conv1(y)))
        return self.conv3(y)


class Downsample(nn.Module):
    """ResNet's projection shortcut: the lone conv beside a chain of two."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(8, 16, 3, 2, 1)
        self.conv2 = nn.Conv2d(16, 16, 3, 1, 1)
        self.down = nn.Conv2d(8, 16, 1, 2)

    def forward(self, x):
        return torch.relu(self.conv2(torch.relu(self.conv1(x))) + self.down(x))


def shortcuts(model: nn.Module) -> set[str]:
    return {layer.name for layer in analyse_model(model).layers if layer.is_shortcut}


def test_parallel_branches_are_not_shortcuts():
    assert shortcuts(MobileOneLike()) == set()
    _, report = apply_odconv(MobileOneLike(), "all_but_first")
    assert not any("shortcut" in reason for reason in report.skipped.values())


def test_conv_feeding_the_identity_path_is_not_a_shortcut():
    assert shortcuts(ForkAtConv()) == set()


def test_projection_shortcut_still_found():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), Downsample())
    assert shortcuts(model) == {"1.down"}


class Add(nn.Module):
    """onnx2torch's binary Add module (``OnnxBinaryMathOperation``): the join is a module at the top level."""

    def forward(self, a, b):
        return torch.add(a, b)


def flat_residual_model() -> fx.GraphModule:
    """A GraphModule with every module at the top level (as onnx2torch builds them): stem + 3 residual units."""
    graph = fx.Graph()
    modules: dict[str, nn.Module] = {"conv_0": nn.Conv2d(3, 8, 3, padding=1), "relu_0": nn.ReLU()}
    x = graph.call_module("relu_0", (graph.call_module("conv_0", (graph.placeholder("x"),)),))
    for i in range(1, 4):
        a, b, add = f"conv_{2 * i - 1}", f"conv_{2 * i}", f"Add_{i}"
        modules.update({a: nn.Conv2d(8, 8, 3, padding=1), b: nn.Conv2d(8, 8, 3, padding=1), add: Add()})
        x = graph.call_module(add, (graph.call_module(b, (graph.call_module(a, (x,)),)), x))
    graph.output(x)
    return fx.GraphModule(nn.ModuleDict(modules), graph)


def test_flat_graph_module_has_blocks_from_its_joins():
    model = flat_residual_model()
    analysis = analyse_model(model)
    assert len(analysis.blocks) == 3
    _, report = apply_odconv(model, "last:2")
    assert set(report.converted) == {"conv_3", "conv_4", "conv_5", "conv_6"}
