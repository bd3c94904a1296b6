"""Pass ``lower_odconv``: replace every ``odconv.surgery::ODConv2d`` marker by standard ONNX ops.

Invariant: the model's function is unchanged (numerically, within float32 rounding) and, after this pass, the
graph holds no ODConv marker; no lowered op has a batch-dependent attribute (shapes use 0/-1 for the batch), so
the result runs at any batch size. Convolution weights stay constant initializers wherever the form allows.

The pass uses the fused any-batch form; ``lower_naive`` (the same class) the naive one. ``lowering/plan.py`` decides
each layer's leaf form (``lowering/``, one module each) and what that form is told, by rules set by measurement
(``benchmarks/onnx_lowering_forms.md``). The file forms:

* ``naive``: the reference maths (per-sample aggregated kernel, im2col batched MatMul); also the numeric
  reference of the per-pass checks.
* ``any``: a constant kernel (n=1, no spatial head; every 1x1 n=1 layer) as a constant conv with input/output
  scaling (``static_kernel``); 1x1 n>1 and dense k x k im2col scaled by the attentions, then a constant 1x1 conv
  (n=1) or a per-sample MatMul (n>1) (``im2col``); depthwise (and, with an NCHWc block, dense k x k) the batch-1 form
  once per sample in a ``Scan`` over the batch (``per_sample``); other grouped convs naive.
* ``batch1`` (only inside ``lower_by_batch_regime``'s batch-1 branch): every attention folded into a computed kernel,
  one Conv per layer (``batch1``); with an NCHWc block in the ``PassContext`` (``target="ort-cpu"``), every
  depthwise / 1x1 / dense layer whose channels allow it as onnxruntime NCHWc Convs (``batch1_nchwc``) in the form
  the planner picks; the passes ``block_static_convs`` and ``chain_nchwc`` then block the static convs and keep the
  network blocked.
"""

from __future__ import annotations

import onnx_graphsurgeon as gs

from ...errors import InvalidValueError
from .base import OnnxPass, PassContext
from .lowering import FORMS, lower_graph
from .lowering.plan import planner_for


class LowerODConv(OnnxPass):
    """Lower every marker with one form (the pass ``lower_odconv``: 'any'; ``lower_naive``: 'naive')."""

    def __init__(self, name: str, form: str) -> None:
        if form not in FORMS:
            raise InvalidValueError(f"unknown lowering form {form!r}; expected one of {sorted(FORMS)}")
        self.NAME = name  # type: ignore[misc] - one class, two registered passes
        self.form = form

    def rewrite(self, graph: gs.Graph, ctx: PassContext) -> int:
        with planner_for(ctx) as planner:
            return lower_graph(graph, self.form, "", ctx.nchwc_block, planner)
