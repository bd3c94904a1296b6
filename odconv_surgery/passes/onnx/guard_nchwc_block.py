"""Pass ``guard_nchwc_block`` (``target="ort-cpu"``): the file's float outputs turn NaN on a machine whose
onnxruntime uses another NCHWc block than the one its kernels were laid out for (``lowering/nchwc_guard.py``).

Invariant: on the exporting machine the function is unchanged (every output times 1); one guard for the whole
file, on the main graph's outputs, whatever branch runs; nothing is added to a file without NCHWc nodes.
"""

from __future__ import annotations

import onnx_graphsurgeon as gs

from .base import OnnxPass, PassContext
from .lowering.nchwc_guard import guard_block_size


class GuardNchwcBlock(OnnxPass):
    NAME = "guard_nchwc_block"
    UNIT = "outputs"

    def rewrite(self, graph: gs.Graph, ctx: PassContext) -> int:
        return guard_block_size(graph, ctx.nchwc_block) if ctx.nchwc_block else 0
