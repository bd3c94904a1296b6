"""``passes/onnx/lowering/``: ``plan.py`` is the only module that picks a form, the leaf forms build what its plan
says and import no other form (nor ``plan``), and every leaf form, each way the plan can place the attentions,
keeps the model's function at batches 0/1/3/8."""

from __future__ import annotations

import ast
import collections
from pathlib import Path

import onnx
import pytest
import torch
from torch import nn

from helpers.randomise import randomise_attention
from odconv_surgery import ODConv2d, check_parity
from odconv_surgery.deploy.export import export_onnx
from odconv_surgery.passes.onnx import lowering
from odconv_surgery.passes.onnx.lowering import plan
from odconv_surgery.passes.onnx.lowering.builder import Geometry, Scaling
from odconv_surgery.passes.onnx.lowering.plan import STATIC, LayerPlan

PACKAGE = "odconv_surgery.passes.onnx.lowering"
LOWERING = Path(lowering.__file__).parent

#: The leaf forms: one module each; they build what ``plan.py`` tells them.
FORM_MODULES = {"naive", "static_kernel", "im2col", "per_sample", "batch1", "batch1_nchwc"}
#: The helpers every form may import (node factory and geometry, the attention branch, its pooling, the NCHWc layout),
#: and the other modules that are no form (the guard of the ``guard_nchwc_block`` pass, the tuner's cache).
HELPERS = {"builder", "attention", "pooling", "nchwc_layout"}
OTHER = {"nchwc_guard", "tuning_cache"}
#: What a form or helper may import from the passes package: the helpers, and ``..common``.
ALLOWED = {f"{PACKAGE}.{name}" for name in HELPERS} | {"odconv_surgery.passes.onnx.common"}
#: The modules that may import forms: the planner and the package's wiring.
DISPATCH = {"plan", "__init__"}


def _imports(source: str, module: str) -> set[str]:
    """Every ``odconv_surgery`` module ``source`` (the module ``module``) imports, at any depth (function-level too);
    ``from X import name`` counts as ``X.name`` when that names a module of the lowering."""
    package = module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
            continue
        if not isinstance(node, ast.ImportFrom):
            continue
        if node.level:
            base = package.split(".")[: len(package.split(".")) - node.level + 1]
            target = ".".join(base + ([node.module] if node.module else []))
        else:
            target = node.module or ""
        for alias in node.names:
            sub = f"{target}.{alias.name}"
            found.add(sub if sub.startswith(PACKAGE + ".") and (LOWERING / f"{alias.name}.py").is_file() else target)
    return {name for name in found if name.startswith("odconv_surgery")}


def _offending(source: str, module: str) -> set[str]:
    """What ``module`` imports from the passes package beyond the helpers a leaf may use."""
    return {name for name in _imports(source, module)
            if name.startswith("odconv_surgery.passes") and name not in ALLOWED}


def test_every_lowering_module_is_a_form_a_helper_or_the_dispatch():
    modules = {p.stem for p in LOWERING.glob("*.py")}
    assert modules == FORM_MODULES | HELPERS | OTHER | DISPATCH, "classify the new module in this test"
    assert set(plan.LEAF_FORMS) - {STATIC} == FORM_MODULES  # every leaf form plan names is a module of its own


@pytest.mark.parametrize("name", sorted(FORM_MODULES | HELPERS | OTHER))
def test_forms_and_helpers_import_no_form_and_not_plan(name):
    source = (LOWERING / f"{name}.py").read_text()
    assert _offending(source, f"{PACKAGE}.{name}") == set(), f"{name}.py: only plan.py picks and imports forms"


def test_the_import_check_catches_a_form_importing_another_or_plan():
    module = f"{PACKAGE}.batch1"
    assert _offending("from .static_kernel import lower_static_kernel", module) == {f"{PACKAGE}.static_kernel"}
    assert _offending("def f():\n    from .plan import Planner\n", module) == {f"{PACKAGE}.plan"}
    assert _offending("from . import naive", module) == {f"{PACKAGE}.naive"}
    assert _offending("from ..chain_nchwc import chain_nchwc", module) == {"odconv_surgery.passes.onnx.chain_nchwc"}
    assert _offending("from odconv_surgery.passes.onnx.lowering.im2col import lower_im2col", module) == {
        f"{PACKAGE}.im2col"}
    helpers_only = "from .builder import Builder\nfrom ..common import OdLayer\nfrom ....errors import X"
    assert _offending(helpers_only, module) == set()


