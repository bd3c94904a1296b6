"""Export of models that are not plain float32 (issue 22, items 4 and 6): a half-precision model is refused with
the fix (``model.float()``) before any file is written, with or without the check; a model that creates float32
tensors in forward (so its float64 copy cannot run) is exported, its check bound measured on onnxruntime instead."""

import pytest
import torch
from torch import nn

from odconv_surgery import apply_odconv
from odconv_surgery.deploy.export import export_onnx
from odconv_surgery.deploy.runtime import check_parity
from odconv_surgery.errors import UnsupportedDtypeError


def small() -> nn.Module:
    torch.manual_seed(0)
    model, _ = apply_odconv(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1)), "all")
    return model.eval()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("check", [True, False])
def test_half_precision_is_refused_with_the_fix(dtype, check, tmp_path):
    model = small().to(dtype)
    with pytest.raises(UnsupportedDtypeError, match=r"\.float\(\)"):
        export_onnx(model, tmp_path / "m.onnx", torch.randn(1, 3, 8, 8, dtype=dtype), check=check)
    assert not (tmp_path / "m.onnx").exists()
    x = torch.randn(1, 3, 8, 8)
    float_model = model.float()
    check_parity(float_model, export_onnx(float_model, None, x), x, batches=(1, 2))


class MakesFloat32(nn.Module):
    """Creates a float32 tensor in forward (a fixed mixing matrix), as some OCR and audio front ends do."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)

    def forward(self, x):
        y = torch.relu(self.conv(x))
        return self.conv2(y @ torch.eye(y.shape[-1], dtype=torch.float32))


def test_model_making_float32_tensors_exports():
    model, _ = apply_odconv(MakesFloat32().eval(), "all")
    x = torch.randn(1, 3, 8, 8)
    check_parity(model, export_onnx(model, None, x), x, batches=(1, 2))
