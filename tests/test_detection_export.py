"""Export of the patterns detection and segmentation models use: one conv applied at several call sites (FPN
heads), and empty batches (RoI heads when no box survives)."""

from collections import OrderedDict

import pytest
import torch
from torch import nn
from torchvision.models.detection.rpn import RPNHead
from torchvision.ops import FeaturePyramidNetwork

from odconv_surgery import apply_odconv
from odconv_surgery.deploy.export import export_marked, export_onnx
from odconv_surgery.deploy.runtime import OrtRunner, check_parity
from odconv_surgery.deploy.schema import OD_DOMAIN

from helpers.onnx_models import build, randomise, tiny


class SharedHead(nn.Module):
    """The issue's reproduction: one head conv applied to two pyramid levels of different sizes."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.down = nn.Conv2d(16, 16, 3, stride=2, padding=1)
        self.head = nn.Conv2d(16, 8, 3, padding=1)

    def forward(self, x):
        p3 = self.stem(x)
        p4 = self.down(p3)
        return self.head(p3).mean((2, 3)) + self.head(p4).mean((2, 3))


class FPNDetector(nn.Module):
    """A small backbone, torchvision's FeaturePyramidNetwork and its RPN head applied to every level."""

    def __init__(self, head: nn.Module | None = None) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, 2, 1)
        self.c3 = nn.Conv2d(8, 16, 3, 2, 1)
        self.c4 = nn.Conv2d(16, 24, 3, 2, 1)
        self.c5 = nn.Conv2d(24, 32, 3, 2, 1)
        self.fpn = FeaturePyramidNetwork([16, 24, 32], 16)
        self.head = head if head is not None else RPNHead(16, 3)

    def forward(self, x):
        c3 = torch.relu(self.c3(torch.relu(self.stem(x))))
        c4 = torch.relu(self.c4(c3))
        c5 = torch.relu(self.c5(c4))
        return self.head(list(self.fpn(OrderedDict([("p3", c3), ("p4", c4), ("p5", c5)])).values()))


def marker_names(model, x):
    return sorted(n.name for n in export_marked(model, x).graph.node if n.domain == OD_DOMAIN)


@pytest.mark.parametrize("fuse", [False, True])
def test_conv_called_twice_exports(fuse):
    model, _ = apply_odconv(SharedHead().eval())
    randomise(model)
    x = torch.randn(1, 3, 32, 32)
    assert marker_names(model, x) == ["down", "head/call0", "head/call1"]
    proto = export_onnx(model, None, x, fuse=fuse)
    assert len({n.name for n in proto.graph.node}) == len(proto.graph.node)
    check_parity(model, proto, x, batches=(1, 3))


def test_fpn_rpn_head_per_level_exports():
    torch.manual_seed(0)
    model, report = apply_odconv(FPNDetector().eval())
    randomise(model)
    assert {"head.conv.0.0", "head.cls_logits", "head.bbox_pred", "fpn.layer_blocks.0.0"} <= set(report.converted)
    x = torch.randn(1, 3, 64, 64)
    names = marker_names(model, x)
    assert [n for n in names if n.startswith("head.cls_logits")] == [f"head.cls_logits/call{i}" for i in range(3)]
    proto = export_onnx(model, None, x)
    assert len(proto.graph.output) == 6  # objectness and box deltas for each of the three levels
    check_parity(model, proto, x, batches=(1, 2))


@pytest.mark.slow
def test_fpn_retinanet_head_per_level_exports():
    from torchvision.models.detection.retinanet import RetinaNetHead

    torch.manual_seed(0)
    model, _ = apply_odconv(FPNDetector(RetinaNetHead(16, 3, 4)).eval(), kernel_num=2)
    randomise(model)
    x = torch.randn(1, 3, 64, 64)
    check_parity(model, export_onnx(model, None, x), x, batches=(1, 2))


@pytest.mark.parametrize(
    "kw", [dict(kernel_num=1), dict(kernel_num=4), dict(kernel_num=2, share_attention=False), dict(padding_mode="reflect")]
)
def test_exported_graph_accepts_batch_zero(kw):
    model = tiny(**kw)
    x = torch.randn(1, 8, 16, 16)
    proto = export_onnx(model, None, x)
    assert OrtRunner(proto, device="cpu")(torch.randn(0, 8, 16, 16)).shape == (0, 32, 4, 4)
    empty = export_onnx(model, None, x[:0])  # an empty example exports too (the check runs on a batch of 2)
    check_parity(model, empty, x, batches=(0, 1, 3))


def test_batch_zero_through_every_layer_kind_of_a_real_model():
    model, _ = build("mobilenet_v2_0.5", kernel_num=4)
    x = torch.randn(1, 3, 64, 64)
    check_parity(model, export_onnx(model, None, x), x, batches=(0, 2))


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:torch.fx could not trace")  # detection models: hooks on the example images
def test_mask_rcnn_roi_heads_with_no_surviving_box():
    """Mask R-CNN's mask head runs on an empty batch when no detection passes the score threshold."""
    import torchvision

    torch.manual_seed(0)
    detector = torchvision.models.detection.maskrcnn_resnet50_fpn(
        weights=None, weights_backbone=None, num_classes=3, min_size=128, max_size=128, box_score_thresh=1.0
    ).eval()
    images = [torch.rand(3, 128, 128)]
    model, report = apply_odconv(detector, example_inputs=(images,))
    assert any(name.startswith("roi_heads.mask_head") for name in report.converted)
    with torch.no_grad():
        (out,) = model(images)
    assert out["boxes"].shape == (0, 4) and out["masks"].shape == (0, 1, 128, 128)
