"""Arguments checked at the door: errors name the argument, nothing is converted or allocated before the check."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from odconv_surgery import ODConv2d, TemperatureSchedule, apply_odconv, list_candidates, set_temperature
from odconv_surgery.nn.validation import KernelBankMemoryError


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.c2 = nn.Conv2d(8, 8, 3, padding=1)
        self.c3 = nn.Conv2d(8, 8, 1)

    def forward(self, x):
        return self.c3(self.c2(self.c1(x)))


class DataDependent(Net):
    def forward(self, x):
        x = self.c1(x)
        if x.sum() > -1e9:  # data-dependent control flow: torch.fx cannot trace it
            x = self.c3(self.c2(x))
        return x


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"kernel_num": 2.5}, TypeError, r"kernel_num must be an int, got 2.5 \(float\)"),
        ({"kernel_num": True}, TypeError, r"kernel_num must be an int, got True \(bool\)"),
        ({"kernel_num": "4"}, TypeError, r"kernel_num must be an int, got '4' \(str\)"),
        ({"kernel_num": 0}, ValueError, "kernel_num must be >= 1"),
        ({"reduction": 0}, ValueError, "reduction must be > 0"),
        ({"reduction": 2}, ValueError, "reduction must be <= 1"),
        ({"reduction": float("nan")}, ValueError, "reduction must be a finite number"),
        ({"reduction": "1/16"}, TypeError, "reduction must be a number"),
        ({"share_attention": "no"}, TypeError, r"share_attention must be True or False, got 'no'"),
        ({"share_attention": 0}, TypeError, "share_attention must be True or False"),
        ({"min_attention_channels": 0, "init": "scratch"}, ValueError, "min_attention_channels must be >= 1"),
        ({"attention_norm": "batch"}, ValueError, "attention_norm must be one of 'bn', 'ln', 'none'"),
        ({"init": "random"}, ValueError, "init must be one of"),
        ({"inplace": "yes"}, TypeError, "inplace must be True or False"),
        ({"seed": 1.5}, TypeError, "seed must be an int"),
        ({"include": "(["}, ValueError, r"include selector '\(\[' is not a valid regular expression"),
        ({"exclude": "c[1"}, ValueError, r"exclude selector 'c\[1' is not a valid regular expression"),
        ({"include": 3.5}, TypeError, r"include must be a selector .* got 3.5 \(float\)"),
        ({"include": [3.5]}, TypeError, r"unsupported include selector 3.5"),
        ({"include": dict}, TypeError, "include selector dict is a class but not an nn.Module subclass"),
        ({"overrides": {"c1": 4}}, TypeError, r"overrides\['c1'\] must be a dict of ODConv2d settings .* got 4 \(int\)"),
        ({"overrides": [("c1", None)]}, TypeError, "overrides must be a dict"),
        ({"overrides": {"c2": {"kernel_num": 0}}}, ValueError, r"overrides\['c2'\]: kernel_num must be >= 1"),
        ({"overrides": {"c2": {"share_attention": "no"}}}, TypeError, r"overrides\['c2'\]: share_attention must be True"),
        ({"overrides": {"c2": {"kernels": 4}}}, ValueError, r"overrides\['c2'\] has unknown settings \['kernels'\]"),
        ({"example_inputs": 3}, TypeError, "example_inputs must be a tensor or a tuple"),
    ],
)
def test_apply_odconv_checks_arguments(kwargs, error, match):
    model = Net()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(error, match=match):
        apply_odconv(model, "all", inplace=kwargs.pop("inplace", True), **kwargs)
    assert not any(isinstance(m, ODConv2d) for m in model.modules())  # nothing converted half-way
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"kernel_num": 2.5}, TypeError, "ODConv2d: kernel_num must be an int"),
        ({"kernel_num": "4"}, TypeError, "ODConv2d: kernel_num must be an int"),
        ({"share_attention": "no"}, TypeError, "ODConv2d: share_attention must be True or False"),
        ({"min_attention_channels": 0}, ValueError, "ODConv2d: min_attention_channels must be >= 1"),
        ({"groups": 0}, ValueError, "groups must be >= 1"),
        ({"in_channels": 8.0}, TypeError, "in_channels must be an int"),
    ],
)
def test_odconv2d_checks_arguments(kwargs, error, match):
    args = {"in_channels": 8, "out_channels": 8, "kernel_size": 3, **kwargs}
    with pytest.raises(error, match=match):
        ODConv2d(**args)


def test_from_conv_checks_arguments():
    with pytest.raises(TypeError, match="kernel_num must be an int"):
        ODConv2d.from_conv(nn.Conv2d(3, 8, 3), kernel_num=2.5)
    with pytest.raises(ValueError, match="init must be one of"):
        ODConv2d.from_conv(nn.Conv2d(3, 8, 3), init="kaiming")


@pytest.mark.parametrize("value, error", [(float("nan"), ValueError), (float("inf"), ValueError), (0, ValueError),
                                          (-1.0, ValueError), (True, TypeError), ("1", TypeError)])
def test_set_temperature_checks(value, error):
    model, _ = apply_odconv(Net(), "all")
    with pytest.raises(error, match="temperature must be"):
        set_temperature(model, value)
    assert set_temperature(model, 2) == 3


def test_temperature_schedule_checks():
    with pytest.raises(TypeError, match="anneal_steps must be an int"):
        TemperatureSchedule(anneal_steps=1.5)
    with pytest.raises(ValueError, match="start must be a finite number"):
        TemperatureSchedule(anneal_steps=10, start=float("inf"))


def test_policy_answers_must_be_bools():
    with pytest.raises(TypeError, match=r"policy says_no returned 'no' \(str\) for conv 'c1'.*True/False"):
        def says_no(layer, analysis):
            return "no"

        apply_odconv(Net(), says_no)
    with pytest.raises(TypeError, match=r"returned \(True, 'a', 'b'\)"):
        apply_odconv(Net(), lambda layer, analysis: (True, "a", "b"))
    model, report = apply_odconv(Net(), lambda layer, analysis: np.bool_(layer.name == "c2"))
    assert report.converted == ["c2"]
    model, report = apply_odconv(Net(), lambda layer, analysis: (layer.name == "c3", "mine"))
    assert report.converted == ["c3"] and report.skipped["c1"] == "mine"


def test_oversize_kernel_bank_is_refused_before_allocating():
    with pytest.raises(KernelBankMemoryError, match=r"kernel_num=1000000000 .* needs [\d.]+ TiB \(\d+ bytes\)"):
        ODConv2d(64, 64, 3, kernel_num=10**9)
    model = Net()
    with pytest.raises(KernelBankMemoryError, match=r"converting 3 layer\(s\) \(largest bank: c2.*lower kernel_num"):
        apply_odconv(model, "all", kernel_num=10**9, inplace=True)
    assert not any(isinstance(m, ODConv2d) for m in model.modules())


def test_memory_estimate_counts_all_banks(monkeypatch):
    import odconv_surgery.nn.validation as validation

    # banks of Net at kernel_num=4, float32: c1 4*8*3*9*4 = 3456, c2 4*8*8*9*4 = 9216, c3 4*8*8*1*4 = 1024 bytes;
    # their attention branches (parameters and BatchNorm buffers, hidden width 16): c1 2080, c2 2740, c3 2128 bytes;
    # plus the largest bank's init temporaries (3 banks of c2).
    need = 3456 + 9216 + 1024 + 2080 + 2740 + 2128 + 3 * 9216
    monkeypatch.setattr(validation, "available_memory", lambda device: need - 1)
    with pytest.raises(KernelBankMemoryError, match=rf"needs .* \({need} bytes\) but only"):
        apply_odconv(Net(), "all", kernel_num=4)
    monkeypatch.setattr(validation, "available_memory", lambda device: need)
    apply_odconv(Net(), "all", kernel_num=4)


@pytest.mark.parametrize("as_given", [lambda x: x, lambda x: (x,), lambda x: [x]])
def test_example_inputs_tensor_or_tuple(as_given):
    x = torch.randn(2, 3, 8, 8)
    with pytest.warns(UserWarning, match="forward hooks"):
        model, report = apply_odconv(DataDependent(), "all", example_inputs=as_given(x))
    assert report.converted == ["c1", "c2", "c3"]
    with pytest.warns(UserWarning, match="forward hooks"):
        assert "c3" in list_candidates(DataDependent(), as_given(x), print_table=False)


def test_export_example_input_tensor_or_tuple():
    pytest.importorskip("onnx")
    from odconv_surgery.deploy.export import export_onnx

    model, _ = apply_odconv(Net().eval(), "all")
    x = torch.randn(1, 3, 8, 8)
    for given in (x, (x,)):
        assert export_onnx(model, None, given, check=False, fuse=False).graph.input[0].name
    with pytest.raises(TypeError, match="has 2 tensor.*forward does not take them"):
        export_onnx(model, None, (x, x))
