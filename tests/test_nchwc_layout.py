"""The NCHWc layouts our ort-cpu lowering writes, checked in numpy for every block onnxruntime uses (8 on AVX2,
16 on AVX-512), so the block-16 layout and the channel padding are tested on any machine; and, at this machine's
block, that layers whose channels are not block multiples stay in the blocked chain."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from odconv_surgery import ODConv2d, check_parity
from odconv_surgery.deploy.export import export_onnx
from odconv_surgery.passes.onnx.common import detect_nchwc_block
from odconv_surgery.passes.onnx.lowering.nchwc_layout import block_static_conv, nchwc_ok, padded

from helpers.onnx_models import randomise


def unblock_dense(wb: np.ndarray, cout_p: int, cin_p: int, blk: int) -> np.ndarray:
    """onnxruntime's dense NCHWc filter layout OIHWBiBo read back as OIHW (the reference definition)."""
    kh, kw = wb.shape[2:]
    return wb.reshape(cout_p // blk, cin_p // blk, kh, kw, blk, blk).transpose(0, 5, 1, 4, 2, 3).reshape(cout_p, cin_p, kh, kw)


def unblock_depthwise(wb: np.ndarray, c_p: int, blk: int) -> np.ndarray:
    """onnxruntime's depthwise NCHWc filter layout OIHWBo read back as OIHW."""
    kh, kw = wb.shape[2:]
    return wb.reshape(c_p // blk, kh, kw, blk).transpose(0, 3, 1, 2).reshape(c_p, 1, kh, kw)


def _static_conv_graph(cout: int, cin: int, group: int, k: int = 3) -> tuple[gs.Graph, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    w = rng.standard_normal((cout, cin // group, k, k)).astype(np.float32)
    b = rng.standard_normal(cout).astype(np.float32)
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], name="conv", pads=[1, 1, 1, 1], group=group)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, cin, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, cout, 8, 8])],
                              [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    return gs.import_onnx(helper.make_model(graph)), w, b


@pytest.mark.parametrize("blk", [8, 16])
@pytest.mark.parametrize("cout,cin,group", [(24, 8, 1), (12, 20, 1), (32, 16, 1), (12, 12, 12), (8, 8, 8), (48, 48, 48)])
def test_static_conv_blocked_layout_is_the_zero_padded_kernel(blk, cout, cin, group):
    g, w, b = _static_conv_graph(cout, cin, group)
    assert block_static_conv(g, g.nodes[0], blk)
    conv = next(n for n in g.nodes if n.op == "Conv" and n.domain == "com.microsoft.nchwc")
    wb, bb = conv.inputs[1].values, conv.inputs[2].values
    cout_p = padded(cout, blk)
    reorder_out = next(n for n in g.nodes if n.op == "ReorderOutput")
    assert reorder_out.attrs["channels"] == cout  # the padding is dropped on the way out
    np.testing.assert_array_equal(bb, np.pad(b, (0, cout_p - cout)))
    if group == 1:
        cin_p = padded(cin, blk)
        assert wb.shape == (cout_p, cin_p, 3, 3)
        np.testing.assert_array_equal(unblock_dense(wb, cout_p, cin_p, blk), np.pad(w, ((0, cout_p - cout), (0, cin_p - cin), (0, 0), (0, 0))))
    else:
        assert conv.attrs["group"] == cout_p and wb.shape == (cout_p, 1, 3, 3)
        np.testing.assert_array_equal(unblock_depthwise(wb, cout_p, blk), np.pad(w, ((0, cout_p - cout), (0, 0), (0, 0), (0, 0))))


@pytest.mark.parametrize("cout,cin,group", [(6, 8, 1), (8, 18, 1), (10, 10, 10), (16, 16, 4)])
def test_static_conv_left_alone_where_reorder_cannot_pad(cout, cin, group):
    """onnxruntime's ReorderInput takes multiples of 4 channels only (an input narrower than the block is read as
    NCHW, below); grouped (non-depthwise) convs have no NCHWc form."""
    g, _, _ = _static_conv_graph(cout, cin, group)
    assert not block_static_conv(g, g.nodes[0], 16)


@pytest.mark.parametrize("blk", [8, 16])
@pytest.mark.parametrize("cout,cin", [(24, 3), (16, 6)])
def test_stem_conv_reads_its_nchw_input(blk, cout, cin):
    """An RGB stem (input channels under the block, not a multiple of 4) becomes an NCHWc Conv on its NCHW input,
    kernel in the OIHWBo layout, as onnxruntime's transformer makes it: no ReorderInput, so the chain starts there."""
    g, w, b = _static_conv_graph(cout, cin, 1)
    plain = gs.export_onnx(g.copy())
    assert block_static_conv(g, g.nodes[0], blk)
    assert not any(n.op == "ReorderInput" for n in g.nodes)
    conv = next(n for n in g.nodes if n.op == "Conv" and n.domain == "com.microsoft.nchwc")
    wb, cout_p = conv.inputs[1].values, padded(cout, blk)
    assert conv.inputs[0].name == "x" and wb.shape == (cout_p, cin, 3, 3)
    unblocked = wb.reshape(cout_p // blk, cin, 3, 3, blk).transpose(0, 4, 1, 2, 3).reshape(cout_p, cin, 3, 3)
    np.testing.assert_array_equal(unblocked, np.pad(w, ((0, cout_p - cout), (0, 0), (0, 0), (0, 0))))
    if blk == detect_nchwc_block():
        import onnxruntime as ort

        x = np.random.default_rng(1).standard_normal((1, cin, 8, 8)).astype(np.float32)
        blocked = gs.export_onnx(g.cleanup().toposort())
        run = [ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
               for m in (plain, blocked)]
        np.testing.assert_allclose(run[1], run[0], rtol=1e-4, atol=1e-4)


class Unaligned(nn.Module):
    """ODConv layers of every NCHWc kind whose channels (4, 12, 20) are multiples of neither block, between a stem
    and a residual add, as mobilenet_v2 0.5's 8-channel layers are at block 16."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 12, 3, padding=1)
        self.pw = ODConv2d(12, 20, 1)
        self.dw = ODConv2d(20, 20, 3, padding=1, groups=20)
        self.dense = ODConv2d(20, 12, 3, padding=1, kernel_num=2)
        self.narrow = ODConv2d(12, 4, 1)
        self.head = nn.Conv2d(4, 12, 1)

    def forward(self, x):
        s = torch.relu(self.stem(x))
        y = torch.clamp(self.dw(torch.relu(self.pw(s))), 0, 6)
        y = torch.relu(self.dense(y) + s)
        return self.head(self.narrow(y))


def test_unaligned_channels_stay_in_the_blocked_chain():
    from odconv_surgery.passes.onnx.common import detect_nchwc_block

    blk = detect_nchwc_block()
    if blk is None:
        pytest.skip("onnxruntime NCHWc contrib ops not usable here")
    torch.manual_seed(0)
    model = randomise(Unaligned(), scale=0.5)
    x = torch.randn(1, 3, 16, 16)
    layers = [m for m in model.modules() if isinstance(m, ODConv2d)]
    assert all(m.in_channels % blk or m.out_channels % blk for m in layers)
    proto = export_onnx(model, None, x, target="ort-cpu")
    check_parity(model, proto, x, batches=(1, 3))
    then = next(a.g for n in proto.graph.node if n.op_type == "If" for a in n.attribute if a.name == "then_branch")
    ops = [n.op_type for n in then.node]
    assert not [n.name for n in then.node if n.op_type == "Conv" and not n.domain]  # every conv is an NCHWc Conv
    reorders = [n.op_type for n in then.node if n.op_type.startswith("Reorder") and "nchwc_guard" not in n.name]
    assert reorders == ["ReorderOutput"], reorders  # the 3-channel stem reads the NCHW input; out once
    prod = {o: n for n in then.node for o in n.output}
    relu_on = {prod[n.input[0]].op_type for n in then.node if n.op_type == "Relu"}
    assert "Add" not in ops and "Clip" not in ops and relu_on <= {"Gemm", "Conv"}, relu_on  # fused into the convs


def test_nchwc_ok_needs_channels_reorder_can_pad():
    from odconv_surgery.passes.onnx.common import OdLayer

    def layer(cin, cout, groups=1, k=1):
        node = gs.Node("ODConv", "l", {"kernel_shape": [k, k], "group": groups, "in_channels": cin, "out_channels": cout})
        return OdLayer(node)

    assert nchwc_ok(layer(8, 12), 16) and nchwc_ok(layer(12, 12, 12, 3), 16)
    assert not nchwc_ok(layer(6, 16), 16) and not nchwc_ok(layer(16, 10), 8) and not nchwc_ok(layer(16, 16, 4, 3), 16)
    assert not nchwc_ok(layer(16, 16), None)
