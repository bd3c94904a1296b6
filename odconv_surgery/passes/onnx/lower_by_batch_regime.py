"""Pass ``lower_by_batch_regime``: lower the ODConv markers twice and pick the form by batch size at run time.

Invariant: function unchanged at every batch size; no marker left. The graph becomes
``If(Shape(input)[0] == 1, then=<batch-1 graph>, else=<any-batch graph>)``: the batch-1 branch folds every
attention into a computed kernel and runs one Conv per layer (file form ``batch1``; far closer to the static
conv than the any-batch forms, see ``benchmarks/onnx_lowering_forms.md``), the other branch uses the
batch-independent forms (file form ``any``); ``lowering/plan.py`` decides each layer's form in both. With an NCHWc block (``target="ort-cpu"``) and a model whose
outputs are all batch-major with fixed other dimensions (``whole_graph_scan_fits``), the other branch instead runs
the batch-1 graph once per sample in one ``Scan`` (batch 0: empty outputs), so a batch keeps the blocked chain end
to end (mobilenet_v2 0.5 at batch 8, all threads: see ``benchmarks/onnx_results_cpu_*.md``), unless
``PassContext.batch_form`` is "per-layer" (``export_onnx(tune=True)`` times both where layers hold several kernels:
the per-sample graph reads every kernel bank once per sample, the per-layer forms mix each bank once per batch). Each branch (and each per-sample ``Scan`` body) keeps the
constants it reads as its own initializers: onnxruntime prepacks and blocks only a subgraph's own constant
weights, and sharing them through the main graph measured slower (``benchmarks/onnx_lowering_forms.md``).

The batch-1 form assumes every layer sees batch 1 when the input does. A layer that ran on another batch size
at export (window attention folds the windows into the batch; the exporter lists such layers in the
``META_OTHER_BATCH`` metadata) would break it, so such a model gets the any-batch form only (no ``If``).
"""

from __future__ import annotations

import json
import logging

import onnx
from onnx import helper

from ...deploy.schema import BATCH_FORMS, META_BATCH_FORM, META_FORMS, META_FORMS_DEPART, META_OTHER_BATCH, metadata, set_metadata
from .base import OnnxPass, PassContext
from .common import has_odconv_nodes, odconv_node_count
from .graph_walk import subgraphs
from .lowering import lower
from .lowering.plan import planner_for
from .weights_aside import WeightStore

PER_SAMPLE_GRAPH, PER_LAYER = BATCH_FORMS


def _rename(graph: onnx.GraphProto, prefix: str) -> None:
    """Prefix every value produced inside ``graph`` (node outputs) so the two branches never clash."""
    produced = {o for node in graph.node for o in node.output if o}
    mapping = {name: prefix + name for name in produced}
    for node in graph.node:
        node.name = prefix + node.name
        for i, name in enumerate(node.output):
            if name in mapping:
                node.output[i] = mapping[name]
    _rename_inputs(graph.node, mapping)
    for out in graph.output:
        if out.name in mapping:
            out.name = mapping[out.name]
    for vi in graph.value_info:
        if vi.name in mapping:
            vi.name = mapping[vi.name]


def _rename_inputs(nodes, mapping: dict[str, str]) -> None:
    """Rename the inputs of ``nodes`` and of every node in their subgraphs (which read the enclosing graph)."""
    for node in nodes:
        for i, name in enumerate(node.input):
            if name in mapping:
                node.input[i] = mapping[name]
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                _rename_inputs(attr.g.node, mapping)


def whole_graph_scan_fits(model: onnx.ModelProto) -> bool:
    """Whether batch > 1 can run the batch-1 graph once per sample: one input, and every output a float tensor
    whose first dimension is the input's batch and whose other dimensions are fixed (so batch 0 has a known empty
    output). Detection heads (a box count per image) and anything else are left to the per-layer form."""
    if len(model.graph.input) != 1:
        return False
    batch = model.graph.input[0].type.tensor_type.shape.dim
    if not batch or not batch[0].dim_param:
        return False
    for out in model.graph.output:
        t = out.type.tensor_type
        dims = t.shape.dim
        if t.elem_type != onnx.TensorProto.FLOAT or not dims or dims[0].dim_param != batch[0].dim_param:
            return False
        if not all(d.HasField("dim_value") for d in dims[1:]):
            return False
    return True


