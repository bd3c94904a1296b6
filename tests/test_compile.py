"""torch.compile of a converted model: one graph (fullgraph=True, no graph breaks) in eval at batch 1 and 2 and in
training (forward and backward), with eager's outputs and gradients, over every forward form of ODConv2d."""

import copy

import pytest
import torch

from helpers.layer_forms import INPUT_SHAPE, converted_forms_net, spy_forms, strict_fp32

DEVICES = [
    pytest.param("cpu", "aot_eager", id="cpu-aot_eager"),
    pytest.param("cuda", "inductor", id="cuda-inductor", marks=[
        pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]),
]


def _tolerance(device: str) -> dict:
    return dict(atol=1e-5, rtol=1e-5) if device == "cpu" else dict(atol=1e-4, rtol=1e-4)  # inductor fuses


@pytest.mark.parametrize("device,backend", DEVICES)
@pytest.mark.parametrize("kernel_num", [1, 4])
def test_converted_model_compiles_to_one_graph(device, backend, kernel_num):
    with strict_fp32():
        _check_compiles_to_one_graph(device, backend, kernel_num)


def _check_compiles_to_one_graph(device, backend, kernel_num):
    torch._dynamo.reset()
    model = converted_forms_net(kernel_num).to(device)
    eager = copy.deepcopy(model)
    compiled = torch.compile(model, backend=backend, fullgraph=True)  # a graph break raises
    forms = set()

    model.eval(), eager.eval()
    for batch in (1, 2):  # batch 2 recompiles with a dynamic batch size: the form choices stay traceable
        x = torch.randn(batch, *INPUT_SHAPE, device=device)
        with torch.no_grad(), spy_forms() as seen:
            expected = eager(x)
        forms |= seen
        with torch.no_grad():
            torch.testing.assert_close(compiled(x), expected, **_tolerance(device))

    model.train(), eager.train()
    x = torch.randn(4, *INPUT_SHAPE, device=device)
    with spy_forms() as seen:
        eager(x).square().mean().backward()
    forms |= seen
    compiled(x).square().mean().backward()
    for (name, got), want in zip(model.named_parameters(), eager.parameters()):
        assert got.grad is not None, name
        torch.testing.assert_close(got.grad, want.grad, **_tolerance(device), msg=name)

    expected_forms = {"tap_sum", "pointwise", "kernel_side", "per_sample_kernel"} if kernel_num == 1 else {"kernel_side", "per_sample_kernel"}
    assert forms == expected_forms
