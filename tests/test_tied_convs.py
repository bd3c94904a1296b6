"""Weights tied between two Conv2d modules (issue 22, item 13): conversion would untie them, so both stay static
with the reason, and the rest of the model converts."""

import pytest
import torch
from torch import nn

from odconv_surgery import apply_odconv


class TiedNet(nn.Module):
    """Two 3x3 convs sharing one weight (a siamese branch, a weight-shared refinement step)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.a = nn.Conv2d(8, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.b.weight = self.a.weight
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        return self.head(torch.relu(self.b(torch.relu(self.a(x)))))


def test_tied_convs_stay_tied():
    converted, report = apply_odconv(TiedNet(), "all")
    assert set(report.converted) == {"stem", "head"}
    assert "tied to b" in report.skipped["a"] and "tied to a" in report.skipped["b"]
    assert converted.a.weight is converted.b.weight
    optimizer = torch.optim.SGD(converted.parameters(), lr=0.1)
    converted(torch.randn(2, 3, 8, 8)).sum().backward()
    optimizer.step()
    assert converted.a.weight is converted.b.weight


def test_include_of_a_tied_conv_names_the_reason():
    with pytest.raises(ValueError, match="tied"):
        apply_odconv(TiedNet(), None, include="a")
