"""Model specs: registered sources (torchvision, timm, entry points); ``module:callable`` only with the opt-in."""

from __future__ import annotations

import sys
import textwrap

import pytest
import torch
from torch import nn

from helpers.plugins import DANGEROUS_SPECS as DANGEROUS, write_plugin_package
from odconv_surgery.experiments.model_spec import ImportNotAllowedError, ModelSpec, ModelSpecError, build_model, parse_model_spec

TINY_SOURCE = textwrap.dedent("""
    from subprocess import run  # a stdlib function re-exported by a user module
    import torch
    from torch import nn

    class TinyNet(nn.Module):
        def __init__(self, width=4, num_classes=3):
            super().__init__()
            self.conv = nn.Conv2d(3, width, 3)
            self.fc = nn.Linear(width, num_classes)

        def forward(self, x):
            return self.fc(self.conv(x).mean((2, 3)))

    def tiny(width=4, num_classes=3):
        return TinyNet(width, num_classes)

    def not_a_model():
        return 42

    class Maker:
        def __call__(self, **kw):
            return TinyNet(**kw)

    maker = Maker()
    NOT_CALLABLE = 3
""")


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    (tmp_path / "my_models_spec.py").write_text(TINY_SOURCE)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "my_models_spec"
    sys.modules.pop("my_models_spec", None)


def test_parse_torchvision_with_kwargs():
    spec = parse_model_spec("torchvision:mobilenet_v2?width_mult=0.5&num_classes=10&dropout=0.0")
    assert spec == ModelSpec("torchvision", "mobilenet_v2", {"width_mult": 0.5, "num_classes": 10, "dropout": 0.0})
    assert parse_model_spec(str(spec)) == spec  # round trip


def test_values_are_scalars_only():
    spec = parse_model_spec("resnet18?zero_init_residual=true&weights=None&name=abc&t=(1, 2)&x=-3&y=1e-3")
    assert spec.source == "torchvision" and spec.name == "resnet18"
    # a container literal is not evaluated: it stays the string it is
    assert spec.kwargs == {"zero_init_residual": True, "weights": None, "name": "abc", "t": "(1, 2)", "x": -3, "y": 1e-3}
    with pytest.raises(ModelSpecError, match="width_mult=9e999999 is not a finite number"):
        parse_model_spec("torchvision:mobilenet_v2?width_mult=9e999999")
    with pytest.raises(ModelSpecError, match="too long a number"):
        parse_model_spec("torchvision:mobilenet_v2?num_classes=" + "9" * 5000)


def test_build_torchvision_without_downloading():
    model = build_model("torchvision:mobilenet_v2?width_mult=0.5", num_classes=10)
    assert model.classifier[-1].out_features == 10
    assert model.features[0][0].out_channels == 16


@pytest.mark.parametrize("template", DANGEROUS)
def test_dangerous_specs_run_nothing(template, tmp_path):
    target = tmp_path / "F"
    if "remove" in template:
        target.write_text("keep me")
    text = template.format(f=target)
    module, name = text.split("?")[0].split(":")
    # parsing, building, and building a ModelSpec made directly all refuse without the opt-in
    for call in (lambda: parse_model_spec(text), lambda: build_model(text), lambda: ModelSpec(module, name).build()):
        with pytest.raises(ImportNotAllowedError, match="allow-import") as exc:
            call()
        assert "\n" not in str(exc.value)
    # even with the opt-in, a standard-library callable is no model factory
    with pytest.raises(ImportNotAllowedError, match="standard-library module"):
        build_model(text, allow_import=True)
    assert target.exists() == ("remove" in template)


