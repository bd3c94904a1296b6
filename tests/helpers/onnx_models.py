"""Model builders shared by the ONNX tests (test_export / test_onnx_passes / test_runtime)."""

from __future__ import annotations

import torch
import torchvision
from torch import nn

from odconv_surgery import ODConv2d, apply_odconv


def randomise(model: nn.Module, seed: int = 1, scale: float = 0.1) -> nn.Module:
    """Non-trivial attentions (heads and trunk) and BN statistics, eval mode."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "attention" in name:
                p.add_(torch.randn(p.shape, generator=g) * scale)
        for n, m in model.named_modules():
            if isinstance(m, nn.BatchNorm2d) and "attention" in n:
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
                m.weight.mul_(1 + 0.2 * torch.randn(m.weight.shape, generator=g))
    return model.eval()


@torch.no_grad()
def calibrate(model: nn.Module, shape=(8, 3, 64, 64)) -> nn.Module:
    """Set every BN's running statistics from a random batch, so deep random models stay well conditioned."""
    bns = [m for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d) and "attention" not in n]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    for n, m in model.named_modules():  # attention BNs keep their (random, unit-scale) statistics
        if isinstance(m, nn.BatchNorm2d) and "attention" in n:
            m.eval()
    model(torch.randn(shape, generator=torch.Generator().manual_seed(3)))
    for m in bns:
        m.momentum = 0.1
        m.running_var.clamp_(min=float(m.running_var.mean()) * 0.5 + 1e-3)  # no near-constant channel blows up
    return model.eval()


def build(name: str = "mobilenet_v2_0.5", policy: str = "all_but_first", kernel_num: int = 1, **kw) -> tuple[nn.Module, nn.Module]:
    """(odconv_model, static_model), both randomised and in eval mode."""
    torch.manual_seed(0)
    if name == "mobilenet_v2_0.5":
        static = torchvision.models.mobilenet_v2(width_mult=0.5)
    elif name == "mobilenet_v2_1.0":
        static = torchvision.models.mobilenet_v2()
    else:
        static = getattr(torchvision.models, name)()
    static = calibrate(static.eval())
    kw.setdefault("init", "scratch")  # Kaiming heads: input-dependent attentions, well-conditioned
    # A draw whose BN calibration generalises from the 8-image calibration batch (seed 0's scratch resnet18 n=4
    # amplifies activations ~200x at batch 2: an ill-conditioned random model, not an export problem).
    kw.setdefault("seed", 1)
    model, _ = apply_odconv(static, policy=policy, kernel_num=kernel_num, **kw)
    return calibrate(model), static


class TinyNet(nn.Module):
    """Every ODConv layer kind: dense 3x3 (bias), depthwise 3x3 stride 2, 1x1, grouped 3x3, 1x1 stride 2."""

    def __init__(self, kernel_num: int = 1, **kw) -> None:
        super().__init__()
        self.c1 = ODConv2d(8, 16, 3, padding=1, bias=True, kernel_num=kernel_num, **kw)
        self.bn1 = nn.BatchNorm2d(16)
        self.c2 = ODConv2d(16, 16, 3, stride=2, padding=1, groups=16, kernel_num=kernel_num, **kw)
        self.c3 = ODConv2d(16, 24, 1, kernel_num=kernel_num, **kw)
        self.c4 = ODConv2d(24, 24, 3, padding=2, dilation=2, groups=4, kernel_num=kernel_num, **kw)
        self.c5 = ODConv2d(24, 32, 1, stride=2, kernel_num=kernel_num, **kw)

    def forward(self, x):
        x = torch.relu(self.bn1(self.c1(x)))
        return self.c5(torch.relu(self.c4(self.c3(self.c2(x)))))


def tiny(kernel_num: int = 1, **kw) -> nn.Module:
    torch.manual_seed(0)
    return randomise(TinyNet(kernel_num, **kw))
