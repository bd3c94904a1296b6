"""Pass ``finalize``: ``graph.cleanup().toposort()``, the ONNX checker and shape inference.

Invariant: function unchanged; dead nodes and unused initializers removed, nodes topologically sorted, the model
passes ``onnx.checker.check_model`` and carries inferred value_info.
"""

from __future__ import annotations

import onnx

from .base import OnnxPass, PassContext, export_sorted
from .common import import_graph


class Finalize(OnnxPass):
    NAME = "finalize"
    UNIT = "nodes"

    def transform(self, model: onnx.ModelProto, ctx: PassContext) -> tuple[onnx.ModelProto, int]:
        out = export_sorted(import_graph(model), model)
        del out.graph.value_info[:]
        onnx.checker.check_model(out)
        try:
            out = onnx.shape_inference.infer_shapes(out, check_type=True, strict_mode=False)
        except Exception:  # noqa: BLE001 - inference is best effort (If branches); the checker already passed
            pass
        return out, len(out.graph.node)
