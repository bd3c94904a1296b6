"""ODConv2d against a direct, per-sample implementation of the paper's Eq. 2."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from helpers.randomise import randomise_attention
from odconv_surgery import BatchOneBatchNormError, ODConv2d


def paper_formula(layer: ODConv2d, x: torch.Tensor) -> torch.Tensor:
    """y_b = (sum_i a_w * a_f * a_c * a_s * W_i) * x_b, one plain conv per sample."""
    att = layer.attention(x)
    n, cout, cin_g, kh, kw = layer.weight.shape
    g = layer.groups
    outs = []
    for b in range(x.shape[0]):
        if layer.share_attention:
            a_c = att.channel[b].view(1, -1).expand(n, -1)  # (n, C_in)
            a_f = torch.ones(n, cout) if att.filter is None else att.filter[b].view(1, -1).expand(n, -1)
            a_s = torch.ones(n, kh, kw) if att.spatial is None else att.spatial[b].view(1, kh, kw).expand(n, -1, -1)
        else:
            a_c = att.channel[b]
            a_f = torch.ones(n, cout) if att.filter is None else att.filter[b]
            a_s = torch.ones(n, kh, kw) if att.spatial is None else att.spatial[b].view(n, kh, kw)
        a_w = torch.ones(n) if att.kernel is None else att.kernel[b].view(n)
        w = torch.zeros(cout, cin_g, kh, kw)
        for i in range(n):
            # channel attention of output channel o's group: input channels [grp*cin_g, (grp+1)*cin_g)
            a_c_grouped = a_c[i].view(g, cin_g).repeat_interleave(cout // g, dim=0)  # (C_out, cin_g)
            w = w + a_w[i] * a_f[i].view(-1, 1, 1, 1) * a_c_grouped.view(cout, cin_g, 1, 1) * a_s[i].view(1, 1, kh, kw) * layer.weight[i]
        xb = x[b : b + 1]
        if layer.padding_mode != "zeros":
            xb = F.pad(xb, layer._padding_for_pad, mode=layer.padding_mode)
            y = F.conv2d(xb, w, layer.bias, layer.stride, 0, layer.dilation, g)
        else:
            y = F.conv2d(xb, w, layer.bias, layer.stride, layer.padding, layer.dilation, g)
        outs.append(y)
    return torch.cat(outs)


CASES = [
    dict(cin=8, cout=16, k=3),
    dict(cin=8, cout=16, k=3, groups=4),
    dict(cin=16, cout=16, k=3, groups=16),  # depthwise: no filter attention
    dict(cin=8, cout=12, k=3, stride=2, padding=1),
    dict(cin=8, cout=8, k=3, dilation=2, padding=2),
    dict(cin=8, cout=8, k=(1, 7), padding=(0, 3)),
    dict(cin=8, cout=8, k=(7, 1), padding=(3, 0), bias=True),
    dict(cin=8, cout=16, k=1),  # 1x1: no spatial attention
    dict(cin=8, cout=8, k=3, padding="same"),
    dict(cin=8, cout=8, k=3, padding=1, padding_mode="reflect"),
    dict(cin=8, cout=8, k=3, padding=1, padding_mode="circular", bias=True),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()))
@pytest.mark.parametrize("n", [1, 4])
@pytest.mark.parametrize("batch", [1, 5])
def test_matches_paper_formula(case, n, batch):
    case = dict(case)
    layer = ODConv2d(
        case.pop("cin"), case.pop("cout"), case.pop("k"), kernel_num=n, **case
    ).eval()
    randomise_attention(layer)
    with torch.no_grad():
        layer.attention.norm.running_mean.normal_()
        layer.attention.norm.running_var.uniform_(0.5, 2)
        if layer.bias is not None:
            layer.bias.normal_()
    x = torch.randn(batch, layer.in_channels, 11, 10)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), paper_formula(layer, x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("groups", [1, 2])
def test_unshared_attention_matches_formula(groups):
    layer = ODConv2d(8, 8, 3, padding=1, groups=groups, kernel_num=3, share_attention=False).eval()
    randomise_attention(layer)
    x = torch.randn(3, 8, 9, 9)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), paper_formula(layer, x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("case", CASES, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()))
@pytest.mark.parametrize("share", [True, False])
@pytest.mark.parametrize("training", [False, True])
def test_empty_batch_matches_conv2d(case, share, training):
    """RoI heads see N = 0 when no box survives: the output is nn.Conv2d's empty shape, backward works."""
    case = dict(case)
    cin, cout, k = case.pop("cin"), case.pop("cout"), case.pop("k")
    layer = ODConv2d(cin, cout, k, kernel_num=2, share_attention=share, **case).train(training)
    conv = nn.Conv2d(cin, cout, k, **case)
    x = torch.randn(0, cin, 11, 10, requires_grad=True)
    out = layer(x)
    assert out.shape == conv(x).shape and out.shape[0] == 0
    out.sum().backward()
    assert x.grad is not None and x.grad.shape == x.shape
    for name, p in layer.named_parameters():
        assert p.grad is not None and not p.grad.any(), name  # defined and zero, as nn.Conv2d's weight gets


