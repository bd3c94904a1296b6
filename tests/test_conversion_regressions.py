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