def _scan_or_empty(b1_model: onnx.ModelProto, inp: str, outputs: list[str], output_infos) -> onnx.GraphProto:
    """The batch > 1 branch: ``If(batch == 0)`` empty outputs, else a ``Scan`` over the samples whose body is the
    batch-1 graph (its own copy of the constants, renamed apart: onnxruntime prepacks only a subgraph's own
    weights), so every sample runs the blocked NCHWc chain end to end."""
    body = onnx.GraphProto()
    body.CopyFrom(b1_model.graph)
    del body.input[:]
    del body.value_info[:]
    used = {name for g in (body, *subgraphs(body)) for node in g.node for name in node.input}
    own = [t for t in body.initializer if t.name in used]
    del body.initializer[:]
    body.initializer.extend(own)
    _rename(body, "scan:")
    mapping = {t.name: "scan:" + t.name for t in body.initializer}
    for t in body.initializer:
        t.name = mapping[t.name]
    mapping[inp] = "scan:x"
    _rename_inputs(body.node, mapping)
    body.initializer.append(helper.make_tensor("scan:axes", onnx.TensorProto.INT64, [1], [0]))
    body.node.insert(0, helper.make_node("Unsqueeze", ["scan:sample", "scan:axes"], ["scan:x"], name="scan:Unsqueeze"))
    body.input.append(helper.make_tensor_value_info("scan:sample", onnx.TensorProto.FLOAT, None))
    per_sample = [o.name for o in body.output]
    del body.output[:]
    # Explicit shapes (the batch symbolic, the rest fixed): left open, shape inference guesses the stacked length 1.
    sample_dims = [[d.dim_value for d in info.type.tensor_type.shape.dim[1:]] for info in output_infos]
    batch = output_infos[0].type.tensor_type.shape.dim[0].dim_param
    for name, dims in zip(per_sample, sample_dims):
        body.node.append(helper.make_node("Squeeze", [name, "scan:axes"], [name + "/sample"], name=name + "/Squeeze"))
        body.output.append(helper.make_tensor_value_info(name + "/sample", onnx.TensorProto.FLOAT, dims))
    body.name = "scan_body"
    scan = helper.make_graph([helper.make_node("Scan", [inp], [f"scan:{o}" for o in outputs], name="batch_regime/Scan",
                                               body=body, num_scan_inputs=1)],
                             "scan_branch", [], [helper.make_tensor_value_info(f"scan:{o}", onnx.TensorProto.FLOAT, [batch, *dims])
                                                 for o, dims in zip(outputs, sample_dims)])
    empty_nodes, empty_outs = [], []
    for info in output_infos:
        shape = [0] + [d.dim_value for d in info.type.tensor_type.shape.dim[1:]]
        empty_nodes.append(helper.make_node(
            "ConstantOfShape", [f"empty:{info.name}/shape"], [f"empty:{info.name}"], name=f"empty:{info.name}",
            value=helper.make_tensor("zero", onnx.TensorProto.FLOAT, [1], [0.0])))
        empty_outs.append(helper.make_tensor_value_info(f"empty:{info.name}", onnx.TensorProto.FLOAT, shape))
    empty = helper.make_graph(empty_nodes, "empty_branch", [], empty_outs, initializer=[
        helper.make_tensor(f"empty:{info.name}/shape", onnx.TensorProto.INT64, [1 + len(info.type.tensor_type.shape.dim[1:])],
                           [0] + [d.dim_value for d in info.type.tensor_type.shape.dim[1:]]) for info in output_infos])
    return helper.make_graph(
        [
            helper.make_node("Equal", ["batch_regime/shape", "batch_regime/zero"], ["batch_regime/eq0"], name="batch_regime/Equal0"),
            helper.make_node("Squeeze", ["batch_regime/eq0"], ["batch_regime/is_batch0"], name="batch_regime/Squeeze0"),
            helper.make_node("If", ["batch_regime/is_batch0"], [f"batched:{o}" for o in outputs], name="batch_regime/If0",
                             then_branch=empty, else_branch=scan),
        ],
        "batched_branch", [], [helper.make_tensor_value_info(f"batched:{o}", onnx.TensorProto.FLOAT, [batch, *dims])
                               for o, dims in zip(outputs, sample_dims)],
    )


