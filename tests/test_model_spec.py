"""Model specs: ``torchvision:NAME?k=v`` and ``module:callable?k=v``."""

from __future__ import annotations

import sys
import textwrap

import pytest
from torch import nn

from odconv_surgery.experiments.model_spec import ModelSpec, ModelSpecError, build_model, parse_model_spec


def test_parse_torchvision_with_kwargs():
    spec = parse_model_spec("torchvision:mobilenet_v2?width_mult=0.5&num_classes=10&dropout=0.0")
    assert spec == ModelSpec("torchvision", "mobilenet_v2", {"width_mult": 0.5, "num_classes": 10, "dropout": 0.0})
    assert parse_model_spec(str(spec)) == spec  # round trip


def test_parse_values_and_bare_name():
    spec = parse_model_spec("resnet18?zero_init_residual=true&weights=None&name=abc")
    assert spec.source == "torchvision" and spec.name == "resnet18"
    assert spec.kwargs == {"zero_init_residual": True, "weights": None, "name": "abc"}


def test_build_torchvision_without_downloading():
    model = build_model("torchvision:mobilenet_v2?width_mult=0.5", num_classes=10)
    assert model.classifier[-1].out_features == 10
    assert model.features[0][0].out_channels == 16


def test_module_callable(tmp_path, monkeypatch):
    (tmp_path / "my_models_spec.py").write_text(textwrap.dedent("""
        from torch import nn
        def tiny(width=4, num_classes=3):
            return nn.Sequential(nn.Conv2d(3, width, 3), nn.Flatten(), nn.LazyLinear(num_classes))
        NOT_CALLABLE = 3
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    model = build_model("my_models_spec:tiny?width=5")
    assert isinstance(model, nn.Sequential) and model[0].out_channels == 5
    with pytest.raises(ModelSpecError, match="no attribute"):
        build_model("my_models_spec:missing")
    with pytest.raises(ModelSpecError, match="not callable"):
        build_model("my_models_spec:NOT_CALLABLE")
    with pytest.raises(ModelSpecError, match="cannot build"):
        build_model("my_models_spec:tiny?depth=3")
    sys.modules.pop("my_models_spec", None)


@pytest.mark.parametrize(
    "text, match",
    [
        ("", "empty model spec"),
        ("torchvision:mobilenet_v3", "Did you mean"),
        ("no_such_module_xyz:build", "cannot import module"),
        ("torchvision:resnet18?1bad=2", "bad argument name"),
        (":resnet18", "cannot parse"),
    ],
)
def test_errors_name_the_fix(text, match):
    with pytest.raises(ModelSpecError, match=match):
        parse_model_spec(text).build()
