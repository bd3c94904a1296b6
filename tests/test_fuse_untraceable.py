"""``fuse_batchnorm`` on a model fx cannot trace anywhere (issue 22, item 10): it says how many BatchNorms it
folded and warns, naming the modules, instead of silently folding nothing."""

import logging

import pytest
import torch
from torch import nn

from odconv_surgery import fuse_batchnorm


class ConvBNAct(nn.Module):
    """An OCR classifier's conv block: data-dependent Python control flow in forward, so fx cannot trace it."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x):
        y = self.bn(self.conv(x))
        return torch.relu(y) if y.mean() > -1e9 else y


class Traceable(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 1, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x):
        return self.bn(self.conv(x))


class Classifier(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([ConvBNAct(3, 8), ConvBNAct(8, 8)])
        self.last = Traceable(8, 8)

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        x = self.last(x)
        return x if x.sum() > -1e9 else -x  # the whole model is not traceable either


def test_untraceable_owners_warn_with_counts(caplog):
    model = Classifier().eval()
    with caplog.at_level(logging.INFO, logger="odconv_surgery.fuse"):
        with pytest.warns(UserWarning, match=r"folded 1 of 3 BatchNorm2d.*'blocks\.0'"):
            folded = fuse_batchnorm(model)
    assert folded == [("last.conv", "last.bn")]
    assert "folded 1 of 3" in caplog.text


def test_traceable_owners_fold_quietly(recwarn):
    model = nn.Sequential(Traceable(3, 8), Traceable(8, 8)).eval()
    assert len(fuse_batchnorm(model)) == 2
    assert not [w for w in recwarn if "fuse_batchnorm" in str(w.message)]
