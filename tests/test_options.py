"""Layer settings and export targets are defined once: ``LayerOptions`` and ``ExportTarget`` drive the layer,
``apply_odconv``, the recipe and the CLI."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from odconv_surgery import CheckpointMismatchError, InvalidValueError, ODConv2d, Recipe, UnknownSettingError, apply_odconv, get_recipe
from odconv_surgery.cli import build_parser
from odconv_surgery.deploy.targets import LOWERING_TARGETS, ExportTarget, check_target
from odconv_surgery.nn.options import LAYER_KEYS, LayerOptions


def _net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 8, 1))


def test_options_are_checked_and_frozen():
    with pytest.raises(InvalidValueError, match="kernel_num must be >= 1, got 0"):
        LayerOptions(kernel_num=0)
    with pytest.raises(TypeError, match="share_attention must be True or False"):
        LayerOptions(share_attention="yes")
    options = LayerOptions(reduction=1)
    assert isinstance(options.reduction, float)  # normalised
    with pytest.raises(dataclasses.FrozenInstanceError, match="kernel_num"):
        options.kernel_num = 2  # type: ignore[misc]
    assert options.merged({"kernel_num": 3}) == LayerOptions(kernel_num=3, reduction=1.0)


def test_keywords_and_options_build_the_same_model():
    by_keywords, _ = apply_odconv(_net(), "all", kernel_num=2, reduction=0.5, attention_norm="ln")
    options = LayerOptions(kernel_num=2, reduction=0.5, attention_norm="ln")
    by_options, _ = apply_odconv(_net(), "all", options=options)
    assert get_recipe(by_keywords) == get_recipe(by_options)
    assert all(m.options == options for m in by_options.modules() if isinstance(m, ODConv2d))
    layer = by_options[2]
    assert (layer.kernel_num, layer.reduction, layer.attention_norm) == (2, 0.5, "ln")
    # keywords replace the options' values, in the layer too
    assert ODConv2d(8, 8, 3, options=options, kernel_num=3).options == options.merged({"kernel_num": 3})


def test_unknown_setting_names_the_valid_ones():
    with pytest.raises(UnknownSettingError, match=r"apply_odconv has unknown settings \['kernels'\]; allowed: kernel_num"):
        apply_odconv(_net(), "all", kernels=2)
    with pytest.raises(TypeError, match=r"ODConv2d has unknown settings \['bogus'\]"):  # as Python's own would be
        ODConv2d(3, 8, 3, bogus=1)


def test_recipe_round_trip_keeps_the_flat_format_and_reads_old_recipes():
    model, _ = apply_odconv(_net(), "all", kernel_num=2, share_attention=False)
    recipe = get_recipe(model)
    data = recipe.to_dict()
    assert set(data) == {"policy", *LAYER_KEYS, "layers", "init", "version"}
    assert data["kernel_num"] == 2 and data["share_attention"] is False
    assert Recipe.from_dict(data) == recipe
    # a recipe written before share_attention / attention_norm / min_attention_channels existed
    old = {"policy": "all", "kernel_num": 4, "reduction": 0.25, "layers": {"0": {"kernel_num": 4, "reduction": 0.25}},
           "init": "pretrained", "version": "0.0.1"}
    loaded = Recipe.from_dict(old)
    assert loaded.options == LayerOptions(kernel_num=4, reduction=0.25)
    with pytest.raises(CheckpointMismatchError, match=r"recipe: kernel_num must be >= 1"):
        Recipe.from_dict({**old, "kernel_num": 0})


def test_cli_layer_options_come_from_the_fields():
    parser = build_parser()
    args = parser.parse_args(["apply", "torchvision:resnet18", "-o", "x.pt"])
    assert not any(hasattr(args, key) for key in LAYER_KEYS)  # flags left out: the method's values apply
    args = parser.parse_args(["apply", "m", "-o", "x.pt", "-n", "3", "-r", "1/4", "--no-share-attention",
                              "--min-attention-channels", "8", "--attention-norm", "ln", "--attentions", "spatial,kernel",
                              "--pool-size", "3", "--no-attention-trunk"])
    given = {key: getattr(args, key) for key in LAYER_KEYS if hasattr(args, key)}
    assert LayerOptions(**given) == LayerOptions(
        kernel_num=3, reduction=0.25, share_attention=False, min_attention_channels=8, attention_norm="ln",
        attentions=("spatial", "kernel"), pool_size=3, attention_trunk=False)


def test_cli_help_comes_from_the_fields(capsys):
    with pytest.raises(SystemExit, match="0"):
        build_parser().parse_args(["apply", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for f in dataclasses.fields(LayerOptions):
        assert f"--{f.name.replace('_', '-')}" in text
        assert " ".join(f.metadata["help"].split()) in text
    assert "number of kernels n in the bank (ODConv default 1)" in text and "(ODConv default 0.0625)" in text
    assert "(ODConv default spatial,channel,filter,kernel)" in text


def test_export_targets_are_one_enum():
    assert [t.value for t in ExportTarget] == ["auto", "portable", "ort-cpu"]
    assert LOWERING_TARGETS == ("portable", "ort-cpu")
    assert f"{ExportTarget.ORT_CPU}" == "ort-cpu" and ExportTarget.ORT_CPU == "ort-cpu"
    assert check_target(ExportTarget.PORTABLE) == "portable"
    with pytest.raises(InvalidValueError, match="target must be one of 'auto', 'portable', 'ort-cpu', got 'gpu'"):
        check_target("gpu")
    export = next(a for a in build_parser()._subparsers._group_actions[0].choices["export"]._actions if a.dest == "target")
    assert list(export.choices) == [t.value for t in ExportTarget] and export.default == "auto"


def test_layer_options_follow_the_layer_after_fuse_batchnorm():
    from odconv_surgery import fuse_batchnorm

    model, _ = apply_odconv(nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(8, 8, 3), nn.BatchNorm2d(8)).eval(), "all")
    fuse_batchnorm(model)
    assert model[1].options == LayerOptions(attention_norm="none") and model[1].attention_norm == "none"
