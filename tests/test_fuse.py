"""fuse_batchnorm: exact BN folding into ODConv kernel banks, and foreign (nn.Conv2d-only) folds caught."""

import pytest
import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights

from helpers.randomise import randomise_attention
from odconv_surgery import KernelBankError, ODConv2d, apply_odconv, fuse_batchnorm

pytestmark = pytest.mark.filterwarnings("ignore:torch.fx could not trace")  # TinyYolo is untraceable on purpose


def randomise_bn(model: nn.Module) -> nn.Module:
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.3)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return model.eval()


# --- a miniature of ultralytics' Conv / model.fuse() (ultralytics 8.4), the real third-party deploy code ------------
def foreign_fuse_conv_and_bn(conv, bn):
    """ultralytics.utils.torch_utils.fuse_conv_and_bn: written for 4-D nn.Conv2d kernels."""
    conv.weight, conv.bias = fuse_conv_bn_weights(
        conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.eps, bn.weight, bn.bias
    )
    return conv.requires_grad_(False)


class Conv(nn.Module):
    def __init__(self, c1: int, c2: int, k: int = 1, s: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, k // 2, bias=False)
        self.bn = nn.BatchNorm2d(c2)
        self.act = nn.SiLU()

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))

    def forward_fuse(self, x):
        return self.act(self.conv(x))


class TinyYolo(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.model = nn.Sequential(Conv(3, 16, 3, 2), Conv(16, 32, 3, 2), Conv(32, 32, 3), Conv(32, 32, 1))
        self.head = nn.ModuleList([Conv(32, 32, 3), Conv(32, 16, 1)])
        self.dfl = nn.Conv2d(16, 4, 1, bias=False).requires_grad_(False)  # a frozen conv without BN

    def forward(self, x):
        x = self.model(x)
        if x.shape[-1] > 0:  # data-dependent, as ultralytics' Detect head: torch.fx cannot trace this model
            x = self.head[1](self.head[0](x))
        return self.dfl(x)

    def is_fused(self) -> bool:
        return not any(isinstance(m, Conv) and hasattr(m, "bn") for m in self.modules())

    def fuse(self) -> "TinyYolo":
        if not self.is_fused():
            for m in self.modules():
                if isinstance(m, Conv) and hasattr(m, "bn"):
                    m.conv = foreign_fuse_conv_and_bn(m.conv, m.bn)
                    delattr(m, "bn")
                    m.forward = m.forward_fuse
        return self


def converted_yolo(kernel_num: int = 1):
    x = torch.randn(2, 3, 32, 32)
    model, _ = apply_odconv(randomise_bn(TinyYolo()), kernel_num=kernel_num, example_inputs=(x,))
    randomise_attention(model)
    randomise_bn(model)  # attention norms too
    return model.eval(), x


def test_foreign_bn_fold_is_refused_with_the_fix():
    model, x = converted_yolo()
    model.fuse()  # broadcasts the BN scale over the 5-D bank's kernel axis
    with pytest.raises(KernelBankError, match=r"odconv_surgery\.fuse_batchnorm"):
        model(x)


@pytest.mark.parametrize("kernel_num", [1, 3])
def test_fuse_batchnorm_then_foreign_fuse_keeps_outputs(kernel_num):
    model, x = converted_yolo(kernel_num)
    with torch.no_grad():
        reference = model(x)
    folded = fuse_batchnorm(model)
    assert ("model.1.conv", "model.1.bn") in folded and ("model.0.conv", "model.0.bn") in folded  # static stem too
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert model.is_fused()
    model.fuse()  # the deploy code now sees a fused model and leaves it alone
    with torch.no_grad():
        out = model(x)
    torch.testing.assert_close(out, reference, rtol=1e-5, atol=1e-5)
    assert not model.dfl.weight.requires_grad  # untouched conv keeps its flags


class Shared(nn.Module):
    """BNs that must not fold: the conv output is read twice, or the BN follows an already-reduced tensor."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.a = nn.Conv2d(8, 8, 3, padding=1)
        self.bn_a = nn.BatchNorm2d(8)
        self.b = nn.Conv2d(8, 8, 3, padding=1, bias=True)
        self.bn_b = nn.BatchNorm2d(8)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        y = self.a(x)
        x = self.bn_a(y) + y  # y read twice: folding would change the second read
        return self.bn_b(self.b(x))


def test_only_sole_consumer_bns_fold_and_training_is_refused():
    model, _ = apply_odconv(randomise_bn(Shared()), "all", kernel_num=2)
    randomise_attention(model)
    model.eval()
    x = torch.randn(2, 3, 12, 12)
    with torch.no_grad():
        reference = model(x)
    with pytest.raises(ValueError, match="model.eval"):
        fuse_batchnorm(model.train())
    model.eval()
    folded = fuse_batchnorm(model)
    assert ("b", "bn_b") in folded and ("a", "bn_a") not in folded
    assert isinstance(model.bn_a, nn.BatchNorm2d) and isinstance(model.bn_b, nn.Identity)
    assert isinstance(model.a.attention.norm, nn.Identity) and model.a.attention.fc.bias is not None
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference, rtol=1e-5, atol=1e-5)
    assert isinstance(model.b, ODConv2d) and model.b.weight.shape == (2, 8, 8, 3, 3)


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")  # TinyYolo's data-dependent branch
def test_fused_model_exports():
    pytest.importorskip("onnxruntime")
    from odconv_surgery.deploy.export import export_onnx
    from odconv_surgery.deploy.runtime import check_parity

    model, x = converted_yolo(2)
    fuse_batchnorm(model)
    proto = export_onnx(model, None, x[:1])
    check_parity(model, proto, x[:1], batches=(1, 3))


@pytest.mark.slow
def test_ultralytics_yolov8_fuse():
    pytest.importorskip("ultralytics")
    from ultralytics.nn.tasks import DetectionModel

    x = torch.randn(2, 3, 64, 64)
    base = randomise_bn(DetectionModel("yolov8n.yaml", verbose=False))
    model, _ = apply_odconv(base, example_inputs=(x,))
    randomise_attention(model)
    model.eval()
    with torch.no_grad():
        reference = model(x)[0]
    broken = apply_odconv(base, example_inputs=(x,))[0].eval().fuse(verbose=False)
    with pytest.raises(KernelBankError, match=r"Code written for nn.Conv2d rewrote it.*fuse_batchnorm"):
        broken(x)
    fuse_batchnorm(model)
    model.fuse(verbose=False)
    with torch.no_grad():
        torch.testing.assert_close(model(x)[0], reference, rtol=1e-4, atol=1e-4)
