"""Export of every layer option and method preset (#18 item 4): each layer takes the marker path and is lowered by
the fused forms (the NCHWc ones on ort-cpu), never the generic one, and the file keeps PyTorch's function at
batches 0/1/3/8 on both targets; the pooling, the per-head activations, head merging, layers without heads and the
marker's checks are tested on their own."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from helpers.layer_forms import FormsNet
from helpers.nchwc_forms import force_nchwc_form
from helpers.onnx_models import TinyNet
from helpers.randomise import randomise_attention
from odconv_surgery import ODConv2d, apply_odconv, check_parity
from odconv_surgery.deploy.export import export_marked, export_onnx
from odconv_surgery.deploy.schema import META_FORMS, META_LAYERS, META_PASSES, NCHWC_DOMAIN, OD_DOMAIN, metadata
from odconv_surgery.errors import OnnxModelError
from odconv_surgery.methods import METHODS
from odconv_surgery.passes.onnx import run_pipeline
from odconv_surgery.passes.onnx.common import detect_nchwc_block, import_graph, odconv_layers
from odconv_surgery.passes.onnx.graph_walk import subgraphs
from odconv_surgery.passes.onnx.find_odconv import find_odconv
from odconv_surgery.passes.onnx.lowering.nchwc_layout import nchwc_ok, padded
from odconv_surgery.passes.onnx.lowering.builder import LOWERED_TAG, Builder
from odconv_surgery.passes.onnx.lowering.plan import NCHWC_FORMS, Planner, candidate_forms
from odconv_surgery.passes.onnx.lowering.tuning_cache import layer_signature
from odconv_surgery.passes.onnx.lowering.pooling import blocked_columns, pool_blocked, pool_nchw

#: Each option alone (kernel_num where the option needs kernels to act on). TinyNet's layers see 16 and 8 px, so
#: pool_size 2 pools by AveragePool everywhere and 3 by the pooling MatMuls everywhere.
OPTIONS = {
    "default": {},
    "kernel_num": dict(kernel_num=4),
    "no channel head": dict(attentions=("spatial", "filter", "kernel"), kernel_num=4),
    "channel only": dict(attentions=("channel",)),
    "filter only": dict(attentions=("filter",)),  # the depthwise layer has no head: a plain conv
    "spatial only": dict(attentions=("spatial",)),  # the 1x1 layers have no head
    "kernel only": dict(attentions=("kernel",), kernel_num=4),
    "softmax": dict(activation="softmax", kernel_num=4),
    "sigmoid kernel": dict(kernel_activation="sigmoid", kernel_num=4),
    "pool 2": dict(pool_size=2, kernel_num=4),
    "pool 3": dict(pool_size=3),
    "no trunk": dict(attention_trunk=False, kernel_num=4),
    "no trunk, pool 3, softmax": dict(attention_trunk=False, pool_size=3, activation="softmax"),
    "no temperature annealing": dict(temperature_annealing=False, kernel_num=4),
}
TARGETS = ["portable", "ort-cpu"]
BATCHES = (0, 1, 3, 8)


@pytest.fixture(scope="module")
def blk() -> int | None:
    return detect_nchwc_block()


def needs_target(target: str, blk: int | None) -> None:
    if target == "ort-cpu" and blk is None:
        pytest.skip("onnxruntime NCHWc contrib ops not usable here")


def every_node(proto: onnx.ModelProto) -> list[onnx.NodeProto]:
    return [node for graph in (proto.graph, *subgraphs(proto.graph)) for node in graph.node]


def odconv_names(model: nn.Module) -> list[str]:
    return [name for name, module in model.named_modules() if isinstance(module, ODConv2d)]


def export_fused(model: nn.Module, x: torch.Tensor, target: str, blk: int | None) -> onnx.ModelProto:
    """``model`` exported for ``target``, checked to have taken the marker path and the fused forms for every layer
    (ort-cpu: an NCHWc form wherever one can build the layer) and to keep PyTorch's function at ``BATCHES``."""
    proto = export_onnx(model, None, x, target=target, tune=False, check=False)
    meta = metadata(proto)
    names = odconv_names(model)
    assert json.loads(meta[META_LAYERS]) == names  # every layer marked: none took the generic form
    nodes = every_node(proto)
    assert not [node.name for node in nodes if node.domain == OD_DOMAIN]
    for name in names:
        assert any(f"{name}{LOWERED_TAG}" in node.name for node in nodes), f"{name}: no node of a lowered form"
    assert "lower_by_batch_regime" in meta[META_PASSES].split(",")
    if target == "ort-cpu":
        forms = json.loads(meta[META_FORMS])
        for layer in odconv_layers(import_graph(export_marked(model, x))):
            if nchwc_ok(layer, blk):
                assert forms[layer.name].split()[0] in ("kernel", "activations", "columns"), forms
    results = check_parity(model, proto, x, batches=BATCHES)
    assert [r.batch for r in results] == list(BATCHES)
    return proto


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("option", OPTIONS)
def test_every_option_exports_fused_with_parity(option, target, blk):
    needs_target(target, blk)
    settings = dict(OPTIONS[option])
    torch.manual_seed(0)
    model = TinyNet(settings.pop("kernel_num", 1), **settings).eval()
    randomise_attention(model)
    export_fused(model, torch.randn(1, 8, 16, 16), target, blk)


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("method", METHODS)
def test_every_method_exports_fused_with_parity(method, target, blk):
    needs_target(target, blk)
    # all_but_first: FormsNet has no blocks for CondConv's own placement; the preset's layer settings are what export sees.
    model, _ = apply_odconv(FormsNet(), "all_but_first", method=method, init="scratch", seed=0)
    randomise_attention(model)
    assert all(getattr(m, key) == value for m in model.modules() if isinstance(m, ODConv2d)
               for key, value in METHODS[method].settings.items())
    export_fused(model.eval(), torch.randn(1, 3, 8, 8), target, blk)


