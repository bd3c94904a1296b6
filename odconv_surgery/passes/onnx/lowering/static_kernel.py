"""Form ``static_kernel`` (a layer whose kernel is one constant: n = 1 and no spatial head; any batch size): the
kernel stays a Conv weight; the channel attention scales the input and the filter attention (and bias) the output.
A layer without any head is the plain conv. ``plan.py`` gives it to every layer with a constant kernel in the
any-batch file form, and to 1x1 layers with n = 1 in the portable batch-1 form (they gain nothing by folding their
attentions into a per-run kernel)."""

from __future__ import annotations

import onnx_graphsurgeon as gs

from ..common import OdLayer
from .builder import Builder, Geometry, finish


def lower_static_kernel(b: Builder, layer: OdLayer, att) -> gs.Variable:
    """n = 1, no spatial head: the constant kernel stays a Conv weight; attentions scale its input and output."""
    p = layer.params()
    geo = Geometry.of(layer)
    x = b.op("Mul", [layer.x, att["channel"]]) if "channel" in att else layer.x
    conv_in = [x, b.const("weight", p["weight"][0])]
    bias_in_conv = "bias" in p and "filter" not in att
    if bias_in_conv:
        conv_in.append(b.const("bias", p["bias"]))
    y = b.op("Conv", conv_in, geo.conv_attrs(layer.attrs["group"]))
    return finish(b, y, att, p, bias_done=bias_in_conv)
