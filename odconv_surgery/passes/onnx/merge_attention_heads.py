"""Pass ``merge_attention_heads``: merge a layer's attention heads into one 1x1 conv (a Gemm on the pooled map).

Invariant: function unchanged. The heads all read the same trunk output h, so concatenating their weights and
biases along the output axis (order channel, filter, spatial, kernel) gives one Conv whose output is split
again; the lowering then applies ONE Sigmoid to the contiguous sigmoid heads and one Softmax to the kernel head.
A layer's attention becomes GlobalAveragePool, Conv, Relu, Conv, Split, Sigmoid, Split(, Softmax).
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
    if layer.has("heads_weight"):
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