def test_the_export_check_passes_every_option_together():
    """The per-pass numeric check (the naive lowering of the markers as reference) on layers that mix the options."""
    torch.manual_seed(0)
    model = nn.Sequential(
        ODConv2d(8, 16, 3, padding=1, kernel_num=2, activation="softmax", pool_size=3), nn.ReLU(),
        ODConv2d(16, 16, 3, padding=1, groups=16, kernel_num=2, attention_trunk=False, kernel_activation="sigmoid"),
        ODConv2d(16, 24, 1, attentions=("filter", "kernel"), kernel_num=3, pool_size=2),
        ODConv2d(24, 24, 1, attentions=("spatial",), bias=True),
    ).eval()
    randomise_attention(model)
    x = torch.randn(1, 8, 12, 12)
    check_parity(model, export_onnx(model, None, x, target="portable", tune=False, check=True), x, batches=BATCHES)


class MixedOptions(nn.Module):
    """Layers with every NCHWc form and an option each: a softmax 1x1 on a 3x3-pooled input (kernel form's
    outer-product scale), a depthwise with sigmoid kernels and no trunk, a dense 3x3 without a channel head
    (columns), a dense n = 2 softmax layer with 20 output channels (padded softmax rows) and a trunkless softmax
    1x1 with only a channel head on 20 padded input channels."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 32, 3, padding=1)
        self.pw = ODConv2d(32, 48, 1, activation="softmax", pool_size=3)
        self.dw = ODConv2d(48, 48, 3, stride=2, padding=1, groups=48, kernel_num=2, kernel_activation="sigmoid",
                           attention_trunk=False)
        self.dense = ODConv2d(48, 32, 3, padding=1, attentions=("spatial", "filter"))
        self.dense_n2 = ODConv2d(32, 20, 3, padding=1, kernel_num=2, activation="softmax", pool_size=2)
        self.narrow = ODConv2d(20, 12, 1, attentions=("channel",), activation="softmax", attention_trunk=False)

    def forward(self, x):
        y = torch.relu(self.dw(torch.relu(self.pw(torch.relu(self.stem(x))))))
        y = torch.relu(self.dense(y) + y[:, :32])
        return self.narrow(torch.relu(self.dense_n2(y)))


@pytest.mark.parametrize("form", NCHWC_FORMS)
def test_every_nchwc_form_handles_the_options(form, blk, monkeypatch):
    needs_target("ort-cpu", blk)
    force_nchwc_form(monkeypatch, form)
    torch.manual_seed(0)
    model = MixedOptions().eval()
    randomise_attention(model)
    x = torch.randn(1, 3, 16, 16)
    proto = export_onnx(model, None, x, target="ort-cpu", tune=False, check=False)
    chosen = json.loads(metadata(proto)[META_FORMS])
    assert any(v == f"{form} (forced)" for v in chosen.values()), chosen
    check_parity(model, proto, x, batches=BATCHES)


@pytest.mark.parametrize("settings", [{}, dict(attentions=("spatial",))], ids=["default", "spatial only"])
def test_the_columns_form_pads_output_channels_to_the_block(settings, blk, monkeypatch):
    """20 output channels (not a multiple of any block) in the columns form, with and without a filter head."""
    needs_target("ort-cpu", blk)
    force_nchwc_form(monkeypatch, "columns")
    layer = ODConv2d(32, 20, 3, padding=1, bias=True, **settings).eval()
    randomise_attention(layer)
    x = torch.randn(1, 32, 8, 8)
    proto = export_onnx(layer, None, x, target="ort-cpu", tune=False, check=False)
    assert json.loads(metadata(proto)[META_FORMS]) == {"": "columns (forced)"}
    check_parity(layer, proto, x, batches=BATCHES)


def test_the_tuner_times_every_candidate_form_of_the_options(blk):
    """Every candidate form of every option layer builds and runs as a timing graph, and the options are part of the
    tuning cache's layer signature (a default layer's signature is what it was before they existed)."""
    needs_target("ort-cpu", blk)
    torch.manual_seed(0)
    layers = odconv_layers(import_graph(export_marked(MixedOptions().eval(), torch.randn(1, 3, 16, 16))))
    timed = 0
    for layer in layers:
        candidates = candidate_forms(layer, blk)
        choice = Planner(blk, tune=True, cache_path=None, progress=False).choose(layer)
        if len(candidates) > 1:  # a single candidate is not timed
            assert set(choice.times_us) == set(candidates), (layer.name, choice)
            timed += 1
    assert timed >= 3
    x = torch.randn(1, 16, 8, 8)
    default, softmax = (odconv_layers(import_graph(export_marked(ODConv2d(16, 16, 3, padding=1, **kw).eval(), x)))[0]
                        for kw in ({}, dict(activation="softmax")))
    assert "activation" not in layer_signature(default, 1) and '"activation": "softmax"' in layer_signature(softmax, 1)


# ------------------------------------------------------------------------------------------------ the pieces
def run_graph(build, x: np.ndarray) -> np.ndarray:
    """Run the one-output graph ``build(builder, x_variable)`` makes on ``x`` in onnxruntime."""
    graph = gs.Graph(name="t", opset=18)
    inp = gs.Variable("x", dtype=np.float32, shape=list(x.shape))
    out = build(Builder(graph, "t"), inp)
    out.dtype = np.float32
    graph.inputs, graph.outputs = [inp], [out]
    proto = gs.export_onnx(graph.cleanup().toposort(), do_type_check=False)
    proto.opset_import.append(onnx.helper.make_opsetid(NCHWC_DOMAIN, 1))
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


#: (H, W), k: divisible (AveragePool), not divisible (overlapping bins), smaller than k (repeated bins).
POOLS = [((16, 16), 1), ((16, 12), 2), ((16, 12), 4), ((14, 9), 3), ((4, 5), 6)]


@pytest.mark.parametrize("hw,k", POOLS)
def test_pooling_is_torchs_adaptive_average_pool(hw, k):
    x = torch.randn(2, 12, *hw)
    pooled = run_graph(lambda b, v: pool_nchw(b, v, hw, k), x.numpy())
    np.testing.assert_allclose(pooled, F.adaptive_avg_pool2d(x, k).numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("hw,k", POOLS)
def test_blocked_pooling_and_columns_make_the_pooled_conv(hw, k, blk):
    """The NCHWc attention input: the blocked input (12 channels, padded to the block) pooled in blocked order, times
    a k x k weight laid out by ``blocked_columns``, is the k x k conv of the adaptive pool (the trunk's fc)."""
    needs_target("ort-cpu", blk)
    x = torch.randn(1, 12, *hw)
    weight = torch.randn(5, 12, k, k)
    channels = padded(12, blk)

    def build(b, v):
        xb = b.op("ReorderInput", [v], {"channels_last": 0}, domain=NCHWC_DOMAIN)
        features = pool_blocked(b, xb, hw, k, channels, blk)
        return b.op("Gemm", [features, b.const("w", blocked_columns(weight.numpy(), channels, blk))], {"transB": 1})

    expected = F.conv2d(F.adaptive_avg_pool2d(x, k), weight).flatten(1)
    np.testing.assert_allclose(run_graph(build, x.numpy()), expected.numpy(), rtol=1e-4, atol=1e-5)


def lowered_ops(layer: nn.Module, target: str = "portable", batch1_branch: bool = False) -> list[onnx.NodeProto]:
    x = torch.randn(1, layer.in_channels, 8, 8)
    randomise_attention(layer)
    proto = export_onnx(layer.eval(), None, x, target=target, tune=False, check=False, batch1_branch=batch1_branch)
    check_parity(layer, proto, x, batches=(1, 3))
    return every_node(proto)


@pytest.mark.parametrize("settings,sigmoids,softmaxes", [
    (dict(kernel_num=4), 1, 1),  # channel, filter, spatial: one Sigmoid; kernel: one Softmax
    (dict(kernel_num=4, kernel_activation="sigmoid"), 1, 0),  # all four heads under one Sigmoid
    (dict(kernel_num=4, activation="softmax"), 0, 4),  # a Softmax over each head's own slice
    (dict(kernel_num=4, activation="softmax", kernel_activation="sigmoid"), 1, 3),
])
def test_merged_heads_take_each_heads_activation(settings, sigmoids, softmaxes):
    nodes = lowered_ops(ODConv2d(8, 16, 3, padding=1, **settings))
    ops = [node.op_type for node in nodes]
    assert ops.count("Sigmoid") == sigmoids and ops.count("Softmax") == softmaxes, ops
    projections = [n for n in nodes if n.op_type == "Conv" and any("heads_weight" in i for i in n.input)]
    assert len(projections) == 1  # the four heads merged into one Conv


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("conv", [
    dict(in_channels=8, out_channels=16, kernel_size=1, attentions=("spatial",)),
    dict(in_channels=16, out_channels=16, kernel_size=3, padding=1, groups=16, attentions=("filter",)),
], ids=["1x1 spatial only", "depthwise filter only"])
def test_a_layer_without_heads_is_a_plain_conv(conv, target, blk):
    needs_target(target, blk)
    layer = ODConv2d(**conv, bias=True)
    assert not layer.attention.heads()
    ops = [node.op_type for node in lowered_ops(layer, target, batch1_branch=True) if LOWERED_TAG in node.name]
    if target == "portable":
        assert ops == ["Conv", "Conv"]  # the batch-1 branch and the any-batch one
    else:
        assert set(ops) == {"ReorderInput", "Conv", "ReorderOutput"}, ops  # NCHWc Conv, no attention


def test_merging_leaves_a_layer_without_heads_alone():
    proto = export_marked(ODConv2d(8, 16, 1, attentions=("spatial",)).eval(), torch.randn(1, 8, 6, 6))
    merged = run_pipeline(proto, ["find_odconv", "merge_attention_heads"])
    (layer,) = find_odconv(merged)
    assert layer.heads == [] and layer.roles == ["weight"]


def test_markers_without_the_attention_attributes_read_as_defaults():
    """A marker written before the attention attributes existed lowers exactly as one that carries the defaults."""
    torch.manual_seed(0)
    model = TinyNet(4).eval()
    randomise_attention(model)
    marked = export_marked(model, torch.randn(1, 8, 16, 16))
    old = onnx.ModelProto()
    old.CopyFrom(marked)
    for node in old.graph.node:
        if node.domain == OD_DOMAIN:
            keep = [a for a in node.attribute if a.name not in ("activation", "kernel_activation", "pool_size")]
            del node.attribute[:]
            node.attribute.extend(keep)
    assert run_pipeline(old).SerializeToString() == run_pipeline(marked).SerializeToString()


def _tampered(change) -> onnx.ModelProto:
    model = nn.Sequential(ODConv2d(8, 16, 3, padding=1, kernel_num=2)).eval()
    proto = export_marked(model, torch.randn(1, 8, 8, 8))
    graph = import_graph(proto)
    change(odconv_layers(graph)[0])
    return gs.export_onnx(graph, do_type_check=False)


def _swap_head_weight(layer) -> None:
    params = layer.params()
    params["spatial_weight"] = params["spatial_weight"][:4]
    layer.set_params(params)


@pytest.mark.parametrize("change,match", [
    (lambda layer: layer.attrs.update(activation="relu"), "activation 'relu' is not one of"),
    (lambda layer: layer.attrs.update(kernel_activation="tanh"), "kernel_activation 'tanh' is not one of"),
    (lambda layer: layer.attrs.update(pool_size=0), "pool_size 0"),
    (lambda layer: layer.attrs.update(heads=["filter", "channel", "spatial", "kernel"]), "not distinct heads in the order"),
    (lambda layer: layer.attrs.update(pool_size=2), r"fc_weight shape .* expected \(A, 8, 2, 2\)"),
    (_swap_head_weight, r"spatial head weight \(4, 16, 1, 1\)"),
])
def test_find_odconv_refuses_an_attention_it_cannot_lower(change, match):
    with pytest.raises(OnnxModelError, match=match) as err:
        find_odconv(_tampered(change))
    assert "re-export" in str(err.value)
