"""Pass ``check_and_infer_shapes`` (the last one): ``graph.cleanup().toposort()``, the ONNX checker and shape inference.

Invariant: function unchanged; dead nodes and unused initializers removed, nodes topologically sorted, the model
passes ``onnx.checker.check_model`` and carries inferred value_info. Subgraph outputs keep the symbolic dimensions
they were declared with: ONNX's inference can pin a ``Scan`` output's stacked length to 1 inside nested ``If``
branches, and onnxruntime then pre-allocates a wrong shape.
"""

from __future__ import annotations

import onnx

from .base import OnnxPass, PassContext, export_sorted, logger
from .common import import_graph
from .graph_walk import subgraphs
from .weights_aside import WeightStore


class CheckAndInferShapes(OnnxPass):
    NAME = "check_and_infer_shapes"
    UNIT = "nodes"

    def transform(self, model: onnx.ModelProto, ctx: PassContext) -> tuple[onnx.ModelProto, int]:
        out = export_sorted(import_graph(model), model)
        del out.graph.value_info[:]
        onnx.checker.check_model(out)
        declared = {(g.name, i): o.type for g in subgraphs(out.graph) for i, o in enumerate(g.output)
                    if any(d.dim_param for d in o.type.tensor_type.shape.dim)}
        store = WeightStore()
        store.set_aside(out.graph)  # inference reads shapes, not weights: spare it a copy of them
        try:
            out = onnx.shape_inference.infer_shapes(out, check_type=True, strict_mode=False)
        except Exception as exc:  # noqa: BLE001 - inference is best effort; the checker already passed
            logger.warning("%s: ONNX shape inference failed, the model keeps no value_info (%s)", self.NAME, exc)
        store.refill(out.graph)
        for g in subgraphs(out.graph):
            for i, o in enumerate(g.output):
                if (g.name, i) in declared:
                    o.type.CopyFrom(declared[(g.name, i)])
        return out, len(out.graph.node)

