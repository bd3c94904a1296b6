"""Pass ``fold_attention_norm``: fold the attention trunk's BatchNorm into its 1x1 conv (``fc``).

Invariant: function unchanged. In eval mode BN is affine per channel: BN(fc(p)) = (s * W_fc) p + (beta - s mu),
s = gamma / sqrt(var + eps), so the trunk becomes one Conv with bias. Only the ``bn`` norm is folded; a
LayerNorm-style ``ln`` trunk (input-dependent statistics) is left as is.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from .base import OnnxPass, PassContext
from .common import OdLayer, bn_scale, odconv_layers


class FoldAttentionNorm(OnnxPass):
    NAME = "fold_attention_norm"

    def rewrite(self, graph: gs.Graph, ctx: PassContext) -> int:
        return sum(_fold(layer) for layer in odconv_layers(graph))


def _fold(layer: OdLayer) -> bool:
    """Fold ``layer``'s attention BatchNorm into ``fc``; False for other norms (or one already folded)."""
    if layer.attrs["norm"] != "bn" or not layer.has("norm_mean"):
        return False
    p = layer.params()
    s = bn_scale(p["norm_scale"], p["norm_var"], float(layer.attrs["norm_eps"]))
    fc_w = p["fc_weight"].astype(np.float64) * s.reshape(-1, 1, 1, 1)
    fc_b = p.get("fc_bias", np.zeros_like(s)) * s + (p["norm_bias"] - s * p["norm_mean"])
    new = {}
    for role, value in p.items():
        if role.startswith("norm_") or role == "fc_bias":
            continue
        new[role] = value
        if role == "fc_weight":
            new["fc_weight"] = fc_w.astype(np.float32)
            new["fc_bias"] = fc_b.astype(np.float32)
    layer.set_params(new)
    layer.attrs["norm"] = "none"
    return True
