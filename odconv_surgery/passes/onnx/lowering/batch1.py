"""Form ``batch1`` (the batch-size-1 branch of ``lower_by_batch_regime``; valid only for batch 1, reshapes use it): every
attention folded into one computed kernel, then one Conv per layer. An attention is folded into the kernel when
the kernel is smaller than the activation it would otherwise scale; else the activation is scaled and the
constant kernel kept. 1x1 n = 1 layers keep the ``static_kernel`` form (constant Conv weight). Attentions a layer does
not have are left out; a layer without heads is its plain conv."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from ..common import OdLayer
from .builder import Builder, Geometry, finish, kernel_mix
from .static_kernel import lower_static_kernel


def lower_batch1(b: Builder, layer: OdLayer, att) -> gs.Variable:
    p = layer.params()
    a = layer.attrs
    geo = Geometry.of(layer)
    n, cout, cin, g = a["kernel_num"], a["out_channels"], a["in_channels"], a["group"]
    w = p["weight"]
    if geo.k2 == 1 and n == 1:
        return lower_static_kernel(b, layer, att)
    kind = layer.kind
    hin, win = a["input_hw"]
    wshape = [cout, cin // g, geo.kh, geo.kw]
    if n > 1:
        wk = b.reshape(kernel_mix(b, att, w.reshape(n, -1)), wshape)
    else:
        wk = b.const("weight", w[0])
    if "spatial" in att:
        wk = b.op("Mul", [wk, b.reshape(att["spatial"], [1, 1, geo.kh, geo.kw])])
    wnum = int(np.prod(wshape))
    x = layer.x
    channel = att.get("channel")
    if channel is not None and kind == "depthwise":
        wk = b.op("Mul", [wk, b.reshape(channel, [cout, 1, 1, 1])])
    elif channel is not None and kind in ("dense", "pointwise") and wnum <= cin * hin * win:
        wk = b.op("Mul", [wk, b.reshape(channel, [1, cin, 1, 1])])
    elif channel is not None:
        x = b.op("Mul", [x, channel])
    filt_in_weight = "filter" in att and wnum <= cout * geo.ho * geo.wo
    if filt_in_weight:
        wk = b.op("Mul", [wk, b.reshape(att["filter"], [cout, 1, 1, 1])])
    conv_in = [x, wk]
    bias_in_conv = "bias" in p and ("filter" not in att or filt_in_weight)
    if bias_in_conv:
        conv_in.append(b.const("bias", p["bias"]))
    y = b.op("Conv", conv_in, {**geo.conv_attrs(g), "kernel_shape": [geo.kh, geo.kw]})
    return finish(b, y, {} if filt_in_weight else att, p, bias_done=bias_in_conv)  # {}: a_f is in the kernel
