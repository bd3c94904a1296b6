"""Models with several inputs or a non-image input (issue 22, item 12): ``count_cost`` takes a tuple or a dict of
forward's arguments, and ``export_onnx`` / ``check_parity`` take a tuple, one named graph input per tensor, of any
rank (an (N, 1024) audio input)."""

import numpy as np
import pytest
import torch
from torch import nn

from odconv_surgery import apply_odconv, count_cost
from odconv_surgery.deploy.export import export_onnx
from odconv_surgery.deploy.runtime import OrtRunner, check_parity


class RGBDepth(nn.Module):
    """Two image inputs fused after their stems."""

    def __init__(self) -> None:
        super().__init__()
        self.rgb = nn.Conv2d(3, 8, 3, padding=1)
        self.depth = nn.Conv2d(1, 8, 3, padding=1)
        self.body = nn.Conv2d(16, 8, 3, padding=1)

    def forward(self, rgb, depth):
        return self.body(torch.cat([torch.relu(self.rgb(rgb)), torch.relu(self.depth(depth))], 1))


class Audio(nn.Module):
    """A (N, 1024) waveform folded into a 32x32 map."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(1, 8, 3, padding=1)
        self.c2 = nn.Conv2d(8, 8, 3, padding=1)

    def forward(self, wave):
        return self.c2(torch.relu(self.c1(wave.view(-1, 1, 32, 32)))).mean((2, 3))


def test_count_cost_with_several_inputs():
    model = RGBDepth()
    rgb, depth = torch.zeros(2, 3, 16, 16), torch.zeros(2, 1, 16, 16)
    cost = count_cost(model, example_input=(rgb, depth))
    assert cost.input_shapes == [(1, 3, 16, 16), (1, 1, 16, 16)]
    assert cost.layer("depth").static_madds == 8 * 9 * 16 * 16
    assert count_cost(model, example_input={"rgb": rgb, "depth": depth}).madds == cost.madds


def test_export_with_several_named_inputs():
    torch.manual_seed(0)
    model, _ = apply_odconv(RGBDepth().eval(), "all", example_inputs=(torch.randn(1, 3, 16, 16), torch.randn(1, 1, 16, 16)))
    example = (torch.randn(1, 3, 16, 16), torch.randn(1, 1, 16, 16))
    proto = export_onnx(model.eval(), None, example, input_names=["rgb", "depth"])
    assert [i.name for i in proto.graph.input] == ["rgb", "depth"]
    check_parity(model, proto, example, batches=(1, 3))
    runner = OrtRunner(proto, device="cpu", warmup=1, warmup_batch=2)
    assert len(runner.time(batch=2, repeats=1, warmup=0)) == 1
    with torch.no_grad():
        np.testing.assert_allclose(runner(*example), model(*example).numpy(), rtol=1e-4, atol=1e-5)


def test_export_of_a_2d_audio_input():
    torch.manual_seed(0)
    model, _ = apply_odconv(Audio().eval(), "all")
    wave = torch.randn(2, 1024)
    assert count_cost(model, example_input=wave).input_shape == (1, 1024)
    proto = export_onnx(model, None, wave)
    check_parity(model, proto, wave, batches=(1, 3))


def test_input_names_must_fit():
    with pytest.raises(ValueError, match="2 distinct"):
        export_onnx(RGBDepth().eval(), None, (torch.randn(1, 3, 8, 8), torch.randn(1, 1, 8, 8)), input_names=["a"])
