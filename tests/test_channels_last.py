"""``converted.to(memory_format=torch.channels_last)`` (issue 22, item 5): the 5-D kernel bank takes the 4-D
format kernel by kernel, and every layer form computes what the contiguous model computes."""

import copy

import pytest
import torch
from torch import nn

from odconv_surgery import ODConv2d, apply_odconv


def forms_net() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1, groups=4), nn.ReLU(),
        nn.Conv2d(16, 32, 1), nn.ReLU(),
        nn.Conv2d(32, 16, 3, stride=2, padding=1, bias=True),
    )


@pytest.mark.parametrize("settings", [{"kernel_num": 1}, {"kernel_num": 2}, {"kernel_num": 2, "share_attention": False}])
def test_converted_model_to_channels_last(settings):
    converted, _ = apply_odconv(forms_net(), "all", **settings)
    reference = copy.deepcopy(converted).eval()
    cl = converted.to(memory_format=torch.channels_last).eval()
    bank = next(m for m in cl.modules() if isinstance(m, ODConv2d)).weight
    assert bank[0].is_contiguous(memory_format=torch.channels_last)
    for batch in (1, 3):
        x = torch.randn(batch, 3, 12, 12)
        with torch.no_grad():
            torch.testing.assert_close(cl(x.to(memory_format=torch.channels_last)), reference(x), atol=1e-5, rtol=1e-4)
    cl.train()
    optimizer = torch.optim.SGD(cl.parameters(), lr=0.01)
    cl(torch.randn(2, 3, 12, 12).to(memory_format=torch.channels_last)).sum().backward()
    optimizer.step()
    assert all(p.is_leaf for p in cl.parameters())
    assert torch.equal(cl.state_dict()["0.weight"], cl[0].weight)
