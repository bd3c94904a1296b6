"""One training step of a converted model under bf16 autocast: finite loss, the layers compute in bf16, and
gradients reach the kernel bank and every attention head, over every forward form of ODConv2d."""

import pytest
import torch
from torch import nn

from helpers.layer_forms import INPUT_SHAPE, converted_forms_net, spy_forms
from odconv_surgery import ODConv2d

DEVICES = [
    "cpu",
    pytest.param("cuda", marks=[pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kernel_num", [1, 4])
def test_bf16_autocast_training_step(device, kernel_num):
    model = converted_forms_net(kernel_num).to(device).train()
    layers = {name: m for name, m in model.named_modules() if isinstance(m, ODConv2d)}
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    out_dtypes = {}
    hooks = [m.register_forward_hook(lambda m, i, o, name=name: out_dtypes.__setitem__(name, o.dtype)) for name, m in layers.items()]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randn(4, *INPUT_SHAPE, device=device)
    target = torch.randint(0, 10, (4,), device=device)

    with spy_forms() as forms, torch.autocast(device, dtype=torch.bfloat16):
        loss = nn.functional.cross_entropy(model(x), target)
    loss.backward()
    optimizer.step()
    for hook in hooks:
        hook.remove()

    assert torch.isfinite(loss)
    assert set(out_dtypes.values()) == {torch.bfloat16}, out_dtypes  # autocast reached every converted layer
    assert "tap_sum" in forms if kernel_num == 1 else "tap_sum" not in forms
    for name, layer in layers.items():
        grads = {"weight": layer.weight.grad, **{f"attention.{head}": fc.weight.grad for head, fc in layer.attention.heads().items()}}
        for part, grad in grads.items():
            assert grad is not None and grad.dtype == torch.float32, f"{name}.{part}"
            assert torch.isfinite(grad).all() and grad.abs().sum() > 0, f"{name}.{part}"
    changed = [name for name, p in model.named_parameters() if not torch.equal(p.detach(), before[name])]
    assert any(name.endswith(".weight") and "attention" not in name for name in changed) and any("attention" in n for n in changed)
