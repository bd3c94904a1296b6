"""Block detection on the patterns real architectures use: layer scale built from a parameter (timm ConvNeXt),
and encoder-decoder skips that wrap residual blocks (UNet)."""

import pytest
import torch
from torch import nn

from odconv_surgery import apply_odconv
from odconv_surgery.passes.fx.candidates import analyse_model


class LayerScaleBlock(nn.Module):
    """timm ConvNeXt's residual: ``x + gamma.view(-1, 1, 1) * conv(x)``, gamma a parameter reshaped in forward."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.pw = nn.Conv2d(channels, channels, 1)
        self.gamma = nn.Parameter(torch.full((channels,), 0.5))

    def forward(self, x):
        return x + self.gamma.view(-1, 1, 1) * self.pw(torch.relu(self.conv(x)))


class LayerScaleNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.blocks = nn.Sequential(*(LayerScaleBlock(16) for _ in range(3)))
        self.head = nn.Conv2d(16, 8, 1)

    def forward(self, x):
        return self.head(self.blocks(self.stem(x)))


class Residual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1)
        self.down = nn.Conv2d(cin, cout, 1, stride)

    def forward(self, x):
        return torch.relu(self.conv2(torch.relu(self.conv1(x))) + self.down(x))


class Encoder(nn.Module):
    """Returns every stage's features, as segmentation encoders do."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.stages = nn.Sequential(Residual(8, 16, 2), Residual(16, 16, 1), Residual(16, 32, 2), Residual(32, 32, 1))

    def forward(self, x):
        features = [torch.relu(self.stem(x))]
        for stage in self.stages:
            features.append(stage(features[-1]))
        return features


class TinyUNet(nn.Module):
    """Decoder blocks concatenate an upsampled path with an encoder skip: every ``cat`` region spans the
    deeper encoder stages."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = Encoder()
        self.dec1 = nn.Conv2d(32 + 16, 16, 3, padding=1)
        self.dec2 = nn.Conv2d(16 + 8, 8, 3, padding=1)
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, x):
        f0, _, f2, _, f4 = self.encoder(x)
        up = nn.functional.interpolate(f4, scale_factor=2.0)
        d1 = torch.relu(self.dec1(torch.cat([up, f2], 1)))
        d2 = torch.relu(self.dec2(torch.cat([nn.functional.interpolate(d1, scale_factor=2.0), f0], 1)))
        return self.head(d2)


def test_layer_scale_parameter_does_not_hide_the_residual_add():
    analysis = analyse_model(LayerScaleNet())
    assert analysis.blocks == ["blocks.0", "blocks.1", "blocks.2"]
    original = LayerScaleNet().eval()
    model, report = apply_odconv(original, "last:1")
    assert report.converted == ["blocks.2.conv", "blocks.2.pw", "head"]
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        assert torch.allclose(model(x), original(x), atol=1e-5)


def test_skip_cat_around_the_encoder_resolves_to_the_residual_blocks():
    analysis = analyse_model(TinyUNet())
    assert analysis.blocks == [f"encoder.stages.{i}" for i in range(4)]
    by_name = {layer.name: layer for layer in analysis.layers}
    assert by_name["encoder.stem"].block is None and by_name["dec1"].block is None
    assert {n for n, layer in by_name.items() if layer.is_shortcut} == {f"encoder.stages.{i}.down" for i in range(4)}
    torch.manual_seed(0)
    original = TinyUNet().eval()
    model, report = apply_odconv(original, "last:2")
    assert report.converted == ["encoder.stages.2.conv1", "encoder.stages.2.conv2", "encoder.stages.3.conv1",
                                "encoder.stages.3.conv2", "dec1", "dec2", "head"]
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.allclose(model.eval()(x), original(x), atol=1e-5)


@pytest.mark.slow
def test_timm_convnext_and_smp_unet_blocks():
    timm = pytest.importorskip("timm")
    smp = pytest.importorskip("segmentation_models_pytorch")
    convnext = timm.create_model("convnext_atto", pretrained=False)
    assert len(analyse_model(convnext).blocks) == sum(len(stage.blocks) for stage in convnext.stages)
    unet = smp.Unet("resnet18", encoder_weights=None, classes=2)
    blocks = analyse_model(unet).blocks
    assert blocks == [f"encoder.layer{i}.{j}" for i in range(1, 5) for j in range(2)]
    _, report = apply_odconv(unet, "last:2")
    assert "encoder.layer4.0.conv1" in report.converted and "encoder.layer3.1.conv1" not in report.converted
