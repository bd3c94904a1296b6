"""Pass ``check_and_infer_shapes`` (the last one): ``graph.cleanup().toposort()``, the ONNX checker and shape inference.

Invariant: function unchanged; dead nodes and unused initializers removed, nodes topologically sorted, the model
passes ``onnx.checker.check_model`` and carries inferred value_info.
"""

from __future__ import annotations

import onnx

from .base import OnnxPass, PassContext, export_sorted, logger
from .common import import_graph


class CheckAndInferShapes(OnnxPass):
    NAME = "check_and_infer_shapes"
    UNIT = "nodes"

    def transform(self, model: onnx.ModelProto, ctx: PassContext) -> tuple[onnx.ModelProto, int]:
        out = export_sorted(import_graph(model), model)
        del out.graph.value_info[:]
        onnx.checker.check_model(out)
        try:
            out = onnx.shape_inference.infer_shapes(out, check_type=True, strict_mode=False)
        except Exception as exc:  # noqa: BLE001 - inference is best effort; the checker already passed
            logger.warning("%s: ONNX shape inference failed, the model keeps no value_info (%s)", self.NAME, exc)
        return out, len(out.graph.node)
