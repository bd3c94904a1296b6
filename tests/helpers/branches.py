"""A tiny model whose layers' dynamism and worth are set by construction: parallel ODConv branches on one input,
identical but for how strongly their attention varies (``scales``) and how much their output counts (``gains``).

Branch ``i`` computes the same conv with the attention heads' weights ``scales[i]`` times one shared random
direction: scale 0 gives a constant attention (dynamism 0, the fold is exact), and a larger scale a larger
dynamism. Its output is multiplied by ``gains[i]`` before the branches are summed: gain 0 makes a layer whose
dynamism is worth nothing (folding it changes no output). Labels are the unfolded model's own predictions, so the
model scores 100 % and any top-1 drop comes from the fold.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from torch.utils.data import TensorDataset

from odconv_surgery import ODConv2d, apply_odconv


class Branches(nn.Module):
    def __init__(self, gains: Sequence[float]) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.branches = nn.ModuleList(nn.Conv2d(8, 8, 3, padding=1) for _ in gains)
        self.gains = [float(g) for g in gains]
        self.head = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem(x))
        y = sum(g * branch(x) for g, branch in zip(self.gains, self.branches))
        return self.head(torch.relu(y).mean(dim=(2, 3)))


def _heads(layer: ODConv2d) -> list[nn.Module]:
    att = layer.attention
    return [fc for fc in (att.channel_fc, att.filter_fc, att.spatial_fc, att.kernel_fc) if fc is not None]


@torch.no_grad()
def branches_model(scales: Sequence[float], gains: Sequence[float]) -> nn.Module:
    """The converted model (``all_but_first``: the stem stays static; the branches are ``branches.0``, ...)."""
    torch.manual_seed(0)
    model = Branches(gains)
    for branch in model.branches[1:]:
        branch.load_state_dict(model.branches[0].state_dict())
    model.head.weight.mul_(20.0)  # confident predictions, so a fold that matters flips some
    model, _ = apply_odconv(model.eval(), "all_but_first", init="scratch", seed=1)
    g = torch.Generator().manual_seed(2)
    directions = [torch.randn(fc.weight.shape, generator=g) for fc in _heads(model.branches[0])]
    for branch, scale in zip(model.branches, scales):
        for fc, direction in zip(_heads(branch), directions):
            fc.weight.copy_(direction * scale)
    return model.eval()


@torch.no_grad()
def labelled_inputs(model: nn.Module, n: int = 256, seed: int = 3) -> tuple[list, TensorDataset]:
    """Inputs whose scale and offset vary per sample (so the attentions vary), labelled by ``model``: half as one
    calibration batch of (x, y), half as a test set."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 8, 8, generator=g) * torch.rand(n, 1, 1, 1, generator=g) * 2 \
        + torch.randn(n, 3, 1, 1, generator=g)
    y = model(x).argmax(dim=1)
    half = n // 2
    return [(x[:half], y[:half])], TensorDataset(x[half:], y[half:])