def test_heads_follow_layer_kind():
    heads = lambda **kw: sorted(ODConv2d(**kw).attention.heads())  # noqa: E731
    assert heads(in_channels=8, out_channels=8, kernel_size=3, kernel_num=4) == ["channel", "filter", "kernel", "spatial"]
    assert heads(in_channels=8, out_channels=8, kernel_size=3, groups=8) == ["channel", "spatial"]
    assert heads(in_channels=8, out_channels=16, kernel_size=1) == ["channel", "filter"]
    assert ODConv2d(64, 64, 3).attention.hidden_channels == 16  # max(int(64/16), 16)
    assert ODConv2d(1024, 64, 3).attention.hidden_channels == 64


@pytest.mark.parametrize("kw", [dict(k=3, n=1), dict(k=3, n=4), dict(k=1, n=1), dict(k=3, groups=16, n=1), dict(k=5, groups=4, n=2, bias=True)])
def test_from_conv_is_function_preserving_and_trainable(kw):
    conv = nn.Conv2d(16, 16, kw["k"], padding=kw["k"] // 2, groups=kw.get("groups", 1), bias=kw.get("bias", False)).eval()
    layer = ODConv2d.from_conv(conv, kernel_num=kw["n"]).eval()
    x = torch.randn(3, 16, 12, 12)
    with torch.no_grad():
        ref = conv(x)
        assert (layer(x) - ref).abs().max() <= 1e-4 * ref.abs().max()
    layer.train()
    layer(torch.randn(4, 16, 12, 12)).square().mean().backward()
    no_grad = [name for name, p in layer.named_parameters() if p.grad is None or not p.grad.abs().gt(0).any()]
    assert no_grad == []
    if kw["n"] > 1:  # the kernels are not identical copies, so they can diverge
        assert not torch.equal(layer.weight[0], layer.weight[1])


def test_scratch_init_is_kaiming_fan_out():
    layer = ODConv2d(64, 128, 3, kernel_num=2)
    std = layer.weight[0].std().item()
    expected = (2 / (128 * 9)) ** 0.5
    assert abs(std - expected) / expected < 0.1
    assert torch.count_nonzero(layer.attention.channel_fc.bias) == 0


def test_batch_one_training_with_bn_attention_names_the_fix():
    layer = ODConv2d(8, 8, 3).train()
    with pytest.raises(BatchOneBatchNormError, match="attention_norm='ln'"):
        layer(torch.randn(1, 8, 5, 5))
    ln = ODConv2d(8, 8, 3, attention_norm="ln").train()
    ln(torch.randn(1, 8, 5, 5)).sum().backward()
    layer.eval()(torch.randn(1, 8, 5, 5))


def test_channels_last_and_autocast():
    layer = ODConv2d(8, 16, 3, padding=1, kernel_num=2).eval()
    randomise_attention(layer)
    x = torch.randn(2, 8, 10, 10)
    with torch.no_grad():
        ref = layer(x)
        torch.testing.assert_close(layer(x.to(memory_format=torch.channels_last)), ref, atol=1e-5, rtol=1e-5)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = layer(x)
    assert y.shape == ref.shape
    assert (y.float() - ref).abs().max() < 0.1 * ref.abs().max()


def test_torch_compile():
    layer = ODConv2d(8, 8, 3, padding=1, kernel_num=2).eval()
    randomise_attention(layer)
    x = torch.randn(2, 8, 8, 8)
    compiled = torch.compile(layer, backend="aot_eager")
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), layer(x), atol=1e-5, rtol=1e-5)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    layer = ODConv2d(8, 8, 3, padding=1, kernel_num=4).eval()
    randomise_attention(layer)
    x = torch.randn(3, 8, 9, 9)
    with torch.no_grad():
        ref = layer(x)
        out = layer.cuda()(x.cuda()).cpu()
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)


