"""Form ``batch1`` (the portable batch-size-1 form of ``lower_by_batch_regime``'s batch-1 branch, and of a per-sample
``Scan`` body; valid only for batch 1, reshapes use it): the attentions folded into one computed kernel, then one
Conv per layer. Which attentions go into the kernel and which scale the activations instead (the constant kernel
kept) is ``plan.py``'s decision, passed in as a ``Scaling``; the spatial and kernel attentions always go into the
kernel. Attentions a layer does not have are left out."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from ....errors import InvalidValueError
from ..common import OdLayer
from .builder import Builder, Geometry, Scaling, finish, kernel_mix


def lower_batch1(b: Builder, layer: OdLayer, att, scaling: Scaling) -> gs.Variable:
    """``layer`` at batch 1 as one Conv whose kernel carries the attentions ``scaling`` puts on it (``att``: its
    attentions)."""
    p = layer.params()
    a = layer.attrs
    geo = Geometry.of(layer)
    n, cout, cin, g = a["kernel_num"], a["out_channels"], a["in_channels"], a["group"]
    w = p["weight"]
    wshape = [cout, cin // g, geo.kh, geo.kw]
    if n > 1:
        wk = b.reshape(kernel_mix(b, att, w.reshape(n, -1)), wshape)
    else:
        wk = b.const("weight", w[0])
    if "spatial" in att:
        wk = b.op("Mul", [wk, b.reshape(att["spatial"], [1, 1, geo.kh, geo.kw])])
    x = layer.x
    channel = att.get("channel")
    if channel is not None and scaling.input_on_kernel:
        wk = b.op("Mul", [wk, b.reshape(channel, _channel_shape(layer))])
    elif channel is not None:
        x = b.op("Mul", [x, channel])
    filt_in_weight = "filter" in att and scaling.filter_on_kernel
    if filt_in_weight:
        wk = b.op("Mul", [wk, b.reshape(att["filter"], [cout, 1, 1, 1])])
    conv_in = [x, wk]
    bias_in_conv = "bias" in p and ("filter" not in att or filt_in_weight)
    if bias_in_conv:
        conv_in.append(b.const("bias", p["bias"]))
    y = b.op("Conv", conv_in, {**geo.conv_attrs(g), "kernel_shape": [geo.kh, geo.kw]})
    return finish(b, y, {} if filt_in_weight else att, p, bias_done=bias_in_conv)  # {}: a_f is in the kernel


def _channel_shape(layer: OdLayer) -> list[int]:
    """The shape that lays the channel attention over the kernel: along the output channels of a depthwise kernel
    (one input channel each), along the input channels of a dense / 1x1 one."""
    if layer.kind == "depthwise":
        return [layer.attrs["out_channels"], 1, 1, 1]
    if layer.kind in ("dense", "pointwise"):
        return [1, layer.attrs["in_channels"], 1, 1]
    raise InvalidValueError(f"layer {layer.name!r} ({layer.kind}) cannot take its channel attention on the kernel; "
                            "plan it with Scaling(input_on_kernel=False)")
