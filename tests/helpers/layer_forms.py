"""A tiny converted model whose ODConv layers take every forward form of ``ODConv2d``, and a spy that says which
forms a forward pass took, so tests of compile, autocast and the reference formulation cover all of them.

At 8x8 input and n = 1: a depthwise 3x3 scales a per-sample kernel (kernel side), a 3x3 at 8x8 scales the
activations around a per-sample kernel, a 1x1 expands by one batched matmul (pointwise), a strided 3x3 at batch
> 1 runs as the tap-sum form (at batch 1 a per-sample kernel), and a 1x1 at 4x4 is a plain static conv between
the two scalings. n = 4 builds per-sample kernels everywhere. (The spy cannot tell a plain conv or an
activation-side per-sample kernel from the others: they call no method of their own.)
"""

from __future__ import annotations

import contextlib

import pytest
import torch
from torch import nn

from helpers.randomise import randomise_attention
from odconv_surgery import ODConv2d, apply_odconv

FORM_METHODS = {
    "tap_sum": "_forward_tap_sum",
    "pointwise": "_forward_pointwise",
    "kernel_side": "_channel_as_weight",
    "per_sample_kernel": "_grouped_per_sample_conv",
}


class FormsNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)  # the stem: all_but_first keeps it static
        self.dense = nn.Conv2d(16, 16, 3, padding=1, bias=True)
        self.bn = nn.BatchNorm2d(16)
        self.depthwise = nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.expand = nn.Conv2d(16, 32, 1)
        self.down = nn.Conv2d(32, 64, 3, stride=2, padding=1)
        self.project = nn.Conv2d(64, 64, 1)
        self.fc = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn(self.dense(torch.relu(self.stem(x)))))
        x = self.down(self.expand(self.depthwise(x)))
        return self.fc(self.project(torch.relu(x)).mean((2, 3)))


INPUT_SHAPE = (3, 8, 8)


def converted_forms_net(kernel_num: int = 1) -> nn.Module:
    """FormsNet converted under all_but_first, with input-dependent (randomised) attentions."""
    torch.manual_seed(0)
    model, _ = apply_odconv(FormsNet(), "all_but_first", kernel_num=kernel_num, init="scratch")
    randomise_attention(model)
    return model


@contextlib.contextmanager
def spy_forms():
    """Yields a set that collects the names of the forms (FORM_METHODS) ODConv2d forwards take while active."""
    seen: set[str] = set()
    with pytest.MonkeyPatch.context() as patch:
        for form, method in FORM_METHODS.items():
            original = getattr(ODConv2d, method)

            def spy(self, *args, _original=original, _form=form, **kwargs):
                seen.add(_form)
                return _original(self, *args, **kwargs)

            patch.setattr(ODConv2d, method, spy)
        yield seen


@contextlib.contextmanager
def strict_fp32():
    """CUDA convs and matmuls in full fp32 (cuDNN convs default to TF32), so two formulations or eager and compiled
    code compare at fp32 tolerances."""
    matmul = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = matmul