def test_bad_arguments_name_the_fix():
    with pytest.raises(ValueError, match="divisible by groups"):
        ODConv2d(6, 8, 3, groups=4)
    with pytest.raises(ValueError, match="attention_norm"):
        ODConv2d(8, 8, 3, attention_norm="batch")
    with pytest.raises(ValueError, match="4-D"):
        ODConv2d(8, 8, 3)(torch.randn(8, 5, 5))
    with pytest.raises(TypeError, match="nn.Conv2d"):
        ODConv2d.from_conv(nn.Conv1d(4, 4, 3))


def test_neutral_init_is_gain_times_static_and_keeps_kernel_scale():
    conv = nn.Conv2d(16, 16, 3, padding=1, bias=False).eval()
    layer = ODConv2d.from_conv(conv, init="neutral").eval()
    torch.testing.assert_close(layer.weight[0], conv.weight)
    x = torch.randn(2, 16, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), layer.attention_gain() * conv(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("n", [1, 4])
def test_pretrained_init_keeps_the_trained_kernels_and_their_gradient(n):
    """The bank stays at the trained kernels' scale (a fixed kernel_scale carries 1/gain), so at conversion the
    kernels receive the static conv's gradient: fine-tuning starts with the original layer's learning dynamics."""
    conv = nn.Conv2d(16, 24, 3, padding=1, bias=False)
    layer = ODConv2d.from_conv(conv, kernel_num=n).train()
    torch.testing.assert_close(layer.weight.mean(dim=0), conv.weight.detach(), atol=1e-6, rtol=1e-6)
    assert layer.kernel_scale.item() == pytest.approx(1 / layer.attention_gain())
    x = torch.randn(4, 16, 10, 10)
    target = torch.randn(4, 24, 10, 10)
    (conv(x) - target).square().mean().backward()
    (layer(x) - target).square().mean().backward()
    torch.testing.assert_close(layer.weight.grad.sum(dim=0), conv.weight.grad, atol=1e-6, rtol=1e-4)
    assert not layer.kernel_scale.requires_grad and "kernel_scale" not in dict(layer.named_parameters())


def test_checkpoint_without_kernel_scale_loads_as_scale_one():
    """State dicts written before kernel_scale existed hold the bank already divided by the gain."""
    layer = ODConv2d.from_conv(nn.Conv2d(8, 8, 3, padding=1)).eval()
    old_style = {k: v for k, v in layer.state_dict().items() if k != "kernel_scale"}
    old_style["weight"] = layer.weight.detach() * layer.kernel_scale
    fresh = ODConv2d(8, 8, 3, padding=1, bias=True).eval()
    fresh.load_state_dict(old_style)
    x = torch.randn(2, 8, 6, 6)
    with torch.no_grad():
        assert fresh.kernel_scale.item() == 1.0
        torch.testing.assert_close(fresh(x), layer(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_conversion_is_deterministic_across_dtypes(dtype):
    conv = nn.Conv2d(16, 16, 3, padding=1)
    ref = ODConv2d.from_conv(conv, kernel_num=2, generator=torch.Generator().manual_seed(3))
    low = ODConv2d.from_conv(conv.to(dtype), kernel_num=2, generator=torch.Generator().manual_seed(3))
    assert low.weight.dtype == dtype and low.kernel_scale.dtype == dtype
    for (name, a), (_, b) in zip(ref.state_dict().items(), low.state_dict().items()):
        torch.testing.assert_close(b, a.to(b.dtype), msg=name)  # equal up to the low dtype's rounding


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_conversion_matches_cpu_conversion():
    conv = nn.Conv2d(16, 16, 3, padding=1)
    cpu = ODConv2d.from_conv(conv, kernel_num=4, generator=torch.Generator().manual_seed(0))
    gpu = ODConv2d.from_conv(conv.cuda(), kernel_num=4, generator=torch.Generator().manual_seed(0))
    assert gpu.weight.device.type == "cuda"
    for (name, a), (_, b) in zip(cpu.state_dict().items(), gpu.state_dict().items()):
        torch.testing.assert_close(b.cpu(), a, msg=name)


def test_scratch_init_is_seeded_by_the_generator():
    conv = nn.Conv2d(16, 16, 3, padding=1, bias=True)
    a = ODConv2d.from_conv(conv, init="scratch", kernel_num=2, generator=torch.Generator().manual_seed(7))
    b = ODConv2d.from_conv(conv, init="scratch", kernel_num=2, generator=torch.Generator().manual_seed(7))
    c = ODConv2d.from_conv(conv, init="scratch", kernel_num=2, generator=torch.Generator().manual_seed(8))
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert not torch.equal(a.weight, c.weight) and a.kernel_scale.item() == 1.0


@pytest.mark.parametrize("case", CASES, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()))
def test_tap_sum_form_matches_paper_formula_and_gradients(case, monkeypatch):
    """The tap-sum form (static 1x1 convs per kernel tap, outputs scaled by the spatial attention) computes the
    same outputs and gradients as the per-sample-kernel form, wherever it applies (n = 1, dense, zero padding)."""
    case = dict(case)
    layer = ODConv2d(case.pop("cin"), case.pop("cout"), case.pop("k"), kernel_num=1, **case).eval()
    eligible = layer.groups == 1 and layer.attention.spatial_fc is not None and layer.padding_mode == "zeros"
    if not eligible:
        pytest.skip("tap-sum form does not apply")
    randomise_attention(layer)
    x = torch.randn(3, layer.in_channels, 11, 10, requires_grad=True)
    monkeypatch.setattr(ODConv2d, "_use_tap_sum", lambda self, x: False)
    reference = layer(x)
    reference.square().sum().backward()
    grads = [p.grad.clone() for p in layer.parameters()] + [x.grad.clone()]
    layer.zero_grad(); x.grad = None
    monkeypatch.setattr(ODConv2d, "_use_tap_sum", lambda self, x: True)
    out = layer(x)
    with torch.no_grad():
        torch.testing.assert_close(out, paper_formula(layer, x), atol=1e-5, rtol=1e-5)
    out.square().sum().backward()
    for got, want in zip([p.grad for p in layer.parameters()] + [x.grad], grads):
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_tap_sum_is_chosen_for_deep_layers_in_batch_training_only():
    deep = ODConv2d(256, 256, 3, padding=1)
    assert deep._use_tap_sum(torch.empty(32, 256, 7, 7))  # B x |W| = 18.9M vs 9 x 32 x 512 x 49 = 7.2M
    assert not deep._use_tap_sum(torch.empty(1, 256, 7, 7))  # batch 1: the per-sample kernel is one plain conv
    assert not deep._use_tap_sum(torch.empty(4, 256, 56, 56))  # early layers: the kernels are the smaller
    assert not ODConv2d(256, 256, 3, padding=1, kernel_num=4)._use_tap_sum(torch.empty(32, 256, 7, 7))
    assert not ODConv2d(256, 256, 3, padding=1, groups=256)._use_tap_sum(torch.empty(32, 256, 7, 7))
