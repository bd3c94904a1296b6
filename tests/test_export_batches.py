"""The export check runs every branch the file has (issue 22, items 1, 3 and 14): batch 1 (the ``If``'s batch-1
branch), a batch > 1 and batch 0 for a dynamic batch; only its batch for a static one. A conv that runs on another
batch than the input (window attention) gets the any-batch form; a model whose own graph fixes the batch is told so."""

import onnx
import pytest
import torch
from torch import nn

from odconv_surgery import apply_odconv
from odconv_surgery.deploy.export import export_marked, export_onnx
from odconv_surgery.deploy.runtime import OrtRunner, check_parity
from odconv_surgery.deploy.schema import META_OTHER_BATCH, metadata
from odconv_surgery.errors import ParityError, PassNumericsError, StaticBatchGraphError
from odconv_surgery.passes.onnx import run_pipeline


class WindowConv(nn.Module):
    """timm efficientvit's pattern: the feature map cut into 2x2 windows folded into the batch, a conv on those."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.win = nn.Conv2d(16, 16, 3, padding=1)
        self.head = nn.Conv2d(16, 8, 1)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        b, c, h, w = x.shape
        win = x.reshape(b, c, 2, h // 2, 2, w // 2).permute(0, 2, 4, 1, 3, 5).reshape(b * 4, c, h // 2, w // 2)
        win = torch.relu(self.win(win))
        return self.head(win.reshape(b, 2, 2, c, h // 2, w // 2).permute(0, 3, 1, 4, 2, 5).reshape(b, c, h, w))


def window_model() -> nn.Module:
    torch.manual_seed(0)
    model, _ = apply_odconv(WindowConv(), "all", kernel_num=2)
    return model.eval()


@pytest.mark.parametrize("target", ["portable", "auto"])
def test_conv_on_another_batch_exports_and_runs_at_batch_1(target):
    model, x = window_model(), torch.randn(2, 3, 8, 8)
    proto = export_onnx(model, None, x, target=target)
    assert "win" in metadata(proto)[META_OTHER_BATCH]
    check_parity(model, proto, x, batches=(1, 3))


def test_check_runs_the_batch1_branch():
    """Without the exporter's note the batch-1 branch breaks at batch 1; the check runs it and names the pass."""
    model, x = window_model(), torch.randn(2, 3, 8, 8)
    marked = export_marked(model, x)
    kept = [p for p in marked.metadata_props if p.key != META_OTHER_BATCH]
    del marked.metadata_props[:]
    marked.metadata_props.extend(kept)
    with pytest.raises(PassNumericsError, match="lower_by_batch_regime.*does not run at batch 1"):
        run_pipeline(marked, check_input=x.numpy(), check_batches=(1, 2), target="portable")


@pytest.mark.parametrize("batch", [1, 3])
def test_static_batch_export(batch):
    model, x = window_model(), torch.randn(batch, 3, 8, 8)
    proto = export_onnx(model, None, x, dynamic_batch=False)
    assert [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim][0] == batch
    check_parity(model, proto, x, batches=(batch,))


class FixedBatch(nn.Module):
    """A model whose traced graph fixes the batch: eager runs any batch, but ``int(x.shape[0])`` is a constant in
    the exported graph, so its Reshape takes the example's batch only."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)

    def forward(self, x):
        y = self.conv2(torch.relu(self.conv(x)))
        return y.reshape(int(y.shape[0]), 8, 64).mean(-1)


@pytest.mark.filterwarnings("ignore:Converting a tensor to a Python integer", "ignore:torch.fx could not trace")
def test_model_fixing_the_batch_is_told_so(capfd):
    model, _ = apply_odconv(FixedBatch().eval(), "all", example_inputs=torch.randn(1, 3, 8, 8))
    x = torch.randn(1, 3, 8, 8)
    with pytest.raises(StaticBatchGraphError, match=r"runs at batch 1 but not at batch 2.*dynamic_batch=False"):
        export_onnx(model, None, x)
    assert "onnxruntime" not in capfd.readouterr().err  # no raw log lines from the runtime
    check_parity(model, export_onnx(model, None, x, dynamic_batch=False), x, batches=(1,))
    # portable: the ort-cpu file runs its batch-1 graph per sample, where the fixed reshape happens to hold
    with pytest.raises(ParityError, match="does not run at batch 2.*dynamic_batch=False"):
        check_parity(model, export_onnx(model, None, x, check=False, target="portable"), x, batches=(2,))
    assert "onnxruntime" not in capfd.readouterr().err


class ConstantBatchConv(nn.Module):
    """A conv whose batch is 2 whatever the input's: at an example batch of 2 nothing tells it apart."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.pair = nn.Conv2d(8, 8, 3, padding=1)

    def forward(self, x):
        y = torch.relu(self.stem(x))
        pair = self.pair(y.mean(0, keepdim=True).expand(2, -1, -1, -1))
        return y + pair.mean(0, keepdim=True)


def test_batch1_branch_failure_is_caught_with_the_way_out():
    torch.manual_seed(0)
    model, _ = apply_odconv(ConstantBatchConv().eval(), "all", kernel_num=2)
    x = torch.randn(2, 3, 8, 8)
    with pytest.raises(PassNumericsError, match=r"at batch 1.*batch1_branch=False"):
        export_onnx(model, None, x, target="portable")
    check_parity(model, export_onnx(model, None, x, batch1_branch=False), x, batches=(1, 3))


def _breaks_empty_batch(model):
    """A rewrite right at every batch but 0: ``out + 0 * TopK(out, k=1, axis=0)`` (TopK refuses k > the batch)."""
    import numpy as np
    import onnx_graphsurgeon as gs

    from odconv_surgery.passes.onnx.common import export_graph, import_graph

    graph = import_graph(model)
    out = graph.outputs[0]
    producer = out.inputs[0]
    mid, top, idx, zero = (gs.Variable(name, dtype=d) for name, d in
                           (("pre", out.dtype), ("top", out.dtype), ("top_i", np.int64), ("zero", out.dtype)))
    producer.outputs[producer.outputs.index(out)] = mid
    graph.nodes += [
        gs.Node("TopK", "breaker/TopK", {"axis": 0}, inputs=[mid, gs.Constant("k", np.array([1], np.int64))],
                outputs=[top, idx]),
        gs.Node("Mul", "breaker/Mul", inputs=[top, gs.Constant("nought", np.zeros((), np.float32))], outputs=[zero]),
        gs.Node("Add", "breaker/Add", inputs=[mid, zero], outputs=[out]),
    ]
    graph.cleanup().toposort()
    return export_graph(graph, model)


def test_check_runs_batch_0(monkeypatch):
    from odconv_surgery.passes.onnx.base import FunctionPass
    from odconv_surgery.passes.onnx.pipeline import REGISTRY

    torch.manual_seed(0)
    model, _ = apply_odconv(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1)), "all")
    monkeypatch.setitem(REGISTRY, "merge_attention_heads", FunctionPass("merge_attention_heads", _breaks_empty_batch))
    with pytest.raises(PassNumericsError, match="merge_attention_heads.*does not run at batch 0"):
        export_onnx(model.eval(), None, torch.randn(1, 3, 8, 8), target="portable")