def test_nothing_imported_without_opt_in(tmp_path, monkeypatch):
    canary = tmp_path / "imported"
    (tmp_path / "canary_models.py").write_text(f"open({str(canary)!r}, 'w').close()\ndef build(): pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ImportNotAllowedError, match="refused by default; use a registered source"):
        build_model("canary_models:build")
    assert not canary.exists() and "canary_models" not in sys.modules


def test_module_callable_with_opt_in(user_module):
    model = build_model(f"{user_module}:tiny?width=5", allow_import=True)
    assert isinstance(model, nn.Module) and model.conv.out_channels == 5
    assert build_model(f"{user_module}:TinyNet?width=6", allow_import=True).conv.out_channels == 6  # an nn.Module class
    with pytest.raises(ModelSpecError, match="no attribute"):
        build_model(f"{user_module}:missing", allow_import=True)
    with pytest.raises(ModelSpecError, match="not callable"):
        build_model(f"{user_module}:NOT_CALLABLE", allow_import=True)
    with pytest.raises(ModelSpecError, match="cannot build"):
        build_model(f"{user_module}:tiny?depth=3", allow_import=True)
    with pytest.raises(ModelSpecError, match="returned int"):
        build_model(f"{user_module}:not_a_model", allow_import=True)


@pytest.mark.parametrize(
    "text, match",
    [
        ("my_models_spec:run?args=true", "subprocess function, not a model factory"),  # re-exported stdlib function
        ("torch.hub:load?repo_or_dir=x", "torch function, not a model factory"),
        ("my_models_spec:maker", "not an nn.Module class or a Python function"),
        ("my_models_spec:tiny.__globals__", "dunder"),
    ],
)
def test_opt_in_still_refuses_non_factories(user_module, text, match):
    with pytest.raises(ImportNotAllowedError, match=match):
        build_model(text, allow_import=True)


def test_timm_source():
    pytest.importorskip("timm")
    model = build_model("timm:resnet18?num_classes=3")
    assert model.eval()(torch.randn(1, 3, 32, 32)).shape == (1, 3)
    with pytest.raises(ModelSpecError, match="Did you mean"):
        parse_model_spec("timm:resnet_18").build()
    with pytest.raises(ModelSpecError, match="unknown timm model 'hf-hub:org/x'"):
        build_model("timm:hf-hub:org/x")
    with pytest.raises(ModelSpecError, match=r"\['checkpoint_path'\] are not accepted"):
        build_model("timm:resnet18?checkpoint_path=/tmp/x.pt")


def test_timm_not_installed(monkeypatch):
    import odconv_surgery.experiments.model_sources as sources

    real = sources.importlib.util.find_spec
    monkeypatch.setattr(sources.importlib.util, "find_spec", lambda name, *a: None if name == "timm" else real(name, *a))
    assert "timm" not in sources.available_sources()
    with pytest.raises(ModelSpecError, match=r"pip install timm"):
        build_model("timm:resnet18")


def test_entry_point_source(tmp_path, monkeypatch):
    write_plugin_package(tmp_path, "plugin_models_ep", TINY_SOURCE, {"tiny_ep": "plugin_models_ep:tiny"})
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        model = build_model("entrypoint:tiny_ep?width=7", num_classes=2)  # no opt-in needed: a package declared it
        assert model.conv.out_channels == 7 and model.fc.out_features == 2
        with pytest.raises(ModelSpecError, match="Did you mean tiny_ep"):
            build_model("entrypoint:tiny_epp")
    finally:
        sys.modules.pop("plugin_models_ep", None)


@pytest.mark.parametrize(
    "text, match",
    [
        ("", "empty model spec"),
        ("torchvision:mobilenet_v3", "Did you mean"),
        ("no_such_module_xyz:build", "allow-import"),
        ("torchvision:resnet18?1bad=2", "bad argument name"),
        (":resnet18", "cannot parse"),
        ("my pkg:build", "cannot parse"),
    ],
)
def test_errors_name_the_fix(text, match):
    with pytest.raises(ModelSpecError, match=match):
        parse_model_spec(text).build()


def test_missing_module_with_opt_in():
    with pytest.raises(ModelSpecError, match="cannot import module"):
        build_model("no_such_module_xyz:build", allow_import=True)


def test_build_errors_are_spec_errors(monkeypatch):
    with pytest.raises(ModelSpecError, match="cannot build"):
        build_model("torchvision:resnet18?weights=NOPE")
    import urllib.error

    import torchvision

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torchvision.models, "get_model", offline)
    with pytest.raises(ModelSpecError, match="connect to the network"):
        build_model("torchvision:resnet18?weights=IMAGENET1K_V1")
    with pytest.raises(ModelSpecError, match="only int, float, bool, None and str"):
        build_model("torchvision:resnet18", num_classes=[3])