# ---- the plan decides, the forms follow --------------------------------------------------------------------------
class Layers(nn.Module):
    """A layer for every portable leaf form: 1x1 n = 1 (static kernel), depthwise (per sample), dense 3x3 with a
    spatial head at n = 1 and n = 2 (im2col), 1x1 n = 3 (im2col), a grouped conv (naive), a 3x3 without a spatial head
(static kernel), with biases."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.pw = ODConv2d(8, 16, 1, bias=True)
        self.dw = ODConv2d(16, 16, 3, padding=1, groups=16)
        self.dense = ODConv2d(16, 16, 3, padding=1, bias=True)
        self.dense_n2 = ODConv2d(16, 24, 3, stride=2, padding=1, kernel_num=2, bias=True)
        self.pw_n3 = ODConv2d(24, 8, 1, kernel_num=3)
        self.grouped = ODConv2d(8, 8, 3, padding=1, groups=2, bias=True)
        self.no_spatial = ODConv2d(8, 8, 3, padding=1, attentions=("channel", "filter"))

    def forward(self, x):
        y = torch.relu(self.dw(torch.relu(self.pw(torch.relu(self.stem(x))))))
        y = torch.relu(self.dense_n2(torch.relu(self.dense(y))))
        return self.no_spatial(torch.relu(self.grouped(torch.relu(self.pw_n3(y)))))


BATCHES = (0, 1, 3, 8)


@pytest.fixture(scope="module")
def model() -> nn.Module:
    torch.manual_seed(0)
    net = Layers().eval()
    randomise_attention(net)
    return net


def _export(model: nn.Module) -> onnx.ModelProto:
    return export_onnx(model, None, torch.randn(1, 3, 12, 12), target="portable", tune=False, check=False)


def _ops(proto: onnx.ModelProto) -> collections.Counter:
    ops: collections.Counter = collections.Counter()

    def walk(graph):
        for node in graph.node:
            ops[node.op_type] += 1
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    walk(attr.g)

    walk(proto.graph)
    return ops


def _fits(layer, leaf: str) -> bool:
    """Whether the leaf form ``leaf`` builds ``layer`` for any batch size (per_sample: its batch-1 form per sample)."""
    if leaf == "static_kernel":
        return plan.has_static_kernel(layer)
    if leaf == "im2col":
        return layer.kind in ("dense", "pointwise")
    return leaf in ("naive", "per_sample")


@pytest.mark.parametrize("leaf", ["naive", "static_kernel", "im2col", "per_sample"])
def test_each_portable_leaf_forced_keeps_the_function(model, leaf, monkeypatch):
    """Every layer the leaf can build gets it in the any-batch graph (the batch-1 graph keeps its own plan, the
    ``batch1`` leaf: batch 1 runs it), and the file keeps PyTorch's function at every batch."""
    real = plan.plan_layer
    forced = []

    def force(layer, file_form, planner=None):
        chosen = real(layer, file_form, planner)
        if file_form != "any" or not _fits(layer, leaf):
            return chosen
        forced.append(layer.name)
        body = real(layer, "batch1", planner) if leaf == "per_sample" else None
        return LayerPlan(leaf, scaling=plan.im2col_scaling(layer, Geometry.of(layer)), body=body)

    monkeypatch.setattr(plan, "plan_layer", force)
    proto = _export(model)
    assert len(forced) >= 2, forced
    check_parity(model, proto, torch.randn(1, 3, 12, 12), batches=BATCHES)


@pytest.mark.parametrize("decision, side", [("batch1_scaling", "input"), ("batch1_scaling", "filter"),
                                            ("im2col_scaling", "input")])
def test_the_forms_follow_the_plans_scaling(model, decision, side, monkeypatch):
    """Flip one of the plan's scaling decisions for every layer: the portable form applies that attention on the other
    side (another graph), and the file still keeps the function at every batch."""
    default = _ops(_export(model))
    real = getattr(plan, decision)
    calls: collections.Counter = collections.Counter()

    def flipped(layer, geo):
        calls[layer.name] += 1
        s = real(layer, geo)
        if side == "filter":
            return Scaling(s.input_on_kernel, not s.filter_on_kernel)
        on_kernel = not s.input_on_kernel if layer.kind != "grouped" else False  # grouped: no channel-wise kernel
        return Scaling(on_kernel, s.filter_on_kernel)

    monkeypatch.setattr(plan, decision, flipped)
    proto = _export(model)
    assert _ops(proto) != default  # the form did what the plan said, not what it would have picked
    assert calls and max(calls.values()) <= 2, calls  # once per layer and file form (batch1, and any's per-sample body)
    check_parity(model, proto, torch.randn(1, 3, 12, 12), batches=BATCHES)


def test_each_layer_is_planned_once_per_file_form(model, monkeypatch):
    real = plan.plan_layer
    planned: collections.Counter = collections.Counter()

    def counting(layer, file_form, planner=None):
        planned[layer.name, file_form] += 1
        return real(layer, file_form, planner)

    monkeypatch.setattr(plan, "plan_layer", counting)
    _export(model)
    odconv = sum(isinstance(m, ODConv2d) for m in model.modules())
    assert len(planned) == 2 * odconv and set(planned.values()) == {1}, planned  # the batch1 and any graphs


def test_a_plan_with_an_unknown_form_or_a_missing_body_is_refused():
    from odconv_surgery.errors import InvalidValueError

    with pytest.raises(InvalidValueError, match="unknown leaf form"):
        LayerPlan("fast")
    with pytest.raises(InvalidValueError, match="needs"):
        LayerPlan("per_sample")
    with pytest.raises(InvalidValueError, match="unknown lowering form"):
        plan.dispatcher("batch2")


def test_any_batch_runs_dense_layers_per_sample_only_with_one_kernel(model):
    """With an NCHWc planner, a dense k x k layer with one kernel runs its batch-1 NCHWc form per sample; with
    several kernels it stays batched (im2col mixes the bank once per batch instead of once per sample)."""
    from odconv_surgery.deploy.export import export_marked
    from odconv_surgery.passes.onnx.common import import_graph, odconv_layers

    layers = {layer.name: layer for layer in odconv_layers(import_graph(export_marked(model, torch.randn(1, 3, 12, 12))))}
    planner = plan.Planner(16)
    assert plan.plan_layer(layers["dense"], "any", planner).form == "per_sample"
    assert plan.plan_layer(layers["dense_n2"], "any", planner).form == "im2col"
    assert plan.plan_layer(layers["dense_n2"], "any", None).form == "im2col"
