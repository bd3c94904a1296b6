"""Pass ``lower_by_batch_regime``: lower the ODConv markers twice and pick the form by batch size at run time.

Invariant: function unchanged at every batch size; no marker left. The graph becomes
``If(Shape(input)[0] == 1, then=<batch-1 graph>, else=<any-batch graph>)``: the batch-1 branch folds every
attention into a computed kernel and runs one Conv per layer (``lowering/batch1.py``; far closer to the static
conv than the any-batch forms, see ``benchmarks/onnx_lowering_forms.md``), the other branch uses the
batch-independent forms (``lowering/any_batch.py``). Each branch (and each per-sample ``Scan`` body) keeps the
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

from ...deploy.schema import META_OTHER_BATCH, metadata
from .base import OnnxPass, PassContext
from .common import has_odconv_nodes, odconv_node_count
from .lowering import lower


def _rename(graph: onnx.GraphProto, prefix: str, keep: set[str]) -> None:
    """Prefix every value produced inside ``graph`` (node outputs) so the two branches never clash."""
    produced = {o for node in graph.node for o in node.output if o}
    mapping = {name: prefix + name for name in produced if name not in keep}
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


class LowerByBatchRegime(OnnxPass):
    NAME = "lower_by_batch_regime"

    def transform(self, model: onnx.ModelProto, ctx: PassContext) -> tuple[onnx.ModelProto, int]:
        return _lower_by_batch_regime(model, ctx.nchwc_block), odconv_node_count(model)


def _lower_by_batch_regime(model: onnx.ModelProto, nchwc_block: int | None) -> onnx.ModelProto:
    if not has_odconv_nodes(model):
        return model
    if len(model.graph.input) != 1:
        return lower(model, "any")
    other_batch = json.loads(metadata(model).get(META_OTHER_BATCH, "[]"))
    if other_batch:
        logging.getLogger("odconv_surgery.passes.onnx").info(
            "lower_by_batch_regime: %s run(s) on another batch size than the input (e.g. windows folded into the "
            "batch): any-batch form only, no batch-1 branch", ", ".join(other_batch[:5]))
        return lower(model, "any", nchwc_block=nchwc_block)
    any_model = lower(model, "any", prefix="any/", nchwc_block=nchwc_block)
    b1_model = lower(model, "batch1", prefix="b1/", nchwc_block=nchwc_block)
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
        _rename(g, prefix, keep=set())
        g.name = prefix.rstrip(":") + "_branch"
        branches.append(g)
    outer = helper.make_graph(
        [
            helper.make_node("Shape", [inp], ["batch_regime/shape"], name="batch_regime/Shape", start=0, end=1),
            helper.make_node("Equal", ["batch_regime/shape", "batch_regime/one"], ["batch_regime/eq"], name="batch_regime/Equal"),
            helper.make_node("Squeeze", ["batch_regime/eq"], ["batch_regime/is_batch1"], name="batch_regime/Squeeze"),
            helper.make_node("If", ["batch_regime/is_batch1"], [o.name for o in model.graph.output], name="batch_regime/If",
                             then_branch=branches[0], else_branch=branches[1]),
        ],
        model.graph.name,
        list(model.graph.input),
        list(any_model.graph.output),
        initializer=list(inits.values()) + [helper.make_tensor("batch_regime/one", onnx.TensorProto.INT64, [1], [1])],
    )
    opsets = {o.domain: o for o in list(any_model.opset_import) + list(b1_model.opset_import)}
    out = helper.make_model(outer, opset_imports=list(opsets.values()), ir_version=any_model.ir_version)
    out.metadata_props.extend(model.metadata_props)
    out.producer_name, out.producer_version = model.producer_name, model.producer_version
    return out
