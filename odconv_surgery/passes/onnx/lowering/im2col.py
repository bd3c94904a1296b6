"""Form ``im2col`` (any batch size, dense k x k or 1x1; ``plan.py`` gives it to those whose kernel is not constant):
tap-major columns (Pad, k^2 Slices, Concat) and one conv or batched MatMul.

The column scale ``a_s (x) a_c`` (whichever of them the layer has) goes where ``plan.py``'s ``Scaling`` says: on the
columns, or on the per-sample kernel. n = 1 with the scale on the columns keeps the kernel a constant 1x1 Conv
(C_out, k^2 C_in); otherwise the per-sample kernel (``a_w @ W``, or the one constant kernel scaled per sample) and a
batched MatMul. The filter attention and bias scale the output."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from ..common import OdLayer
from .builder import Builder, Geometry, Scaling, finish, kernel_mix, tap_slices


def lower_im2col(b: Builder, layer: OdLayer, att, scaling: Scaling) -> gs.Variable:
    """``layer`` (dense k x k or 1x1, groups 1) for any batch size, its column scale where ``scaling`` puts it
    (``att``: its attentions)."""
    p = layer.params()
    a = layer.attrs
    geo = Geometry.of(layer)
    n, cout, cin, k2 = a["kernel_num"], a["out_channels"], a["in_channels"], geo.k2
    kdim = k2 * cin
    wt = p["weight"].transpose(0, 1, 3, 4, 2).reshape(n, cout, kdim)  # tap-major columns: t * C_in + c
    scale = att.get("channel")  # (B, C_in, 1, 1), or None: no channel attention
    if "spatial" in att or (scale is not None and k2 > 1):  # the scale per column: tap-major, like the columns
        spatial = b.reshape(att["spatial"], [-1, k2, 1]) if "spatial" in att else b.const("taps", np.ones((1, k2, 1)))
        per_channel = b.reshape(scale, [-1, 1, cin]) if scale is not None else b.const("ones", np.ones((1, 1, cin)))
        scale = b.op("Mul", [spatial, per_channel])
    slices = tap_slices(b, layer.x, layer)
    cols = slices[0] if len(slices) == 1 else b.op("Concat", slices, {"axis": 1})  # (B, k2*C_in, Ho, Wo)
    on_kernel = scale is not None and scaling.input_on_kernel
    if n == 1 and not on_kernel:  # the kernel stays constant: the columns carry every input-side attention
        if scale is not None:
            cols = b.op("Mul", [cols, b.reshape(scale, [-1, kdim, 1, 1])])
        conv_in = [cols, b.const("weight", wt[0].reshape(cout, kdim, 1, 1))]
        bias_in_conv = "bias" in p and "filter" not in att
        if bias_in_conv:
            conv_in.append(b.const("bias", p["bias"]))
        return finish(b, b.op("Conv", conv_in), att, p, bias_done=bias_in_conv)
    wagg = b.reshape(kernel_mix(b, att, wt.reshape(n, -1)), [-1, cout, kdim]) if n > 1 else b.const("weight", wt)
    hw = geo.ho * geo.wo
    if on_kernel:
        wagg = b.op("Mul", [wagg, b.reshape(scale, [-1, 1, kdim])])
        cols = b.reshape(cols, [-1, kdim, hw])
    elif scale is None:  # kernel attention only: columns and kernel mix stay as they are
        cols = b.reshape(cols, [-1, kdim, hw])
    else:
        cols = b.reshape(b.op("Mul", [cols, b.reshape(scale, [-1, kdim, 1, 1])]), [-1, kdim, hw])
    y = b.reshape(b.op("MatMul", [wagg, cols]), [-1, cout, geo.ho, geo.wo])
    return finish(b, y, att, p)