class LowerByBatchRegime(OnnxPass):
    NAME = "lower_by_batch_regime"

    def transform(self, model: onnx.ModelProto, ctx: PassContext) -> tuple[onnx.ModelProto, int]:
        return _lower_by_batch_regime(model, ctx), odconv_node_count(model)


def _lower_by_batch_regime(model: onnx.ModelProto, ctx: PassContext) -> onnx.ModelProto:
    if not has_odconv_nodes(model):
        return model
    if len(model.graph.input) != 1:
        return lower(model, "any")
    nchwc_block = ctx.nchwc_block
    other_batch = json.loads(metadata(model).get(META_OTHER_BATCH, "[]"))
    if other_batch:
        logging.getLogger("odconv_surgery.passes.onnx").info(
            "lower_by_batch_regime: %s run(s) on another batch size than the input (e.g. windows folded into the "
            "batch): any-batch form only, no batch-1 branch", ", ".join(other_batch[:5]))
        return lower(model, "any", nchwc_block=nchwc_block)
    per_sample_graph = bool(nchwc_block) and whole_graph_scan_fits(model) and ctx.batch_form != PER_LAYER
    with planner_for(ctx) as planner:
        b1_model = lower(model, "batch1", prefix="b1/", nchwc_block=nchwc_block, planner=planner)
        any_model = b1_model if per_sample_graph else lower(model, "any", prefix="any/", nchwc_block=nchwc_block, planner=planner)
    store = WeightStore()  # the branches below are copied several times over: their weights join once, at the end
    for m in (b1_model, any_model):  # the same model twice with the per-sample graph: set aside once
        store.set_aside(m.graph)
    inp = model.graph.input[0].name
    inits: dict[str, onnx.TensorProto] = {}
    for m in (any_model, b1_model):
        for init in m.graph.initializer:
            inits.setdefault(init.name, init)
    branches = []
    for m, prefix in ((b1_model, "b1:"), (any_model, "any:")):
        g = onnx.GraphProto()
        g.CopyFrom(m.graph)
        del g.initializer[:]
        del g.input[:]
        del g.value_info[:]
        _rename(g, prefix)
        g.name = prefix.rstrip(":") + "_branch"
        branches.append(g)
    outputs = [o.name for o in model.graph.output]
    extra_inits = [helper.make_tensor("batch_regime/one", onnx.TensorProto.INT64, [1], [1])]
    if per_sample_graph:
        branches[1] = _scan_or_empty(b1_model, inp, outputs, model.graph.output)
        extra_inits.append(helper.make_tensor("batch_regime/zero", onnx.TensorProto.INT64, [1], [0]))
    outer = helper.make_graph(
        [
            helper.make_node("Shape", [inp], ["batch_regime/shape"], name="batch_regime/Shape", start=0, end=1),
            helper.make_node("Equal", ["batch_regime/shape", "batch_regime/one"], ["batch_regime/eq"], name="batch_regime/Equal"),
            helper.make_node("Squeeze", ["batch_regime/eq"], ["batch_regime/is_batch1"], name="batch_regime/Squeeze"),
            helper.make_node("If", ["batch_regime/is_batch1"], outputs, name="batch_regime/If",
                             then_branch=branches[0], else_branch=branches[1]),
        ],
        model.graph.name,
        list(model.graph.input),
        list(any_model.graph.output),
        initializer=list(inits.values()) + extra_inits,
    )
    opsets = {o.domain: o for o in list(any_model.opset_import) + list(b1_model.opset_import)}
    out = helper.make_model(outer, opset_imports=list(opsets.values()), ir_version=any_model.ir_version)
    store.refill(out.graph)
    out.metadata_props.extend(model.metadata_props)
    if planner is not None:
        set_metadata(out, {META_FORMS: json.dumps(planner.summary(), sort_keys=True),
                           META_FORMS_DEPART: str(planner.departures()),
                           META_BATCH_FORM: PER_SAMPLE_GRAPH if per_sample_graph else PER_LAYER})
    out.producer_name, out.producer_version = model.producer_name, model.producer_version
    return out
