"""The official code's formulation (benchmarks/lab/reference_odconv.py) computes our layers' function on their own
parameters, so benchmark rows labelled 'official' time the same model."""

import copy

import pytest
import torch

from lab.reference_odconv import ReferenceODConv2d, UnsupportedReferenceLayerError, use_reference_formulation
from helpers.layer_forms import INPUT_SHAPE, converted_forms_net, strict_fp32
from odconv_surgery import ODConv2d, apply_odconv

DEVICES = [
    pytest.param("cpu", id="cpu"),
    pytest.param("cuda", id="cuda", marks=[pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]),
]


def _tolerance(device: str) -> dict:
    return dict(atol=1e-5, rtol=1e-5) if device == "cpu" else dict(atol=1e-4, rtol=1e-4)  # other conv algorithms


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kernel_num", [1, 4])
def test_reference_formulation_equals_our_layers(device, kernel_num):
    with strict_fp32():
        _check_reference_equals_ours(device, kernel_num)


def _check_reference_equals_ours(device, kernel_num):
    ours = converted_forms_net(kernel_num).to(device)
    reference = copy.deepcopy(ours)
    layers = [m for m in reference.modules() if isinstance(m, ODConv2d)]
    assert use_reference_formulation(reference) == len(layers) == 5
    assert [type(m.layer) for m in reference.modules() if isinstance(m, ReferenceODConv2d)] == [ODConv2d] * 5

    ours.eval(), reference.eval()
    for batch in (1, 3):
        x = torch.randn(batch, *INPUT_SHAPE, device=device)
        with torch.no_grad():
            torch.testing.assert_close(reference(x), ours(x), **_tolerance(device))

    ours.train(), reference.train()
    x = torch.randn(3, *INPUT_SHAPE, device=device)
    torch.testing.assert_close(reference(x), ours(x), **_tolerance(device))
    ours(x).square().sum().backward()
    reference(x).square().sum().backward()
    # fp32 reassociation (the attention products in another order), amplified by train-mode BatchNorm on 3 samples:
    # compare at 1e-3 of the largest gradient (a wrong formulation differs at order 1; a conv bias before a
    # BatchNorm has a gradient that is zero up to rounding)
    scale = max(p.grad.abs().max().item() for p in ours.parameters())
    for (name, got), want in zip(reference.named_parameters(), ours.parameters()):
        torch.testing.assert_close(got.grad, want.grad, atol=1e-3 * scale, rtol=1e-3, msg=name)


def test_reference_shares_the_layer_parameters():
    model = converted_forms_net(1)
    params = {id(p) for p in model.parameters()}
    use_reference_formulation(model)
    assert {id(p) for p in model.parameters()} == params
    with torch.no_grad():
        model.dense.layer.weight.zero_()  # an edit through the wrapper is the layer's
    assert not model.dense.layer.weight.any()


def test_unshared_attention_has_no_reference():
    model, _ = apply_odconv(torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.Conv2d(8, 8, 3)), "all",
                            kernel_num=2, share_attention=False)
    with pytest.raises(UnsupportedReferenceLayerError, match="share_attention=True"):
        use_reference_formulation(model)
