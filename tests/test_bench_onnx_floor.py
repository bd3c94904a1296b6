"""benchmarks/bench_onnx_floor.py: the floor models are the static model plus exactly the side work they claim."""

import onnx
import pytest
import torch

from bench_onnx_floor import attention_branch, floor_models, main
from odconv_surgery.deploy.export import export_onnx
from odconv_surgery.nn import ODConv2d
from odconv_surgery.surgery import apply_odconv
from lab.paper import static_model


@pytest.fixture(scope="module")
def models():
    static = static_model("mobilenet_v2_0.5")
    converted, _ = apply_odconv(static, policy="last:6")
    return static, converted.eval()


def test_floor_models_keep_the_static_output_and_add_one_branch_per_layer(models):
    static, converted = models
    layers = [m for m in converted.modules() if isinstance(m, ODConv2d)]
    x = torch.randn(2, 3, 64, 64)
    floors = floor_models(static, converted)
    with torch.no_grad():
        expected = static(x)
        y_pool, pooled = floors["+pool"](x)
        y_att, attentions = floors["+attention"](x)
    torch.testing.assert_close(y_pool, expected, rtol=0, atol=0)
    torch.testing.assert_close(y_att, expected, rtol=0, atol=0)
    assert pooled.shape == (2, sum(m.in_channels for m in layers))
    widths = [attention_branch(m)[-2].out_features for m in layers]
    assert attentions.shape == (2, sum(widths))
    assert ((attentions > 0) & (attentions < 1)).all()
    # heads: channel + filter (+ spatial for k x k; depthwise has no filter head)
    for m, width in zip(layers, widths):
        k2 = m.kernel_size[0] * m.kernel_size[1]
        assert width == m.in_channels + (0 if m.groups == m.in_channels else m.out_channels) + (k2 if k2 > 1 else 0)
    proto = export_onnx(floors["+pool"], None, x[:1], check=False)
    assert sum(n.op_type == "GlobalAveragePool" for n in proto.graph.node) == len(layers) + 1  # + the classifier's
    assert len(proto.graph.output) == 2
    onnx.checker.check_model(proto)


def test_static_model_is_left_untouched(models):
    static, converted = models
    floor_models(static, converted)
    assert not any(m._forward_pre_hooks for m in static.modules())


def test_main_writes_the_table(tmp_path, capsys):
    md = tmp_path / "floor.md"
    argv = ["--cases", "mobilenet_v2_0.5:last:6", "--input-size", "32", "--rounds", "1", "--repeats", "1",
            "--allow-busy", "--md", str(md)]
    assert main(argv) == 0
    text = md.read_text()
    assert "| mobilenet_v2_0.5 | last:6 |" in text and "1.54 |" in text  # the paper's ratio beside ours
    assert "load average" in text


def test_main_refuses_a_case_without_a_policy():
    with pytest.raises(SystemExit, match="^2$"):  # argparse usage error
        main(["--cases", "resnet18", "--allow-busy"])
