"""A clean export prints nothing: onnx-graphsurgeon's notices and torch's exporter notices go to logging at DEBUG;
warnings raised by the model's own code still reach the user."""

import logging
import warnings

import pytest
import torch
from torch import nn

from odconv_surgery import apply_odconv
from odconv_surgery.deploy.export import export_onnx


class Fire(nn.Module):
    """SqueezeNet's fire module in miniature. Equal (zero) biases are deduplicated by the exporter into shared
    initializers, which onnx-graphsurgeon reports as "distinct tensors that share the same name"."""

    def __init__(self, note: str | None = None) -> None:
        super().__init__()
        self.note = note
        self.stem = nn.Conv2d(3, 8, 3)
        self.squeeze = nn.Conv2d(8, 16, 1)
        self.expand1 = nn.Conv2d(16, 16, 1)
        self.expand3 = nn.Conv2d(16, 16, 3, padding=1)
        for conv in (self.squeeze, self.expand1, self.expand3):
            nn.init.zeros_(conv.bias)

    def forward(self, x):
        if self.note:
            warnings.warn(self.note)
        x = torch.relu(self.squeeze(self.stem(x)))
        return torch.cat([self.expand1(x), self.expand3(x)], 1)


def test_clean_export_prints_nothing(capfd, caplog):
    marked, _ = apply_odconv(Fire().eval())
    generic, _ = apply_odconv(Fire().eval(), share_attention=False)  # no marker node: no custom domain declared
    reflect = Fire().eval()
    reflect.expand3.padding_mode = "reflect"  # the generic form with shared attention
    reflect, _ = apply_odconv(reflect)
    x = torch.randn(1, 3, 16, 16)
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.DEBUG, logger="odconv_surgery"):
        warnings.simplefilter("always")
        export_onnx(marked, None, x)
        export_onnx(generic, None, x)
        export_onnx(reflect, None, x)
    out, err = capfd.readouterr()
    assert out == "" and err == ""
    assert [str(w.message) for w in caught] == []
    logged = [r.getMessage() for r in caplog.records]
    assert any("Found distinct tensors" in m for m in logged)  # what used to be printed, now at DEBUG
    assert any("legacy TorchScript-based ONNX export" in m for m in logged)


def test_model_warnings_still_reach_the_user():
    with pytest.warns(UserWarning, match="from the model"):  # fx runs forward while tracing
        model, _ = apply_odconv(Fire("from the model").eval())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        export_onnx(model, None, torch.randn(1, 3, 16, 16))
    assert "from the model" in [str(w.message) for w in caught]
