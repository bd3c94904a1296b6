"""Regressions a new user hit: conversion and accounting on the meta device, and one memory probe per conversion."""

from __future__ import annotations

import pytest
import torch
import torchvision

from odconv_surgery import ODConv2d, apply_odconv, count_cost, list_candidates, load, save
from odconv_surgery.nn import validation
from odconv_surgery.surgery import BUILTIN_POLICIES


@pytest.fixture(scope="module")
def meta_mobilenet():
    with torch.device("meta"):
        return torchvision.models.mobilenet_v2()


@pytest.mark.parametrize("policy", BUILTIN_POLICIES)
def test_meta_model_converts_and_counts_under_every_policy(meta_mobilenet, policy):
    model, report = apply_odconv(meta_mobilenet, policy, kernel_num=4)
    layers = [m for m in model.modules() if isinstance(m, ODConv2d)]
    assert layers and all(m.weight.is_meta for m in layers)
    cost = count_cost(model, (1, 3, 224, 224))
    assert cost.params == report.params_after > report.params_before
    assert cost.extra_madds > 0


def test_meta_model_candidates_and_static_cost(meta_mobilenet):
    table = list_candidates(meta_mobilenet, print_table=False)
    assert "features.18.0" in table
    assert count_cost(meta_mobilenet, (1, 3, 224, 224)).params == 3_504_872


def test_meta_resnet_converts():
    with torch.device("meta"):
        model = torchvision.models.resnet18()
    converted, report = apply_odconv(model, "all_but_first", kernel_num=1)
    assert report.params_after > report.params_before and converted.fc.weight.is_meta


def test_memory_is_probed_once_per_conversion(monkeypatch, tmp_path):
    calls = []
    real = validation._cpu_available

    def counting() -> int | None:
        calls.append(1)
        return real()

    monkeypatch.setattr(validation, "_cpu_available", counting)
    model, _ = apply_odconv(torchvision.models.resnet18(num_classes=10), "all", kernel_num=2)
    assert len(calls) == 1, f"{len(calls)} probes for one conversion"
    path = save(model, tmp_path / "m.pt")
    calls.clear()
    load(torchvision.models.resnet18(num_classes=10), path)
    assert len(calls) == 1, f"{len(calls)} probes for one load"


def test_hook_fallback_never_converts_the_attention_of_a_converted_layer():
    """Without fx, forward hooks record the call order: the convs of a converted layer's attention are not the
    model's, so a second conversion must not pick them (it did: 'all' converted d.attention.fc)."""

    class Untraceable(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c = torch.nn.Conv2d(3, 8, 3)
            self.d = torch.nn.Conv2d(8, 8, 1)
            self.fc = torch.nn.Linear(8, 4)

        def forward(self, x):
            if x.sum() > 0:  # data-dependent: fx cannot trace it
                x = x * 2
            return self.fc(self.d(self.c(x)).mean((2, 3)))

    x = torch.randn(2, 3, 8, 8)
    with pytest.warns(UserWarning, match="forward hooks"):
        once, _ = apply_odconv(Untraceable().eval(), None, include=["d", "fc"], example_inputs=x)
    with pytest.warns(UserWarning, match="forward hooks"):
        _, report = apply_odconv(once, "all", example_inputs=x)
    assert [row.name for row in report.layers] == ["c"] and report.converted == ["c"]
