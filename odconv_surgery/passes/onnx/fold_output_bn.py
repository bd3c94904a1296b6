"""Pass ``fold_output_bn``: fold the BatchNormalization that follows an ODConv into its kernel bank and bias.

Invariant: function unchanged. y = a_f * conv(x * a_c, sum_i a_w,i a_s W_i) + b; BN(y) = s * y + (beta - s * mu),
s = gamma / sqrt(var + eps). The attentions are per-sample scalings, linear in the kernel, so scaling every
kernel W_i by s (per output channel) and setting b' = s * (b - mu) + beta (added after the filter attention)
is exact. Only applies when the BN is the sole consumer of the ODConv output and its parameters are constants.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from .base import OnnxPass, PassContext
from .common import OdLayer, bn_scale, constant_value, odconv_layers


class FoldOutputBN(OnnxPass):
    NAME = "fold_output_bn"

    def rewrite(self, graph: gs.Graph, ctx: PassContext) -> int:
        return sum(_fold(graph, layer) for layer in odconv_layers(graph))


def _fold(graph: gs.Graph, layer: OdLayer) -> bool:
    """Fold the BatchNormalization after ``layer`` into it; False when there is none to fold."""
    y = layer.y
    if len(y.outputs) != 1 or y in graph.outputs:
        return False
    bn = y.outputs[0]
    if bn.op != "BatchNormalization" or len(bn.outputs) != 1 or bn.inputs[0] is not y:
        return False
    values = [constant_value(t) for t in bn.inputs[1:5]]
    if any(v is None for v in values):
        return False
    gamma, beta, mu, var = (np.asarray(v, dtype=np.float64) for v in values)
    eps = float(bn.attrs.get("epsilon", 1e-5))
    s = bn_scale(gamma, var, eps)
    params = layer.params()
    params["weight"] = (params["weight"] * s.reshape(1, -1, 1, 1, 1)).astype(np.float32)
    b = params.get("bias", np.zeros_like(s))
    new_bias = (s * (b - mu) + beta).astype(np.float32)
    ordered = {}
    for role, value in params.items():
        if role == "bias":
            continue
        ordered[role] = value
        if role == "weight":
            ordered["bias"] = new_bias
    layer.set_params(ordered)
    out = bn.outputs[0]
    bn.outputs.clear()
    layer.node.outputs = [out]
    return True

