"""Pass ``finalize``: ``graph.cleanup().toposort()``, the ONNX checker and shape inference.

Invariant: function unchanged; dead nodes and unused initializers removed, nodes topologically sorted, the model
passes ``onnx.checker.check_model`` and carries inferred value_info.
"""

from __future__ import annotations

import onnx

from .common import export_graph, import_graph

NAME = "finalize"


def run(model: onnx.ModelProto) -> onnx.ModelProto:
    graph = import_graph(model)
    graph.cleanup().toposort()
    out = export_graph(graph, model)
    del out.graph.value_info[:]
    onnx.checker.check_model(out)
    try:
        out = onnx.shape_inference.infer_shapes(out, check_type=True, strict_mode=False)
    except Exception:  # noqa: BLE001 - inference is best effort (If branches); the checker already passed
        pass
    return out
