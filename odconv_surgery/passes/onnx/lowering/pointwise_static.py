"""Form ``pointwise_static`` (1x1, n = 1, any batch size): the constant kernel stays a Conv weight; the channel
attention scales the input and the filter attention (and bias) the output. Used by the any-batch form and by the
portable batch-1 form, which gains nothing by folding a 1x1 layer's attentions into a per-run kernel."""

from __future__ import annotations

import onnx_graphsurgeon as gs

from ..common import OdLayer
from .builder import Builder, Geometry, finish


def lower_pointwise_static(b: Builder, layer: OdLayer, att) -> gs.Variable:
    """1x1, n = 1: the constant kernel stays a Conv weight; attentions scale its input and output."""
    p = layer.params()
    geo = Geometry.of(layer)
    x = b.op("Mul", [layer.x, att["channel"]])
    conv_in = [x, b.const("weight", p["weight"][0])]
    bias_in_conv = "bias" in p and "filter" not in att
    if bias_in_conv:
        conv_in.append(b.const("bias", p["bias"]))
    y = b.op("Conv", conv_in, geo.conv_attrs(layer.attrs["group"]))
    return finish(b, y, att, p, bias_done=bias_in_conv)
