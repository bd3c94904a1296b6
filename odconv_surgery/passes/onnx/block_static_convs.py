"""Pass ``block_static_convs`` (``target="ort-cpu"``): the model's own constant-weight convs in every graph that
runs lowered ODConv layers as NCHWc Convs (the batch-1 branch, the per-sample graph of a batch) become NCHWc Convs
too, kernels pre-blocked and channels zero-padded to the block, so ``chain_nchwc`` can keep the network blocked
between them. onnxruntime's own NCHWc transformer would wrap them in reorders the chain cannot see.

Invariant: function unchanged; only default-domain ``Conv`` nodes of the model (not those a lowering built,
``LOWERED_TAG``) are replaced, each by ``ReorderInput -> nchwc Conv -> ReorderOutput`` (an RGB stem, its input
channels under the block, by ``nchwc Conv -> ReorderOutput`` on its NCHW input, as onnxruntime does); a conv that
does not fit (non-constant weight, channels not multiples of 4, grouped but not depthwise) is left as it is.
"""

from __future__ import annotations

import onnx_graphsurgeon as gs

from .base import OnnxPass, PassContext
from .common import NCHWC_DOMAIN
from .lowering.nchwc_layout import block_static_conv
from .lowering.builder import LOWERED_TAG


class BlockStaticConvs(OnnxPass):
    NAME = "block_static_convs"
    UNIT = "convs"

    def rewrite(self, graph: gs.Graph, ctx: PassContext) -> int:
        if not ctx.nchwc_block:
            return 0
        count = 0
        for g in graphs_with_nchwc_convs(graph):
            convs = [n for n in g.nodes if n.op == "Conv" and not n.domain and LOWERED_TAG not in n.name]
            count += sum(block_static_conv(g, node, ctx.nchwc_block) for node in convs)
        return count


def graphs_with_nchwc_convs(graph: gs.Graph) -> list[gs.Graph]:
    """``graph`` and its subgraphs (any depth) whose own nodes include an NCHWc Conv."""
    return [g for g in (graph, *graph.subgraphs(recursive=True))
            if any(n.op == "Conv" and n.domain == NCHWC_DOMAIN for n in g.nodes)]
