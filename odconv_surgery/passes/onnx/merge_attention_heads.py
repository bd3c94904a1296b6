"""Pass ``merge_attention_heads``: merge a layer's attention heads into one 1x1 conv (a Gemm on the pooled map).

Invariant: function unchanged. The heads all read the same input (the trunk's output h, or the pooled input for a
layer without a trunk, where every head is a k x k Conv of the same shape), so concatenating their weights and
biases along the output axis (order channel, filter, spatial, kernel) gives one Conv whose output is split again.
The activations need not be alike: the lowering splits the merged output by activation
(``lowering/attention.py`` ``activation_runs``): ONE Sigmoid for each run of adjacent sigmoid heads, and one Softmax
for each softmax head over its own slice. A default layer's attention becomes GlobalAveragePool, Conv, Relu, Conv,
Split, Sigmoid, Split(, Softmax). A layer without heads has nothing to merge.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from .base import OnnxPass, PassContext
from .common import OdLayer, odconv_layers


class MergeAttentionHeads(OnnxPass):
    NAME = "merge_attention_heads"

    def rewrite(self, graph: gs.Graph, ctx: PassContext) -> int:
        return sum(_merge(layer) for layer in odconv_layers(graph))


def _merge(layer: OdLayer) -> bool:
    """Replace ``layer``'s per-head projections by one; False when they are merged already."""
    if layer.has("heads_weight") or not layer.heads:
        return False
    p = layer.params()
    heads = layer.heads
    weight = np.concatenate([p[f"{h}_weight"] for h in heads], axis=0)
    bias = np.concatenate([p[f"{h}_bias"] for h in heads], axis=0)
    new = {role: v for role, v in p.items() if not any(role.startswith(h + "_") for h in heads)}
    new["heads_weight"] = weight
    new["heads_bias"] = bias
    layer.set_params(new)
    return True
